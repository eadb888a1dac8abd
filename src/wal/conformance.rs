//! The conformance suite every [`LogStore`] must pass.
//!
//! Why one suite: the consensus core relies on the trait contract alone, so each
//! bullet of it is checked here once, against every implementation, rather than by
//! ad-hoc tests per store. A store is driven through an `open` function:
//! `open(None)` returns a fresh, empty store; `open(Some(store))` "restarts" it
//! (the disk store drops and reopens its directory; the memory store crashes).
//!
//! Checked contract bullets:
//! - no holes: gaps, non-dense batches and appends at or below the snapshot fail
//!   with [`WalError::Invalid`] and change nothing;
//! - a conflicting suffix is truncated, also across a restart;
//! - the hard state round-trips;
//! - a restart after `sync` returns exactly the synced state; without `sync`, the
//!   state after some later prefix of the calls;
//! - snapshots: durable on return, compact the log (keeping the entries after a
//!   held `(index, term)`, dropping all otherwise), survive restarts;
//! - `entries(lo, hi)` ranges and `last_index`;
//! - a seeded random run compared with a trivial reference model after every step.
//!
//! Every check panics with a message naming the case.

use super::{LogStore, Recovered, WalError};
use crate::core::types::{
    Entry, EntryPayload, HardState, Member, Membership, Snapshot, SnapshotMeta,
};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Runs every case; each starts from `open(None)`.
pub fn run_suite<S: LogStore>(mut open: impl FnMut(Option<S>) -> S) {
    empty_store(&mut open);
    append_and_read(&mut open);
    no_holes(&mut open);
    truncate_suffix(&mut open);
    hard_state_round_trip(&mut open);
    reopen_after_sync(&mut open);
    unsynced_calls_are_a_prefix(&mut open);
    snapshot_keeps_entries_after_held_index(&mut open);
    snapshot_drops_log_it_does_not_match(&mut open);
    snapshot_is_durable_without_sync(&mut open);
    for seed in 0..4 {
        random_against_model(&mut open, seed, 300);
    }
}

/// A test entry; the payload kind varies with the index so every kind is stored.
pub fn entry(index: u64, term: u64) -> Entry {
    let payload = match index % 5 {
        0 => EntryPayload::Noop,
        3 => EntryPayload::Membership(membership(index)),
        _ => EntryPayload::Command(Bytes::from(format!("cmd-{index}-{term}"))),
    };
    Entry {
        index,
        term,
        payload,
    }
}

/// Dense entries `lo..hi`, all of term `term`.
pub fn entries(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
    (lo..hi).map(|i| entry(i, term)).collect()
}

/// A test snapshot at `index`/`term`.
pub fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            membership: membership(index),
        },
        data: Bytes::from(format!("state-{index}-{term}")),
    }
}

fn membership(seed: u64) -> Membership {
    let mut m = Membership::default();
    for i in 0..(seed % 3 + 1) {
        let member = Member {
            grpc_addr: format!("10.0.0.{i}:7000"),
            http_addr: format!("10.0.0.{i}:8000"),
            voter: i != 2,
        };
        m.members.insert(format!("n{i}"), member);
    }
    m
}

fn hs(term: u64, vote: Option<&str>, commit: u64) -> HardState {
    HardState {
        term,
        vote: vote.map(str::to_string),
        commit,
    }
}

/// Asserts the store's whole visible state equals `want`.
fn assert_state<S: LogStore>(store: &S, want: &Recovered, case: &str) {
    let snap_index = want.snapshot.as_ref().map_or(0, |s| s.meta.index);
    let last = want.entries.last().map_or(snap_index, |e| e.index);
    assert_eq!(store.snapshot(), want.snapshot, "{case}: snapshot");
    assert_eq!(store.last_index(), last, "{case}: last_index");
    let got = store
        .entries(snap_index + 1, last + 1)
        .unwrap_or_else(|e| panic!("{case}: entries: {e}"));
    assert_eq!(got, want.entries, "{case}: entries");
}

/// Asserts what a just-opened store recovered equals `want`, and its state agrees.
fn assert_recovered<S: LogStore>(store: &S, want: &Recovered, case: &str) {
    assert_eq!(store.recovered(), want, "{case}: recovered");
    assert_state(store, want, case);
}

fn is_invalid(r: Result<(), WalError>) -> bool {
    matches!(r, Err(WalError::Invalid(_)))
}

fn empty_store<S: LogStore>(open: &mut impl FnMut(Option<S>) -> S) {
    let store = open(None);
    assert_recovered(&store, &Recovered::default(), "empty store");
    assert_eq!(
        store.entries(1, 1).unwrap(),
        vec![],
        "empty store: empty range"
    );
    assert!(
        store.entries(1, 2).is_err(),
        "empty store: entries past the end"
    );
    let store = open(Some(store));
    assert_recovered(&store, &Recovered::default(), "empty store reopened");
}

fn append_and_read<S: LogStore>(open: &mut impl FnMut(Option<S>) -> S) {
    let case = "append and read";
    let mut store = open(None);
    store.append(&entries(1, 4, 1)).unwrap();
    store.append(&[]).unwrap();
    store.append(&entries(4, 11, 2)).unwrap();
    assert_eq!(store.last_index(), 10, "{case}: last_index");
    let all: Vec<Entry> = entries(1, 4, 1)
        .into_iter()
        .chain(entries(4, 11, 2))
        .collect();
    assert_eq!(store.entries(1, 11).unwrap(), all, "{case}: all");
    assert_eq!(
        store.entries(3, 6).unwrap(),
        all[2..5].to_vec(),
        "{case}: middle"
    );
    assert_eq!(
        store.entries(10, 11).unwrap(),
        all[9..].to_vec(),
        "{case}: last"
    );
    assert_eq!(store.entries(5, 5).unwrap(), vec![], "{case}: empty range");
    assert!(store.entries(0, 2).is_err(), "{case}: index 0");
    assert!(store.entries(5, 12).is_err(), "{case}: past the end");
    assert!(store.entries(6, 5).is_err(), "{case}: lo > hi");
}

fn no_holes<S: LogStore>(open: &mut impl FnMut(Option<S>) -> S) {
    let case = "no holes";
    let mut store = open(None);
    assert!(
        is_invalid(store.append(&entries(2, 3, 1))),
        "{case}: first append at 2"
    );
    store.append(&entries(1, 6, 1)).unwrap();
    assert!(is_invalid(store.append(&entries(7, 8, 1))), "{case}: gap");
    let not_dense = vec![entry(6, 1), entry(8, 1)];
    assert!(is_invalid(store.append(&not_dense)), "{case}: not dense");
    let descending = vec![entry(6, 1), entry(5, 1)];
    assert!(is_invalid(store.append(&descending)), "{case}: descending");
    store.install_snapshot(&snapshot(3, 1)).unwrap();
    assert!(
        is_invalid(store.append(&entries(3, 5, 2))),
        "{case}: at the snapshot index"
    );
    assert!(
        store.entries(3, 4).is_err(),
        "{case}: read below the snapshot"
    );
    let want = Recovered {
        hard_state: HardState::default(),
        snapshot: Some(snapshot(3, 1)),
        entries: entries(4, 6, 1),
    };
    assert_state(&store, &want, case);
    store.sync().unwrap();
    let store = open(Some(store));
    assert_recovered(&store, &want, "no holes, reopened");
}

fn truncate_suffix<S: LogStore>(open: &mut impl FnMut(Option<S>) -> S) {
    let case = "truncate suffix";
    let mut store = open(None);
    store.append(&entries(1, 10, 1)).unwrap();
    store.sync().unwrap();
    store.append(&entries(4, 6, 2)).unwrap();
    let want: Vec<Entry> = entries(1, 4, 1)
        .into_iter()
        .chain(entries(4, 6, 2))
        .collect();
    assert_eq!(store.last_index(), 5, "{case}: last_index");
    assert_eq!(store.entries(1, 6).unwrap(), want, "{case}: entries");
    store.append(&entries(6, 8, 3)).unwrap();
    store.append(&entries(7, 8, 4)).unwrap();
    store.sync().unwrap();
    let want: Vec<Entry> = want.into_iter().chain([entry(6, 3), entry(7, 4)]).collect();
    let store = open(Some(store));
    let want = Recovered {
        entries: want,
        ..Recovered::default()
    };
    assert_recovered(&store, &want, "truncate suffix, reopened");
    let mut store = store;
    store.append(&entries(1, 3, 5)).unwrap();
    store.sync().unwrap();
    let store = open(Some(store));
    let want = Recovered {
        entries: entries(1, 3, 5),
        ..Recovered::default()
    };
    assert_recovered(&store, &want, "truncate to the first entry, reopened");
}

fn hard_state_round_trip<S: LogStore>(open: &mut impl FnMut(Option<S>) -> S) {
    let mut store = open(None);
    store.set_hard_state(&hs(3, Some("n2"), 0)).unwrap();
    store.sync().unwrap();
    let mut store = open(Some(store));
    assert_eq!(
        store.recovered().hard_state,
        hs(3, Some("n2"), 0),
        "hard state: first"
    );
    store.append(&entries(1, 3, 3)).unwrap();
    store.set_hard_state(&hs(4, None, 2)).unwrap();
    store.set_hard_state(&hs(4, Some("n1"), 2)).unwrap();
    store.sync().unwrap();
    let store = open(Some(store));
    let want = Recovered {
        hard_state: hs(4, Some("n1"), 2),
        snapshot: None,
        entries: entries(1, 3, 3),
    };
    assert_recovered(&store, &want, "hard state: latest wins");
}

fn reopen_after_sync<S: LogStore>(open: &mut impl FnMut(Option<S>) -> S) {
    let mut store = open(None);
    let mut want = Recovered::default();
    for round in 1..=5u64 {
        let lo = want.entries.len() as u64 + 1;
        store.append(&entries(lo, lo + round, round)).unwrap();
        store.set_hard_state(&hs(round, Some("n1"), lo)).unwrap();
        store.sync().unwrap();
        want.entries.extend(entries(lo, lo + round, round));
        want.hard_state = hs(round, Some("n1"), lo);
        store = open(Some(store));
        assert_recovered(&store, &want, &format!("reopen after sync, round {round}"));
    }
}

fn unsynced_calls_are_a_prefix<S: LogStore>(open: &mut impl FnMut(Option<S>) -> S) {
    let case = "unsynced calls";
    let mut store = open(None);
    store.append(&entries(1, 4, 1)).unwrap();
    store.set_hard_state(&hs(1, Some("n1"), 1)).unwrap();
    store.sync().unwrap();
    let synced = Recovered {
        hard_state: hs(1, Some("n1"), 1),
        snapshot: None,
        entries: entries(1, 4, 1),
    };
    let mut states = vec![synced.clone()];
    let mut next = synced;
    store.append(&entries(2, 4, 2)).unwrap();
    next.entries.truncate(1);
    next.entries.extend(entries(2, 4, 2));
    states.push(next.clone());
    store.set_hard_state(&hs(2, None, 2)).unwrap();
    next.hard_state = hs(2, None, 2);
    states.push(next.clone());
    store.append(&entries(4, 6, 2)).unwrap();
    next.entries.extend(entries(4, 6, 2));
    states.push(next);
    let store = open(Some(store));
    assert!(
        states.contains(store.recovered()),
        "{case}: recovered {:?} is no prefix state",
        store.recovered()
    );
    assert_state(&store, &store.recovered().clone(), case);
}

fn snapshot_keeps_entries_after_held_index<S: LogStore>(open: &mut impl FnMut(Option<S>) -> S) {
    let case = "snapshot at a held entry";
    let mut store = open(None);
    store.append(&entries(1, 21, 1)).unwrap();
    store.sync().unwrap();
    store.install_snapshot(&snapshot(12, 1)).unwrap();
    let mut want = Recovered {
        hard_state: HardState::default(),
        snapshot: Some(snapshot(12, 1)),
        entries: entries(13, 21, 1),
    };
    assert_state(&store, &want, case);
    store.install_snapshot(&snapshot(5, 1)).unwrap();
    assert_state(&store, &want, "older snapshot is ignored");
    store.append(&entries(21, 24, 2)).unwrap();
    store.sync().unwrap();
    want.entries.extend(entries(21, 24, 2));
    let mut store = open(Some(store));
    assert_recovered(&store, &want, "snapshot at a held entry, reopened");
    store.install_snapshot(&snapshot(23, 2)).unwrap();
    let want = Recovered {
        hard_state: HardState::default(),
        snapshot: Some(snapshot(23, 2)),
        entries: vec![],
    };
    assert_state(&store, &want, "snapshot at the last entry");
    assert_eq!(
        store.last_index(),
        23,
        "{case}: last_index is the snapshot index"
    );
    let mut store = open(Some(store));
    assert_recovered(&store, &want, "snapshot at the last entry, reopened");
    store.append(&entries(24, 26, 3)).unwrap();
    store.sync().unwrap();
    let store = open(Some(store));
    let want = Recovered {
        entries: entries(24, 26, 3),
        ..want
    };
    assert_recovered(&store, &want, "append after snapshot, reopened");
}

fn snapshot_drops_log_it_does_not_match<S: LogStore>(open: &mut impl FnMut(Option<S>) -> S) {
    let mut store = open(None);
    store.append(&entries(1, 11, 1)).unwrap();
    store.set_hard_state(&hs(3, Some("n3"), 4)).unwrap();
    store.sync().unwrap();
    store.install_snapshot(&snapshot(7, 3)).unwrap();
    let want = Recovered {
        hard_state: hs(3, Some("n3"), 4),
        snapshot: Some(snapshot(7, 3)),
        entries: vec![],
    };
    assert_state(&store, &want, "snapshot with another term");
    let mut store = open(Some(store));
    assert_recovered(&store, &want, "snapshot with another term, reopened");
    store.install_snapshot(&snapshot(30, 4)).unwrap();
    assert_eq!(store.last_index(), 30, "snapshot past the log: last_index");
    store.append(&entries(31, 33, 4)).unwrap();
    store.sync().unwrap();
    let store = open(Some(store));
    let want = Recovered {
        snapshot: Some(snapshot(30, 4)),
        entries: entries(31, 33, 4),
        ..want
    };
    assert_recovered(&store, &want, "snapshot past the log, reopened");
}

fn snapshot_is_durable_without_sync<S: LogStore>(open: &mut impl FnMut(Option<S>) -> S) {
    let mut store = open(None);
    store.append(&entries(1, 6, 1)).unwrap();
    store.install_snapshot(&snapshot(3, 1)).unwrap();
    let store = open(Some(store));
    let want = Recovered {
        hard_state: HardState::default(),
        snapshot: Some(snapshot(3, 1)),
        entries: entries(4, 6, 1),
    };
    assert_recovered(&store, &want, "snapshot durable on return");
}

/// The reference model: the contract, written as plainly as possible.
#[derive(Clone, Debug, Default)]
struct Model {
    state: Recovered,
}

impl Model {
    fn snapshot_index(&self) -> u64 {
        self.state.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }
    fn last_index(&self) -> u64 {
        self.state
            .entries
            .last()
            .map_or(self.snapshot_index(), |e| e.index)
    }
    fn term_at(&self, index: u64) -> Option<u64> {
        self.state
            .entries
            .iter()
            .find(|e| e.index == index)
            .map(|e| e.term)
    }
    fn append(&mut self, new: &[Entry]) {
        self.state.entries.retain(|e| e.index < new[0].index);
        self.state.entries.extend_from_slice(new);
    }
    fn install(&mut self, snap: &Snapshot) {
        if self.term_at(snap.meta.index) == Some(snap.meta.term) {
            self.state.entries.retain(|e| e.index > snap.meta.index);
        } else {
            self.state.entries.clear();
        }
        self.state.snapshot = Some(snap.clone());
    }
}

/// Random calls checked against [`Model`]; `states` holds the model after the last
/// sync and after each later call, so a restart may land on any of them.
fn random_against_model<S: LogStore>(
    open: &mut impl FnMut(Option<S>) -> S,
    seed: u64,
    steps: usize,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut store = open(None);
    let mut model = Model::default();
    let mut states = vec![model.clone()];
    let mut term = 1;
    for step in 0..steps {
        let case = format!("random seed {seed} step {step}");
        match rng.gen_range(0..100) {
            0..=44 => {
                let lo = rng.gen_range(model.snapshot_index() + 1..=model.last_index() + 1);
                term += u64::from(rng.gen_bool(0.2));
                let new = entries(lo, lo + rng.gen_range(1..6), term);
                store
                    .append(&new)
                    .unwrap_or_else(|e| panic!("{case}: append: {e}"));
                model.append(&new);
                states.push(model.clone());
            }
            45..=54 => {
                let new = hs(
                    term,
                    rng.gen_bool(0.5).then_some("n1"),
                    rng.gen_range(0..=model.last_index()),
                );
                store.set_hard_state(&new).unwrap();
                model.state.hard_state = new;
                states.push(model.clone());
            }
            55..=74 => {
                store.sync().unwrap();
                states = vec![model.clone()];
            }
            75..=81 => {
                let index = rng.gen_range(model.snapshot_index() + 1..=model.last_index() + 2);
                let snap_term = match model.term_at(index) {
                    Some(t) if rng.gen_bool(0.8) => t,
                    _ => term,
                };
                store.install_snapshot(&snapshot(index, snap_term)).unwrap();
                model.install(&snapshot(index, snap_term));
                states = vec![model.clone()];
            }
            82..=89 => {
                store = open(Some(store));
                let got = store.recovered().clone();
                let found = states.iter().find(|m| m.state == got);
                model = found
                    .unwrap_or_else(|| panic!("{case}: recovered {got:?} is no prefix state"))
                    .clone();
                states = vec![model.clone()];
            }
            _ => {
                let lo = rng.gen_range(model.snapshot_index() + 1..=model.last_index() + 1);
                let hi = rng.gen_range(lo..=model.last_index() + 1);
                let want: Vec<Entry> = model
                    .state
                    .entries
                    .iter()
                    .filter(|e| (lo..hi).contains(&e.index))
                    .cloned()
                    .collect();
                assert_eq!(
                    store.entries(lo, hi).unwrap(),
                    want,
                    "{case}: entries({lo}, {hi})"
                );
            }
        }
        assert_state(&store, &model.state, &case);
    }
}
