//! Protocol-aware recovery (Alagappan et al., FAST '18): a node whose disk lost
//! state below what it had made durable comes back *repairing*. It kept its term
//! and vote (they live apart from the damaged files) but not its log, and a vote
//! from it could elect a leader missing an entry it had acknowledged. So, until it
//! has fetched from a leader everything that could have been committed:
//!
//! - it grants no vote and no pre-vote, never campaigns and ignores TimeoutNow;
//! - every append and heartbeat answer it sends says `repairing`, and a leader
//!   counts it towards neither commit, nor a write's `w`, nor a ReadIndex quorum,
//!   and never hands leadership to it.
//!
//! Exit rule (checked after each step and each persistence report): let `target`
//! be the largest commit index the node received in an append since it started
//! repairing. It leaves repairing once its log is durable and committed up to
//! `target` and the entry at `min(committed, persisted)` is of its current term.
//! The term condition means a leader of that term committed an entry, so every
//! entry committed in an earlier term is below it and held. The target covers the
//! current term: a leader that counted the node's pre-damage acknowledgement
//! before hearing `repairing` committed at most its commit index when it reset
//! the node's progress, and every append the node can accept (its log starts
//! empty) was sent after that reset and carries at least that commit.
//!
//! Late answers: an answer the node's previous process sent before it died may
//! reach the leader after the repairing process's first answer, and would undo
//! the reset (count an acknowledgement of entries the restart discarded). Every
//! process start has a larger *incarnation* (`RaftConfig::incarnation`, counted
//! by the driver in a file of its own); answers carry it and a leader ignores
//! one smaller than the largest it heard from that peer.

use super::raft::{RaftNode, Reason};
use super::types::NodeId;

/// A repairing node's progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repair {
    /// Largest commit index received in an append since repair began (0: none yet).
    pub target: u64,
}

impl RaftNode {
    /// Start repairing (the driver discarded damaged state at startup).
    pub fn start_repairing(&mut self) {
        self.repair = Some(Repair::default());
    }

    /// Is this node repairing? `Some((durable index, target))` while it is.
    pub fn repair_progress(&self) -> Option<(u64, u64)> {
        self.repair
            .map(|r| (self.log.persisted.min(self.log.committed), r.target))
    }

    pub fn is_repairing(&self) -> bool {
        self.repair.is_some()
    }

    /// An append from the leader told us its commit index.
    pub(crate) fn learn_repair_target(&mut self, commit: u64) {
        if let Some(r) = &mut self.repair {
            r.target = r.target.max(commit);
        }
    }

    /// Leave repairing once the exit rule (module docs) holds.
    pub(crate) fn maybe_end_repair(&mut self) {
        let Some(r) = self.repair else {
            return;
        };
        let held = self.log.persisted.min(self.log.committed);
        if r.target == 0 || held < r.target || self.log.term(held) != Some(self.term) {
            return;
        }
        self.repair = None;
        self.note_role(Reason::RepairComplete);
    }

    /// Leader: a follower's answer said whether it is repairing. A follower that
    /// newly says so lost what it had acknowledged: its match index goes back to 0
    /// and it is probed from the start (or sent a snapshot).
    pub(crate) fn note_peer_repairing(&mut self, from: &NodeId, repairing: bool) {
        let Some(pr) = self.state.progress_mut(from) else {
            return;
        };
        let was = std::mem::replace(&mut pr.repairing, repairing);
        if repairing && !was {
            pr.become_probe();
            pr.match_index = 0;
            pr.next_index = 1;
        }
        if was && !repairing {
            self.maybe_commit(); // its match index counts from now on
        }
    }

    /// Leader: an append or heartbeat answer came from `from`'s process start
    /// `incarnation`. False when an answer of a later start was heard already:
    /// this one is late (sent before that process died) and must be ignored,
    /// since what it acknowledged may be gone (a repairing start discarded it).
    pub(crate) fn note_peer_incarnation(&mut self, from: &NodeId, incarnation: u64) -> bool {
        let Some(pr) = self.state.progress_mut(from) else {
            return true;
        };
        if incarnation < pr.incarnation {
            return false;
        }
        pr.incarnation = incarnation;
        true
    }

    /// Leader: `id`'s match index as it counts towards commit, `w` and reads.
    pub(crate) fn counted_match(&self, id: &str) -> Option<u64> {
        match self.state.progress(id) {
            Some(p) if p.repairing => Some(0),
            _ => self.match_index(id),
        }
    }

    /// Leader: is `id` known to be repairing?
    pub fn peer_repairing(&self, id: &str) -> bool {
        self.state.progress(id).is_some_and(|p| p.repairing)
    }
}

#[cfg(test)]
mod tests {
    use crate::core::message::Message;
    use crate::core::raft::Role;
    use crate::core::testutil::*;
    use crate::core::types::SnapshotMeta;
    use crate::core::{HardState, RaftConfig, RaftNode};

    /// `n3` came back from damage: term 2 and its vote kept, log empty.
    fn repairing_n3() -> RaftNode {
        let hs = HardState {
            term: 2,
            vote: Some("n1".into()),
            commit: 0,
        };
        let mut n = RaftNode::new(
            RaftConfig::new("n3"),
            hs,
            SnapshotMeta::default(),
            vec![],
            7,
        );
        n.start_repairing();
        n
    }

    fn granted(rd: &crate::core::Ready, to_id: &str) -> Vec<bool> {
        to(rd, to_id)
            .into_iter()
            .filter_map(|m| match m {
                Message::VoteResp { granted } | Message::PreVoteResp { granted } => Some(*granted),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_repairing_node_refuses_votes_and_pre_votes_and_never_campaigns() {
        let mut n = repairing_n3();
        n.step(env("n2", "n3", 3, pre_vote(9, 3)));
        assert_eq!(granted(&n.ready(), "n2"), [false]);
        n.step(vote_req("n2", "n3", 3, 9, 3));
        let rd = n.ready();
        assert_eq!(granted(&rd, "n2"), [false]);
        let hs = rd.hard_state.expect("the higher term is still adopted");
        assert_eq!((hs.term, hs.vote), (3, None));
        n.step(env("n1", "n3", 3, Message::TimeoutNow));
        for _ in 0..500 {
            n.tick();
        }
        assert_eq!(n.role(), Role::Follower);
        assert_eq!(n.term(), 3, "never campaigned");
        assert!(n.is_repairing());
    }

    #[test]
    fn its_answers_say_repairing_until_it_holds_the_leaders_commit() {
        let m = members(&["n1", "n2", "n3"], &[]);
        let mut n = repairing_n3();
        // The leader of term 2 probes at its old next index: rejected, flagged.
        let probe = Message::Append {
            prev_index: 3,
            prev_term: 2,
            entries: vec![],
            commit: 3,
        };
        n.step(env("n1", "n3", 2, probe));
        let rd = persist(&mut n);
        assert!(matches!(
            to(&rd, "n1")[..],
            [Message::AppendResp {
                success: false,
                repairing: true,
                incarnation: 0,
                ..
            }]
        ));
        assert_eq!(n.repair_progress(), Some((0, 3)));
        // Entries 1..=2 arrive: durable but below the target.
        let mut log = log_of(&m, &[2, 2]);
        let first = Message::Append {
            prev_index: 0,
            prev_term: 0,
            entries: log.drain(..2).collect(),
            commit: 3,
        };
        n.step(env("n1", "n3", 2, first));
        persist(&mut n);
        assert!(n.is_repairing(), "2 of 3");
        n.step(env("n1", "n3", 2, Message::Heartbeat { commit: 2, ctx: 1 }));
        let rd = n.ready();
        assert_eq!(
            to(&rd, "n1"),
            [&Message::HeartbeatResp {
                ctx: 1,
                repairing: true,
                incarnation: 0,
                disk: crate::core::DiskState::Healthy,
            }]
        );
        let rest = Message::Append {
            prev_index: 2,
            prev_term: 2,
            entries: log,
            commit: 3,
        };
        n.step(env("n1", "n3", 2, rest));
        assert!(n.is_repairing(), "not durable yet");
        let rd = persist(&mut n);
        assert!(
            !n.is_repairing(),
            "durable and committed up to 3, of term 2"
        );
        assert!(rd.role_changes.is_empty() || n.ready().role_changes.len() == 1);
        n.step(env("n1", "n3", 2, Message::Heartbeat { commit: 3, ctx: 2 }));
        assert_eq!(
            to(&n.ready(), "n1"),
            [&Message::HeartbeatResp {
                ctx: 2,
                repairing: false,
                incarnation: 0,
                disk: crate::core::DiskState::Healthy,
            }]
        );
    }

    #[test]
    fn a_target_of_an_older_term_is_not_enough() {
        let m = members(&["n1", "n2", "n3"], &[]);
        let mut n = repairing_n3();
        // A new leader (term 3) has not committed an entry of its own term yet.
        let append = Message::Append {
            prev_index: 0,
            prev_term: 0,
            entries: log_of(&m, &[2, 3]),
            commit: 2,
        };
        n.step(env("n1", "n3", 3, append));
        persist(&mut n);
        assert_eq!(n.repair_progress(), Some((2, 2)));
        assert!(n.is_repairing(), "entry 2 is of term 2, not 3");
        n.step(env("n1", "n3", 3, Message::Heartbeat { commit: 3, ctx: 0 }));
        assert!(!n.is_repairing(), "its no-op at 3 committed");
    }

    #[test]
    fn a_leader_does_not_count_a_repairing_follower() {
        let mut n = leader(&["n1", "n2", "n3"]);
        let (index, term) = n.propose(bytes::Bytes::from_static(b"x")).unwrap();
        persist(&mut n);
        // n3 restarted repairing: its earlier match (2) is forgotten.
        n.step(env(
            "n3",
            "n1",
            2,
            Message::HeartbeatResp {
                ctx: 0,
                repairing: true,
                incarnation: 0,
                disk: crate::core::DiskState::Healthy,
            },
        ));
        assert_eq!(n.match_index("n3"), Some(0));
        let rd = n.ready();
        assert!(
            to(&rd, "n3")
                .iter()
                .any(|m| matches!(m, Message::Append { prev_index: 0, .. })),
            "probed from the start: {rd:?}"
        );
        let mut resp = append_ok("n3", "n1", term, index);
        if let Message::AppendResp { repairing, .. } = &mut resp.msg {
            *repairing = true;
        }
        n.step(resp);
        assert_eq!(n.match_index("n3"), Some(index));
        assert_eq!(n.acks(index, term), 1, "n3 holds it but is not counted");
        assert_eq!(n.commit_index(), index - 1);
        assert!(n.transfer_leadership(Some("n3".into())).is_err());
        // Repaired: its next answer counts.
        n.step(append_ok("n3", "n1", term, index));
        assert_eq!(n.acks(index, term), 2);
        assert_eq!(n.commit_index(), index);
    }

    /// An answer `n3`'s killed process sent (incarnation 1) that reaches the
    /// leader after the restarted, repairing process's (incarnation 2) must not
    /// count: the restart discarded what it acknowledged.
    #[test]
    fn a_late_answer_of_an_earlier_process_is_ignored() {
        let mut n = leader(&["n1", "n2", "n3"]);
        let (index, term) = n.propose(bytes::Bytes::from_static(b"x")).unwrap();
        persist(&mut n);
        let answer = |incarnation, repairing| {
            let mut resp = append_ok("n3", "n1", term, index);
            if let Message::AppendResp {
                repairing: r,
                incarnation: i,
                ..
            } = &mut resp.msg
            {
                (*r, *i) = (repairing, incarnation);
            }
            resp
        };
        n.step(answer(2, true));
        assert!(n.peer_repairing("n3"));
        n.step(answer(1, false));
        assert!(n.peer_repairing("n3"), "the late answer cleared repairing");
        assert_eq!(n.acks(index, term), 1, "the late answer was counted");
        assert_eq!(n.commit_index(), index - 1);
        let late_beat = Message::HeartbeatResp {
            ctx: 0,
            repairing: false,
            incarnation: 1,
            disk: crate::core::DiskState::Healthy,
        };
        n.step(env("n3", "n1", term, late_beat));
        assert!(n.peer_repairing("n3"));
        // The current process, repaired, counts; so would a later one.
        n.step(answer(2, false));
        assert_eq!(n.acks(index, term), 2);
        assert_eq!(n.commit_index(), index);
        n.step(answer(3, false));
        n.step(answer(2, true));
        assert!(
            !n.peer_repairing("n3"),
            "incarnation 2 is late once 3 spoke"
        );
    }
}
