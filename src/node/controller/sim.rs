//! A seeded chaos simulation of real controllers (unit tests only).
//!
//! Why beside `tests/sim.rs`: that simulator drives the consensus core with a
//! `Ready` loop of its own that imitates the node (it shares only the rules
//! `early_messages`, `needs_disk`, `needs_fsync`); a mistake in the node's own
//! ordering (what leaves before an fsync, when a write is answered, the
//! stalled-`Ready` retry, the apply after durability) is invisible to it. Here
//! 3 (even seeds) or 5 (odd seeds) real [`Controller`](super::Controller)s run
//! through the `testdrive` harness: the same `on_event`/`end_turn` code as the
//! node's loop, over in-memory disks ([`Disk`]) and a recording outbound
//! ([`Wire`](super::testdrive::Wire), every message checked against its
//! sender's durable state as it left), on paused tokio time.
//!
//! Every step the seed picks one of: deliver a message in flight (any of
//! them: reordering), drop one, duplicate one, tick a node (and move the
//! clock one tick), let a node's persistence job finish (its fsync perhaps
//! refused with ENOSPC), mark a disk slow (its jobs wait), crash a node (idle;
//! with its job's fsync not done; with the fsync done but its result not
//! taken; or with the result's messages sent but the turn's end not run),
//! restart a crashed node from its disk, partition or heal, and a client write
//! with w = 1, 2, majority or all to some node (the leader most often).
//!
//! Determinism: every choice comes from the seed ([`Rng`]). Disks are always
//! held; a job finishes only when the seed says so: the gate opens, the job is
//! awaited, the gate closes, and only then does the controller take the result
//! (so no second job can pass an open gate on its own). A job that needs no
//! fsync changes nothing durable, so its finishing early on its thread changes
//! nothing either. The entries' wall-clock stamps differ from run to run and
//! stay out of the trace hash.
//!
//! Checked during the run: at most one leader per term; no two nodes ever
//! hold different entries at a committed index; every write answered with
//! success is durable, at its index and term, on at least `max(w, majority)`
//! disks when committed, or on one when answered early (`w` < majority; such a
//! write may be lost, SPEC §POST /v1/messages); `check_durable` on every
//! message. At the end, everything healed and every node restarted, a leader
//! must commit a final write and every node converge within a bounded number
//! of rounds; then every write acknowledged as committed is in every node's
//! log at its index and term, and in every state machine at its offset, and
//! all state machines hold the same messages.
//!
//! Not covered: snapshots (taking, streaming, installing: `snapshot_every`
//! is 0 and the state machine in memory), membership changes, reads, the
//! message store, the hard-state file, shutdown, and torn writes (a crash
//! keeps exactly what was synced; the WAL's own tests cover torn tails). The
//! health manager's wall clock is kept out (no handover for an unhealthy
//! disk).
//!
//! `NODE_SIM_SEED=<n>` runs one seed, `NODE_SIM_SEEDS=<count>` that many.

use super::testdrive::{check_durable, stale_append_answer, Cluster, Disk, Node};
use super::Event;
use crate::api::{ApiError, WriteConcern, WriteRequest, WriteResult};
use crate::core::{Entry, EntryPayload, Envelope, Message};
use crate::node::interface::Cmd;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;
use tokio::sync::oneshot;

/// Seeds run by default (about 0.1 s each in a debug build).
const DEFAULT_SEEDS: u64 = 60;
/// Chaos steps per seed.
const CHAOS_STEPS: usize = 1500;
/// Rounds the heal-and-converge phase may take.
const LIVENESS_ROUNDS: usize = 400;
/// The controller's tick (`testdrive::config`).
const TICK: Duration = Duration::from_millis(10);

/// xorshift64*: small, seeded, the same on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Mix the seed so that 0 and small seeds start well apart.
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        if s == 0 {
            s = 1;
        }
        Rng(s)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

type Reply = oneshot::Receiver<Result<WriteResult, ApiError>>;

/// A write waiting for its answer.
struct Pending {
    msg: String,
    /// The write concern as a count of voters.
    w: usize,
    rx: Reply,
}

/// A write answered with success.
#[derive(Debug)]
struct Acked {
    msg: String,
    res: WriteResult,
}

/// How a crash meets the node's persistence job.
#[derive(Clone, Copy, Debug)]
enum CrashPoint {
    /// No job in flight (or one whose fsync has not happened: the gate is held).
    Now,
    /// The job's fsync is done; the process dies before its turn takes it.
    AfterSync,
    /// The turn took the job's result (its held messages left, entries were
    /// applied and writes answered) but died before `end_turn`.
    MidTurn,
}

/// One seeded run.
pub struct Sim {
    seed: u64,
    rng: Rng,
    c: Cluster,
    ids: Vec<String>,
    /// Crashed nodes not restarted yet: what their disks hold.
    down: BTreeMap<String, Disk>,
    /// Nodes whose jobs the seed does not finish for now.
    slow: BTreeSet<String>,
    /// Pairs that cannot reach each other (both directions).
    cut: BTreeSet<(String, String)>,
    pending: Vec<Pending>,
    acked: Vec<Acked>,
    /// Leader of each term seen.
    leaders: BTreeMap<u64, String>,
    /// The entry committed at each index, as the first node to commit it had it.
    committed: BTreeMap<u64, Entry>,
    /// Process starts so far (each start's seed and incarnation).
    starts: u64,
    writes: u64,
    max_net: usize,
    led: usize,
    /// Append answers that left after their term (see `check_durable`).
    stale: usize,
    /// `NODE_SIM_TRACE` set: every step is printed.
    verbose: bool,
    trace: DefaultHasher,
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        let n = if seed % 2 == 0 { 3 } else { 5 };
        let ids: Vec<String> = ["a", "b", "c", "d", "e"][..n]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let c = Cluster::start_seeded(&refs, |i| seed * 1000 + i as u64);
        for node in c.nodes.values() {
            assert!(!node.persisting(), "a booted node persists nothing");
            node.disk.hold();
        }
        Sim {
            seed,
            rng: Rng::new(seed),
            c,
            starts: n as u64,
            ids,
            down: BTreeMap::new(),
            slow: BTreeSet::new(),
            cut: BTreeSet::new(),
            pending: Vec::new(),
            acked: Vec::new(),
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            writes: 0,
            max_net: 0,
            led: 0,
            stale: 0,
            verbose: std::env::var_os("NODE_SIM_TRACE").is_some(),
            trace: DefaultHasher::new(),
        }
    }

    /// The whole run; returns its trace hash (same seed, same hash).
    pub async fn run(mut self) -> u64 {
        for _ in 0..CHAOS_STEPS {
            self.step().await;
            self.after_step();
        }
        self.converge().await;
        self.check_final();
        let committed = self.acked.iter().filter(|a| a.res.committed).count();
        eprintln!(
            "node sim seed {}: {} nodes, {} writes, {} acknowledged ({committed} committed), \
             {} process starts, {} terms with a leader, final commit {:?}, net max {}, led {}, stale answers {}",
            self.seed,
            self.ids.len(),
            self.writes,
            self.acked.len(),
            self.starts,
            self.leaders.len(),
            self.commit_indexes(),
            self.max_net,
            self.led,
            self.stale,
        );
        self.trace.finish()
    }

    fn note(&mut self, what: impl Hash + std::fmt::Debug) {
        if self.verbose {
            eprintln!("  {what:?}");
        }
        what.hash(&mut self.trace);
    }

    fn quorum(&self) -> usize {
        self.ids.len() / 2 + 1
    }

    fn up(&self) -> Vec<String> {
        self.c.nodes.keys().cloned().collect()
    }

    fn pick_up(&mut self) -> Option<String> {
        let up = self.up();
        (!up.is_empty()).then(|| up[self.rng.below(up.len())].clone())
    }

    async fn step(&mut self) {
        let roll = self.rng.below(1000);
        self.note(roll);
        match roll {
            0..=449 => self.deliver_one(),
            450..=464 => self.drop_one(),
            465..=479 => self.duplicate_one(),
            480..=679 => self.tick_one().await,
            680..=899 => self.finish_one().await,
            900..=903 => self.toggle_slow(),
            904..=909 => self.crash_one().await,
            910..=937 => self.restart_one(),
            938..=941 => self.partition(),
            942..=949 => self.cut.clear(),
            _ => self.client_write(),
        }
        self.max_net = self.max_net.max(self.c.net.len());
        self.led += self.leader().is_some() as usize;
    }

    /// Move what was sent into the network, check the invariants, collect answers.
    fn after_step(&mut self) {
        self.collect();
        self.check_leaders();
        self.check_committed();
        self.poll_writes();
    }

    /// Move what the nodes sent into the network, each message checked
    /// against its sender's durable state (`check_durable`).
    fn collect(&mut self) {
        for n in self.c.nodes.values() {
            for s in n.wire.take() {
                if self.verbose {
                    eprintln!(
                        "    sent {} (durable {} {:?})",
                        fingerprint(&s.env),
                        s.durable_last,
                        s.durable_hs
                    );
                }
                check_durable(&s);
                self.stale += stale_append_answer(&s) as usize;
                self.c.net.push(s.env);
            }
        }
    }

    fn deliver_one(&mut self) {
        if self.c.net.is_empty() {
            return;
        }
        let env = self.c.net.remove(self.rng.below(self.c.net.len()));
        self.deliver(env);
    }

    /// Deliver `env` unless its destination is down or cut off from its sender.
    fn deliver(&mut self, env: Envelope) {
        let cut = self.cut.contains(&(env.from.clone(), env.to.clone()));
        self.note((fingerprint(&env), cut));
        if cut {
            return;
        }
        if let Some(node) = self.c.nodes.get_mut(&env.to) {
            node.deliver(env);
        }
    }

    fn drop_one(&mut self) {
        if !self.c.net.is_empty() {
            let env = self.c.net.remove(self.rng.below(self.c.net.len()));
            self.note(fingerprint(&env));
        }
    }

    fn duplicate_one(&mut self) {
        if !self.c.net.is_empty() {
            let env = self.c.net[self.rng.below(self.c.net.len())].clone();
            self.c.net.push(env);
        }
    }

    async fn tick_one(&mut self) {
        tokio::time::advance(TICK).await;
        if let Some(id) = self.pick_up() {
            self.note(&id);
            self.c.node(&id).tick();
        }
    }

    /// Let a node's job finish (perhaps refused for lack of space).
    async fn finish_one(&mut self) {
        let ready: Vec<String> = self
            .c
            .nodes
            .iter()
            .filter(|(id, n)| n.persisting() && !self.slow.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        if ready.is_empty() {
            return;
        }
        let id = ready[self.rng.below(ready.len())].clone();
        let refuse = self.rng.chance(10);
        self.note((&id, refuse));
        let node = self.c.node(&id);
        if refuse {
            node.disk.refuse_syncs(1);
        }
        finish(node).await;
    }

    fn toggle_slow(&mut self) {
        let id = self.ids[self.rng.below(self.ids.len())].clone();
        if !self.slow.remove(&id) {
            self.slow.insert(id);
        }
    }

    /// Crash a node, at a point of its persistence the seed picks.
    async fn crash_one(&mut self) {
        let Some(id) = self.pick_up() else { return };
        let point = if self.c.nodes[&id].persisting() {
            [CrashPoint::Now, CrashPoint::AfterSync, CrashPoint::MidTurn][self.rng.below(3)]
        } else {
            CrashPoint::Now
        };
        self.note((&id, format!("{point:?}")));
        let node = self.c.node(&id);
        match point {
            CrashPoint::Now => {}
            CrashPoint::AfterSync => drop(finished(node).await),
            CrashPoint::MidTurn => {
                let f = finished(node).await;
                node.ctl
                    .on_event(Event::from(f))
                    .expect("fatal storage error");
            }
        }
        // What the dying turn sent did leave.
        self.collect();
        let old = self.c.nodes.remove(&id).expect("up");
        let disk = old.disk.crash();
        drop(old);
        self.down.insert(id, disk);
    }

    fn restart_one(&mut self) {
        let down: Vec<String> = self.down.keys().cloned().collect();
        if down.is_empty() {
            return;
        }
        let id = down[self.rng.below(down.len())].clone();
        self.restart(&id);
    }

    fn restart(&mut self, id: &str) {
        let disk = self.down.remove(id).expect("down");
        disk.hold();
        self.starts += 1;
        let seed = self.seed * 1000 + self.starts;
        self.note((id, seed));
        let node = Node::start_seeded(id, disk, seed);
        self.c.nodes.insert(id.to_string(), node);
    }

    /// Cut a random minority off from the rest.
    fn partition(&mut self) {
        self.cut.clear();
        let n = self.ids.len();
        let size = 1 + self.rng.below(n / 2);
        let mut side = BTreeSet::new();
        while side.len() < size {
            side.insert(self.ids[self.rng.below(n)].clone());
        }
        for a in &side {
            for b in self.ids.iter().filter(|b| !side.contains(*b)) {
                self.cut.insert((a.clone(), b.clone()));
                self.cut.insert((b.clone(), a.clone()));
            }
        }
        self.note(&side);
    }

    /// A client write with a seeded concern, mostly to the leader.
    fn client_write(&mut self) {
        let leader = self.leader();
        let id = match leader {
            Some(l) if self.rng.chance(80) => l,
            _ => match self.pick_up() {
                Some(id) => id,
                None => return,
            },
        };
        let n = self.ids.len();
        let (w, count) = match self.rng.below(4) {
            0 => (WriteConcern::Count(1), 1),
            1 => (WriteConcern::Count(2), 2),
            2 => (WriteConcern::Majority, self.quorum()),
            _ => (WriteConcern::All, n),
        };
        self.writes += 1;
        let msg = format!("s{}-m{}", self.seed, self.writes);
        self.note((&id, &msg, count));
        let rx = self.write(&id, &msg, w);
        self.pending.push(Pending { msg, w: count, rx });
    }

    fn write(&mut self, id: &str, msg: &str, w: WriteConcern) -> Reply {
        let (reply, rx) = oneshot::channel();
        let req = WriteRequest {
            w: Some(w),
            ..WriteRequest::single(msg)
        };
        self.c.node(id).cmd(Cmd::Write { req, reply });
        rx
    }

    /// The up node that leads in the highest term, if any.
    fn leader(&self) -> Option<String> {
        self.c
            .nodes
            .iter()
            .filter(|(_, n)| n.raft().is_leader())
            .max_by_key(|(_, n)| n.raft().term())
            .map(|(id, _)| id.clone())
    }

    fn check_leaders(&mut self) {
        for (id, n) in &self.c.nodes {
            if !n.raft().is_leader() {
                continue;
            }
            let term = n.raft().term();
            let first = self.leaders.entry(term).or_insert_with(|| id.clone());
            assert_eq!(
                first,
                id,
                "seed {}: two leaders in term {term}{}",
                self.seed,
                rerun(self.seed)
            );
        }
    }

    /// No two nodes ever hold different entries at an index one of them committed.
    fn check_committed(&mut self) {
        for (id, n) in &self.c.nodes {
            let r = n.raft();
            let from = self.committed.keys().next_back().map_or(1, |i| i + 1);
            for (i, e) in self.committed.range(..=r.commit_index()) {
                let mine = r.entry(*i);
                assert!(
                    mine.is_none_or(|m| m == e),
                    "seed {}: {id} holds {mine:?} at committed index {i}, not {e:?}{}",
                    self.seed,
                    rerun(self.seed)
                );
            }
            for i in from..=r.commit_index() {
                if let Some(e) = r.entry(i) {
                    self.committed.insert(i, e.clone());
                }
            }
        }
    }

    /// Take the answers given so far; a success must be durable where it says.
    fn poll_writes(&mut self) {
        let mut waiting = Vec::new();
        for mut p in std::mem::take(&mut self.pending) {
            match p.rx.try_recv() {
                Ok(Ok(res)) => {
                    self.note((&p.msg, res.index, res.term, res.offset, res.committed));
                    self.check_acked(&p, &res);
                    self.acked.push(Acked { msg: p.msg, res });
                }
                Ok(Err(e)) => self.note((&p.msg, e.to_string())),
                Err(oneshot::error::TryRecvError::Empty) => waiting.push(p),
                // The node died with the write: no answer is no promise.
                Err(oneshot::error::TryRecvError::Closed) => self.note(&p.msg),
            }
        }
        self.pending = waiting;
    }

    fn check_acked(&self, p: &Pending, res: &WriteResult) {
        let need = if res.committed {
            p.w.max(self.quorum())
        } else {
            1
        };
        let holding = self
            .disks()
            .filter(|d| {
                d.durable()
                    .entries
                    .iter()
                    .any(|e| e.index == res.index && e.term == res.term)
            })
            .count();
        assert!(
            holding >= need && res.acks >= p.w,
            "seed {}: write {} answered {res:?} (w={}) but durable on {holding} disks, {need} needed{}",
            self.seed,
            p.msg,
            p.w,
            rerun(self.seed)
        );
    }

    fn disks(&self) -> impl Iterator<Item = &Disk> {
        self.c
            .nodes
            .values()
            .map(|n| &n.disk)
            .chain(self.down.values())
    }

    /// Heal everything, restart every node, and run fairly until a leader
    /// commits a final write and every node has applied it.
    async fn converge(&mut self) {
        self.cut.clear();
        self.slow.clear();
        for id in self.down.keys().cloned().collect::<Vec<_>>() {
            self.restart(&id);
        }
        for n in self.c.nodes.values() {
            n.disk.refuse_syncs(0);
        }
        let mut last: Option<Pending> = None;
        let mut final_index = None;
        for _ in 0..LIVENESS_ROUNDS {
            for env in std::mem::take(&mut self.c.net) {
                self.deliver(env);
            }
            for n in self.c.nodes.values_mut() {
                while n.persisting() {
                    finish(n).await;
                }
            }
            tokio::time::advance(TICK).await;
            for n in self.c.nodes.values_mut() {
                n.tick();
            }
            self.after_step();
            if final_index.is_none() {
                final_index = self.final_write(&mut last);
            }
            if final_index.is_some_and(|i| self.converged(i)) {
                return;
            }
        }
        panic!(
            "seed {}: no convergence within {LIVENESS_ROUNDS} rounds after healing \
             (leader {:?}, commit indexes {:?}){}",
            self.seed,
            self.leader(),
            self.commit_indexes(),
            rerun(self.seed)
        );
    }

    /// Keep a final majority write going to the leader; its index once acknowledged.
    fn final_write(&mut self, last: &mut Option<Pending>) -> Option<u64> {
        if let Some(p) = last.as_mut() {
            match p.rx.try_recv() {
                Ok(Ok(res)) => {
                    let p = last.take().expect("pending");
                    self.check_acked(&p, &res);
                    let index = res.index;
                    self.acked.push(Acked { msg: p.msg, res });
                    return Some(index);
                }
                Err(oneshot::error::TryRecvError::Empty) => return None,
                _ => *last = None,
            }
        }
        let leader = self.leader()?;
        let msg = format!("s{}-final", self.seed);
        let rx = self.write(&leader, &msg, WriteConcern::Majority);
        *last = Some(Pending {
            msg,
            w: self.quorum(),
            rx,
        });
        None
    }

    fn converged(&self, index: u64) -> bool {
        let commits = self.commit_indexes();
        let top = commits.values().max().copied().unwrap_or(0);
        self.c.nodes.len() == self.ids.len()
            && top >= index
            && self
                .c
                .nodes
                .values()
                .all(|n| n.raft().commit_index() == top && n.applied_index() == top)
    }

    fn commit_indexes(&self) -> BTreeMap<String, u64> {
        let c = self.c.nodes.iter();
        c.map(|(id, n)| (id.clone(), n.raft().commit_index()))
            .collect()
    }

    /// Every write acknowledged as committed is everywhere, where it was said
    /// to be; the state machines agree.
    fn check_final(&mut self) {
        let seed = self.seed;
        let mut machines = BTreeMap::new();
        for (id, n) in &self.c.nodes {
            let msgs = n.ctl.sm.read(0, usize::MAX).expect("in-memory read");
            for a in self.acked.iter().filter(|a| a.res.committed) {
                let e = n.raft().entry(a.res.index);
                let same = e.is_some_and(|e| e.term == a.res.term && carries(e, &a.msg));
                assert!(
                    same,
                    "seed {seed}: acknowledged write {a:?} is not at its index on {id} (holds {e:?}){}",
                    rerun(seed)
                );
                let at = msgs.iter().find(|(o, _)| *o == a.res.offset);
                assert!(
                    at.is_some_and(|(_, m)| m[..] == *a.msg.as_bytes()),
                    "seed {seed}: acknowledged write {a:?} is not at its offset on {id} (holds {at:?}){}",
                    rerun(seed)
                );
            }
            machines.insert(id.clone(), msgs);
        }
        let first = machines.values().next().expect("nodes");
        for (id, m) in &machines {
            assert!(
                m == first,
                "seed {seed}: {id}'s messages differ{}",
                rerun(seed)
            );
        }
        let summary: Vec<(String, u64, u64)> = self
            .c
            .nodes
            .iter()
            .map(|(id, n)| (id.clone(), n.raft().commit_index(), n.raft().term()))
            .collect();
        let acked: Vec<(u64, u64, u64)> = self
            .acked
            .iter()
            .map(|a| (a.res.index, a.res.term, a.res.offset))
            .collect();
        self.note((summary, acked, first.len()));
    }
}

/// Open the held gate for the job in flight, take its result, close the gate
/// again before anything else runs (no later job passes it unbidden).
async fn finished(
    node: &mut Node,
) -> crate::node::persistence::Finished<super::testdrive::DiskStore> {
    assert!(node.persisting(), "no persistence job in flight");
    node.disk.release();
    let f = node.ctl.persistence.next_finished().await;
    node.disk.hold();
    f
}

/// [`finished`], then the turn that takes the result.
async fn finish(node: &mut Node) {
    let f = finished(node).await;
    node.turn(Event::from(f));
}

/// Does `e` carry the message `msg`? (Its encoding holds the text as is.)
fn carries(e: &Entry, msg: &str) -> bool {
    match &e.payload {
        EntryPayload::Command(c) => c.windows(msg.len()).any(|w| w == msg.as_bytes()),
        _ => false,
    }
}

/// A message without the entries' payloads (they hold wall-clock stamps).
fn fingerprint(env: &Envelope) -> String {
    match &env.msg {
        Message::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            let e: Vec<(u64, u64)> = entries.iter().map(|e| (e.index, e.term)).collect();
            format!(
                "{}>{} t{} append {prev_index}/{prev_term} {e:?} c{commit}",
                env.from, env.to, env.term
            )
        }
        Message::Snapshot { snapshot } => {
            format!(
                "{}>{} t{} snapshot {:?}",
                env.from, env.to, env.term, snapshot.meta
            )
        }
        m => format!("{}>{} t{} {m:?}", env.from, env.to, env.term),
    }
}

fn rerun(seed: u64) -> String {
    format!("\n  rerun: NODE_SIM_SEED={seed} cargo nextest run --lib controller::sim")
}

/// The seeds to run: `NODE_SIM_SEED` alone, else `NODE_SIM_SEEDS` or the default count.
fn seeds() -> Vec<u64> {
    let var = |k: &str| std::env::var(k).ok().map(|v| v.parse::<u64>().expect(k));
    if let Some(s) = var("NODE_SIM_SEED") {
        return vec![s];
    }
    (0..var("NODE_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect()
}

/// Names the seed of a failure that panicked inside the harness.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("node sim failed at seed {}{}", self.0, rerun(self.0));
        }
    }
}

async fn run_seed(seed: u64) -> u64 {
    let guard = SeedGuard(seed);
    let hash = Sim::new(seed).run().await;
    drop(guard);
    hash
}

#[tokio::test(start_paused = true)]
async fn seeded_chaos_loses_no_acknowledged_write() {
    for seed in seeds() {
        run_seed(seed).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_runs_the_same() {
    for seed in [3, 4] {
        let a = run_seed(seed).await;
        let b = run_seed(seed).await;
        assert_eq!(a, b, "seed {seed} ran differently twice{}", rerun(seed));
    }
}
