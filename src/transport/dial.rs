//! How a peer connection is dialled: name resolution with a deadline, and an
//! address to fall back on when resolution is slow or failing.
//!
//! Why: tonic's default connector bounds the TCP connect but not the DNS lookup
//! before it, and a lookup can hang for tens of seconds. The container test saw it:
//! podman's DNS server stops answering for a while whenever a container of the
//! network starts or stops (lookups took 5–40 s there), so after a leader handed
//! over, a survivor's reply to its successor sat in a lookup of the successor's
//! name while the successor waited for it: no leader for the whole 10 s window.
//! Kubernetes DNS can stall the same way under load.
//!
//! So a dial resolves the name with a deadline and, when the lookup fails or is
//! late, tries the addresses it still has:
//! - *learned*: the source address of the peer's own latest connection to us (the
//!   server records it once the request passed the cluster check and, with TLS, the
//!   node-id check), with the port of the peer's configured address. A peer that
//!   restarted somewhere new reaches us first more often than not, so this is
//!   usually its current address;
//! - *cached*: what the last successful lookup of the name returned.
//!
//! Only one lookup per name is in flight: a dial that finds one pending waits for
//! it (up to its deadline) instead of starting another, so a hung resolver holds
//! at most one blocking thread per name. With TLS the handshake still checks the
//! certificate against the configured host name, so dialling a fallback address
//! can reach the peer or fail, never someone else.

use super::{ClusterId, CLUSTER_HEADER, FROM_HEADER};
use futures::future::{BoxFuture, FutureExt, Shared};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;
use tonic::codegen::Service;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};
use tracing::debug;

/// Names (or peers) remembered at most; the maps are cleared when full, so
/// addresses seen once cannot accumulate.
const MAX_ENTRIES: usize = 4096;

type Lookup = Shared<BoxFuture<'static, Result<Vec<SocketAddr>, String>>>;

/// Addresses learned from incoming connections and from lookups, shared by the
/// server (which learns) and every dialler.
#[derive(Default)]
pub struct AddrBook {
    learned: Mutex<HashMap<String, IpAddr>>,
    resolved: Mutex<HashMap<String, Vec<SocketAddr>>>,
    lookups: Mutex<HashMap<String, Lookup>>,
}

impl std::fmt::Debug for AddrBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("AddrBook")
            .field("learned", &*learned)
            .finish_non_exhaustive()
    }
}

fn bounded_insert<V>(map: &mut HashMap<String, V>, key: &str, value: V) {
    if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
        map.clear();
    }
    map.insert(key.to_string(), value);
}

impl AddrBook {
    /// `node` connected to us from `ip`.
    pub fn learn(&self, node: &str, ip: IpAddr) {
        if node.is_empty() {
            return;
        }
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if learned.get(node) != Some(&ip) {
            bounded_insert(&mut learned, node, ip);
        }
    }

    /// The address `node` last connected to us from.
    pub fn learned(&self, node: &str) -> Option<IpAddr> {
        let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        learned.get(node).copied()
    }

    /// The lookup of `host:port` in flight, or a new one.
    fn lookup(&self, host: &str, port: u16) -> Lookup {
        let key = format!("{host}:{port}");
        let mut lookups = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pending) = lookups.get(&key) {
            if pending.peek().is_none() {
                return pending.clone();
            }
        }
        let name = key.clone();
        // A task of its own, so the lookup finishes (and fills the cache) even when
        // every dial waiting for it has given up.
        let task = tokio::spawn(async move {
            match tokio::net::lookup_host(name.as_str()).await {
                Ok(addrs) => Ok(addrs.collect::<Vec<_>>()),
                Err(e) => Err(e.to_string()),
            }
        });
        let lookup = async move { task.await.map_err(|e| e.to_string())? }
            .boxed()
            .shared();
        bounded_insert(&mut lookups, &key, lookup.clone());
        lookup
    }

    fn cache(&self, key: &str, addrs: &[SocketAddr]) {
        let mut resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        bounded_insert(&mut resolved, key, addrs.to_vec());
    }

    fn cached(&self, key: &str) -> Vec<SocketAddr> {
        let resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        resolved.get(key).cloned().unwrap_or_default()
    }
}

/// A connector for tonic: resolves with a deadline, then falls back (module docs).
#[derive(Clone, Debug)]
pub(crate) struct Dialer {
    pub(crate) book: Arc<AddrBook>,
    /// The peer this connector dials, when known (its learned address is used).
    pub(crate) peer: Option<String>,
    pub(crate) resolve_timeout: Duration,
    pub(crate) connect_timeout: Duration,
}

impl Dialer {
    /// Addresses to try for `host:port`, best first.
    async fn candidates(&self, host: &str, port: u16) -> Vec<SocketAddr> {
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() {
            return vec![SocketAddr::new(ip, port)];
        }
        let key = format!("{host}:{port}");
        let lookup = self.book.lookup(host, port);
        match tokio::time::timeout(self.resolve_timeout, lookup).await {
            Ok(Ok(addrs)) if !addrs.is_empty() => {
                self.book.cache(&key, &addrs);
                return addrs;
            }
            Ok(Ok(_)) => debug!(%key, "name resolved to no address; trying known ones"),
            Ok(Err(e)) => debug!(%key, error = %e, "name lookup failed; trying known ones"),
            Err(_) => debug!(%key, after = ?self.resolve_timeout,
                "name lookup is late; trying known ones"),
        }
        let mut out = Vec::new();
        if let Some(ip) = self.peer.as_deref().and_then(|p| self.book.learned(p)) {
            out.push(SocketAddr::new(ip, port));
        }
        for addr in self.book.cached(&key) {
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        out
    }

    async fn dial(self, uri: Uri) -> std::io::Result<TokioIo<TcpStream>> {
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().unwrap_or(80);
        let candidates = self.candidates(&host, port).await;
        let mut errors = Vec::new();
        for addr in &candidates {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    stream.set_nodelay(true)?;
                    return Ok(TokioIo::new(stream));
                }
                Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
                Err(_) => errors.push(format!("{addr}: no answer in {:?}", self.connect_timeout)),
            }
        }
        let tried = if errors.is_empty() {
            "the name did not resolve and no address is known".to_string()
        } else {
            errors.join("; ")
        };
        Err(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            format!("cannot reach {host}:{port}: {tried}"),
        ))
    }
}

impl Service<Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, std::io::Result<TokioIo<TcpStream>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        self.clone().dial(uri).boxed()
    }
}

/// Adds the cluster id and our node id to every outgoing request. The cluster id
/// is read per request, so streams opened after it changes carry the new one.
#[derive(Clone)]
pub(crate) struct Meta {
    cluster_id: ClusterId,
    from: Option<MetadataValue<Ascii>>,
}

impl Meta {
    pub(crate) fn new(cluster_id: ClusterId, self_id: &str) -> Self {
        Meta {
            cluster_id,
            from: self_id.parse().ok(),
        }
    }
}

impl Interceptor for Meta {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let id = self.cluster_id.get();
        if !id.is_empty() {
            let value = id
                .parse()
                .map_err(|_| Status::invalid_argument("cluster id is not valid metadata"))?;
            req.metadata_mut().insert(CLUSTER_HEADER, value);
        }
        if let Some(from) = &self.from {
            req.metadata_mut().insert(FROM_HEADER, from.clone());
        }
        Ok(req)
    }
}

/// A channel with our metadata attached.
pub(crate) type Svc = InterceptedService<Channel, Meta>;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn dialer(book: &Arc<AddrBook>, peer: Option<&str>) -> Dialer {
        Dialer {
            book: book.clone(),
            peer: peer.map(str::to_string),
            resolve_timeout: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn a_hung_lookup_falls_back_to_the_learned_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let book = Arc::new(AddrBook::default());
        // A lookup that never finishes stands in for a DNS server that went quiet.
        let key = format!("node1:{port}");
        let hung: Lookup = futures::future::pending().boxed().shared();
        book.lookups.lock().unwrap().insert(key, hung);

        let err = dialer(&book, Some("n1"))
            .dial(format!("http://node1:{port}").parse().unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no address is known"), "{err}");

        book.learn("n1", "127.0.0.1".parse().unwrap());
        let conn = dialer(&book, Some("n1"))
            .dial(format!("http://node1:{port}").parse().unwrap())
            .await
            .expect("dialled the learned address");
        let (_, from) = listener.accept().await.unwrap();
        assert_eq!(conn.inner().local_addr().unwrap(), from);
        // Another peer's learned address is not used for this name.
        let err = dialer(&book, Some("n2"))
            .dial(format!("http://node1:{port}").parse().unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no address is known"), "{err}");
    }

    #[tokio::test]
    async fn a_failed_or_late_lookup_falls_back_to_the_last_good_one() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let book = Arc::new(AddrBook::default());
        let ok = dialer(&book, None)
            .dial(format!("http://localhost:{port}").parse().unwrap())
            .await;
        assert!(ok.is_ok(), "{:?}", ok.err());
        assert!(!book.cached(&format!("localhost:{port}")).is_empty());
        // `.invalid` never resolves (RFC 6761): fails, or is late without a network.
        let host = "raftlog-test.invalid";
        book.cache(&format!("{host}:{port}"), &[listener.local_addr().unwrap()]);
        let conn = dialer(&book, Some("n9"))
            .dial(format!("http://{host}:{port}").parse().unwrap())
            .await;
        assert!(conn.is_ok(), "{:?}", conn.err());
    }

    #[tokio::test]
    async fn one_lookup_per_name_is_in_flight() {
        let book = AddrBook::default();
        let pending: Lookup = futures::future::pending().boxed().shared();
        book.lookups
            .lock()
            .unwrap()
            .insert("node9:1".into(), pending.clone());
        assert!(
            book.lookup("node9", 1).ptr_eq(&pending),
            "joins the pending one"
        );
        // A finished lookup is not reused: the next dial asks again.
        let done: Lookup = futures::future::ready(Ok(Vec::new())).boxed().shared();
        done.clone().await.unwrap();
        book.lookups
            .lock()
            .unwrap()
            .insert("node9:1".into(), done.clone());
        assert!(!book.lookup("node9", 1).ptr_eq(&done), "a new lookup");
        assert_eq!(book.lookups.lock().unwrap().len(), 1);
    }

    #[test]
    fn learned_addresses_are_bounded() {
        let book = AddrBook::default();
        for i in 0..(MAX_ENTRIES + 10) {
            book.learn(&format!("n{i}"), "127.0.0.1".parse().unwrap());
        }
        assert!(book.learned.lock().unwrap().len() <= MAX_ENTRIES);
        book.learn("", "127.0.0.1".parse().unwrap());
        assert_eq!(book.learned(""), None);
    }
}
