//! The wal manager: durable storage for the Raft log, the hard state and snapshots.
//!
//! Every implementation of [`LogStore`] honours the contract written on the trait and
//! passes the shared conformance suite in `conformance.rs`. The disk implementation
//! is a segmented, checksummed WAL (`disk.rs`); the in-memory one (`mem.rs`) backs
//! the seeded simulator and models a crash as "lose everything not synced".

pub mod codec;
pub mod conformance;
pub mod disk;
pub mod mem;

pub use disk::{DiskStore, DiskUsage, WalFiles};
pub use mem::MemStore;

use crate::core::types::{Entry, HardState, Snapshot};

/// What a store holds after opening: the latest snapshot (if any), the hard state,
/// and every entry after the snapshot, dense and in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A record before the last durable one failed its checksum or did not decode.
    /// The node must not start: serving from here could return wrong data.
    #[error("corrupt WAL record in {path} at offset {offset}: {reason}")]
    Corrupt {
        path: String,
        offset: u64,
        reason: String,
    },
    /// The caller broke the contract (a hole in the log, say). A bug, not a disk fault.
    #[error("invalid WAL operation: {0}")]
    Invalid(String),
}

impl WalError {
    /// True when the disk is out of space: writes are refused, reads go on.
    pub fn is_no_space(&self) -> bool {
        matches!(self, WalError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
    }
}

/// Durable storage for one Raft node.
///
/// Contract (checked by the conformance suite):
/// - **No holes.** `append(entries)` requires `entries` dense and ascending, with
///   `entries[0].index` in `snapshot_index + 1 ..= last_index + 1`. When it is at or
///   below `last_index`, the existing suffix from `entries[0].index` on is truncated
///   first (a conflicting suffix from an old leader).
/// - **Nothing is durable until `sync` returns.** `append` and `set_hard_state` may
///   buffer; `sync` makes every earlier call durable with one flush (group commit).
///   After a crash, `open` returns a prefix of the calls made: all calls up to the
///   last completed `sync`, plus possibly some later ones, in order.
/// - **Snapshots are atomic.** `install_snapshot` returns only once the snapshot is
///   durable; after it, entries at or below `snapshot.meta.index` are gone, and if the
///   log did not hold `(meta.index, meta.term)` every entry is gone. Old segments are
///   removed. A crash during it leaves either the old or the new snapshot.
/// - **Corruption is never served.** A torn or corrupt tail (after the last durable
///   record) is cut off on open and logged; a corrupt record with valid records after
///   it fails `open` with [`WalError::Corrupt`] naming file and offset.
pub trait LogStore: Send {
    /// Everything recovered when the store was opened (entries after the snapshot).
    fn recovered(&self) -> &Recovered;
    /// Hands over what [`LogStore::recovered`] holds and forgets it: kept, it would
    /// pin the log tail read at startup in memory for the store's lifetime.
    fn take_recovered(&mut self) -> Recovered;
    /// Append (and truncate a conflicting suffix first, see the trait contract).
    fn append(&mut self, entries: &[Entry]) -> Result<(), WalError>;
    /// Record a new hard state (term, vote, commit).
    fn set_hard_state(&mut self, hs: &HardState) -> Result<(), WalError>;
    /// Make every earlier `append`/`set_hard_state` durable (one fdatasync).
    fn sync(&mut self) -> Result<(), WalError>;
    /// Durably store a snapshot and compact the log below it.
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), WalError>;
    /// [`LogStore::install_snapshot`], leaving the files it made dead (older
    /// segments and snapshots, oldest first) for the caller to remove with
    /// [`crate::durable::remove_durable`], in that order, off the write path:
    /// removing a 64 MiB segment and syncing its directory takes about 45 ms
    /// on a slow disk. The store forgets them at once; a crash before they are
    /// gone leaves what a crash inside `install_snapshot` leaves.
    fn install_snapshot_leaving_garbage(
        &mut self,
        snapshot: &Snapshot,
    ) -> Result<Vec<std::path::PathBuf>, WalError> {
        self.install_snapshot(snapshot).map(|()| Vec::new())
    }
    /// The latest durable snapshot.
    fn snapshot(&self) -> Option<Snapshot>;
    /// Entries in `lo..hi` (both must lie within the stored log).
    fn entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>, WalError>;
    /// Index of the last stored entry (the snapshot index when the log is empty).
    fn last_index(&self) -> u64;
}

/// Checks an `append` against the "no holes" contract: `entries` dense and ascending,
/// starting within `snapshot_index + 1 ..= last_index + 1`. Shared by every store.
pub fn validate_append(
    entries: &[Entry],
    snapshot_index: u64,
    last_index: u64,
) -> Result<(), WalError> {
    let Some(first) = entries.first().map(|e| e.index) else {
        return Ok(());
    };
    if first <= snapshot_index || first > last_index + 1 {
        return Err(WalError::Invalid(format!(
            "append at index {first}: must lie in {}..={}",
            snapshot_index + 1,
            last_index + 1
        )));
    }
    match entries
        .iter()
        .enumerate()
        .find(|(i, e)| e.index != first + *i as u64)
    {
        Some((i, e)) => Err(WalError::Invalid(format!(
            "append not dense: entry {i} has index {}, expected {}",
            e.index,
            first + i as u64
        ))),
        None => Ok(()),
    }
}
