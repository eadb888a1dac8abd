//! `step`: one incoming message. Term rules first (§5.1), then dispatch to the
//! manager that owns the message.
//!
//! - A higher term makes us a follower, except: pre-votes (and granted pre-vote
//!   replies) never change terms, and a vote request inside a leader lease is
//!   ignored unless a leadership transfer asked for it.
//! - A lower term is ignored, but a stale leader's append or heartbeat gets a reply
//!   carrying our term so it steps down, and a stale pre-vote gets a refusal.

use super::message::{Envelope, Message};
use super::raft::{RaftNode, Reason, Role};

impl RaftNode {
    /// Handle one message from a peer. Never panics on peer input.
    pub fn step(&mut self, env: Envelope) {
        if env.to != self.cfg.id || env.from == self.cfg.id {
            return;
        }
        if env.term > self.term && !self.accept_higher_term(&env) {
            return;
        }
        if env.term < self.term {
            self.on_stale(&env);
            return;
        }
        self.dispatch(env);
        self.maybe_end_repair();
    }

    /// Apply the higher-term rule; false when the message must be dropped.
    fn accept_higher_term(&mut self, env: &Envelope) -> bool {
        match &env.msg {
            Message::PreVote { .. } => true,
            Message::PreVoteResp { granted: true } => true,
            Message::Vote { transfer, .. } if self.in_lease() && !transfer => false,
            Message::Append { .. } | Message::Heartbeat { .. } | Message::Snapshot { .. } => {
                self.become_follower(
                    env.term,
                    Some(env.from.clone()),
                    Reason::HigherTermFromLeader,
                );
                true
            }
            _ => {
                self.become_follower(env.term, None, Reason::HigherTerm);
                true
            }
        }
    }

    fn on_stale(&mut self, env: &Envelope) {
        match &env.msg {
            Message::Append { .. } | Message::Heartbeat { .. } | Message::Snapshot { .. } => {
                let resp = Message::AppendResp {
                    success: false,
                    index: 0,
                    hint_index: 0,
                    hint_term: 0,
                    repairing: self.repair.is_some(),
                    incarnation: self.cfg.incarnation,
                };
                self.send(&env.from, resp);
            }
            Message::PreVote { .. } => {
                self.send(&env.from, Message::PreVoteResp { granted: false });
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, env: Envelope) {
        let from = env.from;
        match env.msg {
            Message::PreVote {
                last_log_index,
                last_log_term,
            } => self.on_pre_vote(&from, env.term, last_log_index, last_log_term),
            Message::PreVoteResp { granted } => {
                // A granted pre-vote carries term + 1; a refusal at our term counts too.
                let pre_term = env.term == self.term + 1 || env.term == self.term;
                if pre_term {
                    self.on_vote_resp(&from, granted, true);
                }
            }
            Message::Vote {
                last_log_index,
                last_log_term,
                ..
            } => self.on_vote(&from, last_log_index, last_log_term),
            Message::VoteResp { granted } => self.on_vote_resp(&from, granted, false),
            Message::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.follow(&from);
                self.on_append(&from, prev_index, prev_term, &entries, commit);
            }
            Message::AppendResp {
                success,
                index,
                hint_index,
                hint_term,
                repairing,
                incarnation,
            } => {
                if self.note_peer_incarnation(&from, incarnation) {
                    self.on_append_resp(&from, success, index, hint_index, hint_term, repairing)
                }
            }
            Message::Heartbeat { commit, ctx } => {
                self.follow(&from);
                self.on_heartbeat(&from, commit, ctx);
            }
            Message::HeartbeatResp {
                ctx,
                repairing,
                incarnation,
                disk,
            } => {
                if self.note_peer_incarnation(&from, incarnation) {
                    self.on_heartbeat_resp(&from, ctx, repairing, disk)
                }
            }
            Message::Snapshot { snapshot } => {
                self.follow(&from);
                self.on_snapshot(&from, snapshot);
            }
            Message::TimeoutNow => self.on_timeout_now(),
        }
    }

    /// A message from the leader of our term: we are its follower.
    fn follow(&mut self, leader: &str) {
        if self.role() != Role::Follower || self.leader().map(String::as_str) != Some(leader) {
            self.become_follower(self.term, Some(leader.to_string()), Reason::LeaderOfTerm);
        }
        self.election_elapsed = 0;
    }
}
