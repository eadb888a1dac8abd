//! The persistence (WAL) manager: the log store, the one persistence job in
//! flight (a `Ready`'s durable part, or a local snapshot's install), a `Ready`
//! the disk refused (full) and when to retry it, a local snapshot in its two
//! phases, the term and vote as last made durable, and the hard-state file
//! (`crate::hardstate`).
//!
//! A local snapshot is taken in two phases so that it never holds up a `Ready`:
//! first the message store is synced on a blocking thread of its own (up to
//! `snapshot.every_bytes` of messages written since the last sync: hundreds of
//! milliseconds on a slow disk, during which Readies keep being persisted),
//! then, once that is durable, the short WAL install (the manifest, the
//! compaction) runs as a job like a `Ready`. Writes of 64 KiB messages had a p99
//! equal to the snapshot time while the sync ran inside the job.
//!
//! The store lives here when no job runs and inside the job while one does
//! (moved onto a blocking thread and back), so the controller does not block on
//! a write or an fsync; except that a job may also run on the controller's
//! thread ([`Persistence::run_inline`], a follower's small `Ready` on a fast
//! disk), its result then taken the same way. The controller decides what to
//! persist and what follows (see `controller::persist`); this manager only runs
//! the jobs and keeps their bookkeeping. The rule of a `Ready`'s order (what
//! leaves before its fsync, whether it needs the disk, whether an fsync) is
//! three pure functions here (`early_messages`, `needs_disk`, `needs_fsync`),
//! which the seeded simulator's driver (`tests/common`) calls too.
//!
//! Invariants:
//! - at most one job runs at a time, so Readies reach the disk in order;
//! - the files a snapshot's install (local or received) left dead are deleted
//!   by one thread of their own, in the order the installs left them, oldest
//!   first (`Garbage`), not inside the job;
//! - an fsync is skipped only when nothing but the commit index changed (a lost
//!   commit index is relearned from the leader);
//! - the hard-state file is rewritten whenever the durable term or vote, the
//!   repairing mark or the cluster's peers changed, before anything that depends
//!   on them leaves the node (the caller calls [`Persistence::sync_hardstate_file`]
//!   after each durable `Ready`).

use super::faults::Faults;
use crate::core::{Envelope, NodeId, Ready, Snapshot, SnapshotMeta};
use crate::msgstore::SyncHandle;
use crate::wal::{LogStore, WalError};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a `Ready` refused for lack of space waits before it is retried.
const STALL_RETRY: Duration = Duration::from_millis(200);

/// A persistence job's result: the store comes back with the Ready.
pub struct Persisted<S> {
    store: S,
    rd: Ready,
    result: Result<Option<Duration>, WalError>,
    /// A snapshot this node took of its own state machine, now durable.
    taken: Option<(Snapshot, Duration)>,
    /// Files its install left dead, for the garbage thread.
    garbage: Vec<PathBuf>,
}

/// What a finished job gives back to the controller.
pub struct Done {
    pub rd: Ready,
    /// How long the fsync took (`None`: none was needed).
    pub result: Result<Option<Duration>, WalError>,
    /// A local snapshot now durable, and how long taking it took.
    pub taken: Option<(Snapshot, Duration)>,
}

pub struct Persistence<S> {
    /// Home when no persistence job runs.
    store: Option<S>,
    job: Option<Job<S>>,
    /// A Ready that could not be persisted (disk full), retried from `retry_at`.
    stalled: Option<Ready>,
    /// When a stalled Ready (or a failed message store) is retried next.
    retry_at: Instant,
    /// Term and vote as last made durable (a change needs an fsync).
    synced_term_vote: (u64, Option<NodeId>),
    /// Where the hard-state file lives (`None`: not kept, as in tests).
    hardstate_dir: Option<PathBuf>,
    /// The record last written there, and the cluster's peers generation it has.
    hs_written: Option<crate::hardstate::Record>,
    hs_peers_gen: Option<u64>,
    /// When this run started repairing (logged with the time it took).
    repair_started: Option<Instant>,
    /// A local snapshot's first phase: its message store syncing.
    snapshot_sync: Option<JoinHandle<SyncedSnapshot>>,
    /// A local snapshot whose messages are durable, waiting for the store to be
    /// home for its WAL install (and when it was started).
    snapshot_install: Option<(Snapshot, Instant)>,
    /// Deletes what local snapshot installs left dead (started at the first).
    garbage: Option<Garbage>,
    /// The job in flight makes a new term or vote durable (an election's).
    voting: bool,
}

/// A thread of its own that deletes the files snapshot installs left dead,
/// batch after batch in the order given (oldest first), so the WAL's
/// segments on disk stay a suffix of its stream. Unlinking a 64 MiB segment
/// and syncing its directory took about 45 ms here: inside the install job it
/// held up every `Ready` behind it (the p99 of 64 KiB writes). Its queue is
/// bounded (`GARBAGE_BATCHES`, one batch per install); after an error, or with
/// the queue full (a disk hung for that many snapshots), nothing more is
/// deleted, so no later file goes before an earlier one: what is left is
/// removed by a later install after the next restart (the store lists it again).
struct Garbage {
    tx: std::sync::mpsc::SyncSender<Vec<PathBuf>>,
    stopped: bool,
}

/// Installs whose dead files may wait for the garbage thread.
const GARBAGE_BATCHES: usize = 16;

impl Garbage {
    fn start() -> Garbage {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<PathBuf>>(GARBAGE_BATCHES);
        let spawned = std::thread::Builder::new()
            .name("wal-garbage".into())
            .spawn(move || {
                for path in rx.into_iter().flatten() {
                    if let Err(e) = crate::durable::remove_durable(&path) {
                        tracing::error!(path = %path.display(), error = %e,
                            "cannot delete a dead WAL file; leaving the rest until a restart");
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the WAL garbage thread; dead files stay");
        }
        Garbage { tx, stopped: false }
    }

    /// Queue `paths` (oldest first) for deletion.
    fn remove(&mut self, paths: Vec<PathBuf>) {
        if self.stopped {
            return;
        }
        match self.tx.try_send(paths) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                tracing::warn!(
                    batches = GARBAGE_BATCHES,
                    "dead WAL files are not being deleted (disk stalled?); leaving them until a restart"
                );
                self.stopped = true;
            }
            // The thread stopped after an error (logged there).
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => self.stopped = true,
        }
    }
}

/// The persistence job in flight: on a blocking thread, or already done on
/// the controller's own thread ([`Persistence::run_inline`]).
enum Job<S> {
    Running(JoinHandle<Persisted<S>>),
    Done(Box<Persisted<S>>),
}

/// What [`Persistence::next_finished`] gives the controller (for one loop
/// turn, on the stack: its size does not matter, no box per job).
#[allow(clippy::large_enum_variant)]
pub enum Finished<S> {
    Done(Persisted<S>),
    Synced(SyncedSnapshot),
}

/// A local snapshot after its message-store sync.
pub struct SyncedSnapshot {
    pub snap: Snapshot,
    started: Instant,
    pub result: std::io::Result<()>,
}

impl<S: LogStore + 'static> Persistence<S> {
    /// `synced_term_vote`: what the store recovered (durable by definition).
    pub fn new(store: S, synced_term_vote: (u64, Option<NodeId>)) -> Self {
        Persistence {
            store: Some(store),
            job: None,
            stalled: None,
            retry_at: Instant::now(),
            synced_term_vote,
            hardstate_dir: None,
            hs_written: None,
            hs_peers_gen: None,
            repair_started: None,
            snapshot_sync: None,
            snapshot_install: None,
            garbage: None,
            voting: false,
        }
    }

    /// Keep the hard-state file in `dir`.
    pub fn keep_hardstate_file(&mut self, dir: PathBuf) {
        self.hardstate_dir = Some(dir);
    }

    /// This run started repairing now.
    pub fn repair_started(&mut self) {
        self.repair_started = Some(Instant::now());
    }

    /// A job is running.
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    /// A job is making a new term or vote durable.
    pub fn persisting_vote(&self) -> bool {
        self.job.is_some() && self.voting
    }

    /// A Ready waits for the disk to have room again.
    pub fn stalled(&self) -> bool {
        self.stalled.is_some()
    }

    /// Is a retry (of a stalled Ready, or of the message store) due?
    pub fn retry_due(&self) -> bool {
        Instant::now() >= self.retry_at
    }

    /// Retry no earlier than `after` from now.
    pub fn retry_after(&mut self, after: Duration) {
        self.retry_at = Instant::now() + after;
    }

    /// The stalled Ready, when its retry is due.
    pub fn take_stalled_if_due(&mut self) -> Option<Ready> {
        if !self.retry_due() {
            return None;
        }
        self.stalled.take()
    }

    /// The disk refused `rd` for lack of space: keep it, retry shortly.
    pub fn stall(&mut self, rd: Ready) {
        self.stalled = Some(rd);
        self.retry_after(STALL_RETRY);
    }

    /// Take a finished job's result: the store comes home, and a durable new
    /// term or vote is noted.
    pub fn finished(&mut self, p: Persisted<S>) -> Done {
        self.store = Some(p.store);
        self.voting = false;
        if !p.garbage.is_empty() {
            self.garbage
                .get_or_insert_with(Garbage::start)
                .remove(p.garbage);
        }
        if let (Ok(_), Some(hs)) = (&p.result, &p.rd.hard_state) {
            self.synced_term_vote = (hs.term, hs.vote.clone());
        }
        Done {
            rd: p.rd,
            result: p.result,
            taken: p.taken,
        }
    }

    /// Persist `rd`'s durable part on a blocking thread.
    pub fn start(&mut self, rd: Ready, faults: Faults) {
        self.voting = self.changes_term_or_vote(&rd);
        let mut store = self.store.take().expect("store is home when no job runs");
        let need_sync = needs_fsync(&rd, &self.synced_term_vote);
        self.job = Some(Job::Running(tokio::task::spawn_blocking(move || {
            let mut garbage = Vec::new();
            let result = write_durable(&mut store, &rd, need_sync, &faults, &mut garbage);
            Persisted {
                store,
                rd,
                result,
                taken: None,
                garbage,
            }
        })));
    }

    /// Persist `rd`'s durable part here, on the controller's thread; the
    /// result is taken like a job's ([`Persistence::next_finished`] returns it
    /// at once), so the order of events is the same as with a blocking thread
    /// that finished before anything else happened.
    pub fn run_inline(&mut self, rd: Ready, faults: Faults) {
        self.voting = false;
        let mut store = self.store.take().expect("store is home when no job runs");
        let need_sync = needs_fsync(&rd, &self.synced_term_vote);
        let mut garbage = Vec::new();
        let result = write_durable(&mut store, &rd, need_sync, &faults, &mut garbage);
        self.job = Some(Job::Done(Box::new(Persisted {
            store,
            rd,
            result,
            taken: None,
            garbage,
        })));
    }

    /// Does `rd` change the durable term or vote (an election's `Ready`)?
    pub fn changes_term_or_vote(&self, rd: &Ready) -> bool {
        new_term_or_vote(rd, &self.synced_term_vote)
    }

    /// A local snapshot is in either phase.
    pub fn snapshotting(&self) -> bool {
        self.snapshot_sync.is_some() || self.snapshot_install.is_some()
    }

    /// Phase one of a local snapshot: sync the message store (`sync`) on a
    /// blocking thread; Readies keep being persisted meanwhile.
    pub fn start_snapshot(&mut self, meta: SnapshotMeta, data: Bytes, sync: SyncHandle) {
        self.snapshot_sync = Some(tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = sync.run();
            SyncedSnapshot {
                snap: Snapshot { meta, data },
                started,
                result,
            }
        }));
    }

    /// The next job to finish or snapshot sync to complete (never completes
    /// when neither runs).
    pub async fn next_finished(&mut self) -> Finished<S> {
        if let Some(Job::Done(_)) = &self.job {
            let Some(Job::Done(p)) = self.job.take() else {
                unreachable!()
            };
            return Finished::Done(*p);
        }
        let job = async {
            match &mut self.job {
                Some(Job::Running(h)) => h.await,
                _ => std::future::pending().await,
            }
        };
        let sync = async {
            match &mut self.snapshot_sync {
                Some(h) => h.await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            r = job => Finished::Done(r.expect("persistence task panicked")),
            r = sync => Finished::Synced(r.expect("snapshot sync task panicked")),
        };
        match &event {
            Finished::Done(_) => self.job = None,
            Finished::Synced(_) => self.snapshot_sync = None,
        }
        event
    }

    /// Phase two, once the messages are durable: install `s` in the WAL as
    /// soon as no job runs ([`Persistence::start_install_if_idle`]).
    pub fn queue_install(&mut self, s: SyncedSnapshot) {
        self.snapshot_install = Some((s.snap, s.started));
    }

    /// Start a queued snapshot install if the store is home and no Ready
    /// waits for space (a full disk would refuse it too). One not past
    /// `latest` (the log's snapshot index: a snapshot received since went
    /// further) is dropped instead: the WAL never installs an older snapshot
    /// after a newer one. True if started.
    pub fn start_install_if_idle(&mut self, latest: u64) -> bool {
        if self.job.is_some() || self.stalled.is_some() {
            return false;
        }
        let Some((snap, started)) = self.snapshot_install.take() else {
            return false;
        };
        if snap.meta.index <= latest {
            tracing::debug!(
                index = snap.meta.index,
                latest,
                "local snapshot superseded; dropped"
            );
            return false;
        }
        let mut store = self.store.take().expect("store is home when no job runs");
        self.job = Some(Job::Running(tokio::task::spawn_blocking(move || {
            let (result, garbage) = match store.install_snapshot_leaving_garbage(&snap) {
                Ok(g) => (Ok(None), g),
                Err(e) => (Err(e), Vec::new()),
            };
            let taken = Some((snap, started.elapsed()));
            Persisted {
                store,
                rd: Ready::default(),
                result,
                taken,
                garbage,
            }
        })));
        true
    }

    /// Bring the hard-state file up to date with the durable term and vote, the
    /// repairing mark and the peers (`peers`, asked only when something changed;
    /// `peers_gen` says whether they did). Cheap when nothing changed; a few
    /// fsyncs on the controller thread when something did (an election, a
    /// membership change, the end of a repair).
    pub fn sync_hardstate_file(
        &mut self,
        repairing: bool,
        peers_gen: u64,
        peers: impl FnOnce() -> BTreeMap<NodeId, String>,
    ) -> Result<(), WalError> {
        let Some(dir) = &self.hardstate_dir else {
            return Ok(());
        };
        let (term, vote) = self.synced_term_vote.clone();
        let same = self.hs_written.as_ref().is_some_and(|r| {
            (r.term, &r.vote, r.repairing) == (term, &vote, repairing)
                && self.hs_peers_gen == Some(peers_gen)
        });
        if same {
            return Ok(());
        }
        let rec = crate::hardstate::Record {
            term,
            vote,
            repairing,
            peers: peers(),
        };
        crate::hardstate::write(dir, &rec).map_err(|source| WalError::Io {
            path: crate::hardstate::path(dir).display().to_string(),
            source,
        })?;
        if self.hs_written.as_ref().is_some_and(|r| r.repairing) && !repairing {
            let took = self.repair_started.map(|t| t.elapsed().as_millis() as u64);
            tracing::info!(ms = ?took, "repair complete: caught up with the leader, voting again");
        }
        self.hs_written = Some(rec);
        self.hs_peers_gen = Some(peers_gen);
        Ok(())
    }
}

// ---- the rule of a `Ready`'s order (shared with the seeded simulator) --------
//
// `controller::persist` and the simulator's driver (`tests/common`) both carry
// out a `Ready` by these three functions, so the ordering the simulation checks
// is the node's own.

/// Take out of `rd` the messages that may leave before it is durable (those
/// that do not `Message::needs_durability`: heartbeats, a leader's appends,
/// pre-votes); the rest leave only after its durable part (`needs_disk`).
pub fn early_messages(rd: &mut Ready) -> Vec<Envelope> {
    rd.messages
        .extract_if(.., |m| !m.msg.needs_durability())
        .collect()
}

/// Does `rd` have anything for the disk?
pub fn needs_disk(rd: &Ready) -> bool {
    rd.snapshot.is_some() || !rd.entries.is_empty() || rd.hard_state.is_some()
}

/// Must persisting `rd` end in an fsync? Yes for entries or a term or vote other
/// than `synced` (the last durable ones); no when only the commit index changed
/// (or a snapshot came, which `install_snapshot` made durable itself): the
/// commit index is written and rides along with the next fsync (a lost commit
/// index is relearned from the leader; what it points at was durable before it).
pub fn needs_fsync(rd: &Ready, synced: &(u64, Option<NodeId>)) -> bool {
    !rd.entries.is_empty() || new_term_or_vote(rd, synced)
}

/// Does `rd` carry a term or vote other than `synced`?
fn new_term_or_vote(rd: &Ready, synced: &(u64, Option<NodeId>)) -> bool {
    rd.hard_state
        .as_ref()
        .is_some_and(|h| (h.term, &h.vote) != (synced.0, &synced.1))
}

/// The blocking part: write and fsync (unless `need_sync` is false, see
/// [`needs_fsync`]). Returns how long the fsync took.
/// A received snapshot's dead files go to `garbage` (deleted by the same
/// thread as a local install's, after them: one order for all).
fn write_durable<S: LogStore>(
    store: &mut S,
    rd: &Ready,
    need_sync: bool,
    faults: &Faults,
    garbage: &mut Vec<PathBuf>,
) -> Result<Option<Duration>, WalError> {
    if let Some(s) = &rd.snapshot {
        *garbage = store.install_snapshot_leaving_garbage(s)?;
    }
    if !rd.entries.is_empty() {
        store.append(&rd.entries)?;
    }
    if let Some(hs) = &rd.hard_state {
        store.set_hard_state(hs)?;
    }
    if !need_sync {
        return Ok(None);
    }
    let started = Instant::now();
    if faults.fsync_fail {
        let source = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let path = "(fault injection)".into();
        return Err(WalError::Io { path, source });
    }
    if faults.fsync_delay_ms > 0 {
        std::thread::sleep(Duration::from_millis(faults.fsync_delay_ms));
    }
    store.sync()?;
    Ok(Some(started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Entry, EntryPayload, HardState, Message};
    use crate::wal::MemStore;

    fn hard_state(term: u64, vote: Option<&str>, commit: u64) -> Ready {
        Ready {
            hard_state: Some(HardState {
                term,
                vote: vote.map(str::to_string),
                commit,
            }),
            ..Ready::default()
        }
    }

    async fn run(p: &mut Persistence<MemStore>, rd: Ready, faults: Faults) -> Done {
        p.start(rd, faults);
        assert!(p.busy());
        let Finished::Done(done) = p.next_finished().await else {
            panic!("no snapshot sync runs");
        };
        let done = p.finished(done);
        assert!(!p.busy(), "the store is home again");
        done
    }

    #[tokio::test]
    async fn a_new_term_or_vote_or_entries_are_fsynced_and_a_commit_alone_is_not() {
        let mut p = Persistence::new(MemStore::new(), (0, None));
        let done = run(&mut p, hard_state(1, Some("a"), 0), Faults::default()).await;
        assert!(matches!(done.result, Ok(Some(_))), "a new vote is synced");
        let done = run(&mut p, hard_state(1, Some("a"), 1), Faults::default()).await;
        assert!(
            matches!(done.result, Ok(None)),
            "the same term and vote (now durable) with a new commit: no fsync"
        );
        let mut rd = hard_state(1, Some("a"), 1);
        rd.entries = vec![Entry {
            index: 1,
            term: 1,
            payload: EntryPayload::Noop,
        }];
        let done = run(&mut p, rd, Faults::default()).await;
        assert!(matches!(done.result, Ok(Some(_))), "entries are synced");
    }

    #[test]
    fn only_messages_that_need_no_durability_leave_early() {
        let env = |msg| crate::core::Envelope {
            from: "a".into(),
            to: "b".into(),
            term: 2,
            msg,
        };
        let append_resp = Message::AppendResp {
            success: true,
            index: 3,
            hint_index: 0,
            hint_term: 0,
            repairing: false,
            incarnation: 0,
        };
        let append = Message::Append {
            prev_index: 2,
            prev_term: 1,
            entries: Vec::new(),
            commit: 2,
        };
        let heartbeat = Message::Heartbeat { commit: 2, ctx: 0 };
        let vote_resp = Message::VoteResp { granted: true };
        let mut rd = hard_state(2, Some("b"), 2);
        rd.messages = [&heartbeat, &vote_resp, &append, &append_resp]
            .map(|m| env(m.clone()))
            .to_vec();
        let early: Vec<Message> = early_messages(&mut rd).into_iter().map(|e| e.msg).collect();
        assert_eq!(early, vec![heartbeat, append]);
        let held: Vec<Message> = rd.messages.into_iter().map(|e| e.msg).collect();
        assert_eq!(
            held,
            vec![vote_resp, append_resp],
            "they wait for the fsync"
        );
        let rd = hard_state(2, Some("b"), 2);
        assert!(needs_disk(&rd) && needs_fsync(&rd, &(1, None)));
        assert!(
            !needs_fsync(&rd, &(2, Some("b".into()))),
            "only the commit moved"
        );
    }

    /// Polls `done` for up to 10 s.
    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Dead files go; after a failure the thread deletes nothing more (a
    /// later file never goes before an earlier one), and the queue says so.
    #[test]
    fn the_garbage_thread_deletes_in_order_and_stops_at_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let file = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, b"x").unwrap();
            p
        };
        let mut g = Garbage::start();
        let (a, b) = (file("a"), file("b"));
        g.remove(vec![a.clone(), b.clone()]);
        eventually("a and b deleted", || !a.exists() && !b.exists());
        // A directory that is gone: its sync fails, the thread stops.
        let broken = dir.path().join("gone/c");
        let d = file("d");
        g.remove(vec![broken, d.clone()]);
        eventually("the thread stopped", || {
            g.remove(Vec::new());
            g.stopped
        });
        assert!(d.exists(), "nothing after the failure is deleted");
    }

    #[tokio::test]
    async fn a_failed_fsync_leaves_the_vote_not_durable() {
        let mut p = Persistence::new(MemStore::new(), (0, None));
        let fail = Faults {
            fsync_fail: true,
            ..Faults::default()
        };
        let done = run(&mut p, hard_state(1, Some("a"), 0), fail).await;
        assert!(done.result.as_ref().is_err_and(|e| e.is_no_space()));
        let done = run(&mut p, hard_state(1, Some("a"), 0), Faults::default()).await;
        assert!(
            matches!(done.result, Ok(Some(_))),
            "the vote was never durable: synced on the retry"
        );
    }

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            index,
            term: 1,
            membership: Default::default(),
        }
    }

    /// A local snapshot: its message-store sync runs beside a Ready job, its
    /// WAL install is a job of its own, one superseded is dropped, and none
    /// starts while a Ready waits for space.
    #[tokio::test]
    async fn a_snapshot_syncs_beside_readies_and_installs_as_a_job_unless_superseded() {
        let mut p = Persistence::new(MemStore::new(), (0, None));
        let mut messages = crate::msgstore::MessageStore::memory();
        let data = Bytes::from_static(b"manifest");
        p.start(hard_state(1, Some("a"), 0), Faults::default());
        p.start_snapshot(meta(5), data.clone(), messages.sync_handle().unwrap());
        assert!(p.busy() && p.snapshotting(), "both at once");
        let (mut done, mut synced) = (None, None);
        while done.is_none() || synced.is_none() {
            match p.next_finished().await {
                Finished::Done(d) => done = Some(p.finished(d)),
                Finished::Synced(s) => synced = Some(s),
            }
        }
        assert!(
            matches!(done.unwrap().result, Ok(Some(_))),
            "the Ready went on"
        );
        let synced = synced.unwrap();
        assert!(synced.result.is_ok());
        p.queue_install(synced);
        assert!(p.snapshotting() && !p.busy(), "queued, not yet a job");
        assert!(
            !p.start_install_if_idle(5),
            "the log's snapshot is already at 5: superseded"
        );
        assert!(!p.snapshotting(), "a superseded snapshot is dropped");

        p.start_snapshot(meta(5), data.clone(), messages.sync_handle().unwrap());
        let Finished::Synced(s) = p.next_finished().await else {
            panic!("only a sync runs");
        };
        p.queue_install(s);
        p.stall(hard_state(2, None, 0));
        assert!(
            !p.start_install_if_idle(0),
            "not while a Ready waits for space"
        );
        assert!(p.snapshotting(), "kept for later");
        p.retry_after(Duration::ZERO);
        assert!(p.take_stalled_if_due().is_some());
        assert!(p.start_install_if_idle(0));
        assert!(p.busy());
        let Finished::Done(d) = p.next_finished().await else {
            panic!("only the install runs");
        };
        let done = p.finished(d);
        assert!(matches!(done.result, Ok(None)));
        assert_eq!(done.taken.map(|(s, _)| s.meta.index), Some(5));
        assert!(!p.snapshotting() && !p.busy());
    }

    #[tokio::test]
    async fn a_stalled_ready_is_given_back_only_once_its_retry_is_due() {
        let mut p = Persistence::new(MemStore::new(), (0, None));
        p.stall(hard_state(1, None, 0));
        assert!(p.stalled());
        assert!(
            p.take_stalled_if_due().is_none(),
            "not before the retry time"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let rd = loop {
            if let Some(rd) = p.take_stalled_if_due() {
                break rd;
            }
            assert!(
                Instant::now() < deadline,
                "the stalled Ready never came back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(rd.hard_state.map(|h| h.term), Some(1));
        assert!(!p.stalled());
    }

    #[tokio::test]
    async fn the_hard_state_file_is_rewritten_only_when_something_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Persistence::new(MemStore::new(), (0, None));
        p.keep_hardstate_file(dir.path().to_path_buf());
        let peers = BTreeMap::from([("b".to_string(), "b:grpc".to_string())]);
        p.sync_hardstate_file(false, 1, || peers.clone()).unwrap();
        let rec = crate::hardstate::read(dir.path()).unwrap().unwrap();
        assert_eq!((rec.term, rec.peers.clone()), (0, peers.clone()));

        p.sync_hardstate_file(false, 1, || panic!("nothing changed: peers not asked"))
            .unwrap();

        run(&mut p, hard_state(3, Some("b"), 0), Faults::default()).await;
        p.sync_hardstate_file(true, 1, || peers.clone()).unwrap();
        let rec = crate::hardstate::read(dir.path()).unwrap().unwrap();
        assert_eq!(
            (rec.term, rec.vote.as_deref(), rec.repairing),
            (3, Some("b"), true)
        );

        let more = BTreeMap::from([("c".to_string(), "c:grpc".to_string())]);
        p.sync_hardstate_file(true, 2, || more.clone()).unwrap();
        let rec = crate::hardstate::read(dir.path()).unwrap().unwrap();
        assert_eq!(rec.peers, more, "a new peers generation is written");
    }
}
