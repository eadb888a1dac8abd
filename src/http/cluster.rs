//! Cluster administration routes: membership changes (one at a time, through the
//! log) and leadership transfer. They run on the leader; elsewhere they answer
//! 503 `no_leader` naming the leader, so scripts retry there.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::extract::{invalid, ApiBytes, ApiJson};
use super::AppState;
use crate::api::{ApiError, MemberSpec, NodeApi};

/// `GET /v1/cluster/members`
pub async fn list<N: NodeApi>(State(app): State<AppState<N>>) -> Result<Response, ApiError> {
    let st = app.node.status().await?;
    Ok(Json(json!({ "members": st.members, "leader_id": st.leader_id })).into_response())
}

fn string_field(body: &Value, key: &str) -> Result<String, ApiError> {
    match body.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(_) => Err(invalid(format!("`{key}` must be a non-empty string"))),
        None => Err(invalid(format!("`{key}` is required"))),
    }
}

/// `POST /v1/cluster/members` `{"node_id","grpc_addr","http_addr","voter"}`
pub async fn add<N: NodeApi>(
    State(app): State<AppState<N>>,
    ApiJson(body): ApiJson,
) -> Result<Response, ApiError> {
    let node_id = string_field(&body, "node_id")?;
    let grpc_addr = string_field(&body, "grpc_addr")?;
    crate::config::parse_host_port(&grpc_addr, false)
        .map_err(|e| invalid(format!("grpc_addr: {e}")))?;
    let http_addr = match body.get("http_addr") {
        None | Some(Value::Null) => String::new(),
        Some(_) => string_field(&body, "http_addr")?,
    };
    let voter = match body.get("voter") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("`voter` must be a boolean".into())),
    };
    let spec = MemberSpec {
        grpc_addr,
        http_addr,
        voter,
    };
    let index = app.node.change_member(node_id.clone(), Some(spec)).await?;
    let body = json!({ "node_id": node_id, "index": index, "voter": voter });
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// `DELETE /v1/cluster/members/{node_id}`
pub async fn remove<N: NodeApi>(
    State(app): State<AppState<N>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(node_id) = path.map_err(|e| invalid(format!("bad node id in the path: {e}")))?;
    let index = app.node.change_member(node_id.clone(), None).await?;
    Ok(Json(json!({ "node_id": node_id, "index": index, "removed": true })).into_response())
}

/// `POST /v1/cluster/transfer-leadership` with an optional `{"to": "<node_id>"}`.
pub async fn transfer<N: NodeApi>(
    State(app): State<AppState<N>>,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    let to = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| invalid(format!("request body is not valid JSON: {e}")))?;
        match v.get("to") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid("`to` must be a string".into())),
        }
    };
    let target = app.node.transfer_leadership(to).await?;
    Ok(Json(json!({ "transferring_to": target })).into_response())
}
