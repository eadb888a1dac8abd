//! The data replication manager: per-follower progress, pipelined appends with
//! fast backtracking, snapshots for followers that fell below the compacted prefix,
//! and the commit rule.
//!
//! Invariants:
//! - an append carries `(prev_index, prev_term)`; a follower accepts only when its
//!   log holds that entry, so logs match up to the last accepted index (Log Matching);
//! - the leader counts an entry as replicated on a follower only after the follower
//!   persisted it (it replies after its fsync), and on itself only after `on_persisted`;
//! - commit advances by counting replicas only for entries of the current term (§5.4.2),
//!   and never counts a follower that says it is repairing (see `repair`);
//! - a follower never commits past what the leader told it matches.

use super::message::Message;
use super::progress::{Progress, ProgressState};
use super::raft::{RaftNode, Reason};
use super::types::{Entry, EntryPayload, NodeId, Snapshot};

impl RaftNode {
    /// Leader: make its progress hold exactly the other members (after it won or
    /// the membership changed). Drops a transfer to a member no longer a voter.
    pub(crate) fn sync_progress(&mut self) {
        let peers = self.peers();
        let (next, now) = (self.log.last_index() + 1, self.now);
        let Some(l) = self.state.as_leader_mut() else {
            return;
        };
        l.progress.retain(|id, _| peers.contains(id));
        for p in peers {
            l.progress.entry(p).or_insert_with(|| {
                let mut pr = Progress::new(next);
                pr.last_heard_tick = now;
                pr
            });
        }
        let voters = &self.membership;
        if l.transferee
            .as_ref()
            .is_some_and(|(t, _)| !voters.is_voter(t))
        {
            l.transferee = None;
        }
    }

    pub(crate) fn broadcast_append(&mut self) {
        for p in self.peers() {
            self.send_append(&p);
        }
    }

    /// Send as many appends to `to` as its state and inflight bounds allow.
    pub(crate) fn send_append(&mut self, to: &NodeId) {
        let mut sent_one = false;
        loop {
            let Some(pr) = self.state.progress(to) else {
                return;
            };
            if !pr.can_send(self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes) {
                return;
            }
            let next = pr.next_index;
            if next > self.log.last_index() && (sent_one || pr.commit_sent >= self.log.committed) {
                return; // nothing new, and the follower already knows the commit
            }
            let Some(prev_term) = self.log.term(next - 1) else {
                self.send_snapshot(to);
                return;
            };
            let entries =
                self.log
                    .slice(next, self.cfg.max_append_entries, self.cfg.max_append_bytes);
            let last = entries.last().map_or(next - 1, |e| e.index);
            let bytes: usize = entries.iter().map(Entry::size).sum();
            let commit = self.log.committed;
            self.send(
                to,
                Message::Append {
                    prev_index: next - 1,
                    prev_term,
                    entries,
                    commit,
                },
            );
            let pr = self.state.progress_mut(to).expect("checked above");
            pr.sent(last, bytes);
            pr.commit_sent = commit;
            sent_one = true;
            if last < next {
                return; // an empty append (commit only)
            }
        }
    }

    fn send_snapshot(&mut self, to: &NodeId) {
        let meta = self.log.snapshot.clone();
        let index = meta.index;
        let now = self.now;
        self.send(
            to,
            Message::Snapshot {
                snapshot: Snapshot {
                    meta,
                    data: Default::default(),
                },
            },
        );
        if let Some(pr) = self.state.progress_mut(to) {
            pr.become_snapshot(index, now);
        }
    }

    /// Follower side of an append.
    pub(crate) fn on_append(
        &mut self,
        from: &NodeId,
        prev_index: u64,
        prev_term: u64,
        entries: &[Entry],
        commit: u64,
    ) {
        self.learn_repair_target(commit);
        if prev_index < self.log.committed {
            // Already have (and committed) that prefix; skip what is committed.
            let skip = (self.log.committed - prev_index) as usize;
            if skip >= entries.len() {
                self.reply_append(from, true, self.log.committed, 0, 0);
                return;
            }
            let prev = entries[skip - 1].clone();
            return self.on_append(from, prev.index, prev.term, &entries[skip..], commit);
        }
        if !self.log.matches(prev_index, prev_term) {
            let (hi, ht) = self.log.find_conflict_by_term(prev_index, prev_term);
            self.reply_append(from, false, prev_index, hi, ht);
            return;
        }
        let (last_match, truncated) = self.log.append_after(prev_index, entries);
        if truncated
            || entries
                .iter()
                .any(|e| matches!(e.payload, EntryPayload::Membership(_)))
        {
            self.refresh_membership();
        }
        self.log.commit_to(commit.min(last_match));
        self.reply_append(from, true, last_match, 0, 0);
    }

    fn reply_append(
        &mut self,
        to: &NodeId,
        success: bool,
        index: u64,
        hint_index: u64,
        hint_term: u64,
    ) {
        self.send(
            to,
            Message::AppendResp {
                success,
                index,
                hint_index,
                hint_term,
                repairing: self.repair.is_some(),
                incarnation: self.cfg.incarnation,
            },
        );
    }

    /// Follower side of a snapshot.
    pub(crate) fn on_snapshot(&mut self, from: &NodeId, snapshot: Snapshot) {
        let meta = &snapshot.meta;
        if meta.index <= self.log.committed {
            self.reply_append(from, true, self.log.committed, 0, 0);
            return;
        }
        if self.log.matches(meta.index, meta.term) {
            // We hold the entry: the snapshot only tells us it is committed.
            self.log.commit_to(meta.index);
            self.reply_append(from, true, meta.index, 0, 0);
            return;
        }
        let index = meta.index;
        self.log.restore(snapshot);
        self.refresh_membership();
        self.reply_append(from, true, index, 0, 0);
    }

    /// Leader side: a follower answered an append or a snapshot.
    pub(crate) fn on_append_resp(
        &mut self,
        from: &NodeId,
        success: bool,
        index: u64,
        hint_index: u64,
        hint_term: u64,
        repairing: bool,
    ) {
        if !self.is_leader() {
            return;
        }
        self.note_peer_repairing(from, repairing);
        let now = self.now;
        let Some(pr) = self.state.progress_mut(from) else {
            return;
        };
        pr.recent_active = true;
        pr.last_heard_tick = now;
        if success {
            self.on_append_ok(from, index);
        } else {
            self.on_append_reject(from, index, hint_index, hint_term);
        }
    }

    fn on_append_ok(&mut self, from: &NodeId, index: u64) {
        let last = self.log.last_index();
        let pr = self.state.progress_mut(from).expect("caller checked");
        let advanced = pr.acked(index.min(last));
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot { index: si, .. } if pr.match_index >= si => {
                pr.become_replicate()
            }
            _ => {}
        }
        if advanced {
            self.maybe_commit();
        }
        let transferee = self.state.as_leader().and_then(|l| l.transferee.as_ref());
        if transferee.is_some_and(|(t, _)| t == from) {
            self.maybe_send_timeout_now(&from.clone());
        } else {
            self.send_append(from);
        }
    }

    fn on_append_reject(&mut self, from: &NodeId, index: u64, hint_index: u64, hint_term: u64) {
        let pr = self.state.progress(from).expect("caller checked");
        // Stale: we already know the follower matches beyond the rejected index.
        if index < pr.match_index || index + 1 != pr.next_index && pr.state == ProgressState::Probe
        {
            return;
        }
        let next = if hint_term > 0 {
            self.log.find_conflict_by_term(hint_index, hint_term).0 + 1
        } else {
            hint_index + 1
        };
        let pr = self.state.progress_mut(from).expect("caller checked");
        pr.become_probe();
        pr.next_index = next.clamp(pr.match_index + 1, index.max(pr.match_index + 1));
        self.send_append(from);
    }

    /// Advance commit to the highest current-term index held by a quorum.
    pub(crate) fn maybe_commit(&mut self) {
        let mut matched: Vec<u64> = self
            .membership
            .voters()
            .map(|v| self.counted_match(v).unwrap_or(0))
            .collect();
        if matched.is_empty() {
            return;
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.membership.quorum() - 1];
        if self.log.term(candidate) == Some(self.term) && self.log.commit_to(candidate) {
            if let Some(l) = self.state.as_leader_mut() {
                l.needs_broadcast = true;
            }
            self.on_commit_advanced();
        }
    }

    fn on_commit_advanced(&mut self) {
        self.release_queued_reads();
        // A leader removed from the configuration steps down once the change commits.
        if self.membership_index <= self.log.committed && !self.is_voter() {
            self.become_follower(self.term, None, Reason::Removed);
        }
    }

    /// Snapshot acknowledgements that never came: probe again (resumes the transfer).
    pub(crate) fn retry_stale_snapshots(&mut self) {
        let (now, retry) = (self.now, self.cfg.snapshot_retry_ticks);
        let Some(l) = self.state.as_leader() else {
            return;
        };
        let stale: Vec<NodeId> = l
            .progress
            .iter()
            .filter(|(_, p)| matches!(p.state, ProgressState::Snapshot { sent_tick, .. } if now - sent_tick > retry))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            let pr = self.state.progress_mut(&id).expect("listed");
            pr.become_probe();
            self.send_append(&id);
        }
    }
}
