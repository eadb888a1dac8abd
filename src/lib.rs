//! raftlog: a replicated, durable, totally ordered message log over Raft.
//!
//! Layers, from the inside out: `core` (deterministic consensus), `wal` (durable
//! storage), `state_machine` (the message log with dense offsets), `node` (the
//! replication-manager controller and its managers), `transport` (gRPC), `http`
//! (client API), `config`.
//!
//! Who depends on whom (no module imports one that imports it back):
//! - `api` (the client-facing request, answer and error types, and the
//!   `NodeApi` trait) depends only on `core`; `config`, `transport`, `node` and
//!   `http` all use it;
//! - `transport` depends on `core` and `api`, never on `node`;
//! - `node` depends on `core`, `wal`, `state_machine`, `api` and `transport`;
//! - `http` depends on `api` and `node` (the fault switch), never on `transport`.

pub mod alloc;
pub mod api;
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
