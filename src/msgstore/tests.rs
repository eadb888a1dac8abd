use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

fn msg(i: u64, len: usize) -> Bytes {
    let mut v = format!("m{i}:").into_bytes();
    v.resize(len.max(v.len()), b'a' + (i % 26) as u8);
    Bytes::from(v)
}

/// A store in `dir` holding `n` messages of `len` bytes, and those messages.
fn filled(dir: &Path, segment_bytes: u64, n: u64, len: usize) -> (MessageStore, Vec<Bytes>) {
    let mut s = MessageStore::open(dir, segment_bytes, 0).unwrap();
    let model: Vec<Bytes> = (0..n).map(|i| msg(i, len)).collect();
    for m in &model {
        s.append(m.clone());
    }
    s.flush().unwrap();
    (s, model)
}

fn all(store: &MessageStore) -> Vec<Bytes> {
    let got = store.read(0, usize::MAX).unwrap();
    for (i, (off, _)) in got.iter().enumerate() {
        assert_eq!(*off, i as u64);
    }
    got.into_iter().map(|(_, m)| m).collect()
}

fn files(dir: &Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == ext)
        })
        .count()
}

#[test]
fn reads_span_segments_cache_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, model) = filled(dir.path(), 64 << 10, 600, 5000);
    assert!(s.cache_first > 0, "the 1 MiB cache must not hold 3 MB");
    assert!(files(dir.path(), "seg") > 10);
    assert_eq!(all(&s), model);
    assert_eq!(s.read(123, 7).unwrap()[0], (123, model[123].clone()));
    assert_eq!(s.read(590, 100).unwrap().len(), 10);
    assert!(s.read(600, 10).unwrap().is_empty());
    s.sync_handle().unwrap().run().unwrap();
    drop(s);
    let s = MessageStore::open(dir.path(), 64 << 10, 0).unwrap();
    assert_eq!(s.len(), 600);
    assert_eq!(all(&s), model);
    assert_eq!(files(dir.path(), "idx"), files(dir.path(), "seg") - 1);
}

#[test]
fn a_torn_tail_is_cut_and_a_corrupt_middle_ends_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (s, model) = filled(dir.path(), 16 << 10, 100, 1000);
    drop(s);
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    names.sort();
    // Half a record at the end of the last segment.
    let mut f = OpenOptions::new()
        .append(true)
        .open(names.last().unwrap())
        .unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
    drop(f);
    let s = MessageStore::open(dir.path(), 16 << 10, 0).unwrap();
    assert_eq!(all(&s), model);
    drop(s);
    // A flipped byte inside the third segment, whose index is gone: the store
    // ends before that record, later segments are removed.
    let third = &names[2];
    std::fs::remove_file(third.with_extension("idx")).unwrap();
    let f = OpenOptions::new().write(true).open(third).unwrap();
    f.write_all_at(&[0xff], 3 * 1008 + 100).unwrap();
    let s = MessageStore::open(dir.path(), 16 << 10, 0).unwrap();
    let first_of_third: u64 = third
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(s.len(), first_of_third + 3);
    assert_eq!(all(&s), model[..s.len() as usize].to_vec());
    assert_eq!(files(dir.path(), "seg"), 3);
}

#[test]
fn an_index_that_does_not_match_its_segment_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (s, model) = filled(dir.path(), 16 << 10, 60, 1000);
    drop(s);
    let idx = seg_path(dir.path(), 0).with_extension("idx");
    let mut data = std::fs::read(&idx).unwrap();
    data[20] ^= 1;
    std::fs::write(&idx, data).unwrap();
    let s = MessageStore::open(dir.path(), 16 << 10, 0).unwrap();
    assert_eq!(all(&s), model);
}

/// Random appends, truncations, reopenings and reads against a plain vector.
#[test]
fn matches_a_vector_under_random_operations() {
    for seed in 0..20u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let seg = rng.gen_range(2_000..40_000);
        let mut s = MessageStore::open(dir.path(), seg, 0).unwrap();
        let mut mem = MessageStore::memory();
        let mut model: Vec<Bytes> = Vec::new();
        for step in 0..400 {
            match rng.gen_range(0..100) {
                0..=69 => {
                    // Some large ones, so the 1 MiB cache evicts and reads hit the files.
                    let len = if rng.gen_bool(0.1) { 60_000 } else { 3000 };
                    let m = msg(model.len() as u64, rng.gen_range(0..len));
                    s.append(m.clone());
                    mem.append(m.clone());
                    model.push(m);
                }
                70..=79 if !model.is_empty() => {
                    let keep = rng.gen_range(0..=model.len());
                    s.truncate(keep as u64).unwrap();
                    mem.truncate(keep as u64).unwrap();
                    model.truncate(keep);
                }
                80..=84 => {
                    if rng.gen_bool(0.5) {
                        s.sync_handle().unwrap().run().unwrap();
                    }
                    drop(s);
                    s = MessageStore::open(dir.path(), seg, 0).unwrap();
                }
                _ => {
                    let from = rng.gen_range(0..=model.len() + 2) as u64;
                    let limit = rng.gen_range(0..50);
                    let want: Vec<_> = (from..(from + limit as u64).min(model.len() as u64))
                        .map(|o| (o, model[o as usize].clone()))
                        .collect();
                    assert_eq!(
                        s.read(from, limit).unwrap(),
                        want,
                        "seed {seed} step {step}"
                    );
                    assert_eq!(
                        mem.read(from, limit).unwrap(),
                        want,
                        "seed {seed} step {step}"
                    );
                    // A reader covers what the writer has written.
                    s.flush().unwrap();
                    let r = s.reader(model.len() as u64).unwrap();
                    assert_eq!(
                        r.read(from, limit).unwrap(),
                        want,
                        "seed {seed} step {step}"
                    );
                }
            }
            assert_eq!(s.len(), model.len() as u64, "seed {seed} step {step}");
        }
        assert_eq!(all(&s), model, "seed {seed}");
    }
}

#[test]
fn failed_writes_keep_messages_cached_until_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = MessageStore::open(dir.path(), 1 << 20, 0).unwrap();
    let model: Vec<Bytes> = (0..400).map(|i| msg(i, 900)).collect();
    for m in &model[..100] {
        s.append(m.clone());
    }
    s.flush().unwrap();
    // The disk refuses writes: a read-only handle stands in for ENOSPC.
    let active = s.segments().segs.last().unwrap().path.clone();
    s.exec(move |d| {
        let file = Arc::new(File::open(&active)?);
        d.writer = Some(std::io::BufWriter::with_capacity(WRITE_BUFFER, file));
        Ok(())
    })
    .unwrap();
    for m in &model[100..] {
        s.append(m.clone());
        s.hand_over();
    }
    assert!(s.flush().is_err());
    assert!(s.failure().is_some());
    assert!(
        s.sync_handle().is_err(),
        "no snapshot may claim unwritten messages"
    );
    assert_eq!(all(&s), model, "everything stays readable from the cache");
    // The repair runs on the writer: asked again until it reports success.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while s.repair().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "repair never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(s.failure().is_none());
    assert_eq!(all(&s), model);
    s.sync_handle().unwrap().run().unwrap();
    drop(s);
    let s = MessageStore::open(dir.path(), 1 << 20, 0).unwrap();
    assert_eq!(all(&s), model);
}

#[test]
fn a_sync_not_confirmed_is_repeated_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = MessageStore::open(dir.path(), 4 << 10, 0).unwrap();
    for i in 0..20 {
        s.append(msg(i, 1000));
    }
    s.flush().unwrap();
    let first = s.sync_handle().unwrap().files();
    assert!(first >= 4, "sealed segments and the active one: {first}");
    // The job failed (never ran): the next handle still covers all of them.
    s.append(msg(20, 1000));
    s.flush().unwrap();
    let h = s.sync_handle().unwrap();
    assert!(h.files() >= first);
    h.run().unwrap();
    assert_eq!(
        s.sync_handle().unwrap().files(),
        1,
        "only the active segment"
    );
}

/// Seals, a reopen that cuts a torn tail, a truncation removing segments and a
/// clear: after each, every entry made under the data directory (the store's
/// directory itself included) has had its parent synced.
#[test]
fn every_entry_change_is_durable_when_the_call_returns() {
    use crate::durable::record::{assert_durable, undurable_under};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data/messages");
    let (mut s, _) = filled(&dir, 4 << 10, 100, 300);
    assert!(files(&dir, "seg") > 3 && files(&dir, "idx") > 2);
    s.sync_handle().unwrap().run().unwrap();
    assert_durable(tmp.path());
    drop(s);
    // Tear the last segment: open cuts it (and drops its index, if any).
    let last = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .unwrap();
    let f = OpenOptions::new().append(true).open(&last).unwrap();
    f.write_all_at(b"\x05\0\0\0junk", f.metadata().unwrap().len())
        .unwrap();
    let mut s = MessageStore::open(&dir, 4 << 10, 0).unwrap();
    assert_eq!(s.len(), 100);
    assert_eq!(undurable_under(tmp.path()), Vec::<String>::new());
    s.truncate(10).unwrap();
    assert_eq!(files(&dir, "seg"), 1);
    assert_eq!(undurable_under(tmp.path()), Vec::<String>::new());
    s.clear().unwrap();
    assert_durable(tmp.path());
}

/// Damage that keeps a sealed segment's length (its `.idx` still matches, so
/// open does not scan it): a flipped bit and a zeroed 4 KiB page. Every read is
/// either the exact message or an error, never other bytes.
#[test]
fn damage_under_a_matching_index_is_an_error_on_read_never_wrong_bytes() {
    for zero_page in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (s, model) = filled(dir.path(), 16 << 10, 60, 1000);
        drop(s);
        let seg = seg_path(dir.path(), 0);
        let mut data = std::fs::read(&seg).unwrap();
        if zero_page {
            data[4096..8192].fill(0);
        } else {
            data[5000] ^= 0x04;
        }
        std::fs::write(&seg, data).unwrap();
        let s = MessageStore::open(dir.path(), 16 << 10, 0).unwrap();
        let mut errors = 0;
        for (i, want) in model.iter().enumerate() {
            match s.read(i as u64, 1) {
                Ok(got) => assert_eq!(got, [(i as u64, want.clone())], "zero_page={zero_page}"),
                Err(_) => errors += 1,
            }
        }
        assert!(
            errors > 0,
            "zero_page={zero_page}: the damage was not detected"
        );
    }
}

/// Record-aligned zero runs are the hard case: with the `.msg` checksum (over
/// the message alone) eight zero bytes were a valid empty message. Small and
/// empty messages put record boundaries on every page boundary; each zeroed
/// page is an error on read (never `""` or other bytes) and a cut on a rescan.
#[test]
fn a_zeroed_page_anywhere_is_never_read_as_messages() {
    let model: Vec<Bytes> = (0..3000u64)
        .map(|i| Bytes::from(vec![b'x'; (i % 3 * 4) as usize]))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut s = MessageStore::open(dir.path(), 1 << 20, 0).unwrap();
    for m in &model {
        s.append(m.clone());
    }
    s.sync_handle().unwrap().run().unwrap();
    drop(s);
    let seg = seg_path(dir.path(), 0);
    let clean = std::fs::read(&seg).unwrap();
    for page in 0..clean.len() / 4096 {
        let mut data = clean.clone();
        data[page * 4096..(page + 1) * 4096].fill(0);
        std::fs::write(&seg, &data).unwrap();
        let s = MessageStore::open(dir.path(), 1 << 20, 0).unwrap();
        // The active segment is scanned on open: cut before the page.
        assert!(s.len() < model.len() as u64, "page {page}: nothing cut");
        assert_eq!(all(&s), model[..s.len() as usize], "page {page}");
        let first_bad = s.len();
        drop(s);
        std::fs::write(&seg, &clean).unwrap();
        assert!(first_bad <= (page as u64 * 4096) / 8, "page {page}");
    }
}

/// The same page zeroed in a sealed segment whose `.idx` still matches: reads
/// fail instead of returning empty messages.
#[test]
fn a_zeroed_page_under_a_matching_index_fails_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = MessageStore::open(dir.path(), 64 << 10, 0).unwrap();
    let model: Vec<Bytes> = (0..10_000u64).map(|_| Bytes::new()).collect();
    for m in &model {
        s.append(m.clone());
    }
    drop(s);
    let seg = seg_path(dir.path(), 0);
    let mut data = std::fs::read(&seg).unwrap();
    data[8192..12288].fill(0);
    std::fs::write(&seg, data).unwrap();
    let s = MessageStore::open(dir.path(), 64 << 10, 0).unwrap();
    assert_eq!(s.len(), 10_000, "the .idx matched: no scan");
    let bad = 8192 / 8;
    assert_eq!(s.read(0, bad).unwrap().len(), bad);
    for at in [bad, bad + 100, bad + 511] {
        assert!(
            s.read(at as u64, 1).is_err(),
            "record {at} read as a message"
        );
    }
}

/// `.msg` files of earlier versions (checksum over the message only, empty
/// messages included) are converted on open: same messages, only `.seg` files
/// after, the sealed one's `.idx` still used; a crash left in either half of the
/// conversion (a `.part` file, or both files) is finished by the next open.
#[test]
fn segments_of_earlier_versions_are_converted_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let model: Vec<Bytes> = (0..500u64).map(|i| msg(i, (i % 5 * 40) as usize)).collect();
    let model: Vec<Bytes> = model
        .into_iter()
        .enumerate()
        .map(|(i, m)| if i % 7 == 0 { Bytes::new() } else { m })
        .collect();
    let legacy_file = |first: usize, msgs: &[Bytes]| {
        let path = dir.path().join(format!("{first:020}.msg"));
        let mut data = Vec::new();
        let file = Arc::new(File::create(&path).unwrap());
        let mut seg = Segment {
            first: first as u64,
            count: 0,
            size: 0,
            sparse: Vec::new(),
            file,
            path: path.clone(),
        };
        for m in msgs {
            data.extend_from_slice(&(m.len() as u32).to_le_bytes());
            data.extend_from_slice(&crc32c::crc32c(m).to_le_bytes());
            data.extend_from_slice(m);
            seg.push(m.len());
        }
        std::fs::write(&path, data).unwrap();
        seg
    };
    write_idx(&legacy_file(0, &model[..300])).unwrap();
    legacy_file(300, &model[300..]);
    let s = MessageStore::open(dir.path(), 1 << 20, 0).unwrap();
    assert_eq!(all(&s), model);
    drop(s);
    assert_eq!(files(dir.path(), "msg"), 0);
    assert_eq!(files(dir.path(), "seg"), 2);
    assert!(read_idx(&dir.path().join(format!("{:020}.idx", 0)), 0).is_some());
    // A crash after the rename (both files) and one before it (a `.part`).
    legacy_file(0, &model[..300]);
    std::fs::write(dir.path().join(format!("{:020}.seg.part", 300)), b"half").unwrap();
    let s = MessageStore::open(dir.path(), 1 << 20, 0).unwrap();
    assert_eq!(all(&s), model);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".msg") || n.ends_with(".part"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The writer of `s` waits (its fault hook blocks) until [`Gate::open`].
fn hold_writer(s: &MessageStore) -> Gate {
    let gate = Gate(Arc::new((
        std::sync::Mutex::new(false),
        std::sync::Condvar::new(),
    )));
    let g = gate.0.clone();
    s.set_write_delay(Arc::new(move || {
        let (open, cond) = &*g;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cond.wait(open).unwrap();
        }
        std::time::Duration::ZERO
    }));
    gate
}

struct Gate(Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
}

/// A writer held up (its fault hook blocks until a gate opens) delays no
/// append: the caller's queue fills, every message stays cached past the cache
/// limit and readable, a trim lets go of nothing unwritten; once the writer
/// goes on, a truncation is ordered after the queued appends and a sync covers
/// everything appended before it, across a reopen.
#[test]
fn a_stalled_writer_holds_up_no_append_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = MessageStore::open(dir.path(), 16 << 10, 0).unwrap();
    let gate = hold_writer(&s);
    let model: Vec<Bytes> = (0..3000).map(|i| msg(i, 1000)).collect();
    for m in &model {
        s.append(m.clone());
        s.hand_over();
    }
    assert_eq!(s.written(), 0, "the writer is held up");
    assert!(
        s.handed < s.len(),
        "its queue filled: the rest waits in the cache"
    );
    assert!(s.behind(0));
    assert!(
        s.behind(usize::MAX),
        "a full queue is behind whatever the bytes"
    );
    assert!(
        s.cache_bytes > 2 * MIN_CACHE,
        "nothing unwritten leaves the cache"
    );
    assert!(!s.reads_files(0));
    assert_eq!(all(&s), model);
    s.trim_front(1000);
    assert_eq!(s.cache_first, 0, "a trim keeps what the writer still needs");
    assert_eq!(s.read(0, 1).unwrap()[0].0, 1000);

    gate.open();
    s.truncate(2500).unwrap();
    let mut want = model[..2500].to_vec();
    for i in 2500..2600 {
        s.append(msg(i, 700));
        want.push(msg(i, 700));
    }
    s.hand_over();
    s.sync_handle().unwrap().run().unwrap();
    assert!(s.written() >= 2600, "the sync waited for the writer");
    drop(s);
    let s = MessageStore::open(dir.path(), 16 << 10, 0).unwrap();
    assert_eq!(s.len(), 2600);
    assert_eq!(s.read(0, usize::MAX).unwrap().len(), 2600);
    let got: Vec<Bytes> = s
        .read(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert_eq!(got, want);
}

/// A read detached for another thread that starts below the cache answers up
/// to its limit or the end, also while the newest messages are only in the
/// cache (the writer behind): the part below the cache from the files, the
/// rest copied from the cache. A reader of the files alone stops where the
/// writer is; old reads used one, and the nemesis caught a linearizable read
/// that lacked messages acknowledged before it.
#[test]
fn a_detached_read_below_the_cache_includes_what_the_writer_has_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, mut model) = filled(dir.path(), 16 << 10, 3000, 1000);
    assert!(s.cache_first > 100, "3 MB do not fit the 1 MiB cache");
    let gate = hold_writer(&s);
    for i in 3000..3100 {
        s.append(msg(i, 1000));
        model.push(msg(i, 1000));
        s.hand_over();
    }
    assert!(s.written() < s.len(), "the writer is held up");
    let from = s.cache_first - 10;
    assert!(s.reads_files(from));

    let files_only = s.reader(s.len()).unwrap().read(from, usize::MAX).unwrap();
    assert!(
        (files_only.len() as u64) < s.len() - from,
        "the files alone end where the writer is"
    );
    for (limit, want_end) in [(usize::MAX, s.len()), (5, from + 5), (50, from + 50)] {
        let got = s.detached_read(from, limit).unwrap().run().unwrap();
        let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (from..want_end).collect::<Vec<_>>(),
            "limit {limit}"
        );
        for (o, m) in &got {
            assert_eq!(m, &model[*o as usize]);
        }
    }
    // From the cache on, or past the end: nothing from the files.
    let at = s.cache_first + 3;
    let got = s.detached_read(at, 4).unwrap().run().unwrap();
    assert_eq!(
        got.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        [at, at + 1, at + 2, at + 3]
    );
    assert!(s
        .detached_read(s.len(), 10)
        .unwrap()
        .run()
        .unwrap()
        .is_empty());

    gate.open();
}

/// Messages the caller has not handed over yet (it waits for a tick, or for
/// more of them) are not a writer behind: only a queue with no room, or more
/// unwritten bytes than asked, hold up a snapshot.
#[test]
fn messages_not_yet_handed_over_are_not_a_writer_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = MessageStore::open(dir.path(), 16 << 10, 0).unwrap();
    for i in 0..10 {
        s.append(msg(i, 100));
    }
    assert!(s.handed < s.len(), "nothing handed over yet");
    assert!(!s.behind(1 << 20));
    assert!(s.behind(500), "more unwritten bytes than asked");
    s.hand_over();
    s.sync_handle().unwrap().run().unwrap();
    assert_eq!(s.written(), 10);
    assert_eq!(s.current_backlog_bytes(), 0);
    assert!(!s.behind(0));
}
