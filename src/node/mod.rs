//! The node: the replication-manager controller and the managers around the core.
//!
//! The controller (`controller`, with its command handlers in `commands`, its
//! `Ready` handling in `persist` and its observation in `observe`) owns the
//! consensus core, the state machine, the waiting requests and these managers,
//! each with private state and a narrow API, and routes events between them:
//! - `cluster`: membership view, peer addresses, joins, learner promotion;
//! - `persistence`: the WAL store, the Ready job, stalled retry, durable
//!   term/vote, the hard-state file;
//! - `replication`: the latest local snapshot, when to take the next, snapshot
//!   streams for followers;
//! - `heartbeat`: when peers were last heard, heartbeat round trips;
//! - `health`: disk and fsync health (may hand leadership over);
//! - `bootstrap`: found, join or recover, before the controller starts.
//!
//! Who depends on whom (no circles; checked by the `use` lines):
//! - `interface` (commands, `Outbound`, `Shared`, configs) → `waiters`;
//! - `cluster` → `interface`; `persistence` → `faults`; `replication`,
//!   `heartbeat`, `health`, `bootstrap`, `security` → nothing in `node`;
//! - `controller` → the managers, `interface`, `waiters`, `old_reads`, `faults`;
//!   `commands`, `persist`, `observe` → `controller` (impl blocks of it; the
//!   controller does not import them);
//! - `handle` (with its child `follow`) → `interface`; `faults` → `interface`;
//! - `runtime` → everything above (it wires a node together).
//!
//! Outside `node`: everything here may use `crate::api`, `crate::core` and
//! `crate::transport`; neither of those uses `node`.

pub mod bootstrap;
pub mod cluster;
pub mod commands;
pub mod controller;
pub mod faults;
pub mod handle;
pub mod health;
pub mod heartbeat;
pub mod interface;
pub mod observe;
pub mod old_reads;
pub mod persist;
pub mod persistence;
pub mod replication;
pub mod runtime;
pub mod security;
pub mod waiters;
/// The client-facing types live in [`crate::api`] (shared with `transport` and
/// `config`); this name stays for the HTTP layer and the tests that import them
/// from here.
pub use crate::api;
pub use runtime::run;
