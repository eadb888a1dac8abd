//! The node: the replication-manager controller and the managers around the core.
//!
//! The controller (`controller`, with its child modules: command handlers in
//! `commands`, `Ready` handling in `persist`, observation in `observe`) owns the
//! consensus core, the state machine, the waiting requests and these managers,
//! each with private state and a narrow API, and routes events between them:
//! - `cluster`: membership view, peer addresses, joins, learner promotion;
//! - `persistence`: the WAL store, the Ready job, stalled retry, durable
//!   term/vote, the hard-state file;
//! - `replication`: the latest local snapshot, when to take the next, snapshot
//!   streams for followers;
//! - `heartbeat`: when peers were last heard, heartbeat round trips;
//! - `health`: disk and fsync health (may hand leadership over);
//! - `bootstrap`: found, join (the join loop) or recover, at start.
//!
//! Who depends on whom (no circles; checked by the `use` lines):
//! - `interface` (commands, `Outbound`, `Shared`, configs) → `waiters`;
//! - `cluster`, `bootstrap` → `interface`; `persistence` → `faults`;
//!   `old_reads` → `waiters`; `replication`, `heartbeat`, `health`, `security`,
//!   `waiters` → nothing in `node`;
//! - `controller` → the managers, `interface`, `waiters`, `old_reads`, `faults`
//!   (never the other way round);
//!   its children `commands`, `persist`, `observe` are impl blocks of it (they
//!   see its private fields; nothing outside the controller does), and so are
//!   its test-only children `testdrive` (a deterministic driver) and `tests`;
//! - `handle` (with its child `follow`) → `interface`; `faults` → `interface`;
//! - `runtime` → everything above (it wires a node together).
//!
//! Outside `node`: everything here may use `crate::api`, `crate::core` and
//! `crate::transport`; neither of those uses `node`.

pub mod bootstrap;
pub mod cluster;
pub mod controller;
pub mod faults;
pub mod handle;
pub mod health;
pub mod heartbeat;
pub mod interface;
pub mod old_reads;
pub mod persistence;
pub mod replication;
pub mod runtime;
pub mod security;
pub mod waiters;
pub use runtime::run;
