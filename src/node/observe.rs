//! The heartbeat and health managers' side of the controller: when each peer was
//! last heard from and its heartbeat round trip, health checks that may hand
//! leadership over, role-change accounting, and metrics updates. None of this
//! decides anything about consensus; it observes and, at most, asks the core for a
//! leadership transfer or to delay its own elections.

use super::controller::Controller;
use super::interface::Outbound;
use crate::core::{Envelope, Message, RaftNode, Reason, Role, RoleChange};
use crate::metrics::PeerLabels;
use crate::wal::LogStore;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often (in ticks) health is re-checked.
const HEALTH_EVERY_TICKS: u64 = 10;

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

impl<S: LogStore + 'static, O: Outbound> Controller<S, O> {
    pub(crate) fn saw_message(&mut self, env: &Envelope) {
        if let Some(rtt) = self.seen.heard(env) {
            let labels = PeerLabels {
                peer: env.from.clone(),
            };
            self.metrics
                .peer_heartbeat_rtt
                .get_or_create(&labels)
                .set(rtt.as_secs_f64());
        }
    }

    pub(crate) fn sending(&mut self, env: &Envelope) {
        self.seen.sending(env);
    }

    /// Is `peer` reachable? (see `PeerSeen::reachable`)
    pub(crate) fn peer_reachable(&self, peer: &str) -> Option<(bool, u64)> {
        let limit = (self.cfg.heartbeat * 5).max(Duration::from_millis(500));
        self.seen.reachable(&self.raft, peer, limit)
    }

    pub(crate) fn note_role_changes(&mut self, changes: &[RoleChange]) {
        for rc in changes {
            tracing::info!(role = rc.role.as_str(), term = rc.term, leader = ?rc.leader, reason = rc.reason.as_str(), "role change");
            // Pre-vote rounds count too: a node that keeps failing them is a
            // symptom worth seeing (delayed heartbeats).
            match rc.reason {
                Reason::PreVoteTimeout | Reason::VoteTimeout => {
                    self.metrics.elections_started.inc()
                }
                Reason::TransferCampaign => self.metrics.transfer_campaigns.inc(),
                Reason::WonElection if rc.role == Role::Leader => self.metrics.elections_won.inc(),
                _ => 0,
            };
            if self.seen.leader_changed(&rc.leader) {
                self.metrics.leader_changes.inc();
            }
        }
    }

    /// Health check; a leader whose disk stays unhealthy hands leadership over.
    /// The disk probe runs off this task (see `health`): its result is picked up
    /// on whichever tick it is ready, a new probe started every
    /// [`HEALTH_EVERY_TICKS`] ticks.
    pub(crate) fn health_tick(&mut self) {
        self.health.collect_disk_probe();
        if !self.ticks.is_multiple_of(HEALTH_EVERY_TICKS) {
            return;
        }
        self.health.start_disk_probe();
        self.health.check();
        self.metrics
            .wal_segments
            .set(self.health.wal_segments() as i64);
        self.raft.set_degraded(self.health.disk_degraded());
        let others = self.raft.membership().voter_count() > 1;
        if self.raft.is_leader()
            && others
            && !self.raft.transferring()
            && self.health.unfit_to_lead()
        {
            let why = self.health.disk_problems().join("; ");
            match self.raft.transfer_leadership(None) {
                Ok(to) => {
                    self.metrics.handovers.inc();
                    tracing::warn!(to = %to, reason = %why, "disk unhealthy: handing leadership over")
                }
                Err(e) => {
                    tracing::warn!(error = %e, reason = %why, "disk unhealthy but no transfer possible")
                }
            }
        }
    }

    pub(crate) fn update_metrics(&self) {
        let m = &self.metrics;
        m.messages_dropped.set(self.out.dropped() as i64);
        let r = &self.raft;
        m.term.set(r.term() as i64);
        m.commit_index.set(r.commit_index() as i64);
        let (repairing, (index, target)) = match r.repair_progress() {
            Some(p) => (1, p),
            None => (0, (0, 0)),
        };
        m.repairing.set(repairing);
        m.repair_index.set(index as i64);
        m.repair_target.set(target as i64);
        m.applied_index.set(self.sm.applied_index() as i64);
        m.last_index.set(r.last_index() as i64);
        m.first_offset.set(self.sm.first_offset() as i64);
        m.next_offset.set(self.sm.next_offset() as i64);
        m.log_bytes.set(self.sm.log_bytes() as i64);
        m.set_role(self.role_name());
        let last = r.last_index();
        for id in r.membership().members.keys().filter(|id| *id != r.id()) {
            let labels = PeerLabels { peer: id.clone() };
            if let Some(mi) = r.match_index(id) {
                m.peer_match_index.get_or_create(&labels).set(mi as i64);
                m.peer_lag
                    .get_or_create(&labels)
                    .set(last.saturating_sub(mi) as i64);
            }
            let reach = self.peer_reachable(id).is_some_and(|(ok, _)| ok);
            m.peer_reachable
                .get_or_create(&labels)
                .set(i64::from(reach));
        }
    }

    pub(crate) fn role_name(&self) -> &'static str {
        if self.raft.role() == Role::Follower && !self.raft.is_voter() {
            "learner"
        } else {
            self.raft.role().as_str()
        }
    }
}
