//! State machine tests: offsets, keys, batches, conditions, trims, cursors,
//! retention points and snapshot round trips (memory and disk stores).

use super::*;

/// A single-message append at `index` (term 1); shared with `stream`'s tests.
pub(super) fn cmd(index: u64, key: Option<&str>, msg: &str) -> Entry {
    let c = Command::single(key.map(String::from), Bytes::from(msg.to_string()));
    Entry {
        index,
        term: 1,
        payload: EntryPayload::Command(c.encode()),
    }
}

#[test]
fn offsets_are_dense_and_keys_dedupe() {
    let mut sm = StateMachine::new(10);
    assert_eq!(
        sm.apply(&cmd(1, Some("a"), "x")),
        Applied::Appended { first: 0, count: 1 }
    );
    assert_eq!(
        sm.apply(&Entry {
            index: 2,
            term: 1,
            payload: EntryPayload::Noop
        }),
        Applied::Other
    );
    let dup = sm.apply(&cmd(3, Some("a"), "x"));
    assert_eq!(dup, Applied::Duplicate(Landed::appended(0, 1, 1, 1)));
    assert_eq!(
        sm.apply(&cmd(4, None, "y")),
        Applied::Appended { first: 1, count: 1 }
    );
    let got: Vec<_> = sm.read(0, 10).unwrap();
    assert_eq!(got, vec![(0, Bytes::from("x")), (1, Bytes::from("y"))]);
}

#[test]
fn window_evicts_oldest_key() {
    let mut sm = StateMachine::new(1);
    sm.apply(&cmd(1, Some("a"), "x"));
    sm.apply(&cmd(2, Some("b"), "y"));
    assert!(sm.lookup_key("a").is_none());
    assert!(matches!(
        sm.apply(&cmd(3, Some("a"), "z")),
        Applied::Appended { first: 2, count: 1 }
    ));
}

#[test]
fn snapshot_round_trip_and_garbage() {
    let mut sm = StateMachine::new(10);
    sm.apply(&cmd(1, Some("a"), "x"));
    sm.apply(&cmd(2, None, "y"));
    let mut other = StateMachine::new(10);
    other.restore(sm.snapshot()).unwrap();
    assert_eq!(other.read(0, 10).unwrap(), sm.read(0, 10).unwrap());
    assert_eq!(other.lookup_key("a"), sm.lookup_key("a"));
    assert_eq!(other.applied_index(), 2);
    assert!(other.restore(Bytes::from_static(b"\x01\x02")).is_err());
}

#[test]
fn a_manifest_cuts_the_store_back_to_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let open = || MessageStore::open(dir.path(), 1 << 20, 0).unwrap();
    let mut sm = StateMachine::with_store(10, open());
    sm.apply(&cmd(1, Some("a"), "x"));
    sm.apply(&cmd(2, None, "y"));
    let (manifest, sync) = sm.manifest().unwrap();
    sync.run().unwrap();
    let full = sm.snapshot();
    sm.apply(&cmd(3, Some("b"), "z"));
    drop(sm);
    // A restart: the store holds 3 messages, the manifest says 2.
    let mut sm = StateMachine::with_store(10, open());
    sm.restore(manifest.clone()).unwrap();
    assert_eq!(sm.applied_index(), 2);
    assert_eq!(sm.next_offset(), 2);
    assert!(sm.lookup_key("b").is_none());
    assert!(sm.lookup_key("a").is_some());
    assert_eq!(
        sm.apply(&cmd(3, Some("b"), "z")),
        Applied::Appended { first: 2, count: 1 }
    );
    assert!(StateMachine::new(10)
        .restore_received(manifest.clone())
        .is_err());
    // The full payload a leader would send equals the in-memory encoding.
    let reader = sm.reader(2).unwrap();
    assert_eq!(full_payload(&manifest, &reader).unwrap(), full);
    // A store shorter than the manifest is an error, not a silent loss.
    let mut empty = StateMachine::new(10);
    let err = empty.restore(manifest).unwrap_err();
    assert!(err.contains("holds messages 0..0"), "{err}");
    // A full payload rebuilds a store from scratch.
    let dir2 = tempfile::tempdir().unwrap();
    let mut store2 = MessageStore::open(dir2.path(), 1 << 20, 0).unwrap();
    store2.append(Bytes::from_static(b"stale"));
    let mut other = StateMachine::with_store(10, store2);
    other.restore(full).unwrap();
    assert_eq!(other.read(0, 10).unwrap(), sm.read(0, 2).unwrap());
    assert!(other.restore(Bytes::from_static(b"RLMANIF1\x01")).is_err());
}

fn entry(index: u64, c: Command) -> Entry {
    Entry {
        index,
        term: 1,
        payload: EntryPayload::Command(c.encode()),
    }
}

fn batch(key: Option<&str>, if_next: Option<u64>, ts_ms: u64, msgs: &[&str]) -> Command {
    Command::Append(Append {
        key: key.map(String::from),
        if_next_offset: if_next,
        ts_ms,
        messages: msgs.iter().map(|m| Bytes::from(m.to_string())).collect(),
    })
}

fn set_cursor(name: &str, offset: u64, force: bool) -> Command {
    Command::SetCursor {
        name: name.into(),
        offset,
        force,
        max_cursors: 2,
    }
}

fn offsets(sm: &StateMachine) -> Vec<u64> {
    sm.read(0, 100).unwrap().iter().map(|(o, _)| *o).collect()
}

#[test]
fn a_batch_takes_consecutive_offsets_and_its_key_covers_it() {
    let mut sm = StateMachine::new(10);
    sm.apply(&cmd(1, None, "x"));
    let b = batch(Some("k"), None, 0, &["a", "b", "c"]);
    assert_eq!(
        sm.apply(&entry(2, b.clone())),
        Applied::Appended { first: 1, count: 3 }
    );
    assert_eq!(
        sm.apply(&entry(3, b)),
        Applied::Duplicate(Landed::appended(1, 2, 1, 3))
    );
    let got = sm.read(0, 10).unwrap();
    let texts: Vec<_> = got.iter().map(|(_, m)| m.clone()).collect();
    assert_eq!(texts, ["x", "a", "b", "c"].map(Bytes::from));
    assert_eq!(offsets(&sm), vec![0, 1, 2, 3]);
}

#[test]
fn a_condition_is_checked_in_log_order_and_a_conflict_is_remembered() {
    let mut sm = StateMachine::new(10);
    assert_eq!(
        sm.apply(&entry(1, batch(None, Some(0), 0, &["a"]))),
        Applied::Appended { first: 0, count: 1 }
    );
    // Two writers both expecting offset 1: the first in log order wins.
    assert_eq!(
        sm.apply(&entry(2, batch(Some("w1"), Some(1), 0, &["b", "c"]))),
        Applied::Appended { first: 1, count: 2 }
    );
    assert_eq!(
        sm.apply(&entry(3, batch(Some("w2"), Some(1), 0, &["d"]))),
        Applied::Conflict { next_offset: 3 }
    );
    assert_eq!(sm.next_offset(), 3);
    // The loser's retry answers its first outcome, even now that 3 is right.
    let conflict = Landed {
        offset: 3,
        index: 3,
        term: 1,
        count: 0,
        conflict: true,
    };
    assert_eq!(
        sm.apply(&entry(4, batch(Some("w2"), Some(3), 0, &["d"]))),
        Applied::Duplicate(conflict)
    );
    assert_eq!(sm.next_offset(), 3);
    // Snapshots remember conflicts too.
    let mut other = StateMachine::new(10);
    other.restore(sm.snapshot()).unwrap();
    assert_eq!(other.lookup_key("w2"), Some(conflict));
}

#[test]
fn trims_raise_the_first_offset_and_reads_start_there() {
    let mut sm = StateMachine::new(10);
    sm.apply(&entry(1, batch(None, None, 0, &["a", "b", "c", "d"])));
    let trim = |before, by_policy| Command::Trim { before, by_policy };
    assert_eq!(
        sm.apply(&entry(2, trim(2, false))),
        Applied::Trimmed {
            first_offset: 2,
            passed_cursors: vec![]
        }
    );
    assert_eq!(offsets(&sm), vec![2, 3]);
    // Never backwards, never past the end.
    sm.apply(&entry(3, trim(1, false)));
    assert_eq!(sm.first_offset(), 2);
    sm.apply(&entry(4, trim(99, false)));
    assert_eq!((sm.first_offset(), sm.next_offset()), (4, 4));
    assert!(sm.read(0, 10).unwrap().is_empty());
    sm.apply(&cmd(5, None, "e"));
    assert_eq!(offsets(&sm), vec![4]);
    let mut other = StateMachine::new(10);
    other.restore(sm.snapshot()).unwrap();
    assert_eq!((other.first_offset(), other.next_offset()), (4, 5));
    assert_eq!(other.read(0, 10).unwrap(), sm.read(0, 10).unwrap());
}

#[test]
fn cursors_move_forward_unless_forced_and_are_bounded() {
    let mut sm = StateMachine::new(10);
    assert_eq!(
        sm.apply(&entry(1, set_cursor("a", 5, false))),
        Applied::Cursor(Ok(5))
    );
    assert_eq!(
        sm.apply(&entry(2, set_cursor("a", 3, false))),
        Applied::Cursor(Err(CursorRefusal::Regression { current: 5 }))
    );
    assert_eq!(sm.cursor("a"), Some(5));
    sm.apply(&entry(3, set_cursor("a", 3, true)));
    assert_eq!(sm.cursor("a"), Some(3));
    sm.apply(&entry(4, set_cursor("b", 9, false)));
    assert_eq!(
        sm.apply(&entry(5, set_cursor("c", 1, false))),
        Applied::Cursor(Err(CursorRefusal::TooMany { max: 2 }))
    );
    let del = |name: &str| Command::DeleteCursor { name: name.into() };
    assert_eq!(sm.apply(&entry(6, del("b"))), Applied::Cursor(Ok(0)));
    assert_eq!(
        sm.apply(&entry(7, del("b"))),
        Applied::Cursor(Err(CursorRefusal::NotFound))
    );
    let mut other = StateMachine::new(10);
    other.restore(sm.snapshot()).unwrap();
    assert_eq!(other.cursors(), sm.cursors());
}

#[test]
fn a_keyed_trim_or_cursor_command_changes_the_log_at_most_once() {
    let mut sm = StateMachine::new(10);
    sm.apply(&entry(1, batch(None, None, 0, &["a", "b", "c", "d"])));
    let keyed = |k: &str, op: Command| Command::keyed(Some(k.into()), op);
    let del = || Command::DeleteCursor { name: "c".into() };
    // A delete re-sent after the cursor was made again leaves the new one.
    sm.apply(&entry(2, set_cursor("c", 1, false)));
    assert_eq!(
        sm.apply(&entry(3, keyed("d1", del()))),
        Applied::Cursor(Ok(0))
    );
    sm.apply(&entry(4, set_cursor("c", 2, false)));
    assert_eq!(
        sm.apply(&entry(5, keyed("d1", del()))),
        Applied::Duplicate(Landed::appended(0, 3, 1, 0))
    );
    assert_eq!(sm.cursor("c"), Some(2));
    // A forced move re-sent after another move does not undo that one.
    let back = set_cursor("c", 1, true);
    assert_eq!(
        sm.apply(&entry(6, keyed("f1", back.clone()))),
        Applied::Cursor(Ok(1))
    );
    sm.apply(&entry(7, set_cursor("c", 3, false)));
    assert!(matches!(
        sm.apply(&entry(8, keyed("f1", back))),
        Applied::Duplicate(l) if l.offset == 1 && l.index == 6
    ));
    assert_eq!(sm.cursor("c"), Some(3));
    // A re-sent trim answers the first offset it set.
    let trim = Command::Trim {
        before: 2,
        by_policy: false,
    };
    sm.apply(&entry(9, keyed("t1", trim.clone())));
    assert!(matches!(
        sm.apply(&entry(10, keyed("t1", trim))),
        Applied::Duplicate(l) if l.offset == 2 && l.index == 9 && !l.conflict
    ));
    // A refusal changed nothing and is not remembered: its re-send is decided
    // afresh.
    let fwd = set_cursor("c", 0, false);
    assert_eq!(
        sm.apply(&entry(11, keyed("r1", fwd.clone()))),
        Applied::Cursor(Err(CursorRefusal::Regression { current: 3 }))
    );
    assert_eq!(sm.lookup_key("r1"), None);
    sm.apply(&entry(12, del()));
    assert_eq!(
        sm.apply(&entry(13, keyed("r1", fwd))),
        Applied::Cursor(Ok(0))
    );
    // Keys survive a snapshot.
    let mut other = StateMachine::new(10);
    other.restore(sm.snapshot()).unwrap();
    assert_eq!(other.lookup_key("d1"), sm.lookup_key("d1"));
    assert_eq!(
        other.apply(&entry(14, keyed("d1", del()))),
        Applied::Duplicate(Landed::appended(0, 3, 1, 0))
    );
}

#[test]
fn policy_trims_stop_at_the_lowest_cursor_and_explicit_ones_say_what_they_passed() {
    let mut sm = StateMachine::new(10);
    sm.apply(&entry(1, batch(None, None, 0, &["a", "b", "c", "d", "e"])));
    sm.apply(&entry(2, set_cursor("slow", 2, false)));
    let r = Retention {
        max_messages: 1,
        ..Default::default()
    };
    assert_eq!(sm.retention_point(&r, 0), 2);
    let policy = Command::Trim {
        before: 4,
        by_policy: true,
    };
    sm.apply(&entry(3, policy));
    assert_eq!(sm.first_offset(), 2);
    let explicit = Command::Trim {
        before: 4,
        by_policy: false,
    };
    assert_eq!(
        sm.apply(&entry(4, explicit)),
        Applied::Trimmed {
            first_offset: 4,
            passed_cursors: vec!["slow".into()]
        }
    );
}

#[test]
fn retention_points_by_count_bytes_and_leader_time() {
    let mut sm = StateMachine::new(10);
    let none = Retention::default();
    for (i, ts) in [1_000u64, 1_500, 3_000, 9_000].into_iter().enumerate() {
        let i = i as u64;
        sm.apply(&entry(i + 1, batch(None, None, ts, &["0123456789"])));
    }
    assert_eq!(sm.retention_point(&none, 1 << 40), 0);
    let count = Retention {
        max_messages: 3,
        ..none
    };
    assert_eq!(sm.retention_point(&count, 0), 1);
    let bytes = Retention {
        max_bytes: 20,
        ..none
    };
    assert_eq!(sm.retention_point(&bytes, 0), 2);
    // Samples at offsets 0 (1000 ms), 2 (3000 ms), 3 (9000 ms); offset 1 shares
    // the first sample. At 8000 ms with a 5 s limit, anything at or before
    // 3000 ms may go: everything below offset 2.
    let age = Retention {
        max_age_s: 5,
        ..none
    };
    assert_eq!(sm.retention_point(&age, 8_000), 2);
    assert_eq!(sm.retention_point(&age, 5_000), 0);
    assert_eq!(sm.retention_point(&age, 14_000), 3);
    // Samples survive a snapshot.
    let mut other = StateMachine::new(10);
    other.restore(sm.snapshot()).unwrap();
    assert_eq!(other.retention_point(&age, 8_000), 2);
}

#[test]
fn a_trim_removes_whole_segments_once_a_manifest_is_durable_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || MessageStore::open(dir.path(), 64, 0).unwrap();
    let files = || std::fs::read_dir(dir.path()).unwrap().count();
    let mut sm = StateMachine::with_store(10, open());
    for i in 1..=20u64 {
        sm.apply(&cmd(i, None, &format!("message {i:04}")));
    }
    // The writer thread has written them.
    sm.messages.flush().unwrap();
    let before = (files(), sm.log_bytes());
    sm.apply(&entry(
        21,
        Command::Trim {
            before: 15,
            by_policy: false,
        },
    ));
    assert_eq!(sm.read(0, 1).unwrap()[0].0, 15);
    // Nothing removed before a manifest naming the trim is durable.
    assert_eq!(files(), before.0);
    let (manifest, sync) = sm.manifest().unwrap();
    sync.run().unwrap();
    sm.synced();
    // The release runs on the writer, after everything queued before it.
    sm.messages.flush().unwrap();
    assert!(files() < before.0, "{} files, were {}", files(), before.0);
    assert!(sm.log_bytes() < before.1);
    let full = sm.snapshot();
    drop(sm);
    let mut sm = StateMachine::with_store(10, open());
    sm.restore(manifest.clone()).unwrap();
    assert_eq!((sm.first_offset(), sm.next_offset()), (15, 20));
    assert_eq!(sm.read(0, 100).unwrap().len(), 5);
    // A joiner's full payload carries the first offset.
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = MessageStore::open(dir2.path(), 64, 0).unwrap();
    let mut joiner = StateMachine::with_store(10, store2);
    joiner.restore_received(full).unwrap();
    assert_eq!((joiner.first_offset(), joiner.next_offset()), (15, 20));
    assert_eq!(joiner.read(0, 100).unwrap(), sm.read(0, 100).unwrap());
    assert_eq!(
        joiner.apply(&cmd(22, None, "more")),
        Applied::Appended {
            first: 20,
            count: 1
        }
    );
    // ... and so does its store after a restart.
    drop(joiner);
    let store2 = MessageStore::open(dir2.path(), 64, 0).unwrap();
    assert_eq!((store2.start(), store2.len()), (15, 21));
}

#[test]
fn a_version_1_manifest_and_full_payload_still_restore() {
    use bytes::BufMut;
    let mut v1 = bytes::BytesMut::new();
    v1.put_u64_le(7); // applied
    v1.put_u64_le(2); // messages
    for m in ["a", "bc"] {
        v1.put_u32_le(m.len() as u32);
        v1.put_slice(m.as_bytes());
    }
    v1.put_u64_le(1); // one key
    v1.put_u32_le(1);
    v1.put_slice(b"k");
    for v in [1u64, 5, 2] {
        v1.put_u64_le(v);
    }
    let mut sm = StateMachine::new(10);
    sm.restore(v1.freeze()).unwrap();
    assert_eq!(
        (sm.applied_index(), sm.first_offset(), sm.next_offset()),
        (7, 0, 2)
    );
    assert_eq!(sm.lookup_key("k"), Some(Landed::appended(1, 5, 2, 1)));
    let mut m1 = bytes::BytesMut::new();
    m1.put_slice(b"RLMANIF1");
    for v in [7u64, 2, 0] {
        m1.put_u64_le(v);
    }
    let mut same = StateMachine::new(10);
    same.apply(&cmd(1, None, "a"));
    same.apply(&cmd(2, None, "bc"));
    same.restore(m1.freeze()).unwrap();
    assert_eq!((same.applied_index(), same.next_offset()), (7, 2));
}

/// What a replica shows: first and next offset, messages, cursors.
type View = (u64, u64, Vec<(u64, Bytes)>, BTreeMap<String, u64>);

/// A replica under test: a store in memory or on disk, restarted at times
/// from its own durable manifest, or rebuilt from a full payload as a joiner.
struct Replica {
    sm: StateMachine,
    dir: Option<tempfile::TempDir>,
    /// The last durable manifest and its index (disk replicas).
    manifest: Option<Bytes>,
}

impl Replica {
    fn open(dir: &tempfile::TempDir) -> StateMachine {
        StateMachine::with_store(8, MessageStore::open(dir.path(), 256, 0).unwrap())
    }

    fn view(&self) -> View {
        let sm = &self.sm;
        let all = sm.read(0, 100_000).unwrap();
        (
            sm.first_offset(),
            sm.next_offset(),
            all,
            sm.cursors().clone(),
        )
    }
}

/// Random appends (batches, conditions, keyed retries), trims and cursor
/// commands applied in one log order by replicas that snapshot, restart from
/// their manifests and join from full payloads: every replica ends every step
/// in the same state, and no conditional append lands unless its condition
/// held in log order.
#[test]
fn replicas_agree_under_random_lifecycle_commands_restarts_and_joins() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    for seed in 0..10u64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut log: Vec<Entry> = Vec::new();
        let disk = tempfile::tempdir().unwrap();
        let mut reps = vec![
            Replica {
                sm: StateMachine::new(8),
                dir: None,
                manifest: None,
            },
            Replica {
                sm: Replica::open(&disk),
                dir: Some(disk),
                manifest: None,
            },
        ];
        for index in 1..=300u64 {
            let next = reps[0].sm.next_offset();
            let cmd = match rng.gen_range(0..10) {
                0..=4 => {
                    let n = rng.gen_range(1..4);
                    let cond = match rng.gen_range(0..3) {
                        0 => Some(next),
                        1 => Some(next.saturating_sub(rng.gen_range(0..3)) + rng.gen_range(0..2)),
                        _ => None,
                    };
                    let key = rng
                        .gen_bool(0.3)
                        .then(|| format!("k{}", rng.gen_range(0..12)));
                    let msgs: Vec<Bytes> = (0..n)
                        .map(|k| Bytes::from(format!("m{index}.{k}")))
                        .collect();
                    Command::Append(Append {
                        key,
                        if_next_offset: cond,
                        ts_ms: 1000 * index,
                        messages: msgs,
                    })
                }
                5 => Command::Trim {
                    before: rng.gen_range(0..next + 2),
                    by_policy: rng.gen(),
                },
                6..=7 => Command::SetCursor {
                    name: format!("c{}", rng.gen_range(0..4)),
                    offset: rng.gen_range(0..next + 5),
                    force: rng.gen(),
                    max_cursors: 3,
                },
                _ => Command::DeleteCursor {
                    name: format!("c{}", rng.gen_range(0..4)),
                },
            };
            let e = Entry {
                index,
                term: 1 + index / 50,
                payload: EntryPayload::Command(cmd.encode()),
            };
            log.push(e.clone());
            let mut outcomes = Vec::new();
            for r in reps.iter_mut() {
                outcomes.push(r.sm.apply(&e));
            }
            assert!(
                outcomes.windows(2).all(|w| w[0] == w[1]),
                "seed {seed} index {index}: {outcomes:?}"
            );
            if let Command::Append(a) = &cmd {
                let landed = matches!(outcomes[0], Applied::Appended { .. });
                let dup = matches!(outcomes[0], Applied::Duplicate(_));
                if let (Some(n), false) = (a.if_next_offset, dup) {
                    assert_eq!(
                        landed,
                        n == next,
                        "seed {seed} index {index}: condition {n}, next {next}"
                    );
                }
            }
            // Snapshot, restart or join now and then.
            match rng.gen_range(0..20) {
                0 => {
                    let r = &mut reps[1];
                    let (m, sync) = r.sm.manifest().unwrap();
                    sync.run().unwrap();
                    r.sm.synced();
                    r.manifest = Some(m);
                }
                1 => {
                    // Restart from the last manifest and replay the log after it.
                    let r = &mut reps[1];
                    // One store per directory: the old one (and its writer
                    // thread) ends before the new one opens it.
                    r.sm = StateMachine::new(8);
                    let dir = r.dir.as_ref().unwrap();
                    let mut sm = Replica::open(dir);
                    match &r.manifest {
                        Some(m) => sm.restore(m.clone()).unwrap(),
                        None => sm.reset().unwrap(),
                    }
                    for e in &log[sm.applied_index() as usize..] {
                        sm.apply(e);
                    }
                    r.sm = sm;
                }
                2 => {
                    let full = reps[0].sm.snapshot();
                    let dir = tempfile::tempdir().unwrap();
                    let mut sm = Replica::open(&dir);
                    sm.restore_received(full).unwrap();
                    reps.push(Replica {
                        sm,
                        dir: Some(dir),
                        manifest: None,
                    });
                    if reps.len() > 4 {
                        reps.remove(2);
                    }
                }
                _ => {}
            }
            let want = reps[0].view();
            for (i, r) in reps.iter().enumerate().skip(1) {
                assert_eq!(r.view(), want, "seed {seed} index {index}: replica {i}");
                assert_eq!(r.sm.applied_index(), index);
                for k in 0..12 {
                    let k = format!("k{k}");
                    assert_eq!(r.sm.lookup_key(&k), reps[0].sm.lookup_key(&k));
                }
            }
        }
    }
}

#[test]
fn an_offset_is_certain_before_apply_only_without_conditions_or_maybe_duplicates() {
    let mut sm = StateMachine::new(10);
    sm.apply(&entry(1, batch(Some("old"), None, 0, &["a", "b"])));
    let enc = |c: Command| c.encode();
    let plain = enc(batch(None, None, 0, &["x", "y", "z"]));
    let keyed = |k: &str| enc(batch(Some(k), None, 0, &["k"]));
    let cond = enc(batch(None, Some(5), 0, &["c"]));
    let legacy = {
        let mut b = vec![1u8];
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(b"L");
        b.extend_from_slice(b"msg");
        b
    };
    let trim = enc(Command::Trim {
        before: 1,
        by_policy: false,
    });
    let certain = |p: &[&[u8]]| sm.certain_offset(p);
    // Counts of the entries before the write, trims and cursors changing nothing.
    assert_eq!(
        certain(&[&plain[..], &trim[..], &legacy[..], &keyed("new")[..]]),
        Some(6)
    );
    assert_eq!(certain(&[&keyed("new")[..]]), Some(2));
    // Conditional: the write's own, or an entry before it.
    assert_eq!(certain(&[&plain[..], &cond[..]]), None);
    assert_eq!(certain(&[&cond[..], &plain[..]]), None);
    // Keys that may make an entry a duplicate: applied, or repeated.
    assert_eq!(certain(&[&keyed("old")[..], &plain[..]]), None);
    assert_eq!(certain(&[&keyed("k")[..], &keyed("k")[..]]), None);
    let legacy_dup = |k: &[u8]| {
        let mut b = vec![1u8];
        b.extend_from_slice(&(k.len() as u32).to_le_bytes());
        b.extend_from_slice(k);
        b.push(b'm');
        b
    };
    assert_eq!(certain(&[&legacy_dup(b"old")[..], &plain[..]]), None);
}
