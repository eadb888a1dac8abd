//! Accepted control-plane connections: the connection limit and, with TLS, the
//! handshake under a deadline.
//!
//! Why not tonic's own TLS: its acceptor has no handshake timeout, so a client
//! that connects and never finishes the handshake would hold a slot forever.
//!
//! Invariants:
//! - at most `max` connections are open (handshaking ones included); further
//!   connections wait in the listen backlog;
//! - a handshake that fails or exceeds its deadline frees its slot at once;
//! - handshakes run concurrently, so one slow peer never delays another's accept;
//! - accept errors (out of file descriptors, ...) are logged and retried after a
//!   pause, never returned (`crate::listen`): tonic would otherwise spin on them.

use crate::tls::{peer_certs, Acceptor};
use futures::Stream;
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::warn;

/// What the services learn about the connection a request came on (a request
/// extension, set by tonic from [`Connected::connect_info`]).
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The client's certificate chain, verified against the cluster CA (TLS only).
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// Accepted connections, at most `max` open at once, TLS-wrapped when `tls` is set.
pub(crate) fn incoming(
    listener: TcpListener,
    max: usize,
    tls: Option<Acceptor>,
) -> impl Stream<Item = Result<LimitedConn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(
        listener,
        Arc::new(Semaphore::new(max.max(1))),
        tls,
        tx,
    ));
    ReceiverStream::new(rx)
}

type ConnTx = mpsc::Sender<Result<LimitedConn, std::io::Error>>;

/// Accepts until the server drops the stream.
async fn accept_loop(
    listener: TcpListener,
    limit: Arc<Semaphore>,
    tls: Option<Acceptor>,
    tx: ConnTx,
) {
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = tx.closed() => return,
        };
        let (stream, remote) = tokio::select! {
            s = crate::listen::accept(&listener, "control-plane") => s,
            _ = tx.closed() => return,
        };
        match &tls {
            None => {
                let conn = LimitedConn::new(Io::Plain(stream), remote, None, permit);
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
            }
            Some(acceptor) => {
                tokio::spawn(handshake(
                    acceptor.clone(),
                    stream,
                    remote,
                    permit,
                    tx.clone(),
                ));
            }
        }
    }
}

async fn handshake(
    acceptor: Acceptor,
    stream: TcpStream,
    remote: SocketAddr,
    permit: OwnedSemaphorePermit,
    tx: ConnTx,
) {
    match acceptor.accept(stream).await {
        Ok(tls) => {
            let certs = peer_certs(&tls);
            let conn = LimitedConn::new(Io::Tls(Box::new(tls)), remote, certs, permit);
            let _ = tx.send(Ok(conn)).await;
        }
        // Strangers, port scanners and misconfigured peers: visible, not alarming.
        Err(e) => warn!(%remote, error = %e, "control-plane connection refused"),
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection holding one slot of the connection limit until it closes.
pub(crate) struct LimitedConn {
    io: Io,
    info: PeerInfo,
    _permit: OwnedSemaphorePermit,
}

impl LimitedConn {
    fn new(
        io: Io,
        remote: SocketAddr,
        certs: Option<Arc<Vec<CertificateDer<'static>>>>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        LimitedConn {
            io,
            info: PeerInfo {
                remote_addr: Some(remote),
                certs,
            },
            _permit: permit,
        }
    }
}

impl Connected for LimitedConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

/// Forwards a poll to whichever stream the connection holds.
macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.io {
            Io::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Io::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for LimitedConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for LimitedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}
