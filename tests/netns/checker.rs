//! The history checker: the list, over the client history and the final
//! log of every node after the final heal.
//!
//! 1. every write acknowledged with w >= majority is present exactly once (at the
//!    offset its acknowledgement named);
//! 2. no write whose every attempt got a definite failure (4xx, 503
//!    no_leader/no_quorum, connection refused) is present;
//! 3. all nodes' logs are identical after healing, with dense offsets;
//! 4. a message (one logical write, retried with the same Idempotency-Key or not
//!    retried at all) appears at most once, and nothing appears that no client
//!    wrote;
//! 5. linearizable reads contain every w >= majority write acknowledged before the
//!    read began, and a read invoked after another completed never observes a
//!    shorter log;
//! 6. reads (local ones, and linearizable ones too) return a dense run of the
//!    final log: nothing a read returned later disappears or moves;
//! 7. the cluster accepted a w = majority write within a bound after the final
//!    heal;
//! 8. when a fault hit only the leader, no request to another node waited longer
//!    than a failover (see `failover`);
//! 9. batches are all or nothing, contiguous and in order: a batch's messages are
//!    all in the final log, at consecutive offsets in the order sent, or none is;
//! 10. conditional writes (`If-Next-Offset: n`) land only at their offset: one in
//!     the final log sits exactly at `n`, an acknowledged one answered offset `n`,
//!     one answered 409 is absent and its 409 named a next offset other than `n`,
//!     and at most one conditional write won each offset.
//! 11. disk damage (`damage`): reads from a damaged node return the exact bytes
//!     or an error (a read error is a failed read, never a lost write: checks 1
//!     and 6 look only at the final logs and successful reads), and the node is
//!     a voter the leader counts again within a bound after its restart.
//!
//! Messages (a batch's each) are unique per logical write, so where each one
//! sits in the final log says which write landed where.

use super::history::{Kind, Op, Outcome, Read, W};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

pub const CHECKS: [&str; 11] = [
    "acked w>=majority writes present exactly once",
    "definitely failed writes absent",
    "final logs identical and dense",
    "each write / Idempotency-Key at most once",
    "linearizable reads: acked writes visible, never a shorter log later",
    "reads are dense runs of the final log",
    "available again after the final heal",
    "requests answered within a failover when the leader fails",
    "batches all or nothing, contiguous, in order",
    "conditional writes only at their offset, at most one winner per offset",
    "disk damage: exact bytes or an error, a voter again within the bound",
];

#[derive(Clone, Debug)]
pub struct Violation {
    /// Index into [`CHECKS`].
    pub check: usize,
    pub text: String,
}

/// One node's final log (`Err` if it could not be read).
pub type NodeLog = (String, Result<Vec<(u64, String)>, String>);

pub struct Input<'a> {
    pub ops: &'a [Op],
    pub logs: &'a [NodeLog],
    /// Time from the final heal to the first acknowledged w = majority write.
    pub available_after: Option<Duration>,
    pub available_bound: Duration,
    /// Check 8's findings (`failover::violations`).
    pub slow_failovers: Vec<String>,
    /// Check 11's findings (`damage::violations`).
    pub damage: Vec<String>,
}

pub struct Outcome7 {
    pub violations: Vec<Violation>,
    /// The final log the checks compared against (the first node's).
    pub final_len: usize,
}

fn v(out: &mut Vec<Violation>, check: usize, text: String) {
    out.push(Violation { check, text });
}

pub fn check(input: &Input<'_>) -> Outcome7 {
    let mut out = Vec::new();
    let final_log = check_logs(input.logs, &mut out);
    let by_id: HashMap<u64, &Op> = input.ops.iter().map(|o| (o.id, o)).collect();

    // Where each message sits in the final log.
    let mut positions: HashMap<&str, Vec<u64>> = HashMap::new();
    for (off, m) in final_log.iter().enumerate() {
        positions.entry(m.as_str()).or_default().push(off as u64);
    }

    // Logical writes: every attempt of one message.
    let mut writes: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in input.ops {
        if let Some(w) = op.write() {
            writes.entry(w.value.as_str()).or_default().push(op);
        }
    }
    let none: Vec<u64> = Vec::new();
    for (value, attempts) in &writes {
        let at = positions.get(value).unwrap_or(&none);
        let list = || {
            attempts
                .iter()
                .map(|o| format!("\n    {o}"))
                .collect::<String>()
        };
        let acked: Vec<&&Op> = attempts
            .iter()
            .filter(|o| o.outcome == Outcome::Ok && o.write().is_some_and(|w| w.w == W::Majority))
            .collect();
        if !acked.is_empty() {
            if at.len() != 1 {
                v(&mut out, 0, format!(
                    "{value:?} was acknowledged with w=majority but appears {} times in the final log (offsets {at:?}):{}",
                    at.len(), list()));
            } else if let Some(bad) = acked
                .iter()
                .find(|o| o.write().and_then(|w| w.offset) != Some(at[0]))
            {
                v(&mut out, 0, format!(
                    "{value:?} is at offset {} in the final log, but op#{} acknowledged it at offset {:?}:{}",
                    at[0], bad.id, bad.write().and_then(|w| w.offset), list()));
            }
        }
        let w = attempts[0].write().expect("a write");
        let all_at = |m: &str| positions.get(m).cloned().unwrap_or_default();
        let present: Vec<(&str, Vec<u64>)> = w
            .messages()
            .map(|m| (m, all_at(m)))
            .filter(|(_, at)| !at.is_empty())
            .collect();
        if attempts.iter().all(|o| o.outcome == Outcome::Fail) && !present.is_empty() {
            v(
                &mut out,
                1,
                format!(
                    "{value:?} got only definite failures but is in the final log ({present:?}):{}",
                    list()
                ),
            );
        }
        if w.is_batch() {
            check_batch(w, &all_at, &list, &mut out);
        }
        if let Some(n) = w.if_next {
            check_conditional(value, n, attempts, at, &list, &mut out);
        }
        for (m, at) in present.iter().skip(1).filter(|(_, at)| at.len() > 1) {
            v(
                &mut out,
                3,
                format!(
                    "{m:?} of batch {value:?} appears {} times, at offsets {at:?}:{}",
                    at.len(),
                    list()
                ),
            );
        }
        if at.len() > 1 {
            let key = attempts[0].write().and_then(|w| w.key.clone());
            v(
                &mut out,
                3,
                format!(
                    "{value:?} ({}) appears {} times, at offsets {at:?}:{}",
                    key.map_or("no Idempotency-Key, sent once".into(), |k| format!(
                        "Idempotency-Key {k}"
                    )),
                    at.len(),
                    list()
                ),
            );
        }
    }
    let written: HashSet<&str> = input
        .ops
        .iter()
        .filter_map(|o| o.write())
        .flat_map(|w| w.messages())
        .collect();
    check_winners(input.ops, &positions, &mut out);
    for (m, at) in &positions {
        if !written.contains(m) {
            v(
                &mut out,
                3,
                format!("{m:?} at offsets {at:?} was never written by a client"),
            );
        }
    }

    check_reads(input.ops, &final_log, &mut out);
    check_linearizable(input.ops, &by_id, &mut out);

    match input.available_after {
        Some(t) if t <= input.available_bound => {}
        Some(t) => v(&mut out, 6, format!(
            "the first w=majority write after the final heal was acknowledged after {t:?} (bound {:?})",
            input.available_bound)),
        None => v(&mut out, 6, format!(
            "no w=majority write was acknowledged within {:?} after the final heal",
            input.available_bound)),
    }
    for text in &input.slow_failovers {
        v(&mut out, 7, text.clone());
    }
    for text in &input.damage {
        v(&mut out, 10, text.clone());
    }
    Outcome7 {
        violations: out,
        final_len: final_log.len(),
    }
}

/// Check 9 for one logical batch: all of its messages in the final log at
/// consecutive offsets in order, or none.
fn check_batch(
    w: &super::history::Write,
    at: &dyn Fn(&str) -> Vec<u64>,
    list: &dyn Fn() -> String,
    out: &mut Vec<Violation>,
) {
    let offsets: Vec<Option<u64>> = w.messages().map(|m| at(m).first().copied()).collect();
    let found = offsets.iter().filter(|o| o.is_some()).count();
    if found == 0 {
        return;
    }
    if found < offsets.len() {
        v(
            out,
            8,
            format!(
                "batch {:?} of {} messages is partly in the final log (offsets {offsets:?}):{}",
                w.value,
                offsets.len(),
                list()
            ),
        );
        return;
    }
    let first = offsets[0].expect("found");
    let contiguous = offsets
        .iter()
        .enumerate()
        .all(|(j, o)| *o == Some(first + j as u64));
    if !contiguous {
        v(
            out,
            8,
            format!(
            "batch {:?} is not contiguous and in order in the final log (offsets {offsets:?}):{}",
            w.value, list()),
        );
    }
}

/// Check 10 for one logical conditional write on offset `n`, whose first
/// message sits at `at` in the final log.
fn check_conditional(
    value: &str,
    n: u64,
    attempts: &[&Op],
    at: &[u64],
    list: &dyn Fn() -> String,
    out: &mut Vec<Violation>,
) {
    if at.iter().any(|&p| p != n) {
        v(
            out,
            9,
            format!(
                "{value:?} was conditional on next offset {n} but is at {at:?} in the final log:{}",
                list()
            ),
        );
    }
    for o in attempts {
        let Some(w) = o.write() else { continue };
        if o.outcome == Outcome::Ok && w.offset != Some(n) {
            v(
                out,
                9,
                format!(
                "{value:?} was conditional on next offset {n} but op#{} acknowledged it at {:?}:{}",
                o.id, w.offset, list()),
            );
        }
        if let Some(next) = w.conflict_next {
            if next == n {
                v(out, 9, format!(
                    "op#{} answered 409 for {value:?} saying the next offset was {next}, its condition:{}",
                    o.id, list()));
            }
            if !at.is_empty() {
                v(
                    out,
                    9,
                    format!(
                        "op#{} answered 409 for {value:?}, which is in the final log at {at:?}:{}",
                        o.id,
                        list()
                    ),
                );
            }
        }
    }
}

/// Check 10 across writes: per offset, the conditional writes that won it
/// (acknowledged with w=majority, or in the final log) are at most one.
fn check_winners(ops: &[Op], positions: &HashMap<&str, Vec<u64>>, out: &mut Vec<Violation>) {
    let mut winners: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for o in ops {
        let Some(w) = o.write() else { continue };
        let Some(n) = w.if_next else { continue };
        let acked = o.outcome == Outcome::Ok && w.w == W::Majority;
        if acked || positions.contains_key(w.value.as_str()) {
            winners.entry(n).or_default().insert(w.value.as_str());
        }
    }
    for (n, ws) in winners.iter().filter(|(_, ws)| ws.len() > 1) {
        v(
            out,
            9,
            format!("{} conditional writes won offset {n}: {ws:?}", ws.len()),
        );
    }
}

/// Check 3; returns the log the other checks use (the first readable one).
fn check_logs(logs: &[NodeLog], out: &mut Vec<Violation>) -> Vec<String> {
    let mut reference: Option<(&str, Vec<String>)> = None;
    for (node, log) in logs {
        let log = match log {
            Ok(l) => l,
            Err(e) => {
                v(
                    out,
                    2,
                    format!("{node}: the final log could not be read: {e}"),
                );
                continue;
            }
        };
        if let Some(bad) = log.iter().enumerate().find(|(i, (o, _))| *o != *i as u64) {
            v(
                out,
                2,
                format!(
                    "{node}: offsets not dense: position {} has offset {}",
                    bad.0, bad.1 .0
                ),
            );
        }
        let msgs: Vec<String> = log.iter().map(|(_, m)| m.clone()).collect();
        match &reference {
            None => reference = Some((node, msgs)),
            Some((rn, r)) => {
                if *r != msgs {
                    let first = r.iter().zip(&msgs).position(|(a, b)| a != b);
                    let detail = match first {
                        Some(i) => format!(
                            "first difference at offset {i}: {rn} has {:?}, {node} has {:?}",
                            r[i], msgs[i]
                        ),
                        None => format!("{rn} has {} messages, {node} has {}", r.len(), msgs.len()),
                    };
                    v(out, 2, format!("final logs differ: {detail}"));
                }
            }
        }
    }
    if reference.is_none() {
        v(out, 2, "no node's final log could be read".into());
    }
    reference.map(|(_, l)| l).unwrap_or_default()
}

/// Check 6.
fn check_reads(ops: &[Op], final_log: &[String], out: &mut Vec<Violation>) {
    for op in ops {
        let Some(r) = op.read() else { continue };
        if op.outcome != Outcome::Ok {
            continue;
        }
        if r.returned_end() > final_log.len() as u64 {
            v(
                out,
                5,
                format!(
                "read returned offsets up to {} but the final log has only {} messages:\n    {op}",
                r.returned_end() - 1, final_log.len()),
            );
            continue;
        }
        for (i, m) in r.messages.iter().enumerate() {
            let off = r.from as usize + i;
            if final_log[off] != *m {
                v(
                    out,
                    5,
                    format!(
                        "read saw {m:?} at offset {off}, the final log has {:?} there:\n    {op}",
                        final_log[off]
                    ),
                );
                break;
            }
        }
    }
}

/// Check 5.
fn check_linearizable(ops: &[Op], by_id: &HashMap<u64, &Op>, out: &mut Vec<Violation>) {
    let lin: Vec<(&Op, &Read)> = ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .filter_map(|o| o.read().filter(|r| r.linearizable).map(|r| (o, r)))
        .collect();

    // Acknowledged w = majority writes by completion time, with the running
    // maximum of their offsets.
    let mut acked: Vec<(Duration, u64, u64)> = ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .filter_map(|o| match &o.kind {
            Kind::Write(w) if w.w == W::Majority => w.offset.map(|off| (o.complete, off, o.id)),
            _ => None,
        })
        .collect();
    acked.sort();
    let mut best: Vec<(u64, u64)> = Vec::with_capacity(acked.len()); // (max offset, op id)
    for &(_, off, id) in &acked {
        let b = match best.last() {
            Some(&(m, mid)) if m >= off => (m, mid),
            _ => (off, id),
        };
        best.push(b);
    }
    let mut reported = 0;
    for (op, r) in &lin {
        let n = acked.partition_point(|(c, _, _)| *c < op.invoke);
        if n == 0 {
            continue;
        }
        let (max_off, wid) = best[n - 1];
        if max_off >= r.upper() {
            reported += 1;
            if reported <= 50 {
                let missing: Vec<String> = acked[..n]
                    .iter()
                    .filter(|(_, off, _)| *off >= r.upper())
                    .take(5)
                    .map(|(_, _, id)| format!("\n    acknowledged before: {}", by_id[id]))
                    .collect();
                v(out, 4, format!(
                    "linearizable read saw a log of at most {} messages but op#{wid} had acknowledged offset {max_off} before it began:\n    {op}{}",
                    r.upper(), missing.concat()));
            }
        }
    }

    // Monotonic: reads by completion time, running maximum of the length they
    // saw for sure; a later read must not have seen less.
    let mut done: Vec<(Duration, u64, u64)> = lin
        .iter()
        .map(|(o, r)| (o.complete, r.lower(), o.id))
        .collect();
    done.sort();
    let mut best: Vec<(u64, u64)> = Vec::with_capacity(done.len());
    for &(_, len, id) in &done {
        let b = match best.last() {
            Some(&(m, mid)) if m >= len => (m, mid),
            _ => (len, id),
        };
        best.push(b);
    }
    let mut reported = 0;
    for (op, r) in &lin {
        let n = done.partition_point(|(c, _, _)| *c < op.invoke);
        if n == 0 {
            continue;
        }
        let (max_len, rid) = best[n - 1];
        if max_len > r.upper() {
            reported += 1;
            if reported <= 50 {
                v(out, 4, format!(
                    "linearizable read saw a log of at most {} messages after an earlier read had seen {max_len}:\n    earlier: {}\n    later:   {op}",
                    r.upper(), by_id[&rid]));
            }
        }
    }
}

/// The failure report: every violated check with its offending operations.
pub fn report(violations: &[Violation], limit_per_check: usize) -> String {
    let mut s = String::new();
    for (i, name) in CHECKS.iter().enumerate() {
        let vs: Vec<&Violation> = violations.iter().filter(|v| v.check == i).collect();
        let _ = writeln!(
            s,
            "  [{}] {name}: {}",
            if vs.is_empty() { "ok" } else { "FAILED" },
            if vs.is_empty() {
                "ok".to_string()
            } else {
                format!("{} violation(s)", vs.len())
            }
        );
        for x in vs.iter().take(limit_per_check) {
            let _ = writeln!(s, "    - {}", x.text);
        }
        if vs.len() > limit_per_check {
            let _ = writeln!(s, "    ... and {} more", vs.len() - limit_per_check);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::history::{Read, Write};
    use super::*;

    fn t(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn write(
        id: u64,
        value: &str,
        w: W,
        outcome: Outcome,
        offset: Option<u64>,
        span: (u64, u64),
    ) -> Op {
        Op {
            id,
            client: 0,
            host: 1,
            invoke: t(span.0),
            complete: t(span.1),
            outcome,
            info: String::new(),
            kind: Kind::Write(Write {
                value: value.into(),
                more: Vec::new(),
                if_next: None,
                conflict_next: None,
                key: Some(format!("k-{value}")),
                w,
                attempt: 1,
                offset,
                committed: offset.map(|_| w == W::Majority),
                duplicate: false,
            }),
        }
    }

    /// A batch `value` of `n` messages (`value`, `value.1`, ...), maybe
    /// conditional on `if_next`, with its answer (`offset`: acknowledged there;
    /// `conflict`: a 409 naming that next offset).
    fn batch(id: u64, value: &str, n: usize, if_next: Option<u64>, answer: Answer) -> Op {
        let mut op = write(id, value, W::Majority, Outcome::Unknown, None, (0, 10));
        let Kind::Write(w) = &mut op.kind else {
            unreachable!()
        };
        w.more = (1..n).map(|j| format!("{value}.{j}")).collect();
        w.if_next = if_next;
        match answer {
            Answer::Ok(o) => {
                op.outcome = Outcome::Ok;
                w.offset = Some(o);
            }
            Answer::Conflict(next) => {
                op.outcome = Outcome::Fail;
                w.conflict_next = Some(next);
            }
            Answer::Unknown => {}
        }
        op
    }

    enum Answer {
        Ok(u64),
        Conflict(u64),
        Unknown,
    }

    fn read(id: u64, lin: bool, from: u64, msgs: &[&str], span: (u64, u64)) -> Op {
        Op {
            id,
            client: 1,
            host: 2,
            invoke: t(span.0),
            complete: t(span.1),
            outcome: Outcome::Ok,
            info: String::new(),
            kind: Kind::Read(Read {
                linearizable: lin,
                from,
                limit: 10_000,
                messages: msgs.iter().map(|m| m.to_string()).collect(),
                next_offset: from + msgs.len() as u64,
            }),
        }
    }

    fn logs(msgs: &[&str], nodes: usize) -> Vec<NodeLog> {
        let log: Vec<(u64, String)> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| (i as u64, m.to_string()))
            .collect();
        (1..=nodes)
            .map(|i| (format!("n{i}"), Ok(log.clone())))
            .collect()
    }

    fn run(ops: &[Op], logs: &[NodeLog]) -> Vec<usize> {
        let r = check(&Input {
            ops,
            logs,
            available_after: Some(t(100)),
            available_bound: t(1000),
            slow_failovers: Vec::new(),
            damage: Vec::new(),
        });
        let mut c: Vec<usize> = r.violations.iter().map(|v| v.check).collect();
        c.dedup();
        c
    }

    #[test]
    fn a_clean_history_passes() {
        let ops = vec![
            write(0, "a", W::Majority, Outcome::Ok, Some(0), (0, 10)),
            write(1, "b", W::One, Outcome::Ok, Some(1), (5, 12)),
            write(2, "c", W::Majority, Outcome::Unknown, None, (5, 40)),
            write(3, "d", W::Majority, Outcome::Fail, None, (5, 40)),
            write(4, "e", W::One, Outcome::Ok, Some(2), (5, 12)), // lost w=1 write: allowed
            read(5, true, 0, &["a"], (11, 20)),
            read(6, true, 0, &["a", "b"], (21, 30)),
            read(7, false, 0, &[], (0, 1)),
            read(8, false, 1, &["b", "c"], (50, 60)),
        ];
        assert_eq!(run(&ops, &logs(&["a", "b", "c"], 3)), Vec::<usize>::new());
    }

    #[test]
    fn batches_and_conditional_writes_pass_when_right() {
        let ops = vec![
            batch(0, "a", 3, None, Answer::Ok(0)),
            batch(1, "b", 1, Some(3), Answer::Ok(3)),
            batch(2, "c", 2, Some(3), Answer::Conflict(4)),
            batch(3, "d", 2, Some(4), Answer::Unknown),
            batch(4, "e", 2, None, Answer::Unknown), // lost: allowed
        ];
        let log = ["a", "a.1", "a.2", "b", "d", "d.1"];
        assert_eq!(run(&ops, &logs(&log, 3)), Vec::<usize>::new());
    }

    #[test]
    fn broken_batches_and_conditional_writes_are_caught() {
        let ops = vec![batch(0, "a", 3, None, Answer::Unknown)];
        // 9: partly present, out of order, not contiguous.
        assert_eq!(run(&ops, &logs(&["a", "a.1"], 1)), vec![8]);
        assert_eq!(run(&ops, &logs(&["a", "a.2", "a.1"], 1)), vec![8]);
        let ops = vec![
            batch(0, "a", 3, None, Answer::Unknown),
            batch(1, "x", 1, None, Answer::Unknown),
        ];
        assert_eq!(run(&ops, &logs(&["a", "a.1", "x", "a.2"], 1)), vec![8]);
        // 10: landed away from its condition; acknowledged elsewhere; a 409
        // naming the condition; a 409 for a write that landed; two winners.
        let ops = vec![
            batch(0, "x", 1, None, Answer::Unknown),
            batch(1, "a", 2, Some(0), Answer::Unknown),
        ];
        assert_eq!(run(&ops, &logs(&["x", "a", "a.1"], 1)), vec![9]);
        let ops = vec![batch(0, "a", 1, Some(1), Answer::Ok(0))];
        assert!(run(&ops, &logs(&["a"], 1)).contains(&9));
        let ops = vec![batch(0, "a", 1, Some(0), Answer::Conflict(0))];
        assert_eq!(run(&ops, &logs(&[], 1)), vec![9]);
        let mut ops = vec![batch(0, "a", 1, Some(0), Answer::Unknown)];
        ops.push(batch(1, "a", 1, Some(0), Answer::Conflict(1)));
        assert_eq!(run(&ops, &logs(&["a"], 1)), vec![9]);
        let ops = vec![
            batch(0, "a", 1, Some(0), Answer::Ok(0)),
            batch(1, "b", 1, Some(0), Answer::Ok(0)),
        ];
        assert!(run(&ops, &logs(&["a"], 1)).contains(&9));
    }

    #[test]
    fn each_violation_is_caught() {
        // 1: an acknowledged write is lost, or moved.
        let ops = vec![write(0, "a", W::Majority, Outcome::Ok, Some(0), (0, 10))];
        assert_eq!(run(&ops, &logs(&[], 3)), vec![0]);
        assert_eq!(run(&ops, &logs(&["x", "a"], 3)).first(), Some(&0));
        // 2: a definite failure is present.
        let ops = vec![write(0, "a", W::Majority, Outcome::Fail, None, (0, 10))];
        assert_eq!(run(&ops, &logs(&["a"], 3)), vec![1]);
        // 3: logs differ / not dense.
        let ops = vec![write(0, "a", W::One, Outcome::Unknown, None, (0, 10))];
        let mut l = logs(&["a"], 2);
        l[1].1 = Ok(vec![]);
        assert_eq!(run(&ops, &l), vec![2]);
        let mut l = logs(&["a"], 1);
        l[0].1 = Ok(vec![(1, "a".into())]);
        assert_eq!(run(&ops, &l), vec![2]);
        // 4: a duplicate, and a phantom.
        assert_eq!(run(&ops, &logs(&["a", "a"], 1)), vec![3]);
        assert_eq!(run(&ops, &logs(&["a", "zz"], 1)), vec![3]);
        // 5: a stale linearizable read, and a read going backwards.
        let ops = vec![
            write(0, "a", W::Majority, Outcome::Ok, Some(0), (0, 10)),
            read(1, true, 0, &[], (11, 20)),
        ];
        assert_eq!(run(&ops, &logs(&["a"], 1)), vec![4]);
        let ops = vec![
            write(0, "a", W::One, Outcome::Ok, Some(0), (0, 10)),
            read(1, true, 0, &["a"], (11, 20)),
            read(2, true, 0, &[], (21, 30)),
        ];
        assert_eq!(run(&ops, &logs(&["a"], 1)), vec![4]);
        // ...but overlapping reads may disagree.
        let ops = vec![
            write(0, "a", W::One, Outcome::Ok, Some(0), (0, 10)),
            read(1, true, 0, &["a"], (11, 20)),
            read(2, true, 0, &[], (15, 30)),
        ];
        assert_eq!(run(&ops, &logs(&["a"], 1)), Vec::<usize>::new());
        // 6: a local read of something that later vanished or moved.
        let ops = vec![
            write(0, "a", W::One, Outcome::Ok, Some(0), (0, 10)),
            write(1, "b", W::One, Outcome::Ok, Some(1), (0, 10)),
            read(2, false, 0, &["a", "b"], (11, 20)),
        ];
        assert_eq!(run(&ops, &logs(&["a"], 1)), vec![5]);
        assert_eq!(run(&ops, &logs(&["b", "a"], 1)), vec![5]);
        // 7: not available again.
        let r = check(&Input {
            ops: &[],
            logs: &logs(&[], 1),
            available_after: None,
            available_bound: t(1000),
            slow_failovers: Vec::new(),
            damage: Vec::new(),
        });
        assert_eq!(r.violations.len(), 1);
        assert_eq!(r.violations[0].check, 6);
    }
}
