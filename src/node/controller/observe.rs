//! The heartbeat and health managers' side of the controller: feeding
//! `heartbeat::PeerSeen`, health checks that may hand leadership over,
//! role-change accounting, and metrics updates. None of this
//! decides anything about consensus; it observes and, at most, asks the core for a
//! leadership transfer or to delay its own elections.

use super::Controller;
use crate::core::{Envelope, Reason, Role, RoleChange};
use crate::metrics::PeerLabels;
use crate::node::interface::Outbound;
use crate::wal::LogStore;
use std::time::Duration;

/// How often (in ticks) health is re-checked.
const HEALTH_EVERY_TICKS: u64 = 10;

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
        self.raft.set_disk(self.health.disk_state());
        let others = self.raft.membership().voter_count() > 1;
        if self.raft.is_leader()
            && others
            && !self.raft.transferring()
            && self.health.unfit_to_lead()
        {
            let why = self.health.disk_problems().join("; ");
            let Some(target) = self.raft.better_disk_transfer_target() else {
                if self.health.first_stay() {
                    tracing::warn!(reason = %why, "disk unhealthy, but no voter's disk is better: staying leader");
                }
                return;
            };
            match self.raft.transfer_leadership(Some(target)) {
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

    pub(crate) fn update_metrics(&mut self) {
        let backlog = self.sm.store_backlog_bytes();
        self.metrics.store_backlog_bytes.set(backlog as i64);
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
