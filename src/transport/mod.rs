//! The transport manager: gRPC over HTTP/2 between nodes.
//!
//! Why it looks like this: Raft needs votes and heartbeats to arrive on time even
//! while a follower is catching up on megabytes of log or a snapshot. So every
//! message group has its own long-lived one-way RPC stream per peer (election,
//! heartbeat, replication), snapshots go through their own chunked, resumable RPC,
//! and bulk traffic (replication, snapshots) uses a different TCP connection from
//! control traffic (election, heartbeat, cluster RPCs), so not even TCP
//! head-of-line blocking couples them. Responses to Raft messages are not RPC
//! replies: the responder sends them as envelopes on its own stream.
//!
//! The transport is a thin adapter. It decodes, checks the cluster id, and hands
//! messages to an [`InboundHandler`] (the controller) without waiting; sending is
//! [`Peers::send`], which never blocks. No consensus logic lives here.
//!
//! Invariants:
//! - within one group, envelopes from one node to another are delivered in the order
//!   they were sent (some may be dropped; Raft retries);
//! - [`Peers::send`] never blocks and never grows memory without bound: each queue
//!   is bounded, a full queue drops the message and counts it;
//! - a full or slow replication stream never delays election or heartbeat
//!   messages, and a snapshot transfer never delays the replication stream;
//! - every RPC carries `x-raftlog-cluster`; a node with a known cluster id refuses
//!   any other id (`Join` and `Status` also accept callers that do not know it yet);
//! - nothing a peer sends can panic the node: bad input is an error or a dropped
//!   message, never an `unwrap`;
//! - every limit is explicit: decode size, connections, streams per connection,
//!   queue capacity, snapshot size, timeouts.
//!
//! Who depends on whom (no circles): `peers` → `dial`, `convert`, `snapshot`;
//! `server` → `conn`, `convert`, `dial`, `ratelimit`, `snapshot`; `snapshot` →
//! `dial` (the client channel type) and, through its `Receiving` trait, none of
//! the server's state; `conn`, `convert`, `dial`, `ratelimit` → nothing here but
//! this module's shared items. Outside: `crate::core` and `crate::api`, never
//! `crate::node` (the node implements [`InboundHandler`] and uses [`Peers`]).

mod conn;
mod convert;
mod dial;
mod peers;
mod ratelimit;
mod server;
mod snapshot;

/// Types generated from `proto/raftlog.proto`. Only this module sees them; the rest
/// of the crate uses `core` types through the conversions in this module.
pub mod pb {
    tonic::include_proto!("raftlog.v1");
}

pub use conn::PeerInfo;
pub use convert::ConvertError;
pub use dial::AddrBook;
pub use peers::{Peers, PeersConfig, RpcError, TransportStats};
pub use server::{serve, serve_with_config, ServerConfig};

use crate::api::{ApiError, WriteRequest, WriteResult};
use crate::core::{Envelope, NodeId, SnapshotMeta};
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// Metadata key carrying the cluster id on every request.
pub const CLUSTER_HEADER: &str = "x-raftlog-cluster";
/// Metadata key carrying the sender's node id on every request.
pub const FROM_HEADER: &str = "x-raftlog-from";

/// The cluster id, shared between the server (which checks it) and [`Peers`]
/// (which sends it), and updatable: a joining node learns it from `Join`.
/// Empty means unknown.
#[derive(Clone, Debug, Default)]
pub struct ClusterId(Arc<RwLock<String>>);

impl ClusterId {
    pub fn new(id: impl Into<String>) -> Self {
        ClusterId(Arc::new(RwLock::new(id.into())))
    }

    pub fn get(&self) -> String {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, id: impl Into<String>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = id.into();
    }

    pub fn is_unknown(&self) -> bool {
        self.0.read().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}

/// A join request: a new node asking to be added as a learner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    pub node_id: NodeId,
    pub grpc_addr: String,
    pub http_addr: String,
}

/// The answer to a [`JoinRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JoinOutcome {
    /// The node was added (or already was a member).
    pub ok: bool,
    /// The leader, when known: a node that is not the leader sends the joiner there.
    pub leader_id: Option<NodeId>,
    pub leader_grpc_addr: Option<String>,
    /// Why the join failed, when `ok` is false.
    pub error: Option<String>,
    /// The cluster id, so the joining node can adopt it.
    pub cluster_id: String,
}

/// The bytes of one outgoing snapshot, read in bounded chunks at any offset
/// (a retry resumes where the receiver stands). `read_at` blocks: the sender
/// calls it on a blocking thread.
pub trait SnapshotSource: Send + Sync + 'static {
    /// Bytes in the snapshot.
    fn size(&self) -> u64;
    /// Fills `buf` from byte `offset` (which with `buf.len()` is within `size`).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

/// A snapshot held in memory whole (`Peers::send` of a `Snapshot` with its data).
impl SnapshotSource for bytes::Bytes {
    fn size(&self) -> u64 {
        bytes::Bytes::len(self) as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let at = usize::try_from(offset).map_err(std::io::Error::other)?;
        let src = self
            .get(at..at + buf.len())
            .ok_or_else(|| std::io::Error::other("read past the end of the snapshot"))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A snapshot that arrived complete and checksummed through `InstallSnapshot`.
/// Its data is in the file at `path`, which now belongs to the handler (move it,
/// read it, delete it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedSnapshot {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term when it sent the snapshot.
    pub term: u64,
    pub meta: SnapshotMeta,
    pub path: PathBuf,
    pub size: u64,
}

/// What the server needs from the node: the controller implements it. Every method
/// is an adapter call; none may block the calling task for long.
pub trait InboundHandler: Send + Sync + 'static {
    /// A Raft message arrived. Push it to the controller without waiting; return
    /// false when it was dropped (queue full, shutting down). Raft retries.
    fn raft(&self, env: Envelope) -> bool;

    /// A follower forwarded a client write to this node (expected to be the leader).
    fn forward_write(&self, req: WriteRequest) -> BoxFuture<'_, Result<WriteResult, ApiError>>;

    /// A ReadIndex round: the commit index a linearizable read must wait for.
    fn read_index(&self) -> BoxFuture<'_, Result<u64, ApiError>>;

    /// A new node asks to join.
    fn join(&self, req: JoinRequest) -> BoxFuture<'_, JoinOutcome>;

    /// This node's status as JSON (the `/v1/status` body).
    fn status(&self) -> BoxFuture<'_, String>;

    /// Where incoming snapshots are assembled. Partial transfers stay here so an
    /// interrupted transfer can resume.
    fn snapshot_dir(&self) -> PathBuf;

    /// A snapshot arrived intact. The handler turns it into an
    /// `Envelope { msg: Message::Snapshot, .. }` for the controller. An `Err` is
    /// reported back to the sender.
    fn snapshot_received(&self, snap: ReceivedSnapshot) -> BoxFuture<'_, Result<(), String>>;
}
