//! The client side: one task per peer and message group, fed by a bounded queue.
//!
//! Why: the controller must never wait on the network. [`Peers::send`] only puts
//! the envelope in the right queue; a long-lived task per (peer, group) drains the
//! queue into one client-streaming RPC and reconnects with capped, jittered
//! exponential backoff when it fails. Snapshots get a task of their own, which uses
//! the chunked `InstallSnapshot` RPC.
//!
//! Each peer has two lazily connected channels (TCP connections): *control* for
//! election, heartbeat and cluster RPCs, *bulk* for replication and snapshots. HTTP/2
//! streams already keep groups apart at the framing level; separate connections also
//! keep megabytes of queued append data in the kernel's send buffer from delaying a
//! heartbeat.
//!
//! Invariants:
//! - `send` never blocks; a full queue drops the envelope and counts it;
//! - within one (peer, group) queue, envelopes are sent in order;
//! - a failed stream discards what is queued (stale once the peer is back), so a
//!   peer that is down holds no more than one backoff pause worth of envelopes;
//! - the tasks of a peer end when it is removed by [`Peers::set_peers`] or when
//!   `Peers` is dropped;
//! - every unary helper has a timeout.

use super::convert::{from_read_index_reply, from_write_reply};
use super::dial::{AddrBook, Dialer, Meta, Svc};
use super::pb;
use super::pb::cluster_client::ClusterClient;
use super::pb::election_client::ElectionClient;
use super::pb::heartbeat_client::HeartbeatClient;
use super::pb::replication_client::ReplicationClient;
use super::snapshot::{self, SendOptions};
use super::{ClusterId, JoinOutcome, JoinRequest, SnapshotSource};
use crate::api::{ApiError, WriteRequest, WriteResult};
use crate::backoff::Backoff;
use crate::core::{Envelope, Group, Message, NodeId};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Response, Status};
use tracing::{debug, trace, warn};

/// Client limits and timeouts.
#[derive(Clone, Debug)]
pub struct PeersConfig {
    /// Envelopes queued per peer and group; beyond this, `send` drops.
    pub queue_capacity: usize,
    /// Snapshots queued per peer behind the one being sent.
    pub snapshot_queue_capacity: usize,
    /// Time allowed for a peer's name lookup, and for each TCP connect attempt;
    /// the whole dial (lookup, fallback addresses, TLS) gets four times this.
    pub connect_timeout: Duration,
    /// Timeout of `read_index`, `join` and `status`.
    pub unary_timeout: Duration,
    /// Timeout of `forward_write` when the request names none (or "no limit");
    /// with a request timeout of `t` ms the call waits `t` ms plus `unary_timeout`.
    pub forward_write_timeout: Duration,
    /// Reconnect backoff: starts at `backoff_min`, doubles up to `backoff_max`,
    /// with jitter.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Snapshot data bytes per `InstallSnapshot` chunk.
    pub snapshot_chunk_bytes: usize,
    /// A snapshot transfer that makes no progress for this long is abandoned.
    pub snapshot_stall_timeout: Duration,
    /// Attempts (each resuming the previous) before a snapshot send is given up;
    /// Raft asks again later.
    pub snapshot_attempts: u32,
    /// Largest message sent or accepted by the client.
    pub max_message_bytes: usize,
    /// HTTP/2 ping interval and timeout on peer connections.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Mutual TLS to peers (our certificate, the cluster CA); `None` = plaintext.
    pub tls: Option<ClientTlsConfig>,
    /// Where peers were last seen, for dialling when name lookups stall (see
    /// `dial`); the gRPC server fills it from incoming connections.
    pub addr_book: Arc<AddrBook>,
}

impl Default for PeersConfig {
    fn default() -> Self {
        PeersConfig {
            queue_capacity: 1024,
            snapshot_queue_capacity: 1,
            connect_timeout: Duration::from_secs(1),
            unary_timeout: Duration::from_secs(5),
            forward_write_timeout: Duration::from_secs(35),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            snapshot_chunk_bytes: 1 << 20,
            snapshot_stall_timeout: Duration::from_secs(30),
            snapshot_attempts: 5,
            max_message_bytes: 64 << 20,
            // Short, because a peer that restarts with a new address (containers,
            // pods) can leave our connection to its old one half-open: nothing
            // answers and nothing resets it, and only a missed ping reveals it.
            // Until then, votes sent on it vanish (seen in the container test: no
            // election for 30 s, the old 10 s + 20 s). A ping every 2 s is a few
            // bytes per connection.
            keepalive_interval: Duration::from_secs(2),
            keepalive_timeout: Duration::from_secs(3),
            tls: None,
            addr_book: Arc::default(),
        }
    }
}

/// Counters since `Peers` was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Envelopes handed to a stream.
    pub sent: u64,
    /// Envelopes dropped because their queue was full.
    pub dropped_queue_full: u64,
    /// Envelopes dropped because their `to` is not a known peer.
    pub dropped_unknown_peer: u64,
    /// Envelopes discarded from a queue when its stream failed (stale by the time
    /// the peer is back; Raft resends what still matters).
    pub dropped_stream_failed: u64,
    /// Streams that failed or ended and were reopened.
    pub stream_failures: u64,
    pub snapshots_sent: u64,
    pub snapshot_failures: u64,
    /// Snapshot data bytes sent (resumed transfers send less than the whole).
    pub snapshot_bytes_sent: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_unknown_peer: AtomicU64,
    dropped_stream_failed: AtomicU64,
    stream_failures: AtomicU64,
    snapshots_sent: AtomicU64,
    snapshot_failures: AtomicU64,
    snapshot_bytes_sent: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Why a unary RPC to another node failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The remote node answered with an API error (e.g. `no_leader`).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The RPC itself failed (unreachable, refused, wrong cluster, ...).
    #[error("rpc to {addr} failed ({code:?}): {message}")]
    Rpc {
        addr: String,
        code: tonic::Code,
        message: String,
    },
    #[error("rpc to {addr} timed out after {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("invalid reply from {addr}: {reason}")]
    InvalidReply { addr: String, reason: String },
    #[error("invalid address {addr:?}: {reason}")]
    InvalidAddress { addr: String, reason: String },
}

/// State the per-peer tasks share with `Peers`.
struct Shared {
    config: PeersConfig,
    meta: Meta,
    counters: Counters,
}

/// Outgoing connections to every peer. See the module docs.
pub struct Peers {
    shared: Arc<Shared>,
    peers: RwLock<BTreeMap<NodeId, PeerHandle>>,
    /// Channels for unary cluster RPCs, by address (bounded, see `cluster_client`).
    unary: Mutex<HashMap<String, Channel>>,
    self_id: NodeId,
}

const MAX_UNARY_CHANNELS: usize = 64;

impl Peers {
    /// No peers yet; add them with [`Peers::set_peers`].
    pub fn new(self_id: NodeId, cluster_id: ClusterId, config: PeersConfig) -> Self {
        let meta = Meta::new(cluster_id, &self_id);
        Peers {
            shared: Arc::new(Shared {
                config,
                meta,
                counters: Counters::default(),
            }),
            peers: RwLock::new(BTreeMap::new()),
            unary: Mutex::new(HashMap::new()),
            self_id,
        }
    }

    /// Queues `env` for `env.to` without waiting. Dropped (and counted) when the
    /// queue is full or the peer is unknown; Raft retries.
    /// A `Snapshot` is sent with its `data` as the bytes (see `send_snapshot`).
    pub fn send(&self, env: Envelope) {
        if let Message::Snapshot { snapshot } = &env.msg {
            let source = Arc::new(snapshot.data.clone());
            return self.send_snapshot(env, source);
        }
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        let Some(peer) = peers.get(&env.to) else {
            bump(&self.shared.counters.dropped_unknown_peer, 1);
            debug!(to = %env.to, "no such peer; envelope dropped");
            return;
        };
        let queue = peer.queue_for(&env.msg);
        if let Err(e) = queue.try_send(env) {
            bump(&self.shared.counters.dropped_queue_full, 1);
            if let TrySendError::Full(env) = e {
                trace!(to = %env.to, group = ?env.msg.group(), "peer queue full; envelope dropped");
            }
        }
    }

    /// Queues the snapshot `env` (its `data` is not used) whose bytes `source`
    /// streams, for the peer's snapshot task. Never blocks; a full queue drops it.
    pub fn send_snapshot(&self, env: Envelope, source: Arc<dyn SnapshotSource>) {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        let Some(peer) = peers.get(&env.to) else {
            bump(&self.shared.counters.dropped_unknown_peer, 1);
            debug!(to = %env.to, "no such peer; snapshot dropped");
            return;
        };
        if peer.snapshots.try_send((env, source)).is_err() {
            bump(&self.shared.counters.dropped_queue_full, 1);
            trace!("snapshot queue full; snapshot dropped");
        }
    }

    /// Sets the peers and their gRPC addresses. New peers get tasks, removed
    /// peers' tasks end, a changed address restarts the peer. Our own id is
    /// ignored. Must be called inside a Tokio runtime.
    pub fn set_peers(&self, addrs: BTreeMap<NodeId, String>) {
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        peers.retain(|id, p| addrs.get(id) == Some(&p.addr));
        for (id, addr) in addrs {
            if id == self.self_id || peers.contains_key(&id) {
                continue;
            }
            match PeerHandle::spawn(&self.shared, &id, &addr) {
                Ok(handle) => {
                    peers.insert(id, handle);
                }
                Err(e) => {
                    warn!(peer = %id, %addr, error = %e, "invalid peer address; peer ignored")
                }
            }
        }
    }

    /// The current peers and their addresses.
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        peers
            .iter()
            .map(|(id, p)| (id.clone(), p.addr.clone()))
            .collect()
    }

    pub fn stats(&self) -> TransportStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TransportStats {
            sent: get(&c.sent),
            dropped_queue_full: get(&c.dropped_queue_full),
            dropped_unknown_peer: get(&c.dropped_unknown_peer),
            dropped_stream_failed: get(&c.dropped_stream_failed),
            stream_failures: get(&c.stream_failures),
            snapshots_sent: get(&c.snapshots_sent),
            snapshot_failures: get(&c.snapshot_failures),
            snapshot_bytes_sent: get(&c.snapshot_bytes_sent),
        }
    }

    // -------------------------------------------------------------- unary RPCs

    /// Forwards a client write to the node at `addr` (the leader).
    pub async fn forward_write(
        &self,
        addr: &str,
        req: &WriteRequest,
    ) -> Result<WriteResult, RpcError> {
        let timeout = match req.timeout_ms {
            Some(ms) if ms > 0 => Duration::from_millis(ms) + self.shared.config.unary_timeout,
            _ => self.shared.config.forward_write_timeout,
        };
        let mut client = self.cluster_client(addr)?;
        let reply = call(
            addr,
            timeout,
            client.forward_write(pb::WriteRequestPb::from(req)),
        )
        .await?;
        from_write_reply(reply)
            .map_err(|e| invalid_reply(addr, e))?
            .map_err(RpcError::Api)
    }

    /// Asks the node at `addr` (the leader) for a ReadIndex.
    pub async fn read_index(&self, addr: &str) -> Result<u64, RpcError> {
        let mut client = self.cluster_client(addr)?;
        let timeout = self.shared.config.unary_timeout;
        let reply = call(addr, timeout, client.read_index(pb::ReadIndexRequest {})).await?;
        from_read_index_reply(reply)
            .map_err(|e| invalid_reply(addr, e))?
            .map_err(RpcError::Api)
    }

    /// Asks the node at `addr` to add us as a learner.
    pub async fn join(&self, addr: &str, req: &JoinRequest) -> Result<JoinOutcome, RpcError> {
        let mut client = self.cluster_client(addr)?;
        let timeout = self.shared.config.unary_timeout;
        let reply = call(addr, timeout, client.join(pb::JoinRequest::from(req))).await?;
        Ok(reply.into())
    }

    /// The status JSON of the node at `addr`.
    pub async fn status(&self, addr: &str) -> Result<String, RpcError> {
        let mut client = self.cluster_client(addr)?;
        let timeout = self.shared.config.unary_timeout;
        Ok(call(addr, timeout, client.status(pb::Empty {})).await?.json)
    }

    /// A client on a cached lazy channel to `addr`. The cache is cleared when it
    /// reaches its bound, so addresses seen once cannot accumulate.
    fn cluster_client(&self, addr: &str) -> Result<ClusterClient<Svc>, RpcError> {
        let mut cache = self.unary.lock().unwrap_or_else(|e| e.into_inner());
        let channel = match cache.get(addr) {
            Some(c) => c.clone(),
            None => {
                let channel = channel(addr, &self.shared.config, None).map_err(|e| {
                    RpcError::InvalidAddress {
                        addr: addr.into(),
                        reason: e,
                    }
                })?;
                if cache.len() >= MAX_UNARY_CHANNELS {
                    cache.clear();
                }
                cache.insert(addr.to_string(), channel.clone());
                channel
            }
        };
        let max = self.shared.config.max_message_bytes;
        Ok(
            ClusterClient::with_interceptor(channel, self.shared.meta.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
    }
}

async fn call<T>(
    addr: &str,
    timeout: Duration,
    fut: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T, RpcError> {
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(RpcError::Timeout {
            addr: addr.into(),
            after: timeout,
        }),
        Ok(Err(s)) => Err(RpcError::Rpc {
            addr: addr.into(),
            code: s.code(),
            message: s.message().into(),
        }),
        Ok(Ok(reply)) => Ok(reply.into_inner()),
    }
}

fn invalid_reply(addr: &str, e: impl std::fmt::Display) -> RpcError {
    RpcError::InvalidReply {
        addr: addr.into(),
        reason: e.to_string(),
    }
}

/// A lazily connecting channel to `host:port` (https when TLS is configured),
/// dialled by [`Dialer`]; `peer` names the node behind it when known.
fn channel(addr: &str, config: &PeersConfig, peer: Option<&str>) -> Result<Channel, String> {
    let dialer = Dialer {
        book: config.addr_book.clone(),
        peer: peer.map(str::to_string),
        resolve_timeout: config.connect_timeout,
        connect_timeout: config.connect_timeout,
    };
    // The whole dial (lookup, fallbacks, TLS handshake) is bounded too.
    let endpoint = endpoint(addr, config)?.connect_timeout(config.connect_timeout * 4);
    Ok(endpoint.connect_with_connector_lazy(dialer))
}

/// `host:port` as an endpoint (https when TLS is configured).
fn endpoint(addr: &str, config: &PeersConfig) -> Result<Endpoint, String> {
    let host_port = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint =
        Endpoint::from_shared(format!("{scheme}://{host_port}")).map_err(|e| e.to_string())?;
    if let Some(tls) = &config.tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|e| e.to_string())?;
    }
    Ok(endpoint
        .http2_keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout)
        .keep_alive_while_idle(true))
}

// ------------------------------------------------------------------ per peer

/// One peer: its queues and the tasks draining them. Dropping it stops the tasks.
struct PeerHandle {
    addr: String,
    election: mpsc::Sender<Envelope>,
    heartbeat: mpsc::Sender<Envelope>,
    replication: mpsc::Sender<Envelope>,
    snapshots: mpsc::Sender<(Envelope, Arc<dyn SnapshotSource>)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl PeerHandle {
    fn spawn(shared: &Arc<Shared>, id: &str, addr: &str) -> Result<Self, String> {
        let control = channel(addr, &shared.config, Some(id))?;
        let bulk = channel(addr, &shared.config, Some(id))?;
        let mut tasks = Vec::new();
        let mut queue = |group, channel: &Channel| {
            let (tx, rx) = mpsc::channel(shared.config.queue_capacity.max(1));
            let stream = StreamTask::new(shared, id, group, channel.clone());
            tasks.push(tokio::spawn(stream.run(rx)));
            tx
        };
        let election = queue(Group::Election, &control);
        let heartbeat = queue(Group::Heartbeat, &control);
        let replication = queue(Group::Replication, &bulk);
        let (snapshots, rx) = mpsc::channel(shared.config.snapshot_queue_capacity.max(1));
        let client = replication_client(shared, bulk);
        tasks.push(tokio::spawn(run_snapshots(
            shared.clone(),
            id.to_string(),
            client,
            rx,
        )));
        Ok(PeerHandle {
            addr: addr.to_string(),
            election,
            heartbeat,
            replication,
            snapshots,
            tasks,
        })
    }

    /// The queue of a message's group (snapshots go to `snapshots`).
    fn queue_for(&self, msg: &Message) -> &mpsc::Sender<Envelope> {
        match msg.group() {
            Group::Election => &self.election,
            Group::Heartbeat => &self.heartbeat,
            Group::Replication => &self.replication,
        }
    }
}

fn replication_client(shared: &Shared, channel: Channel) -> ReplicationClient<Svc> {
    let max = shared.config.max_message_bytes;
    ReplicationClient::with_interceptor(channel, shared.meta.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max)
}

/// How one stream attempt ended.
enum Ended {
    /// The queue closed: the peer was removed.
    QueueClosed,
    /// The RPC failed or the server ended it; `None` when it ended cleanly.
    Rpc(Option<Status>),
}

/// Drains one (peer, group) queue into a client stream, reconnecting as needed.
struct StreamTask {
    shared: Arc<Shared>,
    peer: NodeId,
    group: Group,
    channel: Channel,
}

/// Envelopes buffered between the queue and the HTTP/2 stream.
const PUMP_BUFFER: usize = 16;

impl StreamTask {
    fn new(shared: &Arc<Shared>, peer: &str, group: Group, channel: Channel) -> Self {
        StreamTask {
            shared: shared.clone(),
            peer: peer.to_string(),
            group,
            channel,
        }
    }

    async fn run(self, mut rx: mpsc::Receiver<Envelope>) {
        let config = &self.shared.config;
        let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
        let mut failures = 0u64;
        // Connect only when there is something to send.
        while let Some(first) = rx.recv().await {
            let started = Instant::now();
            let status = match self.pump(first, &mut rx).await {
                Ended::QueueClosed => return,
                Ended::Rpc(status) => status,
            };
            bump(&self.shared.counters.stream_failures, 1);
            if started.elapsed() > config.backoff_max {
                backoff.reset();
                failures = 0;
            }
            self.log_failure(status, failures);
            failures += 1;
            self.discard_queued(&mut rx);
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Empties the queue after a failure, so a peer that is down holds no memory
    /// beyond what queues up during one backoff pause.
    fn discard_queued(&self, rx: &mut mpsc::Receiver<Envelope>) {
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        bump(&self.shared.counters.dropped_stream_failed, n);
    }

    fn log_failure(&self, status: Option<Status>, failures: u64) {
        let (peer, group) = (&self.peer, self.group);
        let reason = status.map_or("ended by the peer".to_string(), |s| format!("{s:?}"));
        if failures == 0 {
            warn!(%peer, ?group, %reason, "stream to peer failed; reconnecting with backoff");
        } else {
            debug!(%peer, ?group, %reason, failures, "stream to peer failed again");
        }
    }

    /// One stream attempt: sends `first`, then everything the queue yields, until
    /// the RPC ends or the queue closes.
    async fn pump(&self, first: Envelope, rx: &mut mpsc::Receiver<Envelope>) -> Ended {
        let (tx, body) = mpsc::channel(PUMP_BUFFER);
        let _ = tx.try_send(pb::Envelope::from(&first));
        bump(&self.shared.counters.sent, 1);
        let mut call = self.open(ReceiverStream::new(body));
        loop {
            let env = tokio::select! {
                biased;
                res = &mut call => return Ended::Rpc(res.err()),
                env = rx.recv() => match env {
                    Some(env) => env,
                    None => return Ended::QueueClosed,
                },
            };
            let env = pb::Envelope::from(&env);
            tokio::select! {
                biased;
                res = &mut call => return Ended::Rpc(res.err()),
                sent = tx.send(env) => if sent.is_err() {
                    return Ended::Rpc(Some(Status::unavailable("request stream closed")));
                },
            }
            bump(&self.shared.counters.sent, 1);
        }
    }

    /// Opens this group's stream RPC with `body` as the request stream.
    fn open(
        &self,
        body: ReceiverStream<pb::Envelope>,
    ) -> BoxFuture<'static, Result<Response<pb::Ack>, Status>> {
        let svc = InterceptedService::new(self.channel.clone(), self.shared.meta.clone());
        let max = self.shared.config.max_message_bytes;
        match self.group {
            Group::Election => {
                let mut c = ElectionClient::new(svc).max_encoding_message_size(max);
                Box::pin(async move { c.stream(body).await })
            }
            Group::Heartbeat => {
                let mut c = HeartbeatClient::new(svc).max_encoding_message_size(max);
                Box::pin(async move { c.stream(body).await })
            }
            Group::Replication => {
                let mut c = ReplicationClient::new(svc).max_encoding_message_size(max);
                Box::pin(async move { c.stream(body).await })
            }
        }
    }
}

/// Sends queued snapshots to one peer, one at a time, each with a few resuming
/// attempts.
async fn run_snapshots(
    shared: Arc<Shared>,
    peer: NodeId,
    mut client: ReplicationClient<Svc>,
    mut rx: mpsc::Receiver<(Envelope, Arc<dyn SnapshotSource>)>,
) {
    let config = &shared.config;
    let opts = SendOptions {
        chunk_bytes: config.snapshot_chunk_bytes,
        stall_timeout: config.snapshot_stall_timeout,
    };
    while let Some((env, source)) = rx.recv().await {
        let Message::Snapshot { snapshot } = &env.msg else {
            continue;
        };
        let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
        for attempt in 1..=config.snapshot_attempts.max(1) {
            match snapshot::send(&mut client, &env, &snapshot.meta, source.clone(), opts).await {
                Ok(bytes) => {
                    bump(&shared.counters.snapshots_sent, 1);
                    bump(&shared.counters.snapshot_bytes_sent, bytes);
                    debug!(%peer, index = snapshot.meta.index, bytes, "snapshot sent");
                    break;
                }
                Err(e) => {
                    bump(&shared.counters.snapshot_failures, 1);
                    warn!(%peer, index = snapshot.meta.index, attempt, error = %e,
                        "snapshot transfer failed");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }
}
