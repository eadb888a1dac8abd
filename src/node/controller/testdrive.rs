//! A deterministic driver for the real [`Controller`] (unit tests only).
//!
//! Why: the controller's own ordering (what leaves before and after an fsync,
//! the stalled-`Ready` retry, the commit-without-fsync path, the write waiters)
//! used to be covered only by tests of real processes, and the simulator
//! checks its own copy of the `Ready` handling. Here the very controller runs,
//! event by event, with:
//! - [`Disk`]: an in-memory [`MemStore`] behind a [`LogStore`] wrapper whose
//!   `sync` can be held (to look at the node while an fsync is in progress),
//!   refused with `ENOSPC` (a full disk), or killed (the process died);
//! - [`Wire`]: a recording [`Outbound`] that notes, with every message, the
//!   store's *durable* hard state and last index at the moment it left;
//! - no clock of its own: a tick is an event the test feeds; the tests run on
//!   a paused tokio runtime (`start_paused`), so the controller's deadlines
//!   (stall retry, write timeouts) move only when the test advances time.
//!
//! A turn is exactly the loop's (`Controller::on_event` then
//! `Controller::end_turn`); only the waiting for the next event is the test's.
//! The persistence job still runs on a blocking thread: the test awaits it
//! explicitly ([`Node::finish_persist`]), so the order of events is the test's.
//!
//! This module is `cfg(test)` and a child of `controller` (it sees its private
//! fields): no seam of the production code is widened for it but the split of
//! the loop turn into `on_event`/`end_turn`.
//!
//! Invariants: a held sync is never awaited (that would hang): `finish_persist`
//! asserts the gate is open; killing a disk opens any held sync with an error,
//! so no blocking thread outlives a test.

use super::{Controller, Event, Observability};
use crate::core::{Entry, Envelope, HardState, RaftConfig, RaftNode, SnapshotMeta};
use crate::node::interface::{ControllerConfig, Outbound, Shared};
use crate::wal::{LogStore, MemStore, Recovered, WalError};
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What a held sync does once the test decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    Open,
    Held,
    /// The process died: a sync in progress or to come fails, nothing more is durable.
    Dead,
}

/// The disk of one node: its store and the switches on it. Outlives the
/// controller (a crash drops the controller; the disk is what restarts).
#[derive(Clone)]
pub struct Disk(Arc<DiskInner>);

struct DiskInner {
    store: Mutex<MemStore>,
    gate: Mutex<Gate>,
    opened: Condvar,
    /// Syncs still to be refused with ENOSPC.
    refuse: Mutex<usize>,
    /// Syncs completed (fsyncs that happened).
    syncs: Mutex<u64>,
}

/// What survived on a disk: its durable hard state and log.
#[derive(Clone, Debug)]
pub struct Durable {
    pub hard_state: HardState,
    pub last_index: u64,
    pub entries: Vec<Entry>,
}

impl Disk {
    /// A disk holding `hs` and `entries`, synced (a node's boot state).
    pub fn booted(hs: &HardState, entries: &[Entry]) -> Disk {
        let mut store = MemStore::new();
        store.set_hard_state(hs).unwrap();
        store.append(entries).unwrap();
        store.sync().unwrap();
        Disk::from_store(store.crash())
    }

    fn from_store(store: MemStore) -> Disk {
        Disk(Arc::new(DiskInner {
            store: Mutex::new(store),
            gate: Mutex::new(Gate::Open),
            opened: Condvar::new(),
            refuse: Mutex::new(0),
            syncs: Mutex::new(0),
        }))
    }

    /// From now on a sync waits until [`Disk::release`].
    pub fn hold(&self) {
        *self.0.gate.lock().unwrap() = Gate::Held;
    }

    /// Let held and later syncs complete.
    pub fn release(&self) {
        *self.0.gate.lock().unwrap() = Gate::Open;
        self.0.opened.notify_all();
    }

    pub fn held(&self) -> bool {
        *self.0.gate.lock().unwrap() == Gate::Held
    }

    /// The next `n` syncs fail with ENOSPC (their writes stay unsynced).
    pub fn refuse_syncs(&self, n: usize) {
        *self.0.refuse.lock().unwrap() = n;
    }

    /// Fsyncs completed so far.
    pub fn syncs(&self) -> u64 {
        *self.0.syncs.lock().unwrap()
    }

    /// What a power cut now would leave.
    pub fn durable(&self) -> Durable {
        let rec = self.0.store.lock().unwrap().crash().take_recovered();
        let snap = rec.snapshot.as_ref().map_or(0, |s| s.meta.index);
        Durable {
            hard_state: rec.hard_state,
            last_index: rec.entries.last().map_or(snap, |e| e.index),
            entries: rec.entries,
        }
    }

    /// The process died now: a held sync fails, and the disk that restarts
    /// holds only what was synced (a fresh `Disk`; this one is dead).
    pub fn crash(&self) -> Disk {
        self.kill();
        Disk::from_store(self.0.store.lock().unwrap().crash())
    }

    /// A sync held or to come fails (its blocking thread ends).
    fn kill(&self) {
        *self.0.gate.lock().unwrap() = Gate::Dead;
        self.0.opened.notify_all();
    }

    /// Blocks while the gate is held; `Err` when the process died meanwhile.
    fn pass_gate(&self) -> Result<(), WalError> {
        let mut g = self.0.gate.lock().unwrap();
        while *g == Gate::Held {
            g = self.0.opened.wait(g).unwrap();
        }
        if *g == Gate::Dead {
            return Err(WalError::Invalid("the process died during the sync".into()));
        }
        Ok(())
    }

    fn refused(&self) -> bool {
        let mut n = self.0.refuse.lock().unwrap();
        let refuse = *n > 0;
        *n = n.saturating_sub(1);
        refuse
    }
}

/// The [`LogStore`] the controller under test owns: a handle on its [`Disk`].
pub struct DiskStore {
    disk: Disk,
    recovered: Recovered,
}

impl LogStore for DiskStore {
    fn recovered(&self) -> &Recovered {
        &self.recovered
    }
    fn take_recovered(&mut self) -> Recovered {
        std::mem::take(&mut self.recovered)
    }
    fn append(&mut self, entries: &[Entry]) -> Result<(), WalError> {
        self.disk.0.store.lock().unwrap().append(entries)
    }
    fn set_hard_state(&mut self, hs: &HardState) -> Result<(), WalError> {
        self.disk.0.store.lock().unwrap().set_hard_state(hs)
    }
    fn sync(&mut self) -> Result<(), WalError> {
        self.disk.pass_gate()?;
        if self.disk.refused() {
            let source = std::io::Error::from_raw_os_error(libc::ENOSPC);
            return Err(WalError::Io {
                path: "(test disk)".into(),
                source,
            });
        }
        self.disk.0.store.lock().unwrap().sync()?;
        *self.disk.0.syncs.lock().unwrap() += 1;
        Ok(())
    }
    fn install_snapshot(&mut self, snapshot: &crate::core::Snapshot) -> Result<(), WalError> {
        self.disk.0.store.lock().unwrap().install_snapshot(snapshot)
    }
    fn snapshot(&self) -> Option<crate::core::Snapshot> {
        self.disk.0.store.lock().unwrap().snapshot()
    }
    fn entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>, WalError> {
        self.disk.0.store.lock().unwrap().entries(lo, hi)
    }
    fn last_index(&self) -> u64 {
        self.disk.0.store.lock().unwrap().last_index()
    }
}

/// A message as it left, with what the sender's disk held durably then.
#[derive(Clone, Debug)]
pub struct Sent {
    pub env: Envelope,
    pub durable_hs: HardState,
    pub durable_last: u64,
}

/// The recording [`Outbound`] of one node.
#[derive(Clone)]
pub struct Wire {
    disk: Disk,
    sent: Arc<Mutex<Vec<Sent>>>,
}

impl Wire {
    /// Everything sent since the last call.
    pub fn take(&self) -> Vec<Sent> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

impl Outbound for Wire {
    fn send(&self, env: Envelope) {
        let d = self.disk.durable();
        self.sent.lock().unwrap().push(Sent {
            env,
            durable_hs: d.hard_state,
            durable_last: d.last_index,
        });
    }
    fn send_snapshot(&self, env: Envelope, _: Arc<dyn crate::transport::SnapshotSource>) {
        self.send(env);
    }
    fn set_peers(&self, _: BTreeMap<String, String>) {}
}

/// The settings of a controller under test: in-memory messages, no snapshots,
/// no retention, a 10 s write timeout.
pub fn config() -> ControllerConfig {
    ControllerConfig {
        tick: Duration::from_millis(10),
        default_w: crate::api::WriteConcern::Majority,
        write_timeout: Some(Duration::from_secs(10)),
        default_read_limit: 100,
        max_read_limit: 1000,
        max_wait: Duration::from_secs(1),
        heartbeat: Duration::from_millis(20),
        snapshot_every: 0,
        snapshot_every_bytes: u64::MAX,
        idempotency_window: 100,
        retention: Default::default(),
        max_cursors: 10,
        messages: None,
        // A held disk would block the test's thread: every job runs on a
        // blocking thread unless a test turns this on.
        inline_persist_max_bytes: 0,
    }
}

/// Core tuning for tests: quick elections, so a test ticks a node into leading.
pub fn raft_config(id: &str) -> RaftConfig {
    let mut c = RaftConfig::new(id);
    c.heartbeat_ticks = 1;
    c.election_ticks_min = 4;
    c.election_ticks_max = 8;
    c
}

/// One node: the real controller over a [`Disk`] and a [`Wire`].
pub struct Node {
    pub ctl: Controller<DiskStore, Wire>,
    pub disk: Disk,
    pub wire: Wire,
    /// The health manager's data directory (its disk probe measures it).
    _dir: tempfile::TempDir,
}

/// A node dropped (a crash, or a failed test unwinding) kills its disk: a held
/// sync would otherwise keep its blocking thread, and the runtime, alive.
impl Drop for Node {
    fn drop(&mut self) {
        self.disk.kill();
    }
}

impl Node {
    /// Start node `id` from what `disk` holds durably.
    pub fn start(id: &str, disk: Disk) -> Node {
        Node::start_seeded(id, disk, 7)
    }

    /// [`Node::start`] with the core's random seed (election timeouts) and
    /// process incarnation both `seed` (the seeded simulation, `sim`, gives
    /// each process start its own).
    pub fn start_seeded(id: &str, disk: Disk, seed: u64) -> Node {
        let rec = disk.0.store.lock().unwrap().recovered().clone();
        let meta = rec
            .snapshot
            .as_ref()
            .map_or(SnapshotMeta::default(), |s| s.meta.clone());
        let mut rcfg = raft_config(id);
        rcfg.incarnation = seed;
        let raft = RaftNode::new(
            rcfg,
            rec.hard_state.clone(),
            meta,
            rec.entries.clone(),
            seed,
        );
        let dir = tempfile::tempdir().unwrap();
        // The health manager's clock is the wall clock, which a test does
        // not control: no handover for a disk unhealthy "too long".
        let health_cfg = crate::config::HealthConfig {
            min_free_bytes: 0,
            unhealthy_window_ms: u64::MAX / 2,
            ..Default::default()
        };
        let obs = Observability {
            metrics: Arc::new(crate::metrics::Metrics::new()),
            health: crate::node::health::Health::new(health_cfg, dir.path().into(), None),
            faults: None,
        };
        let wire = Wire {
            disk: disk.clone(),
            sent: Default::default(),
        };
        let store = DiskStore {
            disk: disk.clone(),
            recovered: rec,
        };
        let shared = Arc::new(Shared::default());
        let ctl = Controller::new(raft, store, wire.clone(), config(), shared, obs).unwrap();
        let mut node = Node {
            ctl,
            disk,
            wire,
            _dir: dir,
        };
        node.turn(Event::Nothing);
        node
    }

    /// One loop turn for `ev`; a fatal storage error fails the test.
    pub fn turn(&mut self, ev: Event<DiskStore>) {
        self.ctl.on_event(ev).expect("fatal storage error");
        self.ctl.end_turn().expect("fatal storage error");
    }

    pub fn tick(&mut self) {
        self.turn(Event::Tick);
    }

    pub fn deliver(&mut self, env: Envelope) {
        self.turn(Event::Peer(env));
    }

    pub fn cmd(&mut self, c: crate::node::interface::Cmd) {
        self.turn(Event::Cmd(c));
    }

    /// A persistence job is in flight.
    pub fn persisting(&self) -> bool {
        self.ctl.persistence.busy()
    }

    /// Wait for the job in flight and take its result in a turn. The disk's
    /// gate must be open (a held sync would never finish).
    pub async fn finish_persist(&mut self) {
        assert!(!self.disk.held(), "awaiting a held sync would hang");
        assert!(self.persisting(), "no persistence job in flight");
        // A snapshot's sync may finish first: its turn is taken too.
        loop {
            let f = self.ctl.persistence.next_finished().await;
            let job = matches!(f, crate::node::persistence::Finished::Done(_));
            self.turn(Event::from(f));
            if job {
                break;
            }
        }
    }

    /// Finish persistence jobs until none is in flight.
    pub async fn settle(&mut self) {
        for _ in 0..100 {
            if !self.persisting() {
                return;
            }
            self.finish_persist().await;
        }
        panic!("persistence never settled");
    }

    pub fn raft(&self) -> &RaftNode {
        &self.ctl.raft
    }

    pub fn applied_index(&self) -> u64 {
        self.ctl.sm.applied_index()
    }
}

/// Fails the test if `s` claims what its sender's disk did not hold durably
/// when it left: a vote request or a granted vote needs that term and vote
/// durable (or a later term), a successful append answer its entries.
pub fn check_durable(s: &Sent) {
    use crate::core::Message;
    let (env, hs) = (&s.env, &s.durable_hs);
    let voted =
        |who: &str| hs.term > env.term || (hs.term == env.term && hs.vote.as_deref() == Some(who));
    match &env.msg {
        Message::Vote { .. } => assert!(
            voted(&env.from),
            "{} asked for votes in term {} before its own vote was durable ({hs:?})",
            env.from,
            env.term
        ),
        Message::VoteResp { granted: true } => assert!(
            voted(&env.to),
            "{} granted its vote in term {} to {} before the vote was durable ({hs:?})",
            env.from,
            env.term,
            env.to
        ),
        Message::AppendResp {
            success: true,
            index,
            ..
        } => assert!(
            s.durable_last >= *index,
            "{} answered that it holds up to {index} with only {} durable",
            env.from,
            s.durable_last
        ),
        _ => {}
    }
}

/// Voters `ids`, each a [`Node`], and the messages between them. Every message
/// that leaves a node passes [`check_durable`].
pub struct Cluster {
    pub nodes: BTreeMap<String, Node>,
    /// Messages sent and not yet delivered, in order.
    pub net: Vec<Envelope>,
    /// Every message sent so far, in order.
    pub log: Vec<Sent>,
}

impl Cluster {
    /// Voters `ids` booted from the same membership entry (index 1, term 1).
    pub fn start(ids: &[&str]) -> Cluster {
        Cluster::start_seeded(ids, |_| 7)
    }

    /// [`Cluster::start`], node `i` started with seed `seed(i)`.
    pub fn start_seeded(ids: &[&str], seed: impl Fn(usize) -> u64) -> Cluster {
        let m = crate::core::testutil::members(ids, &[]);
        let entries = crate::core::testutil::log_of(&m, &[]);
        let hs = HardState {
            term: 1,
            vote: None,
            commit: 1,
        };
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let disk = Disk::booted(&hs, &entries);
                (id.to_string(), Node::start_seeded(id, disk, seed(i)))
            })
            .collect();
        Cluster {
            nodes,
            net: Vec::new(),
            log: Vec::new(),
        }
    }

    pub fn node(&mut self, id: &str) -> &mut Node {
        self.nodes.get_mut(id).expect("no such node")
    }

    /// Move what the nodes sent into the network (checked).
    pub fn collect(&mut self) {
        for n in self.nodes.values() {
            for s in n.wire.take() {
                check_durable(&s);
                self.net.push(s.env.clone());
                self.log.push(s);
            }
        }
    }

    /// Deliver what is in flight now to the nodes that are up (others lose it).
    pub fn deliver(&mut self) -> usize {
        let due = std::mem::take(&mut self.net);
        let n = due.len();
        for env in due {
            if let Some(node) = self.nodes.get_mut(&env.to) {
                node.deliver(env);
            }
        }
        n
    }

    /// Settle every node's persistence whose disk is not held, then exchange
    /// messages; until nothing moves (or `rounds` rounds).
    pub async fn run(&mut self, rounds: usize) {
        for _ in 0..rounds {
            for n in self.nodes.values_mut() {
                if !n.disk.held() {
                    n.settle().await;
                }
            }
            self.collect();
            let busy = self
                .nodes
                .values()
                .any(|n| n.persisting() && !n.disk.held());
            if self.deliver() == 0 && !busy {
                return;
            }
        }
    }

    /// Tick only `id` (the others never time out) until it leads and has
    /// committed an entry of its term.
    pub async fn elect(&mut self, id: &str) {
        for _ in 0..200 {
            self.node(id).tick();
            self.run(50).await;
            let r = self.nodes[id].raft();
            if r.is_leader() && r.entry_term(r.commit_index()) == Some(r.term()) {
                return;
            }
        }
        panic!("{id} did not become leader");
    }

    /// A node crashed: its controller is dropped (the process died) and a new
    /// one starts from what its disk held durably.
    pub fn restart(&mut self, id: &str) {
        let old = self.nodes.remove(id).expect("no such node");
        let disk = old.disk.crash();
        drop(old);
        self.nodes.insert(id.to_string(), Node::start(id, disk));
    }
}
