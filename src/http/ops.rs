//! Operations routes added around the client API: `/metrics` (Prometheus text),
//! per-request metrics (route, method, status, latency), and, only when fault
//! injection is enabled in the config, `/v1/debug/faults`; then the token check
//! over every route (inside the metrics layer, so 401s and 403s are counted).

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Instant;

use super::auth::Tokens;
use super::extract::invalid;
use crate::api::ApiError;
use crate::metrics::{HttpLabels, Metrics, RouteLabels};
use crate::node::faults::{FaultSwitch, Faults};

/// `app` plus `/metrics`, request metrics, the fault switch and the token check
/// when given.
pub fn with_ops(
    app: Router,
    metrics: Arc<Metrics>,
    faults: Option<FaultSwitch>,
    tokens: Option<Arc<Tokens>>,
) -> Router {
    let mut ops = Router::new().route("/metrics", get(render).with_state(metrics.clone()));
    if let Some(f) = faults {
        ops = ops.route(
            "/v1/debug/faults",
            get(get_faults).post(set_faults).with_state(f),
        );
    }
    let mut app = app.merge(ops);
    if let Some(tokens) = tokens {
        app = app.layer(middleware::from_fn_with_state(tokens, super::auth::check));
    }
    app.layer(middleware::from_fn_with_state(metrics, track))
}

async fn render(State(m): State<Arc<Metrics>>) -> Response {
    let ct = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, ct)], m.render()).into_response()
}

async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let secs = started.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    m.http_requests
        .get_or_create(&HttpLabels {
            route: route.clone(),
            method,
            status,
        })
        .inc();
    m.http_seconds
        .get_or_create(&RouteLabels { route })
        .observe(secs);
    resp
}

async fn get_faults(State(f): State<FaultSwitch>) -> Json<Faults> {
    Json(f.get())
}

async fn set_faults(
    State(f): State<FaultSwitch>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| invalid(format!("could not read the request body: {e}")))?;
    let faults: Faults =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("invalid faults: {e}")))?;
    tracing::warn!(?faults, "fault injection changed");
    f.set(faults.clone());
    Ok((StatusCode::OK, Json(faults)).into_response())
}
