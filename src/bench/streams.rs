//! `raftlog bench --streams N`: N live subscriptions (`GET /v1/messages/stream`)
//! open while the writers write, to measure what streams cost the writers and how
//! late events arrive.
//!
//! Delivery lag is measured from the moment a writer got its acknowledgement (the
//! write is committed and applied on the leader by then) to the moment a stream
//! received that offset's event; an event that arrives before its ack was recorded
//! counts as 0. Only every [`SAMPLE_EVERY`]th stream parses event ids (the others
//! only drain their bytes), so the bench client itself is not the bottleneck.

use bytes::Bytes;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

use super::{request, Histogram, Plan};

/// One stream in this many measures lag.
pub const SAMPLE_EVERY: usize = 50;

/// Ack times of this run's writes, by offset, and what the streams saw.
#[derive(Default)]
pub struct Probe {
    acks: Mutex<HashMap<u64, Instant>>,
    pub opened: AtomicU64,
    pub events: AtomicU64,
    pub bytes: AtomicU64,
    pub failures: AtomicU64,
}

impl Probe {
    pub fn ack(&self, offset: u64) {
        self.acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(offset, Instant::now());
    }

    fn lag_us(&self, offset: u64, now: Instant) -> Option<u64> {
        let acks = self.acks.lock().unwrap_or_else(|e| e.into_inner());
        let at = acks.get(&offset)?;
        Some(now.saturating_duration_since(*at).as_micros() as u64)
    }
}

/// Opens stream `i` from `from` and reads it until `done` turns true.
pub async fn stream(
    i: usize,
    addr: String,
    from: u64,
    plan: Arc<Plan>,
    probe: Arc<Probe>,
    mut done: watch::Receiver<bool>,
) -> Histogram {
    let mut lag = Histogram::default();
    let sampled = i.is_multiple_of(SAMPLE_EVERY);
    let path = format!("/v1/messages/stream?from={from}");
    let resp = async {
        let mut c = crate::client::connect(&addr, plan.tls.as_ref()).await?;
        let req = request(&plan, hyper::Method::GET, &addr, &path, Bytes::new());
        c.ready().await.map_err(|e| e.to_string())?;
        let r = c.send_request(req).await.map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("status {}", r.status()));
        }
        Ok::<_, String>((c, r))
    };
    let (_conn, resp) = match tokio::time::timeout(Duration::from_secs(30), resp).await {
        Ok(Ok(r)) => {
            probe.opened.fetch_add(1, Ordering::Relaxed);
            r
        }
        Ok(Err(e)) => {
            eprintln!("raftlog bench: stream {i}: {e}");
            probe.failures.fetch_add(1, Ordering::Relaxed);
            return lag;
        }
        Err(_) => {
            probe.failures.fetch_add(1, Ordering::Relaxed);
            return lag;
        }
    };
    let mut body = resp.into_body();
    let mut partial = String::new();
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = done.wait_for(|d| *d) => break,
        };
        let Some(Ok(frame)) = frame else {
            probe.failures.fetch_add(1, Ordering::Relaxed);
            break;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        probe.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        if !sampled {
            continue;
        }
        let now = Instant::now();
        partial.push_str(&String::from_utf8_lossy(&data));
        let cut = partial.rfind('\n').map_or(0, |p| p + 1);
        for line in partial[..cut].lines() {
            if let Some(id) = line.strip_prefix("id: ").and_then(|v| v.parse().ok()) {
                probe.events.fetch_add(1, Ordering::Relaxed);
                lag.record(probe.lag_us(id, now).unwrap_or(0));
            }
        }
        partial.drain(..cut);
    }
    lag
}
