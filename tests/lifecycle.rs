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
