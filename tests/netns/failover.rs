//! Failover as the clients saw it (SPEC §6): for every phase whose only fault hit
//! the leader (kill, pause, isolation, one-way cut), how long after the fault a
//! w = majority write was acknowledged again through another node, and the
//! longest any request to another node was left unanswered. Requests sent to the
//! faulted node itself are left out: a paused or cut-off node cannot answer, and
//! that is not a failover.
//!
//! The check (liveness, with a generous margin): no such request waits longer
//! than `bound` (the election timeout, plus the SPEC's second, plus slack for a
//! loaded machine); without requests following the leader they would wait for
//! their write timeout.

use super::history::{Op, Outcome, W};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// A phase whose only fault hit the leader.
#[derive(Clone, Debug)]
pub struct LeaderFault {
    pub kind: &'static str,
    /// The faulted leader's host.
    pub host: usize,
    pub at: Duration,
    /// When the phase's hold ended (the fault was healed after it).
    pub until: Duration,
}

/// One fault's figures.
#[derive(Clone, Debug)]
pub struct Measured {
    pub fault: LeaderFault,
    /// Fault to the first acknowledged w = majority write invoked after it at
    /// another host (`None`: none within the hold).
    pub resumed_after: Option<Duration>,
    /// The longest time a request to another host was left unanswered after the
    /// fault (in flight at the fault, or invoked during the hold; time waited
    /// before the fault is not the fault's), and that request.
    pub longest_wait: Duration,
    pub longest_op: Option<u64>,
}

pub fn measure(ops: &[Op], faults: &[LeaderFault]) -> Vec<Measured> {
    faults
        .iter()
        .map(|f| {
            let others = ops.iter().filter(|o| o.host != f.host);
            let resumed_after = others
                .clone()
                .filter(|o| o.invoke >= f.at && o.outcome == Outcome::Ok)
                .filter(|o| o.write().is_some_and(|w| w.w == W::Majority))
                .map(|o| o.complete - f.at)
                .min();
            let caught = others.filter(|o| o.complete > f.at && o.invoke <= f.until);
            let waited = |o: &Op| o.complete - o.invoke.max(f.at);
            let longest = caught.max_by_key(|o| waited(o));
            Measured {
                fault: f.clone(),
                resumed_after,
                longest_wait: longest.map_or(Duration::ZERO, waited),
                longest_op: longest.map(|o| o.id),
            }
        })
        .collect()
}

/// Requests that waited longer than `bound`, as violation texts.
pub fn violations(measured: &[Measured], ops: &[Op], bound: Duration) -> Vec<String> {
    measured
        .iter()
        .filter(|m| m.longest_wait > bound)
        .map(|m| {
            let op = m.longest_op.and_then(|id| ops.iter().find(|o| o.id == id));
            format!(
                "{} of host {} at {:.3}s: a request to another node waited {:.3}s after it (bound {:.3}s): {}",
                m.fault.kind,
                m.fault.host,
                m.fault.at.as_secs_f64(),
                m.longest_wait.as_secs_f64(),
                bound.as_secs_f64(),
                op.map_or(String::new(), |o| o.to_string())
            )
        })
        .collect()
}

fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// The table for the README: per fault kind, p50/p99/max of both figures.
pub fn table(measured: &[Measured]) -> String {
    let mut by_kind: BTreeMap<&str, (Vec<Duration>, Vec<Duration>, usize)> = BTreeMap::new();
    for m in measured {
        let e = by_kind.entry(m.fault.kind).or_default();
        e.0.extend(m.resumed_after);
        e.1.push(m.longest_wait);
        e.2 += m.resumed_after.is_none() as usize;
    }
    let mut s = String::from(
        "  fault              n | writes resumed after (s) p50/p99/max | longest unanswered (s) p50/p99/max\n",
    );
    let fmt = |v: &mut Vec<Duration>| {
        if v.is_empty() {
            return "-".to_string();
        }
        let (a, b, c) = (quantile(v, 0.5), quantile(v, 0.99), quantile(v, 1.0));
        format!(
            "{:.2}/{:.2}/{:.2}",
            a.as_secs_f64(),
            b.as_secs_f64(),
            c.as_secs_f64()
        )
    };
    for (kind, (mut resumed, mut longest, never)) in by_kind {
        let n = longest.len();
        let never = if never > 0 {
            format!(" ({never} never)")
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "  {kind:<18} {n:>2} | {:>37}{never} | {:>34}",
            fmt(&mut resumed),
            fmt(&mut longest)
        );
    }
    s
}
