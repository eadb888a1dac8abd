//! Router tests through `oneshot` with a fake node (axum `examples/testing`).

use super::*;
use crate::api::{
    ApiError, Consistency, LogOp, ReadMessage, ReadRequest, ReadResult, Status, WriteConcern,
    WriteRequest, WriteResult,
};
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use std::sync::Mutex;
use tower::ServiceExt;

/// A node that records requests and answers from canned data.
struct FakeNode {
    voters: usize,
    writes: Mutex<Vec<WriteRequest>>,
    reads: Mutex<Vec<ReadRequest>>,
    write_error: Mutex<Option<ApiError>>,
    duplicate: bool,
    log: Vec<String>,
    status: Status,
}

impl FakeNode {
    fn new() -> Self {
        FakeNode {
            voters: 3,
            writes: Mutex::default(),
            reads: Mutex::default(),
            write_error: Mutex::default(),
            duplicate: false,
            log: (0..25).map(|i| format!("m{i}")).collect(),
            status: status("run", Some("n1")),
        }
    }
}

fn status(phase: &str, leader: Option<&str>) -> Status {
    Status {
        node_id: "n1".into(),
        role: "leader".into(),
        term: 2,
        leader_id: leader.map(String::from),
        phase: phase.into(),
        commit_index: 5,
        applied_index: 5,
        last_log_index: 5,
        first_offset: 0,
        next_offset: 25,
        log_bytes: 100,
        members: vec![],
        health: json!({}),
        repairing: false,
        repair: None,
    }
}

impl NodeApi for FakeNode {
    async fn write(&self, req: WriteRequest) -> Result<WriteResult, ApiError> {
        self.writes.lock().unwrap().push(req);
        if let Some(e) = self.write_error.lock().unwrap().clone() {
            return Err(e);
        }
        Ok(WriteResult {
            offset: 7,
            index: 9,
            term: 2,
            acks: 2,
            committed: true,
            duplicate: self.duplicate,
            passed_cursors: vec![],
        })
    }

    async fn read(&self, req: ReadRequest) -> Result<ReadResult, ApiError> {
        self.reads.lock().unwrap().push(req.clone());
        let from = req.from as usize;
        let end = (from + req.limit.unwrap_or(1000))
            .min(self.log.len())
            .max(from);
        let messages = (from..end)
            .filter_map(|i| {
                Some(ReadMessage {
                    offset: i as u64,
                    message: self.log.get(i)?.clone(),
                })
            })
            .collect();
        Ok(ReadResult {
            messages,
            next_offset: end as u64,
        })
    }

    async fn status(&self) -> Result<Status, ApiError> {
        Ok(self.status.clone())
    }

    fn voter_count(&self) -> usize {
        self.voters
    }

    async fn cursors(&self) -> Result<Vec<(String, u64)>, ApiError> {
        Ok(vec![("a".into(), 3), ("b-2".into(), 9)])
    }
}

fn limits() -> HttpLimits {
    HttpLimits {
        max_message_bytes: 100,
        default_read_limit: 10,
        max_read_limit: 20,
        max_wait_ms: 1000,
        body_timeout_ms: 1000,
        retry_after_s: 2,
        max_batch_messages: 3,
        max_batch_bytes: 10,
    }
}

async fn send(
    node: &Arc<FakeNode>,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let resp = router(Arc::clone(node), limits())
        .oneshot(req)
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (parts.status, parts.headers, json)
}

fn post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

async fn post_json(node: &Arc<FakeNode>, uri: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, json) = send(node, post(uri, body.to_string())).await;
    (status, json)
}

/// Asserts the SPEC error shape and returns the code.
fn code(body: &Value) -> &str {
    assert!(body["error"]["message"].is_string(), "no message: {body}");
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no code: {body}"))
}

#[tokio::test]
async fn write_succeeds_with_201() {
    let node = Arc::new(FakeNode::new());
    let (s, body) = post_json(&node, "/v1/messages", json!({"message": "hi", "w": 2})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        body,
        json!({"offset": 7, "index": 9, "term": 2, "acks": 2, "committed": true})
    );
    let w = node.writes.lock().unwrap()[0].clone();
    assert_eq!(
        w,
        WriteRequest {
            message: "hi".into(),
            batch: None,
            if_next_offset: None,
            op: None,
            w: Some(WriteConcern::Count(2)),
            timeout_ms: None,
            idempotency_key: None
        }
    );
}

#[tokio::test]
async fn write_passes_query_w_timeout_and_idempotency_key() {
    let node = Arc::new(FakeNode::new());
    let req = Request::post("/v1/messages?w=majority&timeout_ms=50")
        .header("Idempotency-Key", "k-1")
        .body(Body::from(r#"{"message": "hi"}"#))
        .unwrap();
    let (s, _, _) = send(&node, req).await;
    assert_eq!(s, StatusCode::CREATED);
    let w = node.writes.lock().unwrap()[0].clone();
    assert_eq!(w.w, Some(WriteConcern::Majority));
    assert_eq!(w.timeout_ms, Some(50));
    assert_eq!(w.idempotency_key.as_deref(), Some("k-1"));
}

#[tokio::test]
async fn write_accepts_any_content_type_and_all_w_forms() {
    let node = Arc::new(FakeNode::new());
    // `curl -d` sends a form content type; unknown fields are ignored.
    let req = Request::post("/v1/messages")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(r#"{"message": "", "extra": 1}"#))
        .unwrap();
    assert_eq!(send(&node, req).await.0, StatusCode::CREATED);
    node.writes.lock().unwrap().clear();
    for w in [
        json!("all"),
        json!("Majority"),
        json!("2"),
        json!(1),
        json!(null),
    ] {
        let (s, _) = post_json(&node, "/v1/messages", json!({"message": "x", "w": w})).await;
        assert_eq!(s, StatusCode::CREATED, "w = {w}");
    }
    let ws: Vec<_> = node.writes.lock().unwrap().iter().map(|r| r.w).collect();
    use WriteConcern::*;
    assert_eq!(
        ws,
        vec![
            Some(All),
            Some(Majority),
            Some(Count(2)),
            Some(Count(1)),
            None
        ]
    );
}

#[tokio::test]
async fn duplicate_write_is_200_with_flag() {
    let node = Arc::new(FakeNode {
        duplicate: true,
        ..FakeNode::new()
    });
    let (s, body) = post_json(&node, "/v1/messages", json!({"message": "hi"})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["duplicate"], json!(true));
}

#[tokio::test]
async fn compat_append_is_200() {
    let node = Arc::new(FakeNode::new());
    let (s, body) = post_json(&node, "/api/v1/append", json!({"message": "hi", "w": 1})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["offset"], json!(7));
    let (s, body) = post_json(&node, "/api/v1/append", json!({"message": 1})).await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
}

#[tokio::test]
async fn malformed_writes_are_400_invalid_request() {
    let node = Arc::new(FakeNode::new());
    let bad_bodies = [
        "",
        "not json",
        "{\"message\": \"x\"",
        "[1, 2]",
        "\"message\"",
        "{}",
        r#"{"message": null}"#,
        r#"{"message": 5}"#,
        r#"{"message": ["a"]}"#,
        r#"{"message": "x", "w": 0}"#,
        r#"{"message": "x", "w": 4}"#,
        r#"{"message": "x", "w": -1}"#,
        r#"{"message": "x", "w": 1.5}"#,
        r#"{"message": "x", "w": "most"}"#,
        r#"{"message": "x", "w": true}"#,
        r#"{"message": "x", "w": {}}"#,
    ];
    for body in bad_bodies {
        let (s, _, json) = send(&node, post("/v1/messages", body)).await;
        assert_eq!(
            (s, code(&json)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "body {body:?}"
        );
    }
    let bad_queries = [
        "w=0",
        "w=9",
        "w=x",
        "w=1&w=1",
        "timeout_ms=-1",
        "timeout_ms=soon",
    ];
    for q in bad_queries {
        let (s, _, json) = send(
            &node,
            post(&format!("/v1/messages?{q}"), r#"{"message": "x"}"#),
        )
        .await;
        assert_eq!(
            (s, code(&json)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "query {q:?}"
        );
    }
    assert!(
        node.writes.lock().unwrap().is_empty(),
        "nothing invalid reaches the node"
    );
}

#[tokio::test]
async fn w_in_body_and_query_must_agree() {
    let node = Arc::new(FakeNode::new());
    let (s, body) = post_json(&node, "/v1/messages?w=2", json!({"message": "x", "w": 1})).await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("disagree"));
    let (s, _) = post_json(
        &node,
        "/v1/messages?w=majority",
        json!({"message": "x", "w": "majority"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = post_json(&node, "/v1/messages?w=2", json!({"message": "x", "w": 2})).await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn bad_idempotency_keys_are_400() {
    let node = Arc::new(FakeNode::new());
    let long = "k".repeat(300);
    for key in ["", "  ", long.as_str()] {
        let req = Request::post("/v1/messages")
            .header("Idempotency-Key", key)
            .body(Body::from(r#"{"message": "x"}"#))
            .unwrap();
        let (s, _, json) = send(&node, req).await;
        assert_eq!(
            (s, code(&json)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "key {key:?}"
        );
    }
}

#[tokio::test]
async fn oversized_messages_are_413() {
    let node = Arc::new(FakeNode::new());
    let ok = "a".repeat(100);
    let (s, _) = post_json(&node, "/v1/messages", json!({ "message": ok })).await;
    assert_eq!(s, StatusCode::CREATED);
    // Escaping doubles the body, but the decoded message is within the limit.
    let quotes = "\"".repeat(100);
    let (s, _) = post_json(&node, "/v1/messages", json!({ "message": quotes })).await;
    assert_eq!(s, StatusCode::CREATED);

    let (s, body) = post_json(&node, "/v1/messages", json!({ "message": "a".repeat(101) })).await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    assert_eq!(body["error"]["limit"], json!(100));
    // A body far over the limit is refused without being parsed.
    let huge = format!(
        "{{\"message\": \"{}\"}}",
        "a".repeat(limits().max_body_bytes())
    );
    let (s, _, body) = send(&node, post("/v1/messages", huge.clone())).await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    // Also when streamed without a Content-Length.
    let chunks = futures::stream::iter(
        huge.into_bytes()
            .chunks(4096)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let (s, _, body) = send(&node, post("/api/v1/append", Body::from_stream(chunks))).await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    assert_eq!(node.writes.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn node_errors_map_to_statuses() {
    let timeout = ApiError::WriteTimeout {
        offset: 3,
        index: 4,
        acks: 1,
        w: 3,
    };
    let cases = [
        (
            ApiError::InvalidRequest("x".into()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            ApiError::PayloadTooLarge { limit: 1 },
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            ApiError::NoQuorum("x".into()),
            StatusCode::SERVICE_UNAVAILABLE,
            "no_quorum",
        ),
        (
            ApiError::NoLeader { leader_hint: None },
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
        ),
        (timeout, StatusCode::GATEWAY_TIMEOUT, "write_timeout"),
        (
            ApiError::Storage("disk".into()),
            StatusCode::INSUFFICIENT_STORAGE,
            "storage_error",
        ),
        (
            ApiError::NotFound("x".into()),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            ApiError::ShuttingDown,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
        ),
        (
            ApiError::Internal("bug".into()),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
        ),
    ];
    for (err, status, expected) in cases {
        let node = Arc::new(FakeNode::new());
        *node.write_error.lock().unwrap() = Some(err.clone());
        let (s, headers, body) = send(&node, post("/v1/messages", r#"{"message": "x"}"#)).await;
        assert_eq!((s, code(&body)), (status, expected), "{err:?}");
        let retry = matches!(expected, "no_quorum" | "no_leader" | "shutting_down");
        // One election timeout (limits().retry_after_s), when it applies at all.
        let expected_retry = retry.then_some("2");
        let got = headers
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap());
        assert_eq!(got, expected_retry, "{err:?}");
    }
}

#[tokio::test]
async fn write_timeout_reports_progress() {
    let node = Arc::new(FakeNode::new());
    *node.write_error.lock().unwrap() = Some(ApiError::WriteTimeout {
        offset: 3,
        index: 4,
        acks: 1,
        w: 3,
    });
    let (_, _, body) = send(&node, post("/v1/messages", r#"{"message": "x"}"#)).await;
    let e = &body["error"];
    assert_eq!(
        (e["offset"].clone(), e["index"].clone(), e["acks"].clone()),
        (json!(3), json!(4), json!(1))
    );
}

#[tokio::test]
async fn reads_pass_parameters_and_clamp() {
    let node = Arc::new(FakeNode::new());
    let (s, _, body) = send(&node, get("/v1/messages")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["messages"][0], json!({"offset": 0, "message": "m0"}));
    assert_eq!(body["next_offset"], json!(10));
    send(
        &node,
        get("/v1/messages?from=5&limit=500&consistency=local&wait_ms=99999"),
    )
    .await;
    let reads = node.reads.lock().unwrap().clone();
    let default = ReadRequest {
        from: 0,
        limit: Some(10),
        consistency: Consistency::Linearizable,
        wait_ms: None,
    };
    assert_eq!(reads[0], default);
    let custom = ReadRequest {
        from: 5,
        limit: Some(20),
        consistency: Consistency::Local,
        wait_ms: Some(1000),
    };
    assert_eq!(reads[1], custom);
}

#[tokio::test]
async fn bad_read_parameters_are_400() {
    let node = Arc::new(FakeNode::new());
    let bad = [
        "from=-1",
        "from=x",
        "limit=0",
        "limit=ten",
        "consistency=strong",
        "wait_ms=1.5",
        "from=1&from=2",
        "from=%ZZ",
    ];
    for q in bad {
        let (s, _, body) = send(&node, get(&format!("/v1/messages?{q}"))).await;
        assert_eq!(
            (s, code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "query {q:?}"
        );
    }
    assert!(node.reads.lock().unwrap().is_empty());
}

#[tokio::test]
async fn compat_messages_pages_through_everything() {
    let node = Arc::new(FakeNode::new());
    let (s, _, body) = send(&node, get("/api/v1/messages")).await;
    assert_eq!(s, StatusCode::OK);
    let expected: Vec<_> = (0..25).map(|i| format!("m{i}")).collect();
    assert_eq!(body, json!({ "messages": expected }));
    let reads = node.reads.lock().unwrap().clone();
    assert_eq!(reads.len(), 3, "one full page, one short, one empty");
    assert_eq!(reads[0].consistency, Consistency::Linearizable);
    assert!(reads[1..]
        .iter()
        .all(|r| r.consistency == Consistency::Local));
}

#[tokio::test]
async fn status_health_and_ready() {
    let node = Arc::new(FakeNode::new());
    let (s, _, body) = send(&node, get("/v1/status")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["node_id"], json!("n1"));
    assert_eq!(body["phase"], json!("run"));
    let (s, _, body) = send(&node, get("/health")).await;
    assert_eq!((s, body), (StatusCode::OK, json!({"status": "ok"})));
    let (s, _, body) = send(&node, get("/ready")).await;
    assert_eq!(
        (s, body["status"].clone()),
        (StatusCode::OK, json!("ready"))
    );

    let joining = Arc::new(FakeNode {
        status: status("data_readiness", Some("n1")),
        ..FakeNode::new()
    });
    let (s, _, body) = send(&joining, get("/ready")).await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    );
    let leaderless = Arc::new(FakeNode {
        status: status("run", None),
        ..FakeNode::new()
    });
    let (s, _, body) = send(&leaderless, get("/ready")).await;
    assert_eq!(
        (s, body["status"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("not_ready"))
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let node = Arc::new(FakeNode::new());
    let (s, _, body) = send(&node, get("/nope")).await;
    assert_eq!((s, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, _, body) = send(&node, get("/v1/messages/extra")).await;
    assert_eq!((s, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    for (method, uri) in [
        (Method::DELETE, "/v1/messages"),
        (Method::GET, "/api/v1/append"),
        (Method::POST, "/health"),
    ] {
        let req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let (s, _, body) = send(&node, req).await;
        assert_eq!(
            (s, code(&body)),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            "{method} {uri}"
        );
    }
}

#[test]
fn limits_come_from_config() {
    let cfg = crate::config::Config::default();
    let l = HttpLimits::from_config(&cfg);
    assert_eq!(l.max_message_bytes, cfg.write.max_message_bytes);
    assert_eq!(l.max_read_limit, cfg.read.max_limit);
    assert!(l.max_body_bytes() > 6 * l.max_message_bytes);
    // Retry-After: the election timeout in whole seconds, rounded up, at least 1.
    assert_eq!(l.retry_after_s, 2);
    let mut fast = cfg.clone();
    fast.raft.election_timeout_max_ms = 600;
    assert_eq!(HttpLimits::from_config(&fast).retry_after_s, 1);
    fast.raft.election_timeout_max_ms = 2001;
    assert_eq!(HttpLimits::from_config(&fast).retry_after_s, 3);
}

// ------------------------------------------------------------ tokens and roles

const TOKENS: &str = r#"
[[tokens]]
name = "r"
role = "read"
secret = "read-secret-0123456789"
[[tokens]]
name = "w"
role = "write"
secret = "write-secret-0123456789"
[[tokens]]
name = "a"
role = "admin"
secret = "admin-secret-0123456789"
"#;

/// The whole client API as served: router, ops routes, token check.
fn guarded_app(node: &Arc<FakeNode>, public_metrics: bool) -> Router {
    let tokens = auth::Tokens::parse(TOKENS)
        .unwrap()
        .with_public_metrics(public_metrics);
    ops::with_ops(
        router(Arc::clone(node), limits()),
        Arc::new(crate::metrics::Metrics::new()),
        Some(crate::node::faults::FaultSwitch::default()),
        Some(Arc::new(tokens)),
    )
}

async fn status_with_token(app: &Router, method: &Method, uri: &str, token: Option<&str>) -> u16 {
    let mut req = Request::builder().method(method.clone()).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, t);
    }
    let body = match *method {
        Method::POST => {
            Body::from(r#"{"message":"m","node_id":"n9","grpc_addr":"h:1","http_addr":"h:2"}"#)
        }
        _ => Body::empty(),
    };
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    resp.status().as_u16()
}

#[tokio::test]
async fn every_endpoint_class_needs_its_role() {
    let node = Arc::new(FakeNode::new());
    let app = guarded_app(&node, false);
    let classes: [(&str, Method, &str); 16] = [
        ("open", Method::GET, "/health"),
        ("open", Method::GET, "/ready"),
        ("read", Method::GET, "/v1/messages"),
        ("read", Method::GET, "/v1/status"),
        ("read", Method::GET, "/metrics"),
        ("write", Method::POST, "/v1/messages"),
        ("write", Method::POST, "/api/v1/append"),
        ("admin", Method::POST, "/v1/cluster/members"),
        ("admin", Method::POST, "/v1/cluster/transfer-leadership"),
        ("admin", Method::GET, "/v1/debug/faults"),
        ("admin", Method::POST, "/v1/log/trim"),
        ("write", Method::POST, "/v1/messages/batch"),
        ("write", Method::PUT, "/v1/cursors/c"),
        ("write", Method::DELETE, "/v1/cursors/c"),
        ("read", Method::GET, "/v1/cursors"),
        ("read", Method::GET, "/v1/cursors/c"),
    ];
    let tokens = [
        (0, Some("Bearer read-secret-0123456789")),
        (1, Some("Bearer write-secret-0123456789")),
        (2, Some("bearer  admin-secret-0123456789 ")),
    ];
    for (class, method, uri) in &classes {
        let need = match *class {
            "open" => -1,
            "read" => 0,
            "write" => 1,
            _ => 2,
        };
        for bad in [
            None,
            Some("Bearer nope-nope-nope-nope"),
            Some("Basic YTpi"),
            Some("Bearer "),
        ] {
            let s = status_with_token(&app, method, uri, bad).await;
            if need >= 0 {
                assert_eq!(s, 401, "{method} {uri} with {bad:?}");
            } else {
                assert!(s != 401 && s != 403, "{uri} must stay open");
            }
        }
        for (level, token) in tokens {
            let s = status_with_token(&app, method, uri, token).await;
            if level < need {
                assert_eq!(s, 403, "{method} {uri} as role {level}");
            } else {
                assert!(s != 401 && s != 403, "{method} {uri} as role {level}: {s}");
            }
        }
    }
    // Refused requests never reached the node: only the write/admin-token writes
    // did (two message routes and the cursor delete, with two tokens each).
    assert_eq!(node.writes.lock().unwrap().len(), 6);
    let public = guarded_app(&node, true);
    assert_eq!(
        status_with_token(&public, &Method::GET, "/metrics", None).await,
        200
    );
}

#[tokio::test]
async fn a_stalled_body_gets_408_after_the_body_timeout() {
    let node = Arc::new(FakeNode::new());
    use futures::StreamExt;
    let first = axum::body::Bytes::from_static(b"{\"message\":\"");
    let stalled =
        futures::stream::iter([Ok::<_, std::io::Error>(first)]).chain(futures::stream::pending());
    let req = post("/v1/messages", Body::from_stream(stalled));
    let (s, _, body) = send(&node, req).await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::REQUEST_TIMEOUT, "request_timeout")
    );
    assert!(node.writes.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_batch_is_one_write_answered_with_its_first_offset_and_count() {
    let node = Arc::new(FakeNode::new());
    let req = Request::post("/v1/messages/batch?timeout_ms=5")
        .header("Idempotency-Key", "b-1")
        .header("If-Next-Offset", "7")
        .body(Body::from(
            r#"{"messages": ["a", "", "bc"], "w": "majority"}"#,
        ))
        .unwrap();
    let (s, _, body) = send(&node, req).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        body,
        json!({"first_offset": 7, "count": 3, "index": 9, "term": 2, "acks": 2, "committed": true})
    );
    let w = node.writes.lock().unwrap()[0].clone();
    assert_eq!(
        w,
        WriteRequest {
            message: String::new(),
            batch: Some(vec!["a".into(), "".into(), "bc".into()]),
            if_next_offset: Some(7),
            op: None,
            w: Some(WriteConcern::Majority),
            timeout_ms: Some(5),
            idempotency_key: Some("b-1".into()),
        }
    );
    let dup = Arc::new(FakeNode {
        duplicate: true,
        ..FakeNode::new()
    });
    let (s, body) = post_json(&dup, "/v1/messages/batch", json!({"messages": ["a"]})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["duplicate"], json!(true));
}

#[tokio::test]
async fn bad_batches_are_400_or_413_and_reach_no_node() {
    let node = Arc::new(FakeNode::new());
    for (body, status) in [
        (json!({"messages": []}), StatusCode::BAD_REQUEST),
        (json!({"messages": ["a", 1]}), StatusCode::BAD_REQUEST),
        (json!({"messages": "a"}), StatusCode::BAD_REQUEST),
        (json!({}), StatusCode::BAD_REQUEST),
        (json!(["a"]), StatusCode::BAD_REQUEST),
        (json!({"messages": ["a"], "w": 9}), StatusCode::BAD_REQUEST),
        (
            json!({"messages": ["a", "b", "c", "d"]}),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            json!({"messages": ["0123456789", "x"]}),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let (s, resp) = post_json(&node, "/v1/messages/batch", body.clone()).await;
        assert_eq!(s, status, "{body}: {resp}");
        let want = if status == StatusCode::BAD_REQUEST {
            "invalid_request"
        } else {
            "payload_too_large"
        };
        assert_eq!(code(&resp), want, "{body}");
    }
    let huge = format!(r#"{{"messages": ["{}"]}}"#, "x".repeat(200_000));
    let (s, _, resp) = send(&node, post("/v1/messages/batch", huge)).await;
    assert_eq!(
        (s, code(&resp)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    assert!(node.writes.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_bad_if_next_offset_is_400_on_both_write_routes() {
    let node = Arc::new(FakeNode::new());
    for (uri, body) in [
        ("/v1/messages", r#"{"message": "a"}"#),
        ("/v1/messages/batch", r#"{"messages": ["a"]}"#),
    ] {
        for bad in ["-1", "x", "1.5", ""] {
            let req = Request::post(uri)
                .header("If-Next-Offset", bad)
                .body(Body::from(body))
                .unwrap();
            let (s, _, resp) = send(&node, req).await;
            assert_eq!(
                (s, code(&resp)),
                (StatusCode::BAD_REQUEST, "invalid_request")
            );
        }
        let req = Request::post(uri)
            .header("If-Next-Offset", "1")
            .header("If-Next-Offset", "2")
            .body(Body::from(body))
            .unwrap();
        assert_eq!(send(&node, req).await.0, StatusCode::BAD_REQUEST);
        let req = Request::post(uri)
            .header("If-Next-Offset", " 3 ")
            .body(Body::from(body))
            .unwrap();
        assert_eq!(send(&node, req).await.0.as_u16() / 100, 2);
    }
    let writes = node.writes.lock().unwrap();
    assert_eq!(writes.len(), 2);
    assert!(writes.iter().all(|w| w.if_next_offset == Some(3)));
}

#[tokio::test]
async fn lifecycle_errors_map_to_their_statuses_and_fields() {
    let node = Arc::new(FakeNode::new());
    let cases = [
        (
            ApiError::OffsetConflict { next_offset: 12 },
            StatusCode::CONFLICT,
            "offset_conflict",
            "next_offset",
            12,
        ),
        (
            ApiError::OffsetTrimmed { first_offset: 5 },
            StatusCode::GONE,
            "offset_trimmed",
            "first_offset",
            5,
        ),
        (
            ApiError::CursorRegression { current: 4 },
            StatusCode::CONFLICT,
            "cursor_regression",
            "offset",
            4,
        ),
        (
            ApiError::TooManyCursors { max: 2 },
            StatusCode::CONFLICT,
            "too_many_cursors",
            "limit",
            2,
        ),
    ];
    for (err, status, want, field, value) in cases {
        *node.write_error.lock().unwrap() = Some(err);
        let (s, body) = post_json(&node, "/v1/messages/batch", json!({"messages": ["a"]})).await;
        assert_eq!((s, code(&body)), (status, want));
        assert_eq!(body["error"][field], json!(value), "{body}");
    }
}

fn request(method: Method, uri: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn a_trim_goes_to_the_node_as_a_log_op() {
    let node = Arc::new(FakeNode::new());
    let (s, body) = post_json(&node, "/v1/log/trim", json!({"before_offset": 5})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["first_offset"], 7);
    assert_eq!(body["passed_cursors"], json!([]));
    let w = node.writes.lock().unwrap()[0].clone();
    assert_eq!(w, WriteRequest::op(LogOp::Trim { before: 5 }));
    for bad in [
        json!({}),
        json!({"before_offset": -1}),
        json!({"before_offset": "5"}),
        json!({"before_offset": 1.5}),
        json!([5]),
    ] {
        let (s, resp) = post_json(&node, "/v1/log/trim", bad.clone()).await;
        assert_eq!(
            (s, code(&resp)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{bad}"
        );
    }
    assert_eq!(node.writes.lock().unwrap().len(), 1);
    // A trim past the end, refused by the leader, keeps its 400.
    *node.write_error.lock().unwrap() = Some(ApiError::InvalidRequest("past the end".into()));
    let (s, _) = post_json(&node, "/v1/log/trim", json!({"before_offset": 99})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn cursor_routes_set_read_list_and_delete() {
    let node = Arc::new(FakeNode::new());
    let put = request(
        Method::PUT,
        "/v1/cursors/a",
        r#"{"offset": 3, "force": true}"#,
    );
    let (s, _, body) = send(&node, put).await;
    assert_eq!(
        (s, body),
        (StatusCode::OK, json!({"name": "a", "offset": 7}))
    );
    let put = request(Method::PUT, "/v1/cursors/b-2", r#"{"offset": 4}"#);
    assert_eq!(send(&node, put).await.0, StatusCode::OK);
    let del = request(Method::DELETE, "/v1/cursors/a", "");
    let (s, _, body) = send(&node, del).await;
    assert_eq!(
        (s, body),
        (StatusCode::OK, json!({"name": "a", "deleted": true}))
    );
    let writes = node.writes.lock().unwrap().clone();
    let ops: Vec<_> = writes.into_iter().map(|w| w.op.unwrap()).collect();
    assert_eq!(
        ops,
        vec![
            LogOp::SetCursor {
                name: "a".into(),
                offset: 3,
                force: true
            },
            LogOp::SetCursor {
                name: "b-2".into(),
                offset: 4,
                force: false
            },
            LogOp::DeleteCursor { name: "a".into() },
        ]
    );
    let (s, _, body) = send(&node, get("/v1/cursors")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body,
        json!({"cursors": [{"name": "a", "offset": 3}, {"name": "b-2", "offset": 9}]})
    );
    let (s, _, body) = send(&node, get("/v1/cursors/b-2")).await;
    assert_eq!(
        (s, body),
        (StatusCode::OK, json!({"name": "b-2", "offset": 9}))
    );
    let (s, _, body) = send(&node, get("/v1/cursors/nope")).await;
    assert_eq!((s, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test]
async fn bad_cursor_names_and_bodies_are_400_and_reach_no_node() {
    let node = Arc::new(FakeNode::new());
    let long = "x".repeat(129);
    let names = ["a%20b", "a%2Fb", "%C3%A9", "a+b", long.as_str()];
    for name in names {
        for (method, body) in [
            (Method::PUT, r#"{"offset": 1}"#),
            (Method::GET, ""),
            (Method::DELETE, ""),
        ] {
            let req = request(method.clone(), &format!("/v1/cursors/{name}"), body);
            let (s, _, resp) = send(&node, req).await;
            assert_eq!(
                (s, code(&resp)),
                (StatusCode::BAD_REQUEST, "invalid_request"),
                "{method} {name}"
            );
        }
    }
    let ok_name = "x".repeat(128);
    for body in [
        r#"{}"#,
        r#"{"offset": -2}"#,
        r#"{"offset": "1"}"#,
        r#"{"offset": 1, "force": "yes"}"#,
        "nope",
    ] {
        let req = request(Method::PUT, "/v1/cursors/c", body);
        let (s, _, resp) = send(&node, req).await;
        assert_eq!(
            (s, code(&resp)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{body}"
        );
    }
    assert!(node.writes.lock().unwrap().is_empty());
    let req = request(
        Method::PUT,
        &format!("/v1/cursors/{ok_name}"),
        r#"{"offset": 1}"#,
    );
    assert_eq!(send(&node, req).await.0, StatusCode::OK);
    // A missing cursor's delete: 404 from the node.
    *node.write_error.lock().unwrap() = Some(ApiError::NotFound("no such cursor".into()));
    let (s, _, resp) = send(&node, request(Method::DELETE, "/v1/cursors/c", "")).await;
    assert_eq!((s, code(&resp)), (StatusCode::NOT_FOUND, "not_found"));
}

// ------------------------------------------------------------ web console as served

#[tokio::test]
async fn the_console_loads_without_a_token_and_its_api_calls_still_need_one() {
    let node = Arc::new(FakeNode::new());
    let tokens = auth::Tokens::parse(TOKENS).unwrap();
    let app = ops::with_ops(
        router(Arc::clone(&node), limits()).merge(ui::router()),
        Arc::new(crate::metrics::Metrics::new()),
        None,
        Some(Arc::new(tokens)),
    );
    for uri in ["/ui", "/ui/", "/ui/console.js", "/ui/console.css"] {
        assert_eq!(
            status_with_token(&app, &Method::GET, uri, None).await,
            200,
            "{uri}"
        );
    }
    assert_eq!(
        status_with_token(&app, &Method::GET, "/v1/status", None).await,
        401
    );
    assert_eq!(
        status_with_token(&app, &Method::GET, "/metrics", None).await,
        401
    );
    let bearer = Some("Bearer read-secret-0123456789");
    assert_eq!(
        status_with_token(&app, &Method::GET, "/v1/status", bearer).await,
        200
    );
    // An unknown asset is the API's JSON 404 (after the token check like any path
    // but the console's own), and a write method on the console is refused.
    let resp = app
        .clone()
        .oneshot(Request::get("/ui/missing.js").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    let post = status_with_token(
        &app,
        &Method::POST,
        "/ui",
        Some("Bearer admin-secret-0123456789"),
    );
    assert_eq!(post.await, 405);
}

#[tokio::test]
async fn a_write_body_in_several_chunks_is_read_whole() {
    let node = Arc::new(FakeNode::new());
    let body = r#"{"message": "split \"across\" chunks", "w": 2}"#;
    let chunks: Vec<_> = body
        .as_bytes()
        .chunks(7)
        .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
        .collect();
    let req = post(
        "/v1/messages",
        Body::from_stream(futures::stream::iter(chunks)),
    );
    let (s, _, _) = send(&node, req).await;
    assert_eq!(s, StatusCode::CREATED);
    let w = node.writes.lock().unwrap()[0].clone();
    assert_eq!(
        (w.message.as_str(), w.w),
        ("split \"across\" chunks", Some(WriteConcern::Count(2)))
    );
}

#[tokio::test]
async fn a_batch_answer_is_the_bytes_it_was_when_built_as_a_value() {
    for duplicate in [false, true] {
        let node = Arc::new(FakeNode {
            duplicate,
            ..FakeNode::new()
        });
        let resp = router(Arc::clone(&node), limits())
            .oneshot(post("/v1/messages/batch", r#"{"messages": ["a", "b"]}"#))
            .await
            .unwrap();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let mut want = json!({
            "first_offset": 7, "count": 2, "index": 9, "term": 2, "acks": 2, "committed": true,
        });
        if duplicate {
            want["duplicate"] = json!(true);
        }
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            want.to_string(),
            "duplicate {duplicate}"
        );
    }
}
