//! Metrics in Prometheus text format (`GET /metrics`), with the official
//! `prometheus-client` crate.
//!
//! One `Metrics` value per node, shared by the controller (consensus and storage
//! figures, updated once per loop turn) and the HTTP layer (requests by route and
//! status, with latency). Updating a metric is an atomic operation: nothing here
//! takes a lock on the write path except family lookups.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

pub struct Metrics {
    registry: Registry,
    pub role: Family<RoleLabels, Gauge>,
    pub term: Gauge,
    pub leader_changes: Counter,
    pub elections_started: Counter,
    pub elections_won: Counter,
    pub transfer_campaigns: Counter,
    pub handovers: Counter,
    pub snapshots_installed: Counter,
    pub stranger_messages: Counter,
    pub commit_index: Gauge,
    /// 1 while repairing after disk damage; its durable index and target.
    pub repairing: Gauge,
    /// This process found damage at startup and began repairing (0 or 1).
    pub repairs_started: Counter,
    pub repair_index: Gauge,
    pub repair_target: Gauge,
    pub applied_index: Gauge,
    pub last_index: Gauge,
    pub first_offset: Gauge,
    pub next_offset: Gauge,
    pub log_bytes: Gauge,
    pub store_backlog_bytes: Gauge,
    pub peer_match_index: Family<PeerLabels, Gauge>,
    pub peer_lag: Family<PeerLabels, Gauge>,
    pub peer_reachable: Family<PeerLabels, Gauge>,
    pub peer_heartbeat_rtt: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    pub fsync_seconds: Histogram,
    pub wal_bytes: Counter,
    pub wal_entries: Counter,
    pub wal_segments: Gauge,
    pub snapshots: Counter,
    pub snapshot_seconds: Histogram,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub write_waits: Counter,
    pub write_timeouts: Counter,
    pub follow_retries: Counter,
    pub storage_errors: Counter,
    pub messages_dropped: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("raftlog");
        let m = Metrics {
            role: Family::default(),
            term: Gauge::default(),
            leader_changes: Counter::default(),
            elections_started: Counter::default(),
            elections_won: Counter::default(),
            transfer_campaigns: Counter::default(),
            handovers: Counter::default(),
            snapshots_installed: Counter::default(),
            stranger_messages: Counter::default(),
            commit_index: Gauge::default(),
            repairing: Gauge::default(),
            repairs_started: Counter::default(),
            repair_index: Gauge::default(),
            repair_target: Gauge::default(),
            applied_index: Gauge::default(),
            last_index: Gauge::default(),
            first_offset: Gauge::default(),
            next_offset: Gauge::default(),
            log_bytes: Gauge::default(),
            store_backlog_bytes: Gauge::default(),
            peer_match_index: Family::default(),
            peer_lag: Family::default(),
            peer_reachable: Family::default(),
            peer_heartbeat_rtt: Family::default(),
            fsync_seconds: latency_histogram(),
            wal_bytes: Counter::default(),
            wal_entries: Counter::default(),
            wal_segments: Gauge::default(),
            snapshots: Counter::default(),
            snapshot_seconds: latency_histogram(),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(latency_histogram),
            write_waits: Counter::default(),
            write_timeouts: Counter::default(),
            follow_retries: Counter::default(),
            storage_errors: Counter::default(),
            messages_dropped: Gauge::default(),
            registry: Registry::default(),
        };
        r.register("role", "1 for this node's current role", m.role.clone());
        r.register("term", "Current Raft term", m.term.clone());
        r.register(
            "leader_changes",
            "Times the known leader changed",
            m.leader_changes.clone(),
        );
        r.register(
            "repairing",
            "1 while this node repairs itself after disk damage (not voting, not counted)",
            m.repairing.clone(),
        );
        r.register(
            "repairs_started",
            "Repairs this process began after finding damage at startup (0 or 1)",
            m.repairs_started.clone(),
        );
        r.register(
            "repair_index",
            "While repairing: the index this node holds durably and committed",
            m.repair_index.clone(),
        );
        r.register(
            "repair_target",
            "While repairing: the leader's commit index it must reach (0: no leader heard)",
            m.repair_target.clone(),
        );
        r.register(
            "elections_started",
            "Elections this node started",
            m.elections_started.clone(),
        );
        r.register(
            "elections_won",
            "Elections this node won",
            m.elections_won.clone(),
        );
        r.register(
            "transfer_campaigns",
            "Campaigns this node started because the leader handed leadership over to it",
            m.transfer_campaigns.clone(),
        );
        r.register(
            "leadership_handovers",
            "Times this node, leading on an unhealthy disk, handed leadership over",
            m.handovers.clone(),
        );
        r.register(
            "snapshots_installed",
            "Snapshots received from the leader and installed",
            m.snapshots_installed.clone(),
        );
        r.register(
            "messages_from_non_members",
            "Peer messages from nodes that are not members of this node's cluster",
            m.stranger_messages.clone(),
        );
        r.register(
            "commit_index",
            "Highest committed log index",
            m.commit_index.clone(),
        );
        r.register(
            "applied_index",
            "Highest applied log index",
            m.applied_index.clone(),
        );
        r.register(
            "last_log_index",
            "Last index in this node's log",
            m.last_index.clone(),
        );
        r.register(
            "first_offset",
            "Lowest message offset still held (everything below was trimmed)",
            m.first_offset.clone(),
        );
        r.register(
            "next_offset",
            "Offset the next message will get",
            m.next_offset.clone(),
        );
        r.register(
            "log_bytes",
            "Bytes of the message store on this node",
            m.log_bytes.clone(),
        );
        r.register(
            "message_store_backlog_bytes",
            "Bytes of applied messages held in memory until the message store's writer has them in its files",
            m.store_backlog_bytes.clone(),
        );
        r.register(
            "peer_match_index",
            "Leader's view of each peer's match index",
            m.peer_match_index.clone(),
        );
        r.register(
            "peer_lag_entries",
            "Entries each peer is behind the leader",
            m.peer_lag.clone(),
        );
        r.register(
            "peer_reachable",
            "1 when the peer was heard from recently",
            m.peer_reachable.clone(),
        );
        r.register(
            "peer_heartbeat_rtt_seconds",
            "Last heartbeat round trip per peer",
            m.peer_heartbeat_rtt.clone(),
        );
        r.register(
            "wal_fsync_seconds",
            "WAL fsync latency",
            m.fsync_seconds.clone(),
        );
        r.register(
            "wal_bytes",
            "Bytes of entries appended to the WAL",
            m.wal_bytes.clone(),
        );
        r.register(
            "wal_entries",
            "Entries appended to the WAL",
            m.wal_entries.clone(),
        );
        r.register(
            "wal_segments",
            "WAL segment files on disk",
            m.wal_segments.clone(),
        );
        r.register("snapshots", "Snapshots taken", m.snapshots.clone());
        r.register(
            "snapshot_seconds",
            "Time to take a snapshot",
            m.snapshot_seconds.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests by route, method and status",
            m.http_requests.clone(),
        );
        r.register(
            "http_request_seconds",
            "HTTP request latency by route",
            m.http_seconds.clone(),
        );
        r.register(
            "write_concern_waits",
            "Writes that waited for their write concern",
            m.write_waits.clone(),
        );
        r.register(
            "write_concern_timeouts",
            "Writes answered 504 write_timeout",
            m.write_timeouts.clone(),
        );
        r.register(
            "requests_followed_leader",
            "Forwarded writes and read-index requests sent again to a new (or the same) leader",
            m.follow_retries.clone(),
        );
        r.register(
            "storage_errors",
            "Failed WAL writes or syncs",
            m.storage_errors.clone(),
        );
        r.register(
            "transport_messages_dropped",
            "Peer messages dropped (full queue, unknown peer)",
            m.messages_dropped.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Set the role gauge: 1 for `role`, 0 for the others.
    pub fn set_role(&self, role: &str) {
        for r in ["leader", "follower", "candidate", "learner"] {
            let v = i64::from(r == role);
            self.role
                .get_or_create(&RoleLabels { role: r.into() })
                .set(v);
        }
    }
}
