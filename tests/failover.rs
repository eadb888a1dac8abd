//! Failover as clients see it (SPEC §6), with real processes: the write timeout is
//! 30 s and elections take 0.5-1 s, so a request answered only at its timeout
//! would outlive the client's 12 s patience and fail the test. What each test
//! checks besides the answer: a 201 means exactly one copy in the converged log.
//!
//! Faults: SIGSTOP (paused), SIGKILL, and "cut off" (the debug fault switch drops
//! every Raft message between the leader and the others; clients and cluster
//! RPCs still reach every node, as in the nemesis's isolated-leader case).

#[path = "common/process.rs"]
mod harness;

use harness::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The client's patience: far below the 30 s write timeout, far above a failover.
const PATIENCE: Duration = Duration::from_secs(12);

fn cluster() -> Cluster {
    Cluster::start_with_env(
        3,
        &[
            ("RAFTLOG_WRITE__TIMEOUT_MS", "30000"),
            ("RAFTLOG_DEBUG__FAULT_INJECTION", "true"),
        ],
    )
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Pause,
    Kill,
    CutOff,
}

/// Replace node `i`'s fault set; checks it took effect.
fn set_faults(c: &Cluster, i: usize, faults: Value) {
    let r = c.post_raw(i, "/v1/debug/faults", faults.to_string(), &[]);
    assert!(
        r.status == 200 || r.status == 204,
        "faults on {}: {}",
        c.id(i),
        r.body
    );
}

/// Cut `leader` off from every other node, both ways.
fn cut_off(c: &Cluster, leader: usize) {
    let others: Vec<String> = c
        .others(leader)
        .iter()
        .map(|&o| c.id(o).to_string())
        .collect();
    set_faults(c, leader, json!({ "drop_to": others }));
    for o in c.others(leader) {
        set_faults(c, o, json!({ "drop_to": [c.id(leader)] }));
    }
}

fn inject(c: &Cluster, leader: usize, fault: Fault) {
    match fault {
        Fault::Pause => c.stop(leader),
        Fault::Kill => c.kill(leader),
        Fault::CutOff => cut_off(c, leader),
    }
}

fn heal(c: &Cluster, leader: usize, fault: Fault) {
    match fault {
        Fault::Pause => c.cont(leader),
        Fault::Kill => c.restart(leader),
        Fault::CutOff => {
            for i in 0..c.len() {
                set_faults(c, i, json!({}));
            }
        }
    }
}

/// A write sent through a follower right after the leader's fault (the follower
/// still forwards to the old leader) gets a 201 long before its timeout, and the
/// healed cluster holds it exactly once.
fn forwarded_write_follows_the_leader(fault: Fault) {
    let c = cluster();
    let leader = c.wait_leader();
    let via = c.others(leader)[0];
    c.write_retrying(via, "before", json!("majority"), None);
    inject(&c, leader, fault);
    let start = Instant::now();
    let msg = format!("through-{fault:?}");
    let r = c
        .write_with(via, &msg, json!("majority"), "", None, PATIENCE)
        .unwrap_or_else(|e| panic!("{fault:?}: the forwarded write was not answered: {e}"));
    assert_eq!(r.status, 201, "{fault:?}: {}", r.body);
    assert!(r.json.get("duplicate").is_none(), "{fault:?}: {}", r.body);
    println!(
        "{fault:?}: forwarded write answered after {:?}",
        start.elapsed()
    );
    let offset = r.offset();
    heal(&c, leader, fault);
    let log = c.wait_converged(&[0, 1, 2], 2);
    assert_dense(&log);
    assert_eq!(
        count(&log, &msg),
        1,
        "{fault:?}: one copy of an acknowledged write"
    );
    assert!(
        log.contains(&(offset, msg.clone())),
        "{fault:?}: at its offset {offset}"
    );
}

#[test]
fn a_forwarded_write_follows_the_leader_when_it_is_paused() {
    forwarded_write_follows_the_leader(Fault::Pause);
}

#[test]
fn a_forwarded_write_follows_the_leader_when_it_is_killed() {
    forwarded_write_follows_the_leader(Fault::Kill);
}

#[test]
fn a_forwarded_write_follows_the_leader_when_it_is_cut_off() {
    forwarded_write_follows_the_leader(Fault::CutOff);
}

/// Writes the cut-off leader appended itself but cannot commit are answered with
/// 504 "outcome unknown" when it steps down, not at their 30 s timeout; the
/// entry was never committed, so it is not in the healed log.
#[test]
fn a_deposed_leader_answers_its_waiting_writes_at_once() {
    let c = cluster();
    let leader = c.wait_leader();
    c.write_retrying(leader, "before", json!("majority"), None);
    cut_off(&c, leader);
    let r = c
        .write_with(leader, "stranded", json!("majority"), "", None, PATIENCE)
        .unwrap_or_else(|e| panic!("the deposed leader did not answer: {e}"));
    r.assert_error(504, "write_timeout", "a deposed leader's write");
    assert!(r.body.contains("outcome unknown"), "{}", r.body);
    let new_leader = c.wait_leader_among(&c.others(leader));
    assert_ne!(new_leader, leader);
    heal(&c, leader, Fault::CutOff);
    c.write_retrying(new_leader, "after", json!("all"), None);
    let log = c.wait_converged(&[0, 1, 2], 2);
    assert_dense(&log);
    assert!(count(&log, "stranded") <= 1);
    assert_eq!(count(&log, "after"), 1);
}

/// A linearizable read at a follower whose ReadIndex request went to a paused
/// leader is re-served through the new leader, and sees every earlier write.
#[test]
fn a_linearizable_read_follows_the_leader() {
    let c = cluster();
    let leader = c.wait_leader();
    let via = c.others(leader)[0];
    c.write_retrying(via, "seen", json!("majority"), None);
    c.stop(leader);
    let r = c
        .try_get_timeout(
            via,
            "/v1/messages?from=0&consistency=linearizable",
            PATIENCE,
        )
        .unwrap_or_else(|e| panic!("the read was not answered: {e}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let msgs: Vec<String> = r.json["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(msgs.contains(&"seen".to_string()), "{msgs:?}");
    c.cont(leader);
}

/// While no leader is known, a new request gets 503 `no_leader` at once, with a
/// Retry-After of one election timeout (1 s here).
#[test]
fn without_a_leader_new_writes_get_503_with_retry_after() {
    let c = cluster();
    let leader = c.wait_leader();
    let others = c.others(leader);
    c.kill(others[0]);
    c.kill(others[1]);
    let r = wait_for_or(
        "the lone leader to step down and refuse writes",
        LONG,
        || {
            let r = c
                .write_with(leader, "x", json!("majority"), "", None, PATIENCE)
                .ok()?;
            (r.status == 503).then_some(r)
        },
        String::new,
    );
    assert!(
        matches!(r.code(), Some("no_leader" | "no_quorum")),
        "{}",
        r.body
    );
    assert_eq!(r.retry_after.as_deref(), Some("1"), "{}", r.body);
}

/// A write sent to a leader while it is paused waits in its socket; after a new
/// leader is elected and the old one continues, the old one must not answer from
/// its stale view: it steps down and answers at once (201 after following the
/// new leader, or 504 "outcome unknown"), never only at the 30 s timeout. A 201
/// means exactly one copy in the log.
#[test]
fn a_paused_leader_answers_its_queued_write_promptly_after_it_continues() {
    let c = cluster();
    let leader = c.wait_leader();
    c.write_retrying(leader, "before", json!("majority"), None);
    c.stop(leader);
    let r = std::thread::scope(|s| {
        let queued =
            s.spawn(|| c.write_with(leader, "queued", json!("majority"), "", None, PATIENCE));
        let new_leader = c.wait_leader_among(&c.others(leader));
        assert_ne!(new_leader, leader);
        c.cont(leader);
        queued.join().expect("writer thread")
    })
    .unwrap_or_else(|e| panic!("the continued leader did not answer its queued write: {e}"));
    assert!(
        r.status == 201 || r.status == 504,
        "{} {}",
        r.status,
        r.body
    );
    let log = c.wait_converged(&[0, 1, 2], 1);
    assert_dense(&log);
    let copies = count(&log, "queued");
    if r.status == 201 {
        assert_eq!(copies, 1, "an acknowledged write once");
    } else {
        r.assert_error(504, "write_timeout", "the continued leader's answer");
        assert!(copies <= 1);
    }
}
