//! Damage to one stopped node's files (issue 14): which files of each kind a
//! test may damage, and the three damages (bit flip, zeroed 4 KiB page,
//! truncation to half). Shared by `tests/damage.rs` and the netns nemesis.
//!
//! Invariant: only files the node has sealed (or its latest snapshot) are
//! candidates: the file a node is still appending to may legitimately end in a
//! torn record, which is not the damage under test.

use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    WalSegment,
    Snapshot,
    MessageSegment,
    MessageIndex,
}

pub const KINDS: [Kind; 4] = [
    Kind::WalSegment,
    Kind::Snapshot,
    Kind::MessageSegment,
    Kind::MessageIndex,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    BitFlip,
    ZeroPage,
    Truncate,
}

pub const DAMAGES: [Damage; 3] = [Damage::BitFlip, Damage::ZeroPage, Damage::Truncate];

/// Files with extension `ext` directly under `dir`, sorted by name.
pub fn sorted_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|x| x == ext));
    v.sort();
    v
}

/// The files of `kind` a test may damage on a stopped node, oldest first: the
/// sealed WAL segments, the latest snapshot, the sealed message segments (those
/// with an `.idx`) and the `.idx` files. Empty when there is none yet.
pub fn candidates(data_dir: &Path, kind: Kind) -> Vec<PathBuf> {
    match kind {
        Kind::WalSegment => {
            let mut v = sorted_files(&data_dir.join("wal/wal"), "seg");
            v.pop(); // the last one is still being written
            v
        }
        Kind::Snapshot => sorted_files(&data_dir.join("wal/snap"), "snap")
            .pop()
            .into_iter()
            .collect(),
        Kind::MessageSegment => {
            sorted_files(&data_dir.join("messages"), raftlog::msgstore::SEGMENT_EXT)
                .into_iter()
                .filter(|p| p.with_extension("idx").exists())
                .collect()
        }
        Kind::MessageIndex => sorted_files(&data_dir.join("messages"), "idx"),
    }
}

/// Damage that keeps a sealed message segment's length is not seen when the node
/// opens its store (the `.idx` still matches): only a read of a damaged record
/// finds it (an error, never other bytes), and the next restart repairs.
pub fn found_only_by_reads(kind: Kind, how: Damage) -> bool {
    kind == Kind::MessageSegment && how != Damage::Truncate
}

/// Damages `path` in place; refuses a file of 16 bytes or less.
pub fn damage(path: &Path, how: Damage) -> std::io::Result<()> {
    let mut b = std::fs::read(path)?;
    if b.len() <= 16 {
        return Err(std::io::Error::other(format!(
            "{} is too small to damage ({} bytes)",
            path.display(),
            b.len()
        )));
    }
    match how {
        Damage::BitFlip => {
            let at = b.len() / 3;
            b[at] ^= 0x20;
        }
        Damage::ZeroPage => {
            let start = (b.len() / 2) & !4095;
            let end = (start + 4096).min(b.len());
            b[start..end].fill(0);
        }
        Damage::Truncate => b.truncate(b.len() / 2),
    }
    std::fs::write(path, b)
}
