//! State that only means something in one role lives inside that role's value
//! (the toydb pattern, in the form of one enum field instead of one type per role).
//!
//! Why: when such state sat in plain fields next to `role`, every role change had
//! to remember to clear it, and code running in another role could read it (a
//! follower holding a stale leader's view, say). Here a role change builds the
//! new role's value, so nothing can outlive its role, and reaching the state
//! goes through the variant.
//!
//! Invariants:
//! - the votes of a (pre-)candidacy exist only in `PreCandidate`/`Candidate`, and a
//!   new candidacy (even in the same role) starts from none;
//! - state shared by every role (term, vote, log, `leader`, timers, repair) stays on
//!   `RaftNode`; only what one role owns goes here.

use super::raft::Role;
use super::types::NodeId;
use std::collections::BTreeMap;

/// The current role with the state that belongs to it alone.
#[derive(Debug)]
pub(crate) enum RoleState {
    Follower,
    /// Asking for pre-votes; `votes` holds the answers of voters so far.
    PreCandidate {
        votes: Votes,
    },
    /// Campaigning in its term; `votes` holds the answers of voters so far.
    Candidate {
        votes: Votes,
    },
    Leader,
}

/// Answers in one (pre-)candidacy: voter -> granted. One per voter (the first).
pub(crate) type Votes = BTreeMap<NodeId, bool>;

impl RoleState {
    pub(crate) fn role(&self) -> Role {
        match self {
            RoleState::Follower => Role::Follower,
            RoleState::PreCandidate { .. } => Role::PreCandidate,
            RoleState::Candidate { .. } => Role::Candidate,
            RoleState::Leader => Role::Leader,
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
}
