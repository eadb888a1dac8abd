//! Per-follower replication progress, kept only by a leader (data replication
//! manager state).
//!
//! - `Probe`: one append in flight at a time until the follower's match is found.
//! - `Replicate`: appends are pipelined, bounded by inflight messages and bytes.
//! - `Snapshot`: the follower needs a compacted prefix; nothing else is sent until it
//!   acknowledges the snapshot (or the attempt times out and we probe again).

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    Probe,
    Replicate,
    Snapshot { index: u64, sent_tick: u64 },
}

#[derive(Clone, Debug)]
pub struct Progress {
    pub match_index: u64,
    pub next_index: u64,
    pub state: ProgressState,
    /// In `Probe`, an append was sent and no answer came yet.
    pub probe_sent: bool,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Tick of the last message received from this peer.
    pub last_heard_tick: u64,
    /// The commit index last sent to this peer in an append.
    pub commit_sent: u64,
    /// The follower said it is repairing (see `repair`): not counted.
    pub repairing: bool,
    /// The largest incarnation heard from the follower; answers of a smaller one
    /// come from an earlier process and are ignored (see `repair`).
    pub incarnation: u64,
    /// The follower's disk, as its last heartbeat answer said.
    pub disk: super::DiskState,
    /// `(last index, bytes)` per append in flight (Replicate state).
    inflight: VecDeque<(u64, usize)>,
    inflight_bytes: usize,
}

impl Progress {
    pub fn new(next_index: u64) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            recent_active: true,
            last_heard_tick: 0,
            commit_sent: 0,
            repairing: false,
            incarnation: 0,
            disk: super::DiskState::Healthy,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
        }
    }

    pub fn become_probe(&mut self) {
        if let ProgressState::Snapshot { index, .. } = self.state {
            self.next_index = self.next_index.max(index + 1).max(self.match_index + 1);
        } else {
            self.next_index = self.match_index + 1;
        }
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.clear_inflight();
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.clear_inflight();
    }

    pub fn become_snapshot(&mut self, index: u64, tick: u64) {
        self.state = ProgressState::Snapshot {
            index,
            sent_tick: tick,
        };
        self.clear_inflight();
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// May another append be sent now?
    pub fn can_send(&self, max_msgs: usize, max_bytes: usize) -> bool {
        match self.state {
            ProgressState::Probe => !self.probe_sent,
            ProgressState::Replicate => {
                self.inflight.len() < max_msgs && self.inflight_bytes < max_bytes
            }
            ProgressState::Snapshot { .. } => false,
        }
    }

    /// Forget the oldest append in flight (its reply may never come), making room
    /// for one more.
    pub fn free_first_inflight(&mut self) {
        if let Some((_, bytes)) = self.inflight.pop_front() {
            self.inflight_bytes -= bytes;
        }
    }

    /// Record an append carrying entries up to `last` (of `bytes` bytes).
    pub fn sent(&mut self, last: u64, bytes: usize) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                if last >= self.next_index {
                    self.next_index = last + 1;
                    self.inflight.push_back((last, bytes));
                    self.inflight_bytes += bytes;
                }
            }
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// The follower matches the leader up to `index`. Returns whether it advanced.
    pub fn acked(&mut self, index: u64) -> bool {
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
        self.probe_sent = false;
        if index > self.match_index {
            self.match_index = index;
            self.next_index = self.next_index.max(index + 1);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_sends_one_append_until_answered() {
        let mut p = Progress::new(5);
        assert!(p.can_send(8, 1 << 20));
        p.sent(6, 10);
        assert!(!p.can_send(8, 1 << 20));
        assert!(!p.acked(0), "an answer below match advances nothing");
        assert!(p.can_send(8, 1 << 20), "but it frees the probe");
    }

    #[test]
    fn replicate_pipelines_within_the_message_and_byte_bounds() {
        let mut p = Progress::new(1);
        p.become_replicate();
        p.sent(2, 100);
        p.sent(4, 100);
        assert!(!p.can_send(2, 1 << 20), "two messages in flight");
        assert!(!p.can_send(8, 200), "200 bytes in flight");
        assert_eq!(p.next_index, 5);
        assert!(p.acked(2));
        assert!(p.can_send(2, 200));
        assert_eq!((p.match_index, p.next_index), (2, 5));
        p.free_first_inflight();
        assert!(p.can_send(1, 1));
    }

    #[test]
    fn a_stale_ack_does_not_move_match_back() {
        let mut p = Progress::new(1);
        p.become_replicate();
        assert!(p.acked(7));
        assert!(!p.acked(3));
        assert_eq!(p.match_index, 7);
    }

    #[test]
    fn probing_after_a_snapshot_resumes_past_it() {
        let mut p = Progress::new(3);
        p.become_snapshot(40, 0);
        assert!(!p.can_send(8, 1 << 20), "nothing while the snapshot is out");
        p.become_probe();
        assert_eq!(p.next_index, 41);
        p.match_index = 50;
        p.become_probe();
        assert_eq!(p.next_index, 51);
    }
}
