//! The replication-manager controller: one task that owns the consensus core, the
//! state machine, the waiting requests and the managers (`cluster`,
//! `persistence` with the WAL, `replication`, `heartbeat`, `health`), and routes
//! events between them; each manager keeps its state private and is handed the
//! core when it needs it. Everything reaches the controller through one bounded
//! channel; handlers never touch consensus state. Its fields are private: only
//! its child modules (`commands`, `persist`, `observe`; in tests `testdrive`
//! and `tests`) see them.
//!
//! One loop turn: take one event (tick or command), drain what else is queued
//! (batching: many writes become one WAL write, one fsync, one append per peer),
//! then carry out the core's `Ready` in order: persist, send, apply, answer.
//! A turn is `on_event` then `end_turn`; `run` only waits for the events, so the
//! deterministic tests (`testdrive`, `tests`) feed events to the same code.
//!
//! Invariants:
//! - nothing leaves the node before the hard state and entries it depends on are
//!   fsynced (the core counts the leader's own copy only after that fsync);
//! - a write is answered only when its write concern holds: `w >= majority` after
//!   it is applied (so its offset is final), `w < majority` on acks alone;
//! - a write whose entry was replaced by another leader's is answered with an error,
//!   never with success.

use crate::node::cluster::{self, Cluster};
use crate::node::interface::*;
use crate::node::persistence::{Finished, Persisted, Persistence, SyncedSnapshot};
use crate::node::replication::Replication;
use crate::node::waiters::{ReadReply, ReadWaiter, Waiters};
mod commands;
mod observe;
mod persist;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod testdrive;
#[cfg(test)]
mod tests;

use crate::api::*;
use crate::core::*;
use crate::msgstore::MessageStore;
use crate::state_machine::{Applied, Command, StateMachine};
use crate::wal::{LogStore, WalError};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Commands handled per loop turn at most (bounds latency of ticks).
const MAX_BATCH: usize = 4096;

/// What a loop turn woke up for (see `Controller::run`). Lives on the stack for
/// one turn only, so its size does not matter (no box per persistence job).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Event<S> {
    /// The persistence job finished.
    Persisted(Persisted<S>),
    /// A local snapshot's message-store sync finished.
    SnapshotSynced(SyncedSnapshot),
    Tick,
    /// A message from a peer.
    Peer(Envelope),
    Cmd(Cmd),
    /// Something handled in place (a prepared snapshot stream).
    Nothing,
}

impl<S> From<Finished<S>> for Event<S> {
    fn from(f: Finished<S>) -> Self {
        match f {
            Finished::Done(done) => Event::Persisted(done),
            Finished::Synced(s) => Event::SnapshotSynced(s),
        }
    }
}

/// A storage error the node cannot go on after: logged, handed up as text.
fn fatal(e: WalError) -> String {
    tracing::error!(error = %e, "fatal storage error; stopping the node");
    e.to_string()
}

/// The health manager, metrics and fault switch a controller reports to.
pub struct Observability {
    pub metrics: Arc<crate::metrics::Metrics>,
    pub health: crate::node::health::Health,
    /// `Some` only when `[debug] fault_injection = true`.
    pub faults: Option<crate::node::faults::FaultSwitch>,
}

pub struct Controller<S: LogStore, O: Outbound> {
    raft: RaftNode,
    /// The log store, the Ready job, stalled retry, durable term and vote.
    persistence: Persistence<S>,
    sm: StateMachine,
    out: O,
    cfg: ControllerConfig,
    shared: Arc<Shared>,
    waiters: Waiters,
    next_ctx: u64,
    /// Local snapshots and snapshot streams for followers.
    replication: Replication,
    /// Membership view, peer addresses, joins, learner promotion.
    cluster: Cluster,
    shutdown: Option<(Instant, oneshot::Sender<()>)>,
    ticks: u64,
    metrics: Arc<crate::metrics::Metrics>,
    health: crate::node::health::Health,
    faults: Option<crate::node::faults::FaultSwitch>,
    /// Reads of messages out of the cache, on blocking threads (bounded).
    old_reads: crate::node::old_reads::OldReads,
    seen: crate::node::heartbeat::PeerSeen,
    /// Index of the policy trim proposed last (none again until it applied).
    policy_trim: u64,
}

impl<S: LogStore + 'static, O: Outbound> Controller<S, O> {
    pub fn new(
        raft: RaftNode,
        store: S,
        out: O,
        cfg: ControllerConfig,
        shared: Arc<Shared>,
        obs: Observability,
    ) -> Result<Self, String> {
        let mut sm = match &cfg.messages {
            Some(m) => {
                let store = MessageStore::open(&m.dir, m.segment_bytes, m.cache_bytes)
                    .map_err(|e| format!("message store {}: {e}", m.dir.display()))?;
                let mut sm = StateMachine::with_store(cfg.idempotency_window, store);
                sm.set_install_dir(m.install_dir.clone());
                if let Some(f) = &obs.faults {
                    sm.set_write_delay(f.write_delay());
                }
                sm
            }
            None => StateMachine::new(cfg.idempotency_window),
        };
        let mut applied_membership = Membership::default();
        let latest_snapshot = store.snapshot();
        let synced_term_vote = (raft.term(), raft.hard_state().vote);
        match &latest_snapshot {
            Some(snap) => {
                sm.restore(snap.data.clone())?;
                applied_membership = snap.meta.membership.clone();
            }
            // Whatever the store holds was applied from the log, which replays.
            None => sm.reset()?,
        }
        Ok(Controller {
            raft,
            persistence: Persistence::new(store, synced_term_vote),
            replication: Replication::new(latest_snapshot),
            sm,
            out,
            cfg,
            shared,
            waiters: Waiters::default(),
            next_ctx: 0,
            cluster: Cluster::new(applied_membership),
            shutdown: None,
            ticks: 0,
            metrics: obs.metrics,
            health: obs.health,
            faults: obs.faults,
            old_reads: Default::default(),
            seen: Default::default(),
            policy_trim: 0,
        })
    }

    /// Keep the hard-state file (`crate::hardstate`) in `dir`.
    pub fn keep_hardstate_file(&mut self, dir: std::path::PathBuf) {
        self.persistence.keep_hardstate_file(dir);
    }

    /// This node starts repairing (`bootstrap`): the peers the hard-state file
    /// remembers are where it can fetch what it lost.
    pub fn start_repairing_with(&mut self, peers: BTreeMap<NodeId, String>) {
        self.cluster.add_peers(peers);
        self.persistence.repair_started();
    }

    /// Is this node in the membership it starts with?
    pub fn is_member(&self) -> bool {
        self.raft.membership().contains(self.raft.id())
    }

    /// Run until shutdown. An `Err` is a fatal storage failure (the node stops
    /// rather than risk acknowledging what is not durable).
    pub async fn run(
        mut self,
        mut raft_rx: mpsc::Receiver<Envelope>,
        mut rx: mpsc::Receiver<Cmd>,
    ) -> Result<(), String> {
        let mut ticker = tokio::time::interval(self.cfg.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut built = self.replication.take_receiver();
        self.after_turn().map_err(fatal)?;
        loop {
            let ev = tokio::select! {
                f = self.persistence.next_finished() => Event::from(f),
                _ = ticker.tick() => Event::Tick,
                Some(b) = built.recv() => {
                    for env in self.replication.built(b) {
                        self.send_snapshot(env);
                    }
                    Event::Nothing
                }
                Some(env) = raft_rx.recv() => Event::Peer(env),
                cmd = rx.recv() => match cmd {
                    Some(c) => Event::Cmd(c),
                    None => break,
                },
            };
            self.on_event(ev).map_err(fatal)?;
            // Peer messages first: they carry acks that answer waiting writes.
            while let Ok(env) = raft_rx.try_recv() {
                self.step(env);
            }
            for _ in 0..MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => self.handle(c),
                    Err(_) => break,
                }
            }
            if self.end_turn()? {
                break;
            }
        }
        self.stopped();
        Ok(())
    }

    /// The first half of a loop turn: the event it woke up for. The test driver
    /// (`testdrive`) feeds events through here too, so it runs this very code.
    pub(crate) fn on_event(&mut self, ev: Event<S>) -> Result<(), WalError> {
        match ev {
            Event::Persisted(done) => self.persisted(done)?,
            Event::SnapshotSynced(s) => self.snapshot_synced(s)?,
            Event::Tick => self.on_tick(),
            Event::Peer(env) => self.step(env),
            Event::Cmd(c) => self.handle(c),
            Event::Nothing => {}
        }
        Ok(())
    }

    /// The second half of a loop turn: carry out the core's `Ready` and answer
    /// what can be answered. `Ok(true)`: the shutdown is done, stop. `Err`: a
    /// fatal storage error (every waiting request was failed).
    pub(crate) fn end_turn(&mut self) -> Result<bool, String> {
        if let Err(e) = self.after_turn() {
            self.waiters.fail_all(ApiError::Storage(e.to_string()));
            return Err(fatal(e));
        }
        Ok(self.shutdown_done())
    }

    /// The loop ended: every waiting request is answered, the shutdown acknowledged.
    fn stopped(&mut self) {
        self.waiters.fail_all(ApiError::ShuttingDown);
        if let Some((_, reply)) = self.shutdown.take() {
            let _ = reply.send(());
        }
    }

    /// A peer message into the core; messages from strangers are noted (the core
    /// itself keeps a removed node from disrupting the cluster).
    fn step(&mut self, env: Envelope) {
        if self.cluster.is_stranger(&self.raft, &env.from) {
            self.metrics.stranger_messages.inc();
        }
        self.saw_message(&env);
        self.raft.step(env);
    }

    fn after_turn(&mut self) -> Result<(), WalError> {
        self.flush_read_index_batch();
        self.drive_ready()?;
        // What this turn applied goes to the message store's writer once
        // enough waits (the tick's `repair_messages` hands over the rest).
        self.sm.hand_over_if_due();
        self.publish_applied();
        self.maybe_snapshot();
        self.sync_peers();
        self.check_writes();
        self.check_reads();
        Ok(())
    }

    /// Wake streams when messages were applied (only on a change).
    fn publish_applied(&self) {
        let next = self.sm.next_offset();
        self.shared.applied_offset.send_if_modified(|v| {
            let changed = *v != next;
            *v = next;
            changed
        });
    }

    pub(crate) fn apply(&mut self, e: &Entry) {
        self.replication.applied(e.size() as u64);
        let applied = self.sm.apply(e);
        if matches!(applied, Applied::Trimmed { .. }) {
            self.replication.trim_applied();
        }
        if let EntryPayload::Membership(m) = &e.payload {
            self.cluster.apply_membership(self.raft.id(), e.index, m);
        }
        for mut w in self.waiters.take_writes(e.index) {
            if w.term != e.term {
                let msg = "a new leader replaced the entry; the write was not appended";
                let _ = w.reply.send(Err(ApiError::NoQuorum(msg.into())));
                continue;
            }
            w.offset = match &applied {
                Applied::Appended { first, .. } => Some(*first),
                Applied::Duplicate(l) if l.conflict => {
                    let next_offset = l.offset;
                    let _ = w.reply.send(Err(ApiError::OffsetConflict { next_offset }));
                    continue;
                }
                Applied::Duplicate(l) => {
                    w.duplicate = true;
                    Some(l.offset)
                }
                Applied::Conflict { next_offset } => {
                    let next_offset = *next_offset;
                    let _ = w.reply.send(Err(ApiError::OffsetConflict { next_offset }));
                    continue;
                }
                Applied::Trimmed {
                    first_offset,
                    passed_cursors,
                } => {
                    w.passed_cursors = passed_cursors.clone();
                    Some(*first_offset)
                }
                Applied::Cursor(Ok(offset)) => Some(*offset),
                Applied::Cursor(Err(refusal)) => {
                    let _ = w.reply.send(Err(cursor_error(refusal)));
                    continue;
                }
                _ => Some(self.sm.next_offset()),
            };
            self.waiters.add_write(e.index, w);
        }
    }

    /// Every `snapshot_every` applied entries or `snapshot_every_bytes` applied
    /// bytes, and after a full payload was installed, snapshot in the background.
    fn maybe_snapshot(&mut self) {
        let applied = self.sm.applied_index();
        let snap_index = self.raft.snapshot_meta().index;
        let blocked = self.persistence.snapshotting()
            || self.persistence.stalled()
            || self.sm.failure().is_some()
            || self.sm.store_behind();
        let due = self.replication.snapshot_due(
            applied,
            snap_index,
            self.cfg.snapshot_every,
            self.cfg.snapshot_every_bytes,
            blocked,
            self.raft.sending_snapshot(),
        );
        if !due {
            return;
        }
        let Some(term) = self.raft.entry_term(applied) else {
            return;
        };
        let membership = self.cluster.applied().clone();
        self.start_snapshot(SnapshotMeta {
            index: applied,
            term,
            membership,
        });
    }

    /// Tell waiting requests (`follow`) when the leader or the term changed.
    /// Compares first without allocating: this runs every loop turn.
    fn publish_leader(&self) {
        {
            let v = self.shared.leader.borrow();
            let same = v.term == self.raft.term()
                && v.me == self.raft.is_leader()
                && v.leader.as_ref() == self.raft.leader()
                && v.addr.is_some() == (self.raft.leader().is_some() && !v.me);
            if same {
                return;
            }
        }
        let view = LeaderView {
            term: self.raft.term(),
            leader: self.raft.leader().cloned(),
            addr: self.leader_hint(),
            me: self.raft.is_leader(),
        };
        self.shared.leader.send_if_modified(|v| {
            let changed = *v != view;
            if changed {
                *v = view;
            }
            changed
        });
    }

    fn sync_peers(&mut self) {
        self.publish_leader();
        let voters = self.raft.membership().voter_count();
        self.shared.voters.store(voters, Ordering::Relaxed);
        self.cluster.sync_peers(&self.raft, &self.out);
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        // A candidate's vote requests (a voter's grant) leave only once its
        // term and vote are durable: its election timer starts then, not while
        // that fsync runs. On a loaded disk the fsync alone outlasted the
        // timeout (1.7 s against 0.5-1 s in CI), and the node gave up the
        // candidacy it had not yet been able to ask anyone about.
        if self.raft.is_leader() || !self.persistence.persisting_vote() {
            self.raft.tick();
        }
        self.health_tick();
        self.replication.expire();
        self.repair_messages();
        if let Err(e) = self.sync_hardstate_file() {
            tracing::error!(error = %e, "cannot write the hard-state file; retrying");
        }
        self.update_metrics();
        if self.raft.is_leader() && self.ticks.is_multiple_of(5) {
            if self.shutdown.is_none() {
                self.cluster.maybe_promote_learner(&mut self.raft);
            }
            self.maybe_retention_trim();
        }
    }

    /// Leader: propose the trim retention asks for, by this node's clock (one at
    /// a time; followers apply the entry, never their own policy).
    fn maybe_retention_trim(&mut self) {
        let r = self.cfg.retention;
        if r.is_unlimited() || self.shutdown.is_some() || self.sm.applied_index() < self.policy_trim
        {
            return;
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let before = self.sm.retention_point(&r, now_ms);
        if before <= self.sm.first_offset() {
            return;
        }
        let cmd = Command::Trim {
            before,
            by_policy: true,
        };
        match self.raft.propose(cmd.encode()) {
            Ok((index, _)) => {
                tracing::info!(before, index, "retention: trimming the log");
                self.policy_trim = index;
            }
            Err(e) => tracing::debug!(error = %e, "retention trim deferred"),
        }
    }

    /// The grpc address of the leader, when known and not us.
    pub(crate) fn leader_hint(&self) -> Option<String> {
        cluster::leader_hint(&self.raft)
    }

    pub(crate) fn not_leader(&self) -> ApiError {
        cluster::not_leader(&self.raft)
    }

    /// This node stopped leading: nothing it holds can be answered by it any more,
    /// so every waiting request is answered now rather than at its timeout. A
    /// write not yet applied may still commit under the next leader (504, outcome
    /// unknown; a forwarding follower re-sends it under its key); an applied one
    /// is committed but cannot count more acks here (504 with its offset).
    pub(crate) fn lost_leadership(&mut self) {
        for r in self.waiters.take_read_index_rounds() {
            let _ = r.send(Err(self.not_leader()));
        }
        self.check_writes();
        let quorum = self.raft.membership().quorum();
        for (index, w) in self.waiters.take_all_writes() {
            let err = match w.offset {
                Some(offset) => ApiError::WriteTimeout {
                    offset,
                    index,
                    acks: quorum,
                    w: w.w,
                },
                None => ApiError::OutcomeUnknown(
                    "this node stopped being the leader before the write committed".into(),
                ),
            };
            self.metrics.write_timeouts.inc();
            let _ = w.reply.send(Err(err));
        }
    }

    fn shutdown_done(&self) -> bool {
        let Some((deadline, _)) = &self.shutdown else {
            return false;
        };
        let alone = self.raft.membership().voter_count() <= 1;
        !self.raft.is_leader() || alone || Instant::now() >= *deadline
    }

    /// The offset the write at `index` lands at if that is certain before it
    /// is applied (`StateMachine::certain_offset`); `None`: wait for apply.
    pub(crate) fn certain_offset(&self, index: u64) -> Option<u64> {
        let from = self.sm.applied_index() + 1;
        let payload = |i: u64| match self.raft.entry(i).map(|e| &e.payload) {
            Some(EntryPayload::Command(c)) => Some(&c[..]),
            _ => None,
        };
        payload(index)?;
        let pending: Vec<&[u8]> = (from..=index).filter_map(payload).collect();
        self.sm.certain_offset(&pending)
    }

    pub(crate) fn predicted_offset(&self, index: u64) -> u64 {
        let from = self.sm.applied_index() + 1;
        let msgs: u64 = (from..index)
            .map(|i| match self.raft.entry(i).map(|e| &e.payload) {
                Some(EntryPayload::Command(c)) => Command::message_count(c),
                _ => 0,
            })
            .sum();
        self.sm.next_offset() + msgs
    }

    /// The entry of a write, stamped with this (the leader's) clock for
    /// retention by age. Each message is copied once, into the entry.
    pub(crate) fn encode_command(req: &WriteRequest) -> Bytes {
        let ts_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            .max(1);
        crate::state_machine::encode_append(
            req.idempotency_key.as_deref(),
            req.if_next_offset,
            ts_ms,
            &req.messages(),
        )
    }

    pub(crate) fn park_read(&mut self, req: ReadRequest, min_index: u64, reply: ReadReply) {
        let limit = req
            .limit
            .unwrap_or(self.cfg.default_read_limit)
            .clamp(1, self.cfg.max_read_limit);
        let wait = Duration::from_millis(req.wait_ms.unwrap_or(0)).min(self.cfg.max_wait);
        let deadline = Instant::now() + wait;
        self.waiters.park_read(ReadWaiter {
            req,
            limit,
            min_index,
            deadline,
            reply,
        });
    }
}

/// The API error for a refused cursor command.
pub(crate) fn cursor_error(r: &crate::state_machine::CursorRefusal) -> ApiError {
    use crate::state_machine::CursorRefusal as R;
    match r {
        R::Regression { current } => ApiError::CursorRegression { current: *current },
        R::TooMany { max } => ApiError::TooManyCursors { max: *max },
        R::NotFound => ApiError::NotFound("no such cursor".into()),
    }
}
