//! Request extractors whose rejections are [`ApiError`]s, so that malformed input
//! gets the API's JSON error shape instead of axum's plain-text rejections (axum
//! `examples/error-handling`).
//!
//! Invariants:
//! - A body larger than [`HttpLimits::max_body_bytes`] is refused with 413 before
//!   (Content-Length) or while (streamed) it is read; it is never buffered whole.
//! - The body is parsed as JSON whatever its Content-Type (`curl -d` sends a form
//!   type), so only its content decides.
//! - A query parameter given twice is a 400, not "last one wins".

use axum::async_trait;
use axum::body::{Body, Bytes};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Query, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use futures::StreamExt;
use serde_json::Value;

use super::body::{BatchBody, WriteBody};
use super::HttpLimits;
use crate::api::{ApiError, WriteConcern};

/// A JSON body, read with the size limit from [`HttpLimits`].
pub struct ApiJson(pub Value);

/// A single write's body (`POST /v1/messages`), read with the size limit from
/// [`HttpLimits`] and parsed without a `Value` (see [`super::body`]).
pub struct WriteJson(pub WriteBody);

/// A batch's body, read with the batch size limit from [`HttpLimits`] and parsed
/// without a `Value`, keeping at most `write.max_batch_messages` strings.
pub struct BatchJson(pub BatchBody);

#[async_trait]
impl<S> FromRequest<S> for BatchJson
where
    S: Send + Sync,
    HttpLimits: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limits = HttpLimits::from_ref(state);
        let max = limits.max_batch_body_bytes();
        let too_large = || {
            ApiError::BatchTooLarge(format!(
                "batch body is larger than {max} bytes (write.max_batch_bytes is {})",
                limits.max_batch_bytes
            ))
        };
        let bytes = read_body(req, max, &limits, too_large).await?;
        BatchBody::parse(&bytes, limits.max_batch_messages).map(BatchJson)
    }
}

#[async_trait]
impl<S> FromRequest<S> for WriteJson
where
    S: Send + Sync,
    HttpLimits: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ApiBytes(bytes) = ApiBytes::from_request(req, state).await?;
        WriteBody::parse(&bytes).map(WriteJson)
    }
}

#[async_trait]
impl<S> FromRequest<S> for ApiJson
where
    S: Send + Sync,
    HttpLimits: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ApiBytes(bytes) = ApiBytes::from_request(req, state).await?;
        json_value(&bytes).map(ApiJson)
    }
}

/// A body as JSON, or the API's 400.
fn json_value(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("request body is not valid JSON: {e}")))
}

/// A raw body (possibly empty), read with the size limit and the body timeout
/// from [`HttpLimits`]; every failure is an [`ApiError`].
pub struct ApiBytes(pub Bytes);

#[async_trait]
impl<S> FromRequest<S> for ApiBytes
where
    S: Send + Sync,
    HttpLimits: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limits = HttpLimits::from_ref(state);
        let max = limits.max_body_bytes();
        read_body(req, max, &limits, || too_large(&limits))
            .await
            .map(ApiBytes)
    }
}

/// The body, at most `max` bytes (`too_large` beyond), within the body timeout.
async fn read_body(
    req: Request,
    max: usize,
    limits: &HttpLimits,
    too_large: impl Fn() -> ApiError,
) -> Result<Bytes, ApiError> {
    if declared_length(req.headers()).is_some_and(|len| len > max) {
        return Err(too_large());
    }
    let timeout = std::time::Duration::from_millis(limits.body_timeout_ms);
    tokio::time::timeout(timeout, read_limited(req.into_body(), max, &too_large))
        .await
        .map_err(|_| {
            ApiError::RequestTimeout(format!("request body not received within {timeout:?}"))
        })?
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn too_large(limits: &HttpLimits) -> ApiError {
    ApiError::PayloadTooLarge {
        limit: limits.max_message_bytes,
    }
}

/// Reads the body chunk by chunk, failing as soon as it grows past `max`. A body
/// that arrives in one chunk (a small write usually does) is returned as that
/// chunk, without a copy; only a second chunk starts a buffer.
async fn read_limited(
    body: Body,
    max: usize,
    too_large: &impl Fn() -> ApiError,
) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| invalid(format!("could not read request body: {e}")))?;
        let held = first.as_ref().map_or(0, Bytes::len) + buf.len();
        if held + chunk.len() > max {
            return Err(too_large());
        }
        match first.take() {
            None if buf.is_empty() => first = Some(chunk),
            None => buf.extend_from_slice(&chunk),
            Some(f) => {
                buf.reserve(f.len() + chunk.len());
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(buf)))
}

/// Header naming a client-chosen key that makes a write idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Header making a write conditional on the log's next offset.
pub const IF_NEXT_OFFSET: &str = "if-next-offset";

/// Only the headers a write reads ([`IF_NEXT_OFFSET`] and [`IDEMPOTENCY_KEY`],
/// every value of each, unjudged), copied out of the request instead of cloning
/// its whole header map; empty (no allocation) when neither is sent.
pub struct WriteHeaders(pub HeaderMap);

#[async_trait]
impl<S: Send + Sync> FromRequestParts<S> for WriteHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let mut out = HeaderMap::new();
        for name in [IF_NEXT_OFFSET, IDEMPOTENCY_KEY] {
            for value in parts.headers.get_all(name) {
                out.append(name, value.clone());
            }
        }
        Ok(WriteHeaders(out))
    }
}

/// The query string as name/value pairs, decoded.
pub struct ApiQuery(pub QueryParams);

/// Decoded query parameters; see [`QueryParams::get`].
pub struct QueryParams(Vec<(String, String)>);

#[async_trait]
impl<S: Send + Sync> FromRequestParts<S> for ApiQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| invalid(format!("bad query string: {}", e.body_text())))?;
        Ok(ApiQuery(QueryParams(pairs)))
    }
}

impl QueryParams {
    /// The value of `name`, if given once; a 400 if given more than once.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut found = self
            .0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let first = found.next();
        if found.next().is_some() {
            return Err(invalid(format!(
                "query parameter {name} is given more than once"
            )));
        }
        Ok(first)
    }

    /// `name` parsed as a non-negative integer, if given.
    pub fn get_u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)?.map(|v| parse_u64(name, v)).transpose()
    }
}

/// Parses a non-negative integer parameter, naming it in the error.
pub fn parse_u64(name: &str, v: &str) -> Result<u64, ApiError> {
    v.trim()
        .parse()
        .map_err(|_| invalid(format!("{name} must be a non-negative integer, got {v:?}")))
}

/// Parses `w` given as text (query string, or a JSON string).
pub fn parse_w_str(v: &str) -> Result<WriteConcern, ApiError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "majority" => Ok(WriteConcern::Majority),
        "all" => Ok(WriteConcern::All),
        t => t.parse().map(WriteConcern::Count).map_err(|_| bad_w(v)),
    }
}

/// The 400 for a `w` that is not one (`v` as the client wrote it).
pub fn bad_w(v: &str) -> ApiError {
    invalid(format!(
        "w must be an integer, \"majority\" or \"all\", got {v}"
    ))
}

/// Checks a count `w` against the number of voters (1..=voters).
pub fn check_w(w: WriteConcern, voters: usize) -> Result<(), ApiError> {
    match w {
        WriteConcern::Count(n) if n < 1 || n > voters => Err(invalid(format!(
            "w must be between 1 and {voters} (the number of voters), got {n}"
        ))),
        _ => Ok(()),
    }
}

/// Shorthand for a 400 `invalid_request`.
pub fn invalid(message: String) -> ApiError {
    ApiError::InvalidRequest(message)
}
