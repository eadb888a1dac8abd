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
//!
//! **Repair** (see `repair` below and `core::repair`): a WAL that fails with
//! `Corrupt`, or a message store that no longer holds what the snapshot names,
//! is damage below what this node made durable. The node keeps its term and vote
//! (from the `hardstate` file), discards its log, snapshot and messages, and
//! starts repairing. If the hard-state file cannot give term and vote either, it
//! refuses to start and says how to replace it.

use super::interface::Cmd;
use crate::backoff::Backoff;
use crate::config::Config;
use crate::core::{Entry, EntryPayload, HardState, Member, Membership};
use crate::hardstate::{self, Record};
use crate::transport::{ClusterId, JoinRequest, Peers};
use crate::wal::{DiskStore, LogStore, WalError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

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

/// The cluster id, if the file exists. Its second line, `crc32c:<hex>`, is the
/// checksum of the id (files written before it was added have one line and are
/// taken as they are); a mismatch is an error, never a different cluster.
pub fn read_cluster_id(data_dir: &Path) -> Result<Option<String>, String> {
    let path = cluster_id_path(data_dir);
    let s = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut lines = s.lines();
    let id = lines.next().unwrap_or("").trim().to_string();
    if let Some(sum) = lines.next().map(str::trim).filter(|l| !l.is_empty()) {
        let want = format!("crc32c:{:08x}", crc32c::crc32c(id.as_bytes()));
        if sum != want {
            return Err(format!(
                "{} is damaged (checksum mismatch): copy it from another node of the \
                 cluster (every node holds the same id)",
                path.display()
            ));
        }
    }
    Ok((!id.is_empty()).then_some(id))
}

/// Write the cluster id (and its checksum) durably (temp file, fsync, rename,
/// directory fsync).
pub fn write_cluster_id(data_dir: &Path, id: &str) -> std::io::Result<()> {
    let body = format!("{id}\ncrc32c:{:08x}\n", crc32c::crc32c(id.as_bytes()));
    crate::durable::write_file_durable(&cluster_id_path(data_dir), body.as_bytes())
}

pub fn new_cluster_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// What `open` found.
pub struct Opened {
    pub store: DiskStore,
    pub mode: StartMode,
    pub cluster_id: Option<String>,
    /// Repairing: the peer addresses the hard-state file remembered.
    pub repairing: Option<BTreeMap<String, String>>,
}

/// Open the WAL and decide the start mode; a founding node writes its first
/// membership here; a damaged node discards its log and starts repairing.
pub fn open(cfg: &Config) -> Result<Opened, String> {
    // Created durably, and synced even when it exists: `wal/`, `messages/` and
    // `cluster_id` may have been made by a run that never synced it.
    crate::durable::create_dir_durable(&cfg.data_dir)
        .and_then(|_| crate::durable::sync_dir(&cfg.data_dir))
        .map_err(|e| format!("cannot create data_dir {}: {e}", cfg.data_dir.display()))?;
    let file = hardstate::read(&cfg.data_dir);
    if let Err(e) = &file {
        tracing::error!(error = %e, "hard-state file damaged; the WAL must stand in for it");
    }
    let (mut store, damage) = match DiskStore::open(&wal_dir(cfg), cfg.wal.segment_bytes) {
        Ok(store) => {
            let damage = messages_damage(cfg, &store);
            (Some(store), damage)
        }
        Err(e @ WalError::Corrupt { .. }) => (None, Some(e.to_string())),
        Err(e) => return Err(e.to_string()),
    };
    let was_repairing = file
        .as_ref()
        .is_ok_and(|f| f.as_ref().is_some_and(|r| r.repairing));
    if let Some(damage) = damage {
        let rec = file.map_err(|e| refuse(cfg, &damage, &e))?;
        let rec = rec.ok_or_else(|| refuse(cfg, &damage, "no hardstate file"))?;
        drop(store);
        return repair(cfg, rec, &damage);
    }
    let mut store = store.take().expect("opened");
    let rec = store.recovered();
    let has_state = rec.hard_state.term > 0 || !rec.entries.is_empty() || rec.snapshot.is_some();
    let cluster_id = read_cluster_id(&cfg.data_dir)?;
    if has_state {
        if cluster_id.is_none() {
            return Err(format!(
                "{} holds Raft state but no cluster_id file",
                cfg.data_dir.display()
            ));
        }
        let file = file.ok().flatten();
        let store = merge_hard_state(cfg, store, file.clone())?;
        let repairing = was_repairing.then(|| file.map(|f| f.peers).unwrap_or_default());
        if repairing.is_some() {
            tracing::warn!("resuming an unfinished repair: not voting until caught up");
        }
        return Ok(Opened {
            store,
            mode: StartMode::Recover,
            cluster_id,
            repairing,
        });
    }
    if was_repairing {
        let rec = file.ok().flatten().expect("read above");
        return repair(cfg, rec, "an unfinished repair with an empty log");
    }
    if !cfg.bootstrap {
        if cfg.join.is_empty() {
            return Err("empty data_dir and neither bootstrap nor join is set".into());
        }
        return Ok(Opened {
            store,
            mode: StartMode::Join,
            cluster_id,
            repairing: None,
        });
    }
    let id = cluster_id.unwrap_or_else(new_cluster_id);
    write_cluster_id(&cfg.data_dir, &id).map_err(|e| format!("cannot write cluster_id: {e}"))?;
    found(cfg, &mut store).map_err(|e| e.to_string())?;
    drop(store);
    // Reopen so `recovered()` holds the founding state, exactly as after a restart.
    let store = DiskStore::open(&wal_dir(cfg), cfg.wal.segment_bytes).map_err(|e| e.to_string())?;
    let store = merge_hard_state(cfg, store, None)?;
    Ok(Opened {
        store,
        mode: StartMode::Found,
        cluster_id: Some(id),
        repairing: None,
    })
}

/// The operator message when term and vote are lost with the log.
fn refuse(cfg: &Config, damage: &str, hs: &str) -> String {
    format!(
        "{damage}; and the term and vote cannot be recovered ({hs}), so this node must not \
         vote again under its id: remove it from the cluster through a membership change \
         (DELETE /v1/cluster/members/{id} on the leader), then add a node with an empty \
         data directory (under a new id, or this one once the removal committed)",
        id = cfg.node_id
    )
}

/// Term and vote: the newest of the WAL's and the file's. The file is brought up
/// to date when it is older or missing; a newer file is written into the WAL.
fn merge_hard_state(
    cfg: &Config,
    mut store: DiskStore,
    file: Option<Record>,
) -> Result<DiskStore, String> {
    let wal = store.recovered().hard_state.clone();
    let newest = |r: &Record| (r.term, r.vote.is_some()) > (wal.term, wal.vote.is_some());
    match file {
        Some(f) if newest(&f) => {
            tracing::warn!(
                term = f.term,
                "the hard-state file is newer than the WAL: using it"
            );
            let hs = HardState {
                term: f.term,
                vote: f.vote,
                commit: wal.commit,
            };
            store
                .set_hard_state(&hs)
                .and_then(|_| store.sync())
                .map_err(|e| e.to_string())?;
            drop(store);
            DiskStore::open(&wal_dir(cfg), cfg.wal.segment_bytes).map_err(|e| e.to_string())
        }
        Some(f) if (f.term, &f.vote) == (wal.term, &wal.vote) => Ok(store),
        f => {
            let rec = Record {
                term: wal.term,
                vote: wal.vote,
                repairing: f.as_ref().is_some_and(|f| f.repairing),
                peers: f.map(|f| f.peers).unwrap_or_default(),
            };
            hardstate::write(&cfg.data_dir, &rec).map_err(|e| format!("hardstate: {e}"))?;
            Ok(store)
        }
    }
}

/// Does the message store hold what the WAL's snapshot names? `Some(why)` if not.
fn messages_damage(cfg: &Config, store: &DiskStore) -> Option<String> {
    let snap = store.recovered().snapshot.as_ref()?;
    if !crate::state_machine::is_manifest(&snap.data) {
        return None;
    }
    let dir = cfg.data_dir.join("messages");
    let ms = match crate::msgstore::MessageStore::open(&dir, cfg.wal.segment_bytes, 0) {
        Ok(ms) => ms,
        Err(e) => return Some(format!("message store {}: {e}", dir.display())),
    };
    let staging = cfg.data_dir.join("snap-incoming");
    crate::state_machine::store_covers_manifest(&ms, &snap.data, &staging).err()
}

/// Discard the damaged log, snapshot and messages, keeping term and vote, and
/// come up repairing with an empty log. The repairing mark is durable before
/// anything is discarded, so a crash in between repairs again.
fn repair(cfg: &Config, mut rec: Record, damage: &str) -> Result<Opened, String> {
    tracing::error!(damage, term = rec.term, vote = ?rec.vote,
        "damaged state below what this node made durable: discarding its log, snapshot \
         and messages, keeping term and vote, and repairing from the leader (not voting \
         until caught up)");
    rec.repairing = true;
    hardstate::write(&cfg.data_dir, &rec).map_err(|e| format!("hardstate: {e}"))?;
    let err = |e: std::io::Error| format!("discarding damaged state: {e}");
    crate::durable::discard_dir(&wal_dir(cfg)).map_err(err)?;
    crate::durable::discard_dir(&cfg.data_dir.join("messages")).map_err(err)?;
    let mut store =
        DiskStore::open(&wal_dir(cfg), cfg.wal.segment_bytes).map_err(|e| e.to_string())?;
    let hs = HardState {
        term: rec.term,
        vote: rec.vote.clone(),
        commit: 0,
    };
    store
        .set_hard_state(&hs)
        .and_then(|_| store.sync())
        .map_err(|e| e.to_string())?;
    drop(store);
    let store = DiskStore::open(&wal_dir(cfg), cfg.wal.segment_bytes).map_err(|e| e.to_string())?;
    Ok(Opened {
        store,
        mode: StartMode::Recover,
        cluster_id: read_cluster_id(&cfg.data_dir)?,
        repairing: Some(rec.peers),
    })
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

/// Must this node ask to join? When it starts in `Join` mode, or when it is not
/// in the membership it knows (`member`) and has join targets.
pub fn must_join(cfg: &Config, mode: &StartMode, member: bool) -> bool {
    *mode == StartMode::Join || (!member && !cfg.join.is_empty())
}

/// The join loop's needs: whom to ask, as whom, and the controller to tell
/// which leader accepted us.
pub struct Joiner {
    pub cfg: Config,
    pub peers: Arc<Peers>,
    pub cluster_id: ClusterId,
    pub controller: mpsc::Sender<Cmd>,
}

impl Joiner {
    /// Join in the background (the controller runs meanwhile, so the node
    /// answers 503 while it waits), until accepted or `stop`.
    pub fn spawn(self, mut stop: watch::Receiver<bool>) {
        tokio::spawn(async move {
            match join(&self.cfg, &self.peers, &self.cluster_id, &mut stop).await {
                Ok(leader) => {
                    let _ = self.controller.send(Cmd::AddPeers { peers: leader }).await;
                }
                Err(e) => tracing::error!(error = %e, "join failed"),
            }
        });
    }
}

/// Ask the join targets to add us, until one leader does. Capped, jittered backoff.
/// Returns the leader that accepted us, so we can answer it before we learn the
/// membership from the log.
async fn join(
    cfg: &Config,
    peers: &Peers,
    cluster_id: &ClusterId,
    stop: &mut watch::Receiver<bool>,
) -> Result<BTreeMap<String, String>, String> {
    let req = JoinRequest {
        node_id: cfg.node_id.clone(),
        grpc_addr: cfg.advertised_grpc_addr().to_string(),
        http_addr: cfg.advertised_http_addr().to_string(),
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(3));
    let mut targets: Vec<String> = cfg.join.clone();
    loop {
        for addr in targets.clone() {
            match peers.join(&addr, &req).await {
                Ok(o) if o.ok => {
                    if !o.cluster_id.is_empty() {
                        write_cluster_id(&cfg.data_dir, &o.cluster_id)
                            .map_err(|e| format!("cluster_id: {e}"))?;
                        cluster_id.set(o.cluster_id);
                    }
                    tracing::info!(via = %addr, "joined the cluster as a learner");
                    let leader = o.leader_id.zip(o.leader_grpc_addr);
                    return Ok(leader.into_iter().collect());
                }
                Ok(o) => {
                    tracing::info!(via = %addr, error = ?o.error, leader = ?o.leader_id, "join refused; retrying");
                    if let Some(l) = o.leader_grpc_addr {
                        if !targets.contains(&l) {
                            targets.insert(0, l);
                        }
                    }
                }
                Err(e) => {
                    tracing::info!(via = %addr, error = %e, "join target unreachable; retrying")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {},
            _ = stop.wait_for(|stopped| *stopped) => return Err("stopped while joining".into()),
        }
        let _ = stop.borrow_and_update();
    }
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
        let o = open(&cfg).unwrap();
        assert_eq!(o.mode, StartMode::Found);
        assert_eq!(read_cluster_id(&cfg.data_dir), Ok(o.cluster_id));
        let hs = hardstate::read(&cfg.data_dir).unwrap().expect("written");
        assert_eq!((hs.term, hs.vote.as_deref()), (1, Some("n1")));
        assert_durable(tmp.path());
    }

    /// A founded node with a few sealed WAL segments, term 5 and a vote for n2.
    fn damaged_candidate(tmp: &Path) -> Config {
        let mut cfg = Config {
            node_id: "n1".into(),
            data_dir: tmp.join("n1"),
            bootstrap: true,
            ..Config::default()
        };
        cfg.wal.segment_bytes = 1024;
        open(&cfg).unwrap();
        let mut store = DiskStore::open(&wal_dir(&cfg), cfg.wal.segment_bytes).unwrap();
        for index in 2..200 {
            let e = Entry {
                index,
                term: 1,
                payload: EntryPayload::Command(vec![7u8; 100].into()),
            };
            store.append(&[e]).unwrap();
            store.sync().unwrap();
        }
        let hs = HardState {
            term: 5,
            vote: Some("n2".into()),
            commit: 199,
        };
        store.set_hard_state(&hs).unwrap();
        store.sync().unwrap();
        drop(store);
        let o = open(&cfg).unwrap();
        assert!(o.repairing.is_none());
        cfg
    }

    /// Flip one byte in the middle of the oldest (sealed) WAL segment.
    fn flip_in_first_segment(cfg: &Config) {
        let mut segs: Vec<_> = std::fs::read_dir(wal_dir(cfg).join("wal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        segs.sort();
        assert!(segs.len() > 2, "sealed segments exist");
        let mut b = std::fs::read(&segs[0]).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x10;
        std::fs::write(&segs[0], b).unwrap();
    }

    #[test]
    fn a_damaged_wal_keeps_term_and_vote_and_starts_repairing() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = damaged_candidate(tmp.path());
        hardstate::write(
            &cfg.data_dir,
            &Record {
                peers: [("n2".into(), "127.0.0.1:9".into())].into(),
                ..hardstate::read(&cfg.data_dir).unwrap().unwrap()
            },
        )
        .unwrap();
        flip_in_first_segment(&cfg);
        let mut o = open(&cfg).unwrap();
        let peers = o.repairing.take().expect("repairing");
        assert_eq!(peers.get("n2").map(String::as_str), Some("127.0.0.1:9"));
        let rec = o.store.take_recovered();
        assert_eq!(
            (rec.hard_state.term, rec.hard_state.vote.as_deref()),
            (5, Some("n2"))
        );
        assert!(rec.entries.is_empty() && rec.snapshot.is_none());
        assert!(hardstate::read(&cfg.data_dir).unwrap().unwrap().repairing);
        drop(o);
        // Restarted before catching up: still repairing (the log is not damaged now).
        let o = open(&cfg).unwrap();
        assert!(
            o.repairing.is_some(),
            "the repairing mark survives a restart"
        );
    }

    #[test]
    fn a_damaged_wal_without_a_readable_hard_state_refuses_to_start() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = damaged_candidate(tmp.path());
        let mut b = std::fs::read(hardstate::path(&cfg.data_dir)).unwrap();
        b[9] ^= 1;
        std::fs::write(hardstate::path(&cfg.data_dir), b).unwrap();
        flip_in_first_segment(&cfg);
        let e = open(&cfg).err().expect("refused");
        assert!(e.contains("corrupt WAL record"), "{e}");
        assert!(e.contains("membership change"), "{e}");
        assert!(wal_dir(&cfg).join("wal").exists(), "nothing discarded");
    }

    #[test]
    fn a_damaged_hard_state_file_is_rewritten_from_a_sound_wal() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = damaged_candidate(tmp.path());
        std::fs::write(hardstate::path(&cfg.data_dir), [0u8; 4096]).unwrap();
        let o = open(&cfg).unwrap();
        assert!(o.repairing.is_none());
        let rec = hardstate::read(&cfg.data_dir).unwrap().unwrap();
        assert_eq!((rec.term, rec.vote.as_deref()), (5, Some("n2")));
    }

    #[test]
    fn a_damaged_cluster_id_is_an_error_and_an_old_one_line_file_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        write_cluster_id(tmp.path(), "abc123").unwrap();
        assert_eq!(read_cluster_id(tmp.path()), Ok(Some("abc123".into())));
        let path = cluster_id_path(tmp.path());
        let damaged = std::fs::read_to_string(&path)
            .unwrap()
            .replace("abc", "abd");
        std::fs::write(&path, damaged).unwrap();
        let e = read_cluster_id(tmp.path()).unwrap_err();
        assert!(e.contains("damaged"), "{e}");
        std::fs::write(&path, "old-format-id\n").unwrap();
        assert_eq!(
            read_cluster_id(tmp.path()),
            Ok(Some("old-format-id".into()))
        );
    }
}
