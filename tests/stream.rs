//! `GET /v1/messages/stream` against real processes: every committed message in
//! order with no gaps, across a leadership transfer, and resumed with
//! `Last-Event-ID` after the streaming node restarts.

#[path = "common/process.rs"]
mod harness;

use harness::{wait_for, Cluster, LONG};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

/// What a stream reader thread reports.
#[derive(Debug)]
enum Item {
    Event { id: u64, data: Value },
    End(Value),
    Closed(String),
}

/// Opens a stream on `url` in a thread; events arrive on the returned channel.
fn open(url: &str, last_event_id: Option<u64>) -> mpsc::Receiver<Item> {
    let client = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap();
    let mut req = client.get(url);
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let resp = match req.send() {
            Ok(r) if r.status() == 200 => r,
            Ok(r) => return tx.send(Item::Closed(format!("status {}", r.status()))),
            Err(e) => return tx.send(Item::Closed(e.to_string())),
        };
        let (mut id, mut event, mut data) = (None, None, None);
        for line in BufReader::new(resp).lines() {
            let line = match line {
                Ok(l) => l,
                Err(e) => return tx.send(Item::Closed(e.to_string())),
            };
            if line.is_empty() {
                let item = match (event.take(), id.take(), data.take()) {
                    (Some(_), _, Some(d)) => Item::End(d),
                    (None, Some(id), Some(data)) => Item::Event { id, data },
                    _ => continue,
                };
                if tx.send(item).is_err() {
                    return Ok(());
                }
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = serde_json::from_str(v).ok();
            }
        }
        tx.send(Item::Closed("end of body".into()))
    });
    rx
}

/// Receives events until offset `upto` (exclusive), checking each is the next one
/// after `next` and carries message `msg-<offset>`; returns the new `next`.
fn expect_events(rx: &mpsc::Receiver<Item>, mut next: u64, upto: u64) -> u64 {
    while next < upto {
        match rx.recv_timeout(LONG) {
            Ok(Item::Event { id, data }) => {
                assert_eq!(id, next, "events in order without gaps");
                assert_eq!(
                    data,
                    json!({"offset": next, "message": format!("msg-{next}")})
                );
                next += 1;
            }
            other => panic!("expected event {next}, got {other:?}"),
        }
    }
    next
}

fn write_range(c: &Cluster, node: usize, range: std::ops::Range<u64>) {
    for k in range {
        let r = c.write_retrying(
            node,
            &format!("msg-{k}"),
            Value::Null,
            Some(&format!("k{k}")),
        );
        assert_eq!(
            r.offset(),
            k,
            "a fresh cluster gives offsets in write order"
        );
    }
}

fn follower_of(c: &Cluster, leader: usize) -> usize {
    (0..c.len()).find(|&i| i != leader).unwrap()
}

fn transfer_to(c: &Cluster, leader: usize, to: usize) {
    let body = json!({ "to": c.id(to) }).to_string();
    let r = c.post_raw(leader, "/v1/cluster/transfer-leadership", body, &[]);
    assert!(r.status < 300, "transfer: {} {}", r.status, r.body);
    wait_for("the transfer to complete", LONG, || {
        (c.wait_leader() == to).then_some(())
    });
}

#[test]
fn streams_follow_every_commit_across_a_leadership_transfer_and_a_restart() {
    let c = Cluster::start(3);
    let leader = c.wait_leader();
    let f = follower_of(&c, leader);
    write_range(&c, leader, 0..20);
    // One stream on the leader, one on a follower, one from the middle.
    let on_leader = open(&c.url(leader, "/v1/messages/stream"), None);
    let on_follower = open(&c.url(f, "/v1/messages/stream?from=0"), None);
    let from_mid = open(&c.url(f, "/v1/messages/stream?from=15"), None);
    let (mut nl, mut nf) = (
        expect_events(&on_leader, 0, 20),
        expect_events(&on_follower, 0, 20),
    );
    let mut nm = expect_events(&from_mid, 15, 20);

    // Leadership moves to the follower we stream from, while writes continue.
    transfer_to(&c, leader, f);
    write_range(&c, f, 20..40);
    nl = expect_events(&on_leader, nl, 40);
    nf = expect_events(&on_follower, nf, 40);
    nm = expect_events(&from_mid, nm, 40);
    assert_eq!((nl, nf, nm), (40, 40, 40));

    // The old leader (now a follower) restarts: its stream breaks; a reconnect with
    // Last-Event-ID resumes exactly after the last event received.
    c.kill(leader);
    match on_leader.recv_timeout(LONG) {
        Ok(Item::Closed(why)) => eprintln!("the killed node's stream broke: {why}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {}
        other => panic!("the killed node's stream should break, got {other:?}"),
    }
    write_range(&c, f, 40..50);
    c.restart(leader);
    let resumed = open(&c.url(leader, "/v1/messages/stream?from=0"), Some(nl - 1));
    write_range(&c, f, 50..60);
    assert_eq!(expect_events(&resumed, nl, 60), 60);
    assert_eq!(expect_events(&on_follower, nf, 60), 60);
    // Nothing more than what was written.
    match resumed.recv_timeout(Duration::from_millis(300)) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!("no event beyond the log, got {other:?}"),
    }
}

#[test]
fn the_stream_cap_answers_503_and_a_stopping_node_says_goodbye() {
    let c = Cluster::start_with_env(1, &[("RAFTLOG_LIMITS__MAX_STREAMS", "2")]);
    write_range(&c, 0, 0..3);
    let a = open(&c.url(0, "/v1/messages/stream"), None);
    let b = open(&c.url(0, "/v1/messages/stream?from=1"), None);
    expect_events(&a, 0, 3);
    expect_events(&b, 1, 3);
    let r = c.get(0, "/v1/messages/stream");
    r.assert_error(503, "too_many_streams", "a third stream");
    // A graceful stop ends the open streams with a final event naming where to resume.
    c.term(0, LONG).expect("the node stops");
    for rx in [a, b] {
        match rx.recv_timeout(LONG) {
            Ok(Item::End(v)) => {
                assert_eq!(v["error"]["code"], "shutting_down", "{v}");
                assert_eq!(v["next_offset"], 3);
            }
            other => panic!("expected a final event, got {other:?}"),
        }
    }
}
