//! The bootstrap manager: decide how this node starts.
//!
//! - **Recover**: the data directory holds state; `bootstrap` and `join` are ignored.
//! - **Found**: `bootstrap = true` and an empty directory: a new cluster id, and a
//!   one-voter membership as entry 1, durable before anything else happens.
//! - **Join**: an empty directory and `join` addresses: ask them (with capped,
//!   jittered backoff, following leader hints) until a leader adds us as a learner.
//!   A node never founds a cluster because its join targets are unreachable.
//!
//! The cluster id lives in `<data_dir>/cluster_id`, written atomically before any
//! Raft state, so a node with Raft state always knows its cluster.

use crate::config::Config;
use crate::core::{Entry, EntryPayload, HardState, Member, Membership};
use crate::wal::{DiskStore, LogStore};
use std::path::{Path, PathBuf};

/// How the node starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartMode {
    Recover,
    Found,
    Join,
}

pub fn wal_dir(cfg: &Config) -> PathBuf {
    cfg.data_dir.join("wal")
}

fn cluster_id_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster_id")
}

pub fn read_cluster_id(data_dir: &Path) -> Option<String> {
    let s = std::fs::read_to_string(cluster_id_path(data_dir)).ok()?;
    let s = s.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Write the cluster id durably (temp file, fsync, rename, directory fsync).
pub fn write_cluster_id(data_dir: &Path, id: &str) -> std::io::Result<()> {
    crate::durable::write_file_durable(&cluster_id_path(data_dir), id.as_bytes())
}

pub fn new_cluster_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Open the WAL and decide the start mode; a founding node writes its first
/// membership here.
pub fn open(cfg: &Config) -> Result<(DiskStore, StartMode, Option<String>), String> {
    // Created durably, and synced even when it exists: `wal/`, `messages/` and
    // `cluster_id` may have been made by a run that never synced it.
    crate::durable::create_dir_durable(&cfg.data_dir)
        .and_then(|_| crate::durable::sync_dir(&cfg.data_dir))
        .map_err(|e| format!("cannot create data_dir {}: {e}", cfg.data_dir.display()))?;
    let mut store =
        DiskStore::open(&wal_dir(cfg), cfg.wal.segment_bytes).map_err(|e| e.to_string())?;
    let rec = store.recovered();
    let has_state = rec.hard_state.term > 0 || !rec.entries.is_empty() || rec.snapshot.is_some();
    let cluster_id = read_cluster_id(&cfg.data_dir);
    if has_state {
        if cluster_id.is_none() {
            return Err(format!(
                "{} holds Raft state but no cluster_id file",
                cfg.data_dir.display()
            ));
        }
        return Ok((store, StartMode::Recover, cluster_id));
    }
    if !cfg.bootstrap {
        if cfg.join.is_empty() {
            return Err("empty data_dir and neither bootstrap nor join is set".into());
        }
        return Ok((store, StartMode::Join, cluster_id));
    }
    let id = cluster_id.unwrap_or_else(new_cluster_id);
    write_cluster_id(&cfg.data_dir, &id).map_err(|e| format!("cannot write cluster_id: {e}"))?;
    found(cfg, &mut store).map_err(|e| e.to_string())?;
    drop(store);
    // Reopen so `recovered()` holds the founding state, exactly as after a restart.
    let store = DiskStore::open(&wal_dir(cfg), cfg.wal.segment_bytes).map_err(|e| e.to_string())?;
    Ok((store, StartMode::Found, Some(id)))
}

fn found(cfg: &Config, store: &mut DiskStore) -> Result<(), crate::wal::WalError> {
    let mut m = Membership::default();
    let me = Member {
        grpc_addr: cfg.advertised_grpc_addr().to_string(),
        http_addr: cfg.advertised_http_addr().to_string(),
        voter: true,
    };
    m.members.insert(cfg.node_id.clone(), me);
    store.append(&[Entry {
        index: 1,
        term: 1,
        payload: EntryPayload::Membership(m),
    }])?;
    store.set_hard_state(&HardState {
        term: 1,
        vote: Some(cfg.node_id.clone()),
        commit: 1,
    })?;
    store.sync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::record::assert_durable;

    /// A founding node: the data directory (and its missing parents), the WAL
    /// directories, the first segment and the cluster id are all durable before
    /// `open` returns.
    #[test]
    fn a_founding_node_makes_every_entry_durable() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = Config {
            node_id: "n1".into(),
            data_dir: tmp.path().join("nodes/n1"),
            bootstrap: true,
            ..Config::default()
        };
        let (_, mode, id) = open(&cfg).unwrap();
        assert_eq!(mode, StartMode::Found);
        assert_eq!(read_cluster_id(&cfg.data_dir), id);
        assert_durable(tmp.path());
    }
}
