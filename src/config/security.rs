//! `[tls]`, `[auth]` and `[limits]`: who may talk to a node, and how much.
//!
//! Why separate from the rest of the config: these keys decide whether a stranger
//! can join the cluster or read the log, so their defaults and checks are kept
//! together where they can be read (and reviewed) at once. Every limit has a
//! default that a production node can run with; `0` never means "unlimited" here.

use super::{at_least, invalid, ConfigError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// `[tls]`: mutual TLS between nodes, and TLS for the client API.
///
/// Either all of `ca_file`, `cert_file` and `key_file` are set (TLS on) or none
/// (plaintext, with a warning at start).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the cluster CA: a peer's certificate must be signed by it.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain of this node (used as server and as client).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// A peer's certificate must name the node id it claims (as a DNS name in its
    /// subject alternative names), so one node cannot pose as another.
    pub verify_node_id: bool,
    /// Check peers' server certificates against this name instead of the host of
    /// the address dialled (for certificates that do not list every address).
    pub server_name: Option<String>,
    /// Serve the client API over HTTPS with the same certificate.
    pub http: bool,
    /// A TLS handshake (HTTP or gRPC) must finish within this time.
    pub handshake_timeout_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca_file: None,
            cert_file: None,
            key_file: None,
            verify_node_id: true,
            server_name: None,
            http: true,
            handshake_timeout_ms: 10_000,
        }
    }
}

impl TlsConfig {
    /// True when TLS is configured (all three files are set).
    pub fn enabled(&self) -> bool {
        self.ca_file.is_some() && self.cert_file.is_some() && self.key_file.is_some()
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub(super) fn validate(&self, errs: &mut Vec<ConfigError>) {
        let set = [
            ("tls.ca_file", &self.ca_file),
            ("tls.cert_file", &self.cert_file),
            ("tls.key_file", &self.key_file),
        ];
        let given = set.iter().filter(|(_, v)| v.is_some()).count();
        if given != 0 && given != set.len() {
            for (key, v) in set {
                if v.is_none() {
                    errs.push(invalid(
                        key,
                        "missing: tls.ca_file, tls.cert_file and tls.key_file go together".into(),
                    ));
                }
            }
        }
        for (key, v) in set {
            if let Some(path) = v {
                if let Err(e) = std::fs::metadata(path) {
                    errs.push(invalid(key, format!("{}: {e}", path.display())));
                }
            }
        }
        if self.server_name.as_deref() == Some("") {
            errs.push(invalid("tls.server_name", "must not be empty".into()));
        }
        at_least(
            errs,
            "tls.handshake_timeout_ms",
            self.handshake_timeout_ms,
            1,
        );
    }
}

/// `[auth]`: bearer tokens for the client API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// TOML file of `[[tokens]]` with `name`, `role` (`read`, `write`, `admin`)
    /// and `secret`. When unset, the client API needs no token.
    pub tokens_file: Option<PathBuf>,
    /// `/metrics` without a token (for scrapers on a trusted network). `/health`
    /// and `/ready` are always open.
    pub public_metrics: bool,
}

impl AuthConfig {
    pub(super) fn validate(&self, errs: &mut Vec<ConfigError>) {
        if let Some(path) = &self.tokens_file {
            if let Err(e) = crate::http::auth::Tokens::load(path) {
                errs.push(invalid("auth.tokens_file", e));
            }
        }
    }
}

/// `[limits]`: bounds on what clients and peers can make a node hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open client API connections; beyond this a connection gets a 503 and is closed.
    pub http_max_connections: usize,
    /// A client must send a request's headers within this time of starting it
    /// (or of the connection opening); otherwise the connection is closed (slow-loris).
    pub http_header_timeout_ms: u64,
    /// A client must send a request's whole body within this time (408 otherwise).
    pub http_body_timeout_ms: u64,
    /// Largest request head (request line and headers); larger gets 431.
    pub http_max_header_bytes: usize,
    /// Open control-plane connections; further ones wait in the listen backlog.
    pub grpc_max_connections: usize,
    /// Largest gRPC message a node accepts (an append batch, a snapshot chunk).
    pub grpc_max_message_bytes: usize,
    /// RPCs served at once on one control-plane connection.
    pub grpc_concurrency_per_connection: usize,
    /// HTTP/2 streams a peer may open at once on one connection.
    pub grpc_max_streams: u32,
    /// Join requests accepted per second from one source address (sustained) ...
    pub join_per_second: u32,
    /// ... and in a burst.
    pub join_burst: u32,
    /// Concurrent `GET /v1/messages/stream` subscriptions; one more gets a 503.
    pub max_streams: usize,
    /// Bytes of events one stream may queue for a client that is not reading;
    /// at least one event is always allowed, whatever its size.
    pub stream_buffer_bytes: usize,
    /// A stream whose queue stays full this long is ended (a slow reader), with a
    /// final event saying why; the client may resume from the next offset.
    pub stream_stall_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            http_max_connections: 4096,
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 30_000,
            http_max_header_bytes: 16 * 1024,
            grpc_max_connections: 1024,
            grpc_max_message_bytes: 64 << 20,
            grpc_concurrency_per_connection: 64,
            grpc_max_streams: 128,
            join_per_second: 2,
            join_burst: 10,
            max_streams: 1024,
            stream_buffer_bytes: 1 << 20,
            stream_stall_timeout_ms: 10_000,
        }
    }
}

/// Room for the envelope around the largest entry in one gRPC message.
const GRPC_FRAMING_BYTES: u64 = 64 * 1024;

/// hyper's smallest read buffer; a head limit below it cannot be enforced.
pub const MIN_HEADER_BYTES: usize = 8192;

impl LimitsConfig {
    pub fn http_header_timeout(&self) -> Duration {
        Duration::from_millis(self.http_header_timeout_ms)
    }

    pub fn http_body_timeout(&self) -> Duration {
        Duration::from_millis(self.http_body_timeout_ms)
    }

    pub(super) fn validate(&self, errs: &mut Vec<ConfigError>) {
        let at_least_one: [(&'static str, u64); 11] = [
            (
                "limits.http_max_connections",
                self.http_max_connections as u64,
            ),
            ("limits.http_header_timeout_ms", self.http_header_timeout_ms),
            ("limits.http_body_timeout_ms", self.http_body_timeout_ms),
            (
                "limits.grpc_max_connections",
                self.grpc_max_connections as u64,
            ),
            (
                "limits.grpc_concurrency_per_connection",
                self.grpc_concurrency_per_connection as u64,
            ),
            ("limits.grpc_max_streams", self.grpc_max_streams as u64),
            ("limits.join_per_second", self.join_per_second as u64),
            ("limits.join_burst", self.join_burst as u64),
            ("limits.max_streams", self.max_streams as u64),
            (
                "limits.stream_buffer_bytes",
                self.stream_buffer_bytes as u64,
            ),
            (
                "limits.stream_stall_timeout_ms",
                self.stream_stall_timeout_ms,
            ),
        ];
        for (key, value) in at_least_one {
            at_least(errs, key, value, 1);
        }
        at_least(
            errs,
            "limits.http_max_header_bytes",
            self.http_max_header_bytes as u64,
            MIN_HEADER_BYTES as u64,
        );
    }

    /// An append batch (up to 1 MiB, or one maximal message) or a snapshot chunk
    /// (1 MiB) must fit, with room for framing.
    pub(super) fn validate_grpc_size(&self, max_message_bytes: usize, errs: &mut Vec<ConfigError>) {
        let need = max_message_bytes.max(1 << 20) as u64 + GRPC_FRAMING_BYTES;
        at_least(
            errs,
            "limits.grpc_max_message_bytes",
            self.grpc_max_message_bytes as u64,
            need,
        );
    }
}
