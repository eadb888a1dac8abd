//! One nemesis run: network, cluster, clients, schedule, final heal, checker.
//!
//! Environment:
//! - `NEMESIS_SEED=<u64>`: the seed (default: drawn from the clock, printed).
//! - `NEMESIS_DURATION=<seconds>`: length of the fault schedule per cluster size
//!   (default 60: the CI run); e.g. 1200 for a 20-minute soak.
//! - `NEMESIS_LEADER_FAULTS=1`: only faults of the leader alone, one per phase
//!   (the failover figures of the README).
//! - `NEMESIS_KEEP=1`: keep the data dirs and node logs even when the run passes.
//! - `NEMESIS_NO_LEADER_UNKNOWN=1`: count a 503 `no_leader` answer to a write as
//!   an unknown outcome, not a definite failure (weakens check 2; only for
//!   looking for other bugs while that answer can still be wrong).
//!
//! A failing run prints its seed, the checks that failed with the offending
//! operations, the nemesis timeline and the tail of every node's log, and keeps
//! its directory. Same seed, same schedule, same client choices; the network's
//! timing is the only thing that differs between two runs.

use super::checker::{self, Input, NodeLog};
use super::cluster::Cluster;
use super::damage;
use super::failover;
use super::history::{History, Outcome, W};
use super::nemesis::{self, Nemesis};
use super::net::{self, Net};
use super::workload::{self, Clients, Mix};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long after the final heal a w = majority write must succeed.
const AVAILABLE_BOUND: Duration = Duration::from_secs(30);
/// Check 8: the longest a request to a healthy node may wait when the leader
/// fails: the election timeout (1 s here), the SPEC's second, and 2 s of slack
/// for a loaded machine. Requests that did not follow the leader waited for
/// their write timeout (8 s, `workload::WRITE_TIMEOUT_MS`).
const FAILOVER_BOUND: Duration = Duration::from_secs(4);
/// Clients keep going this long after the cluster is available again.
const QUIET: Duration = Duration::from_secs(5);
pub const DEFAULT_DURATION_S: u64 = 60;
/// How much longer than its schedule a run may take before the watchdog ends it.
const WATCHDOG_SLACK: Duration = Duration::from_secs(420);

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// Runs the harness on an `n`-node cluster, or skips (with a message) on a
/// machine that cannot: not root, or tools missing. Under `CI` a skip fails.
pub fn run(n: usize) {
    if let Some(why) = net::unsupported() {
        if std::env::var_os("CI").is_some() || std::env::var_os("NEMESIS_REQUIRED").is_some() {
            panic!("nemesis harness cannot run here: {why}");
        }
        eprintln!("nemesis harness skipped: {why}");
        return;
    }
    net::sweep_stale();
    let seed = env_u64("NEMESIS_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (t.as_nanos() as u64 ^ u64::from(std::process::id())) % 1_000_000_000
    });
    let duration = Duration::from_secs(env_u64("NEMESIS_DURATION").unwrap_or(DEFAULT_DURATION_S));
    let repro = format!(
        "NEMESIS_SEED={seed} NEMESIS_DURATION={} cargo test --test jepsen nemesis_{n}_nodes -- --ignored --nocapture",
        duration.as_secs()
    );
    eprintln!(
        "nemesis: {n} nodes, seed {seed}, schedule {}s\nnemesis: reproduce with {repro}",
        duration.as_secs()
    );
    let dir = tempfile::Builder::new()
        .prefix(&format!("raftlog-nemesis-{n}n-"))
        .tempdir()
        .expect("tempdir");
    let net = Arc::new(Net::up(n, &n.to_string(), dir.path()));
    let path = dir.path().to_path_buf();
    let net2 = net.clone();
    let done = Arc::new(AtomicBool::new(false));
    watchdog(
        net.prefix().to_string(),
        duration * 3 / 2 + WATCHDOG_SLACK,
        done.clone(),
        format!("seed {seed}; {repro}"),
        path.clone(),
    );
    let outcome = thread::Builder::new()
        .name(format!("nemesis-{n}"))
        .spawn(move || run_in_client_ns(net2, n, seed, duration, &path))
        .expect("spawn")
        .join();
    done.store(true, Ordering::SeqCst);
    drop(net); // the last reference: namespaces and their processes go
    match outcome {
        Ok(()) if std::env::var_os("NEMESIS_KEEP").is_none() => {}
        Ok(()) => eprintln!("nemesis: kept {}", dir.keep().display()),
        Err(panic) => {
            let kept = dir.keep();
            eprintln!("nemesis: FAILED with seed {seed}; node logs and data in {}\nnemesis: reproduce with {repro}", kept.display());
            std::panic::resume_unwind(panic);
        }
    }
}

/// Ends the whole test process (after removing its namespaces and everything in
/// them) if a run takes far longer than its schedule: a hang must not eat CI's
/// time, and must still name its seed.
fn watchdog(prefix: String, limit: Duration, done: Arc<AtomicBool>, repro: String, dir: PathBuf) {
    let deadline = Instant::now() + limit;
    thread::spawn(move || {
        while Instant::now() < deadline {
            if done.load(Ordering::SeqCst) {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "nemesis: TIMED OUT after {limit:?} ({repro}); node logs in {}",
            dir.display()
        );
        net::destroy(&prefix);
        std::process::exit(2);
    });
}

fn run_in_client_ns(net: Arc<Net>, n: usize, seed: u64, duration: Duration, dir: &std::path::Path) {
    net.enter_client();
    let started = Instant::now();
    let env = vec![
        (
            "RAFTLOG_RAFT__HEARTBEAT_INTERVAL_MS".to_string(),
            "50".to_string(),
        ),
        ("RAFTLOG_RAFT__ELECTION_TIMEOUT_MIN_MS".into(), "500".into()),
        (
            "RAFTLOG_RAFT__ELECTION_TIMEOUT_MAX_MS".into(),
            "1000".into(),
        ),
        // Small enough that snapshots, compaction and snapshot catch-up happen.
        ("RAFTLOG_SNAPSHOT__EVERY_ENTRIES".into(), "300".into()),
        // Small enough that sealed WAL and message segments (disk damage's
        // targets) exist within the CI run.
        ("RAFTLOG_WAL__SEGMENT_BYTES".into(), "16384".into()),
    ];
    let cluster = Cluster::new(net.clone(), dir, env);
    form(&cluster);
    eprintln!(
        "nemesis: {n}-node cluster formed in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let phases = if std::env::var("NEMESIS_LEADER_FAULTS").is_ok_and(|v| v == "1") {
        nemesis::leader_schedule(seed, duration)
    } else {
        nemesis::schedule(seed, n, duration)
    };
    eprintln!("nemesis: schedule of {} phases:", phases.len());
    for (i, p) in phases.iter().enumerate() {
        let f: Vec<String> = p.faults.iter().map(|f| f.to_string()).collect();
        eprintln!(
            "  {i:>3}: {} (hold {:.1}s, settle {:.1}s)",
            f.join(" + "),
            p.hold.as_secs_f64(),
            p.settle.as_secs_f64()
        );
    }

    let hist = Arc::new(History::new());
    let mix = Mix {
        writers: 4,
        linearizable_readers: 2,
        local_readers: 2,
    };
    let clients = Clients::start(net.clone(), n, hist.clone(), seed, &mix);
    let mut nem = Nemesis::new(&cluster, &hist);
    for (i, p) in phases.iter().enumerate() {
        nem.run_phase(i, p, i + 1 == phases.len());
    }

    // Final heal, then: how soon is a w = majority write acknowledged again?
    hist.fault("final heal".into());
    let healed = hist.now();
    nem.heal();
    let mut available_after = None;
    let mut k = 0;
    while hist.now() < healed + AVAILABLE_BOUND {
        k += 1;
        let host = 1 + k % n;
        let value = format!("probe-{k}");
        let key = format!("k-{value}");
        let spec = workload::WriteSpec::single(&value, Some(&key), W::Majority);
        if workload::write_op(&hist, 1000, host, &spec, 1).0 == Outcome::Ok {
            available_after = Some(hist.now() - healed);
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    match available_after {
        Some(t) => hist.fault(format!(
            "available again {:.2}s after the final heal",
            t.as_secs_f64()
        )),
        None => hist.fault("NOT available again after the final heal".into()),
    }
    thread::sleep(QUIET);
    clients.stop();
    hist.fault("clients stopped".into());

    // Membership settled (a replacement node may still be joining), then every
    // node's log converged.
    nemesis::revive(&cluster, &hist);
    if cluster.wait_formed(Duration::from_secs(60)).is_none() {
        hist.fault("membership did not settle within 60s of the quiet period".into());
    }
    damage::finish(&cluster, &mut nem.repairs);
    let logs = converged_logs(&cluster, &hist);
    let ops = hist.ops();
    let failovers = failover::measure(&ops, &nem.leader_faults);
    let result = checker::check(&Input {
        ops: &ops,
        logs: &logs,
        available_after,
        available_bound: AVAILABLE_BOUND,
        slow_failovers: failover::violations(&failovers, &ops, FAILOVER_BOUND),
        damage: damage::violations(&nem.repairs, &nem.damage_findings),
    });

    let summary = summary(
        n,
        seed,
        &ops,
        &nem,
        result.final_len,
        available_after,
        started.elapsed(),
    );
    eprintln!("{summary}");
    eprintln!(
        "nemesis: failover as clients saw it ({n} nodes, faults of the leader alone)\n{}",
        failover::table(&failovers)
    );
    eprintln!(
        "nemesis: disk damage, restart to a voter the leader counts (bound {:?})\n{}",
        damage::REPAIR_BOUND,
        damage::table(&nem.repairs)
    );
    let exits = cluster.unexpected_exits();
    if !exits.is_empty() {
        // Not one of the checks (a crash is a fault the cluster must
        // survive, and a stray signal from another process looks the same), but
        // worth a look: the timeline has each one's log tail.
        eprintln!(
            "nemesis: WARNING: nodes exited without the nemesis killing them: {}",
            exits.join("; ")
        );
    }
    let report = checker::report(&result.violations, 10);
    eprintln!("nemesis: checks\n{report}");
    if !result.violations.is_empty() {
        eprintln!("nemesis: timeline");
        for (t, what) in hist.faults() {
            eprintln!("  {:>8.3}s  {what}", t.as_secs_f64());
        }
        for h in cluster.hosts() {
            eprintln!(
                "----- host {h} ({}) log tail -----\n{}",
                cluster.id(h),
                cluster.tail(h, 40)
            );
        }
        panic!(
            "nemesis: {} violation(s) with seed {seed} on {n} nodes (see above)",
            result.violations.len()
        );
    }
}

/// Host 1 founds the cluster, the others join one at a time.
fn form(c: &Cluster) {
    c.start(1, true);
    assert!(
        c.wait_leader(Duration::from_secs(30)).is_some(),
        "host 1 did not become leader:\n{}",
        c.tail(1, 30)
    );
    for h in 2..=c.size() {
        c.start(h, false);
        let id = c.id(h);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let voter = c
                .leader()
                .and_then(|l| c.members(l))
                .is_some_and(|ms| ms.iter().any(|(m, v)| *m == id && *v));
            if voter {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} did not become a voter:\n{}",
                c.tail(h, 30)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(
        c.wait_formed(Duration::from_secs(30)).is_some(),
        "the cluster did not form"
    );
}

/// Every node's log once they agree (or after 60 s, as they are).
fn converged_logs(c: &Cluster, hist: &History) -> Vec<NodeLog> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut previous: Option<Vec<usize>> = None;
    loop {
        nemesis::revive(c, hist);
        let logs: Vec<NodeLog> = c
            .hosts()
            .into_iter()
            .map(|h| (c.id(h), c.full_log(h)))
            .collect();
        let lens: Vec<usize> = logs
            .iter()
            .map(|(_, l)| l.as_ref().map_or(usize::MAX, Vec::len))
            .collect();
        let same = lens.iter().all(|&l| l == lens[0] && l != usize::MAX);
        if (same && previous.as_ref() == Some(&lens)) || Instant::now() >= deadline {
            return logs;
        }
        previous = Some(lens);
        thread::sleep(Duration::from_millis(500));
    }
}

fn summary(
    n: usize,
    seed: u64,
    ops: &[super::history::Op],
    nem: &Nemesis<'_>,
    final_len: usize,
    available_after: Option<Duration>,
    elapsed: Duration,
) -> String {
    let count = |f: &dyn Fn(&super::history::Op) -> bool| ops.iter().filter(|o| f(o)).count();
    let writes = count(&|o| o.write().is_some());
    let logical: std::collections::HashSet<&str> = ops
        .iter()
        .filter_map(|o| o.write().map(|w| w.value.as_str()))
        .collect();
    let w_out = |oc: Outcome| count(&|o| o.write().is_some() && o.outcome == oc);
    let w_maj_ok =
        count(&|o| o.outcome == Outcome::Ok && o.write().is_some_and(|w| w.w == W::Majority));
    let w_one_ok = count(&|o| o.outcome == Outcome::Ok && o.write().is_some_and(|w| w.w == W::One));
    let retries = count(&|o| o.write().is_some_and(|w| w.attempt > 1));
    let dups = count(&|o| o.outcome == Outcome::Ok && o.write().is_some_and(|w| w.duplicate));
    let logical_of = |f: &dyn Fn(&super::history::Write) -> bool| {
        let set: std::collections::HashSet<&str> = ops
            .iter()
            .filter_map(|o| o.write().filter(|w| f(w)).map(|w| w.value.as_str()))
            .collect();
        set.len()
    };
    let batches = logical_of(&|w| w.is_batch());
    let conditional = logical_of(&|w| w.if_next.is_some());
    let cond_ok =
        count(&|o| o.outcome == Outcome::Ok && o.write().is_some_and(|w| w.if_next.is_some()));
    let conflicts = count(&|o| o.write().is_some_and(|w| w.conflict_next.is_some()));
    let r = |lin: bool, oc: Outcome| {
        count(&|o| o.outcome == oc && o.read().is_some_and(|r| r.linearizable == lin))
    };
    let faults: Vec<String> = nem.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let total_faults: usize = nem.counts.values().sum();
    format!(
        "nemesis: summary ({n} nodes, seed {seed}, {:.0}s)\n  \
         writes: {writes} attempted ({} logical, {retries} retries): {} acknowledged ({w_maj_ok} w=majority, {w_one_ok} w=1, {dups} duplicate answers), {} failed, {} unknown\n  \
         of them {batches} logical batches, {conditional} logical conditional writes ({cond_ok} acknowledged answers, {conflicts} 409 offset_conflict)\n  \
         reads: linearizable {} ok / {} failed, local {} ok / {} failed\n  \
         faults injected: {total_faults} ({})\n  \
         final log: {final_len} messages; available again after the final heal in {}",
        elapsed.as_secs_f64(),
        logical.len(),
        w_out(Outcome::Ok),
        w_out(Outcome::Fail),
        w_out(Outcome::Unknown),
        r(true, Outcome::Ok),
        r(true, Outcome::Fail),
        r(false, Outcome::Ok),
        r(false, Outcome::Fail),
        faults.join(", "),
        available_after.map_or("NEVER".to_string(), |t| format!("{:.2}s", t.as_secs_f64())),
    )
}
