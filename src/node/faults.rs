//! Fault injection for tests and operators' drills. Off unless the config says
//! `[debug] fault_injection = true`; then `/v1/debug/faults` reads and sets it.
//!
//! - `fsync_delay_ms`: every WAL sync takes this much longer (a slow disk);
//! - `fsync_fail`: every WAL write fails with ENOSPC (a full disk);
//! - `drop_to`: Raft messages to these peers are dropped;
//! - `delay_to_ms`: Raft messages to a peer are delayed (order may change);
//! - `msgstore_read_delay_ms`: every read of messages no longer in the message
//!   store's cache takes this much longer (a slow message-store disk);
//! - `msgstore_write_delay_ms`: the message store's writer thread sleeps this
//!   long before each batch of writes (a stalled message-store disk: appends
//!   and seals wait, heartbeats and votes must not).

use crate::core::{Envelope, NodeId};
use crate::node::interface::Outbound;
use crate::transport::SnapshotSource;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    pub fsync_delay_ms: u64,
    pub fsync_fail: bool,
    pub drop_to: BTreeSet<NodeId>,
    pub delay_to_ms: BTreeMap<NodeId, u64>,
    pub msgstore_read_delay_ms: u64,
    pub msgstore_write_delay_ms: u64,
}

/// Shared, switchable faults.
#[derive(Clone, Default)]
pub struct FaultSwitch(Arc<RwLock<Faults>>);

impl FaultSwitch {
    pub fn get(&self) -> Faults {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn set(&self, f: Faults) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = f;
    }
}

impl FaultSwitch {
    /// The message store's writer delay, as a hook for `msgstore`.
    pub fn write_delay(&self) -> crate::msgstore::WriteDelay {
        let f = self.clone();
        Arc::new(move || Duration::from_millis(f.get().msgstore_write_delay_ms))
    }
}

/// An `Outbound` that applies the message faults (when enabled) before the real
/// transport. With fault injection off it adds nothing but a branch.
pub struct FaultyOutbound<O> {
    pub inner: Arc<O>,
    pub faults: Option<FaultSwitch>,
}

impl<O: Outbound + Sync> FaultyOutbound<O> {
    /// Drops, delays or passes on `env` through `send`, as the faults say.
    fn faulty(&self, env: Envelope, send: impl FnOnce(&O, Envelope) + Send + 'static) {
        let Some(faults) = &self.faults else {
            return send(&self.inner, env);
        };
        let (drop, delay) = {
            let f = faults.0.read().unwrap_or_else(|e| e.into_inner());
            (
                f.drop_to.contains(&env.to),
                f.delay_to_ms.get(&env.to).copied(),
            )
        };
        if drop {
            return;
        }
        match delay {
            Some(ms) if ms > 0 => {
                let inner = self.inner.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    send(&inner, env);
                });
            }
            _ => send(&self.inner, env),
        }
    }
}

impl<O: Outbound + Sync> Outbound for FaultyOutbound<O> {
    fn send(&self, env: Envelope) {
        self.faulty(env, |o, env| o.send(env))
    }

    fn send_snapshot(&self, env: Envelope, source: Arc<dyn SnapshotSource>) {
        self.faulty(env, move |o, env| o.send_snapshot(env, source))
    }

    fn set_peers(&self, peers: BTreeMap<NodeId, String>) {
        self.inner.set_peers(peers)
    }

    fn dropped(&self) -> u64 {
        self.inner.dropped()
    }
}
