//! Node configuration: one documented serde struct, loaded in layers.
//!
//! Why one struct: every knob the node has is visible (and documented) in one
//! place, the TOML file, the environment and the flags all name the same keys, and
//! an unknown key is an error instead of a silently ignored typo.
//!
//! Invariants:
//! - Layers, later wins: built-in defaults, the TOML file (`--config`), environment
//!   `RAFTLOG_<KEY>` (nested keys with `__`: `RAFTLOG_RAFT__HEARTBEAT_INTERVAL_MS`),
//!   then command-line flags (flag names equal config keys).
//! - `#[serde(deny_unknown_fields)]` on every struct: an unknown key fails loading.
//! - [`Config::validate`] reports every problem at once, each naming its key;
//!   [`load`] turns them into one line per error.
//! - Durations carry their unit in the key name (`_ms`), sizes in `_bytes`.

use clap::Args;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::WriteConcern;

mod security;
pub use security::{AuthConfig, LimitsConfig, TlsConfig, MIN_HEADER_BYTES};

/// Prefix of the environment variables that override the file (`RAFTLOG_NODE_ID`).
pub const ENV_PREFIX: &str = "RAFTLOG";

/// The whole node configuration. See the module docs for how it is loaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's identity in the cluster. Required; unique per cluster; must not
    /// change across restarts of the same data directory.
    pub node_id: String,
    /// Directory holding the WAL, snapshots and node metadata.
    pub data_dir: PathBuf,
    /// Listen address of the HTTP client API (`host:port`).
    pub http_addr: String,
    /// Listen address of the gRPC control plane (`host:port`).
    pub grpc_addr: String,
    /// HTTP address other nodes and clients should use to reach this node.
    /// Default: `http_addr`.
    pub advertise_http_addr: Option<String>,
    /// gRPC address other nodes should use to reach this node. Default: `grpc_addr`.
    pub advertise_grpc_addr: Option<String>,
    /// Found a new single-node cluster when the data directory is empty.
    /// Ignored once the data directory holds state.
    pub bootstrap: bool,
    /// gRPC `host:port` addresses of existing members to join through when the
    /// data directory is empty. A TOML list or a comma-separated string.
    #[serde(deserialize_with = "string_or_list")]
    pub join: Vec<String>,
    /// Consensus timing and replication limits.
    pub raft: RaftSection,
    /// Client write behaviour.
    pub write: WriteConfig,
    /// Client read behaviour.
    pub read: ReadConfig,
    /// When to snapshot and compact the log.
    pub snapshot: SnapshotConfig,
    /// On-disk log layout.
    pub wal: WalConfig,
    /// Logging output.
    pub log: LogConfig,
    /// When this node considers itself unfit to lead.
    pub health: HealthConfig,
    /// Operator drills and tests.
    pub debug: DebugConfig,
    /// Mutual TLS between nodes and TLS for the client API.
    pub tls: TlsConfig,
    /// Bearer tokens for the client API.
    pub auth: AuthConfig,
    /// Connection, size, time and rate limits against hostile or broken clients.
    pub limits: LimitsConfig,
    /// How much of the log is kept (the oldest messages go first).
    pub retention: RetentionConfig,
    /// Named consumer positions.
    pub cursors: CursorsConfig,
    /// The node's async runtime.
    pub runtime: RuntimeConfig,
}

/// `[runtime]`: the node's tokio runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads of the node's runtime; 0 (the default) = tokio's default,
    /// one per CPU core (or `TOKIO_WORKER_THREADS`). Fewer threads mean fewer
    /// cross-thread wake-ups when several nodes share a few cores.
    pub worker_threads: usize,
}

/// Most runtime worker threads accepted (`runtime.worker_threads`): beyond this a
/// value is a typo, not a tuning.
pub const MAX_WORKER_THREADS: usize = 1024;

impl RuntimeConfig {
    /// The worker thread count to build the runtime with; `None` = tokio's default.
    pub fn worker_threads(&self) -> Option<usize> {
        (self.worker_threads > 0).then_some(self.worker_threads)
    }
}

/// `[retention]`: automatic trimming of the oldest messages, decided by the
/// leader and replicated as a trim entry. 0 = no limit (the default: keep all).
/// It never trims past the lowest consumer cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep at most this many of the newest messages.
    pub max_messages: u64,
    /// Keep at most about this many bytes of message files (whole segments go).
    pub max_bytes: u64,
    /// Drop messages older than this, by the leader's clock when proposed.
    pub max_age_s: u64,
}

/// `[cursors]`: consumer cursors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CursorsConfig {
    /// Most cursors that may exist at once; creating one more is a 409.
    pub max_cursors: u64,
}

impl Default for CursorsConfig {
    fn default() -> Self {
        CursorsConfig { max_cursors: 1000 }
    }
}

/// `[health]`: thresholds of the health manager.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// The disk is unhealthy when the p99 of recent fsyncs exceeds this.
    pub fsync_p99_max_ms: u64,
    /// A leader whose disk stays unhealthy this long hands leadership over.
    pub unhealthy_window_ms: u64,
    /// The disk is unhealthy when the data dir's filesystem has less free space.
    pub min_free_bytes: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            fsync_p99_max_ms: 500,
            unhealthy_window_ms: 3000,
            min_free_bytes: 64 << 20,
        }
    }
}

/// `[debug]`: off by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DebugConfig {
    /// Enables `/v1/debug/faults` (fsync latency and failure, dropped or delayed
    /// messages to a named peer). The endpoint does not exist when false.
    pub fault_injection: bool,
}

/// `[raft]`: consensus timing and replication flow control.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSection {
    /// How often a leader sends heartbeats to each follower.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout; must exceed the heartbeat.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout; must exceed the minimum.
    pub election_timeout_max_ms: u64,
    /// Most entries in one AppendEntries message.
    pub max_append_entries: usize,
    /// Most bytes of entries sent to one follower and not yet acknowledged.
    pub max_inflight_bytes: u64,
}

impl RaftSection {
    /// The consensus core's configuration for node `id` driven by a `tick`
    /// (durations become tick counts; the one place they are converted).
    pub fn core_config(&self, id: &str, tick: Duration) -> crate::core::RaftConfig {
        let t = tick.as_millis().max(1) as u64;
        let mut rc = crate::core::RaftConfig::new(id);
        rc.heartbeat_ticks = (self.heartbeat_interval_ms / t).max(1);
        rc.election_ticks_min = (self.election_timeout_min_ms / t).max(rc.heartbeat_ticks + 1);
        rc.election_ticks_max = (self.election_timeout_max_ms / t).max(rc.election_ticks_min + 1);
        rc.max_append_entries = self.max_append_entries.max(1);
        rc.max_inflight_bytes = self.max_inflight_bytes as usize;
        rc.snapshot_retry_ticks = 30_000 / t;
        rc
    }
}

/// `[write]`: client write behaviour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriteConfig {
    /// Write concern used when a request names none: `"majority"`, `"all"` or a
    /// number of voters.
    pub default_w: DefaultW,
    /// How long a write waits for its `w` acknowledgements; 0 = no limit.
    pub timeout_ms: u64,
    /// Largest message accepted, in bytes of UTF-8 text.
    pub max_message_bytes: usize,
    /// Most messages in one `POST /v1/messages/batch`.
    pub max_batch_messages: usize,
    /// Most bytes of messages (UTF-8 text) in one batch.
    pub max_batch_bytes: usize,
    /// How many idempotency keys are remembered (oldest forgotten first).
    pub idempotency_window: usize,
}

/// `[read]`: client read behaviour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadConfig {
    /// Messages returned by a read that names no `limit`.
    pub default_limit: usize,
    /// Largest `limit` honoured; larger requests are clamped to it.
    pub max_limit: usize,
    /// Longest long-poll `wait_ms` honoured; larger requests are clamped to it.
    pub max_wait_ms: u64,
    /// Bytes of the newest messages kept in memory; older ones are read from the
    /// message files (at least 1 MiB is kept whatever this says).
    pub cache_bytes: usize,
}

/// `[snapshot]`: snapshot and log compaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Take a snapshot and compact the log after this many applied entries.
    pub every_entries: u64,
    /// ... or after this many bytes of applied entries, whichever comes first
    /// (the entries since the last snapshot are held in memory).
    pub every_bytes: u64,
}

/// `[wal]`: on-disk log layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalConfig {
    /// Size at which the active log segment is closed and a new one started.
    pub segment_bytes: u64,
}

/// `[log]`: logging output (the level comes from `RUST_LOG`, default `info`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `"human"` (readable lines) or `"json"` (one JSON object per line).
    pub format: LogFormat,
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable text lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // By hand (not derived) so a bad value's error names the key.
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().as_str() {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            _ => Err(de::Error::custom(format!(
                "log.format: {s:?} is not \"human\" or \"json\""
            ))),
        }
    }
}

/// The configured default write concern: `"majority"`, `"all"` or a count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DefaultW {
    /// A majority of the voters (the entry is committed before the reply).
    #[default]
    Majority,
    /// Every voter.
    All,
    /// This many voters, leader included.
    Count(u64),
}

impl From<DefaultW> for WriteConcern {
    fn from(w: DefaultW) -> Self {
        match w {
            DefaultW::Majority => WriteConcern::Majority,
            DefaultW::All => WriteConcern::All,
            DefaultW::Count(n) => WriteConcern::Count(usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }
}

impl fmt::Display for DefaultW {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DefaultW::Majority => f.write_str("majority"),
            DefaultW::All => f.write_str("all"),
            DefaultW::Count(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for DefaultW {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DefaultW::Count(n) => s.serialize_u64(*n),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for DefaultW {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DefaultWVisitor)
    }
}

struct DefaultWVisitor;

impl Visitor<'_> for DefaultWVisitor {
    type Value = DefaultW;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"majority\", \"all\" or a positive integer for write.default_w")
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<DefaultW, E> {
        Ok(DefaultW::Count(n))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<DefaultW, E> {
        u64::try_from(n)
            .map(DefaultW::Count)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(n), &self))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<DefaultW, E> {
        match s.trim().to_ascii_lowercase().as_str() {
            "majority" => Ok(DefaultW::Majority),
            "all" => Ok(DefaultW::All),
            t => t
                .parse()
                .map(DefaultW::Count)
                .map_err(|_| E::invalid_value(de::Unexpected::Str(s), &self)),
        }
    }
}

/// Deserializes `join` from a list or from one comma-separated string.
fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_any(StringOrList)
}

struct StringOrList;

impl<'de> Visitor<'de> for StringOrList {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of host:port strings or one comma-separated string for join")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<String>, E> {
        Ok(split_list(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            out.extend(split_list(&item));
        }
        Ok(out)
    }
}

/// Splits a comma-separated list, trimming items and dropping empty ones.
fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: String::new(),
            data_dir: PathBuf::from("./data"),
            http_addr: "127.0.0.1:8080".into(),
            grpc_addr: "127.0.0.1:7070".into(),
            advertise_http_addr: None,
            advertise_grpc_addr: None,
            bootstrap: false,
            join: Vec::new(),
            raft: RaftSection::default(),
            write: WriteConfig::default(),
            read: ReadConfig::default(),
            snapshot: SnapshotConfig::default(),
            wal: WalConfig::default(),
            log: LogConfig::default(),
            health: HealthConfig::default(),
            debug: DebugConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            retention: RetentionConfig::default(),
            cursors: CursorsConfig::default(),
            runtime: RuntimeConfig::default(),
        }
    }
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            max_append_entries: 1024,
            max_inflight_bytes: 32 * 1024 * 1024,
        }
    }
}

impl Default for WriteConfig {
    fn default() -> Self {
        WriteConfig {
            default_w: DefaultW::Majority,
            timeout_ms: 30_000,
            max_message_bytes: 1024 * 1024,
            max_batch_messages: 10_000,
            max_batch_bytes: 16 << 20,
            idempotency_window: 100_000,
        }
    }
}

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig {
            default_limit: 1000,
            max_limit: 10_000,
            max_wait_ms: 30_000,
            cache_bytes: 32 << 20,
        }
    }
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            every_entries: 10_000,
            every_bytes: 64 << 20,
        }
    }
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
        }
    }
}

impl Config {
    /// The HTTP address to publish to peers and clients.
    pub fn advertised_http_addr(&self) -> &str {
        self.advertise_http_addr
            .as_deref()
            .unwrap_or(&self.http_addr)
    }

    /// The gRPC address to publish to peers.
    pub fn advertised_grpc_addr(&self) -> &str {
        self.advertise_grpc_addr
            .as_deref()
            .unwrap_or(&self.grpc_addr)
    }

    /// How often a leader heartbeats.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.raft.heartbeat_interval_ms)
    }

    /// How long a write waits for its `w`; `None` = no limit.
    pub fn write_timeout(&self) -> Option<Duration> {
        (self.write.timeout_ms > 0).then(|| Duration::from_millis(self.write.timeout_ms))
    }

    /// Checks every value; returns all problems found, each naming its key.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();
        self.validate_identity(&mut errs);
        self.validate_addresses(&mut errs);
        self.validate_raft(&mut errs);
        self.validate_limits(&mut errs);
        self.tls.validate(&mut errs);
        self.auth.validate(&mut errs);
        self.limits.validate(&mut errs);
        self.limits.validate_grpc_size(
            self.write.max_message_bytes.max(self.write.max_batch_bytes),
            &mut errs,
        );
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    fn validate_identity(&self, errs: &mut Vec<ConfigError>) {
        let id = &self.node_id;
        if id.is_empty() {
            errs.push(ConfigError::Missing { key: "node_id" });
        } else if id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            errs.push(invalid(
                "node_id",
                format!("{id:?} must not contain whitespace or '/'"),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            errs.push(ConfigError::Missing { key: "data_dir" });
        }
        if self.bootstrap && !self.join.is_empty() {
            errs.push(invalid("bootstrap", "cannot be combined with join".into()));
        }
    }

    fn validate_addresses(&self, errs: &mut Vec<ConfigError>) {
        check_addr(errs, "http_addr", &self.http_addr, true);
        check_addr(errs, "grpc_addr", &self.grpc_addr, true);
        if let Some(a) = &self.advertise_http_addr {
            check_addr(errs, "advertise_http_addr", a, false);
        }
        if let Some(a) = &self.advertise_grpc_addr {
            check_addr(errs, "advertise_grpc_addr", a, false);
        }
        for a in &self.join {
            check_addr(errs, "join", a, false);
        }
    }

    fn validate_raft(&self, errs: &mut Vec<ConfigError>) {
        let r = &self.raft;
        at_least(
            errs,
            "raft.heartbeat_interval_ms",
            r.heartbeat_interval_ms,
            1,
        );
        if r.election_timeout_min_ms <= r.heartbeat_interval_ms {
            errs.push(ConfigError::NotGreater {
                key: "raft.election_timeout_min_ms",
                value: r.election_timeout_min_ms,
                other: "raft.heartbeat_interval_ms",
                other_value: r.heartbeat_interval_ms,
            });
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            errs.push(ConfigError::NotGreater {
                key: "raft.election_timeout_max_ms",
                value: r.election_timeout_max_ms,
                other: "raft.election_timeout_min_ms",
                other_value: r.election_timeout_min_ms,
            });
        }
        at_least(
            errs,
            "raft.max_append_entries",
            r.max_append_entries as u64,
            1,
        );
        at_least(errs, "raft.max_inflight_bytes", r.max_inflight_bytes, 1);
    }

    fn validate_limits(&self, errs: &mut Vec<ConfigError>) {
        let (w, r) = (&self.write, &self.read);
        if w.default_w == DefaultW::Count(0) {
            errs.push(invalid(
                "write.default_w",
                "must be \"majority\", \"all\" or >= 1".into(),
            ));
        }
        at_least(
            errs,
            "write.max_message_bytes",
            w.max_message_bytes as u64,
            1,
        );
        at_least(
            errs,
            "write.max_batch_messages",
            w.max_batch_messages as u64,
            1,
        );
        at_least(errs, "write.max_batch_bytes", w.max_batch_bytes as u64, 1);
        at_least(errs, "cursors.max_cursors", self.cursors.max_cursors, 1);
        at_least(
            errs,
            "write.idempotency_window",
            w.idempotency_window as u64,
            1,
        );
        at_least(errs, "read.default_limit", r.default_limit as u64, 1);
        at_least(errs, "read.max_limit", r.max_limit as u64, 1);
        if r.default_limit > r.max_limit {
            errs.push(invalid(
                "read.default_limit",
                format!(
                    "{} is greater than read.max_limit ({})",
                    r.default_limit, r.max_limit
                ),
            ));
        }
        at_least(
            errs,
            "snapshot.every_entries",
            self.snapshot.every_entries,
            1,
        );
        at_least(
            errs,
            "snapshot.every_bytes",
            self.snapshot.every_bytes,
            1 << 20,
        );
        at_least(
            errs,
            "wal.segment_bytes",
            self.wal.segment_bytes,
            MIN_SEGMENT_BYTES,
        );
        if self.runtime.worker_threads > MAX_WORKER_THREADS {
            errs.push(invalid(
                "runtime.worker_threads",
                format!(
                    "must be at most {MAX_WORKER_THREADS} (got {}; 0 = one per CPU core)",
                    self.runtime.worker_threads
                ),
            ));
        }
    }
}

/// Smallest WAL segment accepted: below this every few records would roll a file.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// One configuration problem, naming the key it is about.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required key has no value.
    #[error("{key}: missing (set it in the config file, as RAFTLOG_{} or as a flag)", key.to_uppercase())]
    Missing { key: &'static str },
    /// An address that is neither `ip:port` nor `host:port`.
    #[error("{key}: {value:?} is not a valid address: {reason}")]
    BadAddress {
        key: &'static str,
        value: String,
        reason: String,
    },
    /// A value that must exceed another key's value does not.
    #[error("{key}: must be greater than {other} ({value} <= {other_value})")]
    NotGreater {
        key: &'static str,
        value: u64,
        other: &'static str,
        other_value: u64,
    },
    /// A number below its minimum.
    #[error("{key}: must be at least {min} (got {value})")]
    TooSmall {
        key: &'static str,
        value: u64,
        min: u64,
    },
    /// Any other bad value.
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl ConfigError {
    /// The dotted config key this error is about (`raft.heartbeat_interval_ms`).
    pub fn key(&self) -> &'static str {
        match self {
            ConfigError::Missing { key }
            | ConfigError::BadAddress { key, .. }
            | ConfigError::NotGreater { key, .. }
            | ConfigError::TooSmall { key, .. }
            | ConfigError::Invalid { key, .. } => key,
        }
    }
}

fn invalid(key: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid { key, message }
}

fn at_least(errs: &mut Vec<ConfigError>, key: &'static str, value: u64, min: u64) {
    if value < min {
        errs.push(ConfigError::TooSmall { key, value, min });
    }
}

fn check_addr(errs: &mut Vec<ConfigError>, key: &'static str, value: &str, listen: bool) {
    if let Err(reason) = parse_host_port(value, listen) {
        errs.push(ConfigError::BadAddress {
            key,
            value: value.to_string(),
            reason,
        });
    }
}

/// Accepts `ip:port` (`[v6]:port` too) or `host:port`. Port 0 (pick any) is
/// allowed only for listen addresses: nobody can dial it.
pub fn parse_host_port(value: &str, listen: bool) -> Result<(), String> {
    let port = match value.parse::<SocketAddr>() {
        Ok(sa) => sa.port(),
        Err(_) => parse_named_host_port(value)?,
    };
    if port == 0 && !listen {
        return Err("port 0 cannot be dialed".into());
    }
    Ok(())
}

fn parse_named_host_port(value: &str) -> Result<u16, String> {
    let (host, port) = value.rsplit_once(':').ok_or("expected host:port")?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !host_ok {
        return Err(format!("bad host {host:?} (expected host:port, no scheme)"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("bad port {port:?}"))
}

/// `raftlog serve` flags. Each overrides the config key of the same name.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeArgs {
    /// TOML config file (optional; flags and RAFTLOG_* variables override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id (`node_id`).
    #[arg(long)]
    pub node_id: Option<String>,
    /// Data directory (`data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// HTTP client API listen address (`http_addr`).
    #[arg(long)]
    pub http_addr: Option<String>,
    /// gRPC control plane listen address (`grpc_addr`).
    #[arg(long)]
    pub grpc_addr: Option<String>,
    /// HTTP address published to others (`advertise_http_addr`).
    #[arg(long)]
    pub advertise_http_addr: Option<String>,
    /// gRPC address published to others (`advertise_grpc_addr`).
    #[arg(long)]
    pub advertise_grpc_addr: Option<String>,
    /// Found a new cluster on an empty data directory (`bootstrap`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub bootstrap: Option<bool>,
    /// gRPC address to join through; repeat or comma-separate (`join`).
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT")]
    pub join: Vec<String>,
    /// Log output format (`log.format`).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// Loads the config (defaults, file, `RAFTLOG_*` environment, flags) and
/// validates it. The error has one line per problem, each naming its key.
pub fn load(cli: &ServeArgs) -> Result<Config, String> {
    load_with_env(cli, None)
}

/// As [`load`], reading the environment from `env` instead of the process when
/// given (tests; env vars are process-global).
pub fn load_with_env(
    cli: &ServeArgs,
    env: Option<HashMap<String, String>>,
) -> Result<Config, String> {
    let cfg = build(cli, env)?;
    cfg.validate().map_err(|errs| {
        errs.iter()
            .map(|e| format!("config error: {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    Ok(cfg)
}

fn build(cli: &ServeArgs, env: Option<HashMap<String, String>>) -> Result<Config, String> {
    let mut b = ::config::Config::builder();
    if let Some(path) = &cli.config {
        b = b.add_source(file_source(path));
    }
    b = b.add_source(env_source(env));
    let built = apply_flags(b, cli)
        .and_then(|b| b.build())
        .map_err(describe_load_error)?;
    reject_unknown_keys(&built)?;
    built.try_deserialize().map_err(describe_load_error)
}

fn file_source(path: &Path) -> ::config::File<::config::FileSourceFile, ::config::FileFormat> {
    ::config::File::from(path)
        .format(::config::FileFormat::Toml)
        .required(true)
}

fn env_source(env: Option<HashMap<String, String>>) -> ::config::Environment {
    ::config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .with_list_parse_key("join")
        .ignore_empty(true)
        .source(env)
}

type Builder = ::config::ConfigBuilder<::config::builder::DefaultState>;

fn apply_flags(b: Builder, cli: &ServeArgs) -> Result<Builder, ::config::ConfigError> {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
    let mut b = b
        .set_override_option("node_id", cli.node_id.clone())?
        .set_override_option("data_dir", path(&cli.data_dir))?
        .set_override_option("http_addr", cli.http_addr.clone())?
        .set_override_option("grpc_addr", cli.grpc_addr.clone())?
        .set_override_option("advertise_http_addr", cli.advertise_http_addr.clone())?
        .set_override_option("advertise_grpc_addr", cli.advertise_grpc_addr.clone())?
        .set_override_option("bootstrap", cli.bootstrap)?
        .set_override_option("log.format", cli.log_format.map(log_format_name))?;
    if !cli.join.is_empty() {
        b = b.set_override("join", cli.join.clone())?;
    }
    Ok(b)
}

fn log_format_name(f: LogFormat) -> &'static str {
    match f {
        LogFormat::Human => "human",
        LogFormat::Json => "json",
    }
}

/// Fails with one line per key that [`Config`] does not know, with its full
/// dotted path and where it came from. (serde's `deny_unknown_fields` stays as a
/// backstop, but its message names neither the section nor the source.)
fn reject_unknown_keys(built: &::config::Config) -> Result<(), String> {
    let found = ::config::Source::collect(built).map_err(describe_load_error)?;
    let known = serde_json::to_value(Config::default()).expect("Config serializes to JSON");
    let serde_json::Value::Object(known) = known else {
        unreachable!("Config is a struct")
    };
    let mut lines = Vec::new();
    unknown_keys("", &found, &known, &mut lines);
    if lines.is_empty() {
        Ok(())
    } else {
        Err(lines.join("\n"))
    }
}

fn unknown_keys(
    prefix: &str,
    found: &::config::Map<String, ::config::Value>,
    known: &serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<String>,
) {
    let mut keys: Vec<_> = found.keys().collect();
    keys.sort();
    for k in keys {
        let v = &found[k];
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (known.get(k), &v.kind) {
            (None, _) => {
                let from = v
                    .origin()
                    .map(|o| format!(" (from {o})"))
                    .unwrap_or_default();
                out.push(format!("config error: {path}: unknown key{from}"));
            }
            (Some(serde_json::Value::Object(sub)), ::config::ValueKind::Table(t)) => {
                unknown_keys(&path, t, sub, out)
            }
            (Some(serde_json::Value::Object(_)), _) => {
                out.push(format!("config error: {path}: must be a [{path}] section"));
            }
            _ => {}
        }
    }
}

/// One line for a load failure (unreadable file, TOML syntax, unknown key, wrong
/// type); the config crate's message already names the key and the source.
fn describe_load_error(e: ::config::ConfigError) -> String {
    let text = e.to_string().replace('\n', " ");
    format!(
        "config error: {}",
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn args_with_id() -> ServeArgs {
        ServeArgs {
            node_id: Some("n1".into()),
            ..ServeArgs::default()
        }
    }

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn with_file(f: &tempfile::NamedTempFile) -> ServeArgs {
        ServeArgs {
            config: Some(f.path().to_path_buf()),
            ..ServeArgs::default()
        }
    }

    fn keys(cfg: &Config) -> Vec<&'static str> {
        cfg.validate()
            .unwrap_err()
            .iter()
            .map(ConfigError::key)
            .collect()
    }

    fn valid() -> Config {
        Config {
            node_id: "n1".into(),
            ..Config::default()
        }
    }

    #[test]
    fn defaults_match_the_spec() {
        let cfg = load_with_env(&args_with_id(), env(&[])).unwrap();
        assert_eq!(cfg.node_id, "n1");
        assert_eq!(cfg.raft.heartbeat_interval_ms, 100);
        assert_eq!(cfg.raft.election_timeout_min_ms, 1000);
        assert_eq!(cfg.raft.election_timeout_max_ms, 2000);
        assert_eq!(cfg.write.default_w, DefaultW::Majority);
        assert_eq!(cfg.write.timeout_ms, 30_000);
        assert_eq!(cfg.write.max_message_bytes, 1_048_576);
        assert_eq!(cfg.read.default_limit, 1000);
        assert_eq!(cfg.read.max_limit, 10_000);
        assert_eq!(cfg.snapshot.every_entries, 10_000);
        assert_eq!(cfg.wal.segment_bytes, 64 * 1024 * 1024);
        assert_eq!(cfg.log.format, LogFormat::Human);
        assert!(!cfg.bootstrap && cfg.join.is_empty());
        assert_eq!(cfg.advertised_http_addr(), cfg.http_addr);
        assert_eq!(cfg.advertised_grpc_addr(), cfg.grpc_addr);
        assert_eq!(
            cfg,
            Config {
                node_id: "n1".into(),
                ..Config::default()
            }
        );
    }

    #[test]
    fn file_sets_values() {
        let f = toml_file(
            r#"
            node_id = "a"
            http_addr = "0.0.0.0:9000"
            advertise_http_addr = "node1:9000"
            join = ["x:1", "y:2"]
            [raft]
            heartbeat_interval_ms = 50
            [write]
            default_w = 2
            timeout_ms = 0
            [log]
            format = "json"
            "#,
        );
        let cfg = load_with_env(&with_file(&f), env(&[])).unwrap();
        assert_eq!(cfg.node_id, "a");
        assert_eq!(cfg.advertised_http_addr(), "node1:9000");
        assert_eq!(cfg.join, vec!["x:1", "y:2"]);
        assert_eq!(cfg.raft.heartbeat_interval_ms, 50);
        assert_eq!(cfg.raft.election_timeout_min_ms, 1000);
        assert_eq!(cfg.write.default_w, DefaultW::Count(2));
        assert_eq!(
            WriteConcern::from(cfg.write.default_w),
            WriteConcern::Count(2)
        );
        assert_eq!(cfg.write_timeout(), None);
        assert_eq!(cfg.log.format, LogFormat::Json);
    }

    #[test]
    fn join_may_be_a_comma_separated_string_in_the_file() {
        let f = toml_file("node_id = \"a\"\njoin = \"x:1, y:2\"\n");
        let cfg = load_with_env(&with_file(&f), env(&[])).unwrap();
        assert_eq!(cfg.join, vec!["x:1", "y:2"]);
    }

    #[test]
    fn env_overrides_file() {
        let f = toml_file("node_id = \"a\"\n[raft]\nheartbeat_interval_ms = 70\n");
        let vars = env(&[
            ("RAFTLOG_NODE_ID", "7"),
            ("RAFTLOG_RAFT__HEARTBEAT_INTERVAL_MS", "50"),
            ("RAFTLOG_JOIN", "h1:7070,h2:7070"),
            ("RAFTLOG_WRITE__DEFAULT_W", "all"),
            ("RAFTLOG_LOG__FORMAT", "json"),
            ("RAFTLOG_DATA_DIR", "/tmp/x"),
            ("OTHER_VAR", "ignored"),
        ]);
        let cfg = load_with_env(&with_file(&f), vars).unwrap();
        assert_eq!(cfg.node_id, "7");
        assert_eq!(cfg.raft.heartbeat_interval_ms, 50);
        assert_eq!(cfg.join, vec!["h1:7070", "h2:7070"]);
        assert_eq!(cfg.write.default_w, DefaultW::All);
        assert_eq!(cfg.log.format, LogFormat::Json);
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn env_parses_bools_and_single_join() {
        let vars = env(&[("RAFTLOG_BOOTSTRAP", "true"), ("RAFTLOG_NODE_ID", "n")]);
        assert!(
            load_with_env(&ServeArgs::default(), vars)
                .unwrap()
                .bootstrap
        );
        let vars = env(&[("RAFTLOG_JOIN", "node1:7070"), ("RAFTLOG_NODE_ID", "n")]);
        assert_eq!(
            load_with_env(&ServeArgs::default(), vars).unwrap().join,
            vec!["node1:7070"]
        );
    }

    #[test]
    fn flags_override_env_and_file() {
        let f = toml_file("node_id = \"file\"\nhttp_addr = \"127.0.0.1:1\"\njoin = [\"f:1\"]\n");
        let vars = env(&[
            ("RAFTLOG_NODE_ID", "env"),
            ("RAFTLOG_GRPC_ADDR", "127.0.0.1:2"),
        ]);
        let args = ServeArgs {
            node_id: Some("flag".into()),
            http_addr: Some("127.0.0.1:3".into()),
            join: vec!["a:1".into(), "b:2".into()],
            log_format: Some(LogFormat::Json),
            advertise_grpc_addr: Some("me:7070".into()),
            ..with_file(&f)
        };
        let cfg = load_with_env(&args, vars).unwrap();
        assert_eq!(cfg.node_id, "flag");
        assert_eq!(cfg.http_addr, "127.0.0.1:3");
        assert_eq!(cfg.grpc_addr, "127.0.0.1:2");
        assert_eq!(cfg.join, vec!["a:1", "b:2"]);
        assert_eq!(cfg.log.format, LogFormat::Json);
        assert_eq!(cfg.advertised_grpc_addr(), "me:7070");
    }

    #[test]
    fn join_flag_is_repeatable_and_comma_separated() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let argv = [
            "raftlog",
            "--join",
            "a:1,b:2",
            "--join=c:3",
            "--bootstrap=false",
        ];
        let args = Cli::try_parse_from(argv).unwrap().serve;
        assert_eq!(args.join, vec!["a:1", "b:2", "c:3"]);
        assert_eq!(args.bootstrap, Some(false));
        let args = Cli::try_parse_from(["raftlog", "--bootstrap", "--node-id", "n1"])
            .unwrap()
            .serve;
        assert_eq!(
            (args.bootstrap, args.node_id.as_deref()),
            (Some(true), Some("n1"))
        );
    }

    #[test]
    fn bootstrap_flag_overrides() {
        let args = ServeArgs {
            bootstrap: Some(true),
            ..args_with_id()
        };
        assert!(load_with_env(&args, env(&[])).unwrap().bootstrap);
    }

    #[test]
    fn unknown_keys_fail_with_their_name() {
        let f = toml_file("node_id = \"a\"\nbogus_key = 1\n");
        let err = load_with_env(&with_file(&f), env(&[])).unwrap_err();
        assert!(err.contains("bogus_key"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");

        let f = toml_file("node_id = \"a\"\n[raft]\nheartbeat_ms = 1\n");
        let err = load_with_env(&with_file(&f), env(&[])).unwrap_err();
        assert!(err.contains("heartbeat_ms"), "{err}");

        let err = load_with_env(&args_with_id(), env(&[("RAFTLOG_NODEID", "x")])).unwrap_err();
        assert!(err.contains("nodeid"), "{err}");

        let f = toml_file("node_id = \"a\"\nraft = 5\n");
        let err = load_with_env(&with_file(&f), env(&[])).unwrap_err();
        assert!(err.contains("raft: must be a [raft] section"), "{err}");
    }

    #[test]
    fn wrong_types_and_missing_files_fail() {
        let f = toml_file("node_id = \"a\"\n[raft]\nheartbeat_interval_ms = \"fast\"\n");
        let err = load_with_env(&with_file(&f), env(&[])).unwrap_err();
        assert!(err.contains("heartbeat_interval_ms"), "{err}");
        let f = toml_file("node_id = \"a\"\n[write]\ndefault_w = \"most\"\n");
        let err = load_with_env(&with_file(&f), env(&[])).unwrap_err();
        assert!(err.contains("default_w"), "{err}");
        let args = ServeArgs {
            config: Some("/nonexistent/raftlog.toml".into()),
            ..args_with_id()
        };
        assert!(load_with_env(&args, env(&[])).is_err());
    }

    #[test]
    fn missing_node_id() {
        assert_eq!(keys(&Config::default()), vec!["node_id"]);
        let err = load_with_env(&ServeArgs::default(), env(&[])).unwrap_err();
        assert_eq!(err.lines().count(), 1);
        assert!(err.contains("node_id"), "{err}");
    }

    #[test]
    fn bad_node_id_and_data_dir() {
        assert_eq!(
            keys(&Config {
                node_id: "a b".into(),
                ..valid()
            }),
            vec!["node_id"]
        );
        assert_eq!(
            keys(&Config {
                data_dir: PathBuf::new(),
                ..valid()
            }),
            vec!["data_dir"]
        );
    }

    #[test]
    fn bad_addresses() {
        for bad in ["", "localhost", "http://x:80", "x:99999", "x:port", ":80"] {
            let cfg = Config {
                http_addr: bad.into(),
                ..valid()
            };
            assert_eq!(keys(&cfg), vec!["http_addr"], "{bad:?}");
        }
        assert_eq!(
            keys(&Config {
                grpc_addr: "nope".into(),
                ..valid()
            }),
            vec!["grpc_addr"]
        );
        let cfg = Config {
            advertise_grpc_addr: Some("h:0".into()),
            ..valid()
        };
        assert_eq!(keys(&cfg), vec!["advertise_grpc_addr"]);
        let cfg = Config {
            advertise_http_addr: Some("h".into()),
            ..valid()
        };
        assert_eq!(keys(&cfg), vec!["advertise_http_addr"]);
        assert_eq!(
            keys(&Config {
                join: vec!["a:1".into(), "b".into()],
                ..valid()
            }),
            vec!["join"]
        );
        for good in [
            "127.0.0.1:0",
            "[::1]:80",
            "node-1.example:7070",
            "0.0.0.0:8080",
        ] {
            let cfg = Config {
                http_addr: good.into(),
                ..valid()
            };
            assert!(cfg.validate().is_ok(), "{good:?}");
        }
    }

    #[test]
    fn bootstrap_with_join_is_rejected() {
        let cfg = Config {
            bootstrap: true,
            join: vec!["a:1".into()],
            ..valid()
        };
        assert_eq!(keys(&cfg), vec!["bootstrap"]);
    }

    #[test]
    fn election_timeouts() {
        let mut cfg = valid();
        cfg.raft.election_timeout_min_ms = 100;
        assert_eq!(keys(&cfg), vec!["raft.election_timeout_min_ms"]);
        let mut cfg = valid();
        cfg.raft.election_timeout_max_ms = 1000;
        assert_eq!(keys(&cfg), vec!["raft.election_timeout_max_ms"]);
        let mut cfg = valid();
        cfg.raft.heartbeat_interval_ms = 0;
        assert_eq!(keys(&cfg), vec!["raft.heartbeat_interval_ms"]);
    }

    #[test]
    fn zero_limits() {
        let mut cfg = valid();
        cfg.raft.max_append_entries = 0;
        cfg.raft.max_inflight_bytes = 0;
        cfg.write.default_w = DefaultW::Count(0);
        cfg.write.max_message_bytes = 0;
        cfg.write.idempotency_window = 0;
        cfg.read.max_limit = 0;
        cfg.snapshot.every_entries = 0;
        cfg.snapshot.every_bytes = 1000;
        cfg.wal.segment_bytes = 10;
        assert_eq!(
            keys(&cfg),
            vec![
                "raft.max_append_entries",
                "raft.max_inflight_bytes",
                "write.default_w",
                "write.max_message_bytes",
                "write.idempotency_window",
                "read.max_limit",
                "read.default_limit",
                "snapshot.every_entries",
                "snapshot.every_bytes",
                "wal.segment_bytes",
            ]
        );
        let mut cfg = valid();
        cfg.read.default_limit = 0;
        assert_eq!(keys(&cfg), vec!["read.default_limit"]);
    }

    #[test]
    fn security_sections() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("x.pem");
        std::fs::write(&pem, "not checked here").unwrap();
        let mut cfg = valid();
        cfg.tls.ca_file = Some(pem.clone());
        assert_eq!(keys(&cfg), vec!["tls.cert_file", "tls.key_file"]);
        cfg.tls.cert_file = Some(pem.clone());
        cfg.tls.key_file = Some(dir.path().join("missing.key"));
        assert_eq!(keys(&cfg), vec!["tls.key_file"]);
        cfg.tls.key_file = Some(pem);
        assert!(cfg.tls.enabled());
        assert_eq!(cfg.validate(), Ok(()));

        let mut cfg = valid();
        cfg.auth.tokens_file = Some(dir.path().join("no-such-tokens.toml"));
        cfg.limits.http_max_connections = 0;
        cfg.limits.http_max_header_bytes = 1024;
        cfg.limits.grpc_max_message_bytes = 1 << 20;
        assert_eq!(
            keys(&cfg),
            vec![
                "auth.tokens_file",
                "limits.http_max_connections",
                "limits.http_max_header_bytes",
                "limits.grpc_max_message_bytes",
            ]
        );
        let f = toml_file("node_id = \"a\"\n[limits]\nhttp_max_conections = 5\n");
        let err = load_with_env(&with_file(&f), env(&[])).unwrap_err();
        assert!(
            err.contains("limits.http_max_conections: unknown key"),
            "{err}"
        );
    }

    #[test]
    fn every_error_is_one_line_naming_its_key() {
        let mut cfg = Config {
            http_addr: "bad".into(),
            ..Config::default()
        };
        cfg.raft.election_timeout_min_ms = 50;
        let errs = cfg.validate().unwrap_err();
        assert_eq!(errs.len(), 3);
        for e in errs {
            let line = e.to_string();
            assert!(!line.contains('\n') && line.starts_with(e.key()), "{line}");
        }
        let f = toml_file("http_addr = \"bad\"\n");
        let err = load_with_env(&with_file(&f), env(&[])).unwrap_err();
        assert_eq!(err.lines().count(), 2, "{err}");
        assert!(
            err.lines().all(|l| l.starts_with("config error: ")),
            "{err}"
        );
    }

    #[test]
    fn runtime_worker_threads() {
        let cfg = load_with_env(&args_with_id(), env(&[])).unwrap();
        assert_eq!(cfg.runtime.worker_threads, 0);
        assert_eq!(cfg.runtime.worker_threads(), None, "0 = tokio's default");

        let f = toml_file("node_id = \"a\"\n[runtime]\nworker_threads = 1\n");
        let cfg = load_with_env(&with_file(&f), env(&[])).unwrap();
        assert_eq!(cfg.runtime.worker_threads(), Some(1));
        let vars = env(&[("RAFTLOG_RUNTIME__WORKER_THREADS", "2")]);
        let cfg = load_with_env(&with_file(&f), vars).unwrap();
        assert_eq!(
            cfg.runtime.worker_threads(),
            Some(2),
            "env overrides the file"
        );

        let mut cfg = valid();
        cfg.runtime.worker_threads = MAX_WORKER_THREADS;
        assert_eq!(cfg.validate(), Ok(()));
        cfg.runtime.worker_threads = MAX_WORKER_THREADS + 1;
        assert_eq!(keys(&cfg), vec!["runtime.worker_threads"]);

        for bad in ["-1", "\"two\""] {
            let f = toml_file(&format!(
                "node_id = \"a\"\n[runtime]\nworker_threads = {bad}\n"
            ));
            let err = load_with_env(&with_file(&f), env(&[])).unwrap_err();
            assert!(err.contains("worker_threads"), "{bad}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        let f = toml_file("node_id = \"a\"\n[runtime]\nthreads = 2\n");
        let err = load_with_env(&with_file(&f), env(&[])).unwrap_err();
        assert!(err.contains("runtime.threads: unknown key"), "{err}");
    }

    #[test]
    fn shipped_config_files_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for name in ["node1.toml", "node2.toml", "node3.toml", "local.toml"] {
            let args = ServeArgs {
                config: Some(dir.join(name)),
                ..ServeArgs::default()
            };
            let cfg = load_with_env(&args, env(&[])).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.bootstrap, cfg.join.is_empty(), "{name}");
        }
    }
}
