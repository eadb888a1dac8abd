//! WAL integration tests: the conformance suite for both stores, and the disk
//! store's behaviour under torn tails, flipped bits, roll-over, compaction and a
//! crash at every byte of the written stream.

use raftlog::core::types::{Entry, EntryPayload, HardState};
use raftlog::wal::codec;
use raftlog::wal::conformance::{entries, run_suite, snapshot};
use raftlog::wal::disk::DEFAULT_SEGMENT_BYTES;
use raftlog::wal::{DiskStore, LogStore, MemStore, Recovered, WalError};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::fs;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// A temp dir, on tmpfs when available so fsync-heavy tests stay fast.
fn tempdir() -> TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir.join("snap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

/// Start offsets of every record in a segment file, and where the last one
/// ends (only zero bytes after it: the preallocated space, or nothing).
fn records(path: &Path) -> (Vec<usize>, usize) {
    let data = bytes::Bytes::from(fs::read(path).unwrap());
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        match codec::read_frame(&data, at) {
            Ok(Some((_, next))) => {
                out.push(at);
                at = next;
            }
            Ok(None) => break,
            Err(e) => {
                assert!(data[at..].iter().all(|&b| b == 0), "{e:?} at {at}");
                break;
            }
        }
    }
    (out, at)
}

fn record_offsets(path: &Path) -> Vec<usize> {
    records(path).0
}

/// Where the records of a segment file end.
fn records_end(path: &Path) -> usize {
    records(path).1
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn set_len(path: &Path, len: u64) {
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(len).unwrap();
}

/// The records of `path` end at `end`, and the file is preallocated again.
fn assert_cut_at(path: &Path, end: usize) {
    assert_eq!(records_end(path), end, "records end at the last valid one");
    assert_eq!(file_len(path), DEFAULT_SEGMENT_BYTES, "preallocated again");
}

fn flip_bit(path: &Path, offset: usize) {
    let mut data = fs::read(path).unwrap();
    data[offset] ^= 0x10;
    fs::write(path, data).unwrap();
}

fn hs(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote: Some("n1".into()),
        commit,
    }
}

/// Three synced batches 1..4, 4..7, 7..10 in one segment; returns the segment path.
fn three_batches(dir: &Path) -> PathBuf {
    let mut store = DiskStore::open(dir, DEFAULT_SEGMENT_BYTES).unwrap();
    store.set_hard_state(&hs(1, 0)).unwrap();
    for lo in [1, 4, 7] {
        store.append(&entries(lo, lo + 3, 1)).unwrap();
        store.sync().unwrap();
    }
    let segs = segments(dir);
    assert_eq!(segs.len(), 1);
    segs[0].clone()
}

fn assert_corrupt(result: Result<DiskStore, WalError>, file: &Path, want_offset: usize) {
    match result {
        Err(WalError::Corrupt {
            path,
            offset,
            reason,
        }) => {
            assert_eq!(Path::new(&path), file, "corrupt path ({reason})");
            assert_eq!(offset, want_offset as u64, "corrupt offset ({reason})");
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, open succeeded"),
    }
}

// ---------------------------------------------------------------- conformance

#[test]
fn conformance_mem_store() {
    run_suite(|store: Option<MemStore>| store.map_or_else(MemStore::new, |s| s.crash()));
}

#[test]
fn mem_store_crash_keep_persists_a_prefix_of_pending_calls() {
    let mut store = MemStore::new();
    store.append(&entries(1, 3, 1)).unwrap();
    store.sync().unwrap();
    store.append(&entries(3, 5, 1)).unwrap();
    store.set_hard_state(&hs(2, 4)).unwrap();
    assert_eq!(store.pending_ops(), 2);
    assert_eq!(store.crash().recovered().entries, entries(1, 3, 1));
    let one = store.crash_keep(1);
    assert_eq!(one.recovered().entries, entries(1, 5, 1));
    assert_eq!(one.recovered().hard_state, HardState::default());
    assert_eq!(store.crash_keep(9).recovered().hard_state, hs(2, 4));
}

fn disk_suite(segment_bytes: u64) {
    let mut dirs = Vec::new();
    run_suite(|store: Option<DiskStore>| {
        let dir = match store {
            Some(s) => s.dir().to_path_buf(),
            None => {
                dirs.push(tempdir());
                dirs.last().unwrap().path().to_path_buf()
            }
        };
        DiskStore::open(&dir, segment_bytes).unwrap_or_else(|e| panic!("reopen: {e}"))
    });
}

#[test]
fn conformance_disk_store_default_segments() {
    disk_suite(DEFAULT_SEGMENT_BYTES);
}

#[test]
fn conformance_disk_store_tiny_segments() {
    disk_suite(200);
}

#[test]
fn conformance_disk_store_one_record_per_segment() {
    disk_suite(1);
}

// ---------------------------------------------------------------- torn tails and bit flips

#[test]
fn torn_final_record_is_cut_and_earlier_entries_survive() {
    let dir = tempdir();
    let seg = three_batches(dir.path());
    let offsets = record_offsets(&seg);
    set_len(&seg, records_end(&seg) as u64 - 3);

    let mut store = DiskStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(store.recovered().entries, entries(1, 7, 1));
    assert_eq!(store.recovered().hard_state, hs(1, 0));
    assert_cut_at(&seg, *offsets.last().unwrap());
    store.append(&entries(7, 9, 2)).unwrap();
    store.sync().unwrap();
    let store = DiskStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    let want: Vec<Entry> = entries(1, 7, 1)
        .into_iter()
        .chain(entries(7, 9, 2))
        .collect();
    assert_eq!(store.recovered().entries, want);
}

/// The active segment is preallocated (its records followed by zeros); a
/// reopen reads the zeros as the end of the stream, keeps them for the next
/// appends, and does not count them as a torn tail.
#[test]
fn a_zero_tail_in_the_last_segment_is_its_preallocated_space() {
    let dir = tempdir();
    let seg = three_batches(dir.path());
    assert_eq!(file_len(&seg), DEFAULT_SEGMENT_BYTES, "preallocated");
    let end = records_end(&seg);
    let mut store = DiskStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(store.recovered().entries, entries(1, 10, 1));
    assert_eq!(file_len(&seg), DEFAULT_SEGMENT_BYTES, "kept, not cut");
    store.append(&entries(10, 12, 1)).unwrap();
    store.sync().unwrap();
    drop(store);
    assert!(records_end(&seg) > end, "appended inside the file");
    assert_eq!(file_len(&seg), DEFAULT_SEGMENT_BYTES);
    let store = DiskStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(store.recovered().entries, entries(1, 12, 1));
}

/// Records that end in zero bytes (a command ending in zeros, a hard state
/// with commit 0), last before the preallocated zeros, are recovered whole.
#[test]
fn last_records_ending_in_zero_bytes_survive_a_reopen() {
    let dir = tempdir();
    let mut store = DiskStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    let e = Entry {
        index: 1,
        term: 1,
        payload: EntryPayload::Command(bytes::Bytes::from_static(b"x\0\0\0\0\0\0\0\0")),
    };
    store.append(std::slice::from_ref(&e)).unwrap();
    store.sync().unwrap();
    drop(store);
    let mut store = DiskStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(store.recovered().entries, vec![e.clone()]);
    let h = HardState {
        term: 5,
        vote: None,
        commit: 0,
    };
    store.set_hard_state(&h).unwrap();
    store.sync().unwrap();
    drop(store);
    let store = DiskStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(store.recovered().entries, vec![e]);
    assert_eq!(store.recovered().hard_state, h);
}

/// A segment written without preallocation (an older build, or one whose
/// preallocation was cut with a torn tail) is preallocated when reopened.
#[test]
fn a_segment_without_its_zero_tail_is_preallocated_on_open() {
    let dir = tempdir();
    let seg = three_batches(dir.path());
    let end = records_end(&seg);
    set_len(&seg, end as u64);
    let store = DiskStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(store.recovered().entries, entries(1, 10, 1));
    assert_cut_at(&seg, end);
}

/// A torn record written into the preallocated space (its first bytes landed,
/// the rest is still zeros) is cut like any torn tail.
#[test]
fn a_torn_record_in_the_preallocated_space_is_cut() {
    let dir = tempdir();
    let seg = three_batches(dir.path());
    let (offsets, end) = records(&seg);
    let data = fs::read(&seg).unwrap();
    let last = *offsets.last().unwrap();
    let file = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(&data[last..last + 12], end as u64)
        .unwrap();
    drop(file);
    let mut store = DiskStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(store.recovered().entries, entries(1, 10, 1));
    assert_cut_at(&seg, end);
    store.append(&entries(10, 11, 1)).unwrap();
    store.sync().unwrap();
    drop(store);
    let store = DiskStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(store.recovered().entries, entries(1, 11, 1));
}

/// Sealed segments are trimmed to their records when the next one starts;
/// only the active one has a zero tail, and zeros after a sealed segment's
/// records are corruption (the trim was synced before the next segment existed).
#[test]
fn sealed_segments_have_no_zero_tail_and_one_that_does_fails_open() {
    let dir = tempdir();
    let mut store = DiskStore::open(dir.path(), 512).unwrap();
    for lo in (1..90).step_by(3) {
        store.append(&entries(lo, lo + 3, 1)).unwrap();
        store.sync().unwrap();
    }
    drop(store);
    let segs = segments(dir.path());
    assert!(segs.len() > 2, "512-byte segments must have rolled");
    let (active, sealed) = segs.split_last().unwrap();
    for seg in sealed {
        assert_eq!(file_len(seg), records_end(seg) as u64, "{seg:?} trimmed");
    }
    // (A batch may run past the segment size before the next append rolls.)
    assert!(
        file_len(active) >= 512,
        "the active segment is preallocated"
    );
    let end = file_len(&sealed[0]);
    set_len(&sealed[0], end + 64);
    assert_corrupt(DiskStore::open(dir.path(), 512), &sealed[0], end as usize);
}

#[test]
fn flipped_bit_in_last_record_is_cut() {
    let dir = tempdir();
    let seg = three_batches(dir.path());
    let last = *record_offsets(&seg).last().unwrap();
    flip_bit(&seg, last + 20);
    let store = DiskStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(store.recovered().entries, entries(1, 7, 1));
    assert_cut_at(&seg, last);
}

#[test]
fn flipped_bit_in_middle_record_fails_open_with_file_and_offset() {
    let dir = tempdir();
    let seg = three_batches(dir.path());
    let offsets = record_offsets(&seg);
    let middle = offsets[offsets.len() - 2];
    flip_bit(&seg, middle + 20);
    let before = fs::read(&seg).unwrap();
    assert_corrupt(
        DiskStore::open(dir.path(), DEFAULT_SEGMENT_BYTES),
        &seg,
        middle,
    );
    assert_eq!(
        fs::read(&seg).unwrap(),
        before,
        "a failed open must not modify the file"
    );
}

#[test]
fn flipped_length_in_middle_record_fails_open() {
    let dir = tempdir();
    let seg = three_batches(dir.path());
    let middle = record_offsets(&seg)[2];
    flip_bit(&seg, middle + 1);
    assert_corrupt(
        DiskStore::open(dir.path(), DEFAULT_SEGMENT_BYTES),
        &seg,
        middle,
    );
}

#[test]
fn flipped_bit_at_end_of_sealed_segment_fails_open() {
    let dir = tempdir();
    let mut store = DiskStore::open(dir.path(), 100).unwrap();
    for lo in (1..30).step_by(3) {
        store.append(&entries(lo, lo + 3, 1)).unwrap();
        store.sync().unwrap();
    }
    drop(store);
    let segs = segments(dir.path());
    assert!(segs.len() > 2);
    let last = *record_offsets(&segs[0]).last().unwrap();
    flip_bit(&segs[0], last + 10);
    assert_corrupt(DiskStore::open(dir.path(), 100), &segs[0], last);
}

// ---------------------------------------------------------------- roll-over, truncation, snapshots

#[test]
fn segments_roll_over_and_reopen() {
    let dir = tempdir();
    let mut store = DiskStore::open(dir.path(), 128).unwrap();
    for lo in (1..200).step_by(4) {
        store.append(&entries(lo, lo + 4, 1)).unwrap();
        if lo.is_multiple_of(3) {
            store.sync().unwrap();
        }
    }
    store.sync().unwrap();
    assert_eq!(store.entries(1, 201).unwrap(), entries(1, 201, 1));
    drop(store);
    assert!(segments(dir.path()).len() > 20, "expected many segments");
    let store = DiskStore::open(dir.path(), 128).unwrap();
    assert_eq!(store.recovered().entries, entries(1, 201, 1));
    assert_eq!(store.entries(37, 151).unwrap(), entries(37, 151, 1));
    assert_eq!(store.last_index(), 200);
}

#[test]
fn truncation_across_segments_then_reopen() {
    let dir = tempdir();
    let mut store = DiskStore::open(dir.path(), 150).unwrap();
    for lo in (1..60).step_by(3) {
        store.append(&entries(lo, lo + 3, 1)).unwrap();
        store.sync().unwrap();
    }
    store.append(&entries(10, 15, 2)).unwrap();
    store.sync().unwrap();
    let want: Vec<Entry> = entries(1, 10, 1)
        .into_iter()
        .chain(entries(10, 15, 2))
        .collect();
    assert_eq!(store.entries(1, 15).unwrap(), want);
    drop(store);
    let mut store = DiskStore::open(dir.path(), 150).unwrap();
    assert_eq!(store.recovered().entries, want);
    store.append(&entries(15, 17, 2)).unwrap();
    store.sync().unwrap();
    drop(store);
    let store = DiskStore::open(dir.path(), 150).unwrap();
    assert_eq!(store.last_index(), 16);
    assert_eq!(
        store.entries(14, 17).unwrap(),
        [want[13].clone()]
            .into_iter()
            .chain(entries(15, 17, 2))
            .collect::<Vec<_>>()
    );
}

#[test]
fn restart_after_snapshot_and_compaction() {
    let dir = tempdir();
    let mut store = DiskStore::open(dir.path(), 256).unwrap();
    store.set_hard_state(&hs(7, 0)).unwrap();
    for lo in (1..100).step_by(3) {
        store.append(&entries(lo, lo + 3, 7)).unwrap();
        store.sync().unwrap();
    }
    store.install_snapshot(&snapshot(40, 7)).unwrap();
    let before = segments(dir.path()).len();
    store.install_snapshot(&snapshot(80, 7)).unwrap();
    let after = segments(dir.path());
    assert!(
        after.len() < before,
        "segments before the snapshot are removed"
    );
    assert_eq!(
        snapshot_files(dir.path()).len(),
        1,
        "older snapshot files removed"
    );
    drop(store);

    let mut store = DiskStore::open(dir.path(), 256).unwrap();
    let want = Recovered {
        hard_state: hs(7, 0),
        snapshot: Some(snapshot(80, 7)),
        entries: entries(81, 100, 7),
    };
    assert_eq!(store.recovered(), &want);
    assert_eq!(store.entries(85, 100).unwrap(), entries(85, 100, 7));
    store.install_snapshot(&snapshot(99, 7)).unwrap();
    assert_eq!(
        segments(dir.path()).len(),
        1,
        "a snapshot of the whole log leaves the active segment"
    );
    drop(store);
    let store = DiskStore::open(dir.path(), 256).unwrap();
    assert_eq!(
        store.recovered().hard_state,
        hs(7, 0),
        "hard state survives segment removal"
    );
    assert_eq!(store.last_index(), 99);
}

/// Copies `src` (a data dir) to a fresh temp dir.
fn copy_dir(src: &Path) -> TempDir {
    let dst = tempdir();
    for sub in ["wal", "snap"] {
        fs::create_dir_all(dst.path().join(sub)).unwrap();
        for entry in fs::read_dir(src.join(sub)).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), dst.path().join(sub).join(entry.file_name())).unwrap();
        }
    }
    dst
}

/// A crash after the snapshot file became durable but before its mark did: the
/// snapshot rule must be applied on open, giving the post-install state.
fn crash_before_mark(snap_index: u64, snap_term: u64, want_entries: Vec<Entry>) {
    let dir = tempdir();
    let mut store = DiskStore::open(dir.path(), 200).unwrap();
    for lo in (1..40).step_by(4) {
        store.append(&entries(lo, lo + 4, 2)).unwrap();
        store.sync().unwrap();
    }
    let pre = copy_dir(dir.path());
    store
        .install_snapshot(&snapshot(snap_index, snap_term))
        .unwrap();
    let snap = snapshot_files(dir.path()).pop().unwrap();
    fs::copy(
        &snap,
        pre.path().join("snap").join(snap.file_name().unwrap()),
    )
    .unwrap();
    fs::write(pre.path().join("snap").join("garbage.snap.tmp"), b"partial").unwrap();
    let reopened = DiskStore::open(pre.path(), 200).unwrap();
    assert_eq!(reopened.snapshot(), Some(snapshot(snap_index, snap_term)));
    assert_eq!(reopened.recovered().entries, want_entries);
    assert_eq!(
        snapshot_files(pre.path()).len(),
        1,
        "temp file removed on open"
    );

    // A crash after the mark but before old segments were removed.
    let post = copy_dir(pre.path());
    let active = segments(dir.path()).pop().unwrap();
    fs::copy(
        &active,
        post.path().join("wal").join(active.file_name().unwrap()),
    )
    .unwrap();
    let reopened = DiskStore::open(post.path(), 200).unwrap();
    assert_eq!(reopened.recovered().entries, want_entries);
}

#[test]
fn crash_between_snapshot_file_and_mark_keeps_held_suffix() {
    crash_before_mark(20, 2, entries(21, 41, 2));
}

#[test]
fn crash_between_snapshot_file_and_mark_drops_unmatched_log() {
    crash_before_mark(20, 3, vec![]);
}

#[test]
fn corrupt_newest_snapshot_with_compacted_log_fails_open() {
    let dir = tempdir();
    let mut store = DiskStore::open(dir.path(), 200).unwrap();
    store.append(&entries(1, 50, 1)).unwrap();
    store.append(&entries(50, 60, 1)).unwrap();
    store.sync().unwrap();
    store.install_snapshot(&snapshot(55, 1)).unwrap();
    drop(store);
    let snap = snapshot_files(dir.path()).pop().unwrap();
    flip_bit(&snap, 30);
    assert!(matches!(
        DiskStore::open(dir.path(), 200),
        Err(WalError::Corrupt { .. })
    ));
}

// ---------------------------------------------------------------- crash at every write point

/// One call of the scripted workload.
enum Call {
    Append(Vec<Entry>),
    HardState(HardState),
    Sync,
}

fn workload(seed: u64) -> Vec<Call> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut last, mut term) = (0u64, 1u64);
    let mut calls = Vec::new();
    for _ in 0..45 {
        match rng.gen_range(0..10) {
            0..=4 => {
                let lo = if last > 3 && rng.gen_bool(0.25) {
                    last - rng.gen_range(0..3)
                } else {
                    last + 1
                };
                term += u64::from(lo <= last);
                let hi = lo + rng.gen_range(1..4);
                calls.push(Call::Append(entries(lo, hi, term)));
                last = hi - 1;
            }
            5..=6 => calls.push(Call::HardState(hs(term, rng.gen_range(0..=last)))),
            _ => calls.push(Call::Sync),
        }
    }
    calls.push(Call::Sync);
    calls
}

fn apply<S: LogStore>(store: &mut S, call: &Call) {
    match call {
        Call::Append(e) => store.append(e).unwrap(),
        Call::HardState(h) => store.set_hard_state(h).unwrap(),
        Call::Sync => store.sync().unwrap(),
    }
}

fn total_len(files: &[(PathBuf, Vec<u8>)]) -> usize {
    files.iter().map(|(_, d)| d.len()).sum()
}

/// Writes the first `len` bytes of the stream (segments concatenated) into `dir`.
fn write_prefix(dir: &Path, files: &[(PathBuf, Vec<u8>)], len: usize) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir.join("wal")).unwrap();
    let mut start = 0;
    for (path, data) in files {
        if start > len {
            break;
        }
        let keep = (len - start).min(data.len());
        fs::write(
            dir.join("wal").join(path.file_name().unwrap()),
            &data[..keep],
        )
        .unwrap();
        start += data.len();
    }
}

/// Runs the workload on a disk store (checking against the memory store as an
/// oracle), then simulates a crash at every byte of the written stream: the store
/// must open, and recover exactly the state after some call, no earlier than the
/// last sync whose bytes were complete, and never going back as the prefix grows.
fn crash_at_every_write_point(seed: u64) {
    let dir = tempdir();
    let mut disk = DiskStore::open(dir.path(), 300).unwrap();
    let mut oracle = MemStore::new();
    let mut states = vec![Recovered::default()];
    let mut synced = vec![(0usize, 0usize)]; // (calls done, stream bytes durable)
    for (i, call) in workload(seed).iter().enumerate() {
        apply(&mut disk, call);
        apply(&mut oracle, call);
        states.push(oracle.crash_keep(oracle.pending_ops()).recovered().clone());
        if let Call::Sync = call {
            // Sealed segments end at their records; the active one's zero
            // tail is not part of the stream.
            let bytes = segments(dir.path()).iter().map(|p| records_end(p)).sum();
            synced.push((i + 1, bytes));
        }
    }
    drop(disk);
    let files: Vec<(PathBuf, Vec<u8>)> = segments(dir.path())
        .into_iter()
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect();
    assert!(files.len() > 2, "workload should span several segments");
    let work = tempdir();
    let crash_dir = work.path().join("data");
    let mut prev = 0;
    for len in 0..=total_len(&files) {
        write_prefix(&crash_dir, &files, len);
        let store = DiskStore::open(&crash_dir, 300)
            .unwrap_or_else(|e| panic!("seed {seed}, prefix {len}: open failed: {e}"));
        let min = synced
            .iter()
            .filter(|(_, b)| *b <= len)
            .map(|(c, _)| *c)
            .max()
            .unwrap();
        let from = min.max(prev);
        let found = (from..states.len()).find(|&k| &states[k] == store.recovered());
        prev = found.unwrap_or_else(|| {
            panic!("seed {seed}, prefix {len}: recovered {:?} is not the state after any call >= {from}", store.recovered())
        });
        if len.is_multiple_of(5) {
            check_writable_after_recovery(store, &crash_dir);
        }
    }
    assert_eq!(
        prev,
        states.len() - 1,
        "the full stream recovers every call"
    );
}

/// A recovered store accepts new writes, and they survive another restart.
fn check_writable_after_recovery(mut store: DiskStore, dir: &Path) {
    let before = store.recovered().clone();
    let next = store.last_index() + 1;
    store.append(&entries(next, next + 2, 99)).unwrap();
    store.sync().unwrap();
    drop(store);
    let store = DiskStore::open(dir, 300).unwrap();
    assert_eq!(store.recovered().entries.len(), before.entries.len() + 2);
    assert_eq!(store.recovered().hard_state, before.hard_state);
}

#[test]
fn crash_at_every_write_point_seed_1() {
    crash_at_every_write_point(1);
}

#[test]
fn crash_at_every_write_point_seed_2() {
    crash_at_every_write_point(2);
}
