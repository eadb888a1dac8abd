//! `raftlog bench`: a closed-loop load generator for any raftlog cluster over its
//! HTTP API, in the manner of `redis-benchmark` or `nats bench`.
//!
//! Each of `--concurrency` workers owns one keep-alive HTTP/1.1 connection (spread
//! round-robin over the `--addr`s) and issues one request at a time: a write
//! (`POST /v1/messages?w=<w>` with a `--size`-byte message) or, with probability
//! `--read-ratio`, a linearizable read of one recent message
//! (`GET /v1/messages?from=<recent>&limit=1`). A line of progress goes to stderr
//! once per second; the summary (throughput, latency percentiles, errors by
//! status) goes to stdout as a table, or as JSON with `--json`.
//!
//! Invariants:
//! - Errors (non-2xx answers, connection failures, timeouts) are counted by kind
//!   and never stop the run; a failed connection is dropped and reopened.
//! - Only successful requests contribute latencies; a latency is measured from
//!   just before the request is sent to the end of its response body.
//! - No request starts after the deadline or beyond `--requests`; requests in
//!   flight then are finished and counted, and the elapsed time includes them.
//! - The "recent" offset a read asks for is the largest offset any write of this
//!   run got back (one unmeasured seed write before the run provides the first).

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod streams;

/// Run length when neither `--duration` nor `--requests` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Pause after a failed connection attempt, so a dead address is not hammered.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// `raftlog bench` flags.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// HTTP address(es) `host:port` of cluster nodes; repeat the flag or separate
    /// with commas to spread the connections round-robin over them.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:8081")]
    pub addr: Vec<String>,
    /// Number of workers, each with its own keep-alive connection and one request
    /// in flight.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub concurrency: usize,
    /// How long to run (`10s`, `500ms`, `2m`; a bare number is seconds). Default
    /// 10s, unless `--requests` is given, which then runs to completion.
    #[arg(long, short = 'd', value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many requests (whichever of this and `--duration` comes
    /// first).
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,
    /// Message size in bytes.
    #[arg(long, short = 's', default_value_t = 100)]
    pub size: usize,
    /// Messages per write: 0 sends single writes (`POST /v1/messages`); N >= 1
    /// sends atomic batches of N (`POST /v1/messages/batch`).
    #[arg(long, default_value_t = 0)]
    pub batch: usize,
    /// Write concern of every write: a number of voters, `majority` or `all`.
    #[arg(long, default_value = "majority", value_parser = parse_w)]
    pub w: String,
    /// Fraction of requests that are linearizable reads (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub read_ratio: f64,
    /// Per-request timeout; a request that takes longer counts as an error.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print the summary as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Speak HTTPS, trusting this CA (PEM; e.g. `certs/ca.pem` from `raftlog certs`).
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<std::path::PathBuf>,
    /// Bearer token for clusters with `[auth]` (needs the `write` role).
    #[arg(long, env = "RAFTLOG_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Live subscriptions (`GET /v1/messages/stream`) held open during the run,
    /// spread over the `--addr`s; the summary adds their delivery lag.
    #[arg(long, default_value_t = 0)]
    pub streams: usize,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            addr: vec!["127.0.0.1:8081".into()],
            concurrency: 16,
            duration: None,
            requests: None,
            size: 100,
            batch: 0,
            w: "majority".into(),
            read_ratio: 0.0,
            timeout: Duration::from_secs(30),
            json: false,
            quiet: false,
            cacert: None,
            token: None,
            streams: 0,
        }
    }
}

/// Parses `10s`, `250ms`, `2m`, `1h`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown duration unit {u:?} in {s:?}")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Accepts a positive integer, `majority` or `all`.
pub fn parse_w(s: &str) -> Result<String, String> {
    match s {
        "majority" | "all" => Ok(s.to_string()),
        n => match n.parse::<u32>() {
            Ok(k) if k >= 1 => Ok(k.to_string()),
            _ => Err(format!(
                "w must be a positive integer, majority or all, got {s:?}"
            )),
        },
    }
}

/// Accepts a number in 0..=1.
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("read ratio must be between 0 and 1, got {s:?}")),
    }
}

/// `host:port` from an address that may carry an `http://` prefix or a path.
pub fn normalize_addr(a: &str) -> Result<String, String> {
    let a = a.trim();
    let a = a
        .strip_prefix("http://")
        .or_else(|| a.strip_prefix("https://"))
        .unwrap_or(a);
    let a = a.split('/').next().unwrap_or("");
    if a.is_empty() || !a.contains(':') {
        return Err(format!("address {a:?} must be host:port"));
    }
    Ok(a.to_string())
}

// ----- latency histogram ------------------------------------------------------------

/// Sub-buckets per power of two: values are kept to within 1/512 (0.2 %).
const SUB_BITS: u32 = 9;
/// Values below this (in µs) are kept exactly.
const EXACT_BELOW: u64 = 1 << (SUB_BITS + 1);

/// A log-linear histogram of microsecond latencies (the idea of HdrHistogram with
/// fixed precision): exact below 1,024 µs, within 0.2 % above. Grows on demand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u64,
    max: u64,
}

fn bucket_of(v: u64) -> usize {
    if v < EXACT_BELOW {
        v as usize
    } else {
        let e = 63 - v.leading_zeros() - SUB_BITS;
        ((e as usize) << SUB_BITS) + (v >> e) as usize
    }
}

/// The largest value that falls in bucket `i`.
fn bucket_high(i: usize) -> u64 {
    if (i as u64) < EXACT_BELOW {
        i as u64
    } else {
        let e = (i >> SUB_BITS) - 1;
        let m = (i & ((1 << SUB_BITS) - 1)) as u64 + (1 << SUB_BITS);
        // In u128: the top bucket's bound is 2^64 - 1 exactly.
        let high = (u128::from(m + 1) << e) - 1;
        u64::try_from(high).unwrap_or(u64::MAX)
    }
}

impl Histogram {
    /// Records one value in microseconds.
    pub fn record(&mut self, us: u64) {
        let i = bucket_of(us);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(us);
        self.max = self.max.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The smallest recorded value (to bucket precision) at or below which a
    /// fraction `q` of the values lie; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_high(i).min(self.max);
            }
        }
        self.max
    }
}

// ----- the run ----------------------------------------------------------------------

/// What one worker saw.
#[derive(Debug, Default)]
struct WorkerStats {
    writes: Histogram,
    reads: Histogram,
    errors: BTreeMap<String, u64>,
    /// Requests re-sent after a 503 with `Retry-After` (not errors: the server
    /// asked for it; the latency recorded includes the wait).
    retried: u64,
}

/// Shared between the workers and the progress reporter.
struct Shared {
    deadline: Option<Instant>,
    /// Requests still to be started when `--requests` is given.
    tickets: Option<AtomicU64>,
    ops: AtomicU64,
    errors: AtomicU64,
    /// Largest offset a write returned: what reads ask for.
    recent: AtomicU64,
    stop: AtomicBool,
    /// Ack times for stream lag, with `--streams`.
    probe: Option<Arc<streams::Probe>>,
}

impl Shared {
    /// Whether another request may start.
    fn take_ticket(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        match &self.tickets {
            None => true,
            Some(t) => t
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

/// Requests a worker sends, prebuilt.
struct Plan {
    write_path: String,
    body: Bytes,
    read_ratio: f64,
    timeout: Duration,
    /// HTTPS when set.
    tls: Option<tokio_rustls::TlsConnector>,
    /// `Authorization: Bearer ...` when set.
    auth: Option<hyper::header::HeaderValue>,
}

/// The outcome of one request.
enum Outcome {
    Ok {
        body: Bytes,
        keep_alive: bool,
    },
    /// A refusal, with its `Retry-After` when it has one.
    Status(StatusCode, Option<Duration>),
}

/// How often one request is re-sent after a 503 carrying `Retry-After`, and the
/// longest pause honoured (a server asking for more is treated as down).
const MAX_503_RETRIES: u32 = 5;
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

use crate::client::{tls_connector, Sender};

async fn connect(addr: &str, plan: &Plan) -> Result<Sender, String> {
    crate::client::connect(addr, plan.tls.as_ref()).await
}

async fn send(sender: &mut Sender, req: Request<Full<Bytes>>) -> Result<Outcome, hyper::Error> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
        .map(Duration::from_secs);
    let keep_alive = !resp
        .headers()
        .get(hyper::header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let body = resp.into_body().collect().await?.to_bytes();
    if status.is_success() {
        Ok(Outcome::Ok { body, keep_alive })
    } else {
        Ok(Outcome::Status(status, retry_after))
    }
}

fn request(
    plan: &Plan,
    method: hyper::Method,
    addr: &str,
    path: &str,
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr);
    if let Some(auth) = &plan.auth {
        b = b.header(hyper::header::AUTHORIZATION, auth.clone());
    }
    if !body.is_empty() {
        b = b.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    b.body(Full::new(body)).expect("a request from valid parts")
}

/// The offset of a write's answer (a batch's last message).
fn offset_of(body: &[u8]) -> Option<u64> {
    let v = serde_json::from_slice::<Value>(body).ok()?;
    match (v["first_offset"].as_u64(), v["count"].as_u64()) {
        (Some(first), Some(n)) => Some(first + n.saturating_sub(1)),
        _ => v["offset"].as_u64(),
    }
}

fn status_key(s: StatusCode) -> String {
    match s.canonical_reason() {
        Some(r) => format!("{} {r}", s.as_u16()),
        None => s.as_u16().to_string(),
    }
}

async fn worker(addr: String, plan: Arc<Plan>, shared: Arc<Shared>, seed: u64) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut conn: Option<Sender> = None;
    let fail = |stats: &mut WorkerStats, kind: String| {
        *stats.errors.entry(kind).or_insert(0) += 1;
        shared.errors.fetch_add(1, Ordering::Relaxed);
    };
    while shared.take_ticket() {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            conn = None;
            match tokio::time::timeout(plan.timeout, connect(&addr, &plan)).await {
                Ok(Ok(c)) => conn = Some(c),
                Ok(Err(_)) | Err(_) => {
                    fail(&mut stats, "connection refused or failed".into());
                    tokio::time::sleep(RECONNECT_BACKOFF).await;
                    continue;
                }
            }
        }
        let sender = conn.as_mut().expect("connected above");
        let read = plan.read_ratio > 0.0 && rng.gen::<f64>() < plan.read_ratio;
        let make = || {
            if read {
                let from = shared.recent.load(Ordering::Relaxed);
                let path = format!("/v1/messages?from={from}&limit=1");
                request(&plan, hyper::Method::GET, &addr, &path, Bytes::new())
            } else {
                let body = plan.body.clone();
                request(&plan, hyper::Method::POST, &addr, &plan.write_path, body)
            }
        };
        let start = Instant::now();
        let mut retries = 0;
        let res = loop {
            let res = tokio::time::timeout(plan.timeout, send(sender, make())).await;
            match &res {
                Ok(Ok(Outcome::Status(StatusCode::SERVICE_UNAVAILABLE, Some(after))))
                    if retries < MAX_503_RETRIES
                        && *after <= MAX_RETRY_AFTER
                        && !shared.stop.load(Ordering::Relaxed) =>
                {
                    retries += 1;
                    stats.retried += 1;
                    tokio::time::sleep(*after).await;
                }
                _ => break res,
            }
        };
        let us = start.elapsed().as_micros() as u64;
        match res {
            Ok(Ok(Outcome::Ok { body, keep_alive })) => {
                if read {
                    stats.reads.record(us);
                } else {
                    stats.writes.record(us);
                    if let (Some(p), Some(off)) = (&shared.probe, offset_of(&body)) {
                        p.ack(off);
                    }
                    if plan.read_ratio > 0.0 {
                        if let Some(off) = offset_of(&body) {
                            shared.recent.fetch_max(off, Ordering::Relaxed);
                        }
                    }
                }
                shared.ops.fetch_add(1, Ordering::Relaxed);
                if !keep_alive {
                    conn = None;
                }
            }
            Ok(Ok(Outcome::Status(s, _))) => fail(&mut stats, status_key(s)),
            Ok(Err(e)) => {
                let kind = if e.is_incomplete_message() || e.is_closed() {
                    "connection closed"
                } else {
                    "connection error"
                };
                fail(&mut stats, kind.into());
                conn = None;
            }
            Err(_) => {
                fail(&mut stats, "timeout".into());
                conn = None;
            }
        }
    }
    stats
}

/// One write before the run, so the first reads have an offset to ask for.
async fn seed_write(addr: &str, plan: &Plan) -> Result<u64, String> {
    let mut c = connect(addr, plan).await?;
    let req = request(
        plan,
        hyper::Method::POST,
        addr,
        &plan.write_path,
        plan.body.clone(),
    );
    match tokio::time::timeout(plan.timeout, send(&mut c, req)).await {
        Ok(Ok(Outcome::Ok { body, .. })) => {
            offset_of(&body).ok_or_else(|| "the seed write's answer has no offset".to_string())
        }
        Ok(Ok(Outcome::Status(s, _))) => Err(format!("the seed write got {}", status_key(s))),
        Ok(Err(e)) => Err(format!("the seed write failed: {e}")),
        Err(_) => Err("the seed write timed out".into()),
    }
}

/// A `size`-byte message of printable ASCII (no JSON escaping needed).
fn message(size: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..size)
        .map(|i| ALPHABET[i % ALPHABET.len()] as char)
        .collect()
}

/// Everything the summary reports.
#[derive(Debug)]
pub struct Summary {
    pub addrs: Vec<String>,
    pub concurrency: usize,
    pub size: usize,
    /// Messages per write (0: single writes).
    pub batch: usize,
    pub w: String,
    pub read_ratio: f64,
    pub elapsed: Duration,
    pub writes: Histogram,
    pub reads: Histogram,
    pub errors: BTreeMap<String, u64>,
    /// Requests re-sent after a 503 with `Retry-After`.
    pub retried: u64,
    /// `--streams`, their delivery lag (ack to event) and how many failed.
    pub streams: usize,
    pub stream_lag: Histogram,
    pub stream_failures: u64,
}

impl Summary {
    fn all(&self) -> Histogram {
        let mut h = self.writes.clone();
        h.merge(&self.reads);
        h
    }

    fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Messages written (each batch counts its messages).
    pub fn messages_written(&self) -> u64 {
        self.writes.count() * self.batch.max(1) as u64
    }

    /// The summary as a JSON value (latencies in milliseconds).
    pub fn to_json(&self) -> Value {
        let secs = self.secs();
        let part = |h: &Histogram| {
            json!({
                "count": h.count(),
                "per_sec": h.count() as f64 / secs,
                "latency_ms": {
                    "p50": ms(h.quantile(0.50)),
                    "p90": ms(h.quantile(0.90)),
                    "p99": ms(h.quantile(0.99)),
                    "p999": ms(h.quantile(0.999)),
                    "max": ms(h.max()),
                    "mean": h.mean() / 1000.0,
                },
            })
        };
        let all = self.all();
        json!({
            "addr": self.addrs,
            "concurrency": self.concurrency,
            "size": self.size,
            "w": self.w,
            "read_ratio": self.read_ratio,
            "elapsed_s": secs,
            "ok": all.count(),
            "errors": self.error_count(),
            "throughput": all.count() as f64 / secs,
            "batch": self.batch,
            "messages_per_sec": self.messages_written() as f64 / secs,
            "mb_per_sec": (self.messages_written() * self.size as u64) as f64 / secs / 1e6,
            "all": part(&all),
            "writes": part(&self.writes),
            "reads": part(&self.reads),
            "errors_by_kind": self.errors,
            "retried_after_503": self.retried,
            "streams": self.streams,
            "stream_failures": self.stream_failures,
            "stream_lag": part(&self.stream_lag),
        })
    }

    /// The summary as a human-readable table.
    pub fn to_table(&self) -> String {
        use std::fmt::Write as _;
        let secs = self.secs();
        let all = self.all();
        let mut o = String::new();
        let _ = writeln!(o, "Summary");
        let _ = writeln!(o, "  target        {}", self.addrs.join(", "));
        let _ = writeln!(
            o,
            "  load          {} connections, {}-byte messages, w={}, read ratio {}",
            self.concurrency, self.size, self.w, self.read_ratio
        );
        let _ = writeln!(o, "  elapsed       {secs:.2} s");
        let _ = writeln!(
            o,
            "  requests      {} ok ({} writes, {} reads), {} errors, {} re-sent after a 503",
            all.count(),
            self.writes.count(),
            self.reads.count(),
            self.error_count(),
            self.retried
        );
        let _ = writeln!(
            o,
            "  throughput    {:.1} ops/s ({:.1} writes/s, {:.1} reads/s), {:.2} MB/s written",
            all.count() as f64 / secs,
            self.writes.count() as f64 / secs,
            self.reads.count() as f64 / secs,
            (self.messages_written() as f64 * self.size as f64) / secs / 1e6
        );
        if self.batch > 0 {
            let _ = writeln!(
                o,
                "  batches       {} messages each: {:.1} messages/s",
                self.batch,
                self.messages_written() as f64 / secs
            );
        }
        if all.count() > 0 {
            let _ = writeln!(o);
            let _ = writeln!(
                o,
                "Latency (ms) {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "p50", "p90", "p99", "p99.9", "max", "mean"
            );
        }
        let mut row = |name: &str, h: &Histogram| {
            if h.count() > 0 {
                let _ = writeln!(
                    o,
                    "  {name:<10} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                    ms(h.quantile(0.50)),
                    ms(h.quantile(0.90)),
                    ms(h.quantile(0.99)),
                    ms(h.quantile(0.999)),
                    ms(h.max()),
                    h.mean() / 1000.0
                );
            }
        };
        row("writes", &self.writes);
        row("reads", &self.reads);
        row("stream lag", &self.stream_lag);
        if self.writes.count() > 0 && self.reads.count() > 0 {
            row("all", &all);
        }
        if !self.errors.is_empty() {
            let _ = writeln!(o);
            let _ = writeln!(o, "Errors");
            for (k, v) in &self.errors {
                let _ = writeln!(o, "  {k:<34} {v}");
            }
        }
        o
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Runs the benchmark and prints its summary. Fails only when the arguments are
/// unusable or not a single request succeeded.
pub async fn run(args: BenchArgs) -> Result<(), String> {
    let summary = execute(&args).await?;
    if args.json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", summary.to_table());
    }
    if summary.writes.count() + summary.reads.count() == 0 {
        return Err(format!(
            "no request succeeded ({} errors)",
            summary.error_count()
        ));
    }
    Ok(())
}

/// Runs the benchmark and returns its summary, printing only progress.
pub async fn execute(args: &BenchArgs) -> Result<Summary, String> {
    let addrs = args
        .addr
        .iter()
        .filter(|a| !a.trim().is_empty())
        .map(|a| normalize_addr(a))
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err("--addr: at least one address is needed".into());
    }
    if args.cacert.is_none() && args.addr.iter().any(|a| a.trim().starts_with("https://")) {
        return Err("--addr https://...: give the CA to trust with --cacert <ca.pem>".into());
    }
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let duration = match (args.duration, args.requests) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_DURATION),
    };
    let (route, body) = match args.batch {
        0 => ("/v1/messages", json!({ "message": message(args.size) })),
        n => (
            "/v1/messages/batch",
            json!({ "messages": vec![message(args.size); n] }),
        ),
    };
    let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let plan = Arc::new(Plan {
        write_path: format!("{route}?w={}", args.w),
        body: Bytes::from(body),
        read_ratio: args.read_ratio,
        timeout: args.timeout,
        tls: args.cacert.as_deref().map(tls_connector).transpose()?,
        auth: args
            .token
            .as_deref()
            .map(crate::client::bearer)
            .transpose()?,
    });
    let mut recent = 0;
    if args.read_ratio > 0.0 || args.streams > 0 {
        match seed_write(&addrs[0], &plan).await {
            Ok(off) => recent = off,
            Err(e) => eprintln!("raftlog bench: {e}; reads start from offset 0"),
        }
    }
    let probe = (args.streams > 0).then(|| Arc::new(streams::Probe::default()));
    let (streams_done, streams) = open_streams(args, &addrs, recent + 1, &plan, &probe).await;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        deadline: duration.map(|d| start + d),
        tickets: args.requests.map(AtomicU64::new),
        ops: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        recent: AtomicU64::new(recent),
        stop: AtomicBool::new(false),
        probe,
    });
    let progress = (!args.quiet).then(|| tokio::spawn(progress(Arc::clone(&shared), start)));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|i| {
            let addr = addrs[i % addrs.len()].clone();
            tokio::spawn(worker(
                addr,
                Arc::clone(&plan),
                Arc::clone(&shared),
                rand::random::<u64>() ^ i as u64,
            ))
        })
        .collect();
    // Ctrl-C stops new requests; those in flight finish and the summary prints.
    let interrupt = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                shared.stop.store(true, Ordering::Relaxed);
            }
        })
    };
    let mut total = WorkerStats::default();
    for s in futures::future::join_all(workers).await {
        let s = s.map_err(|e| format!("a worker failed: {e}"))?;
        total.writes.merge(&s.writes);
        total.reads.merge(&s.reads);
        total.retried += s.retried;
        for (k, v) in s.errors {
            *total.errors.entry(k).or_insert(0) += v;
        }
    }
    let elapsed = start.elapsed();
    let stream_lag = close_streams(streams_done, streams).await;
    interrupt.abort();
    if let Some(p) = progress {
        p.abort();
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
    Ok(Summary {
        addrs,
        concurrency: args.concurrency,
        size: args.size,
        batch: args.batch,
        w: args.w.clone(),
        read_ratio: args.read_ratio,
        elapsed,
        writes: total.writes,
        reads: total.reads,
        errors: total.errors,
        retried: total.retried,
        streams: args.streams,
        stream_lag,
        stream_failures: shared
            .probe
            .as_ref()
            .map_or(0, |p| p.failures.load(Ordering::Relaxed)),
    })
}

type StreamTasks = Vec<tokio::task::JoinHandle<Histogram>>;

/// Opens `--streams` subscriptions from `from` and waits until each answered.
async fn open_streams(
    args: &BenchArgs,
    addrs: &[String],
    from: u64,
    plan: &Arc<Plan>,
    probe: &Option<Arc<streams::Probe>>,
) -> (tokio::sync::watch::Sender<bool>, StreamTasks) {
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let Some(probe) = probe else {
        return (done_tx, Vec::new());
    };
    let tasks = (0..args.streams)
        .map(|i| {
            tokio::spawn(streams::stream(
                i,
                addrs[i % addrs.len()].clone(),
                from,
                Arc::clone(plan),
                Arc::clone(probe),
                done_rx.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let settled = probe.opened.load(Ordering::Relaxed) + probe.failures.load(Ordering::Relaxed);
        if settled >= args.streams as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (done_tx, tasks)
}

/// Lets the streams drain for a moment after the last write, then ends them.
async fn close_streams(done: tokio::sync::watch::Sender<bool>, tasks: StreamTasks) -> Histogram {
    if !tasks.is_empty() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = done.send(true);
    let mut lag = Histogram::default();
    for t in futures::future::join_all(tasks).await.into_iter().flatten() {
        lag.merge(&t);
    }
    lag
}

/// Once a second: elapsed, ops, ops/s over the last second, errors.
async fn progress(shared: Arc<Shared>, start: Instant) {
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::from_std(start) + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut last_ops = 0;
    let mut last_at = start;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let ops = shared.ops.load(Ordering::Relaxed);
        let rate = (ops - last_ops) as f64 / (now - last_at).as_secs_f64().max(1e-9);
        let line = format!(
            "{:>6.1}s  {:>10} ops  {:>10.0} ops/s  {:>6} errors",
            (now - start).as_secs_f64(),
            ops,
            rate,
            shared.errors.load(Ordering::Relaxed)
        );
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
        last_ops = ops;
        last_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5parsecs").is_err());
    }

    #[test]
    fn w_and_ratio_parse() {
        assert_eq!(parse_w("majority").unwrap(), "majority");
        assert_eq!(parse_w("all").unwrap(), "all");
        assert_eq!(parse_w("2").unwrap(), "2");
        assert!(parse_w("0").is_err());
        assert!(parse_w("most").is_err());
        assert_eq!(parse_ratio("0.25").unwrap(), 0.25);
        assert!(parse_ratio("1.5").is_err());
        assert!(parse_ratio("-0.1").is_err());
    }

    #[test]
    fn addresses_normalize() {
        assert_eq!(normalize_addr("127.0.0.1:8081").unwrap(), "127.0.0.1:8081");
        assert_eq!(normalize_addr("http://h:1/x").unwrap(), "h:1");
        assert_eq!(normalize_addr("https://h:1").unwrap(), "h:1");
        assert!(normalize_addr("h").is_err());
    }

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut prev = None;
        for v in 0..200_000u64 {
            let i = bucket_of(v);
            if let Some(p) = prev {
                assert!(i == p || i == p + 1, "gap at {v}");
            }
            prev = Some(i);
            let hi = bucket_high(i);
            assert!(hi >= v, "bucket {i} high {hi} below {v}");
            assert!(hi - v <= v / 512, "bucket {i} too wide at {v}");
        }
        for v in [1u64 << 32, u64::MAX / 2, u64::MAX] {
            assert!(bucket_high(bucket_of(v)) >= v);
        }
    }

    #[test]
    fn quantiles_of_known_values() {
        let mut h = Histogram::default();
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.quantile(0.5), 500);
        assert_eq!(h.quantile(0.99), 990);
        assert_eq!(h.quantile(1.0), 1000);
        assert_eq!(h.max(), 1000);
        let mut g = Histogram::default();
        g.record(1_000_000);
        h.merge(&g);
        assert_eq!(h.quantile(1.0), 1_000_000);
        let p = h.quantile(0.9995);
        assert!((999_000..=1_000_000).contains(&p), "{p}");
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }

    #[test]
    fn messages_have_the_asked_size_and_need_no_escaping() {
        let m = message(1000);
        assert_eq!(m.len(), 1000);
        assert_eq!(serde_json::to_string(&m).unwrap().len(), 1002);
    }

    #[test]
    fn summary_reports_errors_and_percentiles() {
        let mut writes = Histogram::default();
        for v in [100, 200, 300] {
            writes.record(v);
        }
        let s = Summary {
            addrs: vec!["a:1".into()],
            concurrency: 2,
            size: 100,
            batch: 10,
            w: "majority".into(),
            read_ratio: 0.0,
            elapsed: Duration::from_secs(1),
            writes,
            reads: Histogram::default(),
            errors: BTreeMap::from([("503 Service Unavailable".to_string(), 2)]),
            retried: 4,
            streams: 0,
            stream_lag: Histogram::default(),
            stream_failures: 0,
        };
        let j = s.to_json();
        assert_eq!(j["ok"], 3);
        assert_eq!(j["errors"], 2);
        assert_eq!(j["writes"]["latency_ms"]["p50"], 0.2);
        assert_eq!(j["errors_by_kind"]["503 Service Unavailable"], 2);
        assert_eq!(j["retried_after_503"], 4);
        assert_eq!(j["messages_per_sec"], 30.0);
        assert_eq!(j["mb_per_sec"], 0.003);
        assert_eq!(offset_of(br#"{"first_offset": 5, "count": 3}"#), Some(7));
        assert_eq!(offset_of(br#"{"offset": 5}"#), Some(5));
        let t = s.to_table();
        assert!(t.contains("503 Service Unavailable"), "{t}");
        assert!(t.contains("writes"), "{t}");
    }
}
