//! The election manager: randomized timeouts, pre-vote, votes, terms and
//! leadership transfer (TimeoutNow).
//!
//! Invariants:
//! - a node grants at most one vote per term, and the vote is in the hard state that
//!   the driver persists before the `VoteResp` leaves;
//! - a vote or pre-vote is granted only to a candidate whose log is at least as up
//!   to date as ours (§5.4.1);
//! - while a node hears from a leader (within the minimum election timeout) it
//!   refuses pre-votes and ignores vote requests that were not asked for by a
//!   leadership transfer (leader stickiness; check-quorum's counterpart);
//! - a repairing node (see `repair`) grants no vote or pre-vote, never campaigns
//!   and ignores TimeoutNow; a leader never picks it for a transfer;
//! - only voters campaign, and only votes from voters of our membership count. Any
//!   node answers vote requests, as in etcd: a node that has not yet seen its own
//!   promotion (or a candidate's) must still be able to help elect a leader, or the
//!   cluster can deadlock. A removed or learner node is kept from disrupting the
//!   cluster by pre-vote and the leader lease, not by membership checks.

use super::message::Message;
use super::raft::{RaftNode, Reason};
use super::role::{LeaderState, RoleState, Votes};
use super::types::{EntryPayload, NodeId};

impl RaftNode {
    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        // The only voter need not wait for a timeout: nobody else can lead.
        let alone = self.membership.voter_count() == 1;
        let sick = self.disk != super::DiskState::Healthy;
        let timeout = self.randomized_timeout * if sick { 3 } else { 1 };
        let may_campaign = self.is_voter() && self.repair.is_none();
        if may_campaign && (alone || self.election_elapsed >= timeout) {
            // Only a real candidacy that ran out counts: it cost the voters an
            // fsync each. A pre-vote that ran out (refused by a voter still in
            // its leader's lease, the usual first round of a failover) did not.
            if matches!(self.state, RoleState::Candidate { .. }) {
                self.missed_elections = self.missed_elections.saturating_add(1);
            }
            self.reset_election_timeout();
            if self.cfg.pre_vote {
                self.campaign_pre();
            } else {
                self.campaign(false);
            }
        }
    }

    /// A leader heard from within the minimum election timeout.
    pub(crate) fn in_lease(&self) -> bool {
        self.leader().is_some() && self.election_elapsed < self.cfg.election_ticks_min
    }

    fn campaign_pre(&mut self) {
        self.state = RoleState::PreCandidate {
            votes: Votes::new(),
        };
        self.note_role(Reason::PreVoteTimeout);
        self.request_votes(true, false);
    }

    pub(crate) fn campaign(&mut self, transfer: bool) {
        self.term += 1;
        self.drop_stale_answers();
        self.vote = Some(self.cfg.id.clone());
        self.state = RoleState::Candidate {
            votes: Votes::new(),
        };
        self.reset_election_timeout();
        self.note_role(if transfer {
            Reason::TransferCampaign
        } else {
            Reason::VoteTimeout
        });
        self.request_votes(false, transfer);
    }

    fn request_votes(&mut self, pre: bool, transfer: bool) {
        let me = self.cfg.id.clone();
        self.record_vote(&me, true, pre);
        let (li, lt) = (self.log.last_index(), self.log.last_term());
        let voters: Vec<NodeId> = self
            .membership
            .voters()
            .filter(|v| **v != me)
            .cloned()
            .collect();
        for v in voters {
            if pre {
                let msg = Message::PreVote {
                    last_log_index: li,
                    last_log_term: lt,
                };
                self.send_with_term(&v, self.term + 1, msg);
            } else {
                let msg = Message::Vote {
                    last_log_index: li,
                    last_log_term: lt,
                    transfer,
                };
                self.send(&v, msg);
            }
        }
    }

    /// Count a (pre-)vote in the current candidacy of kind `pre` (ignored in any
    /// other role); win or lose when decided.
    fn record_vote(&mut self, from: &NodeId, granted: bool, pre: bool) {
        if !self.membership.is_voter(from) {
            return;
        }
        let Some(votes) = self.state.votes_mut(pre) else {
            return;
        };
        votes.entry(from.clone()).or_insert(granted);
        let yes = votes.values().filter(|g| **g).count();
        let no = votes.len() - yes;
        let quorum = self.membership.quorum();
        if yes >= quorum {
            if pre {
                self.campaign(false);
            } else {
                self.become_leader();
            }
        } else if no >= quorum {
            self.become_follower(self.term, None, Reason::ElectionLost);
        }
    }

    pub(crate) fn on_pre_vote(&mut self, from: &NodeId, term: u64, li: u64, lt: u64) {
        let grant = term > self.term
            && self.repair.is_none()
            && !self.in_lease()
            && self.log.is_up_to_date(li, lt);
        // A granted pre-vote echoes the proposed term; a refusal carries ours.
        let reply_term = if grant { term } else { self.term };
        self.send_with_term(from, reply_term, Message::PreVoteResp { granted: grant });
    }

    pub(crate) fn on_vote(&mut self, from: &NodeId, li: u64, lt: u64) {
        let can_vote = self.vote.is_none() || self.vote.as_ref() == Some(from);
        let grant = can_vote
            && self.repair.is_none()
            && self.leader().is_none()
            && self.log.is_up_to_date(li, lt);
        if grant {
            self.vote = Some(from.clone());
            self.reset_election_timeout();
        }
        self.send(from, Message::VoteResp { granted: grant });
    }

    pub(crate) fn on_vote_resp(&mut self, from: &NodeId, granted: bool, pre: bool) {
        self.record_vote(from, granted, pre);
    }

    pub(crate) fn on_timeout_now(&mut self) {
        if self.is_voter() && !self.is_leader() && self.repair.is_none() {
            self.campaign(true);
        }
    }

    fn become_leader(&mut self) {
        self.state = RoleState::Leader(LeaderState::default());
        self.election_elapsed = 0;
        self.clear_election_backoff();
        self.sync_progress();
        self.note_role(Reason::WonElection);
        // Commit a no-op of our own term so earlier entries can commit (§5.4.2).
        self.append_entry(EntryPayload::Noop);
    }

    /// Start a leadership transfer to `to`, or to the most caught-up voter.
    pub fn transfer_leadership(
        &mut self,
        to: Option<NodeId>,
    ) -> Result<NodeId, super::ProposeError> {
        use super::ProposeError;
        if !self.is_leader() {
            return Err(ProposeError::NotLeader {
                leader: self.leader().cloned(),
            });
        }
        let target = match to {
            Some(t) if t == self.cfg.id => return Ok(t),
            Some(t) if self.peer_repairing(&t) => {
                return Err(ProposeError::InvalidChange(format!("{t} is repairing")))
            }
            Some(t) if self.membership.is_voter(&t) => t,
            Some(t) => return Err(ProposeError::InvalidChange(format!("{t} is not a voter"))),
            None => self.best_transfer_target().ok_or_else(|| {
                ProposeError::InvalidChange("no other voter to transfer to".into())
            })?,
        };
        if let Some(l) = self.state.as_leader_mut() {
            l.transferee = Some((target.clone(), self.now));
        }
        self.note_role(Reason::TransferStarted);
        self.maybe_send_timeout_now(&target);
        Ok(target)
    }

    /// The voter to hand over to when none is named: the one whose disk is
    /// best (healthy, then degraded, then failing), then the most caught up
    /// (then the smallest id, so that the choice is deterministic).
    fn best_transfer_target(&self) -> Option<NodeId> {
        let me = &self.cfg.id;
        self.membership
            .voters()
            .filter(|v| *v != me && !self.peer_repairing(v))
            .max_by_key(|v| {
                let p = self.state.progress(v);
                (
                    p.map_or(super::DiskState::Healthy, |p| p.disk),
                    p.map_or(0, |p| p.match_index),
                    std::cmp::Reverse((*v).clone()),
                )
            })
            .cloned()
    }

    /// Leader: a voter to hand over to whose disk is better than ours (see
    /// [`RaftNode::set_disk`]), as its last heartbeat answer said. A leader
    /// leaving because of its own disk hands over only to such a voter: two
    /// nodes on equally sick disks would otherwise pass leadership back and
    /// forth, each handover costing clients a failover. A leader whose writes
    /// fail does hand over to a voter whose disk is only slow or short of
    /// space: that one can still take writes (the nodes of a cluster on small
    /// disks are all under the free-space floor at once).
    pub fn better_disk_transfer_target(&self) -> Option<NodeId> {
        let disk = |t: &NodeId| {
            self.state
                .progress(t)
                .map_or(super::DiskState::Healthy, |p| p.disk)
        };
        self.best_transfer_target().filter(|t| disk(t) > self.disk)
    }

    /// Send TimeoutNow once the transferee has our whole log, else catch it up.
    pub(crate) fn maybe_send_timeout_now(&mut self, target: &NodeId) {
        let caught_up = self
            .state
            .progress(target)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.send(target, Message::TimeoutNow);
        } else {
            self.send_append(target);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::core::message::Message;
    use crate::core::raft::Role;
    use crate::core::testutil::*;
    use crate::core::DiskState;

    fn answer(rd: &crate::core::Ready, to_id: &str) -> Option<bool> {
        to(rd, to_id).into_iter().find_map(|m| match m {
            Message::VoteResp { granted } => Some(*granted),
            _ => None,
        })
    }

    fn heartbeat_answer(from: &str, disk: DiskState) -> crate::core::message::Envelope {
        let msg = Message::HeartbeatResp {
            ctx: 0,
            repairing: false,
            incarnation: 0,
            disk,
        };
        env(from, "n1", 2, msg)
    }

    /// Ticks from each campaign (`is_campaign`: a vote or pre-vote request
    /// sent) to the next, for `n` that nobody answers, over `count` campaigns.
    fn gaps_between_campaigns(
        n: &mut crate::core::RaftNode,
        count: usize,
        is_campaign: fn(&Message) -> bool,
    ) -> Vec<u64> {
        let mut gaps = Vec::new();
        let mut since = 0;
        while gaps.len() < count {
            n.tick();
            since += 1;
            let rd = persist(n);
            if rd.messages.iter().any(|e| is_campaign(&e.msg)) {
                gaps.push(since);
                since = 0;
            }
            assert!(since < 10_000, "no campaign");
        }
        gaps
    }

    fn is_vote(m: &Message) -> bool {
        matches!(m, Message::Vote { .. })
    }

    fn is_pre_vote(m: &Message) -> bool {
        matches!(m, Message::PreVote { .. })
    }

    /// Failed candidacies back off: after the second vote round without a
    /// leader the timeout is drawn from twice the range, then four times, no
    /// further; hearing a leader brings the plain range back. (Voters whose
    /// fsyncs outlast the timeout kept a cluster without a leader for a minute
    /// without this: every candidate gave up before its votes arrived.)
    /// Pre-votes that run out do not count (they cost no fsync).
    #[test]
    fn failed_campaigns_back_off_the_election_timeout_until_a_leader_is_heard() {
        let mut n = booted("n1", &["n1", "n2", "n3"]);
        let (lo, hi) = (n.cfg.election_ticks_min, n.cfg.election_ticks_max);
        let plain = gaps_between_campaigns(&mut n, 6, is_pre_vote);
        assert!(
            plain.iter().all(|g| (lo..hi).contains(g)),
            "pre-votes nobody answers: no backoff {plain:?}"
        );
        let mut n = booted("n1", &["n1", "n2", "n3"]);
        n.cfg.pre_vote = false;
        let gaps = gaps_between_campaigns(&mut n, 7, is_vote);
        // gaps[0]: the first timeout; gaps[i]: drawn when the i-th timeout
        // ran out (from the second on, each ended a failed vote round).
        let factors = [1, 1, 1, 2, 4, 4, 4];
        for (gap, f) in gaps.iter().zip(factors) {
            assert!(
                (lo * f..hi * f).contains(gap),
                "gaps {gaps:?}: {gap} outside [{}, {})",
                lo * f,
                hi * f
            );
        }
        // A leader of a later term is heard: back to the configured range.
        let later = n.term + 1;
        n.step(env(
            "n2",
            "n1",
            later,
            Message::Heartbeat { commit: 1, ctx: 0 },
        ));
        persist(&mut n);
        assert_eq!(n.missed_elections, 0);
        assert!((lo..hi).contains(&n.randomized_timeout));
        let gaps = gaps_between_campaigns(&mut n, 2, is_vote);
        assert!((lo..hi).contains(&gaps[0]), "{gaps:?}");
        assert!((lo..hi).contains(&gaps[1]), "{gaps:?}");
    }

    #[test]
    fn a_transfer_prefers_a_healthy_disk_and_a_sick_leader_finds_none_among_sick_peers() {
        let mut n = leader(&["n1", "n2", "n3"]);
        n.set_disk(DiskState::Degraded);
        // Both caught up; n2 (smaller id) would be picked on ties.
        assert_eq!(n.better_disk_transfer_target().as_deref(), Some("n2"));
        n.step(heartbeat_answer("n2", DiskState::Degraded));
        assert_eq!(n.better_disk_transfer_target().as_deref(), Some("n3"));
        n.step(heartbeat_answer("n3", DiskState::Degraded));
        assert_eq!(n.better_disk_transfer_target(), None, "every peer is sick");
        // An operator's transfer still goes somewhere (the most caught up).
        assert_eq!(n.best_transfer_target().as_deref(), Some("n2"));
        // n3 heals: it is the target again, also when none is named.
        n.step(heartbeat_answer("n3", DiskState::Healthy));
        assert_eq!(n.better_disk_transfer_target().as_deref(), Some("n3"));
        assert_eq!(n.transfer_leadership(None).as_deref(), Ok("n3"));
    }

    /// A leader whose writes fail hands over to a voter whose disk is only
    /// degraded (slow, or short of space: on small disks every node is under
    /// the free-space floor at once), never to one whose writes fail too; a
    /// degraded leader waits for a healthy voter.
    #[test]
    fn a_leader_whose_writes_fail_hands_over_to_a_merely_degraded_voter() {
        let mut n = leader(&["n1", "n2", "n3"]);
        n.step(heartbeat_answer("n2", DiskState::Failing));
        n.step(heartbeat_answer("n3", DiskState::Degraded));
        n.set_disk(DiskState::Degraded);
        assert_eq!(
            n.better_disk_transfer_target(),
            None,
            "no better disk than ours"
        );
        n.set_disk(DiskState::Failing);
        assert_eq!(n.better_disk_transfer_target().as_deref(), Some("n3"));
        n.step(heartbeat_answer("n3", DiskState::Failing));
        assert_eq!(n.better_disk_transfer_target(), None, "every disk fails");
        // The best disk first, before the most caught up.
        n.step(heartbeat_answer("n2", DiskState::Degraded));
        assert_eq!(n.better_disk_transfer_target().as_deref(), Some("n2"));
        assert_eq!(n.best_transfer_target().as_deref(), Some("n2"));
    }

    #[test]
    fn a_refusal_then_a_grant_in_the_same_term_persists_the_vote() {
        // n3's log is behind n2's: refused, but n2 adopts term 2 (no vote).
        let m = members(&["n1", "n2", "n3"], &[]);
        let mut n = node("n2", log_of(&m, &[1]), 1, None, 1);
        n.step(vote_req("n3", "n2", 2, 1, 1));
        let rd = n.ready();
        assert_eq!(answer(&rd, "n3"), Some(false));
        let hs = rd.hard_state.expect("the new term");
        assert_eq!((hs.term, hs.vote), (2, None));
        // n1 is up to date: granted, in the same term; only the vote changed.
        n.step(vote_req("n1", "n2", 2, 2, 1));
        let rd = n.ready();
        assert_eq!(answer(&rd, "n1"), Some(true));
        let hs = rd.hard_state.expect("a vote-only change is persisted too");
        assert_eq!((hs.term, hs.vote.as_deref()), (2, Some("n1")));
    }

    #[test]
    fn one_vote_per_term_and_a_repeated_request_is_granted_again() {
        let mut n = booted("n3", &["n1", "n2", "n3"]);
        n.step(vote_req("n1", "n3", 2, 1, 1));
        assert_eq!(answer(&n.ready(), "n1"), Some(true));
        n.step(vote_req("n2", "n3", 2, 1, 1));
        let rd = n.ready();
        assert_eq!(answer(&rd, "n2"), Some(false));
        assert_eq!(rd.hard_state, None, "the vote did not move");
        n.step(vote_req("n1", "n3", 2, 1, 1));
        assert_eq!(
            answer(&n.ready(), "n1"),
            Some(true),
            "a lost answer is repeated"
        );
        assert_eq!(n.hard_state().vote.as_deref(), Some("n1"));
    }

    #[test]
    fn a_restarted_voter_keeps_its_vote() {
        let m = members(&["n1", "n2", "n3"], &[]);
        let mut n = node("n3", log_of(&m, &[]), 2, Some("n1"), 1);
        n.step(vote_req("n2", "n3", 2, 1, 1));
        assert_eq!(answer(&n.ready(), "n2"), Some(false));
        n.step(vote_req("n2", "n3", 3, 1, 1));
        assert_eq!(
            answer(&n.ready(), "n2"),
            Some(true),
            "a new term, a new vote"
        );
    }

    #[test]
    fn votes_from_a_quorum_of_voters_make_a_leader_with_a_noop() {
        let mut n = booted("n1", &["n1", "n2", "n3", "n4", "n5"]);
        n.campaign(false);
        persist(&mut n);
        n.step(env("n2", "n1", 2, Message::VoteResp { granted: true }));
        assert_eq!(n.role(), Role::Candidate, "2 of 5");
        n.step(env("n2", "n1", 2, Message::VoteResp { granted: true }));
        assert_eq!(n.role(), Role::Candidate, "a duplicate counts once");
        n.step(env("n3", "n1", 2, Message::VoteResp { granted: true }));
        assert_eq!(n.role(), Role::Leader);
        assert_eq!(
            (n.last_index(), n.last_term()),
            (2, 2),
            "the no-op of term 2"
        );
    }
}
