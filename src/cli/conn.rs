//! The CLI's way to a cluster: a list of node addresses tried in turn, one
//! keep-alive connection at a time, `Retry-After` honoured on 503.
//!
//! Invariants:
//! - A connection failure (refused, reset, timeout) moves to the next address; only
//!   when every address failed in a row is the cluster unreachable (exit 3).
//! - A 503 with `Retry-After` waits that long (capped at [`MAX_RETRY_AFTER`]) and
//!   retries, at most [`MAX_503_RETRIES`] times; then the 503 is the answer.
//! - A non-2xx answer is returned as [`CliError::Refused`] with the server's JSON
//!   error (exit 1); nothing is retried that the server answered otherwise.
//! - Writes are retried only on a connection failure before any answer; a write
//!   whose connection broke after sending may have been appended (the caller uses
//!   an idempotency key so a retry cannot duplicate it).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use std::time::Duration;

use crate::client::Sender;

/// Longest wait a `Retry-After` can impose per retry.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
/// 503s retried before giving up with the last one.
const MAX_503_RETRIES: usize = 10;
/// Time allowed to open a connection (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a command failed, and its exit code.
#[derive(Debug)]
pub enum CliError {
    /// Bad arguments the parser could not catch (exit 2).
    Usage(String),
    /// The server answered with an error (exit 1).
    Refused { status: StatusCode, body: Value },
    /// No node could be reached (exit 3).
    Unreachable(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused { .. } => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable(_) => 3,
        }
    }

    /// One line for stderr.
    pub fn line(&self) -> String {
        match self {
            CliError::Usage(m) => format!("usage: {m}"),
            CliError::Unreachable(m) => format!("unreachable: {m}"),
            CliError::Refused { status, body } => {
                let code = body["error"]["code"].as_str().unwrap_or("error");
                let msg = body["error"]["message"].as_str().unwrap_or("");
                format!("{} {code}: {msg}", status.as_u16())
            }
        }
    }
}

/// Addresses and credentials of a cluster.
pub struct Conn {
    addrs: Vec<String>,
    /// The address now in use (rotates on failure).
    cur: usize,
    sender: Option<Sender>,
    tls: Option<tokio_rustls::TlsConnector>,
    auth: Option<HeaderValue>,
    timeout: Duration,
}

impl Conn {
    pub fn new(
        addrs: Vec<String>,
        tls: Option<tokio_rustls::TlsConnector>,
        auth: Option<HeaderValue>,
        timeout: Duration,
    ) -> Self {
        Conn {
            addrs,
            cur: 0,
            sender: None,
            tls,
            auth,
            timeout,
        }
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The address requests go to now.
    pub fn current(&self) -> &str {
        &self.addrs[self.cur]
    }

    /// Use `addr` from now on (added first when it is not listed).
    pub fn prefer(&mut self, addr: &str) {
        self.sender = None;
        match self.addrs.iter().position(|a| a == addr) {
            Some(i) => self.cur = i,
            None => {
                self.addrs.insert(0, addr.to_string());
                self.cur = 0;
            }
        }
    }

    /// A connection to one other node with the same credentials.
    pub fn sibling(&self, addr: &str, timeout: Duration) -> Conn {
        Conn::new(
            vec![addr.to_string()],
            self.tls.clone(),
            self.auth.clone(),
            timeout,
        )
    }

    /// Forget the open connection (its response body is still in use).
    pub fn reset(&mut self) {
        self.sender = None;
    }

    /// Use the next address from now on.
    pub fn rotate(&mut self) {
        self.sender = None;
        self.cur = (self.cur + 1) % self.addrs.len();
    }

    /// A request with a JSON body (or none), answered with JSON; see the module doc.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Value, CliError> {
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let mut retries_503 = 0;
        loop {
            let resp = self.send(&method, path, body.clone(), headers).await?;
            let status = resp.status();
            let retry = retry_after(&resp);
            let bytes = match tokio::time::timeout(self.timeout, resp.into_body().collect()).await {
                Ok(Ok(b)) => b.to_bytes(),
                _ => {
                    self.sender = None;
                    return Err(CliError::Unreachable(format!(
                        "{}: the answer was cut off",
                        self.current()
                    )));
                }
            };
            let json: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::json!({"error": {"code": "bad_answer",
                    "message": String::from_utf8_lossy(&bytes)}})
            });
            if status.is_success() {
                return Ok(json);
            }
            // A 503 naming the leader is for the caller to follow, not to wait out.
            let hinted = json["error"]["leader_hint"].is_string();
            if status == StatusCode::SERVICE_UNAVAILABLE && !hinted && retries_503 < MAX_503_RETRIES
            {
                if let Some(wait) = retry {
                    retries_503 += 1;
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            return Err(CliError::Refused { status, body: json });
        }
    }

    /// Sends one request, trying each address once from the current one.
    pub async fn send(
        &mut self,
        method: &Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, String)],
    ) -> Result<Response<Incoming>, CliError> {
        let mut errors = Vec::new();
        for _ in 0..self.addrs.len() {
            match self.try_send(method, path, body.clone(), headers).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    errors.push(format!("{}: {e}", self.current()));
                    self.rotate();
                }
            }
        }
        Err(CliError::Unreachable(errors.join("; ")))
    }

    async fn try_send(
        &mut self,
        method: &Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, String)],
    ) -> Result<Response<Incoming>, String> {
        let addr = self.current().to_string();
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let c = crate::client::connect(&addr, self.tls.as_ref());
            let s = tokio::time::timeout(CONNECT_TIMEOUT, c)
                .await
                .map_err(|_| "connect timed out".to_string())??;
            self.sender = Some(s);
        }
        let sender = self.sender.as_mut().expect("connected above");
        let mut b = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(hyper::header::HOST, &addr);
        if let Some(auth) = &self.auth {
            b = b.header(hyper::header::AUTHORIZATION, auth.clone());
        }
        if !body.is_empty() {
            b = b.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        let req = b.body(Full::new(body)).map_err(|e| e.to_string())?;
        let sent = async {
            sender.ready().await?;
            sender.send_request(req).await
        };
        match tokio::time::timeout(self.timeout, sent).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e.to_string())
            }
            Err(_) => {
                self.sender = None;
                Err("no answer in time".into())
            }
        }
    }
}

fn retry_after(resp: &Response<Incoming>) -> Option<Duration> {
    let v = resp.headers().get(hyper::header::RETRY_AFTER)?;
    let secs: f64 = v.to_str().ok()?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}
