//! Disks that really fill up: small tmpfs file systems mounted for the test (so
//! it needs root; `scripts/test.sh` runs it with the power-loss test), where
//! `tests/health.rs` injects ENOSPC above the store.
//!
//! What a real full disk adds: a write fails part way (tmpfs allocates a page at
//! a time, also inside the preallocated WAL segment, whose space a sparse file
//! does not reserve), and every file a node writes fails alike: the WAL, the
//! message store, snapshots, the hard-state file. The store undoes a failed
//! write, and the node must lose no acknowledged write, stall rather than crash,
//! and catch up once space returns.

#[path = "common/process.rs"]
mod harness;

use raftlog::core::types::{Entry, EntryPayload};
use raftlog::wal::{DiskStore, LogStore};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;
use tempfile::TempDir;

use harness::LONG;
use serde_json::json;

/// A tmpfs of `size` mounted on `path`, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _dir: Option<TempDir>,
}

impl SmallDisk {
    /// On a temp dir of its own.
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mut d = SmallDisk::mount_on(dir.path(), size);
        d._dir = Some(dir);
        d
    }

    fn mount_on(path: &Path, size: &str) -> SmallDisk {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(root, "this test mounts tmpfs file systems: run it as root");
        fs::create_dir_all(path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount(8)");
        assert!(
            st.success(),
            "mount -t tmpfs on {} failed: {st}",
            path.display()
        );
        SmallDisk {
            path: path.to_path_buf(),
            _dir: None,
        }
    }

    fn path(&self) -> &Path {
        &self.path
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
        // Lazy: a node of a failed test may still hold files open.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
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
    assert_eq!(got.len(), want.len(), "every entry once, in order");
    assert!(got == &want, "the entries read back are those written");
}

/// Writes to the cluster (any node; followers forward) until told to stop,
/// keeping the acknowledged ones as `(offset, message)`.
struct Writer<'a> {
    c: &'a harness::Cluster,
    stop: AtomicBool,
    acked: Mutex<Vec<(u64, String)>>,
}

impl Writer<'_> {
    fn run(&self) {
        let pad = "x".repeat(1000);
        let mut k = 0usize;
        while !self.stop.load(Ordering::SeqCst) {
            let node = k % self.c.len();
            let msg = format!("m{k:06}-{pad}");
            k += 1;
            let r = self.c.write_with(
                node,
                &msg,
                json!("majority"),
                "?timeout_ms=3000",
                None,
                Duration::from_secs(10),
            );
            match r {
                Ok(r) if r.status == 201 => self.acked.lock().unwrap().push((r.offset(), msg)),
                // Refused (507, 503) or unknown (timeout): not acknowledged.
                _ => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `n` more writes than now are acknowledged.
    fn wait_more(&self, n: usize, what: &str) {
        let target = self.acked() + n;
        harness::wait_for(what, LONG, || (self.acked() >= target).then_some(()));
    }
}

fn storage_errors(c: &harness::Cluster, i: usize) -> f64 {
    c.try_metric(i, "raftlog_storage_errors_total")
        .unwrap_or(0.0)
}

/// A follower's disk fills up, then the leader's (the rest keep a majority each
/// time; the leader hands over after the unhealthy window, to a voter whose
/// disk is short of space but takes writes), each freed again; then every node
/// is restarted. Writes go on throughout:
/// none acknowledged is lost or doubled, every node ends with the same log, and
/// no node exits on its own.
#[test]
#[ignore = "needs root: mounts tmpfs file systems (scripts/test.sh runs it as root)"]
fn nodes_whose_disks_really_fill_up_lose_no_acknowledged_write() {
    let mut c = harness::Cluster::empty(&[
        ("RAFTLOG_WAL__SEGMENT_BYTES", "1048576"),
        ("RAFTLOG_SNAPSHOT__EVERY_ENTRIES", "300"),
    ]);
    // The disks (24 MiB) are all under the default free-space floor (64 MiB):
    // every node's disk is degraded from the start, so the full-disk leader's
    // hand-over relies on a failing disk counting worse than a degraded one.
    let mut disks = Vec::new();
    for i in 0..3 {
        let join = (i > 0).then(|| c.info(0).grpc_addr());
        let n = c.add_node_info(join);
        disks.push(SmallDisk::mount_on(&c.info(n).data_dir, "24m"));
        c.start_node(n);
    }
    c.wait_all_voters();
    let all = [0, 1, 2];
    let w = Writer {
        c: &c,
        stop: AtomicBool::new(false),
        acked: Mutex::new(Vec::new()),
    };
    thread::scope(|s| {
        s.spawn(|| w.run());
        let _stop = harness::StopOnDrop(&w.stop);
        w.wait_more(50, "writes before any disk fills");

        for role in ["follower", "leader"] {
            let l = c.wait_leader();
            let i = if role == "leader" { l } else { c.others(l)[0] };
            let before = storage_errors(&c, i);
            let filler = disks[i].fill();
            harness::wait_for(
                &format!("the {role} {} to meet its full disk", c.id(i)),
                LONG,
                || (storage_errors(&c, i) > before).then_some(()),
            );
            let t = std::time::Instant::now();
            w.wait_more(
                30,
                &format!(
                    "writes acknowledged with the {role} {}'s disk full",
                    c.id(i)
                ),
            );
            let now = c.wait_leader();
            eprintln!(
                "{role} {}'s disk full: 30 more writes acknowledged after {:.2} s; leader {}",
                c.id(i),
                t.elapsed().as_secs_f64(),
                c.id(now)
            );
            if role == "leader" {
                // It refuses writes it cannot persist: the writes above went
                // through the voter it handed leadership to.
                assert_ne!(now, i, "the full-disk leader {} still leads", c.id(i));
            }
            fs::remove_file(&filler).unwrap();
            wait_caught_up(&c, &all, w.acked());
            for n in all {
                assert!(
                    c.exited(n).is_none(),
                    "{} exited: {:?}",
                    c.id(n),
                    c.exited(n)
                );
            }
        }
        w.wait_more(20, "writes after both disks were freed");
    });
    for i in all {
        c.kill(i);
        c.restart(i);
    }
    c.wait_all_voters();
    let log = c.wait_converged(&all, w.acked());
    harness::assert_unique(&log);
    let at: std::collections::HashMap<u64, &str> =
        log.iter().map(|(o, m)| (*o, m.as_str())).collect();
    let acked = w.acked.into_inner().unwrap();
    for (offset, msg) in &acked {
        assert_eq!(
            at.get(offset).copied(),
            Some(msg.as_str()),
            "acknowledged message at offset {offset} lost or changed"
        );
    }
    eprintln!(
        "{} writes acknowledged, {} messages in the log",
        acked.len(),
        log.len()
    );
}

/// Waits until every node in `nodes` holds at least `min_len` messages and the
/// same ones as far as the shortest log goes (writes go on meanwhile).
fn wait_caught_up(c: &harness::Cluster, nodes: &[usize], min_len: usize) {
    harness::wait_for(
        &format!("nodes {nodes:?} to agree on at least {min_len} messages"),
        LONG,
        || {
            let logs: Vec<Vec<(u64, String)>> = nodes
                .iter()
                .map(|&i| c.try_log(i, "local").ok())
                .collect::<Option<_>>()?;
            let m = logs.iter().map(Vec::len).min()?;
            (m >= min_len && logs.iter().all(|l| l[..m] == logs[0][..m])).then_some(())
        },
    );
}
