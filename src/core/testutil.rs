//! Builders for the core's unit tests (compiled only under `cfg(test)`).
//!
//! Why: each unit test drives one `RaftNode` by hand (step a message, take a
//! `Ready`, report persistence) and checks the exact effect; these helpers build the
//! nodes and messages so that a test reads as the rule it pins. Nothing here is
//! used outside tests.

use super::message::{Envelope, Message};
use super::raft::{RaftConfig, RaftNode, Ready};
use super::types::{Entry, EntryPayload, HardState, Member, Membership, SnapshotMeta};
use bytes::Bytes;

/// A membership of `voters` and `learners` with made-up addresses.
pub fn members(voters: &[&str], learners: &[&str]) -> Membership {
    let mut m = Membership::default();
    for (ids, voter) in [(voters, true), (learners, false)] {
        for id in ids {
            let member = Member {
                grpc_addr: format!("{id}:grpc"),
                http_addr: format!("{id}:http"),
                voter,
            };
            m.members.insert(id.to_string(), member);
        }
    }
    m
}

/// Entry 1 (term 1) carries `m`; entry `i + 2` has term `terms[i]` and a command.
pub fn log_of(m: &Membership, terms: &[u64]) -> Vec<Entry> {
    let mut out = vec![Entry {
        index: 1,
        term: 1,
        payload: EntryPayload::Membership(m.clone()),
    }];
    for (i, t) in terms.iter().enumerate() {
        out.push(command(i as u64 + 2, *t));
    }
    out
}

pub fn command(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        payload: EntryPayload::Command(Bytes::from(format!("cmd{index}@{term}"))),
    }
}

/// A node recovered from `entries` (durable) with hard state `(term, vote, commit)`.
pub fn node(id: &str, entries: Vec<Entry>, term: u64, vote: Option<&str>, commit: u64) -> RaftNode {
    let hs = HardState {
        term,
        vote: vote.map(str::to_string),
        commit,
    };
    RaftNode::new(RaftConfig::new(id), hs, SnapshotMeta::default(), entries, 7)
}

/// A voter of `voters` (all booted from the same membership entry) at term 1.
pub fn booted(id: &str, voters: &[&str]) -> RaftNode {
    node(id, log_of(&members(voters, &[]), &[]), 1, None, 1)
}

pub fn env(from: &str, to: &str, term: u64, msg: Message) -> Envelope {
    Envelope {
        from: from.into(),
        to: to.into(),
        term,
        msg,
    }
}

pub fn vote_req(from: &str, to: &str, term: u64, last_index: u64, last_term: u64) -> Envelope {
    let msg = Message::Vote {
        last_log_index: last_index,
        last_log_term: last_term,
        transfer: false,
    };
    env(from, to, term, msg)
}

pub fn append_ok(from: &str, to: &str, term: u64, index: u64) -> Envelope {
    let msg = Message::AppendResp {
        success: true,
        index,
        hint_index: 0,
        hint_term: 0,
        repairing: false,
        incarnation: 0,
    };
    env(from, to, term, msg)
}

/// Take the `Ready` and report its entries durable (what a driver does after sync).
pub fn persist(n: &mut RaftNode) -> Ready {
    let rd = n.ready();
    if let Some(last) = rd.entries.last() {
        n.on_persisted(last.index, last.term);
    }
    rd
}

/// Messages of `rd` to `to`.
pub fn to<'a>(rd: &'a Ready, to: &str) -> Vec<&'a Message> {
    rd.messages
        .iter()
        .filter(|e| e.to == to)
        .map(|e| &e.msg)
        .collect()
}

/// `id` (first of `voters`) wins term 2 with the others' votes, and its no-op
/// (index 2) is durable on itself and on every other voter: commit 2.
pub fn leader(voters: &[&str]) -> RaftNode {
    let id = voters[0];
    let mut n = booted(id, voters);
    n.campaign(false);
    persist(&mut n);
    for v in &voters[1..] {
        n.step(env(v, id, 2, Message::VoteResp { granted: true }));
    }
    assert!(n.is_leader());
    persist(&mut n);
    for v in &voters[1..] {
        n.step(append_ok(v, id, 2, 2));
    }
    persist(&mut n);
    assert_eq!(n.commit_index(), 2);
    n
}

pub fn pre_vote(last_index: u64, last_term: u64) -> Message {
    Message::PreVote {
        last_log_index: last_index,
        last_log_term: last_term,
    }
}
