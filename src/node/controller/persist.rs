//! The controller's `Ready` handling, through the persistence manager
//! (`node::persistence`): each `Ready`'s durable part
//! (snapshot, entries, hard state, one fsync) runs on a blocking thread while the
//! controller goes on ticking, stepping and queueing proposals (group commit: the
//! next `Ready` collects everything that arrived meanwhile). A follower's small
//! `Ready` runs on the controller's own thread instead while its fsyncs are fast
//! (`persist_inline`): it saves two thread hand-offs per append, and its result
//! is taken like a job's, in the same order.
//!
//! Invariants:
//! - messages that depend on durable state (`Message::needs_durability`: vote
//!   requests and answers, append answers) leave only after the `Ready` that
//!   produced them is durable; the others (heartbeats, a leader's appends, pre-votes)
//!   leave at once, so a slow disk never delays a heartbeat and the leader writes its
//!   log in parallel with its followers (Raft thesis 10.2.1);
//! - at most one `Ready` is being persisted at a time, so they reach the disk in
//!   order, and `on_persisted` is called in order;
//! - a local snapshot's message-store sync runs beside the Readies; its WAL
//!   install is a job like a `Ready` and is dropped if a snapshot received
//!   meanwhile went further (the WAL never goes back to an older snapshot);
//! - a new term or vote is also in the hard-state file (`crate::hardstate`)
//!   before any message of its `Ready` leaves, so a damaged WAL cannot take it;
//! - committed entries are applied only after their `Ready` is durable;
//! - a full disk keeps the `Ready` and retries it; any other storage error stops
//!   the node.

use super::Controller;
use crate::api::ApiError;
use crate::core::{Entry, Envelope, Message, Ready, SnapshotMeta};
use crate::node::interface::Outbound;
use crate::node::persistence::{early_messages, needs_disk, Persisted, SyncedSnapshot};
use crate::wal::{LogStore, WalError};
use std::time::Duration;

/// A follower persists a small `Ready` on the controller's thread only while
/// its last fsync took at most this long.
const INLINE_FSYNC_MAX: Duration = Duration::from_millis(2);

impl<S: LogStore + 'static, O: Outbound> Controller<S, O> {
    /// Carry out Readies until one needs the disk; start that one in the background.
    pub(crate) fn drive_ready(&mut self) -> Result<(), WalError> {
        self.persistence
            .start_install_if_idle(self.raft.snapshot_meta().index);
        let busy = self.persistence.busy();
        if busy || self.persistence.stalled() {
            // Heartbeats (and a hand-over's TimeoutNow) keep flowing while the
            // disk is busy or full.
            for env in self.raft.take_early_messages() {
                self.send_out(env);
            }
        }
        if busy {
            return Ok(());
        }
        if self.persistence.stalled() {
            if let Some(rd) = self.persistence.take_stalled_if_due() {
                self.persistence.start(rd, self.faults_now());
            }
            return Ok(());
        }
        while self.raft.has_ready() {
            let mut rd = self.raft.ready();
            for env in early_messages(&mut rd) {
                self.send_out(env);
            }
            if needs_disk(&rd) {
                if self.persist_inline(&rd) {
                    self.persistence.run_inline(rd, self.faults_now());
                } else {
                    self.persistence.start(rd, self.faults_now());
                }
                return Ok(());
            }
            self.finish(rd);
        }
        Ok(())
    }

    /// Persist `rd` on this thread rather than a blocking one? Only on a
    /// follower of a known leader (nothing of its `Ready` can leave before the
    /// fsync anyway, so waiting here delays nothing but its heartbeat answers,
    /// by one fast fsync), for a small `Ready` of appended entries: no
    /// snapshot, no new term or vote (an election's fsync stays on the
    /// blocking thread, so that pre-votes are answered meanwhile, however long
    /// a loaded disk takes), and while the last
    /// fsync took at most `INLINE_FSYNC_MAX` (a disk that slows down costs
    /// one slow fsync here, then the blocking thread again). It saves the two
    /// thread hand-offs of a job: 11-14 % of the CPU per write at one client
    /// (README, Performance). The result is taken exactly like a job's
    /// (`Persistence::run_inline`), so the order of events is unchanged.
    fn persist_inline(&self, rd: &Ready) -> bool {
        let max = self.cfg.inline_persist_max_bytes;
        max > 0
            && !self.raft.is_leader()
            && self.raft.leader().is_some()
            && rd.snapshot.is_none()
            && !self.persistence.changes_term_or_vote(rd)
            && self.faults_now().fsync_delay_ms == 0
            && self
                .health
                .last_fsync()
                .is_some_and(|d| d <= INLINE_FSYNC_MAX)
            && rd.entries.iter().map(Entry::size).sum::<usize>() <= max
    }

    fn faults_now(&self) -> crate::node::faults::Faults {
        self.faults.as_ref().map(|f| f.get()).unwrap_or_default()
    }

    /// Snapshot the state machine at `meta.index`: the message store is synced
    /// and the manifest written on a blocking thread, so a slow disk never stalls
    /// heartbeats. Nothing of the log is copied.
    pub(crate) fn start_snapshot(&mut self, meta: SnapshotMeta) {
        let (data, sync) = match self.sm.manifest() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot snapshot: message store not writable");
                return;
            }
        };
        self.persistence.start_snapshot(meta, data, sync);
    }

    /// The job finished: on success, the Ready's held effects go out.
    pub(crate) fn persisted(&mut self, done: Persisted<S>) -> Result<(), WalError> {
        let done = self.persistence.finished(done);
        if let (Some((snap, took)), Ok(_)) = (done.taken, &done.result) {
            tracing::info!(
                index = snap.meta.index,
                ms = took.as_millis() as u64,
                "snapshot taken, log compacted"
            );
            self.sm.synced();
            self.raft.compact(snap.meta.clone());
            self.replication.taken(snap);
            self.metrics.snapshots.inc();
            self.metrics.snapshot_seconds.observe(took.as_secs_f64());
        }
        match done.result {
            Ok(fsync) => {
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
                // A snapshot's install has no Ready: it is taken again when due.
                if needs_disk(&done.rd) {
                    self.persistence.stall(done.rd);
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// A local snapshot's message store is synced: its WAL install is queued
    /// (dropped there if a snapshot received meanwhile went past it: that
    /// install reset the message store, so this manifest names messages no
    /// longer there).
    pub(crate) fn snapshot_synced(&mut self, s: SyncedSnapshot) -> Result<(), WalError> {
        if s.snap.meta.index <= self.raft.snapshot_meta().index {
            // Its message store may have been reset meanwhile: no error counts.
            return Ok(());
        }
        match s.result {
            // Started by this turn's `drive_ready` (`end_turn`).
            Ok(()) => {
                self.persistence.queue_install(s);
                Ok(())
            }
            Err(source) => {
                let e = WalError::Io {
                    path: "message store".into(),
                    source,
                };
                if !e.is_no_space() {
                    return Err(e);
                }
                self.storage_full(&e);
                Ok(())
            }
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
            self.replication.installed(s.clone());
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

    /// Send one message; a snapshot streams our latest snapshot (see `replication`).
    fn send_out(&mut self, env: Envelope) {
        if let Message::Snapshot { .. } = &env.msg {
            self.send_snapshot(env);
            return;
        }
        self.sending(&env);
        self.out.send(env);
    }

    /// Send a `Snapshot` message streaming our latest snapshot, now or once its
    /// stream is prepared (`Replication::stream_snapshot`).
    pub(crate) fn send_snapshot(&mut self, env: Envelope) {
        if let Some((env, source)) = self.replication.stream_snapshot(env, &mut self.sm) {
            self.sending(&env);
            self.out.send_snapshot(env, source);
        }
    }

    fn storage_full(&mut self, e: &WalError) {
        self.metrics.storage_errors.inc();
        if self.health.storage_error().is_none() {
            tracing::error!(error = %e, "disk full: writes refused until space returns");
        }
        self.health.set_storage_error(Some(e.to_string()));
    }

    /// Every tick: what the turns left for the message store's writer is
    /// handed over (`after_turn` does only once `HAND_OVER_BYTES` wait), and
    /// the writer's failure polled; a failed message store refuses writes (like
    /// a full WAL disk) and is retried about once a second; reads go on from
    /// its cache.
    pub(crate) fn repair_messages(&mut self) {
        self.sm.hand_over();
        let Some(e) = self.sm.failure().map(str::to_string) else {
            return;
        };
        if self.health.storage_error().is_none() {
            self.metrics.storage_errors.inc();
            tracing::error!(error = %e, "message store write failed: writes refused until it works again");
            self.health
                .set_storage_error(Some(format!("message store: {e}")));
        }
        if !self.persistence.retry_due() {
            return;
        }
        self.persistence.retry_after(Duration::from_secs(1));
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

    /// Bring the hard-state file up to date (see `Persistence::sync_hardstate_file`).
    pub(crate) fn sync_hardstate_file(&mut self) -> Result<(), WalError> {
        let (cluster, me) = (&self.cluster, self.raft.id());
        self.persistence.sync_hardstate_file(
            self.raft.is_repairing(),
            cluster.peers_generation(),
            || cluster.peers_except(me),
        )
    }

    /// The error a write gets while the disk refuses writes.
    pub(crate) fn storage_refusal(&self) -> Option<ApiError> {
        if let Some(why) = self.sm.store_refusal() {
            return Some(ApiError::Storage(format!("writes refused: {why}")));
        }
        let e = self.health.storage_error()?;
        Some(ApiError::Storage(format!("writes refused: {e}")))
    }
}
