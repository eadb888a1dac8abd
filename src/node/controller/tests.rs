//! The controller under deterministic test (`testdrive`): its persist ordering,
//! the commit-without-fsync path, the stalled-`Ready` retry, the write waiters,
//! and crashes inside its `Ready` handling. Every message any node sends is
//! checked against what its disk held durably then (`testdrive::check_durable`).

use super::testdrive::{Cluster, Sent};
use crate::api::{ApiError, WriteConcern, WriteRequest, WriteResult};
use crate::core::{Envelope, Message};
use crate::node::interface::Cmd;
use std::time::Duration;
use tokio::sync::oneshot;

type Reply = oneshot::Receiver<Result<WriteResult, ApiError>>;

/// Ask `id` to write `msg` with write concern `w`.
fn write(c: &mut Cluster, id: &str, msg: &str, w: WriteConcern) -> Reply {
    let (reply, rx) = oneshot::channel();
    let req = WriteRequest {
        w: Some(w),
        ..WriteRequest::single(msg)
    };
    c.node(id).cmd(Cmd::Write { req, reply });
    rx
}

/// The answer, if there is one yet.
fn answer(rx: &mut Reply) -> Option<Result<WriteResult, ApiError>> {
    rx.try_recv().ok()
}

fn sent_by<'a>(log: &'a [Sent], from: &str, f: impl Fn(&Envelope) -> bool + 'a) -> Vec<&'a Sent> {
    log.iter()
        .filter(|s| s.env.from == from && f(&s.env))
        .collect()
}

fn is_vote_resp(e: &Envelope) -> bool {
    matches!(e.msg, Message::VoteResp { granted: true })
}

fn is_append_resp_to(index: u64) -> impl Fn(&Envelope) -> bool {
    move |e| matches!(e.msg, Message::AppendResp { success: true, index: i, .. } if i >= index)
}

/// `(index, term)` is in the durable log of a majority of `c`'s nodes.
fn durable_on_majority(c: &Cluster, index: u64, term: u64) -> bool {
    let holding = c
        .nodes
        .values()
        .filter(|n| {
            let d = n.disk.durable();
            d.entries.iter().any(|e| e.index == index && e.term == term)
        })
        .count();
    holding > c.nodes.len() / 2
}

#[tokio::test(start_paused = true)]
async fn a_granted_vote_leaves_only_after_its_fsync() {
    let mut c = Cluster::start(&["a", "b", "c"]);
    c.node("b").disk.hold();
    c.elect("a").await;
    let term = c.nodes["a"].raft().term();
    assert!(c.nodes["b"].persisting(), "b's vote is being persisted");
    assert_eq!(c.nodes["b"].raft().hard_state().vote.as_deref(), Some("a"));
    for _ in 0..5 {
        c.node("b").tick();
        c.run(10).await;
    }
    assert!(
        sent_by(&c.log, "b", is_vote_resp).is_empty(),
        "b granted its vote before the vote was durable"
    );
    c.node("b").disk.release();
    c.run(50).await;
    let granted = sent_by(&c.log, "b", is_vote_resp);
    assert_eq!(granted.len(), 1, "b's vote leaves once durable");
    let hs = &granted[0].durable_hs;
    assert_eq!((hs.term, hs.vote.as_deref()), (term, Some("a")));
}

/// A follower whose fsyncs are fast persists a small `Ready` on the
/// controller's own thread: the fsync is done by the end of the turn that
/// received the append, and the append's answer still leaves only after it,
/// through the same result path as a blocking thread's job.
#[tokio::test(start_paused = true)]
async fn a_follower_persisting_inline_answers_after_its_fsync() {
    let mut c = Cluster::start(&["a", "b", "c"]);
    c.elect("a").await;
    c.node("b").ctl.cfg.inline_persist_max_bytes = 64 << 10;
    assert!(
        c.nodes["b"].ctl.health.last_fsync().is_some(),
        "b has synced"
    );
    let mut rx = write(&mut c, "a", "m1", WriteConcern::All);
    let index = c.nodes["a"].raft().last_index();
    let syncs = c.nodes["b"].disk.syncs();
    c.collect();
    c.deliver();
    let b = &c.nodes["b"];
    assert_eq!(b.disk.syncs(), syncs + 1, "synced within the turn");
    assert!(b.persisting(), "its result is waiting to be taken");
    c.collect();
    assert!(
        sent_by(&c.log, "b", is_append_resp_to(index)).is_empty(),
        "nothing answered before the result was taken"
    );
    c.run(50).await;
    let acks = sent_by(&c.log, "b", is_append_resp_to(index));
    assert!(!acks.is_empty() && acks.iter().all(|s| s.durable_last >= index));
    let res = answer(&mut rx).expect("answered").unwrap();
    assert_eq!((res.index, res.acks), (index, 3));
}

/// A candidate's election timer starts once its term and vote are durable:
/// ticks while that fsync runs do not time the candidacy out (on a loaded CI
/// disk the fsync alone outlasted the timeout, and the node gave up the
/// candidacy before it could ask anyone). Once synced it wins.
#[tokio::test(start_paused = true)]
async fn a_candidate_does_not_time_out_while_its_vote_is_being_persisted() {
    let mut c = Cluster::start(&["a", "b", "c"]);
    c.node("a").disk.hold();
    for _ in 0..50 {
        if c.nodes["a"].raft().role() == crate::core::Role::Candidate {
            break;
        }
        c.node("a").tick();
        c.run(10).await;
    }
    assert_eq!(c.nodes["a"].raft().role(), crate::core::Role::Candidate);
    assert!(
        c.nodes["a"].persisting(),
        "its term and vote are being synced"
    );
    let term = c.nodes["a"].raft().term();
    for _ in 0..100 {
        c.node("a").tick();
        c.run(10).await;
    }
    let a = c.nodes["a"].raft();
    assert_eq!(
        (a.role(), a.term()),
        (crate::core::Role::Candidate, term),
        "the candidacy outlived 100 ticks of a held fsync"
    );
    c.node("a").disk.release();
    c.run(50).await;
    assert!(
        c.nodes["a"].raft().is_leader(),
        "a wins once its vote is durable"
    );
    assert_eq!(c.nodes["a"].raft().term(), term);
}

#[tokio::test(start_paused = true)]
async fn a_follower_answers_an_append_only_after_its_fsync() {
    let mut c = Cluster::start(&["a", "b", "c"]);
    c.elect("a").await;
    c.node("b").disk.hold();
    let mut rx = write(&mut c, "a", "m1", WriteConcern::Majority);
    c.run(50).await;
    let index = c.nodes["a"].raft().last_index();
    assert!(c.nodes["b"].persisting());
    assert!(
        sent_by(&c.log, "b", is_append_resp_to(index)).is_empty(),
        "b answered the append before its fsync"
    );
    let res = answer(&mut rx).expect("a and c make a majority").unwrap();
    assert_eq!((res.index, res.acks), (index, 2));
    c.node("b").disk.release();
    c.run(50).await;
    let acks = sent_by(&c.log, "b", is_append_resp_to(index));
    assert!(acks.iter().all(|s| s.durable_last >= index) && !acks.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_leader_sends_appends_while_its_own_fsync_runs_and_answers_after_it() {
    let mut c = Cluster::start(&["a", "b", "c"]);
    c.elect("a").await;
    c.node("a").disk.hold();
    let mut rx = write(&mut c, "a", "m1", WriteConcern::Majority);
    let index = c.nodes["a"].raft().last_index();
    c.run(50).await;
    assert!(c.nodes["a"].persisting(), "a's own fsync is held");
    let appends = sent_by(
        &c.log,
        "a",
        |e| matches!(&e.msg, Message::Append { entries, .. } if entries.iter().any(|x| x.index == index)),
    );
    assert_eq!(
        appends.len(),
        2,
        "the append left for both followers at once"
    );
    assert!(appends.iter().all(|s| s.durable_last < index));
    assert_eq!(
        c.nodes["b"].disk.durable().last_index,
        index,
        "b and c hold it"
    );
    assert!(
        answer(&mut rx).is_none(),
        "not answered before the leader applied it (after its own Ready is durable)"
    );
    c.node("a").disk.release();
    c.run(50).await;
    let res = answer(&mut rx).expect("answered").unwrap();
    assert!(res.committed && res.index == index);
    assert!(c.nodes["a"].applied_index() >= index);
}

#[tokio::test(start_paused = true)]
async fn a_ready_that_only_moves_the_commit_index_is_not_fsynced() {
    let mut c = Cluster::start(&["a", "b", "c"]);
    c.elect("a").await;
    let before = c.nodes["b"].disk.syncs();
    let mut rx = write(&mut c, "a", "m1", WriteConcern::Majority);
    let index = c.nodes["a"].raft().last_index();
    c.run(50).await;
    answer(&mut rx).expect("answered").unwrap();
    for _ in 0..3 {
        c.node("a").tick();
        c.run(10).await;
    }
    let b = &c.nodes["b"];
    assert!(b.raft().commit_index() >= index && b.applied_index() >= index);
    assert_eq!(b.disk.syncs(), before + 1, "one fsync: the entry's");
    assert!(
        b.disk.durable().hard_state.commit < index,
        "the new commit index was written but rides along with the next fsync"
    );
}

#[tokio::test(start_paused = true)]
async fn a_ready_the_full_disk_refused_is_retried_and_acknowledged_only_once_durable() {
    let mut c = Cluster::start(&["a", "b", "c"]);
    c.elect("a").await;
    c.node("a").disk.refuse_syncs(1);
    let mut rx = write(&mut c, "a", "m1", WriteConcern::All);
    let index = c.nodes["a"].raft().last_index();
    c.run(50).await;
    assert!(
        c.nodes["a"].ctl.persistence.stalled(),
        "the refused Ready is kept"
    );
    assert!(answer(&mut rx).is_none(), "w=all: a's copy is not durable");
    let mut refused = write(&mut c, "a", "m2", WriteConcern::Majority);
    assert!(
        matches!(answer(&mut refused), Some(Err(ApiError::Storage(_)))),
        "writes are refused while the disk is full"
    );
    let before = c.log.len();
    c.node("a").tick();
    c.run(10).await;
    assert!(
        c.nodes["a"].ctl.persistence.stalled(),
        "not retried before its time"
    );
    let beats = sent_by(&c.log[before..], "a", |e| {
        matches!(e.msg, Message::Heartbeat { .. })
    });
    assert!(!beats.is_empty(), "heartbeats go on while the disk is full");
    tokio::time::advance(Duration::from_millis(250)).await;
    c.node("a").tick();
    c.run(50).await;
    let res = answer(&mut rx).expect("answered after the retry").unwrap();
    assert_eq!((res.index, res.acks), (index, 3));
    assert_eq!(c.nodes["a"].disk.durable().last_index, index);
    let more = write(&mut c, "a", "m3", WriteConcern::Majority);
    c.run(50).await;
    let mut more = more;
    assert!(answer(&mut more).expect("writes accepted again").is_ok());
}

#[tokio::test(start_paused = true)]
async fn writes_are_answered_after_commit_and_apply_and_w_all_after_every_voter() {
    let mut c = Cluster::start(&["a", "b", "c"]);
    c.elect("a").await;
    c.node("b").disk.hold();
    c.node("c").disk.hold();
    let mut maj = write(&mut c, "a", "m1", WriteConcern::Majority);
    let index = c.nodes["a"].raft().last_index();
    c.run(50).await;
    assert!(answer(&mut maj).is_none(), "only a holds it: not committed");
    c.node("b").disk.release();
    let mut all = write(&mut c, "a", "m2", WriteConcern::All);
    c.run(50).await;
    let res = answer(&mut maj).expect("committed by a and b").unwrap();
    assert!(res.committed && res.index == index && res.acks >= 2);
    assert!(c.nodes["a"].applied_index() >= index);
    assert!(durable_on_majority(&c, index, res.term));
    assert!(answer(&mut all).is_none(), "w=all waits for c");
    c.node("c").disk.release();
    c.run(50).await;
    let res = answer(&mut all).expect("every voter holds it").unwrap();
    assert_eq!(res.acks, 3);
    assert!(c
        .nodes
        .values()
        .all(|n| n.disk.durable().last_index >= res.index));
}

#[tokio::test(start_paused = true)]
async fn a_leader_crashing_before_its_fsync_loses_nothing_it_acknowledged() {
    let mut c = Cluster::start(&["a", "b", "c"]);
    c.elect("a").await;
    let mut acked = write(&mut c, "a", "m1", WriteConcern::Majority);
    c.run(50).await;
    let acked = answer(&mut acked).expect("answered").unwrap();
    c.node("a").disk.hold();
    let mut pending = write(&mut c, "a", "m2", WriteConcern::Majority);
    c.run(50).await;
    assert!(answer(&mut pending).is_none(), "a's Ready is not durable");
    c.restart("a");
    assert!(
        matches!(
            pending.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ),
        "the process died without answering"
    );
    assert_eq!(
        c.nodes["a"].disk.durable().last_index,
        acked.index,
        "a's copy of m2 was never durable"
    );
    c.elect("b").await;
    assert!(durable_on_majority(&c, acked.index, acked.term));
    let b = c.nodes["b"].raft();
    assert_eq!(b.entry_term(acked.index), Some(acked.term));
    c.run(50).await;
    assert!(c.nodes["a"]
        .disk
        .durable()
        .entries
        .iter()
        .any(|e| e.index == acked.index));
}

#[tokio::test(start_paused = true)]
async fn a_follower_crashing_before_its_fsync_never_claimed_the_entry() {
    let mut c = Cluster::start(&["a", "b", "c"]);
    c.elect("a").await;
    c.node("b").disk.hold();
    c.node("c").disk.hold();
    let mut rx = write(&mut c, "a", "m1", WriteConcern::Majority);
    let index = c.nodes["a"].raft().last_index();
    c.run(50).await;
    c.restart("b");
    c.node("c").disk.release();
    c.run(50).await;
    let res = answer(&mut rx).expect("a and c").unwrap();
    assert_eq!(res.index, index);
    assert!(sent_by(&c.log, "b", is_append_resp_to(index))
        .iter()
        .all(|s| s.durable_last >= index));
    for _ in 0..3 {
        c.node("a").tick();
        c.run(20).await;
    }
    assert_eq!(
        c.nodes["b"].disk.durable().last_index,
        index,
        "b caught up after its restart"
    );
}

#[tokio::test(start_paused = true)]
async fn a_vote_synced_but_not_sent_before_a_crash_is_kept() {
    let mut c = Cluster::start(&["a", "b", "c"]);
    c.node("b").disk.hold();
    c.elect("a").await;
    let term = c.nodes["a"].raft().term();
    c.node("b").disk.release();
    // The sync completes; the process dies before the turn that sends the answer.
    let done = c.node("b").ctl.persistence.next_finished().await;
    drop(done);
    c.restart("b");
    assert!(sent_by(&c.log, "b", is_vote_resp).is_empty());
    let hs = c.nodes["b"].raft().hard_state();
    assert_eq!((hs.term, hs.vote.as_deref()), (term, Some("a")));
    let last = c.nodes["b"].raft().last_index() + 10;
    c.node("b").deliver(Envelope {
        from: "c".into(),
        to: "b".into(),
        term,
        msg: Message::Vote {
            last_log_index: last,
            last_log_term: term,
            transfer: true,
        },
    });
    c.node("b").settle().await;
    c.collect();
    let to_c = sent_by(&c.log, "b", |e| {
        e.to == "c" && matches!(e.msg, Message::VoteResp { .. })
    });
    assert!(
        to_c.iter()
            .all(|s| s.env.msg == Message::VoteResp { granted: false })
            && !to_c.is_empty(),
        "b voted twice in term {term}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_write_below_majority_is_answered_on_durable_acks_before_it_commits() {
    let mut c = Cluster::start(&["a", "b", "c"]);
    c.elect("a").await;
    c.node("b").disk.hold();
    c.node("c").disk.hold();
    c.node("a").disk.hold();
    let mut one = write(&mut c, "a", "m1", WriteConcern::Count(1));
    let index = c.nodes["a"].raft().last_index();
    c.run(50).await;
    assert!(answer(&mut one).is_none(), "no copy is durable yet");
    c.node("a").disk.release();
    c.run(50).await;
    let res = answer(&mut one)
        .expect("a's own durable copy is the one ack")
        .unwrap();
    assert_eq!((res.index, res.acks, res.committed), (index, 1, false));
    assert!(c.nodes["a"].raft().commit_index() < index);
    assert_eq!(c.nodes["a"].disk.durable().last_index, index);
}

/// An append answer the core queued while the follower's fsync ran, whose
/// entry a leader of a later term truncated before the answer's `Ready` was
/// durable, must not leave: it would name an entry never durable (found by the
/// seeded simulation, `sim`; the core now drops older terms' answers when its
/// term moves on). `check_durable` checks every message; this checks the
/// answer is not among them, and that the new leader counts b's real log.
#[tokio::test(start_paused = true)]
async fn an_append_answer_outliving_a_truncation_is_dropped() {
    let mut c = Cluster::start(&["a", "b", "c"]);
    c.elect("a").await;
    let t = c.nodes["a"].raft().term();
    c.node("a").disk.hold();
    c.node("b").disk.hold();
    // Only b hears of m1 and m2; its fsync of m1 is held, so its answer for
    // m2 waits in the core.
    let _m1 = write(&mut c, "a", "m1", WriteConcern::Majority);
    let i = c.nodes["a"].raft().last_index();
    c.collect();
    c.net.retain(|e| e.to == "b");
    c.deliver();
    assert!(c.nodes["b"].persisting());
    let _m2 = write(&mut c, "a", "m2", WriteConcern::Majority);
    c.collect();
    c.net.retain(|e| e.to == "b");
    c.deliver();
    assert_eq!(c.nodes["b"].raft().last_index(), i + 1);
    // a dies with neither entry durable; c, which never had them, wins the
    // next term with a's vote and replaces b's entry at i.
    c.restart("a");
    c.elect("c").await;
    let t2 = c.nodes["c"].raft().term();
    assert!(t2 > t);
    c.node("b").disk.release();
    c.run(50).await;
    let b_durable = c.nodes["b"].disk.durable();
    assert_eq!(b_durable.hard_state.term, t2);
    let stale = sent_by(&c.log, "b", |e| {
        e.term == t
            && matches!(e.msg, Message::AppendResp { success: true, index, .. } if index == i + 1)
    });
    assert!(
        stale.is_empty(),
        "b's queued answer for m2 left after the truncation, in term {t}: {stale:?}"
    );
    assert!(
        b_durable.entries.iter().all(|e| e.term != t || e.index < i),
        "m1 and m2 are not on b's disk"
    );
    assert!(c.nodes.values().all(|n| n.raft().term() > t));
    let matched = c.nodes["c"].raft().match_index("b").unwrap_or(0);
    assert!(
        matched <= b_durable.last_index,
        "c counts only b's real log"
    );
}
