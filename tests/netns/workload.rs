//! Concurrent clients, all in the clients' namespace: writers (w = majority and
//! w = 1, most with an Idempotency-Key and retried with it; a quarter of them
//! batches of 2..=5 messages, a fifth of them, single or batch, conditional on
//! the log's next offset as the writer last learnt it, so that writers race for
//! the same offset) and readers (linearizable and local, on every host). Every
//! request is one recorded op.
//!
//! Outcome rules, from the SPEC: 201/200 ok; 4xx and 503 `no_leader` /
//! `no_quorum` definite failures (nothing appended), as is a request that never
//! connected; everything else (504 `write_timeout`, other 5xx, a timeout or a
//! connection lost after sending) unknown.

use super::cluster::http_addr;
use super::history::{History, Kind, Op, Outcome, Read, Write, W};
use super::http::{self, HttpError};
use super::net::Net;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Client-side limit of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Server-side write timeout (`?timeout_ms`): a 504 comes before the client gives
/// up. Well above a failover, so a request that waits for its timeout instead of
/// following the leader stands out (check 8).
pub const WRITE_TIMEOUT_MS: u64 = 8000;
/// Tries of one keyed logical write.
const KEYED_ATTEMPTS: u32 = 4;
const READ_LIMIT: u64 = 10_000;
/// Page size of the occasional read from an older offset.
const DEEP_READ_LIMIT: u64 = 100;

pub struct Clients {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

pub struct Mix {
    pub writers: usize,
    pub linearizable_readers: usize,
    pub local_readers: usize,
}

impl Clients {
    pub fn start(net: Arc<Net>, hosts: usize, hist: Arc<History>, seed: u64, mix: &Mix) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let roles = std::iter::repeat_n(Role::Writer, mix.writers)
            .chain(std::iter::repeat_n(
                Role::Reader(true),
                mix.linearizable_readers,
            ))
            .chain(std::iter::repeat_n(Role::Reader(false), mix.local_readers));
        for (c, role) in roles.enumerate() {
            let (net, hist, stop) = (net.clone(), hist.clone(), stop.clone());
            let rng =
                StdRng::seed_from_u64(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(c as u64 + 1)));
            threads.push(
                thread::Builder::new()
                    .name(format!("client-{c}"))
                    .spawn(move || {
                        net.enter_client();
                        let mut cl = Client {
                            id: c,
                            hosts,
                            hist,
                            rng,
                            stop,
                            seen_end: 0,
                        };
                        match role {
                            Role::Writer => cl.writer(),
                            Role::Reader(lin) => cl.reader(lin),
                        }
                    })
                    .expect("spawn client"),
            );
        }
        Clients { stop, threads }
    }

    /// Stops the clients and waits for their last operations.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().expect("client thread panicked");
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[derive(Clone, Copy)]
enum Role {
    Writer,
    Reader(bool),
}

struct Client {
    id: usize,
    hosts: usize,
    hist: Arc<History>,
    rng: StdRng,
    stop: Arc<AtomicBool>,
    seen_end: u64,
}

/// `NEMESIS_NO_LEADER_UNKNOWN=1` takes a 503 `no_leader` as an unknown outcome
/// instead of a definite failure. The SPEC says it is definite; this is only for
/// hunting other bugs while a node that fails to forward a write to a leader
/// that may have appended it still answers `no_leader`.
fn no_leader_is_unknown() -> bool {
    static V: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V.get_or_init(|| std::env::var("NEMESIS_NO_LEADER_UNKNOWN").is_ok_and(|v| v == "1"))
}

/// Classifies a write answer.
pub fn write_outcome(r: &Result<http::Resp, HttpError>) -> (Outcome, String) {
    match r {
        Ok(resp) => {
            let info = if resp.code().is_empty() {
                resp.status.to_string()
            } else {
                format!("{} {}", resp.status, resp.code())
            };
            let o = match resp.status {
                200 | 201 => Outcome::Ok,
                503 if resp.code() == "no_leader" && no_leader_is_unknown() => Outcome::Unknown,
                503 if matches!(resp.code(), "no_leader" | "no_quorum") => Outcome::Fail,
                400..=499 => Outcome::Fail,
                _ => Outcome::Unknown,
            };
            (o, info)
        }
        Err(HttpError::NotSent(e)) => (Outcome::Fail, e.clone()),
        Err(HttpError::Unknown(e)) => (Outcome::Unknown, e.clone()),
    }
}

impl Client {
    fn pause(&mut self, lo: u64, hi: u64) {
        thread::sleep(Duration::from_millis(self.rng.gen_range(lo..hi)));
    }

    fn writer(&mut self) {
        let mut seq = 0u64;
        // The log's next offset as this writer last learnt it (from its own
        // acknowledgements and 409 answers).
        let mut next_guess = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            seq += 1;
            let value = format!("c{}-{seq}", self.id);
            let more: Vec<String> = if self.rng.gen_bool(0.25) {
                let n = self.rng.gen_range(2..=5);
                (1..n).map(|j| format!("{value}.{j}")).collect()
            } else {
                Vec::new()
            };
            let if_next = self.rng.gen_bool(0.2).then_some(next_guess);
            let keyed = self.rng.gen_bool(0.7);
            let key = keyed.then(|| format!("k-{value}"));
            let w = if self.rng.gen_bool(0.7) {
                W::Majority
            } else {
                W::One
            };
            let spec = WriteSpec {
                value: &value,
                more: &more,
                key: key.as_deref(),
                w,
                if_next,
            };
            let tries = if keyed { KEYED_ATTEMPTS } else { 1 };
            for attempt in 1..=tries {
                let host = self.rng.gen_range(1..=self.hosts);
                let (outcome, learnt) = write_op(&self.hist, self.id, host, &spec, attempt);
                if let Some(n) = learnt {
                    next_guess = n;
                }
                if outcome == Outcome::Fail && spec.if_next.is_some() && learnt.is_some() {
                    break; // a 409: a retry would answer the same
                }
                // A retry after a stop request still runs: an unknown outcome is
                // best resolved, and each try is bounded.
                if outcome == Outcome::Ok {
                    break;
                }
                self.pause(50, 250);
            }
            self.pause(5, 40);
        }
    }

    fn reader(&mut self, linearizable: bool) {
        while !self.stop.load(Ordering::SeqCst) {
            let host = self.rng.gen_range(1..=self.hosts);
            // Mostly the tail of the log, to its end (small answers); now and then
            // a short page from anywhere (its end is not the log's: only its
            // contents are checked).
            let (from, limit) = if self.rng.gen_bool(0.05) {
                (self.rng.gen_range(0..=self.seen_end), DEEP_READ_LIMIT)
            } else {
                (
                    self.seen_end.saturating_sub(self.rng.gen_range(1..20)),
                    READ_LIMIT,
                )
            };
            self.read_once(host, linearizable, from, limit);
            self.pause(10, 60);
        }
    }

    fn read_once(&mut self, host: usize, linearizable: bool, from: u64, limit: u64) {
        let id = self.hist.next_id();
        let consistency = if linearizable {
            "linearizable"
        } else {
            "local"
        };
        let invoke = self.hist.now();
        let r = http::request(
            "GET",
            &http_addr(host),
            &format!("/v1/messages?from={from}&limit={limit}&consistency={consistency}"),
            &[],
            None,
            REQUEST_TIMEOUT,
        );
        let complete = self.hist.now();
        let mut read = Read {
            linearizable,
            from,
            limit,
            messages: Vec::new(),
            next_offset: from,
        };
        let (outcome, info) = match &r {
            Ok(resp) if resp.status == 200 => match parse_read(&resp.json, from) {
                Ok((msgs, next)) => {
                    read.messages = msgs;
                    read.next_offset = next;
                    (Outcome::Ok, String::new())
                }
                // A malformed page is a product bug the checker must see: keep it
                // as an ok read that contradicts every log.
                Err(e) => {
                    read.messages = vec![format!("<malformed answer: {e}>")];
                    (Outcome::Ok, e)
                }
            },
            Ok(resp) => (Outcome::Fail, format!("{} {}", resp.status, resp.code())),
            Err(e) => (Outcome::Fail, e.to_string()),
        };
        if outcome == Outcome::Ok {
            self.seen_end = self.seen_end.max(read.lower());
        }
        self.hist.record(Op {
            id,
            client: self.id,
            host,
            invoke,
            complete,
            outcome,
            info,
            kind: Kind::Read(read),
        });
    }
}

/// One logical write, as each of its tries sends it.
pub struct WriteSpec<'a> {
    pub value: &'a str,
    /// A batch's further messages (empty: a single write to `/v1/messages`).
    pub more: &'a [String],
    pub key: Option<&'a str>,
    pub w: W,
    pub if_next: Option<u64>,
}

impl<'a> WriteSpec<'a> {
    /// A single unconditional write.
    pub fn single(value: &'a str, key: Option<&'a str>, w: W) -> Self {
        WriteSpec {
            value,
            more: &[],
            key,
            w,
            if_next: None,
        }
    }
}

/// One write request to `host`, recorded; its outcome, and the log's next
/// offset if the answer told it (after an acknowledged write, or in a 409).
pub fn write_op(
    hist: &History,
    client: usize,
    host: usize,
    spec: &WriteSpec<'_>,
    attempt: u32,
) -> (Outcome, Option<u64>) {
    let id = hist.next_id();
    let batch = !spec.more.is_empty();
    let (path, body) = if batch {
        let msgs: Vec<&str> = std::iter::once(spec.value)
            .chain(spec.more.iter().map(String::as_str))
            .collect();
        let body = format!("{{\"messages\":{},\"w\":{}}}", json!(msgs), spec.w.json());
        ("/v1/messages/batch", body)
    } else {
        let body = format!(
            "{{\"message\":{},\"w\":{}}}",
            json!(spec.value),
            spec.w.json()
        );
        ("/v1/messages", body)
    };
    let if_next = spec.if_next.map(|n| n.to_string());
    let headers: Vec<(&str, &str)> = spec
        .key
        .map(|k| ("Idempotency-Key", k))
        .into_iter()
        .chain(if_next.as_deref().map(|n| ("If-Next-Offset", n)))
        .collect();
    let invoke = hist.now();
    let r = http::request(
        "POST",
        &http_addr(host),
        &format!("{path}?timeout_ms={WRITE_TIMEOUT_MS}"),
        &headers,
        Some(&body),
        REQUEST_TIMEOUT,
    );
    let complete = hist.now();
    let (mut outcome, info) = write_outcome(&r);
    let mut rec = Write {
        value: spec.value.to_string(),
        more: spec.more.to_vec(),
        if_next: spec.if_next,
        conflict_next: None,
        key: spec.key.map(str::to_string),
        w: spec.w,
        attempt,
        offset: None,
        committed: None,
        duplicate: false,
    };
    let mut learnt = None;
    if let (Outcome::Ok, Ok(resp)) = (outcome, &r) {
        let field = if batch { "first_offset" } else { "offset" };
        rec.offset = resp.json[field].as_u64();
        rec.committed = resp.json["committed"].as_bool();
        rec.duplicate = resp.json["duplicate"].as_bool().unwrap_or(false);
        if rec.offset.is_none() {
            outcome = Outcome::Unknown; // an answer we cannot read proves nothing
        }
        learnt = rec.offset.map(|o| o + 1 + spec.more.len() as u64);
    }
    if let Ok(resp) = &r {
        if resp.status == 409 && resp.code() == "offset_conflict" {
            rec.conflict_next = resp.json["error"]["next_offset"].as_u64();
            learnt = rec.conflict_next;
        }
    }
    hist.record(Op {
        id,
        client,
        host,
        invoke,
        complete,
        outcome,
        info,
        kind: Kind::Write(rec),
    });
    (outcome, learnt)
}

/// Messages of a read page, checked dense from `from`.
fn parse_read(v: &Value, from: u64) -> Result<(Vec<String>, u64), String> {
    let msgs = v["messages"].as_array().ok_or("no messages array")?;
    let mut out = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let off = m["offset"].as_u64().ok_or("message without offset")?;
        if off != from + i as u64 {
            return Err(format!(
                "offset {off} at position {i} of a read from {from}"
            ));
        }
        out.push(
            m["message"]
                .as_str()
                .ok_or("message without text")?
                .to_string(),
        );
    }
    let next = v["next_offset"].as_u64().ok_or("no next_offset")?;
    if !out.is_empty() && next != from + out.len() as u64 {
        return Err(format!(
            "next_offset {next} after {} messages from {from}",
            out.len()
        ));
    }
    Ok((out, next))
}
