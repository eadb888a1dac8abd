//! The gRPC server: thin adapters from the four services to an [`InboundHandler`].
//!
//! Invariants:
//! - every RPC passes the cluster-id check before anything else happens;
//! - an inbound Raft envelope is pushed to the handler without waiting; the stream
//!   reader never blocks on the controller, so one slow group cannot stall another;
//! - on shutdown every long-lived stream (and snapshot transfer) ends by itself, so
//!   the graceful shutdown cannot hang on a peer that keeps its stream open;
//! - with TLS, every RPC comes on a connection whose client certificate the
//!   cluster CA signed; with node-id verification the certificate must also name
//!   the node the request claims to come from (`x-raftlog-from`, the envelopes'
//!   `from`, the joining node's id, the snapshot sender);
//! - limits: decoded message size, connections, TLS handshake time, concurrent
//!   RPCs per connection, HTTP/2 streams per connection, snapshot size, joins per
//!   second per source address; dead connections are found by HTTP/2 keepalive.

use super::conn::{incoming, PeerInfo};
use super::convert::{read_index_reply, write_reply};
use super::dial::AddrBook;
use super::pb;
use super::pb::cluster_server::{Cluster, ClusterServer};
use super::pb::election_server::{Election, ElectionServer};
use super::pb::heartbeat_server::{Heartbeat, HeartbeatServer};
use super::pb::replication_server::{Replication, ReplicationServer};
use super::ratelimit::RateLimiter;
use super::snapshot::{self, next_or_stop, Transfers};
use super::{ClusterId, InboundHandler, CLUSTER_HEADER, FROM_HEADER};
use crate::api::WriteRequest;
use crate::core::{Envelope, Group};
use crate::tls::{verify_node_id, Acceptor};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, trace, warn};

/// Server limits and timeouts.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest gRPC message accepted (an append batch, a snapshot chunk).
    pub max_decoding_message_size: usize,
    /// Open connections at once; further connections wait in the listen backlog.
    pub max_connections: usize,
    /// RPCs served at once on one connection (each long-lived stream holds one).
    pub concurrency_limit_per_connection: usize,
    /// HTTP/2 streams a peer may open at once on one connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 ping interval; a peer that does not answer within the timeout is gone.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Largest snapshot accepted through `InstallSnapshot`.
    pub max_snapshot_bytes: u64,
    /// TLS (mutual: the acceptor requires a client certificate); `None` = plaintext.
    pub tls: Option<Acceptor>,
    /// With TLS: a client certificate must name the node id the request claims.
    pub verify_node_id: bool,
    /// Join requests per second (sustained and burst) from one source address.
    pub join_per_second: u32,
    pub join_burst: u32,
    /// Records where each peer connects from (after the cluster and node-id
    /// checks), for the dialler to fall back on when name lookups stall.
    pub addr_book: Option<Arc<AddrBook>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_decoding_message_size: 64 << 20,
            max_connections: 1024,
            concurrency_limit_per_connection: 64,
            max_concurrent_streams: 128,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            max_snapshot_bytes: 64 << 30,
            tls: None,
            verify_node_id: true,
            join_per_second: 2,
            join_burst: 10,
            addr_book: None,
        }
    }
}

/// Serves the control plane on `listener` until `shutdown` completes, with the
/// default [`ServerConfig`].
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn InboundHandler>,
    cluster_id: ClusterId,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_with_config(
        listener,
        handler,
        cluster_id,
        ServerConfig::default(),
        shutdown,
    )
    .await
}

/// Serves the control plane on `listener` until `shutdown` completes.
pub async fn serve_with_config(
    listener: TcpListener,
    handler: Arc<dyn InboundHandler>,
    cluster_id: ClusterId,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (stop_tx, stop) = watch::channel(false);
    let shared = Arc::new(Shared {
        handler,
        cluster_id,
        max_snapshot_bytes: config.max_snapshot_bytes,
        transfers: Transfers::default(),
        stop,
        verify_node_id: config.tls.is_some() && config.verify_node_id,
        joins: RateLimiter::new(config.join_per_second, config.join_burst),
        addr_book: config.addr_book.clone(),
    });
    let max = config.max_decoding_message_size;
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    Server::builder()
        .concurrency_limit_per_connection(config.concurrency_limit_per_connection)
        .max_concurrent_streams(Some(config.max_concurrent_streams))
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .add_service(
            ElectionServer::new(ElectionSvc(shared.clone())).max_decoding_message_size(max),
        )
        .add_service(
            HeartbeatServer::new(HeartbeatSvc(shared.clone())).max_decoding_message_size(max),
        )
        .add_service(
            ReplicationServer::new(ReplicationSvc(shared.clone())).max_decoding_message_size(max),
        )
        .add_service(ClusterServer::new(ClusterSvc(shared)).max_decoding_message_size(max))
        .serve_with_incoming_shutdown(
            incoming(listener, config.max_connections, config.tls),
            signal,
        )
        .await
}

/// State every service shares.
pub(crate) struct Shared {
    pub(crate) handler: Arc<dyn InboundHandler>,
    cluster_id: ClusterId,
    pub(crate) max_snapshot_bytes: u64,
    pub(crate) transfers: Transfers,
    /// Becomes true when the server shuts down; long-lived streams end then.
    pub(crate) stop: watch::Receiver<bool>,
    /// Requests must come with a certificate naming their sender (TLS only).
    verify_node_id: bool,
    joins: RateLimiter,
    addr_book: Option<Arc<AddrBook>>,
}

impl snapshot::Receiving for Shared {
    fn handler(&self) -> &dyn InboundHandler {
        &*self.handler
    }
    fn stop(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }
    fn max_snapshot_bytes(&self) -> u64 {
        self.max_snapshot_bytes
    }
    fn transfers(&self) -> &Transfers {
        &self.transfers
    }
}

/// Which callers may pass the cluster check.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// Only callers with our cluster id (or anyone while ours is unknown).
    SameCluster,
    /// Also callers that do not know any cluster id yet (a node that is joining).
    SameOrUnknown,
}

/// Who sent a request, as far as the server could establish it.
pub(crate) struct Caller {
    /// The node id the request claims (`x-raftlog-from`; empty when absent).
    pub(crate) from: String,
    /// True when a CA-signed certificate naming `from` came with the request.
    pub(crate) verified: bool,
}

impl Shared {
    /// The checks every RPC starts with: the cluster id, then (with TLS node-id
    /// verification) that the client certificate names the claimed sender.
    #[allow(clippy::result_large_err)] // tonic's error type, handed straight back to tonic
    fn check<T>(&self, req: &Request<T>, admit: Admit) -> Result<Caller, Status> {
        let md = req.metadata();
        let from = header(md, FROM_HEADER);
        self.check_cluster(md, admit, &from)?;
        let verified = self.verify_node_id;
        if verified {
            let certs = req
                .extensions()
                .get::<PeerInfo>()
                .and_then(|p| p.certs.clone())
                .unwrap_or_default();
            if let Err(e) = verify_node_id(&certs, &from) {
                let remote = remote_addr(req);
                warn!(%from, ?remote, error = %e, "refusing a peer whose certificate does not name it");
                return Err(Status::permission_denied(e));
            }
        }
        if let (Some(book), Some(addr)) = (&self.addr_book, remote_addr(req)) {
            book.learn(&from, addr.ip());
        }
        Ok(Caller { from, verified })
    }

    #[allow(clippy::result_large_err)]
    fn check_cluster(&self, md: &MetadataMap, admit: Admit, from: &str) -> Result<(), Status> {
        let own = self.cluster_id.get();
        let theirs = header(md, CLUSTER_HEADER);
        let unknown_ok = theirs.is_empty() && admit == Admit::SameOrUnknown;
        if own.is_empty() || theirs == own || unknown_ok {
            return Ok(());
        }
        warn!(%from, their_cluster = %theirs, our_cluster = %own,
            "refusing control-plane traffic from another cluster");
        Err(Status::permission_denied(format!(
            "cluster id mismatch: this node belongs to cluster {own:?}, the request to {theirs:?}"
        )))
    }

    /// Takes a join token for the request's source address.
    #[allow(clippy::result_large_err)]
    fn admit_join<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(addr) = remote_addr(req) else {
            return Ok(());
        };
        if self.joins.allow(addr.ip(), Instant::now()) {
            return Ok(());
        }
        debug!(%addr, "join rate limit reached");
        Err(Status::resource_exhausted(format!(
            "too many join requests from {}; retry later",
            addr.ip()
        )))
    }

    /// Hands one inbound envelope to the controller, never waiting.
    fn deliver(&self, group: Group, pb: pb::Envelope, caller: &Caller) {
        let from = &caller.from;
        match Envelope::try_from(pb) {
            Err(e) => warn!(%from, error = %e, "dropping invalid envelope"),
            Ok(env) if caller.verified && env.from != *from => {
                warn!(%from, claimed = %env.from, "dropping an envelope claiming another sender")
            }
            Ok(env) if env.msg.group() != group => {
                debug!(%from, ?group, msg = ?env.msg.group(), "dropping envelope sent on the wrong stream")
            }
            Ok(env) => {
                if !self.handler.raft(env) {
                    trace!(%from, ?group, "controller queue full; envelope dropped");
                }
            }
        }
    }

    /// Reads one group's envelope stream until the peer closes it or we shut down.
    async fn receive_stream(
        &self,
        group: Group,
        req: Request<Streaming<pb::Envelope>>,
    ) -> Result<Response<pb::Ack>, Status> {
        let caller = self.check(&req, Admit::SameCluster)?;
        let mut stream = req.into_inner();
        let mut stop = self.stop.clone();
        let mut received = 0;
        while let Some(env) = next_or_stop(&mut stream, &mut stop).await? {
            received += 1;
            self.deliver(group, env, &caller);
        }
        Ok(Response::new(pb::Ack { received }))
    }
}

/// A metadata value as text; empty when absent or not ASCII.
pub(crate) fn header(md: &MetadataMap, key: &str) -> String {
    md.get(key)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

// ------------------------------------------------------------------ services

struct ElectionSvc(Arc<Shared>);
struct HeartbeatSvc(Arc<Shared>);
struct ReplicationSvc(Arc<Shared>);
struct ClusterSvc(Arc<Shared>);

#[tonic::async_trait]
impl Election for ElectionSvc {
    async fn stream(
        &self,
        req: Request<Streaming<pb::Envelope>>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.0.receive_stream(Group::Election, req).await
    }
}

#[tonic::async_trait]
impl Heartbeat for HeartbeatSvc {
    async fn stream(
        &self,
        req: Request<Streaming<pb::Envelope>>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.0.receive_stream(Group::Heartbeat, req).await
    }
}

#[tonic::async_trait]
impl Replication for ReplicationSvc {
    async fn stream(
        &self,
        req: Request<Streaming<pb::Envelope>>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.0.receive_stream(Group::Replication, req).await
    }

    type InstallSnapshotStream = ReceiverStream<Result<pb::SnapshotAck, Status>>;

    async fn install_snapshot(
        &self,
        req: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<Self::InstallSnapshotStream>, Status> {
        let caller = self.0.check(&req, Admit::SameCluster)?;
        let sender = caller.verified.then_some(caller.from);
        let acks = snapshot::receive(self.0.clone(), req.into_inner(), sender);
        Ok(Response::new(acks))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterSvc {
    async fn forward_write(
        &self,
        req: Request<pb::WriteRequestPb>,
    ) -> Result<Response<pb::WriteReplyPb>, Status> {
        self.0.check(&req, Admit::SameCluster)?;
        let write = WriteRequest::try_from(req.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let res = self.0.handler.forward_write(write).await;
        Ok(Response::new(write_reply(res)))
    }

    async fn read_index(
        &self,
        req: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexReply>, Status> {
        self.0.check(&req, Admit::SameCluster)?;
        let res = self.0.handler.read_index().await;
        Ok(Response::new(read_index_reply(res)))
    }

    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        let caller = self.0.check(&req, Admit::SameOrUnknown)?;
        self.0.admit_join(&req)?;
        let join = super::JoinRequest::try_from(req.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if caller.verified && join.node_id != caller.from {
            warn!(from = %caller.from, joining = %join.node_id, "refusing a join for another node id");
            return Err(Status::permission_denied(format!(
                "a certificate of {:?} cannot join node {:?}",
                caller.from, join.node_id
            )));
        }
        let outcome = self.0.handler.join(join).await;
        Ok(Response::new(outcome.into()))
    }

    async fn status(&self, req: Request<pb::Empty>) -> Result<Response<pb::StatusReply>, Status> {
        self.0.check(&req, Admit::SameOrUnknown)?;
        let json = self.0.handler.status().await;
        Ok(Response::new(pb::StatusReply { json }))
    }
}

/// The source address of a request's connection.
fn remote_addr<T>(req: &Request<T>) -> Option<std::net::SocketAddr> {
    req.extensions()
        .get::<PeerInfo>()
        .and_then(|p| p.remote_addr)
}
