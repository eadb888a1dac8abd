//! Routes of the log lifecycle (SPEC section 7) other than writes: trims and
//! consumer cursors. Each change goes through the log as a [`LogOp`] carried by
//! a write request, so a follower forwards it like any write and the answer
//! comes once it is applied.
//!
//! Invariants: names and offsets are checked before the node is called (bad
//! input changes nothing); a trim past the end of the log is refused by the
//! leader (400).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::extract::{invalid, ApiJson};
use super::AppState;
use crate::api::{ApiError, LogOp, NodeApi, WriteRequest};

/// Longest cursor name, in bytes.
pub const MAX_CURSOR_NAME_BYTES: usize = 128;

/// `POST /v1/log/trim` `{"before_offset": n}`: 200 with the first offset now
/// and the cursors the trim passed.
pub async fn trim<N: NodeApi>(
    State(app): State<AppState<N>>,
    ApiJson(body): ApiJson,
) -> Result<Response, ApiError> {
    let before = required_u64(&body, "before_offset")?;
    let res = app
        .node
        .write(WriteRequest::op(LogOp::Trim { before }))
        .await?;
    let out = json!({
        "first_offset": res.offset,
        "passed_cursors": res.passed_cursors,
        "index": res.index,
    });
    Ok(Json(out).into_response())
}

/// `PUT /v1/cursors/{name}` `{"offset": n, "force": bool}`.
pub async fn put_cursor<N: NodeApi>(
    State(app): State<AppState<N>>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let offset = required_u64(&body, "offset")?;
    let force = match body.get("force") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("force must be true or false".into())),
    };
    let op = LogOp::SetCursor {
        name: name.clone(),
        offset,
        force,
    };
    let res = app.node.write(WriteRequest::op(op)).await?;
    Ok(Json(json!({ "name": name, "offset": res.offset })).into_response())
}

/// `DELETE /v1/cursors/{name}`: 200, or 404 when there is no such cursor.
pub async fn delete_cursor<N: NodeApi>(
    State(app): State<AppState<N>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let op = LogOp::DeleteCursor { name: name.clone() };
    app.node
        .write(WriteRequest::op(op))
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::NotFound(format!("no cursor named {name:?}")),
            e => e,
        })?;
    Ok(Json(json!({ "name": name, "deleted": true })).into_response())
}

/// `GET /v1/cursors/{name}`: `{"name", "offset"}`, or 404.
pub async fn get_cursor<N: NodeApi>(
    State(app): State<AppState<N>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let all = app.node.cursors().await?;
    match all.into_iter().find(|(n, _)| *n == name) {
        Some((name, offset)) => Ok(Json(json!({ "name": name, "offset": offset })).into_response()),
        None => Err(ApiError::NotFound(format!("no cursor named {name:?}"))),
    }
}

/// `GET /v1/cursors`: `{"cursors": [{"name", "offset"}, ...]}` by name.
pub async fn list_cursors<N: NodeApi>(
    State(app): State<AppState<N>>,
) -> Result<Response, ApiError> {
    let all = app.node.cursors().await?;
    let list: Vec<Value> = all
        .into_iter()
        .map(|(name, offset)| json!({ "name": name, "offset": offset }))
        .collect();
    Ok(Json(json!({ "cursors": list })).into_response())
}

fn required_u64(body: &Value, field: &str) -> Result<u64, ApiError> {
    let Value::Object(obj) = body else {
        return Err(invalid("request body must be a JSON object".into()));
    };
    match obj.get(field) {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| invalid(format!("{field} must be a non-negative integer, got {v}"))),
        None => Err(invalid(format!("{field} is missing"))),
    }
}

/// Non-empty, at most [`MAX_CURSOR_NAME_BYTES`], URL-safe (RFC 3986
/// unreserved: letters, digits, `-`, `.`, `_`, `~`).
fn check_name(name: &str) -> Result<(), ApiError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~');
    if name.is_empty() || name.len() > MAX_CURSOR_NAME_BYTES || !name.chars().all(ok_char) {
        return Err(invalid(format!(
            "a cursor name is 1 to {MAX_CURSOR_NAME_BYTES} bytes of letters, digits, '-', '.', '_' or '~', got {name:?}"
        )));
    }
    Ok(())
}
