//! The node: the replication-manager controller and the managers around the core.

pub mod api;
pub mod bootstrap;
pub mod cluster;
pub mod commands;
pub mod controller;
pub mod faults;
pub mod follow;
pub mod handle;
pub mod health;
pub mod interface;
pub mod observe;
pub mod old_reads;
pub mod persist;
pub mod persistence;
pub mod replication;
pub mod runtime;
pub mod security;
pub mod waiters;
pub use runtime::run;
