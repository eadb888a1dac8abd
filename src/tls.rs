//! TLS material and handshakes shared by the control plane and the client API.
//!
//! Why the handshake is ours and not tonic's: tonic's TLS acceptor has no
//! handshake timeout, so a peer that opens connections and never finishes the
//! handshake would hold connection slots forever. Here every server-side handshake
//! runs under `[tls] handshake_timeout_ms`, after the connection took its slot.
//!
//! Invariants:
//! - Nodes authenticate each other: the gRPC server requires a client certificate
//!   signed by the cluster CA, and clients check the server's certificate against
//!   the same CA and the dialled host (or `[tls] server_name`).
//! - With `[tls] verify_node_id`, a peer's certificate must name the node id the
//!   peer claims ([`verify_node_id`]), so a valid certificate of node A cannot be
//!   used to speak as node B.
//! - Only the ring crypto provider is used (no aws-lc, no cmake in the build).

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// ALPN of gRPC (HTTP/2 only) and of the client API (HTTP/1.1 only).
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];
pub const ALPN_HTTP: &[&[u8]] = &[b"http/1.1"];

/// The certificates and key of one node, loaded and checked once at start.
#[derive(Clone)]
pub struct TlsMaterial {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    server_name: Option<String>,
    verify_node_id: bool,
    handshake_timeout: Duration,
}

/// Makes ring the process's crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl TlsMaterial {
    /// Loads `[tls]`; `None` when TLS is not configured. Errors name the key.
    pub fn load(cfg: &TlsConfig) -> Result<Option<TlsMaterial>, String> {
        let (Some(ca), Some(cert), Some(key)) = (&cfg.ca_file, &cfg.cert_file, &cfg.key_file)
        else {
            return Ok(None);
        };
        install_crypto_provider();
        let ca_pem = read("tls.ca_file", ca)?;
        let cert_pem = read("tls.cert_file", cert)?;
        let key_pem = read("tls.key_file", key)?;
        let mut roots = RootCertStore::empty();
        for c in certs("tls.ca_file", ca, &ca_pem)? {
            roots
                .add(c)
                .map_err(|e| format!("tls.ca_file: {}: {e}", ca.display()))?;
        }
        let chain = certs("tls.cert_file", cert, &cert_pem)?;
        let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|e| format!("tls.key_file: {}: {e}", key.display()))?
            .ok_or_else(|| format!("tls.key_file: {}: no private key found", key.display()))?;
        let material = TlsMaterial {
            ca_pem,
            cert_pem,
            key_pem,
            roots: Arc::new(roots),
            chain,
            key: Arc::new(key_der),
            server_name: cfg.server_name.clone(),
            verify_node_id: cfg.verify_node_id,
            handshake_timeout: cfg.handshake_timeout(),
        };
        // Fail at start, not at the first connection, on a key that does not fit.
        material.server_config(ALPN_HTTP, false)?;
        Ok(Some(material))
    }

    /// A rustls server config; `mutual` requires a client certificate from the CA.
    pub fn server_config(&self, alpn: &[&[u8]], mutual: bool) -> Result<ServerConfig, String> {
        let builder = if mutual {
            let verifier = WebPkiClientVerifier::builder(self.roots.clone())
                .build()
                .map_err(|e| format!("tls.ca_file: {e}"))?;
            ServerConfig::builder().with_client_cert_verifier(verifier)
        } else {
            ServerConfig::builder().with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| format!("tls.key_file: does not match tls.cert_file: {e}"))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// An acceptor for `alpn`, with or without client certificates.
    pub fn acceptor(&self, alpn: &[&[u8]], mutual: bool) -> Result<Acceptor, String> {
        Ok(Acceptor {
            inner: TlsAcceptor::from(Arc::new(self.server_config(alpn, mutual)?)),
            timeout: self.handshake_timeout,
        })
    }

    /// tonic's client side: our certificate, the cluster CA, and the name to check.
    pub fn client_config(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut c = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        if let Some(name) = &self.server_name {
            c = c.domain_name(name.clone());
        }
        c
    }

    /// Whether servers check that a peer's certificate names its node id.
    pub fn verifies_node_id(&self) -> bool {
        self.verify_node_id
    }
}

/// A server-side TLS acceptor with a handshake deadline.
#[derive(Clone)]
pub struct Acceptor {
    inner: TlsAcceptor,
    timeout: Duration,
}

impl Acceptor {
    /// Runs the handshake on `stream`; errors (and timeouts) say why, for the log.
    pub async fn accept(&self, stream: TcpStream) -> Result<TlsStream<TcpStream>, String> {
        match tokio::time::timeout(self.timeout, self.inner.accept(stream)).await {
            Err(_) => Err(format!("TLS handshake not done within {:?}", self.timeout)),
            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
            Ok(Ok(s)) => Ok(s),
        }
    }
}

/// The peer's certificate chain of a finished handshake.
pub fn peer_certs(stream: &TlsStream<TcpStream>) -> Option<Arc<Vec<CertificateDer<'static>>>> {
    let certs = stream.get_ref().1.peer_certificates()?;
    Some(Arc::new(
        certs.iter().map(|c| c.clone().into_owned()).collect(),
    ))
}

/// Checks that the end-entity certificate names `node_id` (a DNS-name SAN).
/// The chain itself was verified against the CA during the handshake.
pub fn verify_node_id(certs: &[CertificateDer<'_>], node_id: &str) -> Result<(), String> {
    let leaf = certs
        .first()
        .ok_or_else(|| "no client certificate".to_string())?;
    let name = ServerName::try_from(node_id)
        .map_err(|_| format!("node id {node_id:?} is not a DNS name a certificate can carry"))?;
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("unreadable client certificate: {e:?}"))?;
    cert.verify_is_valid_for_subject_name(&name)
        .map_err(|_| format!("the client certificate does not name node {node_id:?}"))
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{key}: {}: {e}", path.display()))
}

fn certs(key: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{key}: {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key}: {}: no PEM certificate found",
            path.display()
        ));
    }
    Ok(certs)
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
