//! `raftlog get --follow`: the SSE stream, resumed at the next offset on another
//! node when a node fails, stops, or cuts the stream off.
//!
//! Invariants:
//! - Messages are printed once each, in offset order: a resumed stream asks for
//!   exactly the offset after the last one printed, and an event at any other
//!   offset is refused (not printed).
//! - Silence longer than [`SILENCE`] (the server sends a comment every 10 s) counts
//!   as a dead connection.
//! - Retries back off (up to [`MAX_BACKOFF`]); after [`MAX_FAILURES`] attempts in a
//!   row without an open stream the cluster is unreachable (exit 3).

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

use super::conn::{CliError, Conn};
use super::{print_message, ClientOpts};

const SILENCE: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const MAX_FAILURES: u32 = 20;

/// How one stream attempt ended.
enum Outcome {
    /// Printed everything asked for.
    Done,
    /// Try again (on the next node when `rotate`).
    Retry { rotate: bool, why: String },
}

pub async fn run(
    opts: &ClientOpts,
    c: &mut Conn,
    from: u64,
    limit: Option<u64>,
) -> Result<(), CliError> {
    let mut next = from;
    let mut left = limit;
    let mut failures = 0;
    let mut backoff = Duration::from_millis(100);
    loop {
        let before = next;
        match attempt(opts, c, &mut next, &mut left).await? {
            Outcome::Done => return Ok(()),
            Outcome::Retry { rotate, why } => {
                eprintln!(
                    "raftlog: stream from {} ended ({why}); resuming at {next}",
                    c.current()
                );
                c.reset();
                if rotate {
                    c.rotate();
                }
            }
        }
        if next > before {
            failures = 0;
            backoff = Duration::from_millis(100);
        } else {
            failures += 1;
            if failures >= MAX_FAILURES {
                return Err(CliError::Unreachable(format!(
                    "no node kept a stream open after {failures} attempts"
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

async fn attempt(
    opts: &ClientOpts,
    c: &mut Conn,
    next: &mut u64,
    left: &mut Option<u64>,
) -> Result<Outcome, CliError> {
    let path = format!("/v1/messages/stream?from={next}");
    let resp = match c.send(&Method::GET, &path, Bytes::new(), &[]).await {
        Ok(r) => r,
        Err(CliError::Unreachable(why)) => return Ok(Outcome::Retry { rotate: true, why }),
        Err(e) => return Err(e),
    };
    let status = resp.status();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return Ok(Outcome::Retry {
            rotate: true,
            why: "503".into(),
        });
    }
    if !status.is_success() {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        return Err(CliError::Refused { status, body });
    }
    let mut body = resp.into_body();
    let mut text = String::new();
    loop {
        let frame = match tokio::time::timeout(SILENCE, body.frame()).await {
            Err(_) => return Ok(retry("silent for 30 s")),
            Ok(None) => return Ok(retry("closed")),
            Ok(Some(Err(e))) => return Ok(retry(&e.to_string())),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        text.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            if let Some(out) = event(opts, &block, next, left) {
                return Ok(out);
            }
        }
    }
}

fn retry(why: &str) -> Outcome {
    Outcome::Retry {
        rotate: true,
        why: why.to_string(),
    }
}

/// Handles one SSE block; `Some` ends the attempt.
fn event(
    opts: &ClientOpts,
    block: &str,
    next: &mut u64,
    left: &mut Option<u64>,
) -> Option<Outcome> {
    let mut kind = None;
    let mut data = None;
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event: ") {
            kind = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = serde_json::from_str::<Value>(v).ok();
        }
    }
    let data = data?;
    if kind.as_deref() == Some("end") {
        let code = data["error"]["code"].as_str().unwrap_or("end").to_string();
        // A slow reader may resume on the same node; anything else moves on.
        let rotate = code != "slow_reader";
        return Some(Outcome::Retry { rotate, why: code });
    }
    if data["offset"].as_u64() != Some(*next) {
        return Some(retry(&format!(
            "expected offset {next}, got {}",
            data["offset"]
        )));
    }
    print_message(opts, &data);
    *next += 1;
    if let Some(l) = left {
        *l = l.saturating_sub(1);
        if *l == 0 {
            return Some(Outcome::Done);
        }
    }
    None
}
