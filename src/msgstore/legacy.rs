//! Conversion of the `.msg` segment files of earlier versions.
//!
//! Why: a `.msg` record's checksum covers its message only, and crc32c of an
//! empty message is 0, so eight zero bytes (a page the disk zeroed) read back as
//! a valid empty message: wrong bytes served instead of an error. `.seg` records
//! checksum their length too ([`super::record_crc`]). Empty messages are legal,
//! so no rule on reading a `.msg` file can tell them from zeroes; the files are
//! converted once, when the store opens, and only `.seg` files are read after.
//!
//! Invariants:
//! - a `.msg` file is read with its own checksum and rewritten record by record
//!   (same positions, so its `.idx` stays valid) into `<first>.seg.part`, synced,
//!   then renamed to `<first>.seg`: that rename is the commit point, after which
//!   the `.msg` is removed. A crash in between leaves either a `.part` (removed and
//!   redone) or both files (the `.msg` removed): never a half-converted `.seg`;
//! - a torn or corrupt record ends the conversion there (what `open` would have
//!   cut; the log re-applies the rest) and the `.idx` is dropped;
//! - memory is bounded by one read block and the write buffer, not the file.

use super::{durable, invalid, record_crc, BlockReader, HEADER};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

const PART: &str = ".seg.part";

/// Converts every `.msg` file in `dir` into a `.seg` file (see the module doc).
pub(super) fn convert_all(dir: &Path) -> io::Result<()> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().to_string();
        if name.ends_with(PART) {
            durable::remove_durable(&dir.join(&name))?;
        } else if name.ends_with(".msg") {
            names.push(name);
        }
    }
    names.sort_unstable();
    for name in &names {
        let old = dir.join(name);
        let new = old.with_extension("seg");
        if !new.exists() {
            let (records, complete) = convert(&old, &dir.join(name.replace(".msg", PART)))?;
            if !complete {
                durable::remove_durable(&old.with_extension("idx"))?;
            }
            tracing::info!(path = %old.display(), records, complete,
                "message store: converted a segment of an earlier version");
        }
        durable::remove_durable(&old)?;
    }
    Ok(())
}

/// Rewrites the valid records of `old` into `part`, then renames `part` to the
/// `.seg` beside `old`. Returns the record count and whether every byte of `old`
/// was a valid record.
fn convert(old: &Path, part: &Path) -> io::Result<(u64, bool)> {
    let src = File::open(old)?;
    let len = src.metadata()?.len();
    let mut reader = BlockReader::new(&src, len);
    reader.legacy = true;
    let opts = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .clone();
    let mut out = BufWriter::with_capacity(1 << 20, durable::create_file_durable(part, &opts)?);
    let (mut pos, mut records) = (0u64, 0u64);
    while pos < len {
        let Ok(msg) = reader.record(pos) else { break };
        let n = u32::try_from(msg.len()).map_err(|_| invalid("message over 4 GiB".into()))?;
        out.write_all(&n.to_le_bytes())?;
        out.write_all(&record_crc(&msg).to_le_bytes())?;
        out.write_all(&msg)?;
        pos += (HEADER + msg.len()) as u64;
        records += 1;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    durable::rename_durable(part, &old.with_extension("seg"))?;
    Ok((records, pos == len))
}
