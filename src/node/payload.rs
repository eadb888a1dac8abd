//! Snapshot payloads for followers.
//!
//! A local snapshot is only a manifest (`state_machine`): the messages stay in the
//! message store. A follower that needs the snapshot gets the full payload, which
//! is built from the store on a blocking thread the first time it is needed (the
//! controller never reads the whole log itself) and kept for a minute after its
//! last use, so a transfer that resumes or a second follower does not rebuild it.
//! Snapshot messages wait for the build, a bounded number of them; a dropped one
//! is retried by Raft. While a build runs or a follower is being sent a snapshot,
//! no new local snapshot is taken (for up to [`MAX_DEFER`]): a newer one would
//! compact the log the sent snapshot must be followed by, and a busy leader could
//! otherwise outrun every build and transfer (seen with 256 KiB messages and a
//! snapshot every 100 entries: a 1 GB build took 1.6 s, four snapshots later).

use super::controller::{Controller, Outbound};
use crate::core::{Envelope, Message, Snapshot};
use crate::state_machine::full_payload;
use crate::wal::LogStore;
use bytes::Bytes;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Snapshot messages held while their payload is built.
const MAX_WAITING: usize = 64;
/// A built payload is dropped this long after it was last sent.
const KEEP: Duration = Duration::from_secs(60);
/// Local snapshots wait for a build at most this long.
const MAX_DEFER: Duration = Duration::from_secs(120);

/// A finished build.
pub struct Built {
    index: u64,
    result: Result<Bytes, String>,
}

pub struct Payloads {
    cached: Option<(u64, Bytes, Instant)>,
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
    /// True while a build runs or `sending`, for at most [`MAX_DEFER`] in a row.
    pub fn defers_snapshots(&mut self, sending: bool) -> bool {
        if self.building.is_none() && !sending {
            self.deferring_since = None;
            return false;
        }
        let since = *self.deferring_since.get_or_insert_with(Instant::now);
        since.elapsed() < MAX_DEFER
    }

    /// The receiver of finished builds, for the controller loop (once).
    pub fn take_receiver(&mut self) -> mpsc::UnboundedReceiver<Built> {
        self.rx.take().expect("taken once")
    }
}

fn attach(mut env: Envelope, snapshot: Snapshot) -> Envelope {
    env.msg = Message::Snapshot { snapshot };
    env
}

impl<S: LogStore + 'static, O: Outbound> Controller<S, O> {
    /// Send a `Snapshot` message with our latest snapshot's full payload, now or
    /// once it is built.
    pub(crate) fn send_snapshot(&mut self, env: Envelope) {
        let Some(latest) = &self.latest_snapshot else {
            return;
        };
        let meta = latest.meta.clone();
        let data = latest.data.clone();
        let ready = match &mut self.payloads.cached {
            Some((index, payload, used)) if *index == meta.index => {
                *used = Instant::now();
                Some(payload.clone())
            }
            _ if !crate::state_machine::is_manifest(&data) => Some(data.clone()),
            _ => None,
        };
        if let Some(data) = ready {
            let env = attach(env, Snapshot { meta, data });
            self.sending(&env);
            self.out.send(env);
            return;
        }
        if self.payloads.waiting.len() < MAX_WAITING {
            self.payloads.waiting.push(env);
        }
        if self.payloads.building.is_some_and(|(i, _)| i == meta.index) {
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
            let started = std::time::Instant::now();
            let result = tokio::task::spawn_blocking(move || full_payload(&data, &reader))
                .await
                .unwrap_or_else(|e| Err(format!("snapshot build task: {e}")));
            if let Ok(p) = &result {
                tracing::info!(
                    index,
                    bytes = p.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "snapshot payload built for a follower"
                );
            }
            let _ = tx.send(Built { index, result });
        });
    }

    /// A build finished: send what waited for it.
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
            Ok(payload) => {
                let current = self.latest_snapshot.as_ref().map(|s| s.meta.index);
                if current == Some(built.index) {
                    self.payloads.cached = Some((built.index, payload, Instant::now()));
                }
                // Sent with whatever snapshot is latest now (rebuilt if it moved on).
                for env in waiting {
                    self.send_snapshot(env);
                }
            }
            Err(e) => tracing::warn!(index = built.index, error = %e,
                "building a snapshot payload failed; Raft will ask again"),
        }
    }

    /// Drops a payload nobody asked for in a while.
    pub(crate) fn expire_payload(&mut self) {
        if let Some((_, _, used)) = &self.payloads.cached {
            if used.elapsed() > KEEP {
                self.payloads.cached = None;
            }
        }
    }
}
