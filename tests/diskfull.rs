//! The WAL on a disk that really fills up: a small tmpfs mounted for the test
//! (so it needs root; `scripts/test.sh` runs it with the power-loss test), where
//! `tests/health.rs` injects ENOSPC above the store.
//!
//! What a real full disk adds: the write itself fails part way (tmpfs allocates
//! a page at a time, also inside the preallocated segment, whose space a sparse
//! file does not reserve), the store undoes it, and the appends that follow
//! once space returns must land after the last synced record and nowhere else.

use raftlog::core::types::{Entry, EntryPayload};
use raftlog::wal::{DiskStore, LogStore};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

/// A tmpfs of `size` mounted on a temp dir, unmounted when dropped.
struct SmallDisk {
    dir: TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(root, "this test mounts a tmpfs: run it as root");
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount(8)");
        assert!(st.success(), "mount -t tmpfs failed: {st}");
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk with a file of its own; returns the file.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = fs::File::create(&path).unwrap();
        let block = vec![7u8; 4096];
        while f.write_all(&block).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn entry(index: u64) -> Entry {
    Entry {
        index,
        term: 1,
        payload: EntryPayload::Command(bytes::Bytes::from(vec![index as u8; 3000])),
    }
}

/// Appends fail with ENOSPC when the disk is full and nothing synced is lost;
/// the segment stays preallocated; once space returns the entries the failed
/// sync held land, then new ones, and a reopen finds exactly those in order.
#[test]
#[ignore = "needs root: mounts a tmpfs (scripts/test.sh runs it as root)"]
fn a_full_disk_fails_the_sync_keeps_what_was_synced_and_recovers() {
    let disk = SmallDisk::mount("2m");
    let dir = disk.path().join("wal");
    const SEGMENT: u64 = 1 << 20;
    let mut store = DiskStore::open(&dir, SEGMENT).unwrap();
    let segment = fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    assert_eq!(fs::metadata(&segment).unwrap().len(), SEGMENT);

    // Synced while there is room, then the disk fills up.
    let mut next = 1;
    for _ in 0..20 {
        store.append(&[entry(next)]).unwrap();
        store.sync().unwrap();
        next += 1;
    }
    let synced = next - 1;
    let filler = disk.fill();
    let mut failed = None;
    for _ in 0..100 {
        store.append(&[entry(next)]).unwrap();
        next += 1;
        if let Err(e) = store.sync() {
            failed = Some(e);
            break;
        }
    }
    let err = failed.expect("a sync on a full disk fails");
    assert!(err.is_no_space(), "ENOSPC, got {err}");
    assert_eq!(
        fs::metadata(&segment).unwrap().len(),
        SEGMENT,
        "preallocated again after the failed write was undone"
    );
    // Still full: the next attempt fails the same way, and the store is not
    // marked failed (the undo succeeded).
    let again = store.sync().unwrap_err();
    assert!(again.is_no_space(), "ENOSPC again, got {again}");

    // Space returns: the held entries and new ones are written.
    fs::remove_file(&filler).unwrap();
    store.sync().unwrap();
    for _ in 0..5 {
        store.append(&[entry(next)]).unwrap();
        store.sync().unwrap();
        next += 1;
    }
    drop(store);
    let store = DiskStore::open(&dir, SEGMENT).unwrap();
    let got = &store.recovered().entries;
    let want: Vec<Entry> = (1..next).map(entry).collect();
    assert!(synced < next - 1);
    assert_eq!(got.len(), want.len(), "every entry once, in order");
    assert!(got == &want, "the entries read back are those written");
}
