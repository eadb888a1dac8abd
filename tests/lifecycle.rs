//! Process tests of the log lifecycle (SPEC section 7): atomic batches and
//! conditional appends through a follower, trims that restarted and newly
//! joined nodes agree on, retention that gives disk space back on every node,
//! and cursors that survive a leader change and restarts.
//!
//! Real `raftlog serve` processes on loopback (`tests/common/process.rs`);
//! every wait is bounded and polls a condition.

#[path = "common/process.rs"]
mod harness;

use harness::*;
use serde_json::{json, Value};
use std::path::Path;

/// A node that is not the leader.
fn follower(c: &Cluster) -> usize {
    let l = c.wait_leader();
    (0..c.len()).find(|&i| i != l).expect("a follower")
}

fn post(c: &Cluster, i: usize, path: &str, body: Value, headers: &[(&str, &str)]) -> Resp {
    c.post_raw(i, path, body.to_string(), headers)
}

/// The messages from `from` on, read locally on node `i`.
fn local_log(c: &Cluster, i: usize, from: u64) -> Vec<(u64, String)> {
    let r = c.get(
        i,
        &format!("/v1/messages?from={from}&consistency=local&limit=10000"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let off = m["offset"].as_u64().unwrap();
            (off, m["message"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn batches_and_conditional_writes_through_a_follower() {
    let c = Cluster::start(3);
    let f = follower(&c);
    c.write_retrying(f, "zero", json!("majority"), None);

    let batch = json!({"messages": ["a", "b", "c"], "w": "majority"});
    let r = post(
        &c,
        f,
        "/v1/messages/batch",
        batch.clone(),
        &[("Idempotency-Key", "b1")],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json["first_offset"], 1);
    assert_eq!(r.json["count"], 3);
    assert_eq!(r.json["committed"], true);
    // The same key again: the first result, nothing appended twice.
    let again = post(
        &c,
        f,
        "/v1/messages/batch",
        batch,
        &[("Idempotency-Key", "b1")],
    );
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        (
            again.json["first_offset"].clone(),
            again.json["duplicate"].clone()
        ),
        (json!(1), json!(true))
    );

    // Conditional: right offset lands, wrong one is a 409 with the real one.
    let single = json!({"message": "d"});
    let ok = post(
        &c,
        f,
        "/v1/messages",
        single.clone(),
        &[("If-Next-Offset", "4")],
    );
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert_eq!(ok.offset(), 4);
    let stale = post(
        &c,
        f,
        "/v1/messages",
        single,
        &[("If-Next-Offset", "4"), ("Idempotency-Key", "c1")],
    );
    stale.assert_error(409, "offset_conflict", "stale condition");
    assert_eq!(stale.json["error"]["next_offset"], 5);
    // Its retry answers its first outcome, though offset 4 is now wrong for
    // another reason and 5 would be right.
    let retry = post(
        &c,
        f,
        "/v1/messages",
        json!({"message": "d"}),
        &[("If-Next-Offset", "5"), ("Idempotency-Key", "c1")],
    );
    retry.assert_error(409, "offset_conflict", "retry of a conflict");
    let cond_batch = json!({"messages": ["e", "f"]});
    let r = post(
        &c,
        f,
        "/v1/messages/batch",
        cond_batch.clone(),
        &[("If-Next-Offset", "5")],
    );
    assert_eq!(
        (r.status, r.json["first_offset"].clone()),
        (201, json!(5)),
        "{}",
        r.body
    );
    let r = post(
        &c,
        f,
        "/v1/messages/batch",
        cond_batch,
        &[("If-Next-Offset", "5")],
    );
    r.assert_error(409, "offset_conflict", "stale batch condition");
    // Bad input changes nothing.
    post(&c, f, "/v1/messages/batch", json!({"messages": []}), &[]).assert_error(
        400,
        "invalid_request",
        "empty",
    );
    post(
        &c,
        f,
        "/v1/messages/batch",
        json!({"messages": ["x", 2]}),
        &[],
    )
    .assert_error(400, "invalid_request", "non-string");
    post(
        &c,
        f,
        "/v1/messages",
        json!({"message": "x"}),
        &[("If-Next-Offset", "soon")],
    )
    .assert_error(400, "invalid_request", "bad header");

    let want: Vec<(u64, String)> = ["zero", "a", "b", "c", "d", "e", "f"]
        .iter()
        .enumerate()
        .map(|(i, m)| (i as u64, m.to_string()))
        .collect();
    for i in 0..3 {
        wait_for(&format!("node {i} holds the log"), LONG, || {
            (local_log(&c, i, 0) == want).then_some(())
        });
    }
}
/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

/// Small segments and frequent snapshots, so trims remove files quickly.
const SMALL: [(&str, &str); 2] = [
    ("RAFTLOG_SNAPSHOT__EVERY_ENTRIES", "20"),
    ("RAFTLOG_WAL__SEGMENT_BYTES", "65536"),
];

/// Writes `batches` batches of `per` messages of `size` bytes through node `i`.
fn fill(c: &Cluster, i: usize, batches: usize, per: usize, size: usize) {
    for b in 0..batches {
        let msgs: Vec<String> = (0..per)
            .map(|k| format!("{b}-{k}-{}", "x".repeat(size)))
            .collect();
        let body = json!({ "messages": msgs, "w": "majority" }).to_string();
        wait_for(&format!("batch {b}"), LONG, || {
            let r = c.post_raw(
                i,
                "/v1/messages/batch",
                body.clone(),
                &[("Idempotency-Key", &format!("fill-{b}"))],
            );
            match r.status {
                200 | 201 => Some(()),
                503 => None,
                _ => panic!("batch {b}: {} {}", r.status, r.body),
            }
        });
    }
}

fn status_u64(c: &Cluster, i: usize, field: &str) -> Option<u64> {
    c.status(i)?[field].as_u64()
}

/// Waits until node `i` reports `first_offset` and `next_offset`.
fn wait_range(c: &Cluster, i: usize, first: u64, next: u64) {
    wait_for(
        &format!("node {} holds {first}..{next}", c.id(i)),
        LONG,
        || {
            let got = (
                status_u64(c, i, "first_offset")?,
                status_u64(c, i, "next_offset")?,
            );
            (got == (first, next)).then_some(())
        },
    );
}

#[test]
fn a_trim_is_the_same_on_every_node_after_restart_and_for_a_joiner() {
    let mut c = Cluster::start_with_env(3, &SMALL);
    let l = c.wait_leader();
    let f = follower(&c);
    fill(&c, f, 20, 20, 500);
    let r = post(&c, f, "/v1/log/trim", json!({"before_offset": 1000}), &[]);
    r.assert_error(400, "invalid_request", "trim past the end");
    post(&c, f, "/v1/log/trim", json!({"before_offset": "x"}), &[]).assert_error(
        400,
        "invalid_request",
        "trim offset not a number",
    );
    let r = post(&c, f, "/v1/log/trim", json!({"before_offset": 300}), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json["first_offset"], 300);
    for i in 0..3 {
        wait_range(&c, i, 300, 400);
        let below = c.read(i, 10, "local");
        below.assert_error(410, "offset_trimmed", "read below the trim");
        assert_eq!(below.json["error"]["first_offset"], 300);
        assert_eq!(local_log(&c, i, 300).len(), 100);
    }
    // A long poll below the trim point ends the same way.
    let r = c.get(l, "/v1/messages?from=0&wait_ms=2000");
    r.assert_error(410, "offset_trimmed", "long poll below the trim");
    let want = local_log(&c, l, 300);
    // A restarted follower comes back with the same range.
    c.kill(f);
    c.restart(f);
    wait_range(&c, f, 300, 400);
    assert_eq!(local_log(&c, f, 300), want);
    // A node joining after the trim gets the same first offset.
    let seed = c.info(l).grpc_addr();
    let j = c.add_node(Some(seed));
    wait_range(&c, j, 300, 400);
    assert_eq!(local_log(&c, j, 300), want);
    // Writes go on at the same offsets everywhere.
    let r = c.write_retrying(j, "after", json!("majority"), None);
    assert_eq!(r.offset(), 400);
    for i in 0..4 {
        wait_range(&c, i, 300, 401);
    }
}

#[test]
fn retention_by_bytes_gives_disk_space_back_on_every_node() {
    let max_bytes = 200_000u64;
    let env = [
        SMALL[0],
        SMALL[1],
        ("RAFTLOG_RETENTION__MAX_BYTES", "200000"),
    ];
    let c = Cluster::start_with_env(3, &env);
    let f = follower(&c);
    fill(&c, f, 40, 25, 1000); // about 1 MB
    let written = 40 * 25 * 1000u64;
    for i in 0..3 {
        let dir = c.info(i).data_dir.join("messages");
        // At most the limit plus the segment being written and one more, on disk
        // and in the reported `log_bytes` (the store's own count of its segments,
        // buffered bytes included, read at another moment than the directory).
        let bound = max_bytes + 2 * 65536;
        let held = wait_for(&format!("{} gives space back", c.id(i)), LONG, || {
            let held = dir_bytes(&dir);
            let first = status_u64(&c, i, "first_offset")?;
            let log_bytes = status_u64(&c, i, "log_bytes")?;
            (first > 0 && held <= bound && log_bytes <= bound).then_some(held)
        });
        assert!(
            held < written / 2,
            "{}: {held} bytes held of {written}",
            c.id(i)
        );
    }
    let first = status_u64(&c, 0, "first_offset").unwrap();
    for i in 1..3 {
        wait_for("the same first offset everywhere", LONG, || {
            (status_u64(&c, i, "first_offset")? == status_u64(&c, 0, "first_offset")?).then_some(())
        });
    }
    assert!(first > 0);
    let metrics = c.get(0, "/metrics").body;
    assert!(
        metrics.contains("first_offset"),
        "metrics lack first_offset"
    );
}

#[test]
fn cursors_survive_a_leader_change_and_restarts_and_hold_retention_back() {
    let env = [
        SMALL[0],
        SMALL[1],
        ("RAFTLOG_RETENTION__MAX_MESSAGES", "10"),
    ];
    let c = Cluster::start_with_env(3, &env);
    let l = c.wait_leader();
    let f = follower(&c);
    let put = |i: usize, name: &str, body: Value| {
        c.try_request(
            i,
            reqwest::Method::PUT,
            &format!("/v1/cursors/{name}"),
            Some(body.to_string()),
            &[],
            REQUEST_TIMEOUT,
        )
        .unwrap()
    };
    let r = put(f, "slow", json!({"offset": 5}));
    assert_eq!(
        (r.status, r.json.clone()),
        (200, json!({"name": "slow", "offset": 5})),
        "{}",
        r.body
    );
    put(f, "slow", json!({"offset": 4})).assert_error(409, "cursor_regression", "backwards");
    put(f, "bad name", json!({"offset": 4})).assert_error(400, "invalid_request", "name");
    put(f, "slow", json!({"offset": "x"})).assert_error(400, "invalid_request", "offset");
    assert_eq!(put(f, "fast", json!({"offset": 40})).status, 200);
    fill(&c, f, 5, 10, 100);
    // Retention (10 messages) would trim to 40, but never past the cursor at 5.
    wait_for("retention up to the lowest cursor", LONG, || {
        (status_u64(&c, l, "first_offset")? == 5).then_some(())
    });
    // A leader change: the cursors are still there, on every node.
    c.kill(l);
    let l2 = c.wait_leader();
    let r = c.get(l2, "/v1/cursors");
    assert_eq!(
        r.json,
        json!({"cursors": [{"name": "fast", "offset": 40}, {"name": "slow", "offset": 5}]}),
        "{}",
        r.body
    );
    assert_eq!(put(l2, "slow", json!({"offset": 30})).status, 200);
    wait_for("retention follows the cursor", LONG, || {
        (status_u64(&c, l2, "first_offset")? == 30).then_some(())
    });
    // Moving back needs force; an explicit trim may pass a cursor and says so.
    let r = put(l2, "slow", json!({"offset": 20, "force": true}));
    assert_eq!(
        (r.status, r.json["offset"].clone()),
        (200, json!(20)),
        "{}",
        r.body
    );
    let trim = post(&c, l2, "/v1/log/trim", json!({"before_offset": 45}), &[]);
    assert_eq!(trim.status, 200, "{}", trim.body);
    assert_eq!(trim.json["passed_cursors"], json!(["fast", "slow"]));
    // The old leader restarts and agrees.
    c.restart(l);
    wait_for("the restarted node has the cursors", LONG, || {
        let r = c
            .try_get_timeout(l, "/v1/cursors/slow", REQUEST_TIMEOUT)
            .ok()?;
        (r.status == 200 && r.json["offset"] == 20).then_some(())
    });
    let delete = || {
        c.try_request(
            l,
            reqwest::Method::DELETE,
            "/v1/cursors/slow",
            None,
            &[],
            REQUEST_TIMEOUT,
        )
        .unwrap()
    };
    let del = delete();
    assert_eq!(del.status, 200, "{}", del.body);
    c.get(f, "/v1/cursors/slow")
        .assert_error(404, "not_found", "deleted");
    let again = delete();
    again.assert_error(404, "not_found", "deleted twice");
}

/// Number of message-store segment files in node `i`'s data directory.
fn segment_files(c: &Cluster, i: usize) -> Vec<String> {
    let dir = c.info(i).data_dir.join("messages");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

/// A node joining after a trim and a snapshot gets the leader's messages streamed
/// from several message-store segments (issue 15 step 4) and holds exactly the
/// same log, installed as a segment file starting at the snapshot's first offset,
/// also after a restart.
#[test]
fn a_joiner_gets_identical_data_streamed_from_several_segments() {
    let mut c = Cluster::start_with_env(3, &SMALL);
    let l = c.wait_leader();
    let f = follower(&c);
    fill(&c, f, 30, 20, 700); // 600 messages of ~710 bytes: several 64 KiB segments
    let r = post(&c, f, "/v1/log/trim", json!({"before_offset": 150}), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    // More entries than `snapshot.every_entries`: a snapshot after the trim.
    for k in 0..25 {
        c.write_retrying(f, &format!("after-{k}"), json!("majority"), None);
    }
    for i in 0..3 {
        wait_range(&c, i, 150, 625);
    }
    let segments = segment_files(&c, l);
    assert!(
        segments.len() >= 3,
        "the leader's log must span several segments: {segments:?}"
    );
    let want = local_log(&c, l, 150);
    assert_eq!(want.len(), 475);

    let seed = c.info(l).grpc_addr();
    let j = c.add_node(Some(seed));
    wait_range(&c, j, 150, 625);
    assert_eq!(local_log(&c, j, 150), want, "the joiner's log");
    assert!(
        c.log_count(j, "snapshot received") > 0,
        "the joiner needed the compacted prefix: it must have received a snapshot"
    );
    let installed = segment_files(&c, j);
    assert!(
        installed
            .first()
            .is_some_and(|n| n.as_str() == "00000000000000000150.seg"),
        "the received records are a segment from offset 150: {installed:?}"
    );
    let staged: Vec<_> = std::fs::read_dir(c.info(j).data_dir.join("snap-incoming"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(staged.is_empty(), "nothing left staged: {staged:?}");

    c.kill(j);
    c.restart(j);
    wait_range(&c, j, 150, 625);
    assert_eq!(
        local_log(&c, j, 150),
        want,
        "the joiner's log after a restart"
    );
}
