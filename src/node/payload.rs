//! Snapshot streams for followers.
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

use super::controller::Controller;
use super::interface::Outbound;
use crate::core::{Envelope, Message, Snapshot};
use crate::state_machine::{is_manifest, SnapshotStream};
use crate::wal::LogStore;
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

pub struct Payloads {
    cached: Option<(u64, Arc<SnapshotStream>, Instant)>,
    building: Option<(u64, Instant)>,
    /// Since when local snapshots have been waiting (see `defers_snapshots`).
    deferring_since: Option<Instant>,
    waiting: Vec<Envelope>,
    tx: mpsc::UnboundedSender<Built>,
    rx: Option<mpsc::UnboundedReceiver<Built>>,
}

impl Default for Payloads {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Payloads {
            cached: None,
            building: None,
            deferring_since: None,
            waiting: Vec::new(),
            tx,
            rx: Some(rx),
        }
    }
}

impl Payloads {
    /// Should a local snapshot wait? `sending` = a follower is being sent one.
    /// True while a preparation runs or `sending`, for at most [`MAX_DEFER`] in a row.
    pub fn defers_snapshots(&mut self, sending: bool) -> bool {
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
}

impl<S: LogStore + 'static, O: Outbound> Controller<S, O> {
    /// Send a `Snapshot` message streaming our latest snapshot, now or once its
    /// stream is prepared.
    pub(crate) fn send_snapshot(&mut self, mut env: Envelope) {
        let Some(latest) = &self.latest_snapshot else {
            return;
        };
        let (meta, data) = (latest.meta.clone(), latest.data.clone());
        if !is_manifest(&data) {
            // A full payload left in the WAL by an older version: streams are made
            // of manifests, and the next local snapshot (taken soon) is one.
            tracing::info!(
                index = meta.index,
                "no snapshot to stream until the next local one"
            );
            return;
        }
        if let Some((index, stream, used)) = &mut self.payloads.cached {
            if *index == meta.index {
                *used = Instant::now();
                let source = stream.clone();
                env.msg = Message::Snapshot {
                    snapshot: Snapshot { meta, data },
                };
                self.sending(&env);
                self.out.send_snapshot(env, source);
                return;
            }
        }
        if self.payloads.waiting.len() < MAX_WAITING {
            self.payloads.waiting.push(env);
        }
        if self.payloads.building.is_some_and(|(i, _)| i == meta.index) {
            return;
        }
        if let Some(e) = self.sm.failure() {
            // Its reader would copy the log into memory: wait for the repair.
            tracing::debug!(error = %e, "message store failing; snapshot streams wait for its repair");
            self.payloads.waiting.clear();
            return;
        }
        let reader = match self.sm.reader(u64::MAX) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the message store for a snapshot");
                self.payloads.waiting.clear();
                return;
            }
        };
        self.payloads.building = Some((meta.index, Instant::now()));
        let tx = self.payloads.tx.clone();
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
    }

    /// A preparation finished: send what waited for it.
    pub(crate) fn payload_built(&mut self, built: Built) {
        if self
            .payloads
            .building
            .is_some_and(|(i, _)| i == built.index)
        {
            self.payloads.building = None;
        }
        let waiting = std::mem::take(&mut self.payloads.waiting);
        match built.result {
            Ok(stream) => {
                let current = self.latest_snapshot.as_ref().map(|s| s.meta.index);
                if current == Some(built.index) {
                    self.payloads.cached = Some((built.index, stream, Instant::now()));
                }
                // Sent with whatever snapshot is latest now (prepared again if it moved on).
                for env in waiting {
                    self.send_snapshot(env);
                }
            }
            Err(e) => tracing::warn!(index = built.index, error = %e,
                "preparing a snapshot stream failed; Raft will ask again"),
        }
    }

    /// Drops a stream nobody asked for in a while (and the files it holds open).
    pub(crate) fn expire_payload(&mut self) {
        if let Some((_, _, used)) = &self.payloads.cached {
            if used.elapsed() > KEEP {
                self.payloads.cached = None;
            }
        }
    }
}
