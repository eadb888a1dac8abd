//! Thin adapters between the outside and the controller: `NodeHandle` serves the
//! HTTP layer (`NodeApi`), `Inbound` serves the gRPC server (`InboundHandler`).
//! They send a command over a bounded channel and await a oneshot reply; the only
//! logic here is routing: a follower forwards writes and ReadIndex requests to the
//! leader named by the controller's hint, following it across leader changes
//! (`follow`).

use crate::api::*;
use crate::core::{Envelope, Message, Snapshot};
use crate::node::interface::{Cmd, Shared};
use crate::transport::{InboundHandler, JoinOutcome, JoinRequest, Peers, ReceivedSnapshot};
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

mod follow;
pub use follow::FollowConfig;

#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) tx: mpsc::Sender<Cmd>,
    pub(crate) raft_tx: mpsc::Sender<Envelope>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) peers: Arc<Peers>,
    pub(crate) cluster_id: crate::transport::ClusterId,
    pub(crate) snapshot_dir: PathBuf,
    /// Our id and advertised gRPC address (a join reply names the leader).
    pub(crate) me: (String, String),
    /// How forwarded writes and reads follow the leader.
    pub(crate) follow: follow::FollowConfig,
}

impl NodeHandle {
    /// Send a command and await its reply.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Cmd,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| ApiError::ShuttingDown)?;
        rx.await.map_err(|_| ApiError::ShuttingDown)
    }

    pub(super) async fn write_local(&self, req: WriteRequest) -> Result<WriteResult, ApiError> {
        self.ask(|reply| Cmd::Write { req, reply }).await?
    }

    async fn read_at(&self, req: ReadRequest, min_index: u64) -> Result<ReadResult, ApiError> {
        let raw = self
            .ask(|reply| Cmd::Read {
                req,
                min_index,
                reply,
            })
            .await??;
        Ok(raw.into_result())
    }

    pub(super) async fn read_index_local(&self) -> Result<u64, ApiError> {
        self.ask(|reply| Cmd::ReadIndex { reply }).await?
    }

    pub async fn status_now(&self) -> Result<Status, ApiError> {
        self.ask(|reply| Cmd::Status { reply }).await
    }

    pub async fn transfer(&self, to: Option<String>) -> Result<String, ApiError> {
        self.ask(|reply| Cmd::Transfer { to, reply }).await?
    }

    /// Add/update (`Some`) or remove (`None`) a member; returns the change's index.
    pub async fn change_member(
        &self,
        node_id: String,
        member: Option<crate::core::Member>,
    ) -> Result<u64, ApiError> {
        let res = self
            .ask(|reply| Cmd::ChangeMember {
                node_id,
                member,
                reply,
            })
            .await?;
        res.map(|r| r.index)
    }

    /// Admin calls are not forwarded: replace the internal gRPC hint by the
    /// leader's HTTP address, so the operator (or script) retries there.
    async fn http_hint<T>(&self, res: Result<T, ApiError>) -> Result<T, ApiError> {
        let Err(ApiError::NoLeader {
            leader_hint: Some(_),
        }) = &res
        else {
            return res;
        };
        let status = self.status_now().await?;
        let leader = status.leader_id.as_deref();
        let http = status
            .members
            .iter()
            .find(|m| Some(m.node_id.as_str()) == leader);
        Err(ApiError::NoLeader {
            leader_hint: http.map(|m| m.http_addr.clone()),
        })
    }

    /// Graceful stop: hand leadership over, fail what still waits, stop the loop.
    pub async fn shutdown(&self) {
        let _ = self.ask(|reply| Cmd::Shutdown { reply }).await;
    }
}

impl NodeApi for NodeHandle {
    async fn write(&self, req: WriteRequest) -> Result<WriteResult, ApiError> {
        match self.write_local(req.clone()).await {
            Err(ApiError::NoLeader {
                leader_hint: Some(addr),
            }) => follow::forward_write(self, req, addr).await,
            other => other,
        }
    }

    async fn read(&self, req: ReadRequest) -> Result<ReadResult, ApiError> {
        let min_index = match req.consistency {
            Consistency::Local => 0,
            Consistency::Linearizable => follow::read_index(self).await?,
        };
        self.read_at(req, min_index).await
    }

    async fn status(&self) -> Result<Status, ApiError> {
        self.status_now().await
    }

    async fn cursors(&self) -> Result<Vec<(String, u64)>, ApiError> {
        // An empty linearizable read is the barrier: this node has then
        // applied every change acknowledged before the call.
        let barrier = ReadRequest {
            from: u64::MAX,
            limit: Some(1),
            consistency: Consistency::Linearizable,
            wait_ms: None,
        };
        self.read(barrier).await?;
        self.ask(|reply| Cmd::Cursors { reply }).await
    }

    async fn change_member(
        &self,
        node_id: String,
        member: Option<MemberSpec>,
    ) -> Result<u64, ApiError> {
        let member = member.map(|m| crate::core::Member {
            grpc_addr: m.grpc_addr,
            http_addr: m.http_addr,
            voter: m.voter,
        });
        let res = NodeHandle::change_member(self, node_id, member).await;
        self.http_hint(res).await
    }

    async fn transfer_leadership(&self, to: Option<String>) -> Result<String, ApiError> {
        let res = self.transfer(to).await;
        self.http_hint(res).await
    }

    fn applied_offsets(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.shared.applied_offset.subscribe())
    }

    async fn stopped(&self) {
        self.tx.closed().await
    }

    fn voter_count(&self) -> usize {
        // A node that does not know the membership yet lets the leader judge `w`.
        match self.shared.voters.load(Ordering::Relaxed) {
            0 => usize::MAX,
            n => n,
        }
    }
}

/// Strip the internal forwarding hint: a forwarded request is not forwarded again.
fn no_hint<T>(r: Result<T, ApiError>) -> Result<T, ApiError> {
    r.map_err(|e| match e {
        ApiError::NoLeader { .. } => ApiError::NoLeader { leader_hint: None },
        e => e,
    })
}

impl InboundHandler for NodeHandle {
    fn raft(&self, env: Envelope) -> bool {
        self.raft_tx.try_send(env).is_ok()
    }

    fn forward_write(&self, req: WriteRequest) -> BoxFuture<'_, Result<WriteResult, ApiError>> {
        Box::pin(async move { no_hint(self.write_local(req).await) })
    }

    fn read_index(&self) -> BoxFuture<'_, Result<u64, ApiError>> {
        Box::pin(async move { no_hint(self.read_index_local().await) })
    }

    fn join(&self, req: JoinRequest) -> BoxFuture<'_, JoinOutcome> {
        Box::pin(async move {
            let res = self
                .ask(|reply| Cmd::Join {
                    node_id: req.node_id,
                    grpc_addr: req.grpc_addr,
                    http_addr: req.http_addr,
                    reply,
                })
                .await;
            let cluster_id = self.cluster_id.get();
            match res {
                Ok(Ok(())) => JoinOutcome {
                    ok: true,
                    leader_id: Some(self.me.0.clone()),
                    leader_grpc_addr: Some(self.me.1.clone()),
                    cluster_id,
                    error: None,
                },
                Ok(Err(e)) => JoinOutcome {
                    ok: false,
                    leader_id: e.leader.as_ref().map(|l| l.0.clone()),
                    leader_grpc_addr: e.leader.map(|l| l.1),
                    error: Some(e.message),
                    cluster_id,
                },
                Err(e) => JoinOutcome {
                    ok: false,
                    error: Some(e.to_string()),
                    cluster_id,
                    ..Default::default()
                },
            }
        })
    }

    fn status(&self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            match self.status_now().await {
                Ok(s) => serde_json::to_string(&s).unwrap_or_default(),
                Err(e) => serde_json::json!({"error": e.to_string()}).to_string(),
            }
        })
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.snapshot_dir.clone()
    }

    fn snapshot_received(&self, snap: ReceivedSnapshot) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            // The records become a staged segment; only the manifest goes on to
            // Raft and the WAL (see `state_machine::stream`).
            let (path, index, dir) = (
                snap.path.clone(),
                snap.meta.index,
                self.snapshot_dir.clone(),
            );
            let started = std::time::Instant::now();
            let data = tokio::task::spawn_blocking(move || {
                crate::state_machine::stage_received(&path, index, &dir)
            })
            .await
            .map_err(|e| format!("staging the snapshot: {e}"))??;
            let ms = started.elapsed().as_millis() as u64;
            tracing::info!(index, ms, "snapshot checked and staged for install");
            let snapshot = Snapshot {
                meta: snap.meta,
                data,
            };
            let env = Envelope {
                from: snap.from,
                to: snap.to,
                term: snap.term,
                msg: Message::Snapshot { snapshot },
            };
            self.raft_tx
                .send(env)
                .await
                .map_err(|_| "node is shutting down".to_string())
        })
    }
}

impl crate::node::interface::Outbound for Peers {
    fn send(&self, env: Envelope) {
        Peers::send(self, env)
    }
    fn send_snapshot(&self, env: Envelope, source: Arc<dyn crate::transport::SnapshotSource>) {
        Peers::send_snapshot(self, env, source)
    }
    fn set_peers(&self, peers: std::collections::BTreeMap<crate::core::NodeId, String>) {
        Peers::set_peers(self, peers)
    }

    fn dropped(&self) -> u64 {
        let s = self.stats();
        s.dropped_queue_full + s.dropped_unknown_peer + s.dropped_stream_failed
    }
}
