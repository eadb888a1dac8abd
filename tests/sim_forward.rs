//! Seeded simulation of forwarded writes that follow the leader (SPEC §6): every
//! client write carries an idempotency key and, whenever the leader it was sent
//! to is replaced before the write is known committed, is proposed again to the
//! new leader under the same key, as a forwarding follower does. Leaders are cut
//! off (both ways, or only from the followers' answers), crashed and restarted
//! meanwhile, over a network that delays messages, so the raw Raft log really does hold
//! several copies of some writes.
//!
//! Checked per seed: the committed log, applied through the node's real state
//! machine (`raftlog::state_machine`), holds every write at most once, and every
//! write whose proposal was committed exactly once; and across all seeds some
//! writes were re-sent and some landed twice in the raw log (else this tests
//! nothing). `SIM_FORWARD_SEEDS=<n>` runs a longer soak.

mod common;

use bytes::Bytes;
use common::{Cluster, Opts, TraceMode};
use raftlog::core::EntryPayload;
use raftlog::state_machine::{Command, StateMachine};
use rand::Rng;
use std::collections::BTreeMap;

const DEFAULT_SEEDS: u64 = 120;
const CHAOS_TICKS: u64 = 500;

/// A client write as its forwarding follower tracks it.
struct Pending {
    key: u64,
    /// The leader it was last sent to, in which term, at which index.
    sent: Option<(String, u64, u64)>,
}

fn command(key: u64) -> Bytes {
    Command::single(
        Some(format!("\0fwd/sim/{key}")),
        Bytes::from(format!("m{key}")),
    )
    .encode()
}

fn step(c: &mut Cluster) {
    c.tick_all();
    c.deliver_due(4);
    c.check_all();
}

/// Send (or re-send) every pending write whose leader is gone to the leader now.
fn follow(c: &mut Cluster, pending: &mut [Pending], resends: &mut u64) {
    let Some(l) = c.leader() else { return };
    let term = c.raft(&l).term();
    for p in pending.iter_mut() {
        let current = p
            .sent
            .as_ref()
            .is_some_and(|(s, t, _)| *s == l && *t == term);
        if current {
            continue;
        }
        if p.sent.is_some() {
            *resends += 1;
        }
        if let Ok((index, t)) = c.raft_mut(&l).propose(command(p.key)) {
            p.sent = Some((l.clone(), t, index));
            c.drive(&l);
        }
    }
}

/// A write is known committed when the leader it went to committed its index in
/// its term: the follower would then get its answer and stop following.
fn answered(c: &Cluster, p: &Pending) -> bool {
    let Some((leader, term, index)) = &p.sent else {
        return false;
    };
    c.is_up(leader) && {
        let r = c.raft(leader);
        r.commit_index() >= *index && r.entry_term(*index) == Some(*term)
    }
}

/// Drop the writes that got their answer, noting their keys.
fn settle(c: &Cluster, pending: &mut Vec<Pending>, answered_keys: &mut Vec<u64>) {
    pending.retain(|p| {
        let done = answered(c, p);
        if done {
            answered_keys.push(p.key);
        }
        !done
    });
}

struct Outcome {
    resends: u64,
    raw_duplicates: u64,
    answered: Vec<u64>,
}

fn run_seed(seed: u64) -> Outcome {
    let mut c = Cluster::bootstrap(Opts::default(), &["n1", "n2", "n3"], seed, TraceMode::Off);
    let mut pending: Vec<Pending> = Vec::new();
    let mut answered_keys = Vec::new();
    let (mut next_key, mut resends) = (0u64, 0u64);
    let mut isolated_until: Option<u64> = None;
    c.net.max_delay = 2;
    while c.now < CHAOS_TICKS {
        if c.rng.gen_bool(0.3) {
            pending.push(Pending {
                key: next_key,
                sent: None,
            });
            next_key += 1;
        }
        if isolated_until.is_none() && c.rng.gen_bool(0.02) {
            if let Some(l) = c.leader() {
                match c.rng.gen_range(0..3) {
                    0 => c.isolate(&l),
                    1 => c.crash(&l),
                    // Its appends still arrive, the answers do not: followers hold
                    // entries it never learns are committed.
                    _ => {
                        for o in ["n1", "n2", "n3"].into_iter().filter(|o| *o != l) {
                            c.net.blocked.insert((o.into(), l.clone()));
                        }
                    }
                }
                isolated_until = Some(c.now + c.rng.gen_range(20..80));
            }
        }
        if isolated_until.is_some_and(|t| c.now >= t) {
            c.heal();
            for id in ["n1", "n2", "n3"] {
                if !c.is_up(id) {
                    c.restart(id);
                }
            }
            isolated_until = None;
        }
        follow(&mut c, &mut pending, &mut resends);
        step(&mut c);
        settle(&c, &mut pending, &mut answered_keys);
    }
    c.heal();
    for id in ["n1", "n2", "n3"] {
        if !c.is_up(id) {
            c.restart(id);
        }
    }
    // Liveness: the followers keep following until every write is answered.
    let deadline = c.now + 2000;
    while !pending.is_empty() {
        assert!(c.now < deadline, "seed {seed}: writes never answered");
        follow(&mut c, &mut pending, &mut resends);
        step(&mut c);
        settle(&c, &mut pending, &mut answered_keys);
    }
    while !c.leader().is_some_and(|l| {
        c.raft(&l).entry_term(c.raft(&l).commit_index()) == Some(c.raft(&l).term())
    }) {
        assert!(c.now < deadline, "seed {seed}: no leader after healing");
        step(&mut c);
    }
    check_log(&c, seed, &answered_keys, resends)
}

/// Apply the leader's committed log through the real state machine.
fn check_log(c: &Cluster, seed: u64, answered: &[u64], resends: u64) -> Outcome {
    let l = c.leader().expect("a leader after healing");
    let r = c.raft(&l);
    let mut sm = StateMachine::new(1 << 20);
    let mut raw: BTreeMap<u64, u64> = BTreeMap::new();
    for index in 1..=r.commit_index() {
        let e = r
            .entry(index)
            .unwrap_or_else(|| panic!("seed {seed}: entry {index} not in the log"));
        if let EntryPayload::Command(b) = &e.payload {
            let Some(Command::Append(a)) = Command::decode(b.clone()) else {
                panic!("seed {seed}: entry {index} is not an append");
            };
            let key: u64 = a.key.expect("keyed")[9..].parse().expect("key");
            *raw.entry(key).or_default() += 1;
        }
        sm.apply(e);
    }
    let msgs = sm.read(0, usize::MAX).expect("read");
    let mut copies: BTreeMap<String, u64> = BTreeMap::new();
    for (_, m) in &msgs {
        *copies
            .entry(String::from_utf8_lossy(m).into_owned())
            .or_default() += 1;
    }
    for (m, n) in &copies {
        assert_eq!(*n, 1, "seed {seed}: {m} appended {n} times");
    }
    for k in answered {
        let m = format!("m{k}");
        assert_eq!(
            copies.get(&m),
            Some(&1),
            "seed {seed}: answered {m} not in the log once"
        );
    }
    Outcome {
        resends,
        raw_duplicates: raw.values().filter(|&&n| n > 1).count() as u64,
        answered: answered.to_vec(),
    }
}

#[test]
fn resent_writes_land_once_across_leader_changes() {
    let seeds: u64 = std::env::var("SIM_FORWARD_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEEDS);
    let (mut resends, mut dups, mut answered) = (0, 0, 0);
    for seed in 0..seeds {
        let o = run_seed(seed);
        resends += o.resends;
        dups += o.raw_duplicates;
        answered += o.answered.len();
    }
    println!("{seeds} seeds: {answered} writes answered, {resends} re-sends, {dups} keys with several copies in the raw log");
    assert!(
        resends > 0,
        "no write was ever re-sent: the test tests nothing"
    );
    assert!(
        dups > 0,
        "no key ever landed twice in the raw log: dedup never tested"
    );
}
