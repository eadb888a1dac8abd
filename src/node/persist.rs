//! The wal manager's place in the controller loop: each `Ready`'s durable part
//! (snapshot, entries, hard state, one fsync) runs on a blocking thread while the
//! controller goes on ticking, stepping and queueing proposals (group commit: the
//! next `Ready` collects everything that arrived meanwhile).
//!
//! Invariants:
//! - messages that depend on durable state (`Message::needs_durability`: vote
//!   requests and answers, append answers) leave only after the `Ready` that
//!   produced them is durable; the others (heartbeats, a leader's appends, pre-votes)
//!   leave at once, so a slow disk never delays a heartbeat and the leader writes its
//!   log in parallel with its followers (Raft thesis 10.2.1);
//! - at most one `Ready` is being persisted at a time, so they reach the disk in
//!   order, and `on_persisted` is called in order;
//! - a new term or vote is also in the hard-state file (`crate::hardstate`)
//!   before any message of its `Ready` leaves, so a damaged WAL cannot take it;
//! - committed entries are applied only after their `Ready` is durable;
//! - a full disk keeps the `Ready` and retries it; any other storage error stops
//!   the node.

use super::controller::Controller;
use super::faults::Faults;
use super::interface::Outbound;
use crate::core::{Entry, Envelope, Message, Ready, Snapshot, SnapshotMeta};
use crate::node::api::ApiError;
use crate::wal::{LogStore, WalError};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A persistence job's result: the store comes back with the Ready.
pub struct Persisted<S> {
    store: S,
    rd: Ready,
    result: Result<Option<Duration>, WalError>,
    /// A snapshot this node took of its own state machine, now durable.
    taken: Option<(Snapshot, Duration)>,
}

pub type InFlight<S> = Option<JoinHandle<Persisted<S>>>;

/// Wait for the job in flight (never completes when there is none).
pub async fn join<S>(job: &mut InFlight<S>) -> Persisted<S> {
    match job {
        Some(h) => {
            let r = h.await;
            *job = None;
            r.expect("persistence task panicked")
        }
        None => std::future::pending().await,
    }
}

/// The blocking part: write and fsync. Returns how long the fsync took.
/// `need_sync` is false when only the commit index changed: it is written but
/// rides along with the next fsync (a lost commit index is relearned from the
/// leader; the entries it points at were synced before it was).
fn write_durable<S: LogStore>(
    store: &mut S,
    rd: &Ready,
    need_sync: bool,
    faults: &Faults,
) -> Result<Option<Duration>, WalError> {
    if let Some(s) = &rd.snapshot {
        store.install_snapshot(s)?;
    }
    if !rd.entries.is_empty() {
        store.append(&rd.entries)?;
    }
    if let Some(hs) = &rd.hard_state {
        store.set_hard_state(hs)?;
    }
    if !need_sync {
        return Ok(None);
    }
    let started = Instant::now();
    if faults.fsync_fail {
        let source = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let path = "(fault injection)".into();
        return Err(WalError::Io { path, source });
    }
    if faults.fsync_delay_ms > 0 {
        std::thread::sleep(Duration::from_millis(faults.fsync_delay_ms));
    }
    store.sync()?;
    Ok(Some(started.elapsed()))
}

fn needs_disk(rd: &Ready) -> bool {
    rd.snapshot.is_some() || !rd.entries.is_empty() || rd.hard_state.is_some()
}

impl<S: LogStore + 'static, O: Outbound> Controller<S, O> {
    /// Carry out Readies until one needs the disk; start that one in the background.
    pub(crate) fn drive_ready(&mut self, job: &mut InFlight<S>) -> Result<(), WalError> {
        if job.is_some() || self.stalled.is_some() {
            // Heartbeats (and a hand-over's TimeoutNow) keep flowing while the
            // disk is busy or full.
            for env in self.raft.take_early_messages() {
                self.send_out(env);
            }
        }
        if job.is_some() {
            return Ok(());
        }
        if let Some(rd) = self.stalled.take() {
            if Instant::now() < self.stall_retry_at {
                self.stalled = Some(rd);
                return Ok(());
            }
            return self.start(rd, job);
        }
        while self.raft.has_ready() {
            let mut rd = self.raft.ready();
            let early: Vec<Envelope> = rd
                .messages
                .extract_if(.., |m| !m.msg.needs_durability())
                .collect();
            for env in early {
                self.send_out(env);
            }
            if needs_disk(&rd) {
                return self.start(rd, job);
            }
            self.finish(rd);
        }
        Ok(())
    }

    fn start(&mut self, rd: Ready, job: &mut InFlight<S>) -> Result<(), WalError> {
        let mut store = self.store.take().expect("store is home when no job runs");
        let faults = self.faults.as_ref().map(|f| f.get()).unwrap_or_default();
        let synced = &self.synced_term_vote;
        let new_term_vote = rd
            .hard_state
            .as_ref()
            .is_some_and(|h| (h.term, &h.vote) != (synced.0, &synced.1));
        let need_sync = !rd.entries.is_empty() || new_term_vote;
        *job = Some(tokio::task::spawn_blocking(move || {
            let result = write_durable(&mut store, &rd, need_sync, &faults);
            Persisted {
                store,
                rd,
                result,
                taken: None,
            }
        }));
        Ok(())
    }

    /// Snapshot the state machine at `meta.index`: the message store is synced
    /// and the manifest written on a blocking thread, so a slow disk never stalls
    /// heartbeats. Nothing of the log is copied.
    pub(crate) fn start_snapshot(&mut self, meta: SnapshotMeta, job: &mut InFlight<S>) {
        let (data, sync) = match self.sm.manifest() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot snapshot: message store not writable");
                return;
            }
        };
        let mut store = self.store.take().expect("store is home when no job runs");
        *job = Some(tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let snap = Snapshot { meta, data };
            let result = sync
                .run()
                .map_err(|source| WalError::Io {
                    path: "message store".into(),
                    source,
                })
                .and_then(|_| store.install_snapshot(&snap))
                .map(|_| None);
            let taken = Some((snap, started.elapsed()));
            Persisted {
                store,
                rd: Ready::default(),
                result,
                taken,
            }
        }));
    }

    /// The job finished: on success, the Ready's held effects go out.
    pub(crate) fn persisted(&mut self, done: Persisted<S>) -> Result<(), WalError> {
        self.store = Some(done.store);
        if let (Some((snap, took)), Ok(_)) = (done.taken, &done.result) {
            tracing::info!(
                index = snap.meta.index,
                ms = took.as_millis() as u64,
                "snapshot taken, log compacted"
            );
            self.sm.synced();
            self.raft.compact(snap.meta.clone());
            self.latest_snapshot = Some(snap);
            self.metrics.snapshots.inc();
            self.metrics.snapshot_seconds.observe(took.as_secs_f64());
        }
        match done.result {
            Ok(fsync) => {
                if let Some(hs) = &done.rd.hard_state {
                    self.synced_term_vote = (hs.term, hs.vote.clone());
                }
                // Before any vote answer of this Ready leaves.
                self.sync_hardstate_file()?;
                if let Some(took) = fsync {
                    self.health.record_fsync(took);
                    self.metrics.fsync_seconds.observe(took.as_secs_f64());
                }
                self.storage_ok();
                self.finish_durable(done.rd)
            }
            Err(e) if e.is_no_space() => {
                self.storage_full(&e);
                self.stalled = Some(done.rd);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn finish_durable(&mut self, rd: Ready) -> Result<(), WalError> {
        if let Some(s) = &rd.snapshot {
            // The WAL holds the manifest now: the staged messages move into place.
            self.sm
                .install_received(s.data.clone())
                .map_err(|e| WalError::Invalid(format!("snapshot from leader: {e}")))?;
            self.metrics.snapshots_installed.inc();
            self.cluster.install_membership(&s.meta.membership);
            self.latest_snapshot = Some(s.clone());
            self.applied_bytes = 0;
        }
        let n = rd.entries.len() as u64;
        self.metrics.wal_entries.inc_by(n);
        self.metrics
            .wal_bytes
            .inc_by(rd.entries.iter().map(Entry::size).sum::<usize>() as u64);
        if let Some(last) = rd.entries.last() {
            self.raft.on_persisted(last.index, last.term);
        }
        self.finish(rd);
        Ok(())
    }

    /// Everything after durability: held messages, applying, read answers.
    /// Leadership loss is handled last, so writes committed in this Ready get
    /// their success rather than "outcome unknown".
    fn finish(&mut self, rd: Ready) {
        let deposed = rd
            .role_changes
            .iter()
            .any(|rc| rc.role != crate::core::Role::Leader)
            && !self.raft.is_leader();
        self.note_role_changes(&rd.role_changes);
        for env in rd.messages {
            self.send_out(env);
        }
        for e in &rd.committed {
            self.apply(e);
        }
        for rs in rd.read_states {
            self.answer_read_index(rs);
        }
        if deposed {
            self.lost_leadership();
        }
    }

    /// Send one message; a snapshot streams our latest snapshot (see `payload`).
    fn send_out(&mut self, env: Envelope) {
        if let Message::Snapshot { .. } = &env.msg {
            self.send_snapshot(env);
            return;
        }
        self.sending(&env);
        self.out.send(env);
    }

    fn storage_full(&mut self, e: &WalError) {
        self.metrics.storage_errors.inc();
        if self.health.storage_error().is_none() {
            tracing::error!(error = %e, "disk full: writes refused until space returns");
        }
        self.health.set_storage_error(Some(e.to_string()));
        self.stall_retry_at = Instant::now() + Duration::from_millis(200);
    }

    /// A failed message store refuses writes (like a full WAL disk) and is
    /// retried about once a second; reads go on from its cache.
    pub(crate) fn repair_messages(&mut self) {
        let Some(e) = self.sm.failure().map(str::to_string) else {
            return;
        };
        if self.health.storage_error().is_none() {
            self.metrics.storage_errors.inc();
            tracing::error!(error = %e, "message store write failed: writes refused until it works again");
            self.health
                .set_storage_error(Some(format!("message store: {e}")));
        }
        if Instant::now() < self.stall_retry_at {
            return;
        }
        self.stall_retry_at = Instant::now() + Duration::from_secs(1);
        match self.sm.repair() {
            Ok(()) => {
                tracing::info!("message store writes succeed again; accepting writes");
                self.health.set_storage_error(None);
            }
            Err(e) => tracing::debug!(error = %e, "message store still failing"),
        }
    }

    fn storage_ok(&mut self) {
        if self.health.storage_error().is_some() && self.sm.failure().is_none() {
            tracing::info!("storage writes succeed again; accepting writes");
            self.health.set_storage_error(None);
        }
    }

    /// Bring the hard-state file up to date with the durable term and vote, the
    /// repairing mark and the peers (see `crate::hardstate`). Cheap when nothing
    /// changed; a few fsyncs on the controller thread when something did (an
    /// election, a membership change, the end of a repair).
    pub(crate) fn sync_hardstate_file(&mut self) -> Result<(), WalError> {
        let Some(dir) = &self.hardstate_dir else {
            return Ok(());
        };
        let (term, vote) = self.synced_term_vote.clone();
        let repairing = self.raft.is_repairing();
        let peers_gen = self.cluster.peers_generation();
        let same = self.hs_written.as_ref().is_some_and(|r| {
            (r.term, &r.vote, r.repairing) == (term, &vote, repairing)
                && self.hs_peers_gen == Some(peers_gen)
        });
        if same {
            return Ok(());
        }
        let peers = self.cluster.peers_except(self.raft.id());
        let rec = crate::hardstate::Record {
            term,
            vote,
            repairing,
            peers,
        };
        crate::hardstate::write(dir, &rec).map_err(|source| WalError::Io {
            path: crate::hardstate::path(dir).display().to_string(),
            source,
        })?;
        if self.hs_written.as_ref().is_some_and(|r| r.repairing) && !repairing {
            let took = self.repair_started.map(|t| t.elapsed().as_millis() as u64);
            tracing::info!(ms = ?took, "repair complete: caught up with the leader, voting again");
        }
        self.hs_written = Some(rec);
        self.hs_peers_gen = Some(peers_gen);
        Ok(())
    }

    /// The error a write gets while the disk refuses writes.
    pub(crate) fn storage_refusal(&self) -> Option<ApiError> {
        let e = self.health.storage_error()?;
        Some(ApiError::Storage(format!("writes refused: {e}")))
    }
}
