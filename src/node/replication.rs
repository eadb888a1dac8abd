//! The replication manager's node side: local snapshots (the latest one, and
//! when to take the next) and snapshot streams for followers. Appends to
//! followers are the consensus core's (`core::replication`); this manager serves
//! the followers the core decides need a snapshot.
//!
//! A local snapshot is due every `snapshot_every` applied entries or
//! `snapshot_every_bytes` applied bytes, after a trim was applied (so its
//! segments can go), and when the WAL holds a full payload (received, or from
//! before the message store), which the next manifest replaces.
//!
//! A local snapshot is only a manifest (`state_machine`): the messages stay in the
//! message store. A follower that needs the snapshot is sent a stream
//! (`state_machine::SnapshotStream`): the manifest's records read straight from
//! the segment files, chunk by chunk on a blocking thread by the transport, so
//! neither side ever holds the log in memory. Preparing a stream (locating its
//! byte ranges, a few small reads) also runs on a blocking thread, never on the
//! controller; the prepared stream is kept for a minute after its last use, so a
//! transfer that resumes or a second follower reuses it.
//! Snapshot messages wait for the preparation, a bounded number of them; a
//! dropped one is retried by Raft.
//!
//! Invariant: a stream stays valid while sent. It holds its segment files open,
//! so a segment released meanwhile stays readable; and while a stream is being
//! prepared or a follower is being sent one, no new local snapshot is taken (for
//! up to [`MAX_DEFER`]): a newer one would compact the log the sent snapshot must
//! be followed by, and a busy leader could otherwise outrun every transfer.

use crate::core::{Envelope, Message, Snapshot};
use crate::state_machine::{is_manifest, SnapshotStream, StateMachine};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Snapshot messages held while their stream is prepared.
const MAX_WAITING: usize = 64;
/// A prepared stream is dropped this long after it was last sent.
const KEEP: Duration = Duration::from_secs(60);
/// Local snapshots wait for a preparation or a transfer at most this long.
const MAX_DEFER: Duration = Duration::from_secs(120);

/// A finished preparation.
pub struct Built {
    index: u64,
    result: Result<Arc<SnapshotStream>, String>,
}

pub struct Replication {
    /// The latest local snapshot (attached to `Snapshot` messages).
    latest: Option<Snapshot>,
    /// Bytes of entries applied since the last snapshot was started.
    applied_bytes: u64,
    /// The WAL's snapshot is a full payload (received, or from before the
    /// message store): replaced by a manifest at the next applied entry.
    wal_full_payload: bool,
    /// A trim was applied: snapshot soon, so its segments can be removed.
    trim_applied: bool,
    /// The prepared stream: snapshot index, stream, last used.
    cached: Option<(u64, Arc<SnapshotStream>, Instant)>,
    building: Option<(u64, Instant)>,
    /// Since when local snapshots have been waiting (see `defers_snapshots`).
    deferring_since: Option<Instant>,
    waiting: Vec<Envelope>,
    tx: mpsc::UnboundedSender<Built>,
    rx: Option<mpsc::UnboundedReceiver<Built>>,
}

impl Replication {
    /// `latest`: the snapshot the WAL holds at start.
    pub fn new(latest: Option<Snapshot>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let wal_full_payload = latest.as_ref().is_some_and(|s| !is_manifest(&s.data));
        Replication {
            latest,
            applied_bytes: 0,
            wal_full_payload,
            trim_applied: false,
            cached: None,
            building: None,
            deferring_since: None,
            waiting: Vec::new(),
            tx,
            rx: Some(rx),
        }
    }

    /// An entry of `bytes` was applied.
    pub fn applied(&mut self, bytes: u64) {
        self.applied_bytes += bytes;
    }

    /// A trim was applied: its segments go with the next snapshot.
    pub fn trim_applied(&mut self) {
        self.trim_applied = true;
    }

    /// Is a local snapshot at `applied` due (the last one is at `snap_index`)?
    /// `blocked`: one cannot be taken now (a persistence job runs, the message
    /// store fails); `sending`: a follower is being sent one. When due, the
    /// counters start over.
    pub fn snapshot_due(
        &mut self,
        applied: u64,
        snap_index: u64,
        every: u64,
        every_bytes: u64,
        blocked: bool,
        sending: bool,
    ) -> bool {
        let due = applied >= snap_index + every
            || self.applied_bytes >= every_bytes
            || self.wal_full_payload
            || self.trim_applied;
        if blocked || every == 0 || applied <= snap_index || !due || self.defers_snapshots(sending)
        {
            return false;
        }
        self.applied_bytes = 0;
        self.wal_full_payload = false;
        self.trim_applied = false;
        true
    }

    /// A local snapshot is durable: it is the one sent from now on.
    pub fn taken(&mut self, snap: Snapshot) {
        self.latest = Some(snap);
    }

    /// A snapshot from the leader was installed.
    pub fn installed(&mut self, snap: Snapshot) {
        self.latest = Some(snap);
        self.applied_bytes = 0;
    }

    /// Should a local snapshot wait? `sending` = a follower is being sent one.
    /// True while a preparation runs or `sending`, for at most [`MAX_DEFER`] in a row.
    fn defers_snapshots(&mut self, sending: bool) -> bool {
        if self.building.is_none() && !sending {
            self.deferring_since = None;
            return false;
        }
        let since = *self.deferring_since.get_or_insert_with(Instant::now);
        since.elapsed() < MAX_DEFER
    }

    /// The receiver of finished preparations, for the controller loop (once).
    pub fn take_receiver(&mut self) -> mpsc::UnboundedReceiver<Built> {
        self.rx.take().expect("taken once")
    }

    /// A `Snapshot` message streaming our latest snapshot, with its stream, when
    /// it is prepared; else `None`, and the message waits for the preparation
    /// (started here, reading `sm`'s files).
    pub fn stream_snapshot(
        &mut self,
        mut env: Envelope,
        sm: &mut StateMachine,
    ) -> Option<(Envelope, Arc<SnapshotStream>)> {
        let latest = self.latest.as_ref()?;
        let (meta, data) = (latest.meta.clone(), latest.data.clone());
        if !is_manifest(&data) {
            // A full payload left in the WAL by an older version: streams are made
            // of manifests, and the next local snapshot (taken soon) is one.
            tracing::info!(
                index = meta.index,
                "no snapshot to stream until the next local one"
            );
            return None;
        }
        if let Some((index, stream, used)) = &mut self.cached {
            if *index == meta.index {
                *used = Instant::now();
                let source = stream.clone();
                env.msg = Message::Snapshot {
                    snapshot: Snapshot { meta, data },
                };
                return Some((env, source));
            }
        }
        if self.waiting.len() < MAX_WAITING {
            self.waiting.push(env);
        }
        if self.building.is_some_and(|(i, _)| i == meta.index) {
            return None;
        }
        if let Some(e) = sm.failure() {
            // Its reader would copy the log into memory: wait for the repair.
            tracing::debug!(error = %e, "message store failing; snapshot streams wait for its repair");
            self.waiting.clear();
            return None;
        }
        let reader = match sm.reader(u64::MAX) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the message store for a snapshot");
                self.waiting.clear();
                return None;
            }
        };
        self.building = Some((meta.index, Instant::now()));
        let tx = self.tx.clone();
        let index = meta.index;
        tokio::spawn(async move {
            let result = tokio::task::spawn_blocking(move || SnapshotStream::new(&data, &reader))
                .await
                .unwrap_or_else(|e| Err(format!("snapshot stream task: {e}")))
                .map(Arc::new);
            if let Ok(s) = &result {
                tracing::info!(
                    index,
                    bytes = s.len(),
                    "snapshot stream ready for a follower"
                );
            }
            let _ = tx.send(Built { index, result });
        });
        None
    }

    /// A preparation finished: the messages that waited for it, to be sent
    /// again through [`Self::stream_snapshot`] (with whatever snapshot is latest
    /// then, prepared again if it moved on).
    pub fn built(&mut self, built: Built) -> Vec<Envelope> {
        if self.building.is_some_and(|(i, _)| i == built.index) {
            self.building = None;
        }
        let waiting = std::mem::take(&mut self.waiting);
        match built.result {
            Ok(stream) => {
                let current = self.latest.as_ref().map(|s| s.meta.index);
                if current == Some(built.index) {
                    self.cached = Some((built.index, stream, Instant::now()));
                }
                waiting
            }
            Err(e) => {
                tracing::warn!(index = built.index, error = %e,
                    "preparing a snapshot stream failed; Raft will ask again");
                Vec::new()
            }
        }
    }

    /// Drops a stream nobody asked for in a while (and the files it holds open).
    pub fn expire(&mut self) {
        if let Some((_, _, used)) = &self.cached {
            if used.elapsed() > KEEP {
                self.cached = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `snapshot_due` with `every` entries / `every_bytes`, not blocked, not sending.
    fn due(r: &mut Replication, applied: u64, snap_index: u64) -> bool {
        r.snapshot_due(applied, snap_index, 100, 1_000, false, false)
    }

    #[test]
    fn a_snapshot_is_due_by_entries_or_bytes_and_the_counters_start_over() {
        let mut r = Replication::new(None);
        assert!(!due(&mut r, 50, 0));
        assert!(due(&mut r, 100, 0), "every 100 entries");
        r.applied(999);
        assert!(!due(&mut r, 150, 100));
        r.applied(1);
        assert!(due(&mut r, 150, 100), "every 1000 bytes");
        assert!(!due(&mut r, 151, 100), "bytes counted from zero again");
    }

    #[test]
    fn a_trim_makes_a_snapshot_due_but_never_at_or_below_the_last_one() {
        let mut r = Replication::new(None);
        r.trim_applied();
        assert!(
            !due(&mut r, 10, 10),
            "nothing applied since the last snapshot"
        );
        assert!(due(&mut r, 11, 10));
        assert!(!due(&mut r, 12, 10), "the trim was taken care of");
    }

    #[test]
    fn nothing_is_due_while_blocked_or_disabled_and_the_reason_waits() {
        let mut r = Replication::new(None);
        r.trim_applied();
        assert!(!r.snapshot_due(11, 10, 100, 1_000, true, false), "blocked");
        assert!(!r.snapshot_due(11, 10, 0, 1_000, false, false), "disabled");
        assert!(
            !r.snapshot_due(11, 10, 100, 1_000, false, true),
            "deferred while a follower is sent one"
        );
        assert!(due(&mut r, 11, 10), "still due once free");
    }

    #[test]
    fn a_full_payload_in_the_wal_makes_a_snapshot_due() {
        let meta = crate::core::SnapshotMeta::default();
        let full = Snapshot {
            meta,
            data: bytes::Bytes::from_static(b"not a manifest"),
        };
        let mut r = Replication::new(Some(full));
        assert!(due(&mut r, 1, 0));
        assert!(!due(&mut r, 2, 1));
    }
}
