//! The deterministic consensus core.
//!
//! No sockets, clocks, tasks or randomness live here: events come in (a message, a
//! tick, a proposal, "persisted up to here"), effects go out through [`Ready`]. The
//! election timeout is drawn from an RNG seeded by the caller, so a seeded simulation
//! reproduces exactly. Submodules are the seed design's managers:
//! `election` (timeouts, pre-vote, votes, transfer), `heartbeat` (leader liveness,
//! check-quorum, ReadIndex rounds), `replication` (per-follower progress, pipelined
//! appends, snapshots to lagging followers, commit), `membership` (one change at a
//! time, learners), `log` (the in-memory log above the snapshot), `repair` (a node that lost
//! its log to damage does not vote until it fetched what it lost). `role` holds the
//! state that belongs to one role (a follower's leader, a candidacy's votes, a
//! leader's progress, transfer and ReadIndex rounds), so that it goes with the role.
//!
//! Invariants (asserted where cheap):
//! - at most one leader per term (a node votes once per term, durably);
//! - a leader never overwrites or deletes its own entries;
//! - entries are committed by counting replicas only in the leader's current term;
//! - nothing is applied before it is committed and durable on this node.

mod election;
mod heartbeat;
pub mod log;
pub mod membership;
pub mod message;
pub mod progress;
mod raft;
mod repair;
mod replication;
mod role;
mod step;
#[cfg(test)]
pub(crate) mod testutil;
pub mod types;

pub use message::{Envelope, Group, Message};
pub use raft::{ProposeError, RaftConfig, RaftNode, ReadState, Ready, Reason, Role, RoleChange};
pub use repair::Repair;
pub use types::*;
