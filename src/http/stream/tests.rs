//! The stream route through `oneshot` with an in-memory node whose applied offset
//! moves when a test appends.

use super::*;
use crate::api::{ReadMessage, ReadResult, Status, WriteRequest, WriteResult};
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use std::sync::Mutex;
use tower::ServiceExt;

/// A node holding its committed log in memory.
struct MemNode {
    log: Mutex<Vec<String>>,
    /// Offsets below this were trimmed.
    first: std::sync::atomic::AtomicU64,
    /// Reads served, by the hub and the streams together.
    reads: std::sync::atomic::AtomicU64,
    applied: watch::Sender<u64>,
    stop: watch::Sender<bool>,
}

impl MemNode {
    fn new(n: usize) -> Arc<Self> {
        let node = Arc::new(MemNode {
            log: Mutex::new(Vec::new()),
            first: Default::default(),
            reads: Default::default(),
            applied: watch::channel(0).0,
            stop: watch::channel(false).0,
        });
        node.append(n);
        node
    }

    fn append(&self, n: usize) {
        let mut log = self.log.lock().unwrap();
        for _ in 0..n {
            let i = log.len();
            log.push(format!("m{i}"));
        }
        self.applied.send_replace(log.len() as u64);
    }
}

impl NodeApi for MemNode {
    async fn write(&self, _req: WriteRequest) -> Result<WriteResult, ApiError> {
        Err(ApiError::Internal("not used".into()))
    }
    async fn read(&self, req: ReadRequest) -> Result<ReadResult, ApiError> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let first_offset = self.first.load(std::sync::atomic::Ordering::Relaxed);
        if req.from < first_offset {
            return Err(ApiError::OffsetTrimmed { first_offset });
        }
        let log = self.log.lock().unwrap();
        let from = (req.from as usize).min(log.len());
        let end = (from + req.limit.unwrap_or(100)).min(log.len());
        let messages = (from..end)
            .map(|i| ReadMessage {
                offset: i as u64,
                message: log[i].clone(),
            })
            .collect();
        Ok(ReadResult {
            messages,
            next_offset: end as u64,
        })
    }
    async fn status(&self) -> Result<Status, ApiError> {
        Err(ApiError::Internal("not used".into()))
    }
    fn voter_count(&self) -> usize {
        1
    }
    fn applied_offsets(&self) -> Option<watch::Receiver<u64>> {
        Some(self.applied.subscribe())
    }
    async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

fn limits() -> StreamLimits {
    StreamLimits {
        max_streams: 4,
        buffer_bytes: 1 << 20,
        stall: Duration::from_secs(30),
        page: 3,
    }
}

fn get(path: &str, last_id: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().uri(path);
    if let Some(id) = last_id {
        b = b.header("last-event-id", id);
    }
    b.body(Body::empty()).unwrap()
}

/// One parsed SSE event: its `event`, `id` and `data` fields.
#[derive(Debug, Default)]
struct Sse {
    event: Option<String>,
    id: Option<u64>,
    data: serde_json::Value,
}

/// Reads the body until `n` events (comments skipped) or its end, with a deadline.
async fn events(body: &mut Body, n: usize) -> Vec<Sse> {
    let mut text = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("events within 10 s");
        let Some(frame) = frame else { break };
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        text.push_str(std::str::from_utf8(&data).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            if let Some(ev) = parse(&block) {
                out.push(ev);
            }
        }
    }
    out
}

fn parse(block: &str) -> Option<Sse> {
    let mut ev = Sse::default();
    let mut any = false;
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            ev.event = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("id:") {
            ev.id = Some(v.trim().parse().unwrap());
        } else if let Some(v) = line.strip_prefix("data:") {
            ev.data = serde_json::from_str(v.trim()).unwrap();
        } else {
            continue;
        }
        any = true;
    }
    any.then_some(ev)
}

fn assert_run(evs: &[Sse], from: u64) {
    for (k, ev) in evs.iter().enumerate() {
        let off = from + k as u64;
        assert_eq!(ev.id, Some(off), "event {k}: {ev:?}");
        assert_eq!(ev.data["offset"], off);
        assert_eq!(ev.data["message"], format!("m{off}"));
    }
}

#[tokio::test]
async fn events_come_in_order_from_the_start_and_follow_new_messages() {
    let node = MemNode::new(5);
    let app = router(node.clone(), limits());
    let resp = app
        .oneshot(get("/v1/messages/stream?from=2", None))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/event-stream",
        "SSE content type"
    );
    let mut body = resp.into_body();
    let first = events(&mut body, 3).await;
    assert_run(&first, 2);
    node.append(7);
    let more = events(&mut body, 7).await;
    assert_run(&more, 5);
}

#[tokio::test]
async fn a_stream_from_the_future_waits_for_its_offset() {
    let node = MemNode::new(1);
    let app = router(node.clone(), limits());
    let resp = app
        .oneshot(get("/v1/messages/stream?from=4", None))
        .await
        .unwrap();
    let mut body = resp.into_body();
    node.append(5);
    assert_run(&events(&mut body, 2).await, 4);
}

#[tokio::test]
async fn last_event_id_resumes_after_it_and_wins_over_from() {
    let node = MemNode::new(10);
    let app = router(node.clone(), limits());
    let resp = app
        .clone()
        .oneshot(get("/v1/messages/stream?from=1", Some("6")))
        .await
        .unwrap();
    assert_run(&events(&mut resp.into_body(), 3).await, 7);
    for (path, id) in [
        ("/v1/messages/stream", Some("x")),
        ("/v1/messages/stream?from=-1", None),
        ("/v1/messages/stream", Some("18446744073709551615")),
    ] {
        let resp = app.clone().oneshot(get(path, id)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path} {id:?}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "invalid_request");
    }
}

#[tokio::test]
async fn streams_beyond_the_cap_get_503_until_one_closes() {
    let node = MemNode::new(1);
    let app = router(
        node.clone(),
        StreamLimits {
            max_streams: 2,
            ..limits()
        },
    );
    let a = app
        .clone()
        .oneshot(get("/v1/messages/stream", None))
        .await
        .unwrap();
    let b = app
        .clone()
        .oneshot(get("/v1/messages/stream", None))
        .await
        .unwrap();
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    let c = app
        .clone()
        .oneshot(get("/v1/messages/stream", None))
        .await
        .unwrap();
    assert_eq!(c.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(c.headers()[header::RETRY_AFTER], "1");
    let body = c.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "too_many_streams");
    drop(a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = app
            .clone()
            .oneshot(get("/v1/messages/stream", None))
            .await
            .unwrap();
        if d.status() == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream's slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(b);
}

#[tokio::test]
async fn a_reader_that_stalls_is_cut_off_with_a_final_event() {
    let node = MemNode::new(0);
    let app = router(
        node.clone(),
        StreamLimits {
            buffer_bytes: 200,
            stall: Duration::from_millis(100),
            ..limits()
        },
    );
    let resp = app.oneshot(get("/v1/messages/stream", None)).await.unwrap();
    let open = node.applied.receiver_count();
    node.append(100);
    // Nothing reads the body while the task fills the budget and gives up (its
    // end drops the stream's subscription to the applied offset).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.applied.receiver_count() >= open {
        assert!(tokio::time::Instant::now() < deadline, "never cut off");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut body = resp.into_body();
    let evs = events(&mut body, 1000).await;
    let (last, delivered) = evs.split_last().expect("a final event");
    assert!(
        !delivered.is_empty() && delivered.len() < 100,
        "{}",
        delivered.len()
    );
    assert_run(delivered, 0);
    assert_eq!(last.event.as_deref(), Some("end"), "{last:?}");
    assert_eq!(last.data["error"]["code"], "slow_reader");
    assert_eq!(last.data["next_offset"], delivered.len() as u64);
    assert!(
        body.frame().await.is_none(),
        "the stream ends after the final event"
    );
}

#[tokio::test]
async fn the_node_stopping_ends_the_stream_with_a_final_event() {
    let node = MemNode::new(2);
    let app = router(node.clone(), limits());
    let resp = app.oneshot(get("/v1/messages/stream", None)).await.unwrap();
    let mut body = resp.into_body();
    assert_run(&events(&mut body, 2).await, 0);
    node.stop.send_replace(true);
    let evs = events(&mut body, 10).await;
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].event.as_deref(), Some("end"));
    assert_eq!(evs[0].data["error"]["code"], "shutting_down");
    assert_eq!(evs[0].data["next_offset"], 2);
}

#[tokio::test]
async fn a_stream_from_below_the_first_offset_is_410_before_it_starts() {
    let node = MemNode::new(10);
    node.first.store(5, std::sync::atomic::Ordering::Relaxed);
    let app = router(node.clone(), limits());
    for (path, last_id) in [
        ("/v1/messages/stream?from=2", None),
        ("/v1/messages/stream", Some("3")),
    ] {
        let resp = app.clone().oneshot(get(path, last_id)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::GONE, "{path} {last_id:?}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "offset_trimmed");
        assert_eq!(v["error"]["first_offset"], 5);
    }
    let ok = app
        .oneshot(get("/v1/messages/stream?from=5", None))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn caught_up_streams_cost_no_reads_of_their_own() {
    const STREAMS: usize = 16;
    const APPENDS: u64 = 50;
    let node = MemNode::new(0);
    let app = router(
        node.clone(),
        StreamLimits {
            max_streams: STREAMS,
            ..limits()
        },
    );
    let mut bodies = Vec::new();
    for _ in 0..STREAMS {
        let resp = app
            .clone()
            .oneshot(get("/v1/messages/stream", None))
            .await
            .unwrap();
        bodies.push(resp.into_body());
    }
    node.append(1);
    for body in &mut bodies {
        assert_run(&events(body, 1).await, 0);
    }
    let before = node.reads.load(std::sync::atomic::Ordering::Relaxed);
    // Each append lands while the streams still hold the previous page: the case
    // where a stream used to read the node itself because `applied` had moved on.
    for _ in 0..APPENDS {
        node.append(1);
        tokio::task::yield_now().await;
    }
    for body in &mut bodies {
        assert_run(&events(body, APPENDS as usize).await, 1);
    }
    let reads = node.reads.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(
        reads <= 2 * APPENDS,
        "{reads} reads for {APPENDS} applies followed by {STREAMS} streams"
    );
}

/// Appends `n` messages that are trimmed (first offset moved past them) before the
/// hub or any stream can read them, then `after` readable ones.
fn append_trimmed_then(node: &MemNode, n: usize, after: usize) {
    {
        let mut log = node.log.lock().unwrap();
        for _ in 0..n {
            let i = log.len();
            log.push(format!("m{i}"));
        }
        node.first
            .store(log.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
    node.append(after);
}

async fn next_page(rx: &mut broadcast::Receiver<Arc<tail::Page>>) -> Arc<tail::Page> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a page within 10 s")
        .expect("the hub runs")
}

#[tokio::test]
async fn the_hub_pages_on_past_a_trim() {
    let node = MemNode::new(2);
    let hub = tail::start(node.clone(), node.applied.subscribe(), 3);
    let mut pages = hub.subscribe();
    // Let the hub task start (and take the applied offset as its position).
    tokio::task::yield_now().await;
    node.append(1);
    let page = next_page(&mut pages).await;
    assert_eq!((page.first, page.end()), (2, 3));
    append_trimmed_then(&node, 3, 3);
    let page = next_page(&mut pages).await;
    assert_eq!((page.first, page.end()), (6, 9), "the page after the trim");
}

#[tokio::test]
async fn a_trim_past_a_following_stream_ends_it_with_offset_trimmed() {
    let node = MemNode::new(2);
    let app = router(node.clone(), limits());
    let resp = app.oneshot(get("/v1/messages/stream", None)).await.unwrap();
    let mut body = resp.into_body();
    assert_run(&events(&mut body, 2).await, 0);
    append_trimmed_then(&node, 4, 1);
    let evs = events(&mut body, 10).await;
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].event.as_deref(), Some("end"));
    assert_eq!(evs[0].data["error"]["code"], "offset_trimmed");
    assert_eq!(evs[0].data["next_offset"], 2);
}
