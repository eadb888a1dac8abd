//! The client API's connection handling: TLS, connection limit, header limits and
//! timeouts, graceful shutdown.
//!
//! Why not `axum::serve`: it has no connection limit, no header timeout and no TLS.
//! A node must stay available to well-behaved clients while others hold
//! connections open without sending (slow-loris) or send absurd heads.
//!
//! Invariants:
//! - at most `max_connections` connections are open; one more gets a 503 JSON
//!   answer (plaintext) or is closed (TLS) at once, and nothing else happens;
//! - a connection must deliver each request head within `header_timeout` of the
//!   connection opening or the previous response (this also bounds idle keep-alive
//!   connections), else it is closed; a TLS handshake within its own deadline;
//! - a head larger than `max_header_bytes` gets 431; bodies are bounded by the
//!   extractors (size, 413) and `limits.http_body_timeout_ms` (408);
//! - HTTP/1.1 only: one request at a time per connection keeps every bound above
//!   simple and exact (no HTTP/2 stream multiplexing to police);
//! - on shutdown the listener closes and open connections finish their current
//!   request (the caller bounds how long it waits).

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use crate::config::Config;
use crate::tls::Acceptor;

/// How the client API accepts and reads connections.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// HTTPS when set (no client certificates).
    pub tls: Option<Acceptor>,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
}

impl ServeConfig {
    /// The limits of `[limits]`; TLS is the caller's (it needs the loaded material).
    pub fn from_config(cfg: &Config, tls: Option<Acceptor>) -> Self {
        ServeConfig {
            tls,
            max_connections: cfg.limits.http_max_connections,
            header_timeout: cfg.limits.http_header_timeout(),
            max_header_bytes: cfg.limits.http_max_header_bytes,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then waits for open
/// connections to finish their current request.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    cfg: ServeConfig,
    shutdown: impl Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let cfg = Arc::new(cfg);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            s = crate::listen::accept(&listener, "client") => s,
            _ = &mut shutdown => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            refuse(stream, cfg.tls.is_some());
            continue;
        };
        let (app, cfg, watcher) = (app.clone(), cfg.clone(), graceful.watcher());
        tokio::spawn(async move {
            match cfg.tls.clone() {
                None => serve_conn(stream, app, &cfg, watcher, permit).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => serve_conn(tls, app, &cfg, watcher, permit).await,
                    Err(e) => debug!(%remote, error = %e, "client connection refused"),
                },
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn serve_conn<IO>(
    io: IO,
    app: Router,
    cfg: &ServeConfig,
    watcher: hyper_util::server::graceful::Watcher,
    _permit: OwnedSemaphorePermit,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout)
        .max_buf_size(cfg.max_header_bytes.max(crate::config::MIN_HEADER_BYTES))
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    if let Err(e) = watcher.watch(conn).await {
        debug!(error = %e, "client connection ended with an error");
    }
}

/// One connection too many: a short 503 where we can say it, then close. Written
/// without waiting (a fresh socket's send buffer takes it whole) and without a task,
/// so a flood beyond the limit costs nothing that outlives the accept.
fn refuse(stream: TcpStream, tls: bool) {
    debug!("client API connection limit reached; refusing a connection");
    if tls {
        return;
    }
    let body = r#"{"error":{"code":"too_many_connections","message":"connection limit reached; retry later"}}"#;
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(resp.as_bytes());
}
