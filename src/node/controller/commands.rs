//! The controller's command handlers and its answers to waiting requests.
//!
//! Handlers only translate: a request becomes a core call (propose, read_index,
//! propose_membership, transfer) plus a parked waiter; answers are given when the
//! log state allows, in `check_writes` / `check_reads`.

use super::Controller;
use crate::api::*;
use crate::core::*;
use crate::node::interface::{Cmd, Outbound};
use crate::node::old_reads::OldRead;
use crate::node::waiters::{RawRead, ReadWaiter, WriteWaiter};
use crate::state_machine::{Command, Landed};
use crate::wal::LogStore;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long a read may wait for this node to apply up to its read index (beyond
/// its long-poll time) before it is answered with an error; a node that cannot
/// apply (a full disk, a partition) answers rather than holding the client.
const READ_INDEX_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

impl<S: LogStore + 'static, O: Outbound> Controller<S, O> {
    pub(crate) fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Write { req, reply } => self.on_write(req, reply),
            Cmd::Read {
                req,
                min_index,
                reply,
            } => self.park_read(req, min_index, reply),
            Cmd::ReadIndex { reply } => self.waiters.queue_read_index(reply),
            Cmd::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Cmd::Cursors { reply } => {
                let all = self.sm.cursors().iter();
                let _ = reply.send(all.map(|(n, o)| (n.clone(), *o)).collect());
            }
            Cmd::Join {
                node_id,
                grpc_addr,
                http_addr,
                reply,
            } => {
                let r = self
                    .cluster
                    .join(&mut self.raft, node_id, grpc_addr, http_addr);
                let _ = reply.send(r);
            }
            Cmd::Transfer { to, reply } => {
                let r = self.raft.transfer_leadership(to).map_err(propose_error);
                let _ = reply.send(r);
            }
            Cmd::Shutdown { reply } => self.on_shutdown(reply),
            Cmd::AddPeers { peers } => self.cluster.add_peers(peers),
            Cmd::ChangeMember {
                node_id,
                member,
                reply,
            } => self.on_change_member(node_id, member, reply),
        }
    }

    fn resolve_w(&self, w: Option<WriteConcern>) -> Result<usize, ApiError> {
        let voters = self.raft.membership().voter_count();
        let n = match w.unwrap_or(self.cfg.default_w) {
            WriteConcern::Majority => voters / 2 + 1,
            WriteConcern::All => voters,
            WriteConcern::Count(n) => n,
        };
        if n == 0 || n > voters {
            return Err(ApiError::InvalidRequest(format!(
                "w must be between 1 and {voters} (the number of voters), got {n}"
            )));
        }
        Ok(n)
    }

    fn on_write(&mut self, req: WriteRequest, reply: crate::node::waiters::WriteReply) {
        if self.shutdown.is_some() {
            let _ = reply.send(Err(ApiError::ShuttingDown));
            return;
        }
        if !self.raft.is_leader() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if let Some(e) = self.storage_refusal() {
            let _ = reply.send(Err(e));
            return;
        }
        if let Some(op) = req.op {
            self.on_log_op(op, req.idempotency_key, reply);
            return;
        }
        let w = match self.resolve_w(req.w) {
            Ok(w) => w,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let timeout = match req.timeout_ms {
            Some(0) => None,
            Some(ms) => Some(std::time::Duration::from_millis(ms)),
            None => self.cfg.write_timeout,
        };
        let key = req.idempotency_key.clone();
        let deadline = timeout.map(|t| Instant::now() + t);
        let waiter = |term, reply, key, duplicate| WriteWaiter {
            term,
            w,
            deadline,
            reply,
            duplicate,
            offset: None,
            key,
            passed_cursors: Vec::new(),
        };
        if let Some(k) = &key {
            if let Some(l) = self.sm.lookup_key(k) {
                let _ = reply.send(self.first_answer(l));
                return;
            }
            if let Some((index, term)) = self.waiters.index_of_key(k) {
                self.waiters
                    .add_write(index, waiter(term, reply, None, true));
                return;
            }
        }
        match self.raft.propose(Self::encode_command(&req)) {
            Ok((index, term)) => {
                self.metrics.write_waits.inc();
                self.waiters
                    .add_write(index, waiter(term, reply, key, false))
            }
            Err(e) => {
                let _ = reply.send(Err(propose_error(e)));
            }
        }
    }

    /// The answer to a keyed command whose key was applied before: its first.
    fn first_answer(&self, l: Landed) -> Result<WriteResult, ApiError> {
        if l.conflict {
            let next_offset = l.offset;
            return Err(ApiError::OffsetConflict { next_offset });
        }
        let acks = self
            .raft
            .acks(l.index, l.term)
            .max(self.raft.membership().quorum());
        Ok(WriteResult {
            offset: l.offset,
            index: l.index,
            term: l.term,
            acks,
            committed: true,
            duplicate: true,
            passed_cursors: Vec::new(),
        })
    }

    /// A trim or cursor change: proposed like a write, answered once applied
    /// (committed by a majority) with what applying it decided. One a follower
    /// forwarded carries a key (`follow::forward_write`) and goes through the
    /// log under it, so that its re-send after a leader change, when the first
    /// send landed, changes nothing and answers like the first (a delete does
    /// not answer 404, a forced move does not undo a later one).
    fn on_log_op(
        &mut self,
        op: LogOp,
        key: Option<String>,
        reply: crate::node::waiters::WriteReply,
    ) {
        if let Some(k) = &key {
            if let Some(l) = self.sm.lookup_key(k) {
                let _ = reply.send(self.first_answer(l));
                return;
            }
            if let Some((index, term)) = self.waiters.index_of_key(k) {
                self.park_until_committed(index, term, reply, None, true);
                return;
            }
        }
        let cmd = match op {
            LogOp::Trim { before } => {
                let next = self.sm.next_offset();
                if before > next {
                    let msg = format!("before_offset {before} is past the end of the log ({next})");
                    let _ = reply.send(Err(ApiError::InvalidRequest(msg)));
                    return;
                }
                Command::Trim {
                    before,
                    by_policy: false,
                }
            }
            LogOp::SetCursor {
                name,
                offset,
                force,
            } => Command::SetCursor {
                name,
                offset,
                force,
                max_cursors: self.cfg.max_cursors,
            },
            LogOp::DeleteCursor { name } => Command::DeleteCursor { name },
        };
        match self.raft.propose(Command::keyed(key.clone(), cmd).encode()) {
            Ok((index, term)) => self.park_until_committed(index, term, reply, key, false),
            Err(e) => {
                let _ = reply.send(Err(propose_error(e)));
            }
        }
    }

    /// Answer every write whose concern now holds, or whose deadline passed.
    ///
    /// Looks only at the writes `Waiters::due` names (new or just applied, expired,
    /// or matched by enough voters since acks last moved): rescanning every waiting
    /// write each turn cost the leader a large share of its CPU under load.
    pub(crate) fn check_writes(&mut self) {
        if !self.waiters.has_writes() {
            return;
        }
        let now = Instant::now();
        let quorum = self.raft.membership().quorum();
        let due = self
            .waiters
            .due(now, quorum, self.raft.term(), self.voter_matches());
        for index in due {
            for w in self.waiters.take_writes(index) {
                if let Some(w) = self.answer_write(index, w, now, quorum) {
                    self.waiters.keep_write(index, w, quorum);
                }
            }
        }
    }

    /// The voters' match indexes, highest first (what `acks` counts from); empty
    /// when not leader, where `acks` is 0.
    fn voter_matches(&self) -> Vec<u64> {
        if !self.raft.is_leader() {
            return Vec::new();
        }
        let m = self.raft.membership();
        let mut v: Vec<u64> = m
            .voters()
            .map(|id| self.raft.match_index(id).unwrap_or(0))
            .collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v
    }

    /// Answer one write if its concern holds or its deadline passed; drop it if its
    /// client left before it applied; otherwise hand it back to wait on.
    ///
    /// A write with `w <= quorum` succeeds only once applied (its offset is
    /// final); one with `w < quorum` may succeed earlier on acks alone; one with
    /// `w > quorum` needs both.
    fn answer_write(
        &mut self,
        index: u64,
        w: WriteWaiter,
        now: Instant,
        quorum: usize,
    ) -> Option<WriteWaiter> {
        let acks = self.raft.acks(index, w.term);
        let applied = w.offset.is_some();
        let reported = if applied { acks.max(quorum) } else { acks };
        // Before apply, only with an offset that applying cannot change (not a
        // conditional write, nor one behind a conditional or maybe-duplicate
        // entry): else it waits to be applied.
        let early = if !applied && w.w < quorum && acks >= w.w {
            self.certain_offset(index)
        } else {
            None
        };
        let done = if applied {
            w.w <= quorum || acks >= w.w
        } else {
            early.is_some()
        };
        if done {
            let offset = w
                .offset
                .or(early)
                .unwrap_or_else(|| self.predicted_offset(index));
            let res = WriteResult {
                offset,
                index,
                term: w.term,
                acks: reported,
                committed: applied,
                duplicate: w.duplicate,
                passed_cursors: w.passed_cursors,
            };
            let _ = w.reply.send(Ok(res));
        } else if w.deadline.is_some_and(|d| now >= d) {
            self.metrics.write_timeouts.inc();
            let offset = w.offset.unwrap_or_else(|| self.predicted_offset(index));
            let err = ApiError::WriteTimeout {
                offset,
                index,
                acks: reported,
                w: w.w,
            };
            let _ = w.reply.send(Err(err));
        } else if w.reply.is_closed() && !applied {
            // The client went away; the entry stays in the log regardless.
        } else {
            return Some(w);
        }
        None
    }

    /// Answer reads whose index is applied (and long polls that have data or expired).
    pub(crate) fn check_reads(&mut self) {
        let reads = self.waiters.take_reads();
        if reads.is_empty() {
            return;
        }
        let now = Instant::now();
        let applied = self.sm.applied_index();
        for r in reads {
            if r.reply.is_closed() {
                continue;
            }
            if applied < r.min_index {
                if now >= r.deadline + READ_INDEX_GRACE {
                    let _ = r.reply.send(Err(ApiError::NoQuorum(
                        "read index not reached in time".into(),
                    )));
                } else {
                    self.waiters.park_read(r);
                }
                continue;
            }
            let first_offset = self.sm.first_offset();
            if r.req.from < first_offset {
                // Also ends a long poll whose offset a trim passed while it waited.
                let _ = r.reply.send(Err(ApiError::OffsetTrimmed { first_offset }));
                continue;
            }
            if self.sm.reads_files(r.req.from) {
                self.start_old_read(r);
                continue;
            }
            let msgs = match self.sm.read(r.req.from, r.limit) {
                Ok(msgs) => msgs,
                Err(e) => {
                    read_failed(r, &e);
                    continue;
                }
            };
            if msgs.is_empty() && now < r.deadline {
                self.waiters.park_read(r);
                continue;
            }
            let next_offset = msgs
                .last()
                .map_or(r.req.from.min(self.sm.next_offset()), |(o, _)| o + 1);
            let raw = RawRead {
                messages: msgs,
                next_offset,
            };
            let _ = r.reply.send(Ok(raw));
        }
    }

    /// A checked read whose messages left the cache: read on a blocking thread
    /// (see `old_reads`), or parked until a slot is free.
    fn start_old_read(&mut self, r: ReadWaiter) {
        let Some(slot) = self.old_reads.slot() else {
            self.waiters.park_read(r);
            return;
        };
        let next_if_empty = r.req.from.min(self.sm.next_offset());
        let read = match self.sm.detached_read(r.req.from, r.limit) {
            Ok(read) => read,
            Err(e) => return read_failed(r, &e),
        };
        let delay = self
            .faults
            .as_ref()
            .map_or(0, |f| f.get().msgstore_read_delay_ms);
        let read = OldRead {
            read,
            next_if_empty,
            delay: std::time::Duration::from_millis(delay),
            reply: r.reply,
        };
        self.old_reads.spawn(read, slot);
    }

    /// One ReadIndex round for every linearizable read asked in this turn.
    pub(crate) fn flush_read_index_batch(&mut self) {
        let batch = self.waiters.take_read_index_batch();
        if batch.is_empty() {
            return;
        }
        self.next_ctx += 1;
        match self.raft.read_index(self.next_ctx) {
            Ok(()) => self.waiters.read_index_round(self.next_ctx, batch),
            Err(_) => {
                for r in batch {
                    let _ = r.send(Err(self.not_leader()));
                }
            }
        }
    }

    pub(crate) fn answer_read_index(&mut self, rs: ReadState) {
        for r in self.waiters.read_index_done(rs.ctx) {
            let _ = r.send(Ok(rs.index));
        }
    }

    /// Membership change asked by an operator; answered when committed.
    fn on_change_member(
        &mut self,
        id: NodeId,
        member: Option<Member>,
        reply: crate::node::waiters::WriteReply,
    ) {
        match self.cluster.change_member(&mut self.raft, id, member) {
            Ok((index, term)) => self.park_until_committed(index, term, reply, None, false),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// A change through the log (membership, trim, cursor) is answered once a
    /// quorum committed and this node applied it, or at the write timeout.
    fn park_until_committed(
        &mut self,
        index: u64,
        term: u64,
        reply: crate::node::waiters::WriteReply,
        key: Option<String>,
        duplicate: bool,
    ) {
        let m = self.raft.membership();
        let waiter = WriteWaiter {
            term,
            w: m.quorum().min(m.voter_count()).max(1),
            deadline: self.cfg.write_timeout.map(|t| Instant::now() + t),
            reply,
            duplicate,
            offset: None,
            key,
            passed_cursors: Vec::new(),
        };
        self.waiters.add_write(index, waiter);
    }

    fn on_shutdown(&mut self, reply: oneshot::Sender<()>) {
        let deadline = Instant::now() + std::time::Duration::from_secs(3);
        if self.raft.is_leader() && self.raft.membership().voter_count() > 1 {
            match self.raft.transfer_leadership(None) {
                Ok(to) => tracing::info!(to = %to, "shutting down: handing leadership over"),
                Err(e) => tracing::warn!(error = %e, "shutting down without a leadership transfer"),
            }
        }
        self.shutdown = Some((deadline, reply));
    }

    pub(crate) fn status(&self) -> Status {
        let r = &self.raft;
        let me = r.id().clone();
        let mut unreachable = Vec::new();
        let members = r
            .membership()
            .members
            .iter()
            .map(|(id, m)| {
                let seen = if *id == me {
                    Some((true, 0))
                } else {
                    self.peer_reachable(id)
                };
                if seen.is_some_and(|(ok, _)| !ok) {
                    unreachable.push(id.clone());
                }
                MemberStatus {
                    node_id: id.clone(),
                    grpc_addr: m.grpc_addr.clone(),
                    http_addr: m.http_addr.clone(),
                    voter: m.voter,
                    match_index: r.match_index(id),
                    reachable: seen.map(|(ok, _)| ok),
                    last_heartbeat_ms: seen.map(|(_, ms)| ms),
                    repairing: if *id == me {
                        r.is_repairing()
                    } else {
                        r.peer_repairing(id)
                    },
                }
            })
            .collect();
        let apply_lag = r.commit_index().saturating_sub(self.sm.applied_index());
        Status {
            node_id: me,
            role: self.role_name().into(),
            term: r.term(),
            leader_id: r.leader().cloned(),
            phase: self.phase().into(),
            commit_index: r.commit_index(),
            applied_index: self.sm.applied_index(),
            last_log_index: r.last_index(),
            first_offset: self.sm.first_offset(),
            next_offset: self.sm.next_offset(),
            log_bytes: self.sm.log_bytes(),
            members,
            health: self.health.report(apply_lag, &unreachable),
            repairing: r.is_repairing(),
            repair: r
                .repair_progress()
                .map(|(index, target)| crate::api::RepairProgress { index, target }),
        }
    }

    fn phase(&self) -> &'static str {
        if !self.raft.is_voter() {
            "data_readiness"
        } else if matches!(self.raft.role(), Role::Candidate | Role::PreCandidate) {
            "election"
        } else {
            "run"
        }
    }
}

/// Answers a read the message store could not serve.
fn read_failed(r: ReadWaiter, e: &std::io::Error) {
    tracing::error!(error = %e, from = r.req.from, "reading the message store failed");
    let _ = r
        .reply
        .send(Err(ApiError::Storage(format!("read failed: {e}"))));
}
