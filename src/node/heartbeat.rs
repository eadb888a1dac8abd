//! The heartbeat manager's state: when each peer was last heard from, the
//! round trip of heartbeats, and the last leader seen. It only observes (the
//! consensus core sends the heartbeats and decides on timeouts); the controller
//! feeds it every message in and out, and asks it whether a peer is reachable
//! (status, metrics, health).
//!
//! Invariant: campaign messages (pre-votes, votes) do not count as hearing a
//! peer: they say nothing about whether it hears us.

use crate::core::{Envelope, Message, RaftNode};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// When each peer was last heard from, heartbeat round trips, and the last
/// leader seen: the heartbeat manager's state (it only observes).
#[derive(Default)]
pub struct PeerSeen {
    /// Last message received from each peer.
    last_heard: HashMap<String, Instant>,
    /// First unanswered heartbeat sent to each peer.
    hb_sent: HashMap<String, Instant>,
    /// Last heartbeat round trip per peer.
    rtt: HashMap<String, Duration>,
    last_leader: Option<String>,
}

impl PeerSeen {
    /// A message arrived; returns the heartbeat round trip it completes, if any.
    pub fn heard(&mut self, env: &Envelope) -> Option<Duration> {
        let now = Instant::now();
        // A campaign message says nothing about whether the peer hears us.
        let campaign = matches!(env.msg, Message::PreVote { .. } | Message::Vote { .. });
        if !campaign {
            self.last_heard.insert(env.from.clone(), now);
        }
        if let Message::HeartbeatResp { .. } = env.msg {
            if let Some(sent) = self.hb_sent.remove(&env.from) {
                let rtt = now.duration_since(sent);
                self.rtt.insert(env.from.clone(), rtt);
                return Some(rtt);
            }
        }
        None
    }

    /// A message leaves.
    pub fn sending(&mut self, env: &Envelope) {
        if let Message::Heartbeat { .. } = env.msg {
            self.hb_sent
                .entry(env.to.clone())
                .or_insert_with(Instant::now);
        }
    }

    /// Is `peer` reachable (heard within `limit`), and how long ago was it
    /// heard? Known only for the peers we exchange heartbeats with: every peer
    /// on a leader, the leader on a follower. `None` otherwise.
    pub fn reachable(&self, raft: &RaftNode, peer: &str, limit: Duration) -> Option<(bool, u64)> {
        let leader = raft.leader().or(self.last_leader.as_ref());
        let expected = raft.is_leader() || leader.is_some_and(|l| l == peer);
        if !expected {
            return None;
        }
        let ago = self.last_heard.get(peer)?.elapsed();
        Some((ago <= limit, ago.as_millis() as u64))
    }

    /// A role change named `leader`: is it a new one?
    pub fn leader_changed(&mut self, leader: &Option<String>) -> bool {
        if leader.is_some() && *leader != self.last_leader {
            self.last_leader = leader.clone();
            return true;
        }
        false
    }
}
