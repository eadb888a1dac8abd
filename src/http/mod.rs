//! The HTTP/JSON client API (SPEC §3), as thin adapters over [`NodeApi`].
//!
//! Why it is generic over [`NodeApi`]: handlers only decode, call the node and
//! encode, so they can be tested with a fake node through `Router::oneshot`, and no
//! consensus logic can creep in here.
//!
//! Invariants:
//! - Every error, including malformed JSON, oversized bodies, unknown routes (404)
//!   and wrong methods (405), is `{"error": {"code", "message"}}` (see [`error`]).
//! - Request limits (message size, read page size, long-poll wait) come from
//!   [`HttpLimits`], i.e. from the config, and are enforced before the node is
//!   called.
//! - No request timeout layer: a write legitimately waits up to its `timeout_ms`
//!   (or forever with 0), and reads long-poll up to `wait_ms`. Receiving the
//!   request is bounded instead: headers by the server ([`serve`]), the body by
//!   `body_timeout_ms` (408).

pub mod auth;
mod body;
mod cluster;
pub mod error;
pub mod extract;
mod handlers;
mod lifecycle;
pub mod ops;
pub mod serve;
pub mod stream;
pub mod ui;

use axum::extract::FromRef;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

use crate::api::NodeApi;
use crate::config::Config;

/// Slack on top of the worst-case JSON size of a maximal message: the other
/// fields, whitespace and the object syntax.
const BODY_OVERHEAD_BYTES: usize = 64 * 1024;

/// Worst-case growth of a string when JSON-escaped (`\u0000` is 6 bytes for 1).
const JSON_ESCAPE_FACTOR: usize = 6;

/// Request limits the HTTP layer enforces, taken from the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest message, in bytes of UTF-8 text (`write.max_message_bytes`).
    pub max_message_bytes: usize,
    /// Read page size when the request names no `limit` (`read.default_limit`).
    pub default_read_limit: usize,
    /// Largest read page; larger `limit`s are clamped (`read.max_limit`).
    pub max_read_limit: usize,
    /// Longest long-poll; larger `wait_ms` are clamped (`read.max_wait_ms`).
    pub max_wait_ms: u64,
    /// Time allowed to receive a whole request body (`limits.http_body_timeout_ms`).
    pub body_timeout_ms: u64,
    /// `Retry-After` of a 503, in whole seconds: one election timeout
    /// (`raft.election_timeout_max_ms`, rounded up), when a new leader is known.
    pub retry_after_s: u64,
    /// Most messages in one batch (`write.max_batch_messages`).
    pub max_batch_messages: usize,
    /// Most bytes of messages in one batch (`write.max_batch_bytes`).
    pub max_batch_bytes: usize,
}

impl HttpLimits {
    /// The limits a config asks for.
    pub fn from_config(cfg: &Config) -> Self {
        HttpLimits {
            max_message_bytes: cfg.write.max_message_bytes,
            default_read_limit: cfg.read.default_limit,
            max_read_limit: cfg.read.max_limit,
            max_wait_ms: cfg.read.max_wait_ms,
            body_timeout_ms: cfg.limits.http_body_timeout_ms,
            retry_after_s: cfg.raft.election_timeout_max_ms.div_ceil(1000).max(1),
            max_batch_messages: cfg.write.max_batch_messages,
            max_batch_bytes: cfg.write.max_batch_bytes,
        }
    }

    /// Largest batch request body read: a maximal batch fully escaped, the
    /// quotes and commas of its strings, plus slack.
    pub fn max_batch_body_bytes(&self) -> usize {
        self.max_batch_bytes
            .saturating_mul(JSON_ESCAPE_FACTOR)
            .saturating_add(self.max_batch_messages.saturating_mul(4))
            .saturating_add(BODY_OVERHEAD_BYTES)
    }

    /// Largest request body read: a maximal message fully escaped, plus slack.
    /// The message itself is checked against `max_message_bytes` after decoding.
    pub fn max_body_bytes(&self) -> usize {
        self.max_message_bytes
            .saturating_mul(JSON_ESCAPE_FACTOR)
            .saturating_add(BODY_OVERHEAD_BYTES)
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits::from_config(&Config::default())
    }
}

/// What every handler gets: the node and the limits.
pub struct AppState<N> {
    pub node: Arc<N>,
    pub limits: HttpLimits,
}

impl<N> Clone for AppState<N> {
    fn clone(&self) -> Self {
        AppState {
            node: Arc::clone(&self.node),
            limits: self.limits,
        }
    }
}

impl<N> FromRef<AppState<N>> for HttpLimits {
    fn from_ref(state: &AppState<N>) -> Self {
        state.limits
    }
}

/// The client API router. Other routes (cluster, metrics) can be added with
/// `Router::merge` as long as they set no fallback of their own; they then get
/// the JSON 404 but axum's plain 405.
pub fn router<N: NodeApi>(node: Arc<N>, limits: HttpLimits) -> Router {
    use handlers::*;
    let retry_after = axum::http::HeaderValue::from(limits.retry_after_s.max(1));
    let set_retry_after = move |resp| {
        let value = retry_after.clone();
        async move { error::set_retry_after(resp, value) }
    };
    Router::new()
        .route(
            "/v1/messages",
            post(post_message::<N>).get(get_messages::<N>),
        )
        .route("/v1/messages/batch", post(post_batch::<N>))
        .route("/v1/log/trim", post(lifecycle::trim::<N>))
        .route("/v1/cursors", get(lifecycle::list_cursors::<N>))
        .route(
            "/v1/cursors/:name",
            get(lifecycle::get_cursor::<N>)
                .put(lifecycle::put_cursor::<N>)
                .delete(lifecycle::delete_cursor::<N>),
        )
        .route("/api/v1/append", post(compat_append::<N>))
        .route("/api/v1/messages", get(compat_messages::<N>))
        .route("/v1/status", get(status::<N>))
        .route("/health", get(health))
        .route("/ready", get(ready::<N>))
        .route(
            "/v1/cluster/members",
            get(cluster::list::<N>).post(cluster::add::<N>),
        )
        .route(
            "/v1/cluster/members/:node_id",
            axum::routing::delete(cluster::remove::<N>),
        )
        .route(
            "/v1/cluster/transfer-leadership",
            post(cluster::transfer::<N>),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(set_retry_after))
        .with_state(AppState { node, limits })
}

#[cfg(test)]
mod tests;
