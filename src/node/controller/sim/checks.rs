//! What the seeded simulation (`sim`) checks: during the run (one leader per
//! term, committed entries the same everywhere, every success durable where
//! it says), and after the heal (convergence, every committed write in place).

use super::*;

impl Sim {
    pub(super) fn check_leaders(&mut self) {
        for (id, n) in &self.c.nodes {
            if !n.raft().is_leader() {
                continue;
            }
            let term = n.raft().term();
            let first = self.leaders.entry(term).or_insert_with(|| id.clone());
            assert_eq!(
                first,
                id,
                "seed {}: two leaders in term {term}{}",
                self.seed,
                rerun(self.seed)
            );
        }
    }

    /// No two nodes ever hold different entries at an index one of them committed.
    pub(super) fn check_committed(&mut self) {
        for (id, n) in &self.c.nodes {
            let r = n.raft();
            let from = self.committed.keys().next_back().map_or(1, |i| i + 1);
            for (i, e) in self.committed.range(..=r.commit_index()) {
                let mine = r.entry(*i);
                assert!(
                    mine.is_none_or(|m| m == e),
                    "seed {}: {id} holds {mine:?} at committed index {i}, not {e:?}{}",
                    self.seed,
                    rerun(self.seed)
                );
            }
            for i in from..=r.commit_index() {
                if let Some(e) = r.entry(i) {
                    self.committed.insert(i, e.clone());
                }
            }
        }
    }

    /// Take the answers given so far; a success must be durable where it says.
    pub(super) fn poll_writes(&mut self) {
        let mut waiting = Vec::new();
        for mut p in std::mem::take(&mut self.pending) {
            match p.rx.try_recv() {
                Ok(Ok(res)) => {
                    self.note((&p.msg, res.index, res.term, res.offset, res.committed));
                    self.check_acked(&p, &res);
                    self.acked.push(Acked { msg: p.msg, res });
                }
                Ok(Err(e)) => self.note((&p.msg, e.to_string())),
                Err(oneshot::error::TryRecvError::Empty) => waiting.push(p),
                // The node died with the write: no answer is no promise.
                Err(oneshot::error::TryRecvError::Closed) => self.note(&p.msg),
            }
        }
        self.pending = waiting;
    }

    pub(super) fn check_acked(&self, p: &Pending, res: &WriteResult) {
        let need = if res.committed {
            p.w.max(self.quorum())
        } else {
            1
        };
        let holding = self
            .disks()
            .filter(|d| {
                d.durable()
                    .entries
                    .iter()
                    .any(|e| e.index == res.index && e.term == res.term)
            })
            .count();
        assert!(
            res.committed || p.w < self.quorum(),
            "seed {}: write {} with w={} answered {res:?} before it committed{}",
            self.seed,
            p.msg,
            p.w,
            rerun(self.seed)
        );
        assert!(
            holding >= need && res.acks >= p.w,
            "seed {}: write {} answered {res:?} (w={}) but durable on {holding} disks, {need} needed{}",
            self.seed,
            p.msg,
            p.w,
            rerun(self.seed)
        );
    }

    pub(super) fn disks(&self) -> impl Iterator<Item = &Disk> {
        self.c
            .nodes
            .values()
            .map(|n| &n.disk)
            .chain(self.down.values())
    }

    /// Heal everything, restart every node, and run fairly until a leader
    /// commits a final write and every node has applied it.
    pub(super) async fn converge(&mut self) {
        self.cut.clear();
        self.slow.clear();
        for id in self.down.keys().cloned().collect::<Vec<_>>() {
            self.restart(&id);
        }
        for n in self.c.nodes.values() {
            n.disk.refuse_syncs(0);
        }
        let mut last: Option<Pending> = None;
        let mut final_index = None;
        for _ in 0..LIVENESS_ROUNDS {
            for env in std::mem::take(&mut self.c.net) {
                self.deliver(env);
            }
            for n in self.c.nodes.values_mut() {
                while n.persisting() {
                    finish(n).await;
                }
            }
            tokio::time::advance(TICK).await;
            for n in self.c.nodes.values_mut() {
                n.tick();
            }
            self.after_step();
            if final_index.is_none() {
                final_index = self.final_write(&mut last);
            }
            if final_index.is_some_and(|i| self.converged(i)) {
                return;
            }
        }
        panic!(
            "seed {}: no convergence within {LIVENESS_ROUNDS} rounds after healing \
             (leader {:?}, commit indexes {:?}){}",
            self.seed,
            self.leader(),
            self.commit_indexes(),
            rerun(self.seed)
        );
    }

    /// Keep a final majority write going to the leader; its index once acknowledged.
    pub(super) fn final_write(&mut self, last: &mut Option<Pending>) -> Option<u64> {
        if let Some(p) = last.as_mut() {
            match p.rx.try_recv() {
                Ok(Ok(res)) => {
                    let p = last.take().expect("pending");
                    self.check_acked(&p, &res);
                    let index = res.index;
                    self.acked.push(Acked { msg: p.msg, res });
                    return Some(index);
                }
                Err(oneshot::error::TryRecvError::Empty) => return None,
                _ => *last = None,
            }
        }
        let leader = self.leader()?;
        let msg = format!("s{}-final", self.seed);
        let rx = self.write(&leader, &msg, WriteConcern::Majority);
        *last = Some(Pending {
            msg,
            w: self.quorum(),
            rx,
        });
        None
    }

    pub(super) fn converged(&self, index: u64) -> bool {
        let commits = self.commit_indexes();
        let top = commits.values().max().copied().unwrap_or(0);
        self.c.nodes.len() == self.ids.len()
            && top >= index
            && self
                .c
                .nodes
                .values()
                .all(|n| n.raft().commit_index() == top && n.applied_index() == top)
    }

    pub(super) fn commit_indexes(&self) -> BTreeMap<String, u64> {
        let c = self.c.nodes.iter();
        c.map(|(id, n)| (id.clone(), n.raft().commit_index()))
            .collect()
    }

    /// Every write acknowledged as committed is everywhere, where it was said
    /// to be; the state machines agree.
    pub(super) fn check_final(&mut self) {
        let seed = self.seed;
        let mut machines = BTreeMap::new();
        for (id, n) in &self.c.nodes {
            let msgs = n.ctl.sm.read(0, usize::MAX).expect("in-memory read");
            for a in self.acked.iter().filter(|a| a.res.committed) {
                let e = n.raft().entry(a.res.index);
                let same = e.is_some_and(|e| e.term == a.res.term && carries(e, &a.msg));
                assert!(
                    same,
                    "seed {seed}: acknowledged write {a:?} is not at its index on {id} (holds {e:?}){}",
                    rerun(seed)
                );
                let at = msgs.iter().find(|(o, _)| *o == a.res.offset);
                assert!(
                    at.is_some_and(|(_, m)| m[..] == *a.msg.as_bytes()),
                    "seed {seed}: acknowledged write {a:?} is not at its offset on {id} (holds {at:?}){}",
                    rerun(seed)
                );
            }
            machines.insert(id.clone(), msgs);
        }
        let first = machines.values().next().expect("nodes");
        for (id, m) in &machines {
            assert!(
                m == first,
                "seed {seed}: {id}'s messages differ{}",
                rerun(seed)
            );
        }
        let summary: Vec<(String, u64, u64)> = self
            .c
            .nodes
            .iter()
            .map(|(id, n)| (id.clone(), n.raft().commit_index(), n.raft().term()))
            .collect();
        let acked: Vec<(u64, u64, u64)> = self
            .acked
            .iter()
            .map(|a| (a.res.index, a.res.term, a.res.offset))
            .collect();
        self.note((summary, acked, first.len()));
    }
}
