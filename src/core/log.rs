//! The in-memory Raft log above the latest snapshot, plus a bounded tail of
//! entries the snapshot already covers (the catch-up tail).
//!
//! Why the tail: a compaction used to drop every entry up to the snapshot, so
//! a follower only one entry behind the leader's snapshot point (a restart, a
//! short pause) was sent the whole snapshot, i.e. the whole message log, and
//! the nemesis showed a just-deposed leader getting one that way. With the
//! last `keep_entries` / `keep_bytes` of the covered entries kept (as etcd
//! keeps 5,000), it gets the entries it lacks instead. The tail exists only in
//! memory: storage compacts to the snapshot, so after a restart it is empty.
//!
//! Invariants:
//! - `entries[i].index == offset + 1 + i` (dense, no holes), `offset <=
//!   snapshot.index`; entries up to `snapshot.index` are the tail: committed,
//!   applied, only ever read (sent to followers);
//! - `applied <= committed` and `applied <= persisted`; committed entries are never
//!   truncated (asserted);
//! - `unstable_from` is the first index not yet handed to storage; entries below it
//!   have been handed out in order, and `persisted` counts what storage confirmed.

use super::types::{Entry, EntryPayload, Membership, Snapshot, SnapshotMeta};

#[derive(Debug)]
pub struct RaftLog {
    pub(crate) snapshot: SnapshotMeta,
    /// The index before `entries[0]` and its term.
    offset: u64,
    offset_term: u64,
    entries: Vec<Entry>,
    pub(crate) committed: u64,
    pub(crate) applied: u64,
    pub(crate) persisted: u64,
    unstable_from: u64,
    /// A snapshot received from the leader that storage must install.
    pub(crate) pending_snapshot: Option<Snapshot>,
}

impl RaftLog {
    /// A log recovered from storage: everything given here is already durable.
    pub fn new(snapshot: SnapshotMeta, entries: Vec<Entry>, committed: u64) -> Self {
        let last = entries.last().map_or(snapshot.index, |e| e.index);
        if let Some(first) = entries.first() {
            assert_eq!(first.index, snapshot.index + 1, "recovered log has a hole");
        }
        let committed = committed.clamp(snapshot.index, last);
        RaftLog {
            unstable_from: last + 1,
            persisted: last,
            applied: snapshot.index,
            committed,
            offset: snapshot.index,
            offset_term: snapshot.term,
            snapshot,
            entries,
            pending_snapshot: None,
        }
    }

    pub fn last_index(&self) -> u64 {
        self.offset + self.entries.len() as u64
    }

    pub fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.offset_term, |e| e.term)
    }

    /// Term of the entry at `index`; `None` when compacted away or beyond the end.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        if index == self.offset {
            return Some(self.offset_term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The entry at `index`, also one of the catch-up tail.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.offset {
            return None;
        }
        self.entries.get((index - self.offset - 1) as usize)
    }

    pub fn matches(&self, index: u64, term: u64) -> bool {
        self.term(index) == Some(term)
    }

    /// Raft's "at least as up to date" comparison (§5.4.1).
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Leader append: entries continue the log.
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index() + 1,
            "leader append with a hole"
        );
        self.entries.push(entry);
    }

    /// Follower append after `(prev_index, prev_term)` matched. Truncates a
    /// conflicting suffix. Returns the index of the last entry now known to match
    /// and whether an existing suffix was cut off.
    pub fn append_after(&mut self, prev_index: u64, entries: &[Entry]) -> (u64, bool) {
        let mut truncated = false;
        for (i, e) in entries.iter().enumerate() {
            debug_assert_eq!(e.index, prev_index + 1 + i as u64);
            if e.index <= self.snapshot.index || self.matches(e.index, e.term) {
                continue;
            }
            assert!(
                e.index > self.committed,
                "truncating committed entry {}",
                e.index
            );
            truncated = e.index <= self.last_index();
            self.truncate_from(e.index);
            self.entries.extend_from_slice(&entries[i..]);
            break;
        }
        (prev_index + entries.len() as u64, truncated)
    }

    fn truncate_from(&mut self, index: u64) {
        let keep = (index - self.offset - 1) as usize;
        self.entries.truncate(keep);
        self.unstable_from = self.unstable_from.min(index);
        self.persisted = self.persisted.min(index - 1);
    }

    /// Largest index `<= index` whose term is `<= term` (and its term): the
    /// conflict hint that lets a leader skip a whole term per round trip.
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t > term => i -= 1,
                Some(t) => return (i, t),
                None => return (i, 0),
            }
        }
    }

    /// Entries from `lo`, at most `max_entries` and about `max_bytes` (at least one).
    pub fn slice(&self, lo: u64, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut i = lo;
        while let Some(e) = self.entry(i) {
            if !out.is_empty() && (out.len() >= max_entries || bytes + e.size() > max_bytes) {
                break;
            }
            bytes += e.size();
            out.push(e.clone());
            i += 1;
        }
        out
    }

    pub fn commit_to(&mut self, index: u64) -> bool {
        if index > self.committed {
            assert!(index <= self.last_index(), "commit beyond the log");
            self.committed = index;
            return true;
        }
        false
    }

    /// Entries handed to storage for the first time.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        let out = self.slice(self.unstable_from, usize::MAX, usize::MAX);
        self.unstable_from = self.last_index() + 1;
        out
    }

    pub fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    /// Storage confirmed everything up to `(index, term)` is durable.
    pub fn persisted_to(&mut self, index: u64, term: u64) -> bool {
        if index > self.persisted && index < self.unstable_from && self.matches(index, term) {
            self.persisted = index;
            return true;
        }
        false
    }

    /// Committed, durable entries not yet handed out for applying.
    pub fn take_committed(&mut self) -> Vec<Entry> {
        let hi = self.committed.min(self.persisted);
        if hi <= self.applied {
            return Vec::new();
        }
        let out = self.slice(self.applied + 1, (hi - self.applied) as usize, usize::MAX);
        self.applied = hi;
        out
    }

    pub fn has_committed(&self) -> bool {
        self.committed.min(self.persisted) > self.applied
    }

    /// The driver took a snapshot at `meta.index` (already applied): drop the
    /// prefix, except a catch-up tail of at most `keep_entries` entries and
    /// `keep_bytes` bytes ending at `meta.index`.
    pub fn compact(&mut self, meta: SnapshotMeta, keep_entries: u64, keep_bytes: usize) {
        if meta.index <= self.snapshot.index {
            return;
        }
        assert!(meta.index <= self.applied, "snapshot beyond applied index");
        assert!(
            self.matches(meta.index, meta.term),
            "snapshot term mismatch"
        );
        let mut offset = meta.index;
        let mut bytes = 0;
        while offset > self.offset && meta.index - offset < keep_entries {
            let size = self.entry(offset).map_or(usize::MAX, Entry::size);
            if size > keep_bytes - bytes {
                break;
            }
            bytes += size;
            offset -= 1;
        }
        if offset > self.offset {
            self.offset_term = self.term(offset).expect("in the log");
            self.entries.drain(..(offset - self.offset) as usize);
            self.offset = offset;
        }
        self.snapshot = meta;
    }

    /// Entries held that the snapshot already covers (the catch-up tail).
    pub fn tail_len(&self) -> u64 {
        self.snapshot.index - self.offset
    }

    /// Replace the whole log with a snapshot received from the leader.
    pub fn restore(&mut self, snapshot: Snapshot) {
        let idx = snapshot.meta.index;
        assert!(idx > self.committed, "restoring an older snapshot");
        self.entries.clear();
        self.offset = idx;
        self.offset_term = snapshot.meta.term;
        self.snapshot = snapshot.meta.clone();
        self.committed = idx;
        self.applied = idx;
        self.persisted = idx;
        self.unstable_from = idx + 1;
        self.pending_snapshot = Some(snapshot);
    }

    /// The membership in force: the last one in the log, else the snapshot's.
    pub fn membership(&self) -> (u64, Membership) {
        let after_snapshot = self
            .entries
            .iter()
            .rev()
            .take_while(|e| e.index > self.snapshot.index);
        for e in after_snapshot {
            if let EntryPayload::Membership(m) = &e.payload {
                return (e.index, m.clone());
            }
        }
        (self.snapshot.index, self.snapshot.membership.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testutil::{command, log_of, members};

    fn log(terms: &[u64], committed: u64) -> RaftLog {
        let m = members(&["n1", "n2", "n3"], &[]);
        RaftLog::new(SnapshotMeta::default(), log_of(&m, terms), committed)
    }

    #[test]
    fn persisted_counts_only_entries_handed_out_and_still_held() {
        let mut l = log(&[1], 1);
        l.append(command(3, 2));
        assert!(!l.persisted_to(3, 2), "not handed to storage yet");
        assert_eq!(l.take_unstable(), [command(3, 2)]);
        assert!(!l.persisted_to(3, 9), "another entry at that index");
        assert!(l.persisted_to(3, 2));
        assert_eq!(l.persisted, 3);
        assert!(!l.persisted_to(2, 1), "never backwards");
    }

    #[test]
    fn truncation_lowers_persisted_and_hands_out_the_new_suffix() {
        let mut l = log(&[1, 1, 1], 2);
        assert_eq!(l.persisted, 4);
        let (last, truncated) = l.append_after(2, &[command(3, 3)]);
        assert_eq!((last, truncated), (3, true));
        assert_eq!(l.persisted, 2);
        assert_eq!(l.last_index(), 3);
        assert_eq!(l.take_unstable(), [command(3, 3)]);
        // A late confirmation of the replaced entry does not count.
        assert!(!l.persisted_to(3, 1));
        assert!(l.persisted_to(3, 3));
    }

    #[test]
    fn a_matching_append_truncates_nothing() {
        let mut l = log(&[1, 1], 1);
        let (last, truncated) = l.append_after(1, &[command(2, 1)]);
        assert_eq!((last, truncated), (2, false));
        assert_eq!(
            l.last_index(),
            3,
            "the suffix after a matching prefix stays"
        );
        assert!(!l.has_unstable());
    }

    #[test]
    #[should_panic(expected = "truncating committed entry")]
    fn truncating_a_committed_entry_is_refused() {
        let mut l = log(&[1, 1], 3);
        l.append_after(2, &[command(3, 2)]);
    }

    #[test]
    fn entries_are_applied_only_once_committed_and_durable() {
        let mut l = log(&[], 1);
        assert_eq!(l.take_committed().len(), 1);
        l.append(command(2, 2));
        l.commit_to(2);
        assert!(!l.has_committed(), "committed, not durable");
        assert!(l.take_committed().is_empty());
        l.take_unstable();
        l.persisted_to(2, 2);
        assert_eq!(l.take_committed(), [command(2, 2)]);
        assert_eq!(l.applied, 2);
    }

    #[test]
    fn the_membership_in_force_is_the_last_appended_even_uncommitted() {
        let mut l = log(&[1], 2);
        let bigger = members(&["n1", "n2", "n3", "n4"], &[]);
        l.append(Entry {
            index: 3,
            term: 2,
            payload: EntryPayload::Membership(bigger.clone()),
        });
        assert_eq!(l.membership(), (3, bigger));
        l.append_after(2, &[command(3, 3)]);
        assert_eq!(l.membership(), (1, members(&["n1", "n2", "n3"], &[])));
    }

    #[test]
    fn conflict_hint_skips_a_whole_term() {
        let l = log(&[2, 2, 2, 3, 3], 1);
        // The leader's entry at 6 has term 2: skip our term-3 entries at once.
        assert_eq!(l.find_conflict_by_term(6, 2), (4, 2));
        assert_eq!(l.find_conflict_by_term(9, 5), (6, 3));
        assert_eq!(l.find_conflict_by_term(6, 1), (1, 1));
    }

    fn snapshot_at(l: &RaftLog, index: u64) -> SnapshotMeta {
        SnapshotMeta {
            index,
            term: l.term(index).unwrap(),
            membership: members(&["n1", "n2", "n3"], &[]),
        }
    }

    /// A compaction keeps the last entries the snapshot covers (at most
    /// `keep_entries`, about `keep_bytes`) readable, for followers just
    /// behind the snapshot point; terms stay known down to the tail's start,
    /// nothing below it, and the membership in force is still the snapshot's.
    #[test]
    fn compaction_keeps_a_bounded_catch_up_tail() {
        // Entries 1..=11 (terms 1, then 2 from index 5), all committed and applied.
        let mut l = log(&[1, 1, 1, 2, 2, 2, 2, 2, 2, 2], 11);
        assert_eq!(l.take_committed().len(), 11);
        l.compact(snapshot_at(&l, 8), 3, usize::MAX);
        assert_eq!((l.snapshot.index, l.tail_len()), (8, 3));
        assert_eq!(l.entry(5), None);
        assert_eq!(l.term(5), Some(2), "the tail's previous term is known");
        assert_eq!(l.term(4), None);
        assert_eq!(l.entry(6), Some(&command(6, 2)));
        assert_eq!(l.slice(6, 10, usize::MAX).len(), 6, "6..=11 can be sent");
        assert_eq!((l.last_index(), l.last_term()), (11, 2));
        assert_eq!(l.membership().0, 8, "the snapshot's, not an older entry's");
        assert_eq!(
            l.find_conflict_by_term(7, 1),
            (4, 0),
            "below the tail: unknown"
        );

        // The next compaction moves the tail; the byte bound cuts it shorter.
        let one = command(10, 2).size();
        l.compact(snapshot_at(&l, 10), 3, 2 * one);
        assert_eq!((l.snapshot.index, l.tail_len()), (10, 2));
        assert_eq!(l.entry(8), None);
        assert_eq!(l.term(8), Some(2));
        // No tail: exactly the old behaviour.
        l.compact(snapshot_at(&l, 11), 0, usize::MAX);
        assert_eq!((l.tail_len(), l.last_index(), l.last_term()), (0, 11, 2));
        assert_eq!(l.entry(11), None);
        assert_eq!(l.term(11), Some(2));
    }

    #[test]
    fn a_restored_snapshot_replaces_the_log() {
        let mut l = log(&[1, 1], 1);
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: 10,
                term: 3,
                membership: members(&["n1"], &[]),
            },
            data: Default::default(),
        };
        l.restore(snap);
        assert_eq!((l.last_index(), l.last_term()), (10, 3));
        assert_eq!((l.committed, l.applied, l.persisted), (10, 10, 10));
        assert_eq!(l.membership().0, 10);
        assert!(l.pending_snapshot.is_some());
        assert!(!l.has_unstable());
    }
}
