//! The node: the replication-manager controller and the managers around the core.

pub mod api;
