//! The HTTP/1.1 client side shared by `raftlog bench` and the client CLI: one
//! connection to a node, optionally over TLS trusting one CA, and the bearer token
//! header.
//!
//! Invariants:
//! - HTTPS trusts only the CA named by `--cacert` (no system roots: a raftlog
//!   cluster has its own CA from `raftlog certs`) and offers only `http/1.1`.
//! - A connection's driver task ends when the connection does; nothing outlives a
//!   dropped [`Sender`] but that task, which then finishes.

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpStream;

/// A connection ready to send requests, one at a time.
pub type Sender = SendRequest<Full<Bytes>>;

/// Opens a connection to `addr` (`host:port`), speaking TLS when `tls` is set.
pub async fn connect(
    addr: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return handshake(stream).await;
    };
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("server name {host:?}: {e}"))?;
    let stream = tls
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    handshake(stream).await
}

async fn handshake<IO>(io: IO) -> Result<Sender, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A TLS client trusting only the CA in `path`.
pub fn tls_connector(path: &std::path::Path) -> Result<tokio_rustls::TlsConnector, String> {
    crate::tls::install_crypto_provider();
    let pem = std::fs::read(path).map_err(|e| format!("--cacert {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.map_err(|e| format!("--cacert {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("--cacert {}: {e}", path.display()))?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The `Authorization: Bearer <token>` value, marked sensitive.
pub fn bearer(token: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "--token must be visible ASCII".to_string())?;
    v.set_sensitive(true);
    Ok(v)
}
