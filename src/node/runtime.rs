//! `run`: start one node from its config and stop it gracefully.
//!
//! Order: bind both ports (a port in use fails at once), open the data directory
//! (bootstrap manager), start the gRPC server (so a leader can reach us while we
//! join), start the controller, join if needed (bootstrap manager), serve HTTP, then wait for SIGTERM or
//! SIGINT and stop: leadership handed over, waiting requests answered, servers
//! drained, exit 0.

use super::bootstrap;
use super::controller::{Controller, Observability};
use super::faults::{FaultSwitch, FaultyOutbound};
use super::handle::NodeHandle;
use super::health::Health;
use super::interface::{ControllerConfig, MessagesConfig, Shared};
use super::security::Security;
use crate::config::Config;
use crate::core::RaftNode;
use crate::http::{router, HttpLimits};
use crate::metrics::Metrics;
use crate::transport::{ClusterId, InboundHandler, Peers, ServerConfig};
use crate::wal::LogStore;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// Channel capacities: commands from clients, messages from peers.
const CMD_QUEUE: usize = 8192;
const RAFT_QUEUE: usize = 8192;

async fn bind(addr: &str, key: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{key}: cannot listen on {addr}: {e}"))
}

fn controller_config(cfg: &Config, tick: Duration) -> ControllerConfig {
    ControllerConfig {
        tick,
        default_w: cfg.write.default_w.into(),
        write_timeout: cfg.write_timeout(),
        default_read_limit: cfg.read.default_limit,
        max_read_limit: cfg.read.max_limit,
        max_wait: Duration::from_millis(cfg.read.max_wait_ms),
        heartbeat: Duration::from_millis(cfg.raft.heartbeat_interval_ms),
        snapshot_every: cfg.snapshot.every_entries,
        snapshot_every_bytes: cfg.snapshot.every_bytes,
        idempotency_window: cfg.write.idempotency_window,
        retention: crate::state_machine::Retention {
            max_messages: cfg.retention.max_messages,
            max_bytes: cfg.retention.max_bytes,
            max_age_s: cfg.retention.max_age_s,
        },
        max_cursors: cfg.cursors.max_cursors,
        messages: Some(MessagesConfig {
            dir: cfg.data_dir.join("messages"),
            install_dir: cfg.data_dir.join("snap-incoming"),
            segment_bytes: cfg.wal.segment_bytes,
            cache_bytes: cfg.read.cache_bytes,
        }),
        inline_persist_max_bytes: INLINE_PERSIST_MAX_BYTES,
    }
}

/// The catch-up tail a node keeps after each snapshot (`core::log`): as many
/// entries as etcd keeps, but at most half a snapshot interval
/// (`snapshot.every_entries`), so a follower that missed more than that, or a
/// new node, still gets a snapshot; in at most 8 MiB, on top of the entries
/// since the snapshot (`snapshot.every_bytes`).
const CATCHUP_ENTRIES: u64 = 5_000;
const CATCHUP_BYTES: usize = 8 << 20;

/// A follower's `Ready` up to this size is persisted on its controller's
/// thread (while fsyncs are fast): one write of up to 64 KiB costs less than
/// the two thread hand-offs it saves.
const INLINE_PERSIST_MAX_BYTES: usize = 64 << 10;

/// Run the node until SIGTERM/SIGINT. `Err` carries one line for the operator.
pub async fn run(cfg: Config) -> Result<(), String> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    run_until(cfg, stop_rx).await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// Run the node until `stop` turns true.
pub async fn run_until(cfg: Config, stop: watch::Receiver<bool>) -> Result<(), String> {
    let http_listener = bind(&cfg.http_addr, "http_addr").await?;
    let grpc_listener = bind(&cfg.grpc_addr, "grpc_addr").await?;
    let security = Security::load(&cfg)?;
    let bootstrap::Opened {
        mut store,
        mode,
        cluster_id,
        repairing,
    } = bootstrap::open(&cfg)?;
    tracing::info!(node_id = %cfg.node_id, mode = ?mode, http = %cfg.http_addr, grpc = %cfg.grpc_addr, "starting");
    let cluster_id = ClusterId::new(cluster_id.unwrap_or_default());
    let peers_config = security.peers_config(&cfg);
    let addr_book = peers_config.addr_book.clone();
    let peers = Arc::new(Peers::new(
        cfg.node_id.clone(),
        cluster_id.clone(),
        peers_config,
    ));
    let (cmd_tx, cmd_rx) = mpsc::channel(CMD_QUEUE);
    let (raft_tx, raft_rx) = mpsc::channel(RAFT_QUEUE);
    let metrics = Arc::new(Metrics::new());
    let shared = Arc::new(Shared {
        follow_retries: metrics.follow_retries.clone(),
        ..Shared::default()
    });
    let handle = NodeHandle {
        tx: cmd_tx,
        raft_tx,
        shared: shared.clone(),
        peers: peers.clone(),
        cluster_id: cluster_id.clone(),
        snapshot_dir: cfg.data_dir.join("snap-incoming"),
        me: (cfg.node_id.clone(), cfg.advertised_grpc_addr().to_string()),
        follow: super::handle::FollowConfig::new(
            cfg.write_timeout(),
            Duration::from_millis(cfg.raft.election_timeout_max_ms),
        ),
    };
    crate::durable::create_dir_durable(&handle.snapshot_dir)
        .map_err(|e| format!("data_dir: {e}"))?;

    // The gRPC server outlives the controller's shutdown: a leader handing over
    // must still hear its successor.
    let (grpc_stop_tx, grpc_stop_rx) = watch::channel(false);
    let grpc_stop = wait_stopped(grpc_stop_rx);
    let inbound: Arc<dyn InboundHandler> = Arc::new(handle.clone());
    let grpc = tokio::spawn(crate::transport::serve_with_config(
        grpc_listener,
        inbound,
        cluster_id.clone(),
        ServerConfig {
            addr_book: Some(addr_book),
            ..security.grpc_config(&cfg)?
        },
        grpc_stop,
    ));

    let tick = Duration::from_millis((cfg.raft.heartbeat_interval_ms / 2).clamp(1, 50));
    let rec = store.take_recovered();
    let snap_meta = rec.snapshot.map(|s| s.meta).unwrap_or_default();
    let mut rc = cfg.raft.core_config(&cfg.node_id, tick);
    rc.catchup_entries = CATCHUP_ENTRIES.min(cfg.snapshot.every_entries / 2);
    rc.catchup_bytes = CATCHUP_BYTES;
    // Durable before the node answers anyone (`crate::incarnation`).
    rc.incarnation = crate::incarnation::next(&cfg.data_dir)
        .map_err(|e| format!("data_dir: cannot write the incarnation file: {e}"))?;
    let mut raft = RaftNode::new(
        rc,
        rec.hard_state,
        snap_meta,
        rec.entries,
        rand::thread_rng().gen(),
    );
    if repairing.is_some() {
        raft.start_repairing();
    }
    let faults = cfg.debug.fault_injection.then(FaultSwitch::default);
    if faults.is_some() {
        tracing::warn!(
            "fault injection is enabled ([debug] fault_injection): for tests and drills only"
        );
    }
    let obs = Observability {
        metrics: metrics.clone(),
        health: Health::new(
            cfg.health.clone(),
            cfg.data_dir.clone(),
            Some(store.files()),
        ),
        faults: faults.clone(),
    };
    let out = FaultyOutbound {
        inner: peers.clone(),
        faults: faults.clone(),
    };
    let mut controller =
        Controller::new(raft, store, out, controller_config(&cfg, tick), shared, obs)?;
    controller.keep_hardstate_file(cfg.data_dir.clone());
    if let Some(peers) = repairing {
        metrics.repairs_started.inc();
        controller.start_repairing_with(peers);
    }
    // A node that is not (yet) in the membership it knows asks to join; the
    // controller runs meanwhile, so the node answers (503) while it waits.
    let member = controller.is_member();
    let ctl = tokio::spawn(controller.run(raft_rx, cmd_rx));
    if bootstrap::must_join(&cfg, &mode, member) {
        let joiner = bootstrap::Joiner {
            cfg: cfg.clone(),
            peers: peers.clone(),
            cluster_id: cluster_id.clone(),
            controller: handle.tx.clone(),
        };
        joiner.spawn(stop.clone());
    }

    let node = Arc::new(handle.clone());
    let app = router(node.clone(), HttpLimits::from_config(&cfg))
        .merge(crate::http::stream::router(
            node,
            crate::http::stream::StreamLimits::from_config(&cfg),
        ))
        .merge(crate::http::ui::router());
    let app = crate::http::ops::with_ops(app, metrics, faults, security.tokens());
    let http_stop = wait_stopped(stop.clone());
    let http = tokio::spawn(crate::http::serve::serve(
        http_listener,
        app,
        security.http_config(&cfg)?,
        http_stop,
    ));

    // Wait for the stop signal, or for the controller to die (fatal storage error).
    let mut ctl = ctl;
    let result = tokio::select! {
        r = &mut ctl => Some(r),
        _ = wait_stopped(stop) => None,
    };
    let result = match result {
        Some(r) => r.map_err(|e| e.to_string())?,
        None => {
            handle.shutdown().await;
            let _ = tokio::time::timeout(Duration::from_secs(3), ctl).await;
            Ok(())
        }
    };
    let _ = grpc_stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), http).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), grpc).await;
    tracing::info!("stopped");
    result
}

async fn wait_stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
