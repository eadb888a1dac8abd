//! Mapping of [`ApiError`] to HTTP: status code, headers and the SPEC's JSON shape
//! `{"error": {"code": "<snake_case>", "message": "...", ...extra}}`.
//!
//! Why here: typed errors travel through the node untouched; only this edge decides
//! what a client sees.
//!
//! Invariants:
//! - Every error response of the API (including 404/405 and body rejections) is
//!   built by [`error_response`], so it always has the JSON shape.
//! - `no_quorum`, `no_leader` and `shutting_down` carry `Retry-After`: nothing was
//!   appended, retrying is safe.
//! - `write_timeout` carries `offset`, `index` and `acks` inside the error object:
//!   the entry is in the log and keeps replicating.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::api::ApiError;

/// Seconds a client should wait before retrying a 503, as errors are built; the
/// router sets (with [`set_retry_after`]) the configured value (an election timeout).
const RETRY_AFTER_SECS: &str = "1";

/// Sets the response's `Retry-After`, if it has one, to `value`.
pub fn set_retry_after(mut resp: Response, value: HeaderValue) -> Response {
    if let Some(v) = resp.headers_mut().get_mut(header::RETRY_AFTER) {
        *v = value;
    }
    resp
}

/// Builds an error response in the SPEC's JSON shape; `extra` fields go inside the
/// `error` object next to `code` and `message`.
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    extra: Map<String, Value>,
) -> Response {
    let mut err = Map::new();
    err.insert("code".into(), Value::from(code));
    err.insert("message".into(), Value::from(message));
    err.extend(extra);
    (status, Json(json!({ "error": err }))).into_response()
}

/// The status code for each API error.
pub fn status_of(e: &ApiError) -> StatusCode {
    match e {
        ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
        ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        ApiError::NoQuorum(_) | ApiError::NoLeader { .. } | ApiError::ShuttingDown => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ApiError::WriteTimeout { .. } | ApiError::OutcomeUnknown(_) => StatusCode::GATEWAY_TIMEOUT,
        ApiError::Storage(_) => StatusCode::INSUFFICIENT_STORAGE,
        ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        ApiError::BatchTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ApiError::OffsetConflict { .. }
        | ApiError::CursorRegression { .. }
        | ApiError::TooManyCursors { .. } => StatusCode::CONFLICT,
        ApiError::OffsetTrimmed { .. } => StatusCode::GONE,
    }
}

/// Fields beyond `code` and `message` that an error carries.
fn extra_fields(e: &ApiError) -> Map<String, Value> {
    let mut m = Map::new();
    match e {
        ApiError::WriteTimeout {
            offset,
            index,
            acks,
            w,
        } => {
            m.insert("offset".into(), json!(offset));
            m.insert("index".into(), json!(index));
            m.insert("acks".into(), json!(acks));
            m.insert("w".into(), json!(w));
        }
        ApiError::NoLeader {
            leader_hint: Some(hint),
        } => {
            m.insert("leader_hint".into(), json!(hint));
        }
        ApiError::PayloadTooLarge { limit } => {
            m.insert("limit".into(), json!(limit));
        }
        ApiError::OffsetConflict { next_offset } => {
            m.insert("next_offset".into(), json!(next_offset));
        }
        ApiError::OffsetTrimmed { first_offset } => {
            m.insert("first_offset".into(), json!(first_offset));
        }
        ApiError::CursorRegression { current } => {
            m.insert("offset".into(), json!(current));
        }
        ApiError::TooManyCursors { max } => {
            m.insert("limit".into(), json!(max));
        }
        _ => {}
    }
    m
}

fn retry_after(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::NoQuorum(_) | ApiError::NoLeader { .. } | ApiError::ShuttingDown
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self);
        if status.is_server_error() {
            tracing::warn!(code = self.code(), error = %self, "request failed");
        }
        let mut resp = error_response(status, self.code(), &self.to_string(), extra_fields(&self));
        if retry_after(&self) {
            let value = HeaderValue::from_static(RETRY_AFTER_SECS);
            resp.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if matches!(
            self,
            ApiError::PayloadTooLarge { .. } | ApiError::BatchTooLarge(_)
        ) {
            // The body may be left unread: tell the client this connection ends here
            // rather than letting its next request on it fail.
            let close = HeaderValue::from_static("close");
            resp.headers_mut().insert(header::CONNECTION, close);
        }
        resp
    }
}
