//! Cluster formation and data readiness with real processes (issue 4; SPEC
//! sections 2 and 3 "Cluster and operations"): progressive start and whole-cluster
//! restart, joining through a follower, no split brain from unreachable join
//! targets, snapshot catch-up over the wire (including an interrupted transfer),
//! membership changes under a steady write load, a removed node that cannot
//! disrupt, adding a member while a voter is down, and the data-readiness phase.
//!
//! Every wait is bounded (`wait_for`); the only fixed-length loops are observation
//! windows ("nothing bad happens for N election timeouts"), which poll throughout.
//! Nothing asserts on elapsed time.

#[path = "common/process.rs"]
mod harness;

use harness::*;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Snapshot + compact every 50 applied entries.
const SNAP_EVERY_50: (&str, &str) = ("RAFTLOG_SNAPSHOT__EVERY_ENTRIES", "50");

/// Snapshots a node received from its leader and installed (a counter).
const SNAPSHOTS_INSTALLED: &str = "raftlog_snapshots_installed_total";

/// Several election timeouts of [`fast_env`] (500..1000 ms).
const SEVERAL_ELECTION_TIMEOUTS: Duration = Duration::from_secs(4);

// ----- small helpers -----------------------------------------------------------------

fn ids(c: &Cluster, nodes: &[usize]) -> BTreeSet<String> {
    nodes.iter().map(|&i| c.id(i).to_string()).collect()
}

/// `/ready` status code of node `i`, `None` if it does not answer promptly.
fn ready_code(c: &Cluster, i: usize) -> Option<u16> {
    c.try_get_timeout(i, "/ready", Duration::from_secs(2))
        .ok()
        .map(|r| r.status)
}

/// The node among `nodes` that reports itself leader with the highest term.
fn leader_among(c: &Cluster, nodes: &[usize]) -> Option<usize> {
    nodes
        .iter()
        .filter_map(|&i| {
            let s = c.status(i)?;
            (s["role"] == "leader").then(|| (s["term"].as_u64().unwrap_or(0), i))
        })
        .max()
        .map(|(_, i)| i)
}

/// Waits until the members are exactly `members` (ids), all voters, a node of `up`
/// leads, and every node of `up` is in the run phase, ready, and names that
/// leader. Returns the leader.
fn wait_membership(c: &Cluster, up: &[usize], members: &BTreeSet<String>) -> usize {
    let last = RefCell::new(String::from("no leader seen"));
    wait_for_or(
        &format!("members {members:?}, all voters, with nodes {up:?} ready"),
        LONG,
        || {
            let l = leader_among(c, up)?;
            let s = c.status(l)?;
            let ms = s["members"].as_array()?;
            let got: BTreeSet<String> = ms
                .iter()
                .filter_map(|m| m["node_id"].as_str().map(str::to_string))
                .collect();
            let learners: Vec<&str> = ms
                .iter()
                .filter(|m| m["voter"] != true)
                .filter_map(|m| m["node_id"].as_str())
                .collect();
            *last.borrow_mut() = format!(
                "leader {} reports members {got:?}, non-voters {learners:?}",
                c.id(l)
            );
            if &got != members || !learners.is_empty() {
                return None;
            }
            for &i in up {
                let st = c.status(i)?;
                if st["leader_id"] != c.id(l) || st["phase"] != "run" {
                    *last.borrow_mut() = format!(
                        "{} reports leader_id {} phase {} role {}",
                        c.id(i),
                        st["leader_id"],
                        st["phase"],
                        st["role"]
                    );
                    return None;
                }
                if ready_code(c, i) != Some(200) {
                    *last.borrow_mut() = format!("{} is not ready", c.id(i));
                    return None;
                }
            }
            Some(l)
        },
        || last.borrow().clone(),
    )
}

/// As [`wait_membership`] where every node of `nodes` is up and a member.
fn wait_voters(c: &Cluster, nodes: &[usize]) -> usize {
    wait_membership(c, nodes, &ids(c, nodes))
}

/// Writes `n` messages `"{prefix}-{k:06}-xxx..."` (padded to about `size` bytes)
/// through node `target` with `w = majority` from `threads` concurrent clients;
/// every one must be acknowledged. Returns `(offset, message)` sorted by offset.
fn bulk_write(
    c: &Cluster,
    target: usize,
    prefix: &str,
    n: usize,
    size: usize,
    threads: usize,
) -> Vec<(u64, String)> {
    let out = Mutex::new(Vec::with_capacity(n));
    thread::scope(|s| {
        for t in 0..threads {
            let out = &out;
            s.spawn(move || {
                for k in (t..n).step_by(threads) {
                    let head = format!("{prefix}-{k:06}-");
                    let pad = size.saturating_sub(head.len());
                    let msg = format!("{head}{}", "x".repeat(pad));
                    let r = c
                        .write_with(
                            target,
                            &msg,
                            json!("majority"),
                            "",
                            None,
                            Duration::from_secs(60),
                        )
                        .unwrap_or_else(|e| panic!("bulk write {head} via {}: {e}", c.id(target)));
                    assert_eq!(r.status, 201, "bulk write {head}: {}", r.body);
                    out.lock().unwrap().push((r.offset(), msg));
                }
            });
        }
    });
    let mut v = out.into_inner().unwrap();
    v.sort();
    v
}

/// Writes `msgs` one by one through `node` (w = majority), each expecting 201.
fn write_all(c: &Cluster, node: usize, msgs: &[String]) -> Vec<(u64, String)> {
    msgs.iter()
        .map(|m| {
            let r = c.write(node, m, json!("majority"));
            assert_eq!(r.status, 201, "write {m:?} via {}: {}", c.id(node), r.body);
            (r.offset(), m.clone())
        })
        .collect()
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|k| format!("{prefix}-{k:03}")).collect()
}

/// Asserts each acknowledged `(offset, message)` sits at its offset in `log`,
/// and nothing appears twice.
fn check_acked(log: &[(u64, String)], acked: &[(u64, String)], ctx: &str) {
    assert_dense(log);
    assert_unique(log);
    for (off, msg) in acked {
        let at = log.get(*off as usize).map(|(_, m)| m.as_str());
        assert!(
            at == Some(msg.as_str()),
            "{ctx}: acknowledged {msg:?} must be at offset {off}, found {at:?} (log has {} messages)",
            log.len()
        );
    }
}

/// `(message count, hash of all (offset, message))` of node `i`'s local
/// committed log, paging with a small `limit` (large messages).
fn log_digest(c: &Cluster, i: usize) -> Result<(u64, u64), String> {
    let mut h = DefaultHasher::new();
    let mut from = 0u64;
    loop {
        let path = format!("/v1/messages?from={from}&consistency=local&limit=10");
        let r = c.try_get_timeout(i, &path, REQUEST_TIMEOUT)?;
        if r.status != 200 {
            return Err(format!("{} {}", r.status, r.body));
        }
        let msgs = r.json["messages"]
            .as_array()
            .ok_or_else(|| format!("no messages in reply to {path}"))?;
        if msgs.is_empty() {
            return Ok((from, h.finish()));
        }
        for m in msgs {
            let off = m["offset"].as_u64().ok_or("bad offset")?;
            if off != from {
                return Err(format!("offset {off} where {from} was expected (gap)"));
            }
            off.hash(&mut h);
            m["message"].as_str().ok_or("bad message")?.hash(&mut h);
            from += 1;
        }
    }
}

/// Waits until every node of `nodes` holds the same log of at least `min_len`
/// messages (compared by digest: for logs of large messages).
fn wait_same_digest(c: &Cluster, nodes: &[usize], min_len: u64) -> (u64, u64) {
    let last = RefCell::new(Vec::new());
    wait_for_or(
        &format!("nodes {nodes:?} to hold the same log of at least {min_len} messages"),
        LONG * 2,
        || {
            // Cheap gate first: equal applied indexes.
            let applied: Vec<u64> = nodes
                .iter()
                .map(|&i| {
                    c.status(i)
                        .and_then(|s| s["applied_index"].as_u64())
                        .unwrap_or(0)
                })
                .collect();
            if applied.iter().any(|&a| a != applied[0]) {
                *last.borrow_mut() = vec![format!("applied indexes {applied:?}")];
                return None;
            }
            let ds: Vec<Result<(u64, u64), String>> =
                nodes.iter().map(|&i| log_digest(c, i)).collect();
            *last.borrow_mut() = ds.iter().map(|d| format!("{d:?}")).collect();
            let first = ds[0].clone().ok()?;
            (first.0 >= min_len && ds.iter().all(|d| d.as_ref().ok() == Some(&first)))
                .then_some(first)
        },
        || format!("last seen (count, hash): {:?}", last.borrow()),
    )
}

/// `*.partial` files under node `i`'s `snap-incoming`, with their sizes.
fn partials(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(rd) = std::fs::read_dir(dir.join("snap-incoming")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
        .collect()
}

/// Sets its flag when dropped (also on a panic): tells helper threads to end.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The total size a partial file's name declares (`...-<total>.partial`).
fn declared_total(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?.strip_suffix(".partial")?;
    name.rsplit('-').next()?.parse().ok()
}

/// DELETE /v1/cluster/members/{id} on `leader`, expecting 200.
fn remove_member(c: &Cluster, leader: usize, id: &str) {
    let r = c
        .try_request(
            leader,
            reqwest::Method::DELETE,
            &format!("/v1/cluster/members/{id}"),
            None,
            &[],
            LONG,
        )
        .unwrap_or_else(|e| panic!("DELETE member {id} on {}: {e}", c.id(leader)));
    assert_eq!(
        r.status,
        200,
        "DELETE member {id} on {}: {}",
        c.id(leader),
        r.body
    );
}

/// Watches `nodes` for `window`: every answer must name `leader` with `term`.
/// Returns how many complete rounds were observed.
fn assert_stable(
    c: &Cluster,
    nodes: &[usize],
    leader: usize,
    term: u64,
    window: Duration,
) -> usize {
    let end = Instant::now() + window;
    let mut rounds = 0;
    while Instant::now() < end {
        let mut complete = true;
        for &i in nodes {
            let Some(s) = c.status(i) else {
                complete = false;
                continue;
            };
            assert_eq!(
                s["leader_id"],
                c.id(leader),
                "{} must keep following {} (term {term}); status {s}",
                c.id(i),
                c.id(leader)
            );
            assert_eq!(
                s["term"].as_u64(),
                Some(term),
                "the term must not move while the cluster is healthy; {} reports {s}",
                c.id(i)
            );
        }
        rounds += usize::from(complete);
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        rounds > 0,
        "no complete round of status answers in {window:?}"
    );
    rounds
}

/// Polls `f` until true or `timeout`; whether it became true (no panic).
fn wait_for_bounded(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(POLL);
    }
}

fn term_of(c: &Cluster, i: usize) -> u64 {
    c.status(i)
        .and_then(|s| s["term"].as_u64())
        .unwrap_or_else(|| panic!("no term from {}", c.id(i)))
}

// ----- a background writer --------------------------------------------------------------

/// A client thread writing unique messages (`w = majority`, each with its own
/// `Idempotency-Key`, so a retry after a lost answer cannot append twice),
/// retrying 503/504 and transport errors on the next target, recording every
/// acknowledged `(offset, message)`.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u64, String)>>>,
    failures: Arc<Mutex<Vec<String>>>,
    targets: Arc<Mutex<Vec<String>>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Writer {
    /// `targets`: base URLs (`http://host:port`).
    fn start(prefix: &str, targets: Vec<String>) -> Writer {
        let w = Writer {
            stop: Arc::new(AtomicBool::new(false)),
            acked: Arc::default(),
            failures: Arc::default(),
            targets: Arc::new(Mutex::new(targets)),
            handle: None,
        };
        let (stop, acked, failures, targets) = (
            w.stop.clone(),
            w.acked.clone(),
            w.failures.clone(),
            w.targets.clone(),
        );
        let prefix = prefix.to_string();
        let handle = thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client");
            let mut turn = 0usize;
            let mut k = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let msg = format!("{prefix}-{k:06}");
                let started = Instant::now();
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let url = {
                        let t = targets.lock().unwrap();
                        format!("{}/v1/messages", t[turn % t.len()])
                    };
                    turn += 1;
                    let sent = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("Idempotency-Key", msg.as_str())
                        .body(json!({ "message": msg, "w": "majority" }).to_string())
                        .send();
                    if let Ok(r) = sent {
                        let status = r.status().as_u16();
                        let body = r.text().unwrap_or_default();
                        match status {
                            200 | 201 => {
                                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                                let Some(off) = v["offset"].as_u64() else {
                                    failures
                                        .lock()
                                        .unwrap()
                                        .push(format!("{msg}: {status} without offset: {body}"));
                                    return;
                                };
                                acked.lock().unwrap().push((off, msg.clone()));
                                break;
                            }
                            503 | 504 => {}
                            _ => {
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("{msg} via {url}: {status} {body}"));
                                return;
                            }
                        }
                    }
                    if started.elapsed() > Duration::from_secs(60) {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{msg}: not acknowledged within 60 s of retries"));
                        return;
                    }
                    // Retry pause (not synchronization).
                    thread::sleep(Duration::from_millis(20));
                }
                k += 1;
            }
        });
        let mut w = w;
        w.handle = Some(handle);
        w
    }

    fn set_targets(&self, t: Vec<String>) {
        *self.targets.lock().unwrap() = t;
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn check_failures(&self) {
        let f = self.failures.lock().unwrap();
        assert!(f.is_empty(), "the writer failed: {f:?}");
    }

    /// Waits until `more` further writes have been acknowledged.
    fn wait_progress(&self, what: &str, more: usize) {
        let base = self.count();
        wait_for(
            &format!("{more} more acknowledged writes {what}"),
            LONG,
            || {
                self.check_failures();
                (self.count() >= base + more).then_some(())
            },
        );
    }

    /// Stops the writer; returns the acknowledged writes.
    fn finish(mut self) -> Vec<(u64, String)> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("writer thread panicked");
        }
        self.check_failures();
        let v = self.acked.lock().unwrap().clone();
        v
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn base_url(c: &Cluster, i: usize) -> String {
    format!("http://{}", c.info(i).http_addr())
}

// ----- tests -------------------------------------------------------------------------

/// Seed scenario: node 1 alone leads and takes writes; nodes 2 and 3 join later
/// and get the whole log; all three restart together (after SIGTERM, then after
/// SIGKILL, with start flags that must be ignored) and form the same cluster with
/// the same log.
#[test]
fn progressive_start_then_whole_cluster_restarts() {
    let mut c = Cluster::empty(&[]);
    let n1 = c.add_node(None);
    let l = c.wait_leader_among(&[n1]);
    assert_eq!(l, n1);
    let s = c.status(n1).expect("status of n1");
    assert_eq!(s["phase"], "run", "a founder is in the run phase: {s}");
    assert_eq!(ready_code(&c, n1), Some(200));
    let mut acked = write_all(&c, n1, &names("alone", 10));

    let seed = c.info(n1).grpc_addr();
    let n2 = c.add_node(Some(seed.clone()));
    wait_voters(&c, &[n1, n2]);
    acked.extend(write_all(&c, n2, &names("two", 10)));

    let n3 = c.add_node(Some(seed));
    wait_voters(&c, &[n1, n2, n3]);
    acked.extend(write_all(&c, n3, &names("three", 10)));
    let all = [n1, n2, n3];
    let log = c.wait_converged(&all, acked.len());
    check_acked(&log, &acked, "before the restarts");
    assert_eq!(log.len(), acked.len());

    // Round 1: SIGTERM every node at once, restart all with no start flags.
    for &i in &all {
        signal(c.pid(i).unwrap(), libc::SIGTERM);
    }
    for &i in &all {
        let st = c
            .term(i, LONG)
            .unwrap_or_else(|| panic!("{} did not exit after SIGTERM", c.id(i)));
        assert!(st.success(), "{} exited with {st} after SIGTERM", c.id(i));
    }
    for &i in &all {
        c.set_plain_start(i, true);
        c.restart(i);
    }
    wait_voters(&c, &all);
    let after = c.wait_converged(&all, log.len());
    assert_eq!(
        after, log,
        "the same log after restarting every node (SIGTERM)"
    );
    acked.extend(write_all(&c, n2, &names("after-term", 5)));

    // Round 2: SIGKILL every node; restart with misleading flags that must be
    // ignored (n2 --bootstrap, n1 --join n2): the data dirs hold state.
    let expect = c.wait_converged(&all, acked.len());
    for &i in &all {
        c.kill(i);
    }
    c.set_join(n1, Some(c.info(n2).grpc_addr()));
    c.set_join(n2, None);
    c.set_join(n3, Some(c.info(n2).grpc_addr()));
    for &i in &all {
        c.set_plain_start(i, false);
        c.restart(i);
    }
    wait_voters(&c, &all);
    let after = c.wait_converged(&all, expect.len());
    assert_eq!(
        after, expect,
        "the same log after SIGKILL of every node and restart"
    );
    acked.extend(write_all(&c, n3, &names("after-kill", 5)));
    let fin = c.wait_converged(&all, acked.len());
    check_acked(&fin, &acked, "after both restarts");
    assert_eq!(
        fin.len(),
        acked.len(),
        "nothing but the acknowledged writes"
    );
}

/// A node given only a follower's address learns the leader from it and joins.
#[test]
fn join_through_a_followers_address() {
    let mut c = Cluster::empty(&[]);
    let n1 = c.add_node(None);
    c.wait_leader_among(&[n1]);
    let n2 = c.add_node(Some(c.info(n1).grpc_addr()));
    let l = wait_voters(&c, &[n1, n2]);
    let f = if l == n1 { n2 } else { n1 };
    let mut acked = write_all(&c, l, &names("before", 5));

    let n3 = c.add_node(Some(c.info(f).grpc_addr()));
    let l2 = wait_voters(&c, &[n1, n2, n3]);
    let s = c.status(n3).expect("status of n3");
    assert_eq!(s["leader_id"], c.id(l2), "n3 knows the leader: {s}");
    assert_eq!(s["role"], "follower", "n3 is a voting follower: {s}");
    acked.extend(write_all(&c, n3, &names("via-n3", 5)));
    let log = c.wait_converged(&[n1, n2, n3], acked.len());
    check_acked(&log, &acked, "after joining through a follower");
}

/// Two nodes on empty data dirs joining each other, no bootstrap: nobody founds a
/// cluster, nobody leads, writes are refused, and each says why in its log.
#[test]
fn two_joiners_without_a_founder_never_elect_a_leader() {
    let mut c = Cluster::empty(&[]);
    let a = c.add_node_info(None);
    let b = c.add_node_info(None);
    c.set_join(a, Some(c.info(b).grpc_addr()));
    c.set_join(b, Some(c.info(a).grpc_addr()));
    c.spawn_detached(a);
    c.spawn_detached(b);

    // Each explains itself: a "join" line saying refused / unreachable / retrying.
    for i in [a, b] {
        wait_for(
            &format!("{} to log why it cannot join", c.id(i)),
            LONG,
            || {
                let text = log_since_last_start(&c.info(i).log_path).to_lowercase();
                text.lines()
                    .any(|l| {
                        l.contains("join")
                            && (l.contains("refus")
                                || l.contains("unreachable")
                                || l.contains("retry"))
                    })
                    .then_some(())
            },
        );
    }

    // Several election timeouts: both keep running, neither leads, nothing is
    // ready, writes are refused with 503.
    let end = Instant::now() + SEVERAL_ELECTION_TIMEOUTS;
    let mut problems: Vec<String> = Vec::new();
    let mut rounds = 0;
    while Instant::now() < end && problems.is_empty() {
        for i in [a, b] {
            if let Some(st) = c.exited(i) {
                panic!("{} exited ({st}) while waiting to join", c.id(i));
            }
            match c.try_get_timeout(i, "/v1/status", Duration::from_secs(2)) {
                Ok(r) if r.status == 200 => {
                    if r.json["role"] == "leader" || !r.json["leader_id"].is_null() {
                        panic!("{} must not lead or know a leader: {}", c.id(i), r.body);
                    }
                    if r.json["phase"] == "run" {
                        problems.push(format!("{} reports phase run: {}", c.id(i), r.body));
                    }
                }
                Ok(r) => problems.push(format!(
                    "{}: /v1/status answered {} {}",
                    c.id(i),
                    r.status,
                    r.body
                )),
                Err(e) => problems.push(format!("{}: /v1/status did not answer: {e}", c.id(i))),
            }
            match c.try_get_timeout(i, "/ready", Duration::from_secs(2)) {
                Ok(r) if r.status == 503 => {}
                Ok(r) => panic!(
                    "{}: /ready must be 503, got {} {}",
                    c.id(i),
                    r.status,
                    r.body
                ),
                Err(e) => problems.push(format!("{}: /ready did not answer: {e}", c.id(i))),
            }
            match c.write_with(
                i,
                "no-cluster",
                json!("majority"),
                "",
                None,
                Duration::from_secs(2),
            ) {
                Ok(r) if r.status == 503 => {}
                Ok(r) => panic!(
                    "{}: a write must be refused with 503, got {} {}",
                    c.id(i),
                    r.status,
                    r.body
                ),
                Err(e) => problems.push(format!(
                    "{}: POST /v1/messages did not answer: {e}",
                    c.id(i)
                )),
            }
        }
        rounds += 1;
        thread::sleep(Duration::from_millis(100));
    }
    // Whatever the HTTP side did, no node may have become leader or seen one
    // (counted by the node itself; a missing metric fails, it is not read as 0).
    for i in [a, b] {
        for name in [
            "raftlog_elections_won_total",
            "raftlog_leader_changes_total",
        ] {
            let n = c.metric(i, name);
            assert_eq!(
                n,
                0.0,
                "{} has {name} {n}: it led or followed a leader; log tail:\n{}",
                c.id(i),
                tail(&c.info(i).log_path, 40)
            );
        }
        assert!(
            c.exited(i).is_none(),
            "{} must keep trying to join",
            c.id(i)
        );
    }
    assert!(
        problems.is_empty(),
        "a node waiting to join must serve its HTTP API (SPEC: /health 200 while the \
         process runs, /ready 503, writes 503) after {rounds} rounds: {problems:#?}"
    );
}

/// A follower killed just before the leader's snapshot point, and restarted
/// after it, gets the entries it missed from the leader's catch-up tail (half
/// a snapshot interval: 100 entries here), not a snapshot. (Killed, not
/// paused: a paused one still gets the appends waiting in its socket.)
#[test]
fn a_follower_just_behind_the_snapshot_point_catches_up_without_a_snapshot() {
    let every = ("RAFTLOG_SNAPSHOT__EVERY_ENTRIES", "200");
    let c = Cluster::start_with_env(3, &[every]);
    let l = c.wait_leader();
    let f = c.others(l)[0];
    let mut acked = bulk_write(&c, l, "before", 150, 100, 4);
    c.wait_converged(&[0, 1, 2], acked.len());
    let taken = c.metric(l, "raftlog_snapshots_total");
    c.kill(f);
    acked.extend(bulk_write(&c, l, "missed", 80, 100, 4));
    wait_for(
        "the leader's snapshot past the killed follower",
        LONG,
        || (c.metric(l, "raftlog_snapshots_total") > taken).then_some(()),
    );
    c.restart(f);
    let log = c.wait_converged(&[0, 1, 2], acked.len());
    check_acked(&log, &acked, "after the killed follower restarted");
    assert_eq!(
        c.metric(f, SNAPSHOTS_INSTALLED),
        0.0,
        "{} was 80 entries behind: it needed no snapshot; log tail:\n{}",
        c.id(f),
        tail(&c.info(f).log_path, 30)
    );
}

/// A stopped follower misses hundreds of entries that the leader compacts away;
/// on resume it installs a snapshot and converges. Then a brand-new node joins
/// after compaction and gets everything.
#[test]
fn snapshot_catch_up_for_a_stopped_follower_and_a_new_node() {
    let mut c = Cluster::start_with_env(3, &[SNAP_EVERY_50]);
    let l = c.wait_leader();
    let f = c.others(l)[0];
    let mut acked = write_all(&c, l, &names("pre", 10));
    c.wait_converged(&[0, 1, 2], acked.len());

    let snaps_before = c.metric(f, SNAPSHOTS_INSTALLED);
    c.stop(f);
    acked.extend(bulk_write(&c, l, "missed", 400, 200, 4));
    c.cont(f);
    let log = c.wait_converged(&[0, 1, 2], acked.len());
    check_acked(&log, &acked, "after the stopped follower resumed");
    assert!(
        c.metric(f, SNAPSHOTS_INSTALLED) > snaps_before,
        "{} missed a compacted prefix: it must have received a snapshot; log tail:\n{}",
        c.id(f),
        tail(&c.info(f).log_path, 30)
    );
    let s = c.status(f).unwrap();
    assert_eq!(s["phase"], "run", "{s}");

    acked.extend(write_all(&c, l, &names("post", 10)));
    let n4 = c.add_node(Some(c.info(l).grpc_addr()));
    wait_voters(&c, &[0, 1, 2, n4]);
    let log = c.wait_converged(&[0, 1, 2, n4], acked.len());
    check_acked(&log, &acked, "after a new node joined past compaction");
    assert!(
        c.metric(n4, SNAPSHOTS_INSTALLED) > 0.0,
        "the new node needed a compacted prefix: it must have received a snapshot"
    );
}

/// A large snapshot transfer to a joining node is interrupted by SIGKILL of the
/// receiver while `snap-incoming/*.partial` exists; after a restart the transfer
/// completes (resuming, not starting over) and the node converges. While the
/// transfer is in flight the node is not ready.
#[test]
fn interrupted_snapshot_transfer_completes_after_restart() {
    let mut c = Cluster::empty(&[SNAP_EVERY_50]);
    let n1 = c.add_node(None);
    c.wait_leader_among(&[n1]);
    // ~40 MiB of state: 400 messages of 100 KiB (max_message_bytes is 1 MiB).
    let acked = bulk_write(&c, n1, "big", 400, 100 * 1024, 8);
    let seed = c.info(n1).grpc_addr();

    // Attempts: a transfer that finished before we saw its partial file does not
    // count; that joiner is removed and a new one tries. No silent skip.
    const ATTEMPTS: usize = 4;
    let mut interrupted: Option<(usize, PathBuf, u64)> = None;
    let mut misses = Vec::new();
    for _ in 0..ATTEMPTS {
        let j = c.add_node_info(Some(seed.clone()));
        c.spawn_detached(j);
        let dir = c.info(j).data_dir.clone();
        let deadline = Instant::now() + LONG;
        let mut seen = false;
        let mut polls = 0u64;
        loop {
            // Kill once some bytes arrived, before the last (a real mid-transfer
            // state, not just a freshly created empty file).
            let ps = partials(&dir);
            seen |= !ps.is_empty();
            if ps
                .iter()
                .any(|(p, len)| *len > 0 && declared_total(p).is_some_and(|t| *len < t))
            {
                c.kill(j);
                break;
            }
            // Cheap test for "already done" (no HTTP: a joiner's API is not
            // served until it is accepted, and the poll must stay tight).
            polls += 1;
            let done = polls.is_multiple_of(50) && c.log_count(j, "snapshot received") > 0;
            if done || Instant::now() > deadline {
                c.kill(j);
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        // Mid-transfer only if a partial file is still there, short of its total.
        let p = partials(&dir)
            .into_iter()
            .find(|(path, len)| declared_total(path).is_some_and(|total| *len < total));
        match p {
            Some((path, len)) => {
                interrupted = Some((j, path, len));
                break;
            }
            None => {
                misses.push(format!("{}: partial seen {seen}", c.id(j)));
                remove_member(&c, n1, c.id(j));
            }
        }
    }
    let Some((j, partial, held)) = interrupted else {
        panic!(
            "could not kill a receiver in the middle of a snapshot transfer in \
             {ATTEMPTS} attempts ({misses:?}); make the snapshot larger"
        );
    };
    eprintln!(
        "killed {} mid-transfer holding {held} of {:?} bytes ({})",
        c.id(j),
        declared_total(&partial),
        partial.display()
    );

    // Restart it; watch its partial files while it finishes: the one it held must
    // never shrink (resume, not start over).
    let stop = AtomicBool::new(false);
    let shrank = Mutex::new(None::<String>);
    let mut not_ready_mid_transfer = 0;
    let dir = c.info(j).data_dir.clone();
    let members: BTreeSet<String> = [c.id(n1).to_string(), c.id(j).to_string()].into();
    thread::scope(|s| {
        // A failed assertion below must still end the watcher, or the scope hangs.
        let _stop = SetOnDrop(&stop);
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                for (path, len) in partials(&dir) {
                    if path == partial && len < held {
                        *shrank.lock().unwrap() = Some(format!(
                            "{} went from {held} to {len} bytes",
                            path.display()
                        ));
                    }
                }
                thread::sleep(Duration::from_millis(1));
            }
        });
        // The leader is paused while the node restarts, so the transfer is
        // certainly in flight (its partial file short of the total) when /ready
        // is first answered: that answer must be 503, in phase data_readiness.
        c.stop(n1);
        c.restart(j);
        let code = wait_for("the restarted node to answer /ready", LONG, || {
            ready_code(&c, j)
        });
        let st = c.status(j);
        let held_now = partials(&dir)
            .into_iter()
            .any(|(p, len)| declared_total(&p).is_some_and(|t| len < t));
        c.cont(n1);
        assert!(
            held_now,
            "the transfer finished while its leader was paused"
        );
        assert_eq!(code, 503, "/ready while the snapshot transfer is in flight");
        let st = st.expect("the restarted node answered /ready but not /v1/status");
        assert_eq!(st["phase"], "data_readiness", "{st}");
        not_ready_mid_transfer += 1;
        // With the leader running again: while a partial file exists before and
        // after a /ready answer, the transfer was in flight during it.
        wait_for(
            "the restarted node to finish the transfer",
            LONG * 2,
            || {
                if partials(&dir).is_empty() {
                    return Some(());
                }
                let code = ready_code(&c, j);
                let st = c.status(j);
                if !partials(&dir).is_empty() {
                    if let Some(code) = code {
                        assert_eq!(code, 503, "/ready during a snapshot transfer");
                        not_ready_mid_transfer += 1;
                    }
                    if let Some(st) = st {
                        assert_eq!(st["phase"], "data_readiness", "{st}");
                    }
                }
                None
            },
        );
        wait_membership(&c, &[n1, j], &members);
        stop.store(true, Ordering::SeqCst);
    });
    if let Some(s) = shrank.into_inner().unwrap() {
        panic!("the interrupted transfer started over instead of resuming: {s}");
    }
    assert!(
        not_ready_mid_transfer > 0,
        "/ready was never asked while the transfer was in flight"
    );
    eprintln!("observed /ready 503 mid-transfer {not_ready_mid_transfer} time(s)");
    let (count, _) = wait_same_digest(&c, &[n1, j], acked.len() as u64);
    assert_eq!(count, acked.len() as u64);
    assert!(
        c.metric(j, SNAPSHOTS_INSTALLED) > 0.0,
        "the restarted node must have received the snapshot"
    );
    // The log is still writable with both voters (retrying 503: reading the big
    // log above may have cost the leader its lease; an election is fine here).
    let more: Vec<(u64, String)> = names("after-transfer", 3)
        .into_iter()
        .map(|m| {
            let r = c.write_retrying(j, &m, json!("majority"), Some(&m));
            (r.offset(), m)
        })
        .collect();
    let (count, _) = wait_same_digest(&c, &[n1, j], (acked.len() + more.len()) as u64);
    assert_eq!(count, (acked.len() + more.len()) as u64);
}

/// Grow to five nodes, remove one, transfer leadership, remove the leader; a
/// writer keeps writing throughout, every acknowledged write ends in the log
/// exactly once, identical on every member; removed nodes that keep running
/// cannot disturb the leader or the term.
#[test]
fn membership_changes_under_writes_and_removed_nodes_cannot_disrupt() {
    let mut c = Cluster::start(3);
    c.wait_leader();
    let writer = Writer::start("mw", vec![base_url(&c, 0), base_url(&c, 2)]);
    writer.wait_progress("on three nodes", 10);

    // Grow to five (each joins as a learner and is promoted).
    let l = c.wait_leader();
    let n4 = c.add_node(Some(c.info(l).grpc_addr()));
    writer.wait_progress("after the 4th node joined", 5);
    let n5 = c.add_node(Some(c.info(2).grpc_addr()));
    let all5 = [0, 1, 2, n4, n5];
    let l = wait_voters(&c, &all5);
    writer.set_targets(vec![base_url(&c, 0), base_url(&c, 2), base_url(&c, n5)]);
    writer.wait_progress("on five nodes", 10);

    // Remove a follower that cannot hear about it (stopped): on resume it is a
    // stale member that believes it still belongs.
    // Not a writer target (n1, n3, n5) and not the leader.
    let gone = if l == 1 { n4 } else { 1 };
    c.stop(gone);
    remove_member(&c, l, c.id(gone));
    let four: Vec<usize> = all5.iter().copied().filter(|&i| i != gone).collect();
    wait_voters(&c, &four);
    writer.wait_progress("after removing a node", 10);

    // Leadership transfer to a chosen node.
    let l = leader_among(&c, &four).expect("a leader");
    let to = if l == n4 { n5 } else { n4 };
    let r = c.post_raw(
        l,
        "/v1/cluster/transfer-leadership",
        json!({ "to": c.id(to) }).to_string(),
        &[],
    );
    assert_eq!(r.status, 200, "transfer-leadership: {}", r.body);
    wait_for(
        &format!("{} to lead after the transfer", c.id(to)),
        LONG,
        || (leader_among(&c, &four) == Some(to)).then_some(()),
    );
    assert_eq!(wait_membership(&c, &four, &ids(&c, &four)), to);
    writer.wait_progress("after the leadership transfer", 10);

    // The stale removed node resumes: leader and term stay put over several
    // election timeouts while writes continue; members note the stranger.
    let term = term_of(&c, to);
    c.cont(gone);
    let before = writer.count();
    assert_stable(&c, &four, to, term, SEVERAL_ELECTION_TIMEOUTS);
    writer.check_failures();
    assert!(
        writer.count() > before,
        "writes must continue while the removed node runs"
    );
    wait_for(
        "a member to count a message from a node that is not a member",
        LONG,
        || {
            four.iter()
                .any(|&i| {
                    c.try_metric(i, "raftlog_messages_from_non_members_total")
                        .is_ok_and(|n| n > 0.0)
                })
                .then_some(())
        },
    );
    let stale_knows = c.log_count(gone, "removed from the cluster") > 0;
    eprintln!(
        "stale removed node {} logged its removal: {stale_knows}",
        c.id(gone)
    );

    // Remove the leader itself: it steps down once the change commits; a new
    // leader comes from the rest; the removed leader keeps running. The DELETE
    // runs on its own thread so the rest is observed even if it never answers.
    let three: Vec<usize> = four.iter().copied().filter(|&i| i != to).collect();
    writer.set_targets(three.iter().map(|&i| base_url(&c, i)).collect());
    let mut problems: Vec<String> = Vec::new();
    let l3 = thread::scope(|s| {
        let del = s.spawn(|| {
            c.try_request(
                to,
                reqwest::Method::DELETE,
                &format!("/v1/cluster/members/{}", c.id(to)),
                None,
                &[],
                LONG,
            )
        });
        let l3 = wait_voters(&c, &three);
        assert_ne!(l3, to);
        writer.wait_progress("after removing the leader", 10);
        let term = term_of(&c, l3);
        let before = writer.count();
        assert_stable(&c, &three, l3, term, SEVERAL_ELECTION_TIMEOUTS);
        assert!(
            writer.count() > before,
            "writes continue with two removed nodes running"
        );
        match del.join().expect("DELETE thread") {
            Ok(r) if r.status == 200 => {}
            Ok(r) => problems.push(format!(
                "DELETE of the leader {} on itself answered {} {}",
                c.id(to),
                r.status,
                r.body
            )),
            Err(e) => problems.push(format!(
                "DELETE of the leader {} on itself never answered: {e}",
                c.id(to)
            )),
        }
        l3
    });
    match c.status(to) {
        Some(s) if s["role"] == "leader" => {
            problems.push(format!("the removed leader still claims to lead: {s}"))
        }
        Some(_) => {}
        None => problems.push(format!("the removed leader {} stopped answering", c.id(to))),
    }
    // Bounded from the DELETE's own wait (it may already have used LONG).
    let logged = wait_for_bounded(Duration::from_secs(10), || {
        c.log_count(to, "this node was removed from the cluster") > 0
    });
    if !logged {
        problems.push(format!(
            "the removed leader {} never logged \"this node was removed from the cluster\"",
            c.id(to)
        ));
    }

    let acked = writer.finish();
    assert!(!acked.is_empty());
    let log = c.wait_converged(&three, acked.len());
    check_acked(&log, &acked, "after the membership changes");
    eprintln!(
        "{} acknowledged writes during the membership changes",
        acked.len()
    );
    for &i in &three {
        assert_eq!(c.status(i).unwrap()["leader_id"], c.id(l3));
    }
    assert!(problems.is_empty(), "removing the leader: {problems:#?}");
}

/// With one of three voters down (SIGKILL), a new node still joins (learner, then
/// voter: the quorum is up) and writes continue; the dead node later catches up.
#[test]
fn a_member_is_added_while_a_voter_is_down() {
    let mut c = Cluster::start(3);
    let l = c.wait_leader();
    let mut acked = write_all(&c, l, &names("before", 5));
    let down = c.others(l)[0];
    c.kill(down);
    acked.extend(write_all(&c, l, &names("one-down", 5)));

    let n4 = c.add_node(Some(c.info(l).grpc_addr()));
    let up: Vec<usize> = [0, 1, 2, n4].into_iter().filter(|&i| i != down).collect();
    let members = ids(&c, &[0, 1, 2, n4]);
    let l = wait_membership(&c, &up, &members);
    acked.extend(write_all(&c, n4, &names("four-voters", 5)));
    acked.extend(write_all(&c, l, &names("four-voters-leader", 5)));
    let log = c.wait_converged(&up, acked.len());
    check_acked(&log, &acked, "with a voter down after adding a member");

    c.restart(down);
    wait_voters(&c, &[0, 1, 2, n4]);
    let log = c.wait_converged(&[0, 1, 2, n4], acked.len());
    check_acked(&log, &acked, "after the dead voter came back");
}

/// A joining node is in the data-readiness phase (learner, /ready 503) until it
/// has caught up and been promoted; then run, voter, ready, with the whole log.
#[test]
fn a_joining_node_is_not_ready_until_caught_up_and_promoted() {
    let mut c = Cluster::empty(&[]);
    let n1 = c.add_node(None);
    c.wait_leader_among(&[n1]);
    let acked = bulk_write(&c, n1, "dr", 4000, 2048, 8);

    let j = c.add_node_info(Some(c.info(n1).grpc_addr()));
    c.spawn_detached(j);
    let mut seen_readiness = 0;
    let mut phases: Vec<String> = Vec::new();
    wait_for("the joiner to be a ready voter", LONG * 2, || {
        // /ready first, status second: promotion is one-way, so a 200 here
        // means the status that follows must already say voter/run.
        let code = ready_code(&c, j)?;
        let s = c.status(j)?;
        let phase = s["phase"].as_str().unwrap_or("?").to_string();
        if phases.last() != Some(&phase) {
            phases.push(phase.clone());
        }
        if code == 200 {
            assert_eq!(s["phase"], "run", "/ready was 200 before this status: {s}");
        }
        if phase == "data_readiness" {
            seen_readiness += 1;
            assert_eq!(
                s["role"], "learner",
                "a node in data readiness is a learner: {s}"
            );
            assert_ne!(code, 200, "/ready must be 503 during data readiness: {s}");
        }
        (code == 200 && phase == "run" && s["role"] == "follower").then_some(())
    });
    eprintln!("joiner phases observed: {phases:?} ({seen_readiness} data_readiness polls)");
    wait_voters(&c, &[n1, j]);
    let (count, _) = wait_same_digest(&c, &[n1, j], acked.len() as u64);
    assert_eq!(count, acked.len() as u64);
    let log = c.log(j, "local");
    check_acked(&log, &acked, "the joiner's log");
}
