//! A small deterministic cluster harness over the consensus core, shared by the
//! seeded simulator (`tests/sim.rs`) and the scripted scenarios
//! (`tests/scenarios.rs`).
//!
//! Each node is a `RaftNode`, a `MemStore` (crashes lose what was not synced) and a
//! test state machine. The driver follows the core's contract exactly: install a
//! snapshot, append entries, persist the hard state, sync, `on_persisted`, send, apply,
//! and snapshot the state machine every `snapshot_every` applied entries (then
//! `compact`). The network is a queue of envelopes with a delivery time; it can drop,
//! delay, reorder and duplicate, and block any directed pair of nodes. Everything
//! random comes from one `SmallRng`, and nodes are visited in sorted order, so a run
//! is a pure function of its seed. The checker (`check.rs`) runs on every storage
//! append, every apply, every new leader, and after every step (`check_all`).
//!
//! In async mode the decisions of a `Ready`'s order are the node's own, not a copy:
//! `raftlog::node::persistence::{early_messages, needs_disk, needs_fsync}` (what
//! leaves before the fsync, whether the disk is needed, whether it ends in an
//! fsync: not when only the commit index moved, which then stays unsynced until
//! the next fsync and a crash may lose it). The controller's own handling around
//! them (the job, the stalled retry, the waiters) is tested on the real controller
//! in `node::controller::tests`; this driver keeps its own loop.
//!
//! The driver also checks the durability rules where they matter, on what leaves a
//! node: a vote request or a granted vote is sent only once that term and vote are
//! synced (or a later term is), an append answer only claims synced entries, and a
//! write is acknowledged only once a quorum of voters holds it synced. A crash can
//! be aimed inside a pending persist (`Opts::crash_in_vote_persist_p`): after the early
//! messages of a `Ready` left and before its sync completes; or right after a `Ready`
//! that granted a vote (`Opts::crash_after_vote_p`).
#![allow(dead_code)]

pub mod check;
pub mod life;
pub mod sm;

use bytes::Bytes;
use check::{Checker, Proposal};
use raftlog::core::{
    Entry, EntryPayload, Envelope, HardState, Member, Membership, Message, NodeId, ProposeError,
    RaftConfig, RaftNode, Ready, Role, Snapshot, SnapshotMeta,
};
use raftlog::node::persistence;
use raftlog::state_machine::Command;
use raftlog::wal::{LogStore, MemStore};
use rand::{rngs::SmallRng, seq::SliceRandom, Rng, SeedableRng};
use sm::{applied_of, cmd_bytes, StateMachine};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Core tuning and driver behaviour for one cluster.
#[derive(Clone, Debug)]
pub struct Opts {
    pub heartbeat_ticks: u64,
    pub election_ticks_min: u64,
    pub election_ticks_max: u64,
    pub max_append_entries: usize,
    pub max_append_bytes: usize,
    pub max_inflight_msgs: usize,
    pub max_inflight_bytes: usize,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Snapshot the state machine (and `compact`) every this many applied entries;
    /// 0: never.
    pub snapshot_every: u64,
    /// The core's catch-up tail after a snapshot, in entries (0: none).
    pub catchup_entries: u64,
    /// Persist like the node controller: one `Ready` at a time on a background job
    /// that completes `persist_delay_min..=persist_delay_max` ticks later, early messages at once,
    /// no sync when only the commit index changed (`node::persistence`).
    pub async_persist: bool,
    pub persist_delay_min: u64,
    pub persist_delay_max: u64,
    /// Async mode: the chance that a persistence job carrying a new vote ends in a
    /// crash instead of its sync (keeping a random prefix of its writes; its early
    /// messages have left by then).
    pub crash_in_vote_persist_p: f64,
    /// The same for a leader's job carrying new entries.
    pub crash_in_leader_persist_p: f64,
    /// The chance that a node crashes right after a `Ready` that granted a vote is
    /// done (synced and sent), before its next one: the vote must have been in it.
    pub crash_after_vote_p: f64,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            heartbeat_ticks: 2,
            election_ticks_min: 10,
            election_ticks_max: 20,
            max_append_entries: 64,
            max_append_bytes: 1 << 20,
            max_inflight_msgs: 8,
            max_inflight_bytes: 1 << 20,
            pre_vote: true,
            check_quorum: true,
            snapshot_every: 0,
            catchup_entries: 0,
            async_persist: false,
            persist_delay_min: 0,
            persist_delay_max: 0,
            crash_in_vote_persist_p: 0.0,
            crash_in_leader_persist_p: 0.0,
            crash_after_vote_p: 0.0,
        }
    }
}

impl Opts {
    pub fn raft_config(&self, id: &str) -> RaftConfig {
        let mut c = RaftConfig::new(id);
        c.heartbeat_ticks = self.heartbeat_ticks;
        c.election_ticks_min = self.election_ticks_min;
        c.election_ticks_max = self.election_ticks_max;
        c.max_append_entries = self.max_append_entries;
        c.max_append_bytes = self.max_append_bytes;
        c.max_inflight_msgs = self.max_inflight_msgs;
        c.max_inflight_bytes = self.max_inflight_bytes;
        c.pre_vote = self.pre_vote;
        c.check_quorum = self.check_quorum;
        c.catchup_entries = self.catchup_entries;
        c.catchup_bytes = 1 << 20;
        c
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceMode {
    Off,
    /// Keep lines (printed by the simulator when a seed fails).
    Buffer,
    /// Print as they happen (scenarios).
    Print,
}

pub struct Tracer {
    pub mode: TraceMode,
    pub lines: Vec<String>,
    pub now: u64,
    /// Also trace every message delivery.
    pub messages: bool,
}

impl Tracer {
    pub fn on(&self) -> bool {
        self.mode != TraceMode::Off
    }
    pub fn note(&mut self, f: impl FnOnce() -> String) {
        match self.mode {
            TraceMode::Off => {}
            TraceMode::Buffer => {
                let line = format!("t{:<5} {}", self.now, f());
                self.lines.push(line)
            }
            TraceMode::Print => println!("t{:<5} {}", self.now, f()),
        }
    }
}

pub struct InFlight {
    pub at: u64,
    pub env: Envelope,
}

/// The simulated network.
#[derive(Default)]
pub struct Net {
    pub queue: VecDeque<InFlight>,
    /// Directed pairs `(from, to)` that lose every message.
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    pub drop_p: f64,
    pub dup_p: f64,
    pub max_delay: u64,
    pub sent: u64,
    pub dropped: u64,
}

impl Net {
    fn send(&mut self, env: Envelope, now: u64, rng: &mut SmallRng) {
        self.sent += 1;
        if self.drop_p > 0.0 && rng.gen_bool(self.drop_p) {
            self.dropped += 1;
            return;
        }
        let copies = if self.dup_p > 0.0 && rng.gen_bool(self.dup_p) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.max_delay > 0 {
                rng.gen_range(0..=self.max_delay)
            } else {
                0
            };
            self.queue.push_back(InFlight {
                at: now + delay,
                env: env.clone(),
            });
        }
    }

    pub fn is_blocked(&self, from: &str, to: &str) -> bool {
        self.blocked.contains(&(from.to_string(), to.to_string()))
    }
}

/// One simulated server.
pub struct Node {
    pub id: NodeId,
    /// `None` while crashed.
    pub raft: Option<RaftNode>,
    pub store: MemStore,
    pub sm: StateMachine,
    /// Crash in the next `Ready`, after the writes and before the sync, keeping the
    /// first `n` unsynced operations.
    pub crash_in_ready: Option<usize>,
    /// ReadIndex rounds started here: ctx -> highest acknowledged index at the start.
    pub read_started: BTreeMap<u64, u64>,
    /// Read states waiting for the state machine: (ctx, index).
    pub reads: Vec<(u64, u64)>,
    pub checked_commit: u64,
    /// A `Ready` being persisted (async mode).
    pub job: Option<Job>,
    /// The hard state as of the last sync (what a crash now would recover).
    pub synced_hs: HardState,
    /// Starts so far: the incarnation of the running process (answers of an
    /// earlier one may still be in the network after a restart).
    pub starts: u64,
}

/// A `Ready` whose writes are made and whose sync completes at `done_at`, or which
/// ends at `done_at` in a crash keeping the first `crash` of its writes.
pub struct Job {
    pub rd: Ready,
    pub done_at: u64,
    pub crash: Option<usize>,
    /// It ends in a sync (`persistence::needs_fsync`; async mode: not when only
    /// the commit index changed).
    pub fsync: bool,
}

impl Node {
    pub fn is_up(&self) -> bool {
        self.raft.is_some()
    }
    pub fn raft(&self) -> &RaftNode {
        self.raft.as_ref().expect("node is down")
    }
    pub fn snapshot_index(&self) -> u64 {
        self.store.snapshot().map_or(0, |s| s.meta.index)
    }
    /// The stored entry at `index`, if storage holds it.
    pub fn stored(&self, index: u64) -> Option<Entry> {
        stored_entry(&self.store, index)
    }
}

pub fn stored_entry(store: &MemStore, index: u64) -> Option<Entry> {
    let snap = store.snapshot().map_or(0, |s| s.meta.index);
    if index <= snap || index > store.last_index() {
        return None;
    }
    store.entries(index, index + 1).ok()?.pop()
}

/// Stored term at `index` (the snapshot's term at its index; 0 at index 0).
pub fn stored_term(store: &MemStore, index: u64) -> Option<u64> {
    let snap = store.snapshot();
    let (si, st) = snap.map_or((0, 0), |s| (s.meta.index, s.meta.term));
    if index == si {
        return Some(st);
    }
    stored_entry(store, index).map(|e| e.term)
}

pub fn membership(voters: &[&str], learners: &[&str]) -> Membership {
    let mut m = Membership::default();
    for (ids, voter) in [(voters, true), (learners, false)] {
        for id in ids {
            m.members.insert(
                id.to_string(),
                Member {
                    grpc_addr: format!("{id}:grpc"),
                    http_addr: format!("{id}:http"),
                    voter,
                },
            );
        }
    }
    m
}

/// Initial durable state of a node: its hard state and log.
#[derive(Clone, Debug, Default)]
pub struct Boot {
    pub hard_state: HardState,
    pub entries: Vec<Entry>,
}

impl Boot {
    /// The usual bootstrap: entry 1 (term 1) carries the initial membership.
    pub fn with_membership(m: &Membership) -> Boot {
        Boot {
            hard_state: HardState {
                term: 1,
                vote: None,
                commit: 1,
            },
            entries: vec![Entry {
                index: 1,
                term: 1,
                payload: EntryPayload::Membership(m.clone()),
            }],
        }
    }

    /// A log with the given terms after the membership entry (Figures 7 and 8):
    /// entry `i + 2` has term `terms[i]` and carries command `index * 1000 + term`
    /// (so equal `(index, term)` pairs on different nodes are the same entry).
    pub fn with_terms(m: &Membership, terms: &[u64], term: u64) -> Boot {
        let mut b = Boot::with_membership(m);
        b.hard_state.term = term;
        for (i, t) in terms.iter().enumerate() {
            let index = i as u64 + 2;
            b.entries.push(Entry {
                index,
                term: *t,
                payload: EntryPayload::Command(cmd_bytes(index * 1000 + t)),
            });
        }
        b
    }
}

#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub crashes: u64,
    pub restarts: u64,
    pub snapshots_taken: u64,
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    pub reads_served: u64,
    pub transfers: u64,
    pub conf_changes: u64,
}

pub struct Cluster {
    pub opts: Opts,
    pub nodes: BTreeMap<NodeId, Node>,
    pub net: Net,
    pub rng: SmallRng,
    pub now: u64,
    pub check: Checker,
    pub tr: Tracer,
    pub stats: Stats,
    /// Nodes frozen in time (a stopped process): they neither tick nor receive; what
    /// is sent to them waits in the network.
    pub paused: BTreeSet<NodeId>,
    next_ctx: u64,
    pub next_cmd: u64,
}

impl Cluster {
    pub fn new(opts: Opts, seed: u64, mode: TraceMode) -> Cluster {
        Cluster {
            opts,
            nodes: BTreeMap::new(),
            net: Net::default(),
            rng: SmallRng::seed_from_u64(seed),
            now: 0,
            check: Checker::default(),
            tr: Tracer {
                mode,
                lines: Vec::new(),
                now: 0,
                messages: false,
            },
            stats: Stats::default(),
            paused: BTreeSet::new(),
            next_ctx: 0,
            next_cmd: 1,
        }
    }

    /// A cluster whose `voters` all boot with the same membership entry.
    pub fn bootstrap(opts: Opts, voters: &[&str], seed: u64, mode: TraceMode) -> Cluster {
        let mut c = Cluster::new(opts, seed, mode);
        let m = membership(voters, &[]);
        for id in voters {
            c.add_node(id, Some(Boot::with_membership(&m)));
        }
        c
    }

    /// Start a node from `boot` (or with empty storage: a new node waiting to be
    /// added by the leader).
    pub fn add_node(&mut self, id: &str, boot: Option<Boot>) {
        assert!(!self.nodes.contains_key(id), "{id} exists");
        let mut store = MemStore::new();
        if let Some(b) = boot {
            store.set_hard_state(&b.hard_state).unwrap();
            store.append(&b.entries).unwrap();
            store.sync().unwrap();
            let prev = 0;
            self.check.on_stored(id, &b.entries, prev);
        }
        let node = Node {
            id: id.to_string(),
            raft: None,
            store: store.crash(),
            sm: StateMachine::default(),
            crash_in_ready: None,
            read_started: BTreeMap::new(),
            reads: Vec::new(),
            checked_commit: 0,
            job: None,
            synced_hs: HardState::default(),
            starts: 0,
        };
        self.nodes.insert(id.to_string(), node);
        self.start(id);
    }

    /// Crash `id` and lose its whole log and snapshot to disk damage; its term
    /// and vote survive (they live in the hard-state file). It restarts
    /// repairing (`core::repair`), as a node does after `bootstrap` discarded
    /// damaged state.
    pub fn restart_damaged(&mut self, id: &str) {
        self.crash(id);
        let node = self.nodes.get_mut(id).unwrap();
        let hs = node.store.recovered().hard_state.clone();
        let mut store = MemStore::new();
        let kept = HardState { commit: 0, ..hs };
        store.set_hard_state(&kept).unwrap();
        store.sync().unwrap();
        node.store = store.crash();
        self.tr
            .note(|| format!("{id}: DISK DAMAGED: log lost, term/vote kept"));
        self.stats.restarts += 1;
        self.start_with(id, true);
    }

    /// Start a crashed node from what its storage recovered.
    fn start(&mut self, id: &str) {
        self.start_with(id, false);
    }

    fn start_with(&mut self, id: &str, repairing: bool) {
        let seed = self.rng.gen();
        let mut cfg = self.opts.raft_config(id);
        let node = self.nodes.get_mut(id).unwrap();
        assert!(node.raft.is_none(), "{id} is already up");
        node.starts += 1;
        cfg.incarnation = node.starts;
        let rec = node.store.recovered().clone();
        let (meta, sm) = match &rec.snapshot {
            Some(s) => (
                s.meta.clone(),
                StateMachine::decode(&s.data, s.meta.membership.clone()),
            ),
            None => (SnapshotMeta::default(), StateMachine::default()),
        };
        assert_eq!(sm.applied_index(), meta.index, "harness: snapshot data");
        self.check
            .on_state_machine(id, &sm.applied, rec.hard_state.term);
        self.check.check_log_state(id, &sm.log, true);
        node.sm = sm;
        node.checked_commit = meta.index;
        node.synced_hs = rec.hard_state.clone();
        node.raft = Some(RaftNode::new(
            cfg,
            rec.hard_state.clone(),
            meta,
            rec.entries,
            seed,
        ));
        if repairing {
            node.raft.as_mut().expect("just started").start_repairing();
        }
        let (t, last) = (rec.hard_state.term, node.store.last_index());
        self.tr
            .note(|| format!("{id}: started (term {t}, last index {last})"));
        self.drive(id);
    }

    pub fn restart(&mut self, id: &str) {
        self.stats.restarts += 1;
        self.start(id);
    }

    /// Crash now. Nothing is pending between `Ready`s, so this loses nothing the
    /// node acknowledged; see `crash_in_next_ready` for a crash before a sync.
    pub fn crash(&mut self, id: &str) {
        self.crash_keep(id, 0);
    }

    /// Crash now, keeping the first `keep` unsynced writes (there are some only
    /// while a persistence job runs, in async mode).
    pub fn crash_keep(&mut self, id: &str, keep: usize) {
        let node = self.nodes.get_mut(id).unwrap();
        let pending = node.store.pending_ops();
        node.store = node.store.crash_keep(keep);
        node.raft = None;
        node.job = None;
        node.reads.clear();
        node.read_started.clear();
        self.stats.crashes += 1;
        self.tr.note(|| {
            format!(
                "{id}: CRASH (kept {} of {pending} unsynced ops)",
                keep.min(pending)
            )
        });
    }

    pub fn crash_in_next_ready(&mut self, id: &str, keep: usize) {
        self.nodes.get_mut(id).unwrap().crash_in_ready = Some(keep);
    }

    pub fn is_up(&self, id: &str) -> bool {
        self.nodes.get(id).is_some_and(|n| n.is_up())
    }

    pub fn raft(&self, id: &str) -> &RaftNode {
        self.nodes[id].raft()
    }

    pub fn raft_mut(&mut self, id: &str) -> &mut RaftNode {
        self.nodes.get_mut(id).unwrap().raft.as_mut().expect("down")
    }

    /// Running nodes (up and not paused), sorted.
    pub fn up_ids(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.is_up() && !self.paused.contains(&n.id))
            .map(|n| n.id.clone())
            .collect()
    }

    /// The running leader with the highest term.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.is_up() && !self.paused.contains(&n.id) && n.raft().is_leader())
            .max_by_key(|n| n.raft().term())
            .map(|n| n.id.clone())
    }

    // ---- events -------------------------------------------------------------

    pub fn tick(&mut self, id: &str) {
        if let Some(r) = self.nodes.get_mut(id).and_then(|n| n.raft.as_mut()) {
            r.tick();
            self.drive(id);
        }
    }

    /// One tick of time in which only `ids` tick (the others are paused).
    pub fn tick_some(&mut self, ids: &[&str]) {
        self.now += 1;
        self.tr.now = self.now;
        for id in ids {
            self.tick(id);
        }
    }

    pub fn tick_all(&mut self) {
        self.now += 1;
        self.tr.now = self.now;
        self.complete_jobs();
        for id in self.up_ids() {
            self.tick(&id);
        }
    }

    pub fn propose(&mut self, id: &str) -> Result<(u64, u64, u64), ProposeError> {
        let cmd = self.next_cmd;
        self.propose_payload(id, cmd_bytes(cmd))
    }

    /// Propose lifecycle command `c` (a message-log command the nodes' log state
    /// machines apply and the checker's model replays).
    pub fn propose_cmd(&mut self, id: &str, c: Command) -> Result<(u64, u64, u64), ProposeError> {
        let cmd = self.next_cmd;
        let payload = sm::life_bytes(cmd, &c);
        // Registered first: the model may replay the entry before this returns.
        self.tr.note(|| format!("cmd{cmd} = {}", sm::describe(&c)));
        self.check.cmds.insert(cmd, c);
        let r = self.propose_payload(id, payload);
        if r.is_err() {
            self.check.cmds.remove(&cmd);
        }
        r
    }

    fn propose_payload(
        &mut self,
        id: &str,
        payload: Bytes,
    ) -> Result<(u64, u64, u64), ProposeError> {
        let cmd = self.next_cmd;
        let r = self.raft_mut(id).propose(payload);
        let (index, term) = r?;
        self.next_cmd += 1;
        self.check.pending.push(Proposal {
            cmd,
            leader: id.to_string(),
            index,
            term,
        });
        self.tr
            .note(|| format!("{id}: propose cmd{cmd} -> {index}@t{term}"));
        self.drive(id);
        Ok((cmd, index, term))
    }

    /// Start a ReadIndex round; returns its ctx.
    pub fn read(&mut self, id: &str) -> Result<u64, ProposeError> {
        self.next_ctx += 1;
        let ctx = self.next_ctx;
        self.raft_mut(id).read_index(ctx)?;
        let max = self.check.max_acked_index;
        self.nodes
            .get_mut(id)
            .unwrap()
            .read_started
            .insert(ctx, max);
        self.drive(id);
        Ok(ctx)
    }

    pub fn transfer(&mut self, id: &str, to: Option<&str>) -> Result<NodeId, ProposeError> {
        let r = self
            .raft_mut(id)
            .transfer_leadership(to.map(str::to_string));
        if let Ok(t) = &r {
            self.stats.transfers += 1;
            self.tr.note(|| format!("{id}: transfer leadership to {t}"));
        }
        self.drive(id);
        r
    }

    pub fn change_membership(&mut self, id: &str, m: Membership) -> Result<u64, ProposeError> {
        let d = sm::conf_digest(&m);
        let (index, _) = self.raft_mut(id).propose_membership(m)?;
        self.stats.conf_changes += 1;
        self.tr
            .note(|| format!("{id}: propose membership {d} at {index}"));
        self.drive(id);
        Ok(index)
    }

    /// Deliver one envelope now (unless the pair is blocked or the target is down).
    pub fn deliver(&mut self, env: Envelope) {
        if self.net.is_blocked(&env.from, &env.to) {
            return;
        }
        let to = env.to.clone();
        let Some(r) = self.nodes.get_mut(&to).and_then(|n| n.raft.as_mut()) else {
            return;
        };
        if self.tr.messages {
            let s = format!(
                "{} -> {} t{} {}",
                env.from,
                env.to,
                env.term,
                short(&env.msg)
            );
            self.tr.note(|| s);
        }
        r.step(env);
        self.drive(&to);
    }

    /// Deliver every message due by now, in random order; messages sent meanwhile
    /// with no delay go out in the next of at most `rounds` rounds.
    pub fn deliver_due(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.complete_jobs();
            let now = self.now;
            let paused = &self.paused;
            let (mut due, rest): (Vec<_>, Vec<_>) = self
                .net
                .queue
                .drain(..)
                .partition(|m| m.at <= now && !paused.contains(&m.env.to));
            self.net.queue = rest.into();
            if due.is_empty() {
                return;
            }
            due.shuffle(&mut self.rng);
            for m in due {
                self.deliver(m.env);
            }
        }
    }

    /// Deliver in FIFO order until the network is empty. Messages for which `keep`
    /// is false are dropped.
    pub fn deliver_filtered(&mut self, mut keep: impl FnMut(&Envelope) -> bool) -> usize {
        let mut n = 0;
        while let Some(m) = self.net.queue.pop_front() {
            n += 1;
            assert!(n < 1_000_000, "network never went quiet");
            if keep(&m.env) {
                self.deliver(m.env);
            } else if self.tr.messages {
                let s = format!(
                    "dropped {} -> {} {}",
                    m.env.from,
                    m.env.to,
                    short(&m.env.msg)
                );
                self.tr.note(|| s);
            }
        }
        n
    }

    /// Deliver in FIFO order until the network is empty; `f` may rewrite or drop
    /// (`None`) each message.
    pub fn deliver_map(&mut self, mut f: impl FnMut(Envelope) -> Option<Envelope>) -> usize {
        let mut n = 0;
        while let Some(m) = self.net.queue.pop_front() {
            n += 1;
            assert!(n < 1_000_000, "network never went quiet");
            if let Some(env) = f(m.env) {
                self.deliver(env);
            }
        }
        n
    }

    /// Deliver (FIFO, repeatedly) only the messages matching `pred`; the others stay
    /// queued in order.
    pub fn deliver_matching(&mut self, mut pred: impl FnMut(&Envelope) -> bool) -> usize {
        let mut n = 0;
        loop {
            let Some(pos) = self.net.queue.iter().position(|m| pred(&m.env)) else {
                return n;
            };
            let m = self.net.queue.remove(pos).unwrap();
            n += 1;
            assert!(n < 1_000_000, "network never went quiet");
            self.deliver(m.env);
        }
    }

    pub fn deliver_all(&mut self) -> usize {
        self.deliver_filtered(|_| true)
    }

    /// Block both directions between `a` and every other node.
    pub fn isolate(&mut self, a: &str) {
        for b in self.nodes.keys().cloned().collect::<Vec<_>>() {
            if b != a {
                self.net.blocked.insert((a.to_string(), b.clone()));
                self.net.blocked.insert((b, a.to_string()));
            }
        }
        self.tr.note(|| format!("partition: {a} isolated"));
    }

    pub fn heal(&mut self) {
        self.net.blocked.clear();
        self.tr.note(|| "partition healed".to_string());
    }

    // ---- the driver ---------------------------------------------------------

    /// Carry out every pending `Ready` of `id`. With `async_persist`, as the node
    /// controller does: a `Ready` that needs the disk becomes a job that completes
    /// later (`complete_jobs`); its messages that do not need durability
    /// (`Message::needs_durability`) leave at once, the others when it completes,
    /// and while it runs only early messages leave (`take_early_messages`).
    pub fn drive(&mut self, id: &str) {
        loop {
            let Some(node) = self.nodes.get_mut(id) else {
                return;
            };
            let Some(r) = node.raft.as_mut() else { return };
            if node.job.is_some() {
                for env in r.take_early_messages() {
                    self.send_env(id, env);
                }
                break;
            }
            if !r.has_ready() {
                break;
            }
            let mut rd = r.ready();
            if !self.opts.async_persist {
                if self.write_ready(id, &rd) {
                    self.finish_ready(id, rd, true);
                }
                continue;
            }
            // The node's own rule (`node::persistence`): what leaves at once,
            // what needs the disk, whether that ends in an fsync.
            for env in persistence::early_messages(&mut rd) {
                self.send_env(id, env);
            }
            let synced = &self.nodes[id].synced_hs;
            let fsync = persistence::needs_fsync(&rd, &(synced.term, synced.vote.clone()));
            if !fsync {
                if let Some(hs) = &rd.hard_state {
                    let commit = hs.commit;
                    self.tr
                        .note(|| format!("{id}: commit {commit} written, no fsync"));
                }
            }
            if !persistence::needs_disk(&rd) {
                if self.write_ready(id, &rd) {
                    self.finish_ready(id, rd, fsync);
                }
                continue;
            }
            if !self.write_ready(id, &rd) {
                return;
            }
            let (lo, hi) = (self.opts.persist_delay_min, self.opts.persist_delay_max);
            let done_at = self.now + self.rng.gen_range(lo..=hi.max(lo));
            let crash = self.crash_in_persist(id, &rd);
            let job = Job {
                rd,
                done_at,
                crash,
                fsync,
            };
            self.nodes.get_mut(id).unwrap().job = Some(job);
        }
        self.update_acks(id);
    }

    /// Complete the persistence jobs due by now (async mode).
    pub fn complete_jobs(&mut self) {
        let due: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.job.as_ref().is_some_and(|j| j.done_at <= self.now))
            .filter(|n| !self.paused.contains(&n.id))
            .map(|n| n.id.clone())
            .collect();
        for id in due {
            self.complete_job(&id);
        }
    }

    /// Complete `id`'s persistence job now (async mode): sync and carry out the
    /// rest of its `Ready`, or crash if the job was chosen to end in one.
    pub fn complete_job(&mut self, id: &str) {
        let job = self.nodes.get_mut(id).unwrap().job.take().expect("a job");
        if let Some(keep) = job.crash {
            self.tr
                .note(|| format!("{id}: crash inside a pending persist"));
            self.crash_keep(id, keep);
            return;
        }
        self.finish_ready(id, job.rd, job.fsync);
        self.drive(id);
    }

    /// Should this job end in a crash (`Opts::crash_in_vote_persist_p`)? Only jobs
    /// that carry a new vote or a leader's entries, and only while a majority is up.
    fn crash_in_persist(&mut self, id: &str, rd: &Ready) -> Option<usize> {
        let (pv, pl) = (
            self.opts.crash_in_vote_persist_p,
            self.opts.crash_in_leader_persist_p,
        );
        if pv <= 0.0 && pl <= 0.0 {
            return None;
        }
        let node = &self.nodes[id];
        let vote = rd.hard_state.as_ref().is_some_and(|hs| {
            hs.vote.is_some() && (hs.term, &hs.vote) != (node.synced_hs.term, &node.synced_hs.vote)
        });
        let leader_entries = node.raft().is_leader() && !rd.entries.is_empty();
        let down = self.nodes.values().filter(|n| !n.is_up()).count();
        if !(vote || leader_entries) || down >= self.nodes.len() / 2 {
            return None;
        }
        let p = if vote { pv } else { pl };
        if !self.rng.gen_bool(p) {
            return None;
        }
        // Every unsynced write: this job's, and commit indexes written without
        // a sync before it (`persistence::needs_fsync`).
        let writes = node.store.pending_ops();
        Some(self.rng.gen_range(0..=writes))
    }

    /// Send one message, with snapshot data attached.
    fn send_env(&mut self, id: &str, mut env: Envelope) {
        self.check_durable_before_send(id, &env);
        if let Message::Snapshot { snapshot } = &mut env.msg {
            let ours = self.nodes[id].store.snapshot();
            assert!(
                ours.as_ref().is_some_and(|s| s.meta == snapshot.meta),
                "VIOLATION snapshot: {id} sends snapshot {:?} but stored {:?}",
                snapshot.meta.index,
                ours.map(|s| s.meta.index)
            );
            snapshot.data = ours.unwrap().data;
            self.stats.snapshots_sent += 1;
            let (to, i) = (env.to.clone(), snapshot.meta.index);
            self.tr.note(|| format!("{id}: sends snapshot {i} to {to}"));
        }
        self.net.send(env, self.now, &mut self.rng);
    }

    /// The writes of a `Ready` (not yet synced). False when the node crashed here.
    fn write_ready(&mut self, id: &str, rd: &Ready) -> bool {
        let Cluster {
            nodes,
            check,
            tr,
            stats,
            ..
        } = self;
        let node = nodes.get_mut(id).unwrap();
        let mut new_leader_terms = Vec::new();
        for rc in &rd.role_changes {
            let leader = rc.leader.clone().unwrap_or_else(|| "-".into());
            tr.note(|| {
                format!(
                    "{id}: {:?} term {} leader {} ({})",
                    rc.role, rc.term, leader, rc.reason
                )
            });
            if rc.role == Role::Leader {
                check.on_leader(id, rc.term);
                new_leader_terms.push(rc.term);
            }
        }
        // 1. snapshot, 2. entries, 3. hard state (its commit may point into the
        // entries, so it must not survive a crash without them).
        if let Some(snap) = &rd.snapshot {
            install_snapshot(node, snap, check);
            stats.snapshots_installed += 1;
            let (i, t) = (snap.meta.index, snap.meta.term);
            tr.note(|| format!("{id}: installed snapshot {i}@t{t}"));
        }
        if let Some(first) = rd.entries.first() {
            let prev = stored_term(&node.store, first.index - 1).unwrap_or_else(|| {
                panic!(
                    "VIOLATION storage: {id} appends at {} with nothing stored at {}",
                    first.index,
                    first.index - 1
                )
            });
            node.store
                .append(&rd.entries)
                .unwrap_or_else(|e| panic!("VIOLATION storage: {id} append refused: {e}"));
            check.on_stored(id, &rd.entries, prev);
        }
        if let Some(hs) = &rd.hard_state {
            node.store.set_hard_state(hs).unwrap();
        }
        for term in new_leader_terms {
            let snap = node.snapshot_index();
            let store = &node.store;
            check.check_leader_log(id, term, snap, &node.sm.applied, |i| {
                stored_entry(store, i).map(|e| applied_of(&e))
            });
        }
        if let Some(keep) = node.crash_in_ready.take() {
            let pending = node.store.pending_ops();
            node.store = node.store.crash_keep(keep);
            node.raft = None;
            node.job = None;
            node.reads.clear();
            node.read_started.clear();
            stats.crashes += 1;
            tr.note(|| format!("{id}: CRASH before sync (kept {keep} of {pending} unsynced ops)"));
            return false;
        }
        true
    }

    /// The rest of a `Ready` once its writes are durable (synced, or with
    /// `fsync` false written to ride along with the next sync): `on_persisted`,
    /// messages, apply, reads, and maybe a snapshot of the state machine.
    fn finish_ready(&mut self, id: &str, rd: Ready, fsync: bool) {
        let node = self.nodes.get_mut(id).unwrap();
        if fsync {
            node.store.sync().unwrap();
            if let Some(hs) = &rd.hard_state {
                node.synced_hs = hs.clone();
            }
        }
        let raft = node.raft.as_mut().unwrap();
        if let Some(last) = rd.entries.last() {
            raft.on_persisted(last.index, last.term);
        }
        let granted_vote = rd
            .messages
            .iter()
            .any(|e| e.msg == Message::VoteResp { granted: true });
        for env in rd.messages {
            self.send_env(id, env);
        }
        let Cluster {
            nodes,
            check,
            stats,
            opts,
            ..
        } = self;
        let node = nodes.get_mut(id).unwrap();
        let term = node.raft().term();
        for e in &rd.committed {
            let (a, outcome) = node.sm.apply(e);
            check.on_history(id, &a, "applied", term);
            check.check_log_apply(id, e.index, &outcome, &node.sm.log);
        }
        // Reads.
        for rs in &rd.read_states {
            let Some(max_acked) = node.read_started.remove(&rs.ctx) else {
                panic!("VIOLATION read index: {id} answered unknown ctx {}", rs.ctx);
            };
            assert!(
                rs.index >= max_acked,
                "VIOLATION linearizable read: {id} read ctx {} at index {} but a write at \
                 {max_acked} was acknowledged before the read began",
                rs.ctx,
                rs.index
            );
            node.reads.push((rs.ctx, rs.index));
        }
        let applied = node.sm.applied_index();
        let before = node.reads.len();
        node.reads.retain(|(_, index)| *index > applied);
        stats.reads_served += (before - node.reads.len()) as u64;
        // The driver's own snapshot.
        let snap_index = node.snapshot_index();
        if opts.snapshot_every > 0 && applied >= snap_index + opts.snapshot_every {
            let meta = SnapshotMeta {
                index: applied,
                term: node.sm.last_term(),
                membership: node.sm.membership.clone(),
            };
            let data = node.sm.encode();
            node.store
                .install_snapshot(&Snapshot {
                    meta: meta.clone(),
                    data,
                })
                .unwrap();
            node.raft.as_mut().unwrap().compact(meta);
            stats.snapshots_taken += 1;
        }
        if granted_vote {
            self.maybe_crash_after_vote(id);
        }
    }

    /// `Opts::crash_after_vote_p`: `id` just sent a granted vote; maybe it crashes
    /// now (while a majority stays up), before anything else reaches its disk.
    fn maybe_crash_after_vote(&mut self, id: &str) {
        let p = self.opts.crash_after_vote_p;
        let down = self.nodes.values().filter(|n| !n.is_up()).count();
        if p > 0.0 && down < self.nodes.len() / 2 && self.rng.gen_bool(p) {
            self.tr
                .note(|| format!("{id}: crash right after granting a vote"));
            self.crash(id);
        }
    }

    /// Proposals of `id` that are now committed on it (acknowledged), or that can no
    /// longer be (it lost that term's leadership).
    fn update_acks(&mut self, id: &str) {
        if !self.check.pending.iter().any(|p| p.leader == id) {
            return;
        }
        self.check_commits(id);
        let raft = self.nodes[id].raft.as_ref();
        let pending = std::mem::take(&mut self.check.pending);
        for p in pending {
            if p.leader != id {
                self.check.pending.push(p);
                continue;
            }
            let Some(r) = raft.filter(|r| r.is_leader() && r.term() == p.term) else {
                continue; // fate unknown: not acknowledged
            };
            if r.commit_index() >= p.index && r.entry_term(p.index) == Some(p.term) {
                let copies = self.durable_copies(id, p.index, p.term);
                let quorum = r.membership().quorum();
                assert!(
                    copies >= quorum,
                    "VIOLATION durability: {id} acknowledges cmd{} at {}@t{} synced on {copies} \
                     voter(s), fewer than a quorum of {quorum}",
                    p.cmd,
                    p.index,
                    p.term
                );
                self.check.ack(&p);
                let (c, i) = (p.cmd, p.index);
                self.tr.note(|| format!("{id}: ack cmd{c} at {i}"));
            } else {
                self.check.pending.push(p);
            }
        }
    }

    // ---- checks -------------------------------------------------------------

    /// What leaves `id` may claim only what its storage has synced: a vote request
    /// or a granted vote needs that term and vote synced (a later synced term makes
    /// the old vote moot), a successful append answer needs its entries synced.
    fn check_durable_before_send(&self, id: &str, env: &Envelope) {
        let node = &self.nodes[id];
        let hs = &node.synced_hs;
        let voted = |who: &str| {
            hs.term > env.term || (hs.term == env.term && hs.vote.as_deref() == Some(who))
        };
        match &env.msg {
            Message::Vote { .. } => assert!(
                voted(id),
                "VIOLATION durability: {id} asks for votes in term {} before its own vote \
                 is synced (synced: {hs:?})",
                env.term
            ),
            Message::VoteResp { granted: true } => assert!(
                voted(&env.to),
                "VIOLATION durability: {id} grants its vote in term {} to {} before the \
                 vote is synced (synced: {hs:?})",
                env.term,
                env.to
            ),
            Message::AppendResp {
                success: true,
                index,
                ..
            } => {
                let unsynced = unsynced_from(node);
                assert!(
                    unsynced.is_none_or(|f| f > *index),
                    "VIOLATION durability: {id} answers that it holds up to {index} while \
                     its entries from {unsynced:?} are not synced"
                );
            }
            _ => {}
        }
    }

    /// Voters of `id`'s membership that hold `(index, term)` synced (or under their
    /// snapshot).
    fn durable_copies(&self, id: &str, index: u64, term: u64) -> usize {
        let m = self.raft(id).membership();
        m.voters()
            .filter(|v| {
                self.nodes.get(*v).is_some_and(|n| {
                    let synced = unsynced_from(n).is_none_or(|f| f > index);
                    let held =
                        index <= n.snapshot_index() || stored_term(&n.store, index) == Some(term);
                    synced && held
                })
            })
            .count()
    }

    /// Entries newly committed on `id` agree with the history.
    fn check_commits(&mut self, id: &str) {
        let node = self.nodes.get_mut(id).unwrap();
        let Some(r) = node.raft.as_ref() else { return };
        let (commit, term) = (r.commit_index(), r.term());
        // The core's own entries: with async persistence a leader may commit what
        // a majority of followers hold before its own copy reaches its disk.
        let snap = r.snapshot_meta().index;
        for i in (node.checked_commit + 1)..=commit {
            if i <= snap {
                continue;
            }
            let e = r.entry(i).unwrap_or_else(|| {
                panic!("VIOLATION log: {id} committed {i} but does not hold it")
            });
            self.check.on_history(id, &applied_of(e), "committed", term);
        }
        node.checked_commit = node.checked_commit.max(commit);
    }

    /// Run after every step.
    pub fn check_all(&mut self) {
        for id in self.up_ids() {
            self.check_commits(&id);
            let node = &self.nodes[&id];
            let r = node.raft();
            let settled = node.job.is_none() && !r.has_ready();
            assert!(
                !settled
                    || (r.last_index(), r.last_term())
                        == (
                            node.store.last_index(),
                            stored_term(&node.store, node.store.last_index()).unwrap()
                        ),
                "VIOLATION driver contract: {id}'s core and storage disagree on the last entry"
            );
            if r.is_leader() {
                let l = self.check.leaders.get(&r.term());
                assert!(
                    l == Some(&id),
                    "VIOLATION election safety: {id} leads term {} recorded for {l:?}",
                    r.term()
                );
            }
        }
    }

    /// Pairwise log matching over every node's storage.
    pub fn check_log_matching(&self) {
        let ids: Vec<&NodeId> = self.nodes.keys().collect();
        for (x, a) in ids.iter().enumerate() {
            for b in &ids[x + 1..] {
                let (sa, sb) = (&self.nodes[*a].store, &self.nodes[*b].store);
                let lo = self.nodes[*a]
                    .snapshot_index()
                    .max(self.nodes[*b].snapshot_index())
                    + 1;
                let hi = sa.last_index().min(sb.last_index());
                if lo > hi {
                    continue;
                }
                let ea = sa.entries(lo, hi + 1).unwrap();
                let eb = sb.entries(lo, hi + 1).unwrap();
                let Some(j) = (0..ea.len()).rev().find(|&k| ea[k].term == eb[k].term) else {
                    continue;
                };
                for k in 0..=j {
                    assert!(
                        ea[k] == eb[k],
                        "VIOLATION log matching: {a} and {b} agree on the term at {} but differ at {}",
                        ea[j].index,
                        ea[k].index
                    );
                }
            }
        }
    }

    /// Render each node's log terms, e.g. for scenario output.
    pub fn log_terms(&self, id: &str) -> Vec<u64> {
        let n = &self.nodes[id];
        let snap = n.snapshot_index();
        ((snap + 1)..=n.store.last_index())
            .map(|i| stored_term(&n.store, i).unwrap())
            .collect()
    }

    pub fn print_logs(&self) {
        for id in self.nodes.keys() {
            let up = if self.is_up(id) { "" } else { " (down)" };
            let (role, term, commit) = match &self.nodes[id].raft {
                Some(r) => (format!("{:?}", r.role()), r.term(), r.commit_index()),
                None => ("-".into(), 0, 0),
            };
            println!(
                "    {id}{up}: {role} term {term} commit {commit} log terms {:?}",
                self.log_terms(id)
            );
        }
    }
}

/// First index of `node`'s entries written but not yet synced (a pending job's).
fn unsynced_from(node: &Node) -> Option<u64> {
    let job = node.job.as_ref()?;
    job.rd.entries.first().map(|e| e.index)
}

fn install_snapshot(node: &mut Node, snap: &Snapshot, check: &mut Checker) {
    node.store.install_snapshot(snap).unwrap();
    let sm = StateMachine::decode(&snap.data, snap.meta.membership.clone());
    assert!(
        sm.applied_index() == snap.meta.index && sm.last_term() == snap.meta.term,
        "VIOLATION snapshot: data holds {} entries for a snapshot at {}@t{}",
        sm.applied_index(),
        snap.meta.index,
        snap.meta.term
    );
    let term = node.raft.as_ref().map_or(0, |r| r.term());
    check.on_state_machine(&node.id, &sm.applied, term);
    check.check_log_state(&node.id, &sm.log, true);
    node.sm = sm;
    node.checked_commit = node.checked_commit.max(snap.meta.index);
}

/// A one-line message summary for traces.
pub fn short(m: &Message) -> String {
    match m {
        Message::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => format!(
            "Append prev {prev_index}@t{prev_term} entries {:?} commit {commit}",
            entries
                .iter()
                .map(|e| (e.index, e.term))
                .collect::<Vec<_>>()
        ),
        Message::Snapshot { snapshot } => format!(
            "Snapshot {}@t{} ({} bytes)",
            snapshot.meta.index,
            snapshot.meta.term,
            snapshot.data.len()
        ),
        other => format!("{other:?}"),
    }
}

pub fn payload_bytes(id: u64) -> Bytes {
    cmd_bytes(id)
}
