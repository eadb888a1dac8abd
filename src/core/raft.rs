//! `RaftNode`: the public face of the core. State, construction, the event entry
//! points (`tick`, `step`, `propose`, ...) and `Ready`, the batch of effects the
//! driver carries out: persist the snapshot, the entries and then the hard state,
//! then send the messages, then apply the committed entries.

use super::log::RaftLog;
use super::message::{Envelope, Message};
use super::progress::ProgressState;
use super::role::RoleState;
use super::types::*;
use bytes::Bytes;
use rand::{rngs::SmallRng, Rng, SeedableRng};

/// The election timeout's backoff stops at `2^BACKOFF_MAX_SHIFT` times the
/// configured range (4×: 4-8 s with the default 1-2 s), so a node whose
/// candidacies keep failing still tries again within a bounded time, and a
/// cluster that lost its quorum for a while (every voter backed off) elects
/// again within a few seconds of getting it back.
pub(crate) const BACKOFF_MAX_SHIFT: u32 = 2;

/// Core tuning, in ticks (the driver decides how long a tick is).
#[derive(Clone, Debug)]
pub struct RaftConfig {
    pub id: NodeId,
    pub heartbeat_ticks: u64,
    pub election_ticks_min: u64,
    pub election_ticks_max: u64,
    /// Entries and bytes per append message.
    pub max_append_entries: usize,
    pub max_append_bytes: usize,
    /// Pipelining bounds per follower.
    pub max_inflight_msgs: usize,
    pub max_inflight_bytes: usize,
    /// Ask peers before campaigning (keeps a returning node from deposing a leader).
    pub pre_vote: bool,
    /// A leader not hearing from a quorum within an election timeout steps down.
    pub check_quorum: bool,
    /// Ticks a snapshot may stay unacknowledged before the leader probes again
    /// (and so sends it again). The transfer retries and resumes on its own; this
    /// is for a snapshot that was lost, and must exceed a large snapshot's
    /// transfer plus install (a 1.4 GB one on a loaded machine took over 10 s, and
    /// a retry then sent it all again). Nodes set 30 s worth.
    pub snapshot_retry_ticks: u64,
    /// The catch-up tail (`log`): entries a snapshot covers that stay in
    /// memory, so a follower just behind the snapshot point gets entries, not
    /// the whole snapshot. At most this many, and about this many bytes. 0 in
    /// tests that check snapshot sending; nodes keep up to 5,000 / 8 MiB
    /// (`node::runtime`).
    pub catchup_entries: u64,
    pub catchup_bytes: usize,
    /// This process start of the node, larger at every start (the driver keeps
    /// the count: `node::incarnation`). Sent in every append and heartbeat
    /// answer, so that a leader can tell a late answer of an earlier process
    /// from the current one's (see `repair`). 0 in tests that never restart.
    pub incarnation: u64,
}

impl RaftConfig {
    pub fn new(id: impl Into<NodeId>) -> Self {
        RaftConfig {
            id: id.into(),
            heartbeat_ticks: 2,
            election_ticks_min: 20,
            election_ticks_max: 40,
            max_append_entries: 4096,
            max_append_bytes: 1 << 20,
            max_inflight_msgs: 64,
            max_inflight_bytes: 32 << 20,
            pre_vote: true,
            check_quorum: true,
            snapshot_retry_ticks: 200,
            catchup_entries: 0,
            catchup_bytes: 0,
            incarnation: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate | Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// Why a proposal or request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader")]
    NotLeader { leader: Option<NodeId> },
    #[error("leadership transfer in progress")]
    Transferring,
    #[error("a membership change is already in progress")]
    ChangeInProgress,
    #[error("invalid membership change: {0}")]
    InvalidChange(String),
    #[error("leader has not committed an entry in its term yet")]
    NotReady,
}

/// A ReadIndex round completed: reads tagged `ctx` may be served once the state
/// machine has applied `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: u64,
}

/// Role, term or leader changed, with the reason (logged by the driver).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleChange {
    pub role: Role,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub reason: Reason,
}

/// Why a role change happened. The node counts some of them in its metrics by
/// matching the variant (never the text); [`Reason::as_str`] is what the log
/// says, so rewording it changes no count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A node's election timer ran out and it starts a pre-vote round.
    PreVoteTimeout,
    /// A node's election timer ran out (or its pre-vote won) and it campaigns.
    VoteTimeout,
    /// A node campaigns because the leader handed leadership over to it.
    TransferCampaign,
    /// A candidate won and leads.
    WonElection,
    /// A candidate saw it cannot win this term.
    ElectionLost,
    /// The leader started handing leadership over.
    TransferStarted,
    /// A hand-over did not finish in time; the leader goes on leading.
    TransferTimedOut,
    /// A repairing node caught up and votes again.
    RepairComplete,
    /// A leader lost contact with a majority and steps down.
    CheckQuorum,
    /// This node left the configuration.
    Removed,
    /// A leader of a higher term spoke to us.
    HigherTermFromLeader,
    /// A higher term was seen (no leader known yet).
    HigherTerm,
    /// A leader of our own term spoke to us.
    LeaderOfTerm,
}

impl Reason {
    /// The reason as logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PreVoteTimeout => "election timeout: pre-vote",
            Reason::VoteTimeout => "election timeout",
            Reason::TransferCampaign => "leadership transfer",
            Reason::WonElection => "won election",
            Reason::ElectionLost => "election lost",
            Reason::TransferStarted => "leadership transfer started",
            Reason::TransferTimedOut => "leadership transfer timed out",
            Reason::RepairComplete => "repair complete: voting again",
            Reason::CheckQuorum => "check-quorum: lost contact with a majority",
            Reason::Removed => "removed from the configuration",
            Reason::HigherTermFromLeader => "higher term from leader",
            Reason::HigherTerm => "higher term seen",
            Reason::LeaderOfTerm => "leader of this term",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Effects for the driver, in the order it must carry them out.
#[derive(Debug, Default)]
pub struct Ready {
    /// 3. Persist when set, after the snapshot and the entries and made durable by
    ///    the same sync, before any message leaves. Its `commit` may point into
    ///    `entries`, and a store that crashes keeps only a prefix of the calls made
    ///    since its last sync (`LogStore`): a hard state written before the entries
    ///    could survive without them and commit a stale suffix on restart.
    pub hard_state: Option<HardState>,
    /// 1. Install this snapshot (storage and state machine) first.
    pub snapshot: Option<Snapshot>,
    /// 2. Append these; `entries[0].index` may cut off a suffix (see `LogStore`).
    ///    Once they are durable, call `on_persisted(last.index, last.term)`.
    pub entries: Vec<Entry>,
    /// 4. Send once 1-3 are durable. `Snapshot` messages need their data attached.
    pub messages: Vec<Envelope>,
    /// 5. Apply in order.
    pub committed: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    pub role_changes: Vec<RoleChange>,
}

pub struct RaftNode {
    pub(crate) cfg: RaftConfig,
    pub(crate) rng: SmallRng,
    pub(crate) log: RaftLog,
    pub(crate) term: u64,
    pub(crate) vote: Option<NodeId>,
    /// The role and the state only it owns (see `role`).
    pub(crate) state: RoleState,
    pub(crate) membership: Membership,
    /// Index of the entry that carried `membership` (0 when from no entry).
    pub(crate) membership_index: u64,
    /// Logical clock, only for measuring (never compared with wall time).
    pub(crate) now: u64,
    pub(crate) election_elapsed: u64,
    pub(crate) randomized_timeout: u64,
    /// Vote rounds (candidacies, not pre-votes) that ran out since this node
    /// last had a leader (heard one or was one). From the second on, each next
    /// timeout is drawn from a range twice as long (`BACKOFF_MAX_SHIFT` caps
    /// it): see [`RaftNode::reset_election_timeout`].
    pub(crate) missed_elections: u32,
    /// Our disk: unless healthy, wait longer before campaigning (a node with
    /// a healthy disk should win instead).
    pub(crate) disk: super::DiskState,
    /// Repairing after disk damage (see `repair`): no votes, not counted.
    pub(crate) repair: Option<super::repair::Repair>,
    // Outputs.
    pub(crate) msgs: Vec<Envelope>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) role_changes: Vec<RoleChange>,
    last_hard_state: HardState,
}

impl RaftNode {
    /// A node from what storage recovered. `seed` drives the election timeouts.
    pub fn new(
        cfg: RaftConfig,
        hard_state: HardState,
        snapshot: SnapshotMeta,
        entries: Vec<Entry>,
        seed: u64,
    ) -> Self {
        let log = RaftLog::new(snapshot, entries, hard_state.commit);
        let (membership_index, membership) = log.membership();
        let mut node = RaftNode {
            rng: SmallRng::seed_from_u64(seed),
            log,
            term: hard_state.term,
            vote: hard_state.vote.clone(),
            state: RoleState::Follower { leader: None },
            membership,
            membership_index,
            now: 0,
            election_elapsed: 0,
            randomized_timeout: 0,
            missed_elections: 0,
            disk: super::DiskState::Healthy,
            repair: None,
            msgs: Vec::new(),
            read_states: Vec::new(),
            role_changes: Vec::new(),
            last_hard_state: hard_state,
            cfg,
        };
        node.reset_election_timeout();
        node
    }

    // ---- queries -------------------------------------------------------------

    pub fn id(&self) -> &NodeId {
        &self.cfg.id
    }
    pub fn term(&self) -> u64 {
        self.term
    }
    pub fn role(&self) -> Role {
        self.state.role()
    }
    /// The leader of our term as far as we know: the one we follow, or us.
    pub fn leader(&self) -> Option<&NodeId> {
        match &self.state {
            RoleState::Follower { leader } => leader.as_ref(),
            RoleState::Leader(_) => Some(&self.cfg.id),
            RoleState::PreCandidate { .. } | RoleState::Candidate { .. } => None,
        }
    }
    pub fn is_leader(&self) -> bool {
        matches!(self.state, RoleState::Leader(_))
    }
    pub fn commit_index(&self) -> u64 {
        self.log.committed
    }
    pub fn applied_index(&self) -> u64 {
        self.log.applied
    }
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }
    pub fn last_term(&self) -> u64 {
        self.log.last_term()
    }
    pub fn persisted_index(&self) -> u64 {
        self.log.persisted
    }
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.log.snapshot
    }
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
    pub fn is_voter(&self) -> bool {
        self.membership.is_voter(&self.cfg.id)
    }
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote.clone(),
            commit: self.log.committed,
        }
    }
    /// Say how this node's disk is doing. Unless healthy, the node waits three
    /// election timeouts before campaigning, and its heartbeat answers say so.
    pub fn set_disk(&mut self, disk: super::DiskState) {
        self.disk = disk;
    }
    /// Is a leadership transfer in progress?
    pub fn transferring(&self) -> bool {
        self.state
            .as_leader()
            .is_some_and(|l| l.transferee.is_some())
    }
    /// Leader: is some follower being sent a snapshot (not yet acknowledged)?
    pub fn sending_snapshot(&self) -> bool {
        self.state.as_leader().is_some_and(|l| {
            l.progress
                .values()
                .any(|p| matches!(p.state, ProgressState::Snapshot { .. }))
        })
    }
    /// The entry at `index`, if it is in the in-memory log.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        self.log.entry(index)
    }
    /// Term of the entry at `index` if this node still holds it.
    pub fn entry_term(&self, index: u64) -> Option<u64> {
        self.log.term(index)
    }
    /// The leader's view of a follower's match index.
    pub fn match_index(&self, id: &str) -> Option<u64> {
        if id == self.cfg.id {
            return Some(self.log.persisted);
        }
        self.state.progress(id).map(|p| p.match_index)
    }

    /// Write concern: how many voters hold entry `(index, term)` durably, as far as
    /// this leader knows (leader included once its own fsync is done). 0 when not
    /// leader or when the entry was replaced.
    pub fn acks(&self, index: u64, term: u64) -> usize {
        if !self.is_leader() || !self.log.matches(index, term) {
            return 0;
        }
        self.membership
            .voters()
            .filter(|id| self.counted_match(id).is_some_and(|m| m >= index))
            .count()
    }

    // ---- events --------------------------------------------------------------

    /// One logical tick: drives election timeouts and heartbeats.
    pub fn tick(&mut self) {
        self.now += 1;
        if self.is_leader() {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    /// Propose an application command. Returns its `(index, term)`.
    pub fn propose(&mut self, data: Bytes) -> Result<(u64, u64), ProposeError> {
        self.check_can_propose()?;
        Ok(self.append_entry(EntryPayload::Command(data)))
    }

    pub(crate) fn check_can_propose(&self) -> Result<(), ProposeError> {
        let Some(l) = self.state.as_leader() else {
            return Err(ProposeError::NotLeader {
                leader: self.leader().cloned(),
            });
        };
        if l.transferee.is_some() {
            return Err(ProposeError::Transferring);
        }
        Ok(())
    }

    pub(crate) fn append_entry(&mut self, payload: EntryPayload) -> (u64, u64) {
        let index = self.log.last_index() + 1;
        self.log.append(Entry {
            index,
            term: self.term,
            payload,
        });
        if let Some(l) = self.state.as_leader_mut() {
            l.needs_broadcast = true;
        }
        (index, self.term)
    }

    /// Storage made everything up to `(index, term)` durable.
    pub fn on_persisted(&mut self, index: u64, term: u64) {
        if self.log.persisted_to(index, term) && self.is_leader() {
            self.maybe_commit();
        }
        self.maybe_end_repair();
    }

    /// The driver took a snapshot of the state machine at `meta.index`.
    pub fn compact(&mut self, meta: SnapshotMeta) {
        self.log
            .compact(meta, self.cfg.catchup_entries, self.cfg.catchup_bytes);
    }

    pub fn has_ready(&self) -> bool {
        self.state.as_leader().is_some_and(|l| l.needs_broadcast)
            || !self.msgs.is_empty()
            || self.log.has_unstable()
            || self.log.has_committed()
            || self.log.pending_snapshot.is_some()
            || !self.read_states.is_empty()
            || !self.role_changes.is_empty()
            || self.hard_state() != self.last_hard_state
    }

    /// Messages that may leave before the pending `Ready` is durable (see
    /// [`Message::needs_durability`]), taken out of the next `Ready`. Lets the
    /// driver keep heartbeats and appends flowing while an fsync is in progress.
    pub fn take_early_messages(&mut self) -> Vec<Envelope> {
        if self.take_needs_broadcast() {
            self.broadcast_append();
        }
        self.msgs
            .extract_if(.., |m| !m.msg.needs_durability())
            .collect()
    }

    /// Collect every pending effect. See [`Ready`] for the order to carry them out.
    pub fn ready(&mut self) -> Ready {
        if self.take_needs_broadcast() {
            self.broadcast_append();
        }
        let hs = self.hard_state();
        let hard_state = (hs != self.last_hard_state).then(|| {
            self.last_hard_state = hs.clone();
            hs
        });
        Ready {
            hard_state,
            snapshot: self.log.pending_snapshot.take(),
            entries: self.log.take_unstable(),
            messages: std::mem::take(&mut self.msgs),
            committed: self.log.take_committed(),
            read_states: std::mem::take(&mut self.read_states),
            role_changes: std::mem::take(&mut self.role_changes),
        }
    }

    // ---- helpers shared by the managers ----------------------------------------

    /// Leader: were appends due to every follower? Clears the flag.
    fn take_needs_broadcast(&mut self) -> bool {
        self.state
            .as_leader_mut()
            .is_some_and(|l| std::mem::take(&mut l.needs_broadcast))
    }

    /// The term moved on: messages still queued from an older term that claim
    /// durable state (append answers, votes; `Message::needs_durability`) are
    /// dropped. They were made while an earlier `Ready` was being persisted
    /// and would leave only after the next one is durable, by when a leader of
    /// the new term may have truncated the entries an append answer names: the
    /// node would claim entries it never made durable (a `w` below majority
    /// would count a copy that does not exist). Dropping a message is always
    /// safe in Raft; nobody in the new term counts an older term's answer.
    pub(crate) fn drop_stale_answers(&mut self) {
        let term = self.term;
        self.msgs
            .retain(|m| !(m.msg.needs_durability() && m.term < term));
    }

    pub(crate) fn send(&mut self, to: &NodeId, msg: Message) {
        self.send_with_term(to, self.term, msg);
    }

    pub(crate) fn send_with_term(&mut self, to: &NodeId, term: u64, msg: Message) {
        self.msgs.push(Envelope {
            from: self.cfg.id.clone(),
            to: to.clone(),
            term,
            msg,
        });
    }

    /// Other members, sorted (determinism).
    pub(crate) fn peers(&self) -> Vec<NodeId> {
        self.membership
            .members
            .keys()
            .filter(|id| **id != self.cfg.id)
            .cloned()
            .collect()
    }

    /// Draw the next election timeout from `[min, max)`, scaled by the
    /// backoff: ×1 until a second vote round runs out without a leader, then
    /// ×2, then ×4 (`BACKOFF_MAX_SHIFT`), until a leader is heard again. A
    /// pre-vote that runs out does not count: it costs no fsync, and the first
    /// one of a failover is often refused by a voter still in its leader's
    /// lease.
    ///
    /// Why: a candidacy needs the candidate's fsync of its term and vote and
    /// then each voter's fsync of its vote. When those take longer than the
    /// timeout (slow or loaded disks), every candidate gives up before its
    /// votes arrive and starts a new term that costs the voters another
    /// fsync, forever (seen in CI: term 72 and no leader for 60 s with 800 ms
    /// fsyncs and 0.5-1 s timeouts). Doubling the wait after each failed
    /// attempt outgrows any fixed disk latency within a few terms, and costs
    /// nothing when the first election succeeds.
    pub(crate) fn reset_election_timeout(&mut self) {
        self.election_elapsed = 0;
        let (lo, hi) = (
            self.cfg.election_ticks_min,
            self.cfg
                .election_ticks_max
                .max(self.cfg.election_ticks_min + 1),
        );
        let shift = self
            .missed_elections
            .saturating_sub(1)
            .min(BACKOFF_MAX_SHIFT);
        self.randomized_timeout = self.rng.gen_range(lo..hi) << shift;
    }

    /// A leader is known again (followed, or this node): no backoff. So the
    /// backoff is zero whenever a leader is known.
    pub(crate) fn clear_election_backoff(&mut self) {
        self.missed_elections = 0;
    }

    pub(crate) fn note_role(&mut self, reason: Reason) {
        self.role_changes.push(RoleChange {
            role: self.role(),
            term: self.term,
            leader: self.leader().cloned(),
            reason,
        });
    }

    pub(crate) fn become_follower(&mut self, term: u64, leader: Option<NodeId>, reason: Reason) {
        let changed =
            self.role() != Role::Follower || term != self.term || leader.as_ref() != self.leader();
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.drop_stale_answers();
        }
        if leader.is_some() {
            self.clear_election_backoff();
        }
        self.state = RoleState::Follower { leader };
        self.reset_election_timeout();
        if changed {
            self.note_role(reason);
        }
    }

    /// Membership changed (appended, truncated or restored): adopt the latest.
    pub(crate) fn refresh_membership(&mut self) {
        let (index, m) = self.log.membership();
        if index == self.membership_index && m == self.membership {
            return;
        }
        self.membership = m;
        self.membership_index = index;
        if self.is_leader() {
            self.sync_progress();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testutil::*;

    /// An append answer still queued (its `Ready` not yet taken: the driver
    /// was persisting the one before) when a later term's leader arrives is
    /// dropped: by the time it could leave, that leader may have replaced the
    /// entry it names. Heartbeat answers and the new term's messages stay.
    #[test]
    fn a_queued_answer_of_an_older_term_is_dropped_when_the_term_moves_on() {
        let mut n = booted("n2", &["n1", "n2", "n3"]);
        let append = Message::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![command(2, 2)],
            commit: 1,
        };
        n.step(env("n1", "n2", 2, append));
        assert!(n.msgs.iter().any(|e| e.term == 2
            && matches!(
                e.msg,
                Message::AppendResp {
                    success: true,
                    index: 2,
                    ..
                }
            )));
        // n3 leads term 3 (elected without n2).
        n.step(env("n3", "n2", 3, Message::Heartbeat { commit: 1, ctx: 0 }));
        let rd = n.ready();
        assert!(to(&rd, "n1").is_empty(), "{:?}", rd.messages);
        assert!(
            !rd.messages.is_empty() && rd.messages.iter().all(|e| e.term == 3),
            "the heartbeat is answered in term 3: {:?}",
            rd.messages
        );
    }

    #[test]
    fn a_ready_carries_the_hard_state_only_when_it_changed() {
        let mut n = booted("n2", &["n1", "n2", "n3"]);
        assert_eq!(
            n.ready().hard_state,
            None,
            "recovered state is already durable"
        );
        n.step(env("n1", "n2", 2, Message::Heartbeat { commit: 1, ctx: 0 }));
        let hs = n.ready().hard_state.expect("the new term");
        assert_eq!((hs.term, hs.vote), (2, None));
        assert_eq!(n.ready().hard_state, None, "handed out once");
    }

    #[test]
    fn a_vote_at_the_current_term_alone_is_in_the_ready() {
        // n2 already knows term 3 (durably, without a vote): granting changes only
        // the vote, and that change must reach the disk before the answer leaves.
        let mut n = node(
            "n2",
            log_of(&members(&["n1", "n2", "n3"], &[]), &[]),
            3,
            None,
            1,
        );
        n.step(vote_req("n1", "n2", 3, 1, 1));
        let rd = n.ready();
        let hs = rd.hard_state.clone().expect("the vote must be persisted");
        assert_eq!(
            hs,
            HardState {
                term: 3,
                vote: Some("n1".into()),
                commit: 1
            }
        );
        assert_eq!(to(&rd, "n1"), [&Message::VoteResp { granted: true }]);
    }

    #[test]
    fn early_messages_never_include_answers_that_need_the_fsync() {
        let mut n = booted("n2", &["n1", "n2", "n3"]);
        n.step(vote_req("n1", "n2", 2, 1, 1));
        n.step(env("n1", "n2", 2, Message::Heartbeat { commit: 1, ctx: 5 }));
        let entries = vec![command(2, 2)];
        let append = Message::Append {
            prev_index: 1,
            prev_term: 1,
            entries,
            commit: 1,
        };
        n.step(env("n1", "n2", 2, append));
        let early = n.take_early_messages();
        let early: Vec<_> = early.iter().map(|e| &e.msg).collect();
        assert_eq!(
            early,
            [&Message::HeartbeatResp {
                ctx: 5,
                repairing: false,
                incarnation: 0,
                disk: crate::core::DiskState::Healthy,
            }]
        );
        let rd = n.ready();
        assert_eq!(
            rd.hard_state.as_ref().map(|h| (h.term, h.vote.as_deref())),
            Some((2, Some("n1")))
        );
        assert_eq!(rd.entries, [command(2, 2)]);
        let rest = to(&rd, "n1");
        assert_eq!(rest.len(), 2, "{rest:?}");
        assert_eq!(rest[0], &Message::VoteResp { granted: true });
        assert!(matches!(
            rest[1],
            Message::AppendResp {
                success: true,
                index: 2,
                ..
            }
        ));
    }

    #[test]
    fn a_candidates_requests_wait_for_its_term_and_self_vote() {
        let mut n = booted("n1", &["n1", "n2", "n3"]);
        n.campaign(false);
        assert!(n.take_early_messages().is_empty());
        let rd = n.ready();
        assert_eq!(
            rd.hard_state.map(|h| (h.term, h.vote)),
            Some((2, Some("n1".into())))
        );
        assert_eq!(rd.messages.len(), 2);
        assert!(rd
            .messages
            .iter()
            .all(|e| matches!(e.msg, Message::Vote { .. })));
    }

    #[test]
    fn a_leader_counts_its_own_entry_only_after_on_persisted() {
        let mut n = leader(&["n1", "n2", "n3"]);
        let (index, term) = n.propose(Bytes::from_static(b"x")).unwrap();
        let rd = n.ready();
        assert_eq!(rd.entries.len(), 1);
        assert!(
            !to(&rd, "n2").is_empty(),
            "appends leave before the leader's fsync"
        );
        n.step(append_ok("n2", "n1", term, index));
        assert_eq!(n.match_index("n1"), Some(index - 1));
        assert_eq!(n.acks(index, term), 1, "only n2 holds it durably");
        assert_eq!(n.commit_index(), index - 1);
        n.on_persisted(index, term);
        assert_eq!(n.acks(index, term), 2);
        assert_eq!(n.commit_index(), index);
    }

    #[test]
    fn applying_waits_for_this_nodes_own_fsync() {
        let mut n = booted("n2", &["n1", "n2", "n3"]);
        assert_eq!(n.ready().committed.len(), 1, "the recovered entry 1");
        let append = Message::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![command(2, 2)],
            commit: 2,
        };
        n.step(env("n1", "n2", 2, append));
        let rd = n.ready();
        assert_eq!(n.commit_index(), 2);
        assert!(rd.committed.is_empty(), "committed but not durable here");
        n.on_persisted(2, 2);
        assert_eq!(n.ready().committed, [command(2, 2)]);
    }
}
