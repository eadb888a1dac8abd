//! The one accept loop of the project's servers (client API and control plane).
//!
//! Why one: both listeners must survive accept errors (out of file descriptors,
//! aborted handshakes in the kernel) without spinning or giving up, and both want
//! `TCP_NODELAY`; one helper keeps them alike.
//!
//! Invariants:
//! - an accept error is logged and retried after a bounded, jittered pause
//!   ([`Backoff`], 10 ms .. 1 s), never returned: a server that stops accepting
//!   on `EMFILE` would stay down after the descriptors are free again;
//! - the pause resets after a successful accept;
//! - every accepted stream has `TCP_NODELAY` set (small messages: heartbeats,
//!   votes, short HTTP answers; latency matters more than packet count).

use crate::backoff::Backoff;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

/// The shortest and longest pause after a failed accept.
const PAUSE_MIN: Duration = Duration::from_millis(10);
const PAUSE_MAX: Duration = Duration::from_secs(1);

/// The next connection on `listener` (`what` names it in the logs: "client",
/// "control-plane"). Never fails: errors are logged and retried with backoff.
pub async fn accept(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    let mut backoff = Backoff::new(PAUSE_MIN, PAUSE_MAX);
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                debug!(%remote, "{what} connection accepted");
                return (stream, remote);
            }
            Err(e) => {
                warn!(error = %e, "accepting a {what} connection failed");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepts_a_connection_with_nodelay_and_its_remote_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (stream, remote) =
            tokio::time::timeout(Duration::from_secs(30), accept(&listener, "test"))
                .await
                .expect("accept within 30 s");
        let client = client.await.unwrap();
        assert_eq!(remote, client.local_addr().unwrap());
        assert!(stream.nodelay().unwrap());
    }
}
