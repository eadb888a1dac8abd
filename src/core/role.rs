//! State that only means something in one role lives inside that role's value
//! (the toydb pattern, in the form of one enum field instead of one type per role).
//!
//! Why: when such state sat in plain fields next to `role`, every role change had
//! to remember to clear it, and code running in another role could read it (a
//! follower holding a stale leader's view, say). Here a role change builds the
//! new role's value, so nothing can outlive its role, and reaching the state
//! goes through the variant.
//!
//! Why not one type per role as in toydb: the managers (`election`, `heartbeat`,
//! `replication`, ...) are `impl RaftNode` blocks shared by every role, and the
//! driver holds one `RaftNode`. So the role is one field, and leader code reaches
//! its state through [`RoleState::as_leader_mut`] or [`RoleState::progress_mut`]
//! (borrowing that field only, so the rest of the node stays usable beside it);
//! off the leader these give `None`, which the queries turn into "none/false".
//!
//! Invariants:
//! - the votes of a (pre-)candidacy exist only in `PreCandidate`/`Candidate`, and a
//!   new candidacy (even in the same role) starts from none;
//! - per-follower progress, a leadership transfer, ReadIndex rounds, the pending
//!   broadcast and the heartbeat timer exist only in `Leader`, and a new term of
//!   leadership starts from `LeaderState::default()` (then `sync_progress`);
//! - the leader a follower follows is in `Follower`: a (pre-)candidate knows none
//!   and a leader is its own (`RaftNode::leader`);
//! - state shared by every role (term, vote, log, the election timer, repair)
//!   stays on `RaftNode`; only what one role owns goes here.

use super::progress::Progress;
use super::raft::Role;
use super::types::NodeId;
use std::collections::{BTreeMap, BTreeSet};

/// The current role with the state that belongs to it alone.
#[derive(Debug)]
pub(crate) enum RoleState {
    /// Following `leader` (of our term), or none known yet.
    Follower {
        leader: Option<NodeId>,
    },
    /// Asking for pre-votes; `votes` holds the answers of voters so far.
    PreCandidate {
        votes: Votes,
    },
    /// Campaigning in its term; `votes` holds the answers of voters so far.
    Candidate {
        votes: Votes,
    },
    Leader(LeaderState),
}

/// Answers in one (pre-)candidacy: voter -> granted. One per voter (the first).
pub(crate) type Votes = BTreeMap<NodeId, bool>;

/// What only a leader keeps, for its term of leadership.
#[derive(Debug, Default)]
pub(crate) struct LeaderState {
    /// Per-follower replication progress: exactly the other members
    /// (`sync_progress`). Also carries check-quorum's `recent_active`.
    pub progress: BTreeMap<NodeId, Progress>,
    /// A leadership transfer in progress: the target and the tick it started.
    pub transferee: Option<(NodeId, u64)>,
    /// ReadIndex rounds waiting for a quorum of heartbeat answers (`ctx` increasing).
    pub pending_reads: Vec<PendingRead>,
    /// Reads asked before the leader committed an entry of its own term.
    pub queued_reads: Vec<u64>,
    /// Entries were appended or the commit advanced: appends go to every
    /// follower when the driver next takes messages.
    pub needs_broadcast: bool,
    /// Ticks since the last heartbeat broadcast.
    pub heartbeat_elapsed: u64,
}

/// A pending ReadIndex round on the leader.
#[derive(Debug)]
pub(crate) struct PendingRead {
    pub ctx: u64,
    pub index: u64,
    /// Who confirmed our leadership since the round started (us included).
    pub acks: BTreeSet<NodeId>,
}

impl RoleState {
    pub(crate) fn role(&self) -> Role {
        match self {
            RoleState::Follower { .. } => Role::Follower,
            RoleState::PreCandidate { .. } => Role::PreCandidate,
            RoleState::Candidate { .. } => Role::Candidate,
            RoleState::Leader(_) => Role::Leader,
        }
    }

    /// The votes of the current candidacy, if it is one of kind `pre`.
    pub(crate) fn votes_mut(&mut self, pre: bool) -> Option<&mut Votes> {
        match self {
            RoleState::PreCandidate { votes } if pre => Some(votes),
            RoleState::Candidate { votes } if !pre => Some(votes),
            _ => None,
        }
    }

    pub(crate) fn as_leader(&self) -> Option<&LeaderState> {
        match self {
            RoleState::Leader(l) => Some(l),
            _ => None,
        }
    }

    pub(crate) fn as_leader_mut(&mut self) -> Option<&mut LeaderState> {
        match self {
            RoleState::Leader(l) => Some(l),
            _ => None,
        }
    }

    /// The leader's progress of follower `id` (`None` off the leader).
    pub(crate) fn progress(&self, id: &str) -> Option<&Progress> {
        self.as_leader().and_then(|l| l.progress.get(id))
    }

    pub(crate) fn progress_mut(&mut self, id: &str) -> Option<&mut Progress> {
        self.as_leader_mut().and_then(|l| l.progress.get_mut(id))
    }
}

#[cfg(test)]
mod tests {
    use crate::core::message::Message;
    use crate::core::raft::Role;
    use crate::core::testutil::*;

    fn vote(from: &str, term: u64) -> crate::core::Envelope {
        env(from, "n1", term, Message::VoteResp { granted: true })
    }

    #[test]
    fn a_new_candidacy_forgets_the_answers_of_the_last() {
        let mut n = booted("n1", &["n1", "n2", "n3", "n4", "n5"]);
        n.campaign(false);
        persist(&mut n);
        n.step(vote("n2", 2));
        n.campaign(false);
        persist(&mut n);
        n.step(vote("n3", 3));
        assert_eq!(n.role(), Role::Candidate, "n2 voted in term 2 only");
        n.step(vote("n2", 3));
        assert_eq!(n.role(), Role::Leader);
    }

    #[test]
    fn a_pre_candidate_counts_no_vote_and_a_candidate_no_pre_vote() {
        let mut n = booted("n1", &["n1", "n2", "n3"]);
        while n.role() != Role::PreCandidate {
            n.tick();
        }
        n.step(vote("n2", 1));
        assert_eq!(n.role(), Role::PreCandidate, "a vote is not a pre-vote");
        let pre_grant = Message::PreVoteResp { granted: true };
        n.step(env("n2", "n1", 2, pre_grant.clone()));
        assert_eq!((n.role(), n.term()), (Role::Candidate, 2));
        persist(&mut n);
        n.step(env("n3", "n1", 3, pre_grant));
        assert_eq!(n.role(), Role::Candidate, "a pre-vote is not a vote");
    }

    #[test]
    fn only_a_follower_follows_and_a_leader_leads_itself() {
        let mut n = booted("n2", &["n1", "n2", "n3"]);
        assert_eq!(n.leader(), None);
        n.step(env("n1", "n2", 2, Message::Heartbeat { commit: 1, ctx: 0 }));
        assert_eq!(n.leader().map(String::as_str), Some("n1"));
        n.campaign(false);
        assert_eq!(n.leader(), None, "a candidate follows no one");
        persist(&mut n);
        n.step(env("n3", "n2", 3, Message::VoteResp { granted: true }));
        assert_eq!(n.leader().map(String::as_str), Some("n2"));
        let change = n.ready().role_changes.pop().expect("won");
        assert_eq!(
            (change.role, change.leader.as_deref()),
            (Role::Leader, Some("n2"))
        );
    }

    #[test]
    fn a_deposed_leader_keeps_nothing_of_its_leadership() {
        let mut n = leader(&["n1", "n2", "n3"]);
        n.read_index(7).unwrap();
        n.transfer_leadership(Some("n2".into())).unwrap();
        assert!(n.transferring());
        assert_eq!(n.match_index("n2"), Some(2));
        n.step(env("n2", "n1", 3, Message::Heartbeat { commit: 2, ctx: 0 }));
        assert_eq!(n.role(), Role::Follower);
        assert!(!n.transferring());
        assert_eq!(n.match_index("n2"), None, "no progress off the leader");
        let late = Message::HeartbeatResp {
            ctx: 7,
            repairing: false,
            incarnation: 0,
            disk: crate::core::DiskState::Healthy,
        };
        n.step(env("n3", "n1", 3, late));
        assert!(persist(&mut n).read_states.is_empty());
        // Leading again: no transfer, no read round left from before.
        n.campaign(false);
        persist(&mut n);
        n.step(env("n3", "n1", 4, Message::VoteResp { granted: true }));
        assert!(n.is_leader() && !n.transferring());
        persist(&mut n);
        n.tick();
        n.tick();
        let rd = persist(&mut n);
        let beats: Vec<_> = to(&rd, "n3")
            .into_iter()
            .filter_map(|m| match m {
                Message::Heartbeat { ctx, .. } => Some(*ctx),
                _ => None,
            })
            .collect();
        assert_eq!(beats, [0], "a heartbeat carrying no read context");
    }
}
