//! The client API router with a fake node, on generated and mutated requests.
//!
//! A request is kept as bytes in a small text form (so it can be mutated, and
//! replayed by cargo-fuzz): `METHOD TARGET`, then `name: value` header lines, an
//! empty line, and the body. Two pseudo headers shape the body: `x-fuzz-chunk: N`
//! streams it in N-byte chunks, `x-fuzz-fail: 1` ends the stream with an error.
//!
//! Properties:
//! - the router never panics; every status is 2xx, or 4xx (the fake node never
//!   fails, so a 5xx means the router failed on client input);
//! - every response body is JSON (HEAD: empty), and every non-2xx body is
//!   `{"error": {"code": <non-empty string>, "message": <string>, ...}}`;
//! - a rejected request reached no node method: validation precedes the call;
//! - every call the node saw satisfies the documented limits: a write's message
//!   fits `max_message_bytes` and is the body's `message`, `w` is 1..=voters,
//!   `majority` or `all`, the idempotency key is 1..=256 visible ASCII bytes, the
//!   body and its declared length fit `max_body_bytes`, the body stream did not
//!   fail; a read's limit is 1..=`max_read_limit`, its wait at most `max_wait_ms`;
//!   an added member has a non-blank id and a dialable `grpc_addr`; and each call
//!   came from its own route and method.
use super::harness::{hex, Stats};
use super::*;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use raftlog::api::{
    ApiError, MemberSpec, NodeApi, ReadMessage, ReadRequest, ReadResult, Status, WriteConcern,
    WriteRequest, WriteResult,
};
use raftlog::http::HttpLimits;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

// ---------------------------------------------------------------- fake node

#[derive(Clone, Debug)]
enum Call {
    Write(WriteRequest),
    Read(ReadRequest),
    Status,
    Member(String, Option<MemberSpec>),
    Transfer(Option<String>),
}

/// A node that records every call and always succeeds.
struct FakeNode {
    voters: usize,
    calls: Mutex<Vec<Call>>,
}

impl FakeNode {
    fn record(&self, c: Call) {
        self.calls.lock().unwrap().push(c);
    }
}

impl NodeApi for FakeNode {
    async fn write(&self, req: WriteRequest) -> Result<WriteResult, ApiError> {
        self.record(Call::Write(req));
        Ok(WriteResult {
            offset: 7,
            index: 9,
            term: 2,
            acks: 1,
            committed: true,
            duplicate: false,
            passed_cursors: vec![],
        })
    }

    async fn read(&self, req: ReadRequest) -> Result<ReadResult, ApiError> {
        self.record(Call::Read(req.clone()));
        // Three messages in all, so the compatibility route's paging ends.
        let messages: Vec<ReadMessage> = (req.from..3)
            .take(req.limit.unwrap_or(1))
            .map(|o| ReadMessage {
                offset: o,
                message: format!("m{o}"),
            })
            .collect();
        let next_offset = req.from + messages.len() as u64;
        Ok(ReadResult {
            messages,
            next_offset,
        })
    }

    async fn status(&self) -> Result<Status, ApiError> {
        self.record(Call::Status);
        Ok(Status {
            node_id: "n1".into(),
            role: "leader".into(),
            term: 2,
            leader_id: Some("n1".into()),
            phase: "run".into(),
            commit_index: 3,
            applied_index: 3,
            last_log_index: 3,
            first_offset: 0,
            next_offset: 0,
            log_bytes: 0,
            members: vec![],
            health: json!({}),
            repairing: false,
            repair: None,
        })
    }

    fn voter_count(&self) -> usize {
        self.voters
    }

    async fn change_member(
        &self,
        node_id: String,
        member: Option<MemberSpec>,
    ) -> Result<u64, ApiError> {
        self.record(Call::Member(node_id, member));
        Ok(4)
    }

    async fn transfer_leadership(&self, to: Option<String>) -> Result<String, ApiError> {
        self.record(Call::Transfer(to.clone()));
        Ok(to.unwrap_or_else(|| "n2".into()))
    }
}

// ---------------------------------------------------------------- setup

/// The node's shape and the limits for one case.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub limits: HttpLimits,
    pub voters: usize,
}

impl Setup {
    pub fn random(rng: &mut SmallRng) -> Setup {
        let max_read_limit = *[1, 2, 20, 10_000].choose(rng).unwrap();
        Setup {
            limits: HttpLimits {
                max_message_bytes: *[1, 7, 100, 4096].choose(rng).unwrap(),
                default_read_limit: rng.gen_range(1..=max_read_limit),
                max_read_limit,
                max_wait_ms: *[0, 1, 1000].choose(rng).unwrap(),
                ..HttpLimits::default()
            },
            voters: rng.gen_range(1..=5),
        }
    }

    /// The fixed setup of the cargo-fuzz target.
    pub fn fixed() -> Setup {
        Setup {
            limits: HttpLimits {
                max_message_bytes: 100,
                default_read_limit: 10,
                max_read_limit: 20,
                max_wait_ms: 1000,
                ..HttpLimits::default()
            },
            voters: 3,
        }
    }
}

// ---------------------------------------------------------------- generation

const ROUTES: [(&str, &str); 14] = [
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages"),
    ("POST", "/api/v1/append"),
    ("GET", "/v1/messages"),
    ("GET", "/api/v1/messages"),
    ("GET", "/v1/status"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/v1/cluster/members"),
    ("POST", "/v1/cluster/members"),
    ("DELETE", "/v1/cluster/members/n2"),
    ("POST", "/v1/cluster/transfer-leadership"),
    ("GET", "/v1/nope"),
    ("PUT", "/v1/messages"),
];

const ODD_PATHS: [&str; 8] = [
    "/v1/messages/",
    "//v1/messages",
    "/v1/%6Dessages",
    "/V1/MESSAGES",
    "/v1/cluster/members/%FF%00",
    "/v1/cluster/members/%20",
    "*",
    "http://example.com/v1/messages",
];

const METHODS: [&str; 6] = ["HEAD", "OPTIONS", "PATCH", "DELETE", "TRACE", "BREW"];

const QUERY_NAMES: [&str; 7] = [
    "w",
    "timeout_ms",
    "from",
    "limit",
    "consistency",
    "wait_ms",
    "x",
];

const QUERY_VALUES: [&str; 22] = [
    "1",
    "2",
    "3",
    "0",
    "-1",
    "majority",
    "ALL",
    "+2",
    "%202%20",
    "18446744073709551615",
    "18446744073709551616",
    "1e3",
    "",
    "%FF",
    "%",
    "%zz",
    "a+b",
    "2%00",
    "local",
    "linearizable",
    "LOCAL",
    "99999999999999999999999",
];

const W_JSON: [&str; 24] = [
    "1",
    "2",
    "3",
    "0",
    "-1",
    "5",
    "99",
    "18446744073709551615",
    "18446744073709551616",
    "1.0",
    "1e2",
    "1e400",
    "\"majority\"",
    "\"MAJORITY\"",
    "\" all \"",
    "\"2\"",
    "\"\"",
    "null",
    "true",
    "[]",
    "{}",
    "\"-0\"",
    "\"+2\"",
    "-0",
];

const CONTENT_TYPES: [&str; 6] = [
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json; charset=latin1",
    "jsön",
];

fn query(rng: &mut SmallRng) -> String {
    let pairs: Vec<String> = (0..rng.gen_range(0..4))
        .map(|_| {
            let name = QUERY_NAMES.choose(rng).unwrap();
            let value = QUERY_VALUES.choose(rng).unwrap();
            format!("{name}={value}")
        })
        .collect();
    match pairs.len() {
        0 if rng.gen() => String::new(),
        _ => format!("?{}", pairs.join("&")),
    }
}

/// A JSON string literal of about `len` bytes of text, possibly multi-byte or
/// written with `\u` escapes (so its JSON size and its text size differ).
fn json_string(rng: &mut SmallRng, len: usize) -> String {
    let unit = *[
        "a",
        "é",
        "😀",
        "\\u0000",
        "\\u00e9",
        "\\ud83d\\ude00",
        "\\\"",
        "\\ud800",
    ]
    .choose(rng)
    .unwrap();
    let text_len = match unit {
        "é" | "\\u00e9" => 2,
        "😀" | "\\ud83d\\ude00" => 4,
        "\\ud800" => 3,
        _ => 1,
    };
    format!("\"{}\"", unit.repeat(len.div_ceil(text_len)))
}

/// A JSON value of any type, nested up to `depth`.
fn json_value(rng: &mut SmallRng, depth: u32) -> String {
    match rng.gen_range(0..if depth == 0 { 4 } else { 6 }) {
        0 => W_JSON.choose(rng).unwrap().to_string(),
        1 => {
            let len = rng.gen_range(0..10);
            json_string(rng, len)
        }
        2 => "null".into(),
        3 => "-1.5e-7".into(),
        4 => format!("[{}]", json_value(rng, depth - 1)),
        _ => format!("{{\"k\":{}}}", json_value(rng, depth - 1)),
    }
}

fn message_len(rng: &mut SmallRng, setup: &Setup) -> usize {
    let max = setup.limits.max_message_bytes;
    match rng.gen_range(0..6) {
        0 => max,
        1 => max + 1,
        2 => max.saturating_sub(1),
        3 => 0,
        4 if rng.gen_bool(0.05) => setup.limits.max_body_bytes() + 1,
        _ => rng.gen_range(0..=max.min(300)),
    }
}

fn write_body(rng: &mut SmallRng, setup: &Setup) -> String {
    let len = message_len(rng, setup);
    let message = json_string(rng, len);
    let mut fields = vec![format!("\"message\":{message}")];
    if rng.gen_bool(0.3) {
        fields.push(format!("\"w\":{}", W_JSON.choose(rng).unwrap()));
    }
    if rng.gen_bool(0.2) {
        fields.push(format!("\"extra\":{}", json_value(rng, 3)));
    }
    if rng.gen_bool(0.1) {
        fields.push(format!("\"message\":{}", json_value(rng, 1)));
    }
    fields.shuffle(rng);
    format!("{{{}}}", fields.join(","))
}

fn member_body(rng: &mut SmallRng) -> String {
    let addr = [
        "\"n2:7001\"",
        "\"127.0.0.1:7001\"",
        "\"[::1]:1\"",
        "\"h:0\"",
        "\"http://h:1\"",
        "\"h\"",
        "\"\"",
        "\" \"",
        "7001",
        "null",
    ];
    let mut fields = Vec::new();
    for (key, values) in [
        (
            "node_id",
            &["\"n4\"", "\"\"", "\"  \"", "4", "null", "\"😀\""][..],
        ),
        ("grpc_addr", &addr[..]),
        ("http_addr", &addr[..]),
        ("voter", &["true", "false", "null", "\"true\"", "1"][..]),
    ] {
        if rng.gen_bool(0.85) {
            fields.push(format!("\"{key}\":{}", values.choose(rng).unwrap()));
        }
    }
    format!("{{{}}}", fields.join(","))
}

fn body(rng: &mut SmallRng, setup: &Setup, path: &str) -> String {
    match rng.gen_range(0..20) {
        0 => json_value(rng, 4),
        1 => format!("{}1{}", "[".repeat(200), "]".repeat(200)),
        2 => String::new(),
        3 => "   ".into(),
        4 => "{\"to\":\"n3\"}".into(),
        _ if path.contains("members") => member_body(rng),
        _ => write_body(rng, setup),
    }
}

fn headers(rng: &mut SmallRng, body_len: usize) -> Vec<String> {
    let mut h = Vec::new();
    if rng.gen_bool(0.8) {
        h.push(format!(
            "content-type: {}",
            CONTENT_TYPES.choose(rng).unwrap()
        ));
    }
    match rng.gen_range(0..6) {
        0 => h.push(format!("content-length: {body_len}")),
        1 => h.push(format!(
            "content-length: {}",
            *["0", "1", "-1", "abc", "18446744073709551616", "99999999"]
                .choose(rng)
                .unwrap()
        )),
        _ => {}
    }
    let keys = *[0, 0, 0, 0, 0, 1, 1, 1, 2].choose(rng).unwrap();
    for _ in 0..keys {
        let key = *["k1", "", "  padded  ", "tab\tkey", "é", "x"]
            .choose(rng)
            .unwrap();
        let key = if rng.gen_bool(0.05) {
            "k".repeat(257)
        } else {
            key.to_string()
        };
        h.push(format!("idempotency-key: {key}"));
    }
    if rng.gen_bool(0.3) {
        h.push(format!("x-fuzz-chunk: {}", rng.gen_range(1..64)));
    }
    if rng.gen_bool(0.05) {
        h.push("x-fuzz-fail: 1".into());
    }
    h
}

/// A well-formed request in the text form.
pub fn request(rng: &mut SmallRng, setup: &Setup) -> Vec<u8> {
    let (mut method, mut path) = *ROUTES.choose(rng).unwrap();
    if rng.gen_bool(0.1) {
        method = METHODS.choose(rng).unwrap();
    }
    if rng.gen_bool(0.1) {
        path = ODD_PATHS.choose(rng).unwrap();
    }
    let body = body(rng, setup, path);
    let mut out = format!("{method} {path}{}\n", query(rng));
    for h in headers(rng, body.len()) {
        out.push_str(&h);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&body);
    out.into_bytes()
}

// ---------------------------------------------------------------- parsing

/// A request parsed back from the text form, with the body as sent.
struct Parsed {
    request: Request<Body>,
    body: Vec<u8>,
    body_fails: bool,
}

fn split_line(buf: &[u8]) -> (&[u8], &[u8]) {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) => (&buf[..i], &buf[i + 1..]),
        None => (buf, &[]),
    }
}

/// Parses the text form; `None` when it is no HTTP request at all (hyper would
/// refuse it before the router).
fn parse(wire: &[u8]) -> Option<Parsed> {
    let (first, mut rest) = split_line(wire);
    let space = first.iter().position(|&b| b == b' ')?;
    let method = Method::from_bytes(&first[..space]).ok()?;
    let mut builder = Request::builder()
        .method(method)
        .uri(first[space + 1..].to_vec());
    let (mut chunk, mut body_fails) = (None, false);
    loop {
        let (line, next) = split_line(rest);
        rest = next;
        if line.is_empty() {
            break;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        let name = HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii_start()).ok()?;
        match name.as_str() {
            "x-fuzz-chunk" => {
                chunk = value
                    .to_str()
                    .ok()?
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
            }
            "x-fuzz-fail" => body_fails = true,
            _ => builder = builder.header(name, value),
        }
    }
    let body = rest.to_vec();
    let stream_body = chunk.is_some() || body_fails;
    let request = builder
        .body(if stream_body {
            streamed(&body, chunk.unwrap_or(body.len().max(1)), body_fails)
        } else {
            Body::from(body.clone())
        })
        .ok()?;
    Some(Parsed {
        request,
        body,
        body_fails,
    })
}

fn streamed(body: &[u8], chunk: usize, fail: bool) -> Body {
    let mut items: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    if fail {
        items.push(Err(std::io::Error::other("client went away")));
    }
    Body::from_stream(futures::stream::iter(items))
}

// ---------------------------------------------------------------- checking

/// What the case needs to judge the node's calls.
struct Sent {
    method: Method,
    path: String,
    body: Vec<u8>,
    body_fails: bool,
    declared_len: Option<String>,
}

fn check_status_and_body(sent: &Sent, status: StatusCode, body: &[u8]) -> Result<(), String> {
    if !(status.is_success() || status.is_client_error()) {
        return Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(body)
        ));
    }
    if sent.method == Method::HEAD && body.is_empty() {
        return Ok(());
    }
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| format!("{status} body is not JSON ({e}): {}", hex(body)))?;
    if status.is_success() {
        return Ok(());
    }
    let code = json["error"]["code"].as_str().unwrap_or("");
    if code.is_empty() || !json["error"]["message"].is_string() {
        return Err(format!("{status} body lacks error.code/message: {json}"));
    }
    Ok(())
}

fn check_w(w: Option<WriteConcern>, voters: usize) -> Result<(), String> {
    match w {
        Some(WriteConcern::Count(n)) if n < 1 || n > voters => {
            Err(format!("w={n} reached a node with {voters} voters"))
        }
        _ => Ok(()),
    }
}

fn check_key(key: &Option<String>) -> Result<(), String> {
    let Some(k) = key else { return Ok(()) };
    let visible = k.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    if k.is_empty() || k.len() > 256 || !visible || k.trim() != k {
        return Err(format!("idempotency key {k:?} reached the node"));
    }
    Ok(())
}

fn check_write(req: &WriteRequest, sent: &Sent, setup: &Setup) -> Result<(), String> {
    let limits = &setup.limits;
    if req.message.len() > limits.max_message_bytes {
        return Err(format!(
            "a {}-byte message reached the node",
            req.message.len()
        ));
    }
    check_w(req.w, setup.voters)?;
    check_key(&req.idempotency_key)?;
    let max_body = limits.max_body_bytes();
    let declared = sent
        .declared_len
        .as_deref()
        .and_then(|v| v.parse::<usize>().ok());
    if sent.body.len() > max_body || declared.is_some_and(|d| d > max_body) || sent.body_fails {
        return Err("an oversized or failed body reached the node".into());
    }
    let parsed: Option<Value> = serde_json::from_slice(&sent.body).ok();
    let message = parsed.as_ref().and_then(|v| v.get("message")?.as_str());
    if message != Some(req.message.as_str()) {
        return Err(format!(
            "node got message {:?}, body says {message:?}",
            req.message
        ));
    }
    Ok(())
}

fn check_read(req: &ReadRequest, setup: &Setup) -> Result<(), String> {
    let l = &setup.limits;
    let limit_ok = req
        .limit
        .is_some_and(|n| (1..=l.max_read_limit).contains(&n));
    if !limit_ok || req.wait_ms.is_some_and(|w| w > l.max_wait_ms) {
        return Err(format!("read {req:?} exceeds {l:?}"));
    }
    Ok(())
}

fn check_member(id: &str, spec: &Option<MemberSpec>) -> Result<(), String> {
    if id.is_empty() {
        return Err("member change for an empty id".into());
    }
    if let Some(s) = spec {
        if id.trim().is_empty() {
            return Err(format!("member {id:?} added"));
        }
        raftlog::config::parse_host_port(&s.grpc_addr, false)
            .map_err(|e| format!("member {id} with grpc_addr {:?}: {e}", s.grpc_addr))?;
        if !s.http_addr.is_empty() && s.http_addr.trim().is_empty() {
            return Err(format!("member {id} with blank http_addr"));
        }
    }
    Ok(())
}

/// A transfer target must be the body's `to` (the body must be JSON then).
fn check_transfer(to: Option<&str>, sent: &Sent) -> Result<(), String> {
    let parsed: Option<Value> = serde_json::from_slice(&sent.body).ok();
    let want = parsed.as_ref().and_then(|v| v.get("to")?.as_str());
    if to.is_some() && to != want {
        return Err(format!("transfer to {to:?}, body says {want:?}"));
    }
    Ok(())
}

/// The routes and methods each call may come from.
fn call_allowed(call: &Call, method: &Method, path: &str) -> bool {
    let get = *method == Method::GET || *method == Method::HEAD;
    let post = *method == Method::POST;
    match call {
        Call::Write(_) => post && (path == "/v1/messages" || path == "/api/v1/append"),
        Call::Read(_) => get && (path == "/v1/messages" || path == "/api/v1/messages"),
        Call::Status => get && ["/v1/status", "/ready", "/v1/cluster/members"].contains(&path),
        Call::Member(_, Some(_)) => post && path == "/v1/cluster/members",
        Call::Member(_, None) => {
            *method == Method::DELETE && path.starts_with("/v1/cluster/members/")
        }
        Call::Transfer(_) => post && path == "/v1/cluster/transfer-leadership",
    }
}

fn check_call(call: &Call, sent: &Sent, setup: &Setup) -> Result<(), String> {
    if !call_allowed(call, &sent.method, &sent.path) {
        return Err(format!(
            "{} {} made the call {call:?}",
            sent.method, sent.path
        ));
    }
    match call {
        Call::Write(req) => check_write(req, sent, setup),
        Call::Read(req) => check_read(req, setup),
        Call::Member(id, spec) => check_member(id, spec),
        Call::Transfer(to) => check_transfer(to.as_deref(), sent),
        Call::Status => Ok(()),
    }
}

/// Sends one request (in the text form) through the real router and checks
/// every property. Returns the status, or `None` if it was no request at all.
pub fn check(
    rt: &tokio::runtime::Runtime,
    setup: &Setup,
    wire: &[u8],
    stats: &mut Stats,
) -> Result<Option<StatusCode>, String> {
    let Some(parsed) = parse(wire) else {
        return Ok(None);
    };
    let sent = Sent {
        method: parsed.request.method().clone(),
        path: parsed.request.uri().path().to_string(),
        declared_len: parsed
            .request
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok().map(String::from)),
        body: parsed.body,
        body_fails: parsed.body_fails,
    };
    let node = Arc::new(FakeNode {
        voters: setup.voters,
        calls: Mutex::default(),
    });
    let app = raftlog::http::router(Arc::clone(&node), setup.limits);
    let (status, body) = rt.block_on(async {
        let resp = app.oneshot(parsed.request).await.expect("infallible");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await;
        (status, body.map_err(|e| format!("response body: {e}")))
    });
    let body = body?;
    check_status_and_body(&sent, status, &body)?;
    let calls = node.calls.lock().unwrap().clone();
    if !status.is_success() && !calls.is_empty() {
        return Err(format!("{status}, yet the node saw {calls:?}"));
    }
    for call in &calls {
        check_call(call, &sent, setup)?;
    }
    let json: Value = serde_json::from_slice(&body).unwrap_or_default();
    let code = status.as_u16();
    match json["error"]["message"].as_str() {
        Some(m) if code == 400 => stats.note_error("http 400", m),
        _ => stats.note(format!("http {code} {}", json["error"]["code"])),
    }
    Ok(Some(status))
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn case(
    rt: &tokio::runtime::Runtime,
    rng: &mut SmallRng,
    stats: &mut Stats,
) -> Result<(), String> {
    let setup = Setup::random(rng);
    let mut wire = request(rng, &setup);
    if rng.gen_bool(0.5) {
        let donor = request(rng, &setup);
        for _ in 0..rng.gen_range(1..3) {
            let kind = gen::mutate(rng, &mut wire, &donor);
            stats.note(format!("http mutation: {kind}"));
        }
    }
    match check(rt, &setup, &wire, stats) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            stats.note("http: not a request");
            Ok(())
        }
        Err(e) => Err(format!(
            "{e}\n  setup {setup:?}\n  request {:?}",
            String::from_utf8_lossy(&wire)
        )),
    }
}
