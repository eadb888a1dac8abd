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
