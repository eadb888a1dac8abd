//! Plain data types shared by the consensus core, the WAL and the transport.
//!
//! Nothing here does I/O. Protobuf types live at the edge (`transport`) and convert
//! into these with `From`/`TryFrom`.

use bytes::Bytes;
use std::collections::BTreeMap;

/// A node's identity, as configured (`node_id`). Ordered so peers iterate
/// deterministically.
pub type NodeId = String;

/// One member of the cluster configuration. Addresses travel with the membership so
/// that every node (and every restart) knows how to reach every other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub grpc_addr: String,
    pub http_addr: String,
    /// Voters count for elections and commit quorum; learners only replicate.
    pub voter: bool,
}

/// The cluster configuration: every member keyed by id (sorted, for determinism).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub members: BTreeMap<NodeId, Member>,
}

impl Membership {
    pub fn voters(&self) -> impl Iterator<Item = &NodeId> {
        self.members
            .iter()
            .filter(|(_, m)| m.voter)
            .map(|(id, _)| id)
    }
    pub fn voter_count(&self) -> usize {
        self.voters().count()
    }
    pub fn is_voter(&self, id: &str) -> bool {
        self.members.get(id).is_some_and(|m| m.voter)
    }
    pub fn contains(&self, id: &str) -> bool {
        self.members.contains_key(id)
    }
    /// Smallest number of voters that forms a majority.
    pub fn quorum(&self) -> usize {
        self.voter_count() / 2 + 1
    }
}

/// What an entry carries.
/// How a node's disk is doing, worst first: a leader leaving because of its
/// own disk hands over only to a voter whose disk is better than its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiskState {
    /// Writes fail (a full disk, I/O errors).
    Failing,
    /// Writes work, but slowly or with little space left.
    Degraded,
    #[default]
    Healthy,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryPayload {
    /// Appended by a new leader so it can commit entries of earlier terms.
    Noop,
    /// An application command, opaque to the core (see `state_machine`).
    Command(Bytes),
    /// A new cluster configuration; takes effect as soon as it is appended.
    Membership(Membership),
}

/// One Raft log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    pub payload: EntryPayload,
}

impl Entry {
    /// Rough in-memory/wire size, used for inflight byte limits.
    pub fn size(&self) -> usize {
        24 + match &self.payload {
            EntryPayload::Noop => 0,
            EntryPayload::Command(b) => b.len(),
            EntryPayload::Membership(m) => 64 * m.members.len(),
        }
    }
}

/// State that must be durable before any message depending on it leaves the node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub vote: Option<NodeId>,
    pub commit: u64,
}

/// Describes a snapshot: the state machine after applying every entry up to
/// `index` (whose term is `term`), and the membership in force at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
    pub membership: Membership,
}

/// A snapshot: its description and the serialized state machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
}
