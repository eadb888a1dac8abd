//! The nemesis harness of `tests/jepsen.rs`: a real cluster, one `raftlog serve`
//! per network namespace, clients in a namespace of their own, a seeded schedule
//! of network and process faults, and a checker over the recorded history and
//! the final logs.
//!
//! - [`net`]: namespaces, bridge, nft partitions (two-way and one-way), loss,
//!   NFQUEUE delay (`nfq_delay.py`); the recipe of `shared/faults/`.
//! - [`cluster`]: the node processes (start, SIGKILL, SIGSTOP/SIGCONT, replace)
//!   and status/membership views.
//! - [`http`]: a one-request-per-connection HTTP client that tells "never sent"
//!   from "outcome unknown".
//! - [`workload`]: writer and reader clients; [`history`]: what they recorded.
//! - [`nemesis`]: the schedule and its execution; [`checker`]: the checks;
//!   [`failover`]: how long requests waited when the leader failed.
//! - [`run`]: one run end to end, its summary and failure report.

pub mod checker;
pub mod cluster;
pub mod damage;
#[path = "../common/diskdamage.rs"]
pub mod diskdamage;
pub mod failover;
pub mod history;
pub mod http;
pub mod nemesis;
pub mod net;
pub mod run;
pub mod workload;
