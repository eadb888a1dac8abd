//! `GET /v1/messages/stream?from=n`: committed messages as Server-Sent Events
//! (SPEC §8), one event per message: `id: <offset>`, `data: {"offset","message"}`.
//!
//! Why this shape: a subscriber costs no polling. The [`tail`] hub waits on the
//! node's applied-offset watch (published by the controller after each apply),
//! reads each new page of this node's committed copy once through the ordinary
//! local read, and broadcasts it. A per-stream task first catches up by reading
//! the node itself, then follows the hub's pages, and queues events for the
//! response body. Serving the local copy means a stream keeps going across leader
//! changes: a follower applies what any leader commits.
//!
//! Invariants:
//! - Events go out in offset order with no gaps and no repeats: each event's offset
//!   is exactly the previous one plus one, starting at `from` (or at
//!   `Last-Event-ID + 1`, which wins over `from`, as a reconnecting browser sends
//!   both). A page that does not start where the stream stands ends the stream
//!   with a final event instead of skipping.
//! - Bounded: at most `limits.max_streams` streams at once (one more gets 503
//!   `too_many_streams` with `Retry-After`); each queues at most
//!   `limits.stream_buffer_bytes` of events (one event always fits). A client whose
//!   queue stays full for `limits.stream_stall_timeout_ms` is a slow reader: its
//!   stream ends with a final `event: end` saying why and where to resume.
//! - A comment line at least every [`KEEP_ALIVE`] while idle.
//! - The node stopping ends every stream with a final `event: end`
//!   (`shutting_down`); the client resumes elsewhere with `Last-Event-ID`.
//! - A client that goes away frees its slot at once (the task sees the queue close).
//! - Known limit: a client that stops reading entirely gets its final event queued
//!   behind what the kernel already buffers; its stream slot and queue are freed at
//!   the cut-off, but the TCP connection (one `limits.http_max_connections` slot)
//!   stays until the client closes it or the node stops (hyper has no write
//!   timeout).

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Map};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

mod tail;

use super::error::error_response;
use super::extract::{invalid, parse_u64, ApiQuery};
use crate::api::{ApiError, Consistency, NodeApi, ReadRequest};
use crate::config::Config;

/// Longest quiet time on a stream before a keep-alive comment (SPEC: at most 15 s).
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Events queued per stream at most, whatever their size (the bytes bound is
/// usually the tighter one).
const QUEUE_EVENTS: usize = 1024;

/// The header a reconnecting SSE client sends with the last id it received.
const LAST_EVENT_ID: &str = "last-event-id";

/// What bounds streams, from `[limits]` and `[read]`.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    pub max_streams: usize,
    pub buffer_bytes: usize,
    pub stall: Duration,
    /// Messages read per local read.
    pub page: usize,
}

impl StreamLimits {
    pub fn from_config(cfg: &Config) -> Self {
        StreamLimits {
            max_streams: cfg.limits.max_streams,
            buffer_bytes: cfg.limits.stream_buffer_bytes,
            stall: Duration::from_millis(cfg.limits.stream_stall_timeout_ms),
            page: cfg.read.max_limit.clamp(1, QUEUE_EVENTS),
        }
    }
}

struct StreamState<N> {
    node: Arc<N>,
    limits: StreamLimits,
    /// One permit per open stream.
    slots: Arc<Semaphore>,
    /// The node's applied offset and the tail hub; `None`: the node cannot stream.
    tail: Option<(watch::Receiver<u64>, broadcast::Sender<Arc<tail::Page>>)>,
}

impl<N> Clone for StreamState<N> {
    fn clone(&self) -> Self {
        StreamState {
            node: self.node.clone(),
            limits: self.limits,
            slots: self.slots.clone(),
            tail: self.tail.clone(),
        }
    }
}

/// The stream route, to be merged into the client API router. Starts the tail
/// hub, so it must be called within a Tokio runtime.
pub fn router<N: NodeApi>(node: Arc<N>, limits: StreamLimits) -> Router {
    let slots = Arc::new(Semaphore::new(limits.max_streams.max(1)));
    let tail = node.applied_offsets().map(|applied| {
        let hub = tail::start(node.clone(), applied.clone(), limits.page);
        (applied, hub)
    });
    Router::new()
        .route("/v1/messages/stream", get(stream::<N>))
        .with_state(StreamState {
            node,
            limits,
            slots,
            tail,
        })
}

async fn stream<N: NodeApi>(
    State(st): State<StreamState<N>>,
    ApiQuery(query): ApiQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let from = match last_event_id(&headers)? {
        Some(id) => id
            .checked_add(1)
            .ok_or_else(|| invalid("Last-Event-ID is the largest offset there is".into()))?,
        None => query.get_u64("from")?.unwrap_or(0),
    };
    let (applied, hub) = st
        .tail
        .clone()
        .ok_or_else(|| ApiError::Internal("this node cannot stream".into()))?;
    let Ok(slot) = st.slots.clone().try_acquire_owned() else {
        return Ok(too_many_streams(st.limits.max_streams));
    };
    // SPEC §8: a `from` below the first retained offset is 410 `offset_trimmed`
    // before the stream starts (later trims end it with an `end` event instead).
    let probe = ReadRequest {
        from,
        limit: Some(1),
        consistency: Consistency::Local,
        wait_ms: None,
    };
    if let Err(e @ ApiError::OffsetTrimmed { .. }) = st.node.read(probe).await {
        return Err(e);
    }
    let (tx, rx) = mpsc::channel(QUEUE_EVENTS);
    let (farewell_tx, farewell_rx) = oneshot::channel();
    let budget = Arc::new(Semaphore::new(st.limits.buffer_bytes.max(1)));
    let task = Follower {
        node: st.node.clone(),
        applied,
        pages: hub.subscribe(),
        next: from,
        tx,
        budget,
        limits: st.limits,
        _slot: slot,
    };
    tokio::spawn(task.run(farewell_tx));
    let chunks = ReceiverStream::new(rx)
        .map(|(chunk, _budget): Queued| chunk)
        .chain(futures::stream::once(farewell_rx).filter_map(|r| async { r.ok() }))
        .map(Ok::<_, Infallible>);
    let resp = Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        // Reverse proxies must pass events on at once.
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(chunks))
        .expect("a response from valid parts");
    Ok(resp)
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(LAST_EVENT_ID) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| invalid("Last-Event-ID must be an offset".into()))?;
    parse_u64("Last-Event-ID", v.trim()).map(Some)
}

fn too_many_streams(max: usize) -> Response {
    let message = format!("{max} streams are open on this node; retry later or elsewhere");
    let mut resp = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_streams",
        &message,
        Map::new(),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Queued events (one or a page of them, framed) and the share of the stream's
/// byte budget they hold until the response body takes them.
type Queued = (Bytes, OwnedSemaphorePermit);

/// One event as SSE text: `id: <offset>`, `data: <json>`, blank line.
pub(crate) fn frame(offset: u64, data: &str) -> String {
    format!("id: {offset}\ndata: {data}\n\n")
}

/// The comment sent on a quiet stream.
const KEEP_ALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

/// Why a stream ended.
enum End {
    /// The client closed the connection: nothing more to say.
    ClientGone,
    /// Tell the client, in a final event.
    Say(&'static str, String),
}

/// The task behind one stream.
struct Follower<N> {
    node: Arc<N>,
    applied: watch::Receiver<u64>,
    pages: broadcast::Receiver<Arc<tail::Page>>,
    /// The offset of the next event.
    next: u64,
    tx: mpsc::Sender<Queued>,
    budget: Arc<Semaphore>,
    limits: StreamLimits,
    _slot: OwnedSemaphorePermit,
}

impl<N: NodeApi> Follower<N> {
    async fn run(mut self, farewell: oneshot::Sender<Bytes>) {
        if let End::Say(code, message) = self.follow().await {
            tracing::debug!(code, next = self.next, "a stream ended");
            let body = json!({
                "error": { "code": code, "message": message },
                "next_offset": self.next,
            });
            let end = format!("event: end\ndata: {body}\n\n");
            let _ = farewell.send(Bytes::from(end));
        }
        // Dropping `tx` lets the body drain the queue, then send the farewell.
    }

    async fn follow(&mut self) -> End {
        // Read from the node only when the hub cannot be trusted to carry us on:
        // at the start, after missing pages, and after a quiet spell (the safety
        // net for a page the hub failed to read). Re-reading whenever `applied`
        // had moved on turned every apply into one read per stream under load.
        let mut catch_up = true;
        loop {
            if catch_up {
                if let Err(end) = self.catch_up().await {
                    return end;
                }
                catch_up = false;
            }
            let page = tokio::select! {
                p = self.pages.recv() => p,
                _ = self.node.stopped() => return shutting_down(),
                _ = self.tx.closed() => return End::ClientGone,
                _ = tokio::time::sleep(KEEP_ALIVE) => {
                    let ping = Bytes::from_static(KEEP_ALIVE_COMMENT);
                    if let Err(end) = self.enqueue(ping).await {
                        return end;
                    }
                    catch_up = true;
                    continue;
                }
            };
            let page = match page {
                Ok(page) => page,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    catch_up = true;
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return shutting_down(),
            };
            if page.first > self.next {
                // Pages were missed: read the gap (and more) from the node.
                if let Err(end) = self.catch_up().await {
                    return end;
                }
            }
            if page.first <= self.next && self.next < page.end() {
                let chunk = page.from(self.next);
                if let Err(end) = self.enqueue(chunk).await {
                    return end;
                }
                self.next = page.end();
            }
        }
    }

    /// Reads from the node until the stream stands at the applied offset.
    async fn catch_up(&mut self) -> Result<(), End> {
        while self.next < *self.applied.borrow() {
            if !self.send_page().await? {
                break;
            }
        }
        Ok(())
    }

    /// Reads one page at `next` and queues it; `Ok(false)` when there was nothing.
    async fn send_page(&mut self) -> Result<bool, End> {
        let req = ReadRequest {
            from: self.next,
            limit: Some(self.limits.page),
            consistency: Consistency::Local,
            wait_ms: None,
        };
        let page = match self.node.read(req).await {
            Ok(p) => p,
            Err(ApiError::ShuttingDown) => return Err(shutting_down()),
            Err(e) => return Err(End::Say(e.code(), e.to_string())),
        };
        if page.messages.is_empty() && page.next_offset <= self.next {
            return Ok(false);
        }
        for m in page.messages {
            if m.offset != self.next {
                let msg = format!("expected offset {}, the log has {}", self.next, m.offset);
                return Err(End::Say("offset_gap", msg));
            }
            let data = serde_json::to_string(&m).expect("a message serializes");
            self.enqueue(Bytes::from(frame(m.offset, &data))).await?;
            self.next += 1;
        }
        if page.next_offset > self.next {
            let msg = format!("no message at offset {}", self.next);
            return Err(End::Say("offset_gap", msg));
        }
        Ok(true)
    }

    /// Queues one event, waiting for room at most `limits.stall`.
    async fn enqueue(&mut self, chunk: Bytes) -> Result<(), End> {
        let want = chunk.len().clamp(1, self.limits.buffer_bytes.max(1));
        let want = u32::try_from(want).unwrap_or(u32::MAX);
        let stall = tokio::time::sleep(self.limits.stall);
        tokio::pin!(stall);
        let bytes = tokio::select! {
            p = self.budget.clone().acquire_many_owned(want) => p.expect("the budget is never closed"),
            _ = &mut stall => return Err(slow_reader(self.limits.stall)),
            _ = self.tx.closed() => return Err(End::ClientGone),
        };
        let slot = tokio::select! {
            s = self.tx.reserve() => s.map_err(|_| End::ClientGone)?,
            _ = &mut stall => return Err(slow_reader(self.limits.stall)),
        };
        slot.send((chunk, bytes));
        Ok(())
    }
}

fn shutting_down() -> End {
    End::Say(
        "shutting_down",
        "the node is stopping; resume on another node with Last-Event-ID".into(),
    )
}

fn slow_reader(stall: Duration) -> End {
    End::Say(
        "slow_reader",
        format!(
            "the client read nothing for {} ms while events waited; resume from next_offset",
            stall.as_millis()
        ),
    )
}

#[cfg(test)]
mod tests;
