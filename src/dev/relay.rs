//! The children's output, made readable: each line prefixed with its node id (as
//! `docker compose` does), and warnings every node prints alike (plaintext, no
//! tokens) shown once for the whole cluster.
//!
//! Invariants:
//! - Every line a child writes is relayed whole, in order per child, on our
//!   stderr (where the children's logs went before), except repeats of a
//!   once-per-cluster warning.
//! - A relay thread ends when its child's pipe closes (the child exited).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

/// Log messages every dev node prints the same way; shown once.
const ONCE: &[&str] = &["TLS is not configured", "no [auth] tokens_file"];

/// Warnings already shown, shared by all relays.
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<HashSet<&'static str>>>);

impl Seen {
    /// Whether `line` should be shown (false for a repeat of a [`ONCE`] warning).
    pub fn show(&self, line: &str) -> bool {
        let Some(key) = ONCE.iter().find(|k| line.contains(*k)) else {
            return true;
        };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(key)
    }
}

/// `node_id | line`, the id padded to `width`.
pub fn prefixed(node_id: &str, width: usize, line: &str) -> String {
    format!("{node_id:<width$} | {line}")
}

/// Relays `pipe` line by line to stderr on a thread of its own.
pub fn spawn(node_id: String, width: usize, pipe: impl Read + Send + 'static, seen: Seen) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if seen.show(&line) {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{}", prefixed(&node_id, width, &line));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_their_node_and_cluster_warnings_show_once() {
        assert_eq!(prefixed("n1", 3, "hello"), "n1  | hello");
        let seen = Seen::default();
        let tls = "WARN raftlog::node::security: TLS is not configured ([tls]): ...";
        let auth = "WARN raftlog::node::security: no [auth] tokens_file: ...";
        assert!(seen.show(tls));
        assert!(seen.show(auth));
        assert!(!seen.show(tls), "the second node's copy is dropped");
        assert!(!seen.show(auth));
        assert!(seen.show("INFO starting"));
        assert!(seen.show("INFO starting"), "ordinary lines always show");
    }
}
