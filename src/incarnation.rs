//! The incarnation: which start of this node's process is running.
//!
//! Why: an answer a node's previous process sent just before it died can reach
//! the leader after the new process's first answers. When the new process came
//! up repairing (`core::repair`) it discarded what that late answer
//! acknowledged, and a leader that counted it could commit an entry a majority
//! does not hold. Answers carry the incarnation and a leader ignores one smaller
//! than the largest it heard from that peer; this module makes each start's
//! number larger than every earlier one's.
//!
//! Format of `<data_dir>/incarnation`: `RLIN0001`, count u64, crc32c u32 of all
//! before (little endian).
//!
//! Invariants:
//! - [`next`] returns a number larger than any it returned before in this data
//!   directory, and has made it durable (temp, fsync, rename, directory fsync)
//!   before returning, so before the process sends anything;
//! - a missing file is a first start (1); a damaged one is not trusted: the count
//!   restarts from the time in microseconds since 1970, larger than any count of
//!   real starts (a node would need 10^15 restarts to reach it).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const MAGIC: &[u8; 8] = b"RLIN0001";

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("incarnation")
}

fn encode(n: u64) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    b.extend_from_slice(&n.to_le_bytes());
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<u64> {
    if b.len() != 20 || &b[..8] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(b[16..].try_into().ok()?);
    if crc32c::crc32c(&b[..16]) != crc {
        return None;
    }
    Some(u64::from_le_bytes(b[8..16].try_into().ok()?))
}

/// The incarnation of this start, durable when returned (module invariants).
pub fn next(data_dir: &Path) -> io::Result<u64> {
    let p = path(data_dir);
    let last = match std::fs::read(&p) {
        Ok(b) => decode(&b).unwrap_or_else(|| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64);
            tracing::warn!(path = %p.display(), "incarnation file damaged; counting on from the clock");
            now
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let n = last.saturating_add(1);
    crate::durable::write_file_durable(&p, &encode(n))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_start_counts_one_more_durably() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(next(tmp.path()).unwrap(), 1);
        assert_eq!(next(tmp.path()).unwrap(), 2);
        assert_eq!(next(tmp.path()).unwrap(), 3);
        crate::durable::record::assert_durable(tmp.path());
    }

    #[test]
    fn a_damaged_file_counts_on_from_above_every_earlier_start() {
        let tmp = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            next(tmp.path()).unwrap();
        }
        let mut b = std::fs::read(path(tmp.path())).unwrap();
        b[9] ^= 0x10;
        std::fs::write(path(tmp.path()), &b).unwrap();
        let n = next(tmp.path()).unwrap();
        assert!(n > 1 << 50, "{n}");
        assert_eq!(next(tmp.path()).unwrap(), n + 1);
        std::fs::write(path(tmp.path()), [0u8; 20]).unwrap();
        assert!(next(tmp.path()).unwrap() > 1 << 50, "a zeroed file");
    }
}
