//! Damaged files on one node of three, with real processes (issue 14 parts 3-4).
//!
//! Each case: enough writes that the victim (a follower) has a snapshot, sealed
//! WAL segments and sealed message-store segments with their `.idx`; SIGKILL it;
//! damage one file (a bit flip, a zeroed 4 KiB page, or truncation to half);
//! restart it. Checks: the damage is detected (its log says so), the node comes
//! back by itself (repairing, if the damage was below what it had made durable,
//! then a voter again) within a bounded deadline, serves the same log as the
//! others (so it never serves or replicates damaged bytes), and no acknowledged
//! write is lost: a w=all write succeeds afterwards and every acknowledged
//! message is in the converged log exactly once.
//!
//! Damage that keeps a sealed message segment's length (flip, zeroed page) is
//! not seen at open (its `.idx` matches, so the segment is not scanned): there
//! the test first reads every message of that segment from the victim, each of
//! which must be the exact bytes or an error, at least one an error; the failed
//! read drops the `.idx`, and the next restart scans, detects and repairs.
//!
//! Prints one line per case (file kind, damage, outcome, time to repair) for the
//! README's Reliability table.

#[path = "common/process.rs"]
mod harness;

#[path = "common/diskdamage.rs"]
mod diskdamage;

use diskdamage::{
    candidates, damage, found_only_by_reads, sorted_files, Damage, Kind, DAMAGES, KINDS,
};
use harness::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Repair (restart, catch up, vote again) must finish within this.
const REPAIR_DEADLINE: Duration = Duration::from_secs(60);

fn cluster() -> Cluster {
    Cluster::start_with_env(
        3,
        &[
            ("RAFTLOG_SNAPSHOT__EVERY_ENTRIES", "60"),
            ("RAFTLOG_WAL__SEGMENT_BYTES", "16384"),
            ("RAFTLOG_READ__CACHE_BYTES", "0"),
        ],
    )
}

/// `batches` batches of 10 messages of ~300 bytes at w=majority; returns them.
fn fill(c: &Cluster, tag: &str, batches: usize) -> Vec<String> {
    let mut acked = Vec::new();
    for b in 0..batches {
        let msgs: Vec<String> = (0..10)
            .map(|k| format!("{tag}-{b}-{k}-{}", "x".repeat(300)))
            .collect();
        let body = json!({ "messages": msgs, "w": "majority" }).to_string();
        let r = wait_for("a batch write", Duration::from_secs(30), || {
            let l = c.leader()?;
            let r = c.post_raw(l, "/v1/messages/batch", body.clone(), &[]);
            (r.status == 201).then_some(r)
        });
        assert_eq!(r.status, 201, "{}", r.body);
        acked.extend(msgs);
    }
    acked
}

/// The file of `kind` to damage on a stopped node: the oldest sealed one.
fn target(data_dir: &Path, kind: Kind) -> PathBuf {
    candidates(data_dir, kind)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {kind:?} to damage under {}", data_dir.display()))
}

/// Every message of the damaged segment, read from `victim` one at a time
/// (local reads, no leader involved), is the leader's exact message or an
/// error; at least one is an error.
fn reads_are_exact_or_errors(c: &Cluster, victim: usize, seg: &Path) {
    wait_for("the victim to serve", Duration::from_secs(30), || {
        (c.status(victim)?["phase"] == "run").then_some(())
    });
    let first_of = |p: &Path| -> u64 { p.file_stem().unwrap().to_str().unwrap().parse().unwrap() };
    let first = first_of(seg);
    let leader = c.wait_leader();
    let truth = c.log(leader, "local");
    // The whole segment: up to the next one's first offset (a segment installed
    // from a streamed snapshot can hold the whole log).
    let end = sorted_files(seg.parent().unwrap(), raftlog::msgstore::SEGMENT_EXT)
        .iter()
        .map(|p| first_of(p))
        .find(|&f| f > first)
        .unwrap_or(truth.len() as u64);
    let mut errors = 0;
    for off in first..end {
        let path = format!("/v1/messages?from={off}&limit=1&consistency=local");
        let r = c.get(victim, &path);
        if r.status != 200 {
            assert!(
                r.code().is_some(),
                "an error in the API's format: {}",
                r.body
            );
            errors += 1;
            continue;
        }
        let Some(m) = r.json["messages"].as_array().and_then(|a| a.first()) else {
            continue;
        };
        let want = &truth[off as usize];
        assert_eq!(m["offset"].as_u64(), Some(want.0));
        assert_eq!(m["message"].as_str(), Some(want.1.as_str()), "offset {off}");
    }
    assert!(errors > 0, "no read of {} failed", seg.display());
}

/// What the victim's log says about its restart.
fn outcome(c: &Cluster, i: usize) -> &'static str {
    let log = log_since_last_start(&c.info(i).log_path);
    if log.contains("discarding its log") {
        "detected, repaired from the leader"
    } else if log.contains("index file damaged") {
        "detected (index ignored, segment scanned)"
    } else if log.contains("skipping unreadable snapshot") || log.contains("cutting a torn") {
        "detected (cut back, re-applied from the log)"
    } else {
        "NOT DETECTED"
    }
}

/// Poll until `i` is not repairing, is a voter the leader counts (not marked
/// repairing in its member list), and holds the leader's log. Returns the converged log.
fn wait_repaired(c: &Cluster, i: usize, min_len: usize) -> Vec<(u64, String)> {
    let mut seen = false;
    wait_for(
        &format!("{} to finish repairing and vote again", c.id(i)),
        REPAIR_DEADLINE,
        || {
            let s = c.status(i)?;
            if s["repairing"] == true {
                assert!(s["repair"]["target"].is_u64(), "progress shown: {s}");
                seen = true;
            }
            if s["repairing"] != false || s["phase"] != "run" {
                return None;
            }
            let l = c.leader()?;
            let ls = c.status(l)?;
            let voter = ls["members"]
                .as_array()?
                .iter()
                .any(|m| m["node_id"] == c.id(i) && m["voter"] == true && m["repairing"] == false);
            voter.then_some(())
        },
    );
    // The gauges are refreshed on the node's tick, a moment after the status.
    wait_for(
        &format!("{}'s repairing gauge to be 0 again", c.id(i)),
        REPAIR_DEADLINE,
        || {
            let metrics = c.get(i, "/metrics").body;
            metrics
                .lines()
                .any(|l| l == "raftlog_repairing 0")
                .then_some(())
        },
    );
    println!("    {} seen repairing in /v1/status: {seen}", c.id(i));
    c.wait_converged(&[0, 1, 2], min_len)
}

#[test]
fn damaged_files_on_one_node_are_detected_and_repaired_without_an_operator() {
    let c = cluster();
    let mut acked = fill(&c, "base", 40);
    let mut rows = Vec::new();
    let mut case = 0;
    for kind in KINDS {
        for how in DAMAGES {
            case += 1;
            acked.extend(fill(&c, &format!("c{case}"), 30));
            let leader = c.wait_leader();
            let victim = c.others(leader)[case % 2];
            c.wait_converged(&[0, 1, 2], acked.len());
            c.kill(victim);
            let path = target(&c.info(victim).data_dir, kind);
            damage(&path, how).unwrap();
            let started = Instant::now();
            c.restart(victim);
            let silent = found_only_by_reads(kind, how);
            let mut what = "";
            let mut started = started;
            if silent {
                reads_are_exact_or_errors(&c, victim, &path);
                what =
                    "detected at read (error, never other bytes), repaired at the next restart: ";
                c.kill(victim);
                started = Instant::now();
                c.restart(victim);
            }
            let log = wait_repaired(&c, victim, acked.len());
            let took = started.elapsed();
            let what = format!("{what}{}", outcome(&c, victim));
            let repairs = c.metric(victim, "raftlog_repairs_started_total");
            let repaired = what.ends_with("repaired from the leader");
            assert_eq!(
                repairs,
                f64::from(u8::from(repaired)),
                "{what}: repairs started"
            );
            let row = format!("{kind:?} | {how:?} | {what} | {} ms", took.as_millis());
            println!("DAMAGE {} {row} ({})", c.id(victim), path.display());
            assert!(!what.starts_with("NOT"), "{row}");
            for m in &acked {
                assert_eq!(count(&log, m), 1, "{row}: acknowledged {m:.20} once");
            }
            let r = c.write_retrying(leader, &format!("after-{case}"), json!("all"), None);
            assert_eq!(r.status, 201, "{row}: a w=all write: {}", r.body);
            acked.push(format!("after-{case}"));
            rows.push(row);
        }
    }
    // The founding node has no join address: as a repairing node with an empty
    // log it knows its peers only from the hard-state file.
    let founder = c.index_of("n1");
    let leader = c.wait_leader();
    if leader == founder {
        let to = c.id(c.others(leader)[0]).to_string();
        let body = json!({ "to": to }).to_string();
        let r = c.post_raw(leader, "/v1/cluster/transfer-leadership", body, &[]);
        assert!(r.status < 300, "transfer: {}", r.body);
        wait_for("n1 to hand over", Duration::from_secs(30), || {
            c.leader().filter(|&l| l != founder)
        });
    }
    acked.extend(fill(&c, "founder", 30));
    c.wait_converged(&[0, 1, 2], acked.len());
    c.kill(founder);
    let path = target(&c.info(founder).data_dir, Kind::WalSegment);
    damage(&path, Damage::BitFlip).unwrap();
    let started = Instant::now();
    c.restart(founder);
    let log = wait_repaired(&c, founder, acked.len());
    let row = format!(
        "WalSegment (founding node) | BitFlip | {} | {} ms",
        outcome(&c, founder),
        started.elapsed().as_millis()
    );
    println!("DAMAGE n1 {row}");
    assert!(row.contains("repaired"), "{row}");
    for m in &acked {
        assert_eq!(count(&log, m), 1, "{row}: acknowledged {m:.20} once");
    }
    let r = c.write_retrying(c.wait_leader(), "after-founder", json!("all"), None);
    assert_eq!(r.status, 201, "{row}: a w=all write: {}", r.body);
    rows.push(row);
    println!("file kind | damage | outcome | restart to voter");
    for r in rows {
        println!("{r}");
    }
}
