//! Streamed snapshots: what a leader sends a follower, and how the follower
//! installs it, in memory bounded independently of the log's size.
//!
//! The stream is `[records first..next][manifest][manifest length u64][manifest
//! crc32c u32][RLSTRM02]`:
//! the records exactly as the leader's segment files hold them (read through a
//! [`Span`], so nothing is decoded or collected), then the manifest
//! (`snapshot::encode_manifest`). The trailer goes last so the receiver's file,
//! cut before it, *is* a segment file.
//!
//! Install, on the follower:
//! 1. the transport checks the whole stream's length and crc32c (resumable);
//! 2. [`stage_received`] (blocking thread) checks the trailer and manifest, cuts
//!    the manifest off, checks and indexes every record (`msgstore::seal_received`,
//!    synced) and renames the file to its *staged* name, which names the
//!    manifest's applied index, first and next offset;
//! 3. only the manifest goes to the Raft core and the WAL (the snapshot mark);
//! 4. once the WAL holds it, [`StateMachine::install_received`] moves the staged
//!    segment into the message store by rename.
//!
//! Crash safety: the staged segment is durable before the WAL mark is written. A
//! crash before the mark leaves the old state (the staged file is removed at the
//! next start); a crash after it leaves the staged file, and the restore of the
//! WAL's manifest at start finishes the install from it (`redo_install`) before
//! checking the store. Staged files are removed once a snapshot at or past their
//! index is restored or installed, never earlier (one may be on its way through
//! the WAL).

use super::snapshot::{decode_manifest, is_manifest, Meta};
use super::StateMachine;
use crate::durable;
use crate::msgstore::{seal_received, Reader, Span};
use bytes::Bytes;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RLSTRM02";
/// Streams of earlier versions, whose records carry the `.msg` checksum
/// (`msgstore::legacy`): refused by name rather than as damaged records.
const OLD_MAGIC: &[u8; 8] = b"RLSTRM01";
const TRAILER: u64 = 20;
/// A manifest larger than this is refused (keys and time samples are bounded far below).
const MAX_MANIFEST: u64 = 1 << 30;

/// One snapshot as a stream of bytes, read at any offset (blocking).
pub struct SnapshotStream {
    span: Span,
    /// Manifest, its length, the magic.
    tail: Bytes,
}

impl SnapshotStream {
    /// The stream for the local snapshot `manifest`, whose messages `reader`
    /// holds. Reads a few record headers: call it on a blocking thread.
    pub fn new(manifest: &Bytes, reader: &Reader) -> Result<Self, String> {
        if !is_manifest(manifest) {
            return Err("only a manifest can be streamed".into());
        }
        let m = decode_manifest(manifest.clone())?;
        let span = reader
            .span(m.first, m.next)
            .map_err(|e| format!("reading the message store: {e}"))?;
        let mut tail = Vec::with_capacity(manifest.len() + TRAILER as usize);
        tail.extend_from_slice(manifest);
        tail.extend_from_slice(&(manifest.len() as u64).to_le_bytes());
        tail.extend_from_slice(&crc32c::crc32c(manifest).to_le_bytes());
        tail.extend_from_slice(MAGIC);
        Ok(SnapshotStream {
            span,
            tail: tail.into(),
        })
    }

    pub fn len(&self) -> u64 {
        self.span.len() + self.tail.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Fills `buf` from byte `offset` of the stream.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let records = self.span.len();
        let end = offset + buf.len() as u64;
        if end > self.len() {
            return Err(io::Error::other("read past the end of the snapshot"));
        }
        let split = (records.saturating_sub(offset) as usize).min(buf.len());
        let (head, rest) = buf.split_at_mut(split);
        if !head.is_empty() {
            self.span.read_at(offset, head)?;
        }
        if !rest.is_empty() {
            let from = (offset + split as u64 - records) as usize;
            rest.copy_from_slice(&self.tail[from..from + rest.len()]);
        }
        Ok(())
    }
}

impl crate::transport::SnapshotSource for SnapshotStream {
    fn size(&self) -> u64 {
        SnapshotStream::len(self)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        SnapshotStream::read_at(self, offset, buf)
    }
}

/// Where the received snapshot with manifest `m` waits to be installed.
fn staged_path(dir: &Path, m: &Meta) -> PathBuf {
    dir.join(format!(
        "install-{:020}-{:020}-{:020}.seg",
        m.applied, m.first, m.next
    ))
}

/// Is a verified received snapshot for `m` staged in `dir`, waiting to be moved in?
pub(super) fn is_staged(dir: &Path, m: &Meta) -> bool {
    staged_path(dir, m).exists()
}

/// The applied index a staged file's name carries.
fn staged_index(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("install-")?;
    let rest = rest
        .strip_suffix(".seg")
        .or_else(|| rest.strip_suffix(".idx"))?;
    rest.split('-').next()?.parse().ok()
}

/// Turns the complete, checksummed stream at `path` (snapshot `index`) into a
/// staged segment in `dir` and returns its manifest. On error the file is
/// removed. Reads the whole file once in bounded blocks: a blocking thread.
pub fn stage_received(path: &Path, index: u64, dir: &Path) -> Result<Bytes, String> {
    let staged = stage(path, index, dir);
    if staged.is_err() {
        let _ = durable::remove_durable(&path.with_extension("idx"));
        let _ = durable::remove_durable(path);
    }
    staged
}

fn stage(path: &Path, index: u64, dir: &Path) -> Result<Bytes, String> {
    let io = |e: io::Error| format!("received snapshot {}: {e}", path.display());
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let bad = |why: &str| format!("received snapshot is malformed: {why}");
    if len < TRAILER {
        return Err(bad("shorter than its trailer"));
    }
    let mut trailer = [0u8; TRAILER as usize];
    file.read_exact_at(&mut trailer, len - TRAILER)
        .map_err(io)?;
    if &trailer[12..] == OLD_MAGIC {
        return Err(bad(
            "sent by an earlier raftlog version (record format 1); upgrade the leader",
        ));
    }
    if &trailer[12..] != MAGIC {
        return Err(bad("not a streamed snapshot"));
    }
    let mlen = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
    let mcrc = u32::from_le_bytes(trailer[8..12].try_into().expect("4 bytes"));
    if mlen > MAX_MANIFEST || mlen > len - TRAILER {
        return Err(bad("manifest length out of range"));
    }
    let mut manifest = vec![0u8; mlen as usize];
    let records = len - TRAILER - mlen;
    file.read_exact_at(&mut manifest, records).map_err(io)?;
    drop(file);
    let manifest = Bytes::from(manifest);
    if crc32c::crc32c(&manifest) != mcrc {
        return Err(bad("manifest checksum mismatch"));
    }
    if !is_manifest(&manifest) {
        return Err(bad("no manifest"));
    }
    let m = decode_manifest(manifest.clone())?;
    if m.applied != index {
        return Err(bad(&format!(
            "manifest at index {} for snapshot {index}",
            m.applied
        )));
    }
    seal_received(path, m.first, m.next - m.first, records).map_err(io)?;
    let target = staged_path(dir, &m);
    durable::rename_durable(&path.with_extension("idx"), &target.with_extension("idx"))
        .map_err(io)?;
    durable::rename_durable(path, &target).map_err(io)?;
    Ok(manifest)
}

/// Removes staged files for snapshots at or below `upto` (superseded).
fn clean_staged(dir: &Path, upto: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if staged_index(&name).is_some_and(|i| i <= upto) {
            if let Err(err) = durable::remove_durable(&e.path()) {
                tracing::warn!(file = %name, error = %err, "removing a staged snapshot failed");
            }
        }
    }
}

impl StateMachine {
    /// Where received snapshots are staged (the node's; none in tests without one).
    pub fn set_install_dir(&mut self, dir: PathBuf) {
        self.install_dir = Some(dir);
    }

    /// Installs the received snapshot whose `manifest` the WAL now holds: its
    /// staged segment becomes the message store (see the module docs).
    pub fn install_received(&mut self, manifest: Bytes) -> Result<(), String> {
        if !is_manifest(&manifest) {
            return Err("a received snapshot must be a manifest".into());
        }
        let m = decode_manifest(manifest)?;
        let dir = self
            .install_dir
            .clone()
            .ok_or("no directory for received snapshots")?;
        let staged = staged_path(&dir, &m);
        if !staged.exists() {
            return Err(format!(
                "the messages of received snapshot {} are not staged at {}",
                m.applied,
                staged.display()
            ));
        }
        self.messages
            .install(&staged, m.first, m.next)
            .map_err(|e| format!("installing a received snapshot: {e}"))?;
        clean_staged(&dir, m.applied);
        self.set_meta(m);
        Ok(())
    }

    /// At restore of manifest `m`: an install of it that a crash interrupted is
    /// finished; staged files it supersedes are removed.
    pub(super) fn redo_install(&mut self, m: &Meta) -> Result<(), String> {
        let Some(dir) = self.install_dir.clone() else {
            return Ok(());
        };
        let staged = staged_path(&dir, m);
        if staged.exists() {
            tracing::info!(
                index = m.applied,
                "finishing the install of a received snapshot"
            );
            self.messages
                .install(&staged, m.first, m.next)
                .map_err(|e| format!("installing a received snapshot: {e}"))?;
        }
        clean_staged(&dir, m.applied);
        Ok(())
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
