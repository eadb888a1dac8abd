//! Streamed snapshot install: a leader's store (several segments, trimmed) sent
//! as a stream, staged and installed by a follower; corruption refused; a crash
//! at each step of the install leaves a node that restarts to the old or the new
//! state.

use super::*;
use crate::core::{Entry, EntryPayload};
use crate::msgstore::MessageStore;
use crate::state_machine::{full_payload, Command};
use std::path::Path;

const SEGMENT: u64 = 4096;

use crate::state_machine::tests::cmd;

fn disk_sm(dir: &Path, install: &Path) -> StateMachine {
    let store = MessageStore::open(dir, SEGMENT, 0).unwrap();
    let mut sm = StateMachine::with_store(16, store);
    sm.set_install_dir(install.to_path_buf());
    sm
}

/// A leader with messages over many segments, the first 100 trimmed and released.
fn leader(dir: &Path) -> (StateMachine, Bytes) {
    let mut sm = disk_sm(dir, &dir.join("unused"));
    let mut index = 0;
    for i in 0..600 {
        index += 1;
        let key = format!("k{i}");
        sm.apply(&cmd(
            index,
            Some(&key),
            &format!("message {i} {}", "x".repeat(i % 97)),
        ));
    }
    index += 1;
    let trim = Command::Trim {
        before: 100,
        by_policy: false,
    };
    sm.apply(&Entry {
        index,
        term: 1,
        payload: EntryPayload::Command(trim.encode()),
    });
    let (manifest, sync) = sm.manifest().unwrap();
    sync.run().unwrap();
    sm.synced();
    assert!(segments(dir) > 5, "the log spans several segments");
    (sm, manifest)
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("seg".as_ref()))
        .count()
}

/// The stream's bytes written to `path` as the transport would leave them.
fn receive(stream: &SnapshotStream, path: &Path) {
    let mut buf = vec![0u8; stream.len() as usize];
    // Odd-sized reads cross segment and trailer boundaries.
    let mut at = 0;
    while at < buf.len() {
        let n = 1000.min(buf.len() - at);
        stream.read_at(at as u64, &mut buf[at..at + n]).unwrap();
        at += n;
    }
    crate::durable::write_file_durable(path, &buf).unwrap();
}

fn assert_same(a: &StateMachine, b: &StateMachine) {
    assert_eq!(a.applied_index(), b.applied_index());
    assert_eq!(
        (a.first_offset(), a.next_offset()),
        (b.first_offset(), b.next_offset())
    );
    assert_eq!(a.read(0, 10_000).unwrap(), b.read(0, 10_000).unwrap());
    assert_eq!(a.lookup_key("k599"), b.lookup_key("k599"));
}

struct Follower {
    tmp: tempfile::TempDir,
}

impl Follower {
    /// A follower that applied a few entries of its own and took a snapshot of
    /// them (the old state): it and its manifest.
    fn new() -> (Self, Bytes) {
        let tmp = tempfile::tempdir().unwrap();
        crate::durable::create_dir_durable(&tmp.path().join("incoming")).unwrap();
        let f = Follower { tmp };
        let mut sm = f.open();
        sm.reset().unwrap();
        for i in 1..=3 {
            sm.apply(&cmd(i, None, "old"));
        }
        let (old, sync) = sm.manifest().unwrap();
        sync.run().unwrap();
        sm.synced();
        (f, old)
    }
    fn messages(&self) -> std::path::PathBuf {
        self.tmp.path().join("messages")
    }
    fn incoming(&self) -> std::path::PathBuf {
        self.tmp.path().join("incoming")
    }
    fn open(&self) -> StateMachine {
        disk_sm(&self.messages(), &self.incoming())
    }
    /// Receives and stages the leader's stream; returns the manifest.
    fn stage(&self, stream: &SnapshotStream, index: u64) -> Bytes {
        let path = self.incoming().join("snap-a.1-2-3.snap");
        receive(stream, &path);
        stage_received(&path, index, &self.incoming()).unwrap()
    }
    fn incoming_files(&self) -> usize {
        std::fs::read_dir(self.incoming()).unwrap().count()
    }
}

#[test]
fn a_streamed_snapshot_installs_the_leaders_state() {
    let ltmp = tempfile::tempdir().unwrap();
    let (mut l, manifest) = leader(ltmp.path());
    let stream = SnapshotStream::new(&manifest, &l.reader(u64::MAX).unwrap()).unwrap();
    // Messages appended after the snapshot are not part of its stream.
    l.apply(&cmd(l.applied_index() + 1, None, "later"));
    let l = {
        let mut at_snapshot = disk_sm(&ltmp.path().join("copy"), ltmp.path());
        at_snapshot.restore(l.snapshot_at(&manifest)).unwrap();
        at_snapshot
    };
    let (f, _) = Follower::new();
    let received = f.stage(&stream, l.applied_index());
    assert_eq!(received, manifest, "only the manifest goes to Raft");
    let mut sm = f.open();
    sm.install_received(received.clone()).unwrap();
    assert_same(&l, &sm);
    assert_eq!(f.incoming_files(), 0, "nothing staged is left");
    // After a restart the store and the manifest agree.
    drop(sm);
    let mut again = f.open();
    again.restore(received).unwrap();
    assert_same(&l, &again);
    // New messages append after the installed ones (in a segment of their own).
    again.apply(&cmd(l.applied_index() + 1, None, "new"));
    assert_eq!(again.read(600, 1).unwrap(), vec![(600, Bytes::from("new"))]);
    crate::durable::record::assert_durable(f.tmp.path());
}

#[test]
fn a_corrupt_record_or_trailer_is_refused_and_removed() {
    let ltmp = tempfile::tempdir().unwrap();
    let (mut l, manifest) = leader(ltmp.path());
    let stream = SnapshotStream::new(&manifest, &l.reader(u64::MAX).unwrap()).unwrap();
    let (f, _) = Follower::new();
    let path = f.incoming().join("snap-a.1-2-3.snap");
    // A record, the magic, the manifest length, the manifest.
    for flip in [
        100u64,
        stream.len() - 3,
        stream.len() - 20,
        stream.len() - 30,
    ] {
        receive(&stream, &path);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[flip as usize] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let err = stage_received(&path, l.applied_index(), &f.incoming()).unwrap_err();
        assert!(err.contains("snapshot"), "{err}");
        assert_eq!(f.incoming_files(), 0, "the corrupt file is removed");
    }
    // A stream for another index is refused too.
    receive(&stream, &path);
    assert!(stage_received(&path, l.applied_index() + 1, &f.incoming()).is_err());
    // A stream of an earlier version (records with the `.msg` checksum) is
    // refused by name, not read as damaged records.
    receive(&stream, &path);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 8..].copy_from_slice(OLD_MAGIC);
    std::fs::write(&path, bytes).unwrap();
    let err = stage_received(&path, l.applied_index(), &f.incoming()).unwrap_err();
    assert!(err.contains("earlier raftlog version"), "{err}");
    assert_eq!(f.incoming_files(), 0);
    // The follower's own state is untouched.
    assert_old(&f.open());
}

/// The follower's old state: its 3 messages.
fn assert_old(sm: &StateMachine) {
    let old = sm.read(0, 10).unwrap();
    assert_eq!(old.len(), 3);
    assert!(old.iter().all(|(_, m)| m == "old"));
}

impl StateMachine {
    /// The full payload of `manifest`'s state (the leader's messages up to its next).
    fn snapshot_at(&mut self, manifest: &Bytes) -> Bytes {
        full_payload(manifest, &self.reader(u64::MAX).unwrap()).unwrap()
    }
}

/// The install's steps: staged (1), WAL mark (2), old segments removed (3),
/// renamed in (4). A crash after each restarts to a consistent state.
#[test]
fn a_crash_at_any_step_of_the_install_restarts_consistently() {
    let ltmp = tempfile::tempdir().unwrap();
    let (mut l, manifest) = leader(ltmp.path());
    let stream = SnapshotStream::new(&manifest, &l.reader(u64::MAX).unwrap()).unwrap();
    // Crash after staging, before the WAL mark: the old state; the staged file
    // waits for a later install or restore at or past its index.
    let (f, old) = Follower::new();
    let received = f.stage(&stream, l.applied_index());
    let mut sm = f.open();
    sm.restore(old).unwrap();
    assert_old(&sm);
    assert_eq!(f.incoming_files(), 2, "the staged segment and its index");

    // Crash after the WAL mark, before anything moved: the restart finishes it.
    let (f, _) = Follower::new();
    let received2 = f.stage(&stream, l.applied_index());
    assert_eq!(received, received2);
    let mut sm = f.open();
    sm.restore(received.clone()).unwrap();
    assert_same(&l, &sm);
    assert_eq!(f.incoming_files(), 0);

    // Crash with the old segments removed, the staged one not yet renamed in.
    let (f, _) = Follower::new();
    f.stage(&stream, l.applied_index());
    for e in std::fs::read_dir(f.messages()).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let mut sm = f.open();
    sm.restore(received.clone()).unwrap();
    assert_same(&l, &sm);

    // Crash after the rename, before the index moved: the segment is scanned.
    let (f, _) = Follower::new();
    f.stage(&stream, l.applied_index());
    let mut sm = f.open();
    sm.install_received(received.clone()).unwrap();
    drop(sm);
    let idx: Vec<_> = std::fs::read_dir(f.messages())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some("idx".as_ref()))
        .collect();
    for p in idx {
        std::fs::remove_file(p).unwrap();
    }
    let mut sm = f.open();
    sm.restore(received).unwrap();
    assert_same(&l, &sm);
}

/// A crash after the WAL holds a received manifest but before its staged messages
/// moved in is not damage: startup's coverage check (`node::bootstrap`, which
/// would otherwise discard the node's state and repair) counts the staged file.
#[test]
fn a_staged_install_counts_as_held_at_startup() {
    let ltmp = tempfile::tempdir().unwrap();
    let (mut l, manifest) = leader(ltmp.path());
    let stream = SnapshotStream::new(&manifest, &l.reader(u64::MAX).unwrap()).unwrap();
    let (f, _) = Follower::new();
    let covers = |f: &Follower, m: &Bytes| {
        let store = MessageStore::open(&f.messages(), SEGMENT, 0).unwrap();
        crate::state_machine::store_covers_manifest(&store, m, &f.incoming())
    };
    let received = f.stage(&stream, l.applied_index());
    covers(&f, &received).expect("a staged install is held");
    let staged: Vec<_> = std::fs::read_dir(f.incoming()).unwrap().collect();
    for e in staged {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let err = covers(&f, &received).expect_err("nothing staged: damaged");
    assert!(err.contains("damaged"), "{err}");
}
