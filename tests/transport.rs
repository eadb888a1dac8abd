//! Transport tests over real sockets: servers on 127.0.0.1:0 with recording
//! handlers, and `Peers` clients sending to them.

use bytes::Bytes;
use futures::future::BoxFuture;
use raftlog::api::{ApiError, WriteConcern, WriteRequest, WriteResult};
use raftlog::core::{Entry, EntryPayload, Envelope, Group, Member, Membership, Message};
use raftlog::core::{Snapshot, SnapshotMeta};
use raftlog::msgstore::MessageStore;
use raftlog::state_machine::{stage_received, Command, SnapshotStream, StateMachine};
use raftlog::transport::{
    serve, ClusterId, InboundHandler, JoinOutcome, JoinRequest, Peers, PeersConfig,
    ReceivedSnapshot, RpcError,
};
use rand::RngCore;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Records what arrives. Large appends are counted, not stored.
struct Recorder {
    envs: Mutex<Vec<Envelope>>,
    big_appends: AtomicU64,
    snapshots: Mutex<Vec<(ReceivedSnapshot, Bytes)>>,
    dir: tempfile::TempDir,
}

impl Recorder {
    fn new() -> Arc<Self> {
        Arc::new(Recorder {
            envs: Mutex::new(Vec::new()),
            big_appends: AtomicU64::new(0),
            snapshots: Mutex::new(Vec::new()),
            dir: tempfile::tempdir().unwrap(),
        })
    }

    fn envs(&self) -> Vec<Envelope> {
        self.envs.lock().unwrap().clone()
    }

    fn in_group(&self, group: Group) -> Vec<Envelope> {
        self.envs()
            .into_iter()
            .filter(|e| e.msg.group() == group)
            .collect()
    }
}

impl InboundHandler for Recorder {
    fn raft(&self, env: Envelope) -> bool {
        if let Message::Append { entries, .. } = &env.msg {
            if entries.iter().map(Entry::size).sum::<usize>() > 64 << 10 {
                self.big_appends.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        self.envs.lock().unwrap().push(env);
        true
    }

    fn forward_write(&self, req: WriteRequest) -> BoxFuture<'_, Result<WriteResult, ApiError>> {
        Box::pin(async move {
            match req.message.as_str() {
                "ok" => Ok(WriteResult {
                    offset: 7,
                    index: 9,
                    term: 2,
                    acks: 2,
                    committed: true,
                    duplicate: req.idempotency_key.is_some(),
                    passed_cursors: vec![],
                }),
                "slow" => Err(ApiError::WriteTimeout {
                    offset: 1,
                    index: 2,
                    acks: 1,
                    w: 3,
                }),
                _ => Err(ApiError::NoLeader {
                    leader_hint: Some("n3".into()),
                }),
            }
        })
    }

    fn read_index(&self) -> BoxFuture<'_, Result<u64, ApiError>> {
        Box::pin(async { Ok(42) })
    }

    fn join(&self, req: JoinRequest) -> BoxFuture<'_, JoinOutcome> {
        Box::pin(async move {
            JoinOutcome {
                ok: req.node_id == "n2",
                leader_id: Some("n1".into()),
                leader_grpc_addr: Some("127.0.0.1:1".into()),
                error: None,
                cluster_id: "c1".into(),
            }
        })
    }

    fn status(&self) -> BoxFuture<'_, String> {
        Box::pin(async { r#"{"node_id":"n1"}"#.to_string() })
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn snapshot_received(&self, snap: ReceivedSnapshot) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let data = tokio::fs::read(&snap.path)
                .await
                .map_err(|e| e.to_string())?;
            self.snapshots
                .lock()
                .unwrap()
                .push((snap, Bytes::from(data)));
            Ok(())
        })
    }
}

struct Node {
    addr: SocketAddr,
    rec: Arc<Recorder>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

async fn start(cluster: &str) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rec = Recorder::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let handler: Arc<dyn InboundHandler> = rec.clone();
    let cluster_id = ClusterId::new(cluster);
    let server = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        serve(listener, handler, cluster_id, shutdown)
            .await
            .unwrap();
    });
    Node {
        addr,
        rec,
        stop: Some(stop),
        server,
    }
}

fn peers_to(self_id: &str, cluster: &ClusterId, to: &[(&str, &Node)]) -> Peers {
    let peers = Peers::new(self_id.into(), cluster.clone(), PeersConfig::default());
    let addrs: BTreeMap<_, _> = to
        .iter()
        .map(|(id, n)| (id.to_string(), n.addr.to_string()))
        .collect();
    peers.set_peers(addrs);
    peers
}

fn env(from: &str, to: &str, msg: Message) -> Envelope {
    Envelope {
        from: from.into(),
        to: to.into(),
        term: 1,
        msg,
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn membership() -> Membership {
    let member = Member {
        grpc_addr: "a:1".into(),
        http_addr: "a:2".into(),
        voter: true,
    };
    Membership {
        members: [("a".to_string(), member)].into_iter().collect(),
    }
}

fn random_bytes(n: usize) -> Bytes {
    let mut data = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut data);
    Bytes::from(data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_groups_arrive_in_order_both_ways() {
    let cluster = ClusterId::new("c1");
    let (a, b) = (start("c1").await, start("c1").await);
    let from_a = peers_to("a", &cluster, &[("b", &b)]);
    let from_b = peers_to("b", &cluster, &[("a", &a)]);
    for i in 1..=100u64 {
        from_a.send(env(
            "a",
            "b",
            Message::Vote {
                last_log_index: i,
                last_log_term: 1,
                transfer: false,
            },
        ));
        from_a.send(env("a", "b", Message::Heartbeat { commit: i, ctx: i }));
        let entries = vec![Entry {
            index: i + 1,
            term: 1,
            payload: EntryPayload::Command(Bytes::from("m")),
        }];
        from_a.send(env(
            "a",
            "b",
            Message::Append {
                prev_index: i,
                prev_term: 1,
                entries,
                commit: i,
            },
        ));
        from_b.send(env(
            "b",
            "a",
            Message::HeartbeatResp {
                ctx: i,
                repairing: false,
                incarnation: 0,
                disk: raftlog::core::DiskState::Healthy,
            },
        ));
    }
    wait_until("300 envelopes at b", || b.rec.envs().len() == 300).await;
    wait_until("100 envelopes at a", || a.rec.envs().len() == 100).await;

    let keys = |group| -> Vec<u64> {
        b.rec
            .in_group(group)
            .iter()
            .map(|e| match &e.msg {
                Message::Vote { last_log_index, .. } => *last_log_index,
                Message::Heartbeat { commit, .. } => *commit,
                Message::Append { prev_index, .. } => *prev_index,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    };
    let expected: Vec<u64> = (1..=100).collect();
    for group in [Group::Election, Group::Heartbeat, Group::Replication] {
        assert_eq!(keys(group), expected, "{group:?} out of order");
    }
    let back: Vec<Message> = a.rec.envs().into_iter().map(|e| e.msg).collect();
    let want: Vec<Message> = (1..=100)
        .map(|ctx| Message::HeartbeatResp {
            ctx,
            repairing: false,
            incarnation: 0,
            disk: raftlog::core::DiskState::Healthy,
        })
        .collect();
    assert_eq!(back, want);
    assert_eq!(from_a.stats().dropped_queue_full, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_flow_while_replication_is_saturated() {
    let cluster = ClusterId::new("c1");
    let b = start("c1").await;
    let peers = Arc::new(peers_to("a", &cluster, &[("b", &b)]));
    let big = random_bytes(256 << 10);
    let flood = {
        let peers = peers.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
            let mut i = 0u64;
            while tokio::time::Instant::now() < deadline {
                let entries = vec![Entry {
                    index: i + 1,
                    term: 1,
                    payload: EntryPayload::Command(big.clone()),
                }];
                peers.send(env(
                    "a",
                    "b",
                    Message::Append {
                        prev_index: i,
                        prev_term: 1,
                        entries,
                        commit: 0,
                    },
                ));
                i += 1;
                if i.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    for ctx in 1..=30u64 {
        peers.send(env("a", "b", Message::Heartbeat { commit: 0, ctx }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The heartbeats arrive while the flood still has a full replication queue.
    wait_until("30 heartbeats", || {
        b.rec.in_group(Group::Heartbeat).len() == 30
    })
    .await;
    let saturated = peers.stats().dropped_queue_full;
    flood.await.unwrap();
    assert!(saturated > 0, "the replication queue never filled up");
    assert!(b.rec.big_appends.load(Ordering::Relaxed) > 0);
    let ctxs: Vec<u64> = b
        .rec
        .in_group(Group::Heartbeat)
        .iter()
        .map(|e| match e.msg {
            Message::Heartbeat { ctx, .. } => ctx,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(ctxs, (1..=30).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_clusters_traffic_is_refused() {
    let b = start("c1").await;
    let addr = b.addr.to_string();
    let wrong = ClusterId::new("c2");
    let peers = peers_to("x", &wrong, &[("b", &b)]);
    let denied = |r: RpcError| {
        matches!(
            r,
            RpcError::Rpc {
                code: tonic::Code::PermissionDenied,
                ..
            }
        )
    };
    assert!(denied(peers.status(&addr).await.unwrap_err()));
    let join = JoinRequest {
        node_id: "n2".into(),
        grpc_addr: "x:1".into(),
        http_addr: "x:2".into(),
    };
    assert!(denied(peers.join(&addr, &join).await.unwrap_err()));
    let write = WriteRequest {
        message: "ok".into(),
        batch: None,
        if_next_offset: None,
        op: None,
        w: None,
        timeout_ms: None,
        idempotency_key: None,
    };
    assert!(denied(
        peers.forward_write(&addr, &write).await.unwrap_err()
    ));
    for ctx in 1..=5 {
        peers.send(env("x", "b", Message::Heartbeat { commit: 0, ctx }));
    }
    wait_until("a failed stream", || peers.stats().stream_failures > 0).await;
    assert!(b.rec.envs().is_empty());

    // Once the client learns the right id, its next stream is admitted.
    wrong.set("c1");
    for ctx in 6..=50 {
        peers.send(env("x", "b", Message::Heartbeat { commit: 0, ctx }));
        tokio::time::sleep(Duration::from_millis(20)).await;
        if !b.rec.envs().is_empty() {
            break;
        }
    }
    wait_until("heartbeats after the id was fixed", || {
        !b.rec.envs().is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joining_node_without_cluster_id_may_join_but_not_write() {
    let b = start("c1").await;
    let addr = b.addr.to_string();
    let unknown = ClusterId::default();
    let peers = Peers::new("n2".into(), unknown.clone(), PeersConfig::default());
    assert_eq!(peers.status(&addr).await.unwrap(), r#"{"node_id":"n1"}"#);
    let join = JoinRequest {
        node_id: "n2".into(),
        grpc_addr: "x:1".into(),
        http_addr: "x:2".into(),
    };
    let outcome = peers.join(&addr, &join).await.unwrap();
    assert!(outcome.ok);
    assert_eq!(outcome.leader_id.as_deref(), Some("n1"));
    assert_eq!(outcome.cluster_id, "c1");
    let write = WriteRequest {
        message: "ok".into(),
        batch: None,
        if_next_offset: None,
        op: None,
        w: None,
        timeout_ms: None,
        idempotency_key: None,
    };
    let err = peers.forward_write(&addr, &write).await.unwrap_err();
    assert!(
        matches!(
            err,
            RpcError::Rpc {
                code: tonic::Code::PermissionDenied,
                ..
            }
        ),
        "{err:?}"
    );
    unknown.set(outcome.cluster_id);
    assert_eq!(peers.forward_write(&addr, &write).await.unwrap().offset, 7);

    // A node that does not know its own cluster id yet accepts anyone.
    let fresh = start("").await;
    let other = Peers::new("z".into(), ClusterId::new("c9"), PeersConfig::default());
    assert_eq!(other.read_index(&fresh.addr.to_string()).await.unwrap(), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_on_the_port_does_not_hurt() {
    let cluster = ClusterId::new("c1");
    let b = start("c1").await;
    let garbage = random_bytes(64 << 10);
    let mut preface_then_garbage = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface_then_garbage.extend_from_slice(&garbage[..4096]);
    for junk in [
        garbage.to_vec(),
        preface_then_garbage,
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
    ] {
        let mut sock = tokio::net::TcpStream::connect(b.addr).await.unwrap();
        let _ = sock.write_all(&junk).await;
        let _ = sock.shutdown().await;
    }
    let peers = peers_to("a", &cluster, &[("b", &b)]);
    assert_eq!(
        peers.status(&b.addr.to_string()).await.unwrap(),
        r#"{"node_id":"n1"}"#
    );
    peers.send(env("a", "b", Message::TimeoutNow));
    wait_until("an envelope after the garbage", || b.rec.envs().len() == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_rpcs_round_trip() {
    let cluster = ClusterId::new("c1");
    let b = start("c1").await;
    let addr = b.addr.to_string();
    let peers = Peers::new("a".into(), cluster, PeersConfig::default());
    let write = |m: &str| WriteRequest {
        message: m.into(),
        batch: None,
        if_next_offset: None,
        op: None,
        w: Some(WriteConcern::Count(2)),
        timeout_ms: Some(1000),
        idempotency_key: Some("k1".into()),
    };
    let ok = peers.forward_write(&addr, &write("ok")).await.unwrap();
    assert_eq!(
        ok,
        WriteResult {
            offset: 7,
            index: 9,
            term: 2,
            acks: 2,
            committed: true,
            duplicate: true,
            passed_cursors: vec![],
        }
    );
    let err = peers
        .forward_write(&addr, &write("slow"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RpcError::Api(ApiError::WriteTimeout {
            offset: 1,
            index: 2,
            acks: 1,
            w: 3
        })
    );
    let err = peers.forward_write(&addr, &write("?")).await.unwrap_err();
    assert_eq!(
        err,
        RpcError::Api(ApiError::NoLeader {
            leader_hint: Some("n3".into())
        })
    );
    assert_eq!(peers.read_index(&addr).await.unwrap(), 42);

    // Unreachable: a timely transport error, not a hang.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap().to_string();
    drop(closed);
    assert!(matches!(
        peers.read_index(&dead).await,
        Err(RpcError::Rpc { .. })
    ));
}

fn snapshot_env(data: Bytes) -> Envelope {
    let meta = SnapshotMeta {
        index: 1000,
        term: 3,
        membership: membership(),
    };
    env(
        "a",
        "b",
        Message::Snapshot {
            snapshot: Snapshot { meta, data },
        },
    )
}

async fn expect_snapshot(node: &Node, sent: &Envelope) {
    wait_until("the snapshot", || {
        !node.rec.snapshots.lock().unwrap().is_empty()
    })
    .await;
    let (snap, data) = node.rec.snapshots.lock().unwrap()[0].clone();
    let Message::Snapshot { snapshot } = &sent.msg else {
        unreachable!()
    };
    assert_eq!(
        (snap.from.as_str(), snap.to.as_str(), snap.term),
        ("a", "b", 1)
    );
    assert_eq!(snap.meta, snapshot.meta);
    assert_eq!(snap.size, snapshot.data.len() as u64);
    assert!(data == snapshot.data, "snapshot data differs");
    let partials = std::fs::read_dir(node.rec.dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")
        })
        .count();
    assert_eq!(partials, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_arrives_intact_in_chunks() {
    let cluster = ClusterId::new("c1");
    let b = start("c1").await;
    let peers = peers_to("a", &cluster, &[("b", &b)]);
    let sent = snapshot_env(random_bytes((5 << 20) + 123));
    peers.send(sent.clone());
    // Heartbeats keep flowing during the transfer.
    peers.send(env("a", "b", Message::Heartbeat { commit: 1, ctx: 1 }));
    expect_snapshot(&b, &sent).await;
    wait_until("the heartbeat", || {
        !b.rec.in_group(Group::Heartbeat).is_empty()
    })
    .await;
    wait_until("the final ack", || peers.stats().snapshots_sent == 1).await;
    let stats = peers.stats();
    assert_eq!((stats.snapshots_sent, stats.snapshot_failures), (1, 0));
    assert_eq!(stats.snapshot_bytes_sent, (5 << 20) + 123);
}

/// The receiver's partial-file name for `snapshot_env` (see `snapshot.rs`).
fn partial_path(node: &Node, total: usize) -> PathBuf {
    node.rec
        .dir
        .path()
        .join(format!("snap-a.3-1000-{total}.partial"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interrupted_snapshot_resumes_at_the_receivers_offset() {
    let cluster = ClusterId::new("c1");
    let b = start("c1").await;
    let data = random_bytes(4 << 20);
    // An earlier transfer left the first 1.5 MiB behind.
    let held = 3 << 19;
    std::fs::write(partial_path(&b, data.len()), &data[..held]).unwrap();
    let peers = peers_to("a", &cluster, &[("b", &b)]);
    let sent = snapshot_env(data.clone());
    peers.send(sent.clone());
    expect_snapshot(&b, &sent).await;
    wait_until("the final ack", || peers.stats().snapshots_sent == 1).await;
    assert_eq!(
        peers.stats().snapshot_bytes_sent,
        (data.len() - held) as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_partial_snapshot_is_detected_and_resent() {
    let cluster = ClusterId::new("c1");
    let b = start("c1").await;
    let data = random_bytes(3 << 20);
    std::fs::write(partial_path(&b, data.len()), random_bytes(1 << 20)).unwrap();
    let peers = peers_to("a", &cluster, &[("b", &b)]);
    let sent = snapshot_env(data.clone());
    peers.send(sent.clone());
    expect_snapshot(&b, &sent).await;
    wait_until("the final ack", || peers.stats().snapshots_sent == 1).await;
    assert_eq!(peers.stats().snapshot_failures, 1);
}

/// A leader's state machine over a message store of small segments: 300 messages,
/// the first 50 trimmed, and a durable snapshot manifest of it.
fn store_leader(dir: &std::path::Path) -> (StateMachine, Bytes) {
    let store = MessageStore::open(dir, 4096, 0).unwrap();
    let mut sm = StateMachine::with_store(16, store);
    let entry = |index, c: Command| Entry {
        index,
        term: 1,
        payload: EntryPayload::Command(c.encode()),
    };
    for i in 1..=300u64 {
        let msg = Bytes::from(format!("message {i} {}", "y".repeat(i as usize % 200)));
        sm.apply(&entry(i, Command::single(Some(format!("k{i}")), msg)));
    }
    let trim = Command::Trim {
        before: 50,
        by_policy: false,
    };
    sm.apply(&entry(301, trim));
    let (manifest, sync) = sm.manifest().unwrap();
    sync.run().unwrap();
    sm.synced();
    (sm, manifest)
}

/// The node's path: a snapshot streamed from a message store's segment files. An
/// earlier transfer left a third behind, so this one resumes there; the received
/// file is staged and installed by a follower with exactly the leader's messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_store_snapshot_resumes_and_installs() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut leader, manifest) = store_leader(&tmp.path().join("leader"));
    let reader = leader.reader(u64::MAX).unwrap();
    let stream = Arc::new(SnapshotStream::new(&manifest, &reader).unwrap());
    let total = stream.len();
    let index = leader.applied_index();

    let cluster = ClusterId::new("c1");
    let b = start("c1").await;
    let held = (total / 3) as usize;
    let mut prefix = vec![0u8; held];
    stream.read_at(0, &mut prefix).unwrap();
    let partial = b
        .rec
        .dir
        .path()
        .join(format!("snap-a.3-{index}-{total}.partial"));
    std::fs::write(&partial, &prefix).unwrap();
    let meta = SnapshotMeta {
        index,
        term: 3,
        membership: membership(),
    };
    let sent = env(
        "a",
        "b",
        Message::Snapshot {
            snapshot: Snapshot {
                meta,
                data: manifest.clone(),
            },
        },
    );
    let peers = peers_to("a", &cluster, &[("b", &b)]);
    peers.send_snapshot(sent, stream.clone());
    wait_until("the streamed snapshot", || {
        !b.rec.snapshots.lock().unwrap().is_empty()
    })
    .await;
    wait_until("the final ack", || peers.stats().snapshots_sent == 1).await;
    assert_eq!(peers.stats().snapshot_bytes_sent, total - held as u64);
    let (snap, _) = b.rec.snapshots.lock().unwrap()[0].clone();
    assert_eq!(snap.size, total);

    let incoming = tmp.path().join("incoming");
    raftlog::durable::create_dir_durable(&incoming).unwrap();
    let staged = stage_received(&snap.path, index, &incoming).unwrap();
    assert_eq!(staged, manifest, "only the manifest goes on to Raft");
    let mut follower = StateMachine::with_store(
        16,
        MessageStore::open(&tmp.path().join("f"), 4096, 0).unwrap(),
    );
    follower.set_install_dir(incoming);
    follower.install_received(staged).unwrap();
    assert_eq!((follower.first_offset(), follower.next_offset()), (50, 300));
    assert_eq!(
        follower.read(0, 1000).unwrap(),
        leader.read(0, 1000).unwrap()
    );
    assert_eq!(follower.lookup_key("k300"), leader.lookup_key("k300"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_and_removed_peers_drop_messages() {
    let cluster = ClusterId::new("c1");
    let b = start("c1").await;
    let peers = peers_to("a", &cluster, &[("b", &b), ("a", &b)]);
    assert_eq!(peers.peers().len(), 1, "our own id is not a peer");
    peers.send(env("a", "nobody", Message::TimeoutNow));
    assert_eq!(peers.stats().dropped_unknown_peer, 1);
    peers.set_peers(BTreeMap::new());
    peers.send(env("a", "b", Message::TimeoutNow));
    assert_eq!(peers.stats().dropped_unknown_peer, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_ends_open_streams() {
    let cluster = ClusterId::new("c1");
    let mut b = start("c1").await;
    let peers = peers_to("a", &cluster, &[("b", &b)]);
    peers.send(env("a", "b", Message::Heartbeat { commit: 0, ctx: 1 }));
    peers.send(env("a", "b", Message::TimeoutNow));
    wait_until("streams open", || b.rec.envs().len() == 2).await;
    b.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), &mut b.server)
        .await
        .expect("serve did not return after shutdown")
        .unwrap();
}
