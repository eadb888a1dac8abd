//! Scripted scenarios over the consensus core, with readable output
//! (`cargo test --test scenarios -- --nocapture --test-threads 1` prints each
//! scenario's trace: role changes, terms, proposals, partitions).
//!
//! The election scenarios of the seed design: one node up early leads alone; an
//! election with votes; a rogue (partitioned) node rejoining; an unhealthy leader
//! detected by one follower and by several; competing candidates; an old leader
//! fenced by the term. Then the Raft paper's Figures 7 and 8, and exact-effect tests
//! of single rules. Every scenario runs under the same checker as the simulator.

mod common;

use common::{membership, sm::Kind, Boot, Cluster, Opts, TraceMode};
use raftlog::core::{Envelope, Message, ProposeError, Role};

fn header(title: &str) {
    println!("\n=== {title} ===");
}

fn cluster(ids: &[&str], opts: Opts, seed: u64) -> Cluster {
    Cluster::bootstrap(opts, ids, seed, TraceMode::Print)
}

/// Tick only `ids` (delivering every message after each tick) until `done`.
fn run_until(
    c: &mut Cluster,
    ids: &[&str],
    max_ticks: u64,
    mut done: impl FnMut(&Cluster) -> bool,
) {
    for _ in 0..max_ticks {
        if done(c) {
            return;
        }
        c.tick_some(ids);
        c.deliver_all();
        c.check_all();
    }
    assert!(done(c), "condition not reached within {max_ticks} ticks");
}

/// Tick every live node `n` times, delivering everything after each tick.
fn run(c: &mut Cluster, n: u64) {
    for _ in 0..n {
        c.tick_all();
        c.deliver_all();
        c.check_all();
    }
}

/// Only `id` ticks until it leads (the others stay quiet, as if their timers were
/// longer).
fn elect(c: &mut Cluster, id: &str) {
    run_until(c, &[id], 200, |c| c.is_up(id) && c.raft(id).is_leader());
}

fn is_election(e: &Envelope) -> bool {
    matches!(
        e.msg,
        Message::PreVote { .. }
            | Message::PreVoteResp { .. }
            | Message::Vote { .. }
            | Message::VoteResp { .. }
    )
}

/// Like `elect`, but only election messages are delivered: the new leader's first
/// appends stay queued.
fn elect_quietly(c: &mut Cluster, id: &str) {
    for _ in 0..200 {
        if c.raft(id).is_leader() {
            return;
        }
        c.tick_some(&[id]);
        c.deliver_matching(is_election);
        c.check_all();
    }
    panic!("{id} did not win");
}

fn leader_term(c: &Cluster) -> (String, u64) {
    let l = c.leader().expect("a leader");
    let t = c.raft(&l).term();
    (l, t)
}

fn all_up(c: &Cluster) -> Vec<String> {
    c.up_ids()
}

fn ids_of(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Propose `n` writes at `id` and return their (cmd, index, term).
fn write(c: &mut Cluster, id: &str, n: usize) -> Vec<(u64, u64, u64)> {
    (0..n).map(|_| c.propose(id).expect("propose")).collect()
}

fn acked(c: &Cluster, cmd: u64) -> bool {
    c.check.acked.iter().any(|a| a.cmd == cmd)
}

// ---- election scenarios ------------------------------------------------------

#[test]
fn one_node_up_early_becomes_leader_alone() {
    header("one node up early becomes leader alone, then grows to three");
    let mut c = cluster(&["n1"], Opts::default(), 1);
    run_until(&mut c, &["n1"], 100, |c| c.raft("n1").is_leader());
    let (_, cmd_index, _) = write(&mut c, "n1", 1)[0];
    c.check_all();
    assert_eq!(
        c.raft("n1").commit_index(),
        cmd_index,
        "a single voter commits alone"
    );
    for id in ["n2", "n3"] {
        c.add_node(id, None);
        let mut m = c.raft("n1").membership().clone();
        m.members.extend(membership(&[], &[id]).members);
        c.change_membership("n1", m).unwrap();
        run(&mut c, 5);
        let mut m = c.raft("n1").membership().clone();
        m.members.get_mut(id).unwrap().voter = true;
        c.change_membership("n1", m).unwrap();
        run(&mut c, 5);
    }
    let m = c.raft("n1").membership();
    assert_eq!(m.voter_count(), 3);
    assert!(c.raft("n1").is_leader());
    for id in ["n2", "n3"] {
        assert_eq!(c.raft(id).leader(), Some(&"n1".to_string()));
        assert_eq!(c.nodes[id].sm.applied, c.nodes["n1"].sm.applied);
    }
}

#[test]
fn election_with_votes() {
    header("election with votes");
    let mut c = cluster(&["n1", "n2", "n3"], Opts::default(), 2);
    elect(&mut c, "n1");
    assert_eq!(c.raft("n1").term(), 2);
    for id in ["n2", "n3"] {
        assert_eq!(c.raft(id).hard_state().vote, Some("n1".to_string()));
        assert_eq!(c.raft(id).term(), 2);
    }
    run(&mut c, 5);
    assert_eq!(c.check.leaders.len(), 1);
}

#[test]
fn rogue_partitioned_node_rejoining_does_not_depose_the_leader() {
    header("rogue node: a partitioned node rejoins (pre-vote on)");
    let mut c = cluster(&["n1", "n2", "n3"], Opts::default(), 3);
    elect(&mut c, "n1");
    run(&mut c, 5);
    let (leader, term) = leader_term(&c);
    c.isolate("n3");
    run(&mut c, 200);
    // Pre-vote: n3 campaigned again and again but never bumped its term.
    assert_eq!(c.raft("n3").term(), term, "pre-vote keeps the rogue's term");
    write(&mut c, &leader, 3);
    c.heal();
    run(&mut c, 50);
    assert_eq!(
        leader_term(&c),
        (leader.clone(), term),
        "leader and term unchanged"
    );
    assert_eq!(c.raft("n3").leader(), Some(&leader));
    assert_eq!(c.nodes["n3"].sm.applied, c.nodes[&leader].sm.applied);

    header("rogue node without pre-vote: the same partition disrupts the cluster");
    let opts = Opts {
        pre_vote: false,
        ..Opts::default()
    };
    let mut c = cluster(&["n1", "n2", "n3"], opts, 3);
    elect(&mut c, "n1");
    run(&mut c, 5);
    let (_, term) = leader_term(&c);
    c.isolate("n3");
    run(&mut c, 400);
    let rogue = c.raft("n3").term();
    // Each failed candidacy is a new term; the backoff spaces them out
    // (×2, then ×4 the 10-20 ticks), so about seven in 400 ticks.
    assert!(
        rogue > term + 3,
        "without pre-vote the rogue's term runs away"
    );
    c.heal();
    run(&mut c, 100);
    let (_, new_term) = leader_term(&c);
    println!("    term went from {term} to {new_term} (rogue had {rogue})");
    assert!(new_term > term, "the rejoining node forced a new term");
}

#[test]
fn unhealthy_leader_detected_by_one_follower() {
    header("unhealthy leader detected by one follower only (n1 -> n3 link down)");
    let mut c = cluster(&["n1", "n2", "n3"], Opts::default(), 4);
    elect(&mut c, "n1");
    run(&mut c, 5);
    let (leader, term) = leader_term(&c);
    c.net.blocked.insert(("n1".into(), "n3".into()));
    run(&mut c, 150);
    // n3 suspects the leader, but n2 still hears it: n3's pre-votes are refused
    // and the leader, still heard by a majority, stays.
    assert_eq!(leader_term(&c), (leader.clone(), term));
    assert_eq!(c.raft("n3").term(), term);
    let (cmd, _, _) = write(&mut c, &leader, 1)[0];
    run(&mut c, 5);
    assert!(acked(&c, cmd), "writes still commit with n1 + n2");
}

#[test]
fn unhealthy_leader_detected_by_several() {
    header("unhealthy leader detected by several: leader isolated, check-quorum");
    let mut c = cluster(&["n1", "n2", "n3", "n4", "n5"], Opts::default(), 5);
    elect(&mut c, "n1");
    run(&mut c, 5);
    let (_, term) = leader_term(&c);
    c.isolate("n1");
    let (cmd, _, _) = write(&mut c, "n1", 1)[0];
    // A read at the cut-off leader waits for a quorum that never answers.
    let ctx = c.read("n1").unwrap();
    let others = ["n2", "n3", "n4", "n5"];
    // Everyone ticks: the followers elect a new leader, and n1 steps down by itself.
    run_until(&mut c, &["n1", "n2", "n3", "n4", "n5"], 200, |c| {
        !c.raft("n1").is_leader() && others.iter().any(|id| c.raft(id).is_leader())
    });
    let (new_leader, new_term) = leader_term(&c);
    assert_ne!(new_leader, "n1");
    assert!(new_term > term);
    assert_eq!(c.raft("n1").role(), Role::Follower);
    assert_eq!(c.raft("n1").term(), term, "n1 stepped down on its own");
    assert!(matches!(
        c.raft_mut("n1").propose(common::payload_bytes(1)),
        Err(ProposeError::NotLeader { .. })
    ));
    assert!(
        !acked(&c, cmd),
        "the isolated leader's write is not acknowledged"
    );
    assert!(
        c.nodes["n1"].read_started.contains_key(&ctx) && c.stats.reads_served == 0,
        "the isolated leader served no read"
    );
    c.heal();
    run(&mut c, 30);
    assert_eq!(c.raft("n1").leader(), Some(&new_leader));
    assert_eq!(c.nodes["n1"].sm.applied, c.nodes[&new_leader].sm.applied);
    assert!(c.nodes["n1"]
        .sm
        .applied
        .iter()
        .all(|a| a.kind != Kind::Cmd(cmd)));
}

#[test]
fn competing_candidates_split_vote_then_randomized_timeouts() {
    header("competing candidates: a split vote, resolved by randomized timeouts");
    let mut c = cluster(&["n1", "n2", "n3", "n4"], Opts::default(), 6);
    let is_pre =
        |e: &Envelope| matches!(e.msg, Message::PreVote { .. } | Message::PreVoteResp { .. });
    // n1 and n2 time out together, both pass pre-vote and become candidates of
    // term 2 at once.
    for id in ["n1", "n2"] {
        for _ in 0..100 {
            if c.raft(id).role() == Role::PreCandidate {
                break;
            }
            c.tick_some(&[id]);
        }
    }
    c.deliver_matching(is_pre);
    for id in ["n1", "n2"] {
        assert_eq!(c.raft(id).role(), Role::Candidate);
    }
    assert_eq!((c.raft("n1").term(), c.raft("n2").term()), (2, 2));
    // n3 hears n1 first, n4 hears n2 first: 2 votes each, no majority of 4.
    c.deliver_map(|e| {
        let cross = (e.from == "n1" && e.to == "n4") || (e.from == "n2" && e.to == "n3");
        (!(cross && matches!(e.msg, Message::Vote { .. }))).then_some(e)
    });
    c.check_all();
    assert!(c.leader().is_none(), "split vote: nobody won term 2");
    // Everyone ticks; the randomized timeouts make one candidate go first.
    run_until(&mut c, &["n1", "n2", "n3", "n4"], 200, |c| {
        c.leader().is_some()
    });
    let (l, t) = leader_term(&c);
    println!("    {l} won term {t}");
    assert!(t >= 3);
    assert!(!c.check.leaders.contains_key(&2));
}

/// Every fsync outlasts the election timeout (25-30 ticks against 10-20): a
/// candidacy needs the candidate's fsync and then the voters', so each
/// candidate gives up before its votes come back. The timeout backs off after
/// failed candidacies, so a leader is elected all the same, and it serves.
/// (Without the backoff none of these clusters had a leader after 2,000 ticks; in CI,
/// with 800 ms fsyncs against 0.5-1 s timeouts, none for a minute.)
#[test]
fn disks_slower_than_the_election_timeout_still_elect_a_leader() {
    header("disks slower than the election timeout");
    let opts = Opts {
        async_persist: true,
        persist_delay_min: 25,
        persist_delay_max: 30,
        ..Opts::default()
    };
    for seed in 1..=5 {
        let mut c = cluster(&["n1", "n2", "n3"], opts.clone(), seed);
        for _ in 0..2_000 {
            if c.leader().is_some() {
                break;
            }
            run(&mut c, 1);
        }
        let (l, term) = leader_term(&c);
        println!("seed {seed}: {l} leads in term {term} at tick {}", c.now);
        let acked_writes = write(&mut c, &l, 3);
        run(&mut c, 200);
        for (cmd, _, _) in acked_writes {
            assert!(acked(&c, cmd), "seed {seed}: write {cmd} not committed");
        }
    }
}

#[test]
fn old_leader_returning_after_partition_is_fenced_by_term() {
    header("an old leader returns after a partition and is fenced by the term");
    let mut c = cluster(&["n1", "n2", "n3"], Opts::default(), 7);
    elect(&mut c, "n1");
    run(&mut c, 5);
    let (_, old_term) = leader_term(&c);
    // n1 is cut off (and paused): it still believes it leads and takes writes.
    c.isolate("n1");
    let stale = write(&mut c, "n1", 3);
    run_until(&mut c, &["n2", "n3"], 200, |c| {
        c.leader().is_some_and(|l| l != "n1")
    });
    let (new_leader, new_term) = leader_term(&c);
    let fresh = write(&mut c, &new_leader, 2);
    run_until(&mut c, &["n2", "n3"], 20, |c| {
        fresh.iter().all(|(cmd, _, _)| acked(c, *cmd))
    });
    assert!(c.raft("n1").is_leader() && c.raft("n1").term() == old_term);
    println!("    n1 still believes it leads term {old_term}; {new_leader} leads {new_term}");
    // n1 wakes up and heals; a client write makes it send appends of its old term.
    // The others refuse them, answering with their term, and n1 steps down.
    c.heal();
    let late = write(&mut c, "n1", 1);
    let mut refusals = 0;
    c.deliver_map(|e| {
        if e.to == "n1" {
            if let Message::AppendResp { success, .. } = e.msg {
                assert!(!success, "{} accepted an append of the old term", e.from);
                assert_eq!(e.term, new_term);
                refusals += 1;
            }
        }
        Some(e)
    });
    assert!(refusals >= 1, "the old leader's appends were refused");
    assert_eq!(c.raft("n1").role(), Role::Follower, "n1 stepped down");
    assert_eq!(c.raft("n1").term(), new_term);
    run(&mut c, 10);
    for (cmd, _, _) in stale.iter().chain(&late) {
        assert!(!acked(&c, *cmd));
        assert!(c.nodes["n1"]
            .sm
            .applied
            .iter()
            .all(|a| a.kind != Kind::Cmd(*cmd)));
    }
    assert_eq!(
        c.log_terms("n1"),
        c.log_terms(&new_leader),
        "uncommitted suffix truncated"
    );
    assert_eq!(c.nodes["n1"].sm.applied, c.nodes[&new_leader].sm.applied);
}

// ---- the Raft paper's figures ---------------------------------------------------

#[test]
fn figure_7_divergent_follower_logs_converge_to_the_leader() {
    header("Figure 7: divergent follower logs converge to the new leader's (term 8)");
    // Terms of entries 2.. (entry 1 is the membership, term 1).
    let logs: [(&str, &[u64]); 7] = [
        ("s1", &[1, 1, 4, 4, 5, 5, 6, 6, 6]),
        ("a", &[1, 1, 4, 4, 5, 5, 6, 6]),
        ("b", &[1, 1, 4]),
        ("c", &[1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        ("d", &[1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        ("e", &[1, 1, 4, 4, 4, 4]),
        ("f", &[1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ];
    let ids: Vec<&str> = logs.iter().map(|(id, _)| *id).collect();
    let m = membership(&ids, &[]);
    let mut c = Cluster::new(Opts::default(), 8, TraceMode::Print);
    for (id, terms) in logs {
        c.add_node(id, Some(Boot::with_terms(&m, terms, 7)));
    }
    c.print_logs();
    elect(&mut c, "s1");
    assert_eq!(c.raft("s1").term(), 8);
    c.deliver_all();
    run(&mut c, 3);
    c.print_logs();
    let want = c.log_terms("s1");
    assert_eq!(want, vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 8]);
    for id in ids {
        assert_eq!(c.log_terms(id), want, "{id} converged");
        assert_eq!(c.raft(id).commit_index(), 11);
    }
    c.check_log_matching();
}

/// Figure 8 up to (c): S1 leads term 4 and has its term-2 entry (index 2) on a
/// majority, but not yet its own term-4 entry.
fn figure_8_until_c(seed: u64) -> Cluster {
    let ids = ["s1", "s2", "s3", "s4", "s5"];
    let m = membership(&ids, &[]);
    let opts = Opts {
        max_append_entries: 1,
        ..Opts::default()
    };
    let mut c = Cluster::new(opts, seed, TraceMode::Print);
    c.tr.messages = true;
    // (a) and (b): S1 led term 2 and reached S2; S5 led term 3 alone.
    let logs: [(&str, &[u64], u64); 5] = [
        ("s1", &[2], 2),
        ("s2", &[2], 2),
        ("s3", &[], 3),
        ("s4", &[], 3),
        ("s5", &[3], 3),
    ];
    for (id, terms, term) in logs {
        c.add_node(id, Some(Boot::with_terms(&m, terms, term)));
    }
    // (c): S5 is down; S1 is elected in term 4.
    c.crash("s5");
    elect_quietly(&mut c, "s1");
    assert_eq!(c.raft("s1").term(), 4);
    // S1 spreads index 2, but its term-4 entry (index 3) reaches nobody: it is
    // cut from every append that would be accepted.
    let mut has2 = std::collections::BTreeSet::from(["s2".to_string()]);
    c.deliver_map(|mut e| {
        if let Message::AppendResp {
            success: true,
            index,
            ..
        } = e.msg
        {
            if index >= 2 {
                has2.insert(e.from.clone());
            }
        }
        if let Message::Append { entries, .. } = &mut e.msg {
            if has2.contains(&e.to) {
                entries.retain(|x| x.term != 4);
            }
        }
        Some(e)
    });
    c.check_all();
    c.print_logs();
    c
}

#[test]
fn figure_8_an_old_term_entry_on_a_majority_is_not_committed_by_counting() {
    header("Figure 8: the commit-from-an-older-term trap");
    let mut c = figure_8_until_c(9);
    for id in ["s2", "s3", "s4"] {
        assert_eq!(c.raft("s1").match_index(id), Some(2), "{id} holds index 2");
    }
    assert_eq!(
        c.raft("s1").commit_index(),
        1,
        "index 2 (term 2) is on 4 of 5 servers but must not be committed by counting"
    );
    // (d): S1 crashes; S5 comes back and wins term 5 with votes from S2, S3, S4.
    c.crash("s1");
    c.restart("s5");
    let others = |e: &Envelope| {
        e.from != "s5" && matches!(e.msg, Message::PreVote { .. } | Message::Vote { .. })
    };
    for _ in 0..300 {
        if c.raft("s5").is_leader() {
            break;
        }
        c.tick_some(&["s2", "s3", "s4", "s5"]);
        c.deliver_map(|e| (!others(&e)).then_some(e));
        c.check_all();
    }
    assert!(
        c.raft("s5").is_leader(),
        "S5 wins: its last term 3 beats term 2"
    );
    run(&mut c, 5);
    c.restart("s1");
    run(&mut c, 10);
    c.print_logs();
    // S5 overwrote index 2 everywhere, which is safe only because it was never
    // committed.
    for id in ["s1", "s2", "s3", "s4", "s5"] {
        assert_eq!(c.nodes[id].stored(2).unwrap().term, 3, "{id} index 2");
    }
    assert_eq!(c.check.history[1].term, 3);
}

#[test]
fn figure_8_e_a_current_term_entry_commits_the_older_ones() {
    header("Figure 8 (e): once S1's term-4 entry is on a majority, index 2 commits");
    let mut c = figure_8_until_c(10);
    run(&mut c, 3); // heartbeats let the term-4 entry through now
    assert_eq!(c.raft("s1").commit_index(), 3);
    assert_eq!(
        c.check.history[1].term, 2,
        "index 2 (term 2) committed with index 3"
    );
    c.crash("s1");
    c.restart("s5");
    run(&mut c, 200);
    c.print_logs();
    assert!(!c.raft("s5").is_leader(), "S5 can no longer win");
    let (l, _) = leader_term(&c);
    assert_eq!(c.nodes[&l].stored(2).unwrap().term, 2);
}

// ---- exact-effect tests ----------------------------------------------------------

#[test]
fn pre_vote_does_not_bump_terms() {
    header("pre-vote does not change any term or vote");
    let mut c = cluster(&["n1", "n2", "n3"], Opts::default(), 11);
    for _ in 0..100 {
        c.tick_some(&["n1"]);
        if c.raft("n1").role() == Role::PreCandidate {
            break;
        }
    }
    assert_eq!(c.raft("n1").role(), Role::PreCandidate);
    assert_eq!(c.raft("n1").term(), 1);
    assert_eq!(c.raft("n1").hard_state().vote, None);
    let pre: Vec<_> = c.net.queue.iter().map(|m| m.env.clone()).collect();
    assert_eq!(pre.len(), 2);
    for e in &pre {
        assert!(matches!(e.msg, Message::PreVote { .. }));
        assert_eq!(e.term, 2, "a pre-vote names the term it would campaign in");
    }
    // Grant it, but hold n1's real votes.
    c.deliver_matching(|e| matches!(e.msg, Message::PreVote { .. } | Message::PreVoteResp { .. }));
    for id in ["n2", "n3"] {
        assert_eq!(
            c.raft(id).term(),
            1,
            "{id}: granting a pre-vote changes nothing"
        );
        assert_eq!(c.raft(id).hard_state().vote, None);
    }
    assert_eq!(c.raft("n1").role(), Role::Candidate);
    assert_eq!(c.raft("n1").term(), 2);
}

#[test]
fn vote_is_persisted_in_the_same_ready_as_the_vote_response() {
    header("the vote is in the hard state of the Ready that sends the VoteResp");
    let mut c = cluster(&["n1", "n2", "n3"], Opts::default(), 12);
    let vote = Envelope {
        from: "n1".into(),
        to: "n2".into(),
        term: 2,
        msg: Message::Vote {
            last_log_index: 1,
            last_log_term: 1,
            transfer: false,
        },
    };
    let r = c.raft_mut("n2");
    r.step(vote);
    let rd = r.ready();
    let hs = rd.hard_state.expect("hard state to persist");
    assert_eq!((hs.term, hs.vote.as_deref()), (2, Some("n1")));
    assert!(rd
        .messages
        .iter()
        .any(|e| e.to == "n1" && e.msg == Message::VoteResp { granted: true }));
    println!(
        "    Ready: hard_state {hs:?} with {} message(s)",
        rd.messages.len()
    );
}

#[test]
fn fast_backtracking_takes_one_round_trip_per_term() {
    header("fast backtracking: one rejected append per conflicting term, not per index");
    let ids = ["n1", "n2", "n3"];
    let m = membership(&ids, &[]);
    let mut c = Cluster::new(Opts::default(), 13, TraceMode::Print);
    c.tr.messages = true;
    c.add_node("n1", Some(Boot::with_terms(&m, &[2; 10], 4)));
    c.add_node("n2", Some(Boot::with_terms(&m, &[2; 10], 4)));
    c.add_node("n3", Some(Boot::with_terms(&m, &[3; 30], 4)));
    elect_quietly(&mut c, "n1");
    let mut rejections = 0;
    c.deliver_map(|e| {
        if e.from == "n3" && matches!(e.msg, Message::AppendResp { success: false, .. }) {
            rejections += 1;
        }
        Some(e)
    });
    c.print_logs();
    println!("    n3 had 30 conflicting entries; rejections: {rejections}");
    assert!(rejections <= 2, "{rejections} rejections");
    assert_eq!(c.log_terms("n3"), c.log_terms("n1"));
}

#[test]
fn inflight_bounds_are_respected() {
    header("pipelined appends stop at max_inflight_msgs per follower");
    let opts = Opts {
        max_append_entries: 1,
        max_inflight_msgs: 2,
        ..Opts::default()
    };
    let mut c = cluster(&["n1", "n2", "n3"], opts, 14);
    elect(&mut c, "n1");
    c.deliver_all();
    run(&mut c, 2);
    write(&mut c, "n1", 10);
    let to_n2 = c
        .net
        .queue
        .iter()
        .filter(|m| {
            m.env.to == "n2"
                && matches!(&m.env.msg, Message::Append { entries, .. } if !entries.is_empty())
        })
        .count();
    println!("    10 writes proposed; appends in flight to n2: {to_n2}");
    assert_eq!(to_n2, 2);
    c.deliver_all();
    run(&mut c, 10);
    assert_eq!(c.raft("n2").last_index(), c.raft("n1").last_index());
}

#[test]
fn read_index_waits_for_the_leaders_noop_commit() {
    header("ReadIndex waits until the new leader committed its no-op");
    let mut c = cluster(&["n1", "n2", "n3"], Opts::default(), 15);
    // Deliver the votes but not the appends.
    elect_quietly(&mut c, "n1");
    let noop = c.raft("n1").last_index();
    assert!(c.raft("n1").commit_index() < noop);
    let ctx = c.read("n1").unwrap();
    assert!(
        c.nodes["n1"].read_started.contains_key(&ctx),
        "no read state yet"
    );
    assert!(
        c.net
            .queue
            .iter()
            .all(|m| !matches!(m.env.msg, Message::Heartbeat { ctx: x, .. } if x > 0)),
        "no read round starts before the no-op commits"
    );
    c.deliver_all();
    c.tick_all();
    c.deliver_all();
    assert!(!c.nodes["n1"].read_started.contains_key(&ctx), "answered");
    assert!(c.raft("n1").commit_index() >= noop);
    assert!(c.stats.reads_served >= 1);
}

#[test]
fn leadership_transfer_with_timeout_now() {
    header("leadership transfer: catch the target up, then TimeoutNow");
    let mut c = cluster(&["n1", "n2", "n3"], Opts::default(), 16);
    elect(&mut c, "n1");
    run(&mut c, 3);
    c.transfer("n1", Some("n3")).unwrap();
    assert_eq!(
        c.raft_mut("n1").propose(common::payload_bytes(1)),
        Err(ProposeError::Transferring)
    );
    assert!(c
        .net
        .queue
        .iter()
        .any(|m| m.env.to == "n3" && m.env.msg == Message::TimeoutNow));
    c.deliver_all();
    let (l, t) = leader_term(&c);
    assert_eq!((l.as_str(), t), ("n3", 3));
    assert_eq!(c.raft("n1").leader(), Some(&"n3".to_string()));
}

#[test]
fn learners_do_not_count_for_quorum_or_campaign() {
    header("learners replicate but neither vote, campaign, nor count for commit");
    let mut c = cluster(&["n1", "n2", "n3"], Opts::default(), 17);
    elect(&mut c, "n1");
    run(&mut c, 3);
    for id in ["n4", "n5"] {
        c.add_node(id, None);
        let mut m = c.raft("n1").membership().clone();
        m.members.extend(membership(&[], &[id]).members);
        c.change_membership("n1", m).unwrap();
        run(&mut c, 5);
    }
    // n2 and n3 unreachable: n1 + two learners hold the entry, which is not enough.
    c.net.blocked.insert(("n1".into(), "n2".into()));
    c.net.blocked.insert(("n1".into(), "n3".into()));
    let (cmd, index, _) = write(&mut c, "n1", 1)[0];
    c.deliver_all();
    assert_eq!(c.raft("n4").last_index(), index);
    assert_eq!(c.raft("n5").last_index(), index);
    assert_eq!(c.raft("n1").acks(index, c.raft("n1").term()), 1);
    assert!(c.raft("n1").commit_index() < index, "learners do not count");
    assert!(!acked(&c, cmd));
    // A learner cut off from everyone never campaigns.
    c.heal();
    c.isolate("n4");
    run(&mut c, 100);
    assert_eq!(c.raft("n4").role(), Role::Follower);
    assert!(acked(&c, cmd));
}

#[test]
fn one_membership_change_at_a_time() {
    header("one membership change at a time, and none before the no-op commits");
    let mut c = cluster(&["n1", "n2", "n3"], Opts::default(), 18);
    elect_quietly(&mut c, "n1");
    let mut m = c.raft("n1").membership().clone();
    m.members.extend(membership(&[], &["n4"]).members);
    assert_eq!(
        c.change_membership("n1", m.clone()),
        Err(ProposeError::NotReady)
    );
    c.deliver_all();
    c.add_node("n4", None);
    c.change_membership("n1", m.clone()).unwrap();
    let mut m2 = m.clone();
    m2.members.extend(membership(&[], &["n5"]).members);
    assert_eq!(
        c.change_membership("n1", m2.clone()),
        Err(ProposeError::ChangeInProgress)
    );
    let mut two = m.clone();
    two.members.remove("n2");
    two.members.remove("n3");
    c.deliver_all();
    run(&mut c, 2);
    assert!(matches!(
        c.change_membership("n1", two),
        Err(ProposeError::InvalidChange(_))
    ));
    c.add_node("n5", None);
    c.change_membership("n1", m2).unwrap();
    run(&mut c, 5);
    assert_eq!(c.raft("n5").membership().members.len(), 5);
}

#[test]
fn removed_leader_steps_down_and_the_rest_elect() {
    header("removing the leader: it steps down once the change commits");
    let mut c = cluster(&["n1", "n2", "n3"], Opts::default(), 19);
    elect(&mut c, "n1");
    run(&mut c, 3);
    let mut m = c.raft("n1").membership().clone();
    m.members.remove("n1");
    c.change_membership("n1", m).unwrap();
    let ids = all_up(&c);
    run_until(&mut c, &ids_of(&ids), 200, |c| {
        c.leader().is_some_and(|l| l != "n1")
    });
    assert!(!c.raft("n1").is_leader());
    let (l, _) = leader_term(&c);
    assert_eq!(c.raft(&l).membership().voter_count(), 2);
}

#[test]
fn votes_and_pre_votes_need_an_up_to_date_log() {
    header("a vote or pre-vote goes only to a candidate whose log is as up to date");
    let ids = ["n1", "n2", "n3"];
    let m = membership(&ids, &[]);
    let mut c = Cluster::new(Opts::default(), 20, TraceMode::Print);
    c.add_node("n1", Some(Boot::with_terms(&m, &[2, 2], 2)));
    c.add_node("n2", Some(Boot::with_terms(&m, &[2], 2)));
    c.add_node("n3", Some(Boot::with_terms(&m, &[3], 3)));
    let ask = |c: &mut Cluster, from: &str, pre: bool| {
        let r = c.raft(from);
        let (last_log_index, last_log_term) = (r.last_index(), r.last_term());
        let msg = if pre {
            Message::PreVote {
                last_log_index,
                last_log_term,
            }
        } else {
            Message::Vote {
                last_log_index,
                last_log_term,
                transfer: false,
            }
        };
        let r = c.raft_mut("n1");
        r.step(Envelope {
            from: from.into(),
            to: "n1".into(),
            term: 4,
            msg,
        });
        let rd = r.ready();
        let granted = rd.messages.iter().any(|e| {
            matches!(
                e.msg,
                Message::VoteResp { granted: true } | Message::PreVoteResp { granted: true }
            )
        });
        println!("    n1 (last 3@t2) asked by {from} (last {last_log_index}@t{last_log_term}), pre-vote {pre}: granted {granted}");
        granted
    };
    // Pre-votes change no term, so they go first; then the real votes of term 4.
    assert!(!ask(&mut c, "n2", true), "shorter log, same last term");
    assert!(
        ask(&mut c, "n3", true),
        "a higher last term wins even when shorter"
    );
    assert!(!ask(&mut c, "n2", false), "shorter log, same last term");
    assert!(
        ask(&mut c, "n3", false),
        "a higher last term wins even when shorter"
    );
}

#[test]
fn a_follower_commits_only_what_matches_the_leader() {
    header("a follower commits at most up to the last entry the append verified");
    let ids = ["n1", "n2", "n3"];
    let m = membership(&ids, &[]);
    let mut c = Cluster::new(Opts::default(), 21, TraceMode::Print);
    // n2 holds 2@t2 (as the leader does) followed by entries the leader never had.
    c.add_node("n2", Some(Boot::with_terms(&m, &[2, 2, 2], 3)));
    let r = c.raft_mut("n2");
    let entry = raftlog::core::Entry {
        index: 2,
        term: 2,
        payload: raftlog::core::EntryPayload::Command(common::payload_bytes(2002)),
    };
    let msg = Message::Append {
        prev_index: 1,
        prev_term: 1,
        entries: vec![entry],
        commit: 4,
    };
    r.step(Envelope {
        from: "n1".into(),
        to: "n2".into(),
        term: 3,
        msg,
    });
    println!(
        "    append prev 1@t1 [2@t2] commit 4 -> n2 commit {}",
        r.commit_index()
    );
    assert_eq!(
        r.commit_index(),
        2,
        "entries 3 and 4 were not checked against the leader"
    );
}

#[test]
fn a_leader_counts_itself_only_once_its_own_write_is_durable() {
    header("the leader's own copy counts for commit only after on_persisted");
    let mut c = cluster(&["n1", "n2", "n3"], Opts::default(), 22);
    elect(&mut c, "n1");
    run(&mut c, 3);
    // Drive by hand: the leader's Ready is not persisted yet.
    let (index, term) = c.raft_mut("n1").propose(common::payload_bytes(7)).unwrap();
    let rd = c.raft_mut("n1").ready();
    let append = rd.messages.into_iter().find(|e| e.to == "n2").unwrap();
    let n2 = c.raft_mut("n2");
    n2.step(append);
    let rd2 = n2.ready();
    let last = rd2.entries.last().unwrap();
    n2.on_persisted(last.index, last.term);
    let resp = rd2.messages.into_iter().find(|e| e.to == "n1").unwrap();
    c.raft_mut("n1").step(resp);
    println!(
        "    n2 acknowledged {index}; n1 not yet durable: commit {}",
        c.raft("n1").commit_index()
    );
    assert!(c.raft("n1").commit_index() < index);
    c.raft_mut("n1").on_persisted(index, term);
    assert_eq!(c.raft("n1").commit_index(), index);
}

// ---- durability rules ------------------------------------------------------------
// Each pins one rule exactly, then shows what breaking it would cost (two leaders
// in one term, a lost acknowledged write). The harness also checks every message
// that leaves a node against what its storage synced (`VIOLATION durability`).

fn queued(c: &Cluster, pred: impl Fn(&Envelope) -> bool) -> usize {
    c.net.queue.iter().filter(|m| pred(&m.env)).count()
}

fn is_vote_to(e: &Envelope, to: &str) -> bool {
    e.to == to && matches!(e.msg, Message::Vote { .. })
}

/// Async persistence: complete every job and deliver every message until quiet.
fn settle(c: &mut Cluster) {
    for _ in 0..1000 {
        c.complete_jobs();
        let jobs = c.nodes.values().any(|n| n.job.is_some());
        if c.deliver_all() == 0 && !jobs {
            return;
        }
    }
    panic!("never settled");
}

/// Async persistence: tick only `ids`, settling after each tick, until `done`.
fn run_async_until(c: &mut Cluster, ids: &[&str], done: impl Fn(&Cluster) -> bool) {
    for _ in 0..200 {
        if done(c) {
            return;
        }
        c.tick_some(ids);
        settle(c);
        c.check_all();
    }
    assert!(done(c), "condition not reached within 200 ticks");
}

/// Tick only `id` (no delivery, no persistence job completes) until it campaigns.
fn campaign(c: &mut Cluster, id: &str) {
    for _ in 0..100 {
        if c.raft(id).role() == Role::Candidate {
            return;
        }
        c.tick_some(&[id]);
    }
    panic!("{id} did not campaign");
}

#[test]
fn a_vote_answer_waits_for_the_fsync_and_a_crash_before_it_gives_no_vote() {
    header("a VoteResp leaves only after the vote is synced; a crash in between loses both");
    let opts = Opts {
        async_persist: true,
        pre_vote: false,
        ..Opts::default()
    };
    let mut c = cluster(&["n1", "n2", "n3"], opts, 23);
    campaign(&mut c, "n1");
    assert_eq!(
        queued(&c, |_| true),
        0,
        "n1's requests wait for its own vote"
    );
    c.complete_job("n1");
    assert_eq!(queued(&c, |e| matches!(e.msg, Message::Vote { .. })), 2);
    c.deliver_matching(|e| is_vote_to(e, "n2"));
    let job = c.nodes["n2"].job.as_ref().expect("n2 persists its vote");
    let hs = job.rd.hard_state.clone().expect("the vote is in the Ready");
    assert_eq!((hs.term, hs.vote.as_deref()), (2, Some("n1")));
    let held = job
        .rd
        .messages
        .iter()
        .any(|e| e.msg == Message::VoteResp { granted: true });
    assert!(held, "the answer waits in the Ready being persisted");
    assert_eq!(
        queued(&c, |e| matches!(e.msg, Message::VoteResp { .. })),
        0,
        "no answer leaves before the fsync"
    );
    // n2 crashes inside the pending persist: neither the vote nor the answer exist.
    c.crash_keep("n2", 0);
    c.restart("n2");
    assert_eq!(c.raft("n2").hard_state().vote, None);
    c.deliver_matching(|e| e.to == "n1");
    assert_eq!(c.raft("n1").role(), Role::Candidate);
    // n3 never heard from n1 and campaigns in the same term: n2 may vote again.
    c.net.queue.retain(|m| !is_vote_to(&m.env, "n3"));
    campaign(&mut c, "n3");
    assert_eq!(c.raft("n3").term(), 2);
    c.complete_job("n3");
    c.deliver_matching(|e| is_vote_to(e, "n2"));
    c.complete_job("n2");
    c.deliver_matching(|e| e.to == "n3" && matches!(e.msg, Message::VoteResp { .. }));
    assert!(c.raft("n3").is_leader());
    assert!(!c.raft("n1").is_leader());
    assert_eq!(c.check.leaders.get(&2).map(String::as_str), Some("n3"));
}

#[test]
fn a_vote_in_the_current_term_is_synced_and_survives_a_restart() {
    header("a vote that changes only the vote (term already known) is persisted");
    let ids = ["n1", "n2", "n3"];
    let m = membership(&ids, &[]);
    let opts = Opts {
        pre_vote: false,
        ..Opts::default()
    };
    let mut c = Cluster::new(opts, 24, TraceMode::Print);
    c.add_node("n1", Some(Boot::with_membership(&m)));
    // n2 already knows term 2 (say, from a request it refused), without a vote.
    let mut b = Boot::with_membership(&m);
    b.hard_state.term = 2;
    c.add_node("n2", Some(b));
    c.add_node("n3", Some(Boot::with_membership(&m)));
    campaign(&mut c, "n1");
    assert_eq!(c.raft("n1").term(), 2);
    c.deliver_matching(|e| is_vote_to(e, "n2"));
    let synced = c.nodes["n2"].synced_hs.clone();
    assert_eq!((synced.term, synced.vote.as_deref()), (2, Some("n1")));
    assert_eq!(
        queued(&c, |e| e.msg == Message::VoteResp { granted: true }),
        1
    );
    // n2 restarts right after answering: it remembers its vote.
    c.crash("n2");
    c.restart("n2");
    assert_eq!(c.raft("n2").hard_state().vote.as_deref(), Some("n1"));
    c.deliver_matching(|e| e.to == "n1" && matches!(e.msg, Message::VoteResp { .. }));
    assert!(c.raft("n1").is_leader());
    // n3 never heard from n1 and campaigns in term 2: n2 refuses.
    c.net.queue.retain(|m| m.env.to != "n3");
    campaign(&mut c, "n3");
    assert_eq!(c.raft("n3").term(), 2);
    let mut refused = false;
    c.deliver_map(|e| {
        refused |= e.from == "n2" && e.msg == Message::VoteResp { granted: false };
        (e.to != "n1" || !matches!(e.msg, Message::Append { .. })).then_some(e)
    });
    assert!(refused, "n2 voted in term 2 already");
    assert!(!c.raft("n3").is_leader());
    assert_eq!(c.check.leaders.get(&2).map(String::as_str), Some("n1"));
}

#[test]
fn a_configuration_is_in_force_at_append_and_rolled_back_with_its_entry() {
    header("a membership entry takes effect when appended and reverts when truncated");
    let ids = ["n1", "n2", "n3", "n4", "n5"];
    let mut c = cluster(&ids, Opts::default(), 25);
    elect(&mut c, "n1");
    run(&mut c, 3);
    let old = c.raft("n1").membership().clone();
    c.add_node("n6", None);
    let mut next = old.clone();
    next.members.extend(membership(&[], &["n6"]).members);
    let index = c.change_membership("n1", next.clone()).unwrap();
    assert_eq!(
        c.raft("n1").membership(),
        &next,
        "on the leader, before commit"
    );
    assert!(c.raft("n1").commit_index() < index);
    let to_n6 = |e: &Envelope| e.to == "n6" && matches!(e.msg, Message::Append { .. });
    assert_eq!(queued(&c, to_n6), 1, "the new member gets the log at once");
    // Only n2 receives the entry: it adopts it uncommitted.
    c.deliver_matching(|e| e.to == "n2" && matches!(e.msg, Message::Append { .. }));
    assert_eq!(
        c.raft("n2").membership(),
        &next,
        "on a follower, before commit"
    );
    assert!(c.raft("n2").commit_index() < index);
    // n1 and n2 are cut off; n3..n5 elect n3, which never had the entry.
    c.net.queue.clear();
    c.isolate("n1");
    c.isolate("n2");
    run_until(&mut c, &["n3", "n4", "n5"], 400, |c| {
        c.leader().is_some_and(|l| l != "n1")
    });
    let (l, _) = leader_term(&c);
    write(&mut c, &l, 2);
    c.deliver_all();
    c.heal();
    run_until(&mut c, &ids, 400, |c| {
        c.raft("n2").leader() == Some(&l) && c.raft("n2").last_term() > 2
    });
    c.print_logs();
    assert_ne!(c.raft("n2").entry_term(index), Some(2), "the entry is gone");
    assert_eq!(c.raft("n2").membership(), &old, "and the change with it");
    assert_eq!(c.raft("n1").membership(), &old);
}

#[test]
fn a_leader_with_a_slow_fsync_acknowledges_only_what_a_quorum_synced() {
    header("a leader's own unsynced copy does not count; crashing loses no ack");
    let opts = Opts {
        async_persist: true,
        ..Opts::default()
    };
    let mut c = cluster(&["n1", "n2", "n3"], opts, 26);
    run_async_until(&mut c, &["n1"], |c| c.raft("n1").is_leader());
    run(&mut c, 3);
    settle(&mut c);
    let (cmd, index, term) = c.propose("n1").unwrap();
    assert!(c.nodes["n1"].job.is_some(), "n1's write is not synced yet");
    // n2 syncs and answers before n1's own fsync completes; n3 hears nothing.
    c.net.queue.retain(|m| m.env.to != "n3");
    c.deliver_matching(|e| e.to == "n2");
    c.complete_job("n2");
    c.deliver_matching(|e| e.to == "n1" && matches!(e.msg, Message::AppendResp { .. }));
    assert_eq!(c.raft("n1").match_index("n2"), Some(index));
    assert_eq!(c.raft("n1").acks(index, term), 1, "n2 only");
    assert!(c.raft("n1").commit_index() < index);
    assert!(!acked(&c, cmd));
    // n1 crashes inside that persist; n3 leads with n1's vote, without the write.
    c.crash_keep("n1", 0);
    c.restart("n1");
    c.isolate("n2");
    run_async_until(&mut c, &["n3"], |c| c.raft("n3").is_leader());
    assert!(c.raft("n3").entry_term(index) != Some(term));
    assert!(
        !acked(&c, cmd),
        "the write was never acknowledged, so nothing was lost"
    );
}

// ---- repair after disk damage (protocol-aware recovery) ---------------------------

/// n1 leads; n2 is cut off while writes commit on n1 and n3 alone; n3 then loses
/// its log to disk damage (term and vote kept) and n1 crashes. A vote from n3 for
/// n2 (whose log now looks longer than n3's empty one) would elect a leader
/// without the acknowledged writes. Returns the acknowledged commands.
fn damaged_voter_after_acks(c: &mut Cluster, repairing: bool) -> Vec<u64> {
    elect(c, "n1");
    run(c, 5);
    c.isolate("n2");
    let cmds: Vec<u64> = write(c, "n1", 3).iter().map(|p| p.0).collect();
    run(c, 20);
    assert!(cmds.iter().all(|&cmd| acked(c, cmd)), "committed on n1+n3");
    c.heal();
    if repairing {
        c.restart_damaged("n3");
    } else {
        // What a node without repair mode would do: an empty log, a voter.
        c.restart_damaged("n3");
        c.crash("n3");
        c.restart("n3");
    }
    c.crash("n1");
    cmds
}

#[test]
fn a_repairing_node_does_not_vote_until_it_holds_what_it_acknowledged() {
    header("repair: n3 lost its log; with n1 down nobody may lead");
    let mut c = cluster(&["n1", "n2", "n3"], Opts::default(), 11);
    let cmds = damaged_voter_after_acks(&mut c, true);
    assert!(c.raft("n3").is_repairing());
    run(&mut c, 400);
    assert_eq!(c.leader(), None, "n2 cannot win without n3's vote");
    assert!(c.raft("n3").is_repairing(), "no leader to repair from");

    header("repair: n1 returns, leads, n3 catches up and votes again");
    c.restart("n1");
    run_until(&mut c, &["n1", "n2", "n3"], 600, |c| {
        c.leader().is_some() && !c.raft("n3").is_repairing()
    });
    let leader = c.leader().unwrap();
    assert_eq!(leader, "n1", "only n1 holds the acknowledged writes");
    run(&mut c, 20);
    let applied = &c.nodes["n3"].sm.applied;
    for cmd in cmds {
        assert!(
            applied.iter().any(|a| a.kind == Kind::Cmd(cmd)),
            "n3 applied cmd{cmd} after repair"
        );
    }

    header("repair: n3 counts again (n2 down, n1+n3 commit)");
    c.crash("n2");
    let p = c.propose("n1").expect("propose");
    run(&mut c, 20);
    assert!(acked(&c, p.0), "committed with n3's ack");
}

#[test]
fn without_repair_mode_the_same_damage_loses_an_acknowledged_write() {
    header("no repair mode: n3 votes with an empty log");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut c = cluster(&["n1", "n2", "n3"], Opts::default(), 11);
        damaged_voter_after_acks(&mut c, false);
        run(&mut c, 400);
    }));
    let msg = r.expect_err("the checker must object");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("VIOLATION"), "{msg}");
}

/// n1 leads and n2 is cut off. X is appended on n1 and n3, and n3's answer (from
/// its first process, incarnation 1) stays in the network while n3 restarts
/// repairing and catches up on everything before X (the appends carrying X are
/// lost). Then the late answer reaches n1 (rewritten to the current incarnation
/// when `indistinguishable`, as an answer without incarnations would be) and n1
/// crashes. Returns X's command.
fn late_answer_after_repair(c: &mut Cluster, indistinguishable: bool) -> u64 {
    elect(c, "n1");
    write(c, "n1", 2);
    run(c, 10);
    c.isolate("n2");
    let (x, xi, _) = c.propose("n1").expect("propose");
    c.deliver_matching(|e| e.to == "n3" && matches!(e.msg, Message::Append { .. }));
    let pos = c
        .net
        .queue
        .iter()
        .position(|m| {
            m.env.from == "n3"
                && matches!(m.env.msg, Message::AppendResp { success: true, index, .. } if index == xi)
        })
        .expect("n3 acknowledged X");
    let mut late = c.net.queue.remove(pos).unwrap().env;
    c.restart_damaged("n3");
    let carries_x = |e: &Envelope| match &e.msg {
        Message::Append {
            prev_index,
            entries,
            ..
        } => e.to == "n3" && *prev_index < xi && prev_index + entries.len() as u64 >= xi,
        _ => false,
    };
    for _ in 0..600 {
        if !c.raft("n3").is_repairing() {
            break;
        }
        c.tick_some(&["n1", "n3"]);
        c.deliver_filtered(|e| !carries_x(e));
        c.check_all();
    }
    assert!(
        !c.raft("n3").is_repairing(),
        "n3 repaired up to n1's commit"
    );
    assert!(c.raft("n3").last_index() < xi, "n3 never received X again");
    if let Message::AppendResp { incarnation, .. } = &mut late.msg {
        assert_eq!(*incarnation, 1);
        if indistinguishable {
            *incarnation = 2;
        }
    }
    c.deliver(late);
    c.crash("n1");
    c.heal();
    x
}

#[test]
fn a_late_answer_of_the_process_before_a_repair_is_not_counted() {
    header("repair: n3's late answer for X arrives after it repaired without X");
    let opts = Opts {
        max_append_entries: 1,
        ..Opts::default()
    };
    let mut c = cluster(&["n1", "n2", "n3"], opts, 5);
    let x = late_answer_after_repair(&mut c, false);
    assert!(!acked(&c, x), "X counted on a late answer");
    header("repair: n2 and n3 elect a leader without X; nothing acknowledged is lost");
    run_until(&mut c, &["n2", "n3"], 600, |c| c.leader().is_some());
    let l = c.leader().unwrap();
    write(&mut c, &l, 3);
    run(&mut c, 20);
}

#[test]
fn an_answer_not_told_apart_from_the_current_process_would_lose_a_write() {
    header("repair: the same late answer, with no incarnation to tell it apart");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let opts = Opts {
            max_append_entries: 1,
            ..Opts::default()
        };
        let mut c = cluster(&["n1", "n2", "n3"], opts, 5);
        let x = late_answer_after_repair(&mut c, true);
        assert!(
            acked(&c, x),
            "n1 counted the late answer and acknowledged X"
        );
        run_until(&mut c, &["n2", "n3"], 600, |c| c.leader().is_some());
        let l = c.leader().unwrap();
        write(&mut c, &l, 3);
        run(&mut c, 20);
    }));
    let msg = r.expect_err("the checker must object");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("VIOLATION"), "{msg}");
}

/// Writes while n3 is cut off, enough for the leader to snapshot past n3's
/// log; then the cut heals. Returns how many snapshots the leader sent and
/// checks that n3 caught up.
fn catch_up_after_a_snapshot(catchup_entries: u64) -> u64 {
    let opts = Opts {
        snapshot_every: 10,
        catchup_entries,
        ..Opts::default()
    };
    let mut c = cluster(&["n1", "n2", "n3"], opts, 11);
    elect(&mut c, "n1");
    run(&mut c, 5);
    c.isolate("n3");
    for _ in 0..4 {
        write(&mut c, "n1", 3);
        run(&mut c, 3);
    }
    let snap = c.raft("n1").snapshot_meta().index;
    assert!(
        snap > c.raft("n3").last_index(),
        "the leader's snapshot ({snap}) is past n3's log"
    );
    c.heal();
    run(&mut c, 100);
    assert_eq!(c.nodes["n3"].sm.applied, c.nodes["n1"].sm.applied);
    c.stats.snapshots_sent
}

/// A follower just behind the leader's snapshot point gets the entries it
/// lacks from the leader's catch-up tail, not the whole snapshot; without a
/// tail the same cut costs a snapshot.
#[test]
fn a_follower_just_behind_the_snapshot_point_catches_up_from_the_tail() {
    header("catch-up tail: entries instead of a snapshot");
    assert_eq!(catch_up_after_a_snapshot(20), 0, "caught up from the tail");
    header("no catch-up tail: a snapshot");
    assert!(catch_up_after_a_snapshot(0) >= 1, "a snapshot was sent");
}
