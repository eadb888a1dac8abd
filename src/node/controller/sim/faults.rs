//! The steps of the chaos phase (`sim`): each one thing the seed picks.

use super::*;

impl Sim {
    pub(super) fn deliver_one(&mut self) {
        if self.c.net.is_empty() {
            return;
        }
        let env = self.c.net.remove(self.rng.below(self.c.net.len()));
        self.deliver(env);
    }

    /// Deliver `env` unless its destination is down or cut off from its sender.
    pub(super) fn deliver(&mut self, env: Envelope) {
        let cut = self.cut.contains(&(env.from.clone(), env.to.clone()));
        self.note((fingerprint(&env), cut));
        if cut {
            return;
        }
        if let Some(node) = self.c.nodes.get_mut(&env.to) {
            node.deliver(env);
        }
    }

    pub(super) fn drop_one(&mut self) {
        if !self.c.net.is_empty() {
            let env = self.c.net.remove(self.rng.below(self.c.net.len()));
            self.note(fingerprint(&env));
        }
    }

    pub(super) fn duplicate_one(&mut self) {
        if !self.c.net.is_empty() {
            let env = self.c.net[self.rng.below(self.c.net.len())].clone();
            self.c.net.push(env);
        }
    }

    pub(super) async fn tick_one(&mut self) {
        tokio::time::advance(TICK).await;
        if let Some(id) = self.pick_up() {
            self.note(&id);
            self.c.node(&id).tick();
        }
    }

    /// Let a node's job finish (perhaps refused for lack of space).
    pub(super) async fn finish_one(&mut self) {
        let ready: Vec<String> = self
            .c
            .nodes
            .iter()
            .filter(|(id, n)| n.persisting() && !self.slow.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        if ready.is_empty() {
            return;
        }
        let id = ready[self.rng.below(ready.len())].clone();
        let refuse = !self.calm && self.rng.chance(10);
        self.note((&id, refuse));
        let node = self.c.node(&id);
        if refuse {
            node.disk.refuse_syncs(1);
        }
        finish(node).await;
    }

    pub(super) fn toggle_slow(&mut self) {
        let id = self.ids[self.rng.below(self.ids.len())].clone();
        if !self.slow.remove(&id) {
            self.slow.insert(id);
        }
    }

    /// Crash a node, at a point of its persistence the seed picks.
    pub(super) async fn crash_one(&mut self) {
        let Some(id) = self.pick_up() else { return };
        let point = if self.c.nodes[&id].persisting() {
            [CrashPoint::Now, CrashPoint::AfterSync, CrashPoint::MidTurn][self.rng.below(3)]
        } else {
            CrashPoint::Now
        };
        self.note((&id, format!("{point:?}")));
        let node = self.c.node(&id);
        match point {
            CrashPoint::Now => {}
            CrashPoint::AfterSync => drop(finished(node).await),
            CrashPoint::MidTurn => {
                let f = finished(node).await;
                node.ctl
                    .on_event(Event::from(f))
                    .expect("fatal storage error");
            }
        }
        // What the dying turn sent did leave.
        self.collect();
        let old = self.c.nodes.remove(&id).expect("up");
        let disk = old.disk.crash();
        drop(old);
        self.down.insert(id, disk);
    }

    pub(super) fn restart_one(&mut self) {
        let down: Vec<String> = self.down.keys().cloned().collect();
        if down.is_empty() {
            return;
        }
        let id = down[self.rng.below(down.len())].clone();
        self.restart(&id);
    }

    pub(super) fn restart(&mut self, id: &str) {
        let disk = self.down.remove(id).expect("down");
        disk.hold();
        self.starts += 1;
        let seed = self.seed * 1000 + self.starts;
        self.note((id, seed));
        let node = Node::start_seeded(id, disk, seed);
        self.c.nodes.insert(id.to_string(), node);
    }

    /// Cut a random minority off from the rest.
    pub(super) fn partition(&mut self) {
        self.cut.clear();
        let n = self.ids.len();
        let size = 1 + self.rng.below(n / 2);
        let mut side = BTreeSet::new();
        while side.len() < size {
            side.insert(self.ids[self.rng.below(n)].clone());
        }
        for a in &side {
            for b in self.ids.iter().filter(|b| !side.contains(*b)) {
                self.cut.insert((a.clone(), b.clone()));
                self.cut.insert((b.clone(), a.clone()));
            }
        }
        self.note(&side);
    }

    /// A client write with a seeded concern, mostly to the leader; or a
    /// failed keyed write sent again.
    pub(super) fn client_write(&mut self) {
        let leader = self.leader();
        let id = match leader {
            Some(l) if self.rng.chance(80) => l,
            _ => match self.pick_up() {
                Some(id) => id,
                None => return,
            },
        };
        let ask = if !self.retry.is_empty() && self.rng.chance(40) {
            let mut ask = self.retry.remove(self.rng.below(self.retry.len()));
            ask.tries += 1;
            ask
        } else {
            self.new_ask()
        };
        self.note((&id, format!("{ask:?}")));
        let rx = self.write(&id, &ask);
        self.pending.push(Pending { ask, rx });
    }

    fn new_ask(&mut self) -> Ask {
        let n = self.ids.len();
        let (concern, w) = match self.rng.below(4) {
            0 => (WriteConcern::Count(1), 1),
            1 => (WriteConcern::Count(2), 2),
            2 => (WriteConcern::Majority, self.quorum()),
            _ => (WriteConcern::All, n),
        };
        self.writes += 1;
        let timeout_ms = self
            .rng
            .chance(30)
            .then(|| 100 + self.rng.below(1900) as u64);
        Ask {
            msg: format!("s{}-m{}", self.seed, self.writes),
            concern,
            w,
            keyed: self.rng.chance(50),
            timeout_ms,
            tries: 1,
        }
    }

    pub(super) fn write(&mut self, id: &str, ask: &Ask) -> Reply {
        let (reply, rx) = oneshot::channel();
        let req = WriteRequest {
            w: Some(ask.concern),
            timeout_ms: ask.timeout_ms,
            idempotency_key: ask.keyed.then(|| ask.msg.clone()),
            ..WriteRequest::single(&ask.msg)
        };
        self.c.node(id).cmd(Cmd::Write { req, reply });
        rx
    }
}
