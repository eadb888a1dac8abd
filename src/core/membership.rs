//! Membership changes (the cluster manager's part inside the core): one server at a
//! time, through the log, with learners.
//!
//! Invariants:
//! - a configuration takes effect on a node as soon as its entry is in the node's
//!   log (and reverts if that entry is truncated);
//! - a new change is accepted only when the previous one is committed and the leader
//!   has committed an entry of its own term (the fix for the single-server change
//!   bug described on raft-dev, 2015);
//! - each change adds, removes, or flips the voter flag of exactly one member, so the
//!   old and new majorities always overlap.

use super::raft::{ProposeError, RaftNode};
use super::types::{EntryPayload, Membership};

impl RaftNode {
    /// Propose the configuration `next`. Returns the entry's `(index, term)`.
    pub fn propose_membership(&mut self, next: Membership) -> Result<(u64, u64), ProposeError> {
        self.check_can_propose()?;
        if self.membership_index > self.log.committed {
            return Err(ProposeError::ChangeInProgress);
        }
        if self.log.term(self.log.committed) != Some(self.term) {
            return Err(ProposeError::NotReady);
        }
        validate_change(&self.membership, &next)?;
        let pos = self.append_entry(EntryPayload::Membership(next));
        self.refresh_membership();
        Ok(pos)
    }

    /// Is a membership change appended but not yet committed?
    pub fn change_in_progress(&self) -> bool {
        self.membership_index > self.log.committed
    }
}

/// Exactly one member may differ, and at least one voter must remain.
pub fn validate_change(cur: &Membership, next: &Membership) -> Result<(), ProposeError> {
    let mut ids: Vec<&String> = cur.members.keys().chain(next.members.keys()).collect();
    ids.sort();
    ids.dedup();
    let changed = ids
        .iter()
        .filter(|id| {
            let (a, b) = (cur.members.get(**id), next.members.get(**id));
            a.map(|m| m.voter) != b.map(|m| m.voter)
        })
        .count();
    if changed > 1 {
        return Err(ProposeError::InvalidChange(
            "change one member at a time".into(),
        ));
    }
    if next.voter_count() == 0 {
        return Err(ProposeError::InvalidChange(
            "the last voter cannot be removed".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::message::Message;
    use crate::core::testutil::*;
    use crate::core::types::Entry;

    #[test]
    fn a_configuration_takes_effect_on_the_leader_when_appended() {
        let mut n = leader(&["n1", "n2", "n3"]);
        let next = members(&["n1", "n2", "n3"], &["n4"]);
        assert_eq!(n.propose_membership(next.clone()), Ok((3, 2)));
        assert_eq!(n.membership(), &next, "in force before it commits");
        assert!(n.change_in_progress());
        assert_eq!(n.commit_index(), 2);
        let rd = n.ready();
        let to_n4 = to(&rd, "n4");
        assert!(
            matches!(to_n4.first(), Some(Message::Append { .. })),
            "the new member is replicated to at once: {to_n4:?}"
        );
    }

    #[test]
    fn a_removed_voter_stops_counting_when_the_removal_is_appended() {
        let mut n = leader(&["n1", "n2", "n3", "n4"]);
        let (index, term) = n
            .propose_membership(members(&["n1", "n2", "n3"], &[]))
            .unwrap();
        persist(&mut n);
        // Two of the three remaining voters: a quorum of the new configuration
        // (the old one would need three of four).
        n.step(append_ok("n2", "n1", term, index));
        assert_eq!(n.commit_index(), index);
        assert!(!n.change_in_progress());
    }

    #[test]
    fn a_follower_adopts_a_configuration_on_append_and_reverts_on_truncation() {
        let old = members(&["n1", "n2", "n3"], &[]);
        let next = members(&["n1", "n2", "n3"], &["n4"]);
        let mut n = booted("n2", &["n1", "n2", "n3"]);
        let conf = Entry {
            index: 2,
            term: 2,
            payload: EntryPayload::Membership(next.clone()),
        };
        let append = Message::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![conf],
            commit: 1,
        };
        n.step(env("n1", "n2", 2, append));
        assert_eq!(n.membership(), &next, "before it commits");
        assert_eq!(n.commit_index(), 1);
        // A leader of term 3 never had it: the entry is cut off, and the change too.
        let append = Message::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![command(2, 3)],
            commit: 1,
        };
        n.step(env("n3", "n2", 3, append));
        assert_eq!(n.last_term(), 3);
        assert_eq!(n.membership(), &old);
    }

    #[test]
    fn a_restarted_node_uses_its_last_appended_configuration() {
        let next = members(&["n1", "n2", "n3"], &["n4"]);
        let mut log = log_of(&members(&["n1", "n2", "n3"], &[]), &[1]);
        log.push(Entry {
            index: 3,
            term: 1,
            payload: EntryPayload::Membership(next.clone()),
        });
        let n = node("n2", log, 1, None, 1);
        assert_eq!(n.membership(), &next);
        assert!(n.change_in_progress());
    }

    #[test]
    fn one_member_changes_at_a_time_and_a_voter_remains() {
        let cur = members(&["n1", "n2", "n3"], &[]);
        assert!(validate_change(&cur, &members(&["n1", "n2", "n3"], &["n4"])).is_ok());
        assert!(validate_change(&cur, &members(&["n1", "n2"], &["n3"])).is_ok());
        assert!(validate_change(&cur, &members(&["n1"], &[])).is_err());
        assert!(validate_change(&cur, &members(&["n1", "n2", "n3", "n4", "n5"], &[])).is_err());
        assert!(validate_change(&members(&["n1"], &[]), &members(&[], &["n1"])).is_err());
    }
}
