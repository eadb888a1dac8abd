//! Route handlers: decode the request into a node call, call, encode the answer.
//!
//! Invariants:
//! - Validation that needs no node state (JSON shape, `w` syntax, sizes, query
//!   values) happens before the node is called; nothing invalid reaches the log.
//! - `w` is checked against the node's current voter count (1..=voters).

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::body::{BatchLimits, WriteBody};
use super::error::error_response;
use super::extract::{
    check_w, invalid, parse_u64, parse_w_str, ApiQuery, BatchJson, QueryParams, WriteHeaders,
    WriteJson, IDEMPOTENCY_KEY, IF_NEXT_OFFSET,
};
use super::{AppState, HttpLimits};
use crate::api::{
    ApiError, Consistency, NodeApi, ReadRequest, ReadResult, WriteConcern, WriteRequest,
    WriteResult,
};

/// Longest idempotency key accepted; keys are stored in the replicated log.
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// `POST /v1/messages`: 201, or 200 for a duplicate.
pub async fn post_message<N: NodeApi>(
    State(app): State<AppState<N>>,
    ApiQuery(query): ApiQuery,
    WriteHeaders(headers): WriteHeaders,
    WriteJson(body): WriteJson,
) -> Result<Response, ApiError> {
    let res = write(&app, &query, &headers, body).await?;
    let status = if res.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(res)).into_response())
}

/// `POST /api/v1/append`: as `POST /v1/messages`, but always 200.
pub async fn compat_append<N: NodeApi>(
    State(app): State<AppState<N>>,
    ApiQuery(query): ApiQuery,
    WriteHeaders(headers): WriteHeaders,
    WriteJson(body): WriteJson,
) -> Result<Json<WriteResult>, ApiError> {
    write(&app, &query, &headers, body).await.map(Json)
}

/// The answer to a batch (fields in the order the JSON of a `Value` had them).
#[derive(Serialize)]
struct BatchAnswer {
    acks: usize,
    committed: bool,
    count: usize,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
    first_offset: u64,
    index: u64,
    term: u64,
}

/// `POST /v1/messages/batch`: 201 `{"first_offset", "count", ...}`, or 200 for
/// a duplicate.
pub async fn post_batch<N: NodeApi>(
    State(app): State<AppState<N>>,
    ApiQuery(query): ApiQuery,
    WriteHeaders(headers): WriteHeaders,
    BatchJson(body): BatchJson,
) -> Result<Response, ApiError> {
    let limits = BatchLimits {
        max_messages: app.limits.max_batch_messages,
        max_bytes: app.limits.max_batch_bytes,
    };
    let (batch, body_w) = body.into_batch(limits)?;
    let count = batch.len();
    let mut req = write_options(&app, &query, &headers, body_w)?;
    req.batch = Some(batch);
    let res = app.node.write(req).await?;
    let out = BatchAnswer {
        acks: res.acks,
        committed: res.committed,
        count,
        duplicate: res.duplicate,
        first_offset: res.offset,
        index: res.index,
        term: res.term,
    };
    let status = if res.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(out)).into_response())
}

async fn write<N: NodeApi>(
    app: &AppState<N>,
    query: &QueryParams,
    headers: &HeaderMap,
    body: WriteBody,
) -> Result<WriteResult, ApiError> {
    let (message, body_w) = body.into_message(app.limits.max_message_bytes)?;
    let mut req = write_options(app, query, headers, body_w)?;
    req.message = message;
    app.node.write(req).await
}

/// A write request with no messages yet: `w`, timeout, key and condition.
fn write_options<N: NodeApi>(
    app: &AppState<N>,
    query: &QueryParams,
    headers: &HeaderMap,
    body_w: Option<WriteConcern>,
) -> Result<WriteRequest, ApiError> {
    let w = merge_w(body_w, query.get("w")?.map(parse_w_str).transpose()?)?;
    if let Some(w) = w {
        check_w(w, app.node.voter_count())?;
    }
    Ok(WriteRequest {
        message: String::new(),
        batch: None,
        if_next_offset: if_next_offset(headers)?,
        w,
        timeout_ms: query.get_u64("timeout_ms")?,
        idempotency_key: idempotency_key(headers)?,
        op: None,
    })
}

/// The `If-Next-Offset` header: one non-negative integer, if given.
fn if_next_offset(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let mut values = headers.get_all(IF_NEXT_OFFSET).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(invalid("If-Next-Offset is given more than once".into()));
    }
    let text = value
        .to_str()
        .map_err(|_| invalid("If-Next-Offset must be a non-negative integer".into()))?;
    parse_u64("If-Next-Offset", text).map(Some)
}

/// `w` from the body and from the query: either one, or both when equal.
fn merge_w(
    body: Option<WriteConcern>,
    query: Option<WriteConcern>,
) -> Result<Option<WriteConcern>, ApiError> {
    match (body, query) {
        (Some(b), Some(q)) if b != q => Err(invalid(format!(
            "w in the body ({}) and in the query ({}) disagree",
            w_text(b),
            w_text(q)
        ))),
        (b, q) => Ok(b.or(q)),
    }
}

fn w_text(w: WriteConcern) -> String {
    match w {
        WriteConcern::Count(n) => n.to_string(),
        WriteConcern::Majority => "majority".into(),
        WriteConcern::All => "all".into(),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(invalid("Idempotency-Key is given more than once".into()));
    }
    let key = value
        .to_str()
        .map_err(|_| invalid("Idempotency-Key must be visible ASCII".into()))?
        .trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(invalid(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes"
        )));
    }
    Ok(Some(key.to_string()))
}

/// `GET /v1/messages`.
pub async fn get_messages<N: NodeApi>(
    State(app): State<AppState<N>>,
    ApiQuery(query): ApiQuery,
) -> Result<Json<ReadResult>, ApiError> {
    let req = read_request(&query, &app.limits)?;
    app.node.read(req).await.map(Json)
}

fn read_request(query: &QueryParams, limits: &HttpLimits) -> Result<ReadRequest, ApiError> {
    let limit = match query.get("limit")? {
        None => limits.default_read_limit,
        Some(v) => match parse_u64("limit", v)? {
            0 => return Err(invalid("limit must be at least 1".into())),
            n => usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(limits.max_read_limit),
        },
    };
    Ok(ReadRequest {
        from: query.get_u64("from")?.unwrap_or(0),
        limit: Some(limit),
        consistency: consistency(query.get("consistency")?)?,
        wait_ms: query.get_u64("wait_ms")?.map(|w| w.min(limits.max_wait_ms)),
    })
}

fn consistency(v: Option<&str>) -> Result<Consistency, ApiError> {
    match v {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("local") => Ok(Consistency::Local),
        Some(other) => Err(invalid(format!(
            "consistency must be \"linearizable\" or \"local\", got {other:?}"
        ))),
    }
}

/// `GET /api/v1/messages`: every committed message as a plain string. The first
/// page is a linearizable read; later pages read locally, which is enough because
/// this node has then applied at least up to the linearizable read point.
pub async fn compat_messages<N: NodeApi>(
    State(app): State<AppState<N>>,
) -> Result<Json<Value>, ApiError> {
    let mut messages = Vec::new();
    let mut from = 0;
    let mut consistency = Consistency::Linearizable;
    loop {
        let req = ReadRequest {
            from,
            limit: Some(app.limits.max_read_limit),
            consistency,
            wait_ms: None,
        };
        let page = app.node.read(req).await?;
        if page.messages.is_empty() || page.next_offset <= from {
            break;
        }
        messages.extend(page.messages.into_iter().map(|m| m.message));
        from = page.next_offset;
        consistency = Consistency::Local;
    }
    Ok(Json(json!({ "messages": messages })))
}

/// `GET /v1/status`.
pub async fn status<N: NodeApi>(State(app): State<AppState<N>>) -> Result<Response, ApiError> {
    let status = app.node.status().await?;
    Ok(Json(status).into_response())
}

/// `GET /health`: 200 while the process runs.
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /ready`: 200 once in the run phase with a known leader, else 503.
pub async fn ready<N: NodeApi>(State(app): State<AppState<N>>) -> Response {
    match app.node.status().await {
        Ok(s) if s.is_ready() => {
            Json(json!({ "status": "ready", "phase": s.phase, "leader_id": s.leader_id }))
                .into_response()
        }
        Ok(s) => {
            let message = format!(
                "phase {}, leader {}",
                s.phase,
                s.leader_id.as_deref().unwrap_or("unknown")
            );
            not_ready(
                "not_ready",
                &message,
                json!({ "phase": s.phase, "leader_id": s.leader_id }),
            )
        }
        Err(e) => not_ready(e.code(), &e.to_string(), json!({})),
    }
}

/// A 503 that is both a readiness report and an error in the SPEC's shape.
fn not_ready(code: &str, message: &str, fields: Value) -> Response {
    let mut body = Map::new();
    body.insert("status".into(), json!("not_ready"));
    body.insert("error".into(), json!({ "code": code, "message": message }));
    if let Value::Object(f) = fields {
        body.extend(f);
    }
    (StatusCode::SERVICE_UNAVAILABLE, Json(Value::Object(body))).into_response()
}

/// Unknown route: 404 in the JSON shape.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// Known route, wrong method: 405 in the JSON shape.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let message = format!("method {method} is not allowed on {}", uri.path());
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &message,
        Map::new(),
    )
}
