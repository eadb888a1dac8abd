//! The cluster manager: this node's view of who is in the cluster and where to
//! reach them. It owns the membership as of the applied index (what goes into a
//! local snapshot), every peer address this node ever learned, which of them the
//! transport was last given, and the rate limit of the "stranger" warning. It
//! turns joins and operator membership changes into core proposals and promotes
//! caught-up learners.
//!
//! The membership itself is decided by the consensus core (`core::membership`:
//! one change at a time, learners); this manager only proposes changes and keeps
//! the addresses. It is given the core (`RaftNode`) by the controller for each
//! call and keeps no reference to any other manager.
//!
//! Invariants:
//! - known addresses never shrink, so this node can still answer a leader that is
//!   removing itself, or one it knows only from a join;
//! - the transport is told the peers again whenever the membership changed or an
//!   address was learned outside the log; each such change bumps
//!   [`Cluster::peers_generation`] (the hard-state file records the peers too).

use super::interface::{JoinError, Outbound};
use crate::api::{propose_error, ApiError};
use crate::core::{Member, Membership, NodeId, RaftNode};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// A learner within this many entries of the leader is promoted to voter.
pub const PROMOTE_LAG: u64 = 64;
/// The warning about messages from a non-member is logged this often per sender.
const STRANGER_WARN_EVERY: Duration = Duration::from_secs(10);

pub struct Cluster {
    /// The membership as of the applied index (goes into snapshots).
    applied: Membership,
    /// Every address we know: the leader that let us join, and every member of
    /// every membership we have seen (never shrinks).
    known: BTreeMap<NodeId, String>,
    /// The membership whose addresses the transport was last given (`None`:
    /// give them again).
    sent: Option<Membership>,
    /// Bumped whenever the transport is given the peers again.
    generation: u64,
    /// Non-members we warned about, and when (rate-limits the log line).
    strangers: HashMap<NodeId, Instant>,
}

impl Cluster {
    /// `applied`: the membership of the snapshot this node starts from.
    pub fn new(applied: Membership) -> Self {
        Cluster {
            applied,
            known: BTreeMap::new(),
            sent: None,
            generation: 0,
            strangers: HashMap::new(),
        }
    }

    /// The membership as of the applied index.
    pub fn applied(&self) -> &Membership {
        &self.applied
    }

    /// A membership entry was applied (or arrived with a snapshot at `index`).
    pub fn apply_membership(&mut self, me: &NodeId, index: u64, m: &Membership) {
        if self.applied.contains(me) && !m.contains(me) {
            tracing::warn!(
                index,
                "this node was removed from the cluster; it will not vote or lead again"
            );
        }
        self.applied = m.clone();
    }

    /// A membership installed with a snapshot.
    pub fn install_membership(&mut self, m: &Membership) {
        self.applied = m.clone();
    }

    /// Addresses learned outside the log (the leader that accepted our join, or
    /// the peers the hard-state file remembers); given to the transport next turn.
    pub fn add_peers(&mut self, peers: BTreeMap<NodeId, String>) {
        self.known.extend(peers);
        self.sent = None;
    }

    /// Every known address but `me`'s.
    pub fn peers_except(&self, me: &NodeId) -> BTreeMap<NodeId, String> {
        let mut peers = self.known.clone();
        peers.remove(me);
        peers
    }

    /// Changes each time the transport is given the peers again.
    pub fn peers_generation(&self) -> u64 {
        self.generation
    }

    /// Is `from` a stranger to a known, non-empty membership? Logs a warning at
    /// most every [`STRANGER_WARN_EVERY`] per sender (the core itself keeps a
    /// removed node from disrupting the cluster).
    pub fn is_stranger(&mut self, raft: &RaftNode, from: &NodeId) -> bool {
        let m = raft.membership();
        if m.members.is_empty() || m.contains(from) {
            return false;
        }
        let now = Instant::now();
        let last = self.strangers.get(from).copied();
        if last.is_none_or(|t| now.duration_since(t) > STRANGER_WARN_EVERY) {
            tracing::warn!(from = %from, "message from a node that is not a member of this cluster (removed?)");
            self.strangers.insert(from.clone(), now);
        }
        true
    }

    /// Give the transport the peers' addresses when the membership changed.
    pub fn sync_peers(&mut self, raft: &RaftNode, out: &impl Outbound) {
        let m = raft.membership();
        if self.sent.as_ref() == Some(m) {
            return;
        }
        let addrs = m
            .members
            .iter()
            .map(|(id, mm)| (id.clone(), mm.grpc_addr.clone()));
        self.known.extend(addrs);
        out.set_peers(self.peers_except(raft.id()));
        self.sent = Some(m.clone());
        self.generation += 1;
    }

    /// Leader: add a joining node as a learner (idempotent for the same address).
    pub fn join(
        &self,
        raft: &mut RaftNode,
        node_id: NodeId,
        grpc_addr: String,
        http_addr: String,
    ) -> Result<(), JoinError> {
        let leader = raft.leader().and_then(|l| {
            raft.membership()
                .members
                .get(l)
                .map(|m| (l.clone(), m.grpc_addr.clone()))
        });
        let fail = |message: String| {
            Err(JoinError {
                message,
                leader: leader.clone(),
            })
        };
        if !raft.is_leader() {
            return fail("not the leader".into());
        }
        let mut next = raft.membership().clone();
        if let Some(m) = next.members.get(&node_id) {
            if m.grpc_addr == grpc_addr {
                return Ok(());
            }
            return fail(format!(
                "node id {node_id} is already a member with address {}",
                m.grpc_addr
            ));
        }
        next.members.insert(
            node_id.clone(),
            Member {
                grpc_addr,
                http_addr,
                voter: false,
            },
        );
        match raft.propose_membership(next) {
            Ok((index, _)) => {
                tracing::info!(node = %node_id, index, "adding joining node as a learner");
                Ok(())
            }
            Err(e) => fail(format!("cannot add now ({e}); retry")),
        }
    }

    /// Leader: propose adding or updating (`Some`) or removing (`None`) one
    /// member. Returns the entry's index and term, to be answered once committed.
    pub fn change_member(
        &self,
        raft: &mut RaftNode,
        id: NodeId,
        member: Option<Member>,
    ) -> Result<(u64, u64), ApiError> {
        if !raft.is_leader() {
            return Err(not_leader(raft));
        }
        let mut next = raft.membership().clone();
        let changed = match member {
            Some(m) => next.members.insert(id.clone(), m.clone()).as_ref() != Some(&m),
            None => next.members.remove(&id).is_some(),
        };
        if !changed {
            return Err(ApiError::InvalidRequest(format!(
                "membership already as asked for {id}"
            )));
        }
        let (index, term) = raft.propose_membership(next).map_err(propose_error)?;
        tracing::info!(node = %id, index, "membership change proposed");
        Ok((index, term))
    }

    /// Leader: promote the first learner that has caught up (data readiness done).
    pub fn maybe_promote_learner(&self, raft: &mut RaftNode) {
        if raft.change_in_progress() {
            return;
        }
        let last = raft.last_index();
        let m = raft.membership().clone();
        let ready = m.members.iter().find(|(id, mm)| {
            !mm.voter
                && raft
                    .match_index(id)
                    .is_some_and(|mi| mi + PROMOTE_LAG >= last && mi > 0)
        });
        if let Some((id, _)) = ready {
            let mut next = m.clone();
            next.members.get_mut(id).expect("found").voter = true;
            match raft.propose_membership(next) {
                Ok((index, _)) => {
                    tracing::info!(node = %id, index, "promoting caught-up learner to voter")
                }
                Err(e) => tracing::debug!(node = %id, error = %e, "promotion deferred"),
            }
        }
    }
}

/// The grpc address of the leader, when known and not us.
pub fn leader_hint(raft: &RaftNode) -> Option<String> {
    let l = raft.leader()?;
    if l == raft.id() {
        return None;
    }
    raft.membership()
        .members
        .get(l)
        .map(|m| m.grpc_addr.clone())
}

/// The answer to a request only the leader can serve.
pub fn not_leader(raft: &RaftNode) -> ApiError {
    ApiError::NoLeader {
        leader_hint: leader_hint(raft),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testutil::{append_ok, booted, leader, persist};
    use crate::core::Envelope;
    use std::sync::{Arc, Mutex};

    /// Records what the cluster manager gives the transport.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<BTreeMap<NodeId, String>>>);

    impl Outbound for Arc<Recorder> {
        fn send(&self, _env: Envelope) {}
        fn send_snapshot(&self, _env: Envelope, _s: Arc<dyn crate::transport::SnapshotSource>) {}
        fn set_peers(&self, peers: BTreeMap<NodeId, String>) {
            self.0.lock().unwrap().push(peers);
        }
    }

    fn learner(addr: &str) -> Member {
        Member {
            grpc_addr: addr.into(),
            http_addr: format!("{addr}:http"),
            voter: false,
        }
    }

    #[test]
    fn a_join_adds_a_learner_once_and_a_different_address_is_refused_naming_the_leader() {
        let mut raft = leader(&["a", "b", "c"]);
        let c = Cluster::new(raft.membership().clone());
        c.join(&mut raft, "d".into(), "d:grpc".into(), "d:http".into())
            .expect("the leader adds a joiner");
        let d = &raft.membership().members["d"];
        assert!(!d.voter, "a joiner starts as a learner");
        let last = raft.last_index();
        c.join(&mut raft, "d".into(), "d:grpc".into(), "d:http".into())
            .expect("the same join again is accepted");
        assert_eq!(raft.last_index(), last, "and proposes nothing new");
        let e = c
            .join(&mut raft, "d".into(), "elsewhere".into(), "x".into())
            .expect_err("another address for a member is refused");
        assert!(e.message.contains("already a member"), "{}", e.message);
        assert_eq!(e.leader, Some(("a".into(), "a:grpc".into())));
    }

    #[test]
    fn a_follower_refuses_joins_and_changes() {
        let mut raft = booted("b", &["a", "b", "c"]);
        let c = Cluster::new(raft.membership().clone());
        let e = c
            .join(&mut raft, "d".into(), "d:grpc".into(), "d:http".into())
            .expect_err("only the leader adds members");
        assert_eq!(e.message, "not the leader");
        let r = c.change_member(&mut raft, "d".into(), Some(learner("d:grpc")));
        assert!(matches!(r, Err(ApiError::NoLeader { .. })), "{r:?}");
    }

    #[test]
    fn a_change_that_changes_nothing_is_an_invalid_request() {
        let mut raft = leader(&["a", "b", "c"]);
        let c = Cluster::new(raft.membership().clone());
        let same = raft.membership().members["b"].clone();
        let r = c.change_member(&mut raft, "b".into(), Some(same));
        assert!(matches!(r, Err(ApiError::InvalidRequest(_))), "{r:?}");
        let r = c.change_member(&mut raft, "zz".into(), None);
        assert!(matches!(r, Err(ApiError::InvalidRequest(_))), "{r:?}");
        let (index, term) = c
            .change_member(&mut raft, "c".into(), None)
            .expect("removing a voter is proposed");
        assert_eq!((index, term), (raft.last_index(), raft.term()));
        assert!(!raft.membership().contains("c"));
    }

    #[test]
    fn a_caught_up_learner_is_promoted_once_its_join_committed() {
        let mut raft = leader(&["a", "b", "c"]);
        let c = Cluster::new(raft.membership().clone());
        c.join(&mut raft, "d".into(), "d:grpc".into(), "d:http".into())
            .unwrap();
        let join_index = raft.last_index();
        persist(&mut raft);
        raft.step(append_ok("d", "a", 2, join_index));
        c.maybe_promote_learner(&mut raft);
        assert!(
            !raft.membership().members["d"].voter,
            "no promotion while the join is not committed"
        );
        raft.step(append_ok("b", "a", 2, join_index));
        persist(&mut raft);
        assert!(raft.commit_index() >= join_index);
        c.maybe_promote_learner(&mut raft);
        assert!(raft.membership().members["d"].voter, "caught up: promoted");
    }

    #[test]
    fn peers_go_to_the_transport_on_each_change_and_addresses_are_never_forgotten() {
        let mut raft = leader(&["a", "b", "c"]);
        let out = Arc::new(Recorder::default());
        let mut c = Cluster::new(raft.membership().clone());
        c.sync_peers(&raft, &out);
        let g1 = c.peers_generation();
        c.sync_peers(&raft, &out);
        assert_eq!(c.peers_generation(), g1, "no change, nothing sent again");
        assert_eq!(out.0.lock().unwrap().len(), 1);
        let sent = out.0.lock().unwrap()[0].clone();
        assert_eq!(
            sent.keys().collect::<Vec<_>>(),
            ["b", "c"],
            "never ourselves"
        );

        c.add_peers(BTreeMap::from([("z".to_string(), "z:grpc".to_string())]));
        c.sync_peers(&raft, &out);
        assert!(
            c.peers_generation() > g1,
            "learned outside the log: sent again"
        );
        assert!(out.0.lock().unwrap()[1].contains_key("z"));

        c.change_member(&mut raft, "c".into(), None).unwrap();
        c.sync_peers(&raft, &out);
        let last = out.0.lock().unwrap().last().cloned().unwrap();
        assert!(last.contains_key("c"), "a removed member stays reachable");
        assert_eq!(c.peers_except(&"a".to_string()), last);
    }

    #[test]
    fn a_stranger_is_noted_and_members_are_not() {
        let raft = leader(&["a", "b", "c"]);
        let mut c = Cluster::new(raft.membership().clone());
        assert!(!c.is_stranger(&raft, &"b".to_string()));
        assert!(c.is_stranger(&raft, &"x".to_string()));
        assert!(
            c.is_stranger(&raft, &"x".to_string()),
            "every time, logged less often"
        );
    }
}
