//! What the controller is asked and whom it talks to: the commands (`Cmd`), the
//! transport it sends through (`Outbound`), its settings, and the state handles
//! read without asking it (`Shared`). Everything else in `node` depends on this
//! module; it depends on nothing in `node` but `waiters` (the reply channels),
//! so the controller, its managers and the handles never import each other in a
//! circle.

use super::waiters::{ReadReply, WriteReply};
use crate::api::*;
use crate::core::*;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Where the controller sends Raft messages (the transport, or a test double).
pub trait Outbound: Send + 'static {
    fn send(&self, env: Envelope);
    /// A `Snapshot` message whose bytes `source` streams (its `data` unused).
    fn send_snapshot(&self, env: Envelope, source: Arc<dyn crate::transport::SnapshotSource>);
    /// Messages dropped so far (full queues, unknown peers), for metrics.
    fn dropped(&self) -> u64 {
        0
    }
    /// The other members' gRPC addresses.
    fn set_peers(&self, peers: BTreeMap<NodeId, String>);
}

/// Everything the controller can be asked.
pub enum Cmd {
    Write {
        req: WriteRequest,
        reply: WriteReply,
    },
    Read {
        req: ReadRequest,
        min_index: u64,
        reply: ReadReply,
    },
    ReadIndex {
        reply: oneshot::Sender<Result<u64, ApiError>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    Join {
        node_id: NodeId,
        grpc_addr: String,
        http_addr: String,
        reply: oneshot::Sender<Result<(), JoinError>>,
    },
    Transfer {
        to: Option<NodeId>,
        reply: oneshot::Sender<Result<NodeId, ApiError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// Addresses learned outside the log (the leader that accepted our join).
    AddPeers {
        peers: BTreeMap<NodeId, String>,
    },
    /// Every cursor, as this node applied them.
    Cursors {
        reply: oneshot::Sender<Vec<(String, u64)>>,
    },
    /// Add or update (`Some`) or remove (`None`) one member, through the log; the
    /// reply comes once the change is committed.
    ChangeMember {
        node_id: NodeId,
        member: Option<Member>,
        reply: WriteReply,
    },
}

/// Why a join was refused; `leader` names where to retry.
#[derive(Debug, Clone)]
pub struct JoinError {
    pub message: String,
    pub leader: Option<(NodeId, String)>,
}

/// Settings the controller needs (derived from the config file).
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub tick: Duration,
    pub default_w: WriteConcern,
    pub write_timeout: Option<Duration>,
    pub default_read_limit: usize,
    pub max_read_limit: usize,
    pub max_wait: Duration,
    pub heartbeat: Duration,
    pub snapshot_every: u64,
    pub snapshot_every_bytes: u64,
    pub idempotency_window: usize,
    /// Automatic trimming (the leader proposes it).
    pub retention: crate::state_machine::Retention,
    /// Most cursors at once.
    pub max_cursors: u64,
    /// Where the state machine keeps its messages; `None` = in memory (tests).
    pub messages: Option<MessagesConfig>,
    /// A follower persists a `Ready` of at most this many entry bytes on the
    /// controller's own thread while its fsyncs are fast (see
    /// `controller::persist`); 0: always on a blocking thread.
    pub inline_persist_max_bytes: usize,
}

/// The message store's place and limits (see `msgstore`).
#[derive(Clone, Debug)]
pub struct MessagesConfig {
    pub dir: std::path::PathBuf,
    /// Where received snapshots are staged (same file system as `dir`).
    pub install_dir: std::path::PathBuf,
    pub segment_bytes: u64,
    pub cache_bytes: usize,
}

/// State the handles read without asking the controller.
pub struct Shared {
    pub voters: AtomicUsize,
    /// Who leads, as this node last knew it: requests that follow the leader
    /// (`follow`) wake on its changes.
    pub leader: tokio::sync::watch::Sender<LeaderView>,
    /// Requests sent again to another (or the same) leader (`follow`); shares
    /// its count with the metric of the same name.
    pub follow_retries: prometheus_client::metrics::counter::Counter,
    /// The state machine's next offset after the last apply: every committed
    /// message below it is readable here. Streams wait on it instead of polling.
    pub applied_offset: tokio::sync::watch::Sender<u64>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            voters: AtomicUsize::new(0),
            leader: tokio::sync::watch::channel(LeaderView::default()).0,
            follow_retries: Default::default(),
            applied_offset: tokio::sync::watch::channel(0).0,
        }
    }
}

/// The leader as this node knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderView {
    pub term: u64,
    /// `None` while no leader is known (an election, or cut off).
    pub leader: Option<NodeId>,
    /// The leader's gRPC address; `None` when this node leads or none is known.
    pub addr: Option<String>,
    /// This node is the leader.
    pub me: bool,
}
