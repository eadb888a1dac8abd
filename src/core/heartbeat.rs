//! The heartbeat manager inside the core: leader heartbeats, check-quorum, stalled
//! leadership transfers, and ReadIndex rounds (which ride on heartbeats).
//!
//! Invariants:
//! - a leader that has not heard from a quorum of voters within the minimum election
//!   timeout steps down, so a partitioned leader stops accepting writes;
//! - a read index is handed out only after a quorum confirmed our leadership after
//!   the read was asked, and only once we committed an entry of our own term;
//! - read contexts are increasing (the driver numbers them), so an ack for context
//!   `c` confirms every round with context `<= c`.

use super::message::Message;
use super::progress::ProgressState;
use super::raft::{ProposeError, RaftNode, ReadState, Reason};
use super::role::PendingRead;
use super::types::NodeId;
use std::collections::BTreeSet;

impl RaftNode {
    pub(crate) fn tick_leader(&mut self) {
        let Some(l) = self.state.as_leader_mut() else {
            return;
        };
        l.heartbeat_elapsed += 1;
        let beat = l.heartbeat_elapsed >= self.cfg.heartbeat_ticks;
        if beat {
            l.heartbeat_elapsed = 0;
        }
        self.election_elapsed += 1;
        if beat {
            self.broadcast_heartbeat();
        }
        if self.election_elapsed >= self.cfg.election_ticks_min {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_active() {
                self.become_follower(self.term, None, Reason::CheckQuorum);
                return;
            }
        }
        if self.drop_stale_transfer() {
            self.note_role(Reason::TransferTimedOut);
        }
        self.retry_stale_snapshots();
    }

    /// Leader: forget a transfer not done within the maximum election timeout.
    /// True when one was dropped.
    fn drop_stale_transfer(&mut self) -> bool {
        let (now, max) = (self.now, self.cfg.election_ticks_max);
        let Some(l) = self.state.as_leader_mut() else {
            return false;
        };
        let stale = l
            .transferee
            .as_ref()
            .is_some_and(|(_, started)| now - started > max);
        if stale {
            l.transferee = None;
        }
        stale
    }

    /// Did a quorum of voters (us included) answer since the last check? Resets.
    fn quorum_active(&mut self) -> bool {
        let me = &self.cfg.id;
        let Some(l) = self.state.as_leader_mut() else {
            return false;
        };
        let active = self
            .membership
            .voters()
            .filter(|v| *v == me || l.progress.get(*v).is_some_and(|p| p.recent_active))
            .count();
        for p in l.progress.values_mut() {
            p.recent_active = false;
        }
        active >= self.membership.quorum()
    }

    pub(crate) fn broadcast_heartbeat(&mut self) {
        let last_read = self.state.as_leader().and_then(|l| l.pending_reads.last());
        let ctx = last_read.map_or(0, |r| r.ctx);
        for p in self.peers() {
            let m = self.state.progress(&p).map_or(0, |pr| pr.match_index);
            let commit = self.log.committed.min(m);
            self.send(&p, Message::Heartbeat { commit, ctx });
        }
    }

    pub(crate) fn on_heartbeat(&mut self, from: &NodeId, commit: u64, ctx: u64) {
        self.log.commit_to(commit.min(self.log.last_index()));
        let repairing = self.repair.is_some();
        let incarnation = self.cfg.incarnation;
        let disk = self.disk;
        self.send(
            from,
            Message::HeartbeatResp {
                ctx,
                repairing,
                incarnation,
                disk,
            },
        );
    }

    pub(crate) fn on_heartbeat_resp(
        &mut self,
        from: &NodeId,
        ctx: u64,
        repairing: bool,
        disk: super::DiskState,
    ) {
        if !self.is_leader() {
            return;
        }
        self.note_peer_repairing(from, repairing);
        let (now, last) = (self.now, self.log.last_index());
        let Some(pr) = self.state.progress_mut(from) else {
            return;
        };
        pr.disk = disk;
        pr.recent_active = true;
        pr.last_heard_tick = now;
        pr.probe_sent = false;
        if pr.match_index < last {
            // Reachable but behind: appends to it may have been lost. Make room for
            // one more and send it even if it carries no entries, so that a lost
            // append turns into a rejection (and a probe) instead of a stall.
            if pr.state == ProgressState::Replicate
                && !pr.can_send(self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes)
            {
                pr.free_first_inflight();
            }
            pr.commit_sent = 0;
            self.send_append(from);
        }
        if ctx > 0 && self.membership.is_voter(from) && !repairing {
            self.ack_reads(from, ctx);
        }
    }

    /// Start a ReadIndex round tagged `ctx` (increasing). The answer comes in
    /// `Ready::read_states`.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        let own_term_committed = self.log.term(self.log.committed) == Some(self.term);
        let Some(l) = self.state.as_leader_mut() else {
            return Err(ProposeError::NotLeader {
                leader: self.leader().cloned(),
            });
        };
        if !own_term_committed {
            l.queued_reads.push(ctx);
            return Ok(());
        }
        self.start_read(ctx);
        Ok(())
    }

    fn start_read(&mut self, ctx: u64) {
        let index = self.log.committed;
        if self.membership.voter_count() <= 1 && self.is_voter() {
            self.read_states.push(ReadState { ctx, index });
            return;
        }
        let Some(l) = self.state.as_leader_mut() else {
            return;
        };
        let acks = BTreeSet::from([self.cfg.id.clone()]);
        l.pending_reads.push(PendingRead { ctx, index, acks });
        self.broadcast_heartbeat();
    }

    /// Our first commit in this term: rounds asked before it can start now.
    pub(crate) fn release_queued_reads(&mut self) {
        if self.log.term(self.log.committed) != Some(self.term) {
            return;
        }
        let Some(l) = self.state.as_leader_mut() else {
            return;
        };
        for ctx in std::mem::take(&mut l.queued_reads) {
            self.start_read(ctx);
        }
    }

    fn ack_reads(&mut self, from: &NodeId, ctx: u64) {
        let Some(l) = self.state.as_leader_mut() else {
            return;
        };
        for r in l.pending_reads.iter_mut().filter(|r| r.ctx <= ctx) {
            r.acks.insert(from.clone());
        }
        let quorum = self.membership.quorum();
        let voters = &self.membership;
        let done = l
            .pending_reads
            .iter()
            .rposition(|r| r.acks.iter().filter(|a| voters.is_voter(a)).count() >= quorum);
        if let Some(last_done) = done {
            for r in l.pending_reads.drain(..=last_done) {
                self.read_states.push(ReadState {
                    ctx: r.ctx,
                    index: r.index,
                });
            }
        }
    }
}
