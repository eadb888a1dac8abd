//! Turns `[tls]`, `[auth]` and `[limits]` into the servers' and clients' settings.
//!
//! Why one place: the control plane, the client API and the peer clients must
//! agree (same CA, same message size limit); loading everything here once at start
//! means a bad file stops the node with one line naming its key, before it binds
//! anything to the cluster.

use crate::config::Config;
use crate::http::auth::Tokens;
use crate::http::serve::ServeConfig;
use crate::tls::{TlsMaterial, ALPN_GRPC, ALPN_HTTP};
use crate::transport::{PeersConfig, ServerConfig};
use std::sync::Arc;

/// The loaded security material of one node.
pub struct Security {
    tls: Option<TlsMaterial>,
    tokens: Option<Arc<Tokens>>,
}

impl Security {
    /// Loads certificates and tokens; warns when the node runs without them.
    pub fn load(cfg: &Config) -> Result<Security, String> {
        let tls = TlsMaterial::load(&cfg.tls)?;
        if tls.is_none() {
            tracing::warn!(
                "TLS is not configured ([tls]): node-to-node and client traffic is plaintext \
                 and any host that can reach the gRPC port can act as a node"
            );
        }
        let tokens = match &cfg.auth.tokens_file {
            None => None,
            Some(path) => Some(Arc::new(
                Tokens::load(path)
                    .map_err(|e| format!("auth.tokens_file: {e}"))?
                    .with_public_metrics(cfg.auth.public_metrics),
            )),
        };
        if tokens.is_none() {
            tracing::warn!("no [auth] tokens_file: the client API accepts requests from anyone");
        }
        Ok(Security { tls, tokens })
    }

    /// The token check for the client API, if tokens are configured.
    pub fn tokens(&self) -> Option<Arc<Tokens>> {
        self.tokens.clone()
    }

    /// Outgoing peer connections: mutual TLS and the message size limit.
    pub fn peers_config(&self, cfg: &Config) -> PeersConfig {
        PeersConfig {
            tls: self.tls.as_ref().map(TlsMaterial::client_config),
            max_message_bytes: cfg.limits.grpc_max_message_bytes,
            ..PeersConfig::default()
        }
    }

    /// The control-plane server: mutual TLS and the `[limits]` on peers.
    pub fn grpc_config(&self, cfg: &Config) -> Result<ServerConfig, String> {
        let l = &cfg.limits;
        let tls = match &self.tls {
            Some(m) => Some(m.acceptor(ALPN_GRPC, true)?),
            None => None,
        };
        Ok(ServerConfig {
            max_decoding_message_size: l.grpc_max_message_bytes,
            max_connections: l.grpc_max_connections,
            concurrency_limit_per_connection: l.grpc_concurrency_per_connection,
            max_concurrent_streams: l.grpc_max_streams,
            verify_node_id: cfg.tls.verify_node_id,
            join_per_second: l.join_per_second,
            join_burst: l.join_burst,
            tls,
            ..ServerConfig::default()
        })
    }

    /// The client API server: HTTPS when `[tls] http`, and the `[limits]` on clients.
    pub fn http_config(&self, cfg: &Config) -> Result<ServeConfig, String> {
        let tls = match &self.tls {
            Some(m) if cfg.tls.http => Some(m.acceptor(ALPN_HTTP, false)?),
            _ => None,
        };
        Ok(ServeConfig::from_config(cfg, tls))
    }
}
