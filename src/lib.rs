//! raftlog: a replicated, durable, totally ordered message log over Raft.
//!
//! Layers, from the inside out: `core` (deterministic consensus), `wal` (durable
//! storage), `state_machine` (the message log with dense offsets), `node` (the
//! replication-manager controller and its managers), `transport` (gRPC), `http`
//! (client API), `config`.

pub mod backoff;
pub mod bench;
pub mod certs;
pub mod cli;
pub mod client;
pub mod config;
pub mod core;
pub mod dev;
pub mod durable;
pub mod hardstate;
pub mod http;
pub mod incarnation;
pub mod listen;
pub mod metrics;
pub mod msgstore;
pub mod node;
pub mod state_machine;
pub mod tls;
pub mod transport;
pub mod wal;
