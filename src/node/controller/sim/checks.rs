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
            let failed = match p.rx.try_recv() {
                Ok(Ok(res)) => {
                    let r = (res.index, res.term, res.offset, res.committed);
                    self.note((&p.ask.msg, r));
                    self.check_acked(&p.ask, &res);
                    self.acked.push(Acked {
                        msg: p.ask.msg,
                        res,
                    });
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(oneshot::error::TryRecvError::Empty) => {
                    waiting.push(p);
                    continue;
                }
                // The node died with the write: no answer is no promise.
                Err(oneshot::error::TryRecvError::Closed) => "closed".into(),
            };
            self.note((&p.ask.msg, failed));
            if p.ask.keyed && p.ask.tries < MAX_TRIES {
                self.retry.push(p.ask);
            }
        }
        self.pending = waiting;
    }

    /// A success must be true: committed when `w` >= majority; durable on as
    /// many disks as it reports acks when committed (at least a majority), on
    /// the leader's at least when answered early; acks >= `w` unless it is a
    /// duplicate (a key applied before answers at once with its first write's
    /// acks, whatever `w` the retry asks).
    pub(super) fn check_acked(&self, p: &Ask, res: &WriteResult) {
        let seed = self.seed;
        let need = if res.committed {
            res.acks.max(self.quorum())
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
        let (msg, w) = (&p.msg, p.w);
        assert!(
            res.committed || w < self.quorum(),
            "seed {seed}: write {msg} with w={w} answered {res:?} before it committed{}",
            rerun(seed)
        );
        assert!(
            holding >= need && (res.acks >= w || res.duplicate),
            "seed {seed}: write {msg} answered {res:?} (w={w}) but durable on {holding} disks, {need} needed{}",
            rerun(seed)
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
                    self.check_acked(&p.ask, &res);
                    let index = res.index;
                    self.acked.push(Acked {
                        msg: p.ask.msg,
                        res,
                    });
                    return Some(index);
                }
                Err(oneshot::error::TryRecvError::Empty) => return None,
                _ => *last = None,
            }
        }
        let leader = self.leader()?;
        // Keyed: a first try that failed but landed is not appended twice.
        let ask = Ask {
            msg: format!("s{}-final", self.seed),
            concern: WriteConcern::Majority,
            w: self.quorum(),
            keyed: true,
            timeout_ms: None,
            tries: 1,
        };
        let rx = self.write(&leader, &ask);
        *last = Some(Pending { ask, rx });
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
        let mut seen = BTreeSet::new();
        for (offset, m) in first {
            assert!(
                seen.insert(m.clone()),
                "seed {seed}: {m:?} appended twice (again at offset {offset}){}",
                rerun(seed)
            );
        }
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
