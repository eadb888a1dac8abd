//! Messages between Raft nodes: one enum inside an envelope `{from, to, term}`.
//!
//! Each variant belongs to one message group (see [`Message::group`]); the transport
//! keeps one ordered stream per group so that a large append never delays a vote or
//! a heartbeat.

use super::types::{Entry, NodeId, Snapshot};

/// A message addressed from one node to another, stamped with the sender's term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's current term; for `PreVote` the term the sender would campaign in.
    pub term: u64,
    pub msg: Message,
}

/// The transport group a message travels in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Election,
    Heartbeat,
    Replication,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// "Would you vote for me in `term`?" Sent before campaigning so that a node that
    /// was partitioned away cannot depose a healthy leader by bumping terms.
    PreVote {
        last_log_index: u64,
        last_log_term: u64,
    },
    PreVoteResp {
        granted: bool,
    },
    /// A real vote request. `transfer` is set when a leader asked for this election
    /// (TimeoutNow), which lets voters ignore their leader lease.
    Vote {
        last_log_index: u64,
        last_log_term: u64,
        transfer: bool,
    },
    VoteResp {
        granted: bool,
    },
    /// Log replication. `entries` follow `(prev_index, prev_term)`.
    Append {
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
    },
    /// Reply to `Append`. On success `index` is the follower's last index that now
    /// matches the leader. On rejection `index` is the rejected `prev_index` and
    /// `hint_index`/`hint_term` let the leader skip a whole conflicting term at once.
    AppendResp {
        success: bool,
        index: u64,
        hint_index: u64,
        hint_term: u64,
        /// The sender is repairing (see `repair`): do not count it.
        repairing: bool,
        /// The sender's process start ([`RaftConfig::incarnation`](super::RaftConfig)).
        incarnation: u64,
    },
    /// Leader liveness and commit propagation. `ctx` is a ReadIndex round (0: none).
    Heartbeat {
        commit: u64,
        ctx: u64,
    },
    HeartbeatResp {
        ctx: u64,
        /// The sender is repairing (see `repair`).
        repairing: bool,
        incarnation: u64,
        /// The sender's disk ([`RaftNode::set_disk`](super::RaftNode::set_disk)): a
        /// leader handing over because of its own disk picks only a better one.
        disk: super::DiskState,
    },
    /// The whole snapshot, sent when the follower needs a compacted prefix. The core
    /// emits it with empty `data`; the driver attaches the bytes of the snapshot
    /// described by `meta` (the one it last reported through `compact`).
    Snapshot {
        snapshot: Snapshot,
    },
    /// Leadership transfer: "start an election now".
    TimeoutNow,
}

impl Message {
    /// Must this message wait until the hard state and entries of the `Ready` it
    /// came with are durable? Vote requests and answers depend on the persisted term
    /// and vote; append answers claim entries are on disk. Heartbeats, a leader's
    /// appends and snapshots, pre-votes and TimeoutNow do not: a leader's term was
    /// durable before it could win, and a leader counts its own copy of an entry
    /// only after its own fsync (Raft thesis 10.2.1).
    pub fn needs_durability(&self) -> bool {
        matches!(
            self,
            Message::Vote { .. } | Message::VoteResp { .. } | Message::AppendResp { .. }
        )
    }

    pub fn group(&self) -> Group {
        match self {
            Message::PreVote { .. }
            | Message::PreVoteResp { .. }
            | Message::Vote { .. }
            | Message::VoteResp { .. }
            | Message::TimeoutNow => Group::Election,
            Message::Heartbeat { .. } | Message::HeartbeatResp { .. } => Group::Heartbeat,
            Message::Append { .. } | Message::AppendResp { .. } | Message::Snapshot { .. } => {
                Group::Replication
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::SnapshotMeta;

    #[test]
    fn only_vote_requests_and_answers_wait_for_the_fsync() {
        let snapshot = Snapshot {
            meta: SnapshotMeta::default(),
            data: Default::default(),
        };
        let cases = [
            (
                Message::PreVote {
                    last_log_index: 1,
                    last_log_term: 1,
                },
                false,
            ),
            (Message::PreVoteResp { granted: true }, false),
            (
                Message::Vote {
                    last_log_index: 1,
                    last_log_term: 1,
                    transfer: false,
                },
                true,
            ),
            (Message::VoteResp { granted: true }, true),
            (Message::VoteResp { granted: false }, true),
            (
                Message::Append {
                    prev_index: 0,
                    prev_term: 0,
                    entries: vec![],
                    commit: 0,
                },
                false,
            ),
            (
                Message::AppendResp {
                    success: true,
                    index: 1,
                    hint_index: 0,
                    hint_term: 0,
                    repairing: false,
                    incarnation: 0,
                },
                true,
            ),
            (
                Message::AppendResp {
                    success: false,
                    index: 1,
                    hint_index: 0,
                    hint_term: 0,
                    repairing: false,
                    incarnation: 0,
                },
                true,
            ),
            (Message::Heartbeat { commit: 0, ctx: 0 }, false),
            (
                Message::HeartbeatResp {
                    ctx: 0,
                    repairing: false,
                    incarnation: 0,
                    disk: crate::core::DiskState::Healthy,
                },
                false,
            ),
            (Message::Snapshot { snapshot }, false),
            (Message::TimeoutNow, false),
        ];
        for (m, durable) in cases {
            assert_eq!(m.needs_durability(), durable, "{m:?}");
        }
    }
}
