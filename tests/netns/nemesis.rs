//! The nemesis: a schedule of fault phases drawn from the seed before the run, and
//! its execution against the cluster.
//!
//! A phase applies one fault (sometimes a network fault and a process fault
//! together), holds it, heals everything (network rules removed, paused nodes
//! continued, killed nodes restarted), then lets the cluster settle. Targets are
//! hosts drawn from the seed, or "the leader", resolved when the phase starts
//! (with a drawn fallback host when there is none). What the network does with
//! packets is not seeded; everything the harness decides is.

use super::cluster::{call, Cluster};
use super::diskdamage;
use super::history::History;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::fmt;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The leader when the phase starts (else the fallback host).
    Leader {
        fallback: usize,
    },
    Host(usize),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Leader { fallback } => write!(f, "leader (else host {fallback})"),
            Target::Host(h) => write!(f, "host {h}"),
        }
    }
}

#[derive(Clone, Debug)]
pub enum Fault {
    /// Two-way partition: `side` against the rest.
    Halves {
        side: Vec<usize>,
    },
    /// The leader cut off from every other node, both ways.
    IsolateLeader,
    /// `left` and `right` cannot talk; `middle` talks to both (a bridge).
    Bridge {
        left: Vec<usize>,
        right: Vec<usize>,
    },
    /// One way: the target hears no other node (it can still send).
    Deaf(Target),
    /// One way: no other node hears the target (it still receives).
    Unheard(Target),
    Loss {
        host: Target,
        pct: u32,
    },
    Delay {
        host: Target,
        ms: u32,
        jitter_ms: u32,
        loss_pct: u32,
    },
    Kill(Target),
    /// Every node SIGKILLed at once, restarted at the heal.
    KillAll,
    Pause(Target),
    /// Leadership transfers to drawn hosts during the hold.
    Transfers {
        to: Vec<usize>,
    },
    /// Remove the node from the membership, kill it, wipe it, and let a new node
    /// (new id, empty data dir) join from the same host.
    Replace(Target),
    /// SIGKILL the node, damage one of its files (kind and file drawn with
    /// `pick` among those present), restart it (see `damage`).
    Damage {
        host: Target,
        pick: u64,
        how: diskdamage::Damage,
    },
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Halves { .. } => "partition-halves",
            Fault::IsolateLeader => "isolate-leader",
            Fault::Bridge { .. } => "partition-bridge",
            Fault::Deaf(_) => "one-way-deaf",
            Fault::Unheard(_) => "one-way-unheard",
            Fault::Loss { .. } => "packet-loss",
            Fault::Delay { .. } => "delay",
            Fault::Kill(_) => "kill-restart",
            Fault::KillAll => "kill-all-restart",
            Fault::Pause(_) => "pause-continue",
            Fault::Transfers { .. } => "leadership-transfer",
            Fault::Replace(_) => "membership-replace",
            Fault::Damage { .. } => "disk-damage-restart",
        }
    }

    /// Aimed at the leader alone (when one is known as the phase starts).
    fn hits_the_leader(&self) -> bool {
        use Target::Leader as L;
        matches!(
            self,
            Fault::IsolateLeader
                | Fault::Kill(L { .. })
                | Fault::Pause(L { .. })
                | Fault::Deaf(L { .. })
                | Fault::Unheard(L { .. })
        )
    }

    fn is_network(&self) -> bool {
        matches!(
            self,
            Fault::Halves { .. }
                | Fault::IsolateLeader
                | Fault::Bridge { .. }
                | Fault::Deaf(_)
                | Fault::Unheard(_)
                | Fault::Loss { .. }
                | Fault::Delay { .. }
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Halves { side } => write!(f, "partition {side:?} | rest"),
            Fault::IsolateLeader => write!(f, "isolate the leader"),
            Fault::Bridge { left, right } => write!(
                f,
                "bridge partition {left:?} | {right:?}, the rest sees both"
            ),
            Fault::Deaf(t) => write!(f, "{t} hears no other node (one way)"),
            Fault::Unheard(t) => write!(f, "no node hears {t} (one way)"),
            Fault::Loss { host, pct } => write!(f, "{pct}% loss into {host}"),
            Fault::Delay {
                host,
                ms,
                jitter_ms,
                loss_pct,
            } => {
                write!(
                    f,
                    "{ms}ms +/- {jitter_ms}ms delay, {loss_pct}% loss into {host}"
                )
            }
            Fault::Kill(t) => write!(f, "SIGKILL {t}, restart at heal"),
            Fault::KillAll => write!(f, "SIGKILL every node, restart at heal"),
            Fault::Pause(t) => write!(f, "SIGSTOP {t}, SIGCONT at heal"),
            Fault::Transfers { to } => write!(f, "leadership transfers to hosts {to:?}"),
            Fault::Replace(t) => write!(
                f,
                "remove {t} from the cluster, a new node joins from its host"
            ),
            Fault::Damage { host, how, .. } => {
                write!(f, "SIGKILL {host}, {how:?} in one of its files, restart")
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct Phase {
    pub faults: Vec<Fault>,
    pub hold: Duration,
    pub settle: Duration,
}

/// Number of fault kinds (see [`Fault::kind`]).
pub const KINDS: u8 = 13;

/// Primary fault kinds: a shuffled deck of every kind, reshuffled when used up,
/// so a schedule of `KINDS` phases shows each kind once. The 5-node schedule of a
/// seed starts half a deck later than the 3-node one, so a short CI run of both
/// sizes still sees every kind.
fn deck(seed: u64, n: usize) -> impl Iterator<Item = u8> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_dec0);
    let decks = std::iter::repeat_with(move || {
        let mut d: Vec<u8> = (0..KINDS).collect();
        d.shuffle(&mut rng);
        d
    });
    decks
        .flatten()
        .skip(if n >= 5 { KINDS as usize / 2 } else { 0 })
}

/// The disk-damage kind (see [`make`]).
const DAMAGE: u8 = 12;
/// Disk damage is not drawn before this far into the schedule: a node needs
/// sealed segments or a snapshot to damage. Drawn earlier, it waits for the
/// first phase after this point.
const DAMAGE_NOT_BEFORE: Duration = Duration::from_secs(20);

/// Draws phases until they fill `total`.
pub fn schedule(seed: u64, n: usize, total: Duration) -> Vec<Phase> {
    let mut rng = StdRng::seed_from_u64(seed);
    let hosts: Vec<usize> = (1..=n).collect();
    let mut kinds = deck(seed, n);
    let mut out = Vec::new();
    let mut t = Duration::ZERO;
    let mut deferred = None;
    while t < total {
        let mut kind = kinds.next().expect("endless deck");
        if t < DAMAGE_NOT_BEFORE && kind == DAMAGE {
            deferred = Some(kind);
            kind = kinds.next().expect("endless deck");
        } else if let (true, Some(d)) = (t >= DAMAGE_NOT_BEFORE, deferred) {
            // Damage now; the kind drawn instead comes next (nothing is lost).
            deferred = Some(kind);
            kind = d;
        }
        let primary = make(&mut rng, &hosts, kind);
        let mut faults = vec![primary.clone()];
        let alone = matches!(
            primary,
            Fault::Replace(_) | Fault::KillAll | Fault::Damage { .. }
        );
        if !alone && rng.gen_bool(0.3) {
            // A second fault of the other family (network + process).
            let secondary: &[u8] = if primary.is_network() {
                &[7, 9, 9, 10]
            } else {
                &[5, 6]
            };
            let k = *secondary.choose(&mut rng).expect("kinds");
            faults.push(make(&mut rng, &hosts, k));
        }
        let hold = Duration::from_millis(rng.gen_range(2500..7000));
        let settle = Duration::from_millis(rng.gen_range(1000..3000));
        t += hold + settle;
        out.push(Phase {
            faults,
            hold,
            settle,
        });
    }
    out
}

/// Only faults of the leader alone (isolation, one-way cuts, SIGKILL, SIGSTOP),
/// each in a phase of its own, for the failover figures
/// (`NEMESIS_LEADER_FAULTS=1`).
pub fn leader_schedule(seed: u64, total: Duration) -> Vec<Phase> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut t = Duration::ZERO;
    while t < total {
        let fallback = 1;
        let leader = Target::Leader { fallback };
        let fault = match rng.gen_range(0..5) {
            0 => Fault::IsolateLeader,
            1 => Fault::Deaf(leader),
            2 => Fault::Unheard(leader),
            3 => Fault::Kill(leader),
            _ => Fault::Pause(leader),
        };
        let hold = Duration::from_millis(rng.gen_range(2500..4000));
        let settle = Duration::from_millis(rng.gen_range(1000..2000));
        t += hold + settle;
        out.push(Phase {
            faults: vec![fault],
            hold,
            settle,
        });
    }
    out
}

fn make(rng: &mut StdRng, hosts: &[usize], kind: u8) -> Fault {
    let n = hosts.len();
    let host = |rng: &mut StdRng| *hosts.choose(rng).expect("hosts");
    let target = |rng: &mut StdRng| {
        let fallback = *hosts.choose(rng).expect("hosts");
        if rng.gen_bool(0.5) {
            Target::Leader { fallback }
        } else {
            Target::Host(fallback)
        }
    };
    match kind {
        0 => {
            let mut s = hosts.to_vec();
            s.shuffle(rng);
            let k = rng.gen_range(1..=n / 2);
            let mut side = s[..k].to_vec();
            side.sort();
            Fault::Halves { side }
        }
        1 => Fault::IsolateLeader,
        2 => {
            let mut s = hosts.to_vec();
            s.shuffle(rng);
            let k = (n - 1) / 2;
            let (mut left, mut right) = (s[..k].to_vec(), s[n - k..].to_vec());
            left.sort();
            right.sort();
            Fault::Bridge { left, right }
        }
        3 => Fault::Deaf(target(rng)),
        4 => Fault::Unheard(target(rng)),
        5 => Fault::Loss {
            host: target(rng),
            pct: rng.gen_range(10..=40),
        },
        6 => Fault::Delay {
            host: target(rng),
            ms: rng.gen_range(20..=250),
            jitter_ms: rng.gen_range(0..=20),
            loss_pct: if rng.gen_bool(0.3) {
                rng.gen_range(1..=10)
            } else {
                0
            },
        },
        7 => Fault::Kill(target(rng)),
        8 => Fault::KillAll,
        9 => Fault::Pause(target(rng)),
        10 => Fault::Transfers {
            to: (0..rng.gen_range(1..=3)).map(|_| host(rng)).collect(),
        },
        11 => Fault::Replace(target(rng)),
        _ => Fault::Damage {
            host: target(rng),
            pick: rng.gen(),
            how: *diskdamage::DAMAGES.choose(rng).expect("damages"),
        },
    }
}

/// Runs a schedule; counts the faults injected by kind.
pub struct Nemesis<'a> {
    pub cluster: &'a Cluster,
    pub hist: &'a History,
    pub counts: BTreeMap<&'static str, usize>,
    /// Phases whose only fault hit the leader (for the failover figures).
    pub leader_faults: Vec<super::failover::LeaderFault>,
    /// Hosts killed and not yet restarted.
    down: Vec<usize>,
    /// Nodes given disk damage, and their repair times.
    pub repairs: Vec<super::damage::Repair>,
    /// Wrong bytes (or undetected damage) the read-back of a damaged node found.
    pub damage_findings: Vec<String>,
}

impl<'a> Nemesis<'a> {
    pub fn new(cluster: &'a Cluster, hist: &'a History) -> Nemesis<'a> {
        Nemesis {
            cluster,
            hist,
            counts: BTreeMap::new(),
            leader_faults: Vec::new(),
            down: Vec::new(),
            repairs: Vec::new(),
            damage_findings: Vec::new(),
        }
    }

    fn resolve(&self, t: Target) -> usize {
        match t {
            Target::Host(h) => h,
            Target::Leader { fallback } => self.cluster.leader().unwrap_or(fallback),
        }
    }

    fn count(&mut self, f: &Fault) {
        *self.counts.entry(f.kind()).or_default() += 1;
    }

    /// Runs phase `i`; the last one is left unhealed: the final heal ends it, so
    /// the availability bound is measured from a real fault.
    pub fn run_phase(&mut self, i: usize, p: &Phase, last: bool) {
        let desc: Vec<String> = p.faults.iter().map(|f| f.to_string()).collect();
        self.hist.fault(format!("phase {i}: {}", desc.join(" + ")));
        let leader = self.cluster.leader();
        let mut transfers = Vec::new();
        for f in &p.faults {
            match f {
                Fault::Transfers { to } => transfers.extend(to.iter().copied()),
                other => self.apply(other),
            }
        }
        if let ([f], Some(host)) = (&p.faults[..], leader) {
            if f.hits_the_leader() {
                let at = self.hist.now();
                self.leader_faults.push(super::failover::LeaderFault {
                    kind: f.kind(),
                    host,
                    at,
                    until: at + p.hold,
                });
            }
        }
        let hold_end = Instant::now() + p.hold;
        let step = p.hold / (transfers.len() as u32 + 1);
        for to in transfers {
            self.wait(Instant::now() + step);
            self.transfer(to);
        }
        self.wait(hold_end);
        if last {
            return;
        }
        self.heal();
        self.wait(Instant::now() + p.settle);
        if self.cluster.wait_leader(Duration::from_secs(15)).is_none() {
            self.hist
                .fault(format!("phase {i}: no leader 15s after the heal"));
        }
    }

    fn apply(&mut self, f: &Fault) {
        let c = self.cluster;
        let net = &c.net;
        let n = c.size();
        let others = |h: usize| -> Vec<usize> { (1..=n).filter(|&o| o != h).collect() };
        let res: Result<String, String> = match f {
            Fault::Halves { side } => net.split(side).map(|_| format!("{side:?} cut off")),
            Fault::IsolateLeader => match c.leader() {
                Some(l) => net.split(&[l]).map(|_| format!("leader is host {l}")),
                None => Err("no leader to isolate".into()),
            },
            Fault::Bridge { left, right } => net
                .partition(left, right)
                .map(|_| format!("{left:?} | {right:?}")),
            Fault::Deaf(t) => {
                let h = self.resolve(*t);
                net.deafen(&[h], &others(h)).map(|_| format!("host {h}"))
            }
            Fault::Unheard(t) => {
                let h = self.resolve(*t);
                net.deafen(&others(h), &[h]).map(|_| format!("host {h}"))
            }
            Fault::Loss { host, pct } => {
                let h = self.resolve(*host);
                net.loss(h, *pct).map(|_| format!("host {h}"))
            }
            Fault::Delay {
                host,
                ms,
                jitter_ms,
                loss_pct,
            } => {
                let h = self.resolve(*host);
                net.delay(h, *ms, *loss_pct, *jitter_ms)
                    .map(|_| format!("host {h}"))
            }
            Fault::Kill(t) => {
                let h = self.resolve(*t);
                if c.is_running(h) {
                    c.kill(h);
                    self.down.push(h);
                    Ok(format!("host {h} ({})", c.id(h)))
                } else {
                    Err(format!("host {h} is not running"))
                }
            }
            Fault::KillAll => {
                for h in c.hosts() {
                    if c.is_running(h) {
                        c.kill(h);
                        self.down.push(h);
                    }
                }
                Ok(format!("hosts {:?}", self.down))
            }
            Fault::Pause(t) => {
                let h = self.resolve(*t);
                if c.pause(h) {
                    Ok(format!("host {h} ({})", c.id(h)))
                } else {
                    Err(format!("host {h} is not running"))
                }
            }
            Fault::Transfers { .. } => Ok(String::new()),
            Fault::Replace(t) => self.replace(*t),
            Fault::Damage { host, pick, how } => {
                let h = self.resolve(*host);
                super::damage::inject(c, h, *pick, *how, &mut self.damage_findings).map(|r| {
                    let what = format!("host {h} ({}): {}", r.id, r.what);
                    self.repairs.push(r);
                    what
                })
            }
        };
        match res {
            Ok(detail) => {
                self.count(f);
                if !detail.is_empty() {
                    self.hist.fault(format!("  {}: {detail}", f.kind()));
                }
            }
            Err(e) => self.hist.fault(format!("  {} not injected: {e}", f.kind())),
        }
    }

    /// Everything back to normal: rules removed, nodes continued and restarted.
    pub fn heal(&mut self) {
        let c = self.cluster;
        c.net.heal();
        for h in c.hosts() {
            c.resume(h);
        }
        for h in std::mem::take(&mut self.down) {
            if !c.is_running(h) {
                c.start(h, false);
            }
        }
        revive(c, self.hist);
        self.hist.fault("heal".into());
    }

    fn transfer(&mut self, to: usize) {
        let c = self.cluster;
        let Some(l) = c.leader() else {
            self.hist
                .fault("  leadership-transfer skipped: no leader".into());
            return;
        };
        // To the drawn host, or the next one when the drawn host already leads.
        let to = if to == l { to % c.size() + 1 } else { to };
        let body = format!("{{\"to\":\"{}\"}}", c.id(to));
        let r = call(
            l,
            "POST",
            "/v1/cluster/transfer-leadership",
            Some(&body),
            Duration::from_secs(5),
        );
        let what = match &r {
            Ok(resp) => format!("{} {}", resp.status, resp.body.trim()),
            Err(e) => e.to_string(),
        };
        if matches!(&r, Ok(resp) if resp.status == 200) {
            *self.counts.entry("leadership-transfer").or_default() += 1;
        }
        self.hist.fault(format!(
            "  leadership-transfer host {l} -> host {to} ({}): {what}",
            c.id(to)
        ));
    }

    fn replace(&mut self, t: Target) -> Result<String, String> {
        let c = self.cluster;
        if c.wait_formed(Duration::from_secs(20)).is_none() {
            return Err("the cluster is not fully formed (a join still in progress)".into());
        }
        let h = self.resolve(t);
        let id = c.id(h);
        // DELETE on the leader; a 503 or a lost answer is retried on whoever leads.
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = String::new();
        let removed = loop {
            if let Some(l) = c.leader() {
                match call(
                    l,
                    "DELETE",
                    &format!("/v1/cluster/members/{id}"),
                    None,
                    Duration::from_secs(10),
                ) {
                    Ok(r) if r.status == 200 => break true,
                    Ok(r) => last = format!("{} {}", r.status, r.body.trim()),
                    Err(e) => last = e.to_string(),
                }
                // The change may have gone through without an answer.
                if let Some(ms) = c.leader().and_then(|l| c.members(l)) {
                    if !ms.iter().any(|(m, _)| *m == id) {
                        break true;
                    }
                }
            }
            if Instant::now() >= deadline {
                break false;
            }
            thread::sleep(Duration::from_millis(300));
        };
        if !removed {
            return Err(format!("removing {id} failed: {last}"));
        }
        // Only a confirmed removal may lose the node's data.
        let confirmed = (0..50).any(|_| {
            let gone = c
                .leader()
                .and_then(|l| c.members(l))
                .is_some_and(|ms| !ms.iter().any(|(m, _)| *m == id));
            if !gone {
                thread::sleep(Duration::from_millis(200));
            }
            gone
        });
        if !confirmed {
            return Err(format!(
                "{id}: DELETE answered but the leader still lists it; node kept"
            ));
        }
        // The removed node keeps running a moment (it must not disrupt anyone).
        thread::sleep(Duration::from_millis(700));
        c.kill(h);
        let new_id = c.renew(h);
        c.start(h, false);
        Ok(format!("host {h}: {id} removed, {new_id} joining"))
    }
}

/// Restarts every node that exited without the nemesis killing it (a crash, or
/// a signal from outside the harness), noting it in the timeline.
pub fn revive(c: &Cluster, hist: &History) {
    for h in c.hosts() {
        if let Some(status) = c.exit_status(h) {
            hist.fault(format!(
                "UNEXPECTED EXIT: host {h} ({}) exited on its own ({status}); restarting it. Log tail:\n{}",
                c.id(h),
                c.tail(h, 15)
            ));
            c.note_unexpected_exit(h, &status);
            c.start(h, false);
        }
    }
}

impl Nemesis<'_> {
    /// Sleeps until `t`, watching damaged nodes come back as voters meanwhile.
    fn wait(&mut self, t: Instant) {
        while let Some(d) = t.checked_duration_since(Instant::now()) {
            if self.repairs.iter().all(|r| r.done.is_some() || r.replaced) {
                thread::sleep(d);
                return;
            }
            super::damage::poll(self.cluster, &mut self.repairs);
            thread::sleep(d.min(Duration::from_millis(200)));
        }
    }
}
