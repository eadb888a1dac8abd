//! The disk-damage fault: SIGKILL one node, damage one of its files, restart it,
//! then watch it become a voter the leader counts again (issue 14 part 5).
//!
//! The file kind and the file are drawn (from the fault's seeded `pick`) among
//! the files the node has when it is stopped, so the choice is reproducible for
//! the same disk state. Damage that only reads find (a flip or zeroed page in a
//! sealed message segment) is read out at once: every message of that segment,
//! read locally from the damaged node, must be another node's exact bytes or an
//! error (how many failed is reported; `tests/damage.rs` checks detection); the
//! node is then restarted again, which scans the segment and repairs it. Invariant: the repair clock starts at the
//! last restart and a repair is either `done` or still inside its bound.

use super::cluster::{call, Cluster};
use super::diskdamage::{self, Damage};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// From the (last) restart to a voter counted by the leader.
pub const REPAIR_BOUND: Duration = Duration::from_secs(60);
/// At most this many messages of a damaged segment are read back.
const MAX_READS: u64 = 5000;

/// One damaged node, from its restart until it votes again.
pub struct Repair {
    pub host: usize,
    pub id: String,
    /// File kind, damage and file, for the report.
    pub what: String,
    pub restarted: Instant,
    /// Restart to voter, once seen.
    pub done: Option<Duration>,
    /// Removed from the membership (a later fault) before it voted again.
    pub replaced: bool,
}

/// Kills host `h`, damages a file drawn with `pick`, restarts it. Wrong bytes
/// served, or damage no read finds, go to `findings`.
pub fn inject(
    c: &Cluster,
    h: usize,
    pick: u64,
    how: Damage,
    findings: &mut Vec<String>,
) -> Result<Repair, String> {
    if !c.is_running(h) {
        return Err(format!("host {h} is not running"));
    }
    c.kill(h);
    let dir = c.data_dir(h);
    let mut rng = StdRng::seed_from_u64(pick);
    let present: Vec<(diskdamage::Kind, Vec<std::path::PathBuf>)> = diskdamage::KINDS
        .iter()
        .map(|&k| (k, big_enough(diskdamage::candidates(&dir, k))))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let Some((kind, files)) = present.choose(&mut rng) else {
        c.start(h, false);
        return Err(format!("host {h}: no file to damage yet; restarted"));
    };
    let file = files.choose(&mut rng).expect("non-empty").clone();
    // The next segment's first offset bounds the read-back of a message segment.
    let next_first = next_segment_first(&file);
    if let Err(e) = diskdamage::damage(&file, how) {
        c.start(h, false);
        return Err(format!("host {h}: {e}; restarted"));
    }
    c.start(h, false);
    let shown = file
        .strip_prefix(&dir)
        .unwrap_or(&file)
        .display()
        .to_string();
    let mut what = format!("{kind:?} {how:?} {shown}");
    if diskdamage::found_only_by_reads(*kind, how) {
        let read = read_back(c, h, &file, next_first, &what, findings);
        what = format!("{what} ({read}; restarted again)");
        c.kill(h);
        c.start(h, false);
    }
    Ok(Repair {
        host: h,
        id: c.id(h),
        what,
        restarted: Instant::now(),
        done: None,
        replaced: false,
    })
}

fn big_enough(v: Vec<std::path::PathBuf>) -> Vec<std::path::PathBuf> {
    v.into_iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 16))
        .collect()
}

fn first_offset(p: &Path) -> Option<u64> {
    p.file_stem()?.to_str()?.parse().ok()
}

fn next_segment_first(seg: &Path) -> Option<u64> {
    let first = first_offset(seg)?;
    let dir = seg.parent()?;
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == raftlog::msgstore::SEGMENT_EXT)
        })
        .filter_map(|p| first_offset(&p))
        .filter(|&o| o > first)
        .min()
}

/// One message at `off`, read locally: `Ok(None)` when the node has none there.
fn read_one(h: usize, off: u64) -> Result<Option<String>, String> {
    let path = format!("/v1/messages?from={off}&limit=1&consistency=local");
    let r = call(h, "GET", &path, None, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("{} {}", r.status, r.body.trim()));
    }
    let Some(m) = r.json["messages"].as_array().and_then(|a| a.first()) else {
        return Ok(None);
    };
    if m["offset"].as_u64() != Some(off) {
        return Ok(Some(format!("<offset {} instead>", m["offset"])));
    }
    Ok(m["message"].as_str().map(str::to_string))
}

/// Every message of the damaged segment from host `h` is the exact bytes another
/// node has, or an error in the API's format (wrong bytes go to `findings`).
/// Returns how many of each, for the report.
fn read_back(
    c: &Cluster,
    h: usize,
    seg: &Path,
    end: Option<u64>,
    what: &str,
    findings: &mut Vec<String>,
) -> String {
    let Some(first) = first_offset(seg) else {
        return "segment name is not an offset: not read back".into();
    };
    let end = end.unwrap_or(first + MAX_READS).min(first + MAX_READS);
    let deadline = Instant::now() + Duration::from_secs(30);
    while c
        .status(h)
        .is_none_or(|s| s["phase"] != "run" || s["repairing"] == true)
    {
        if Instant::now() >= deadline {
            return "not serving 30s after its restart: not read back".into();
        }
        thread::sleep(Duration::from_millis(200));
    }
    let Some(other) = c.hosts().into_iter().find(|&o| o != h && c.is_running(o)) else {
        return "no other node running: not read back".into();
    };
    let (mut errors, mut served) = (0, 0);
    for off in first..end {
        match read_one(h, off) {
            Err(e) => {
                if !e.contains("\"error\"") {
                    findings.push(format!("{what}: offset {off}: not an API error: {e}"));
                }
                errors += 1;
            }
            Ok(None) => {}
            Ok(Some(got)) => {
                served += 1;
                if let Ok(Some(want)) = read_one(other, off) {
                    if got != want {
                        findings.push(format!(
                            "{what}: host {h} served {got:?} at offset {off}, host {other} has {want:?}"
                        ));
                    }
                }
            }
        }
    }
    format!("read back {first}..{end}: {served} exact, {errors} errors")
}

/// True once host `r.host` is running, not repairing, and a voter the leader
/// counts (not marked repairing in its member list).
fn voter_again(c: &Cluster, r: &Repair) -> bool {
    let Some(s) = c.status(r.host) else {
        return false;
    };
    if s["repairing"] != false || s["phase"] != "run" {
        return false;
    }
    let Some(ls) = c.leader().and_then(|l| c.status(l)) else {
        return false;
    };
    ls["members"].as_array().is_some_and(|ms| {
        ms.iter()
            .any(|m| m["node_id"] == r.id.as_str() && m["voter"] == true && m["repairing"] == false)
    })
}

/// Checks the pending repairs once; records the time of those now done.
pub fn poll(c: &Cluster, repairs: &mut [Repair]) {
    for r in repairs
        .iter_mut()
        .filter(|r| r.done.is_none() && !r.replaced)
    {
        r.replaced = c.id(r.host) != r.id;
        if !r.replaced && r.restarted.elapsed() <= REPAIR_BOUND && voter_again(c, r) {
            r.done = Some(r.restarted.elapsed());
        }
    }
}

/// Polls until every repair is done or past its bound.
pub fn finish(c: &Cluster, repairs: &mut [Repair]) {
    while repairs
        .iter()
        .any(|r| r.done.is_none() && !r.replaced && r.restarted.elapsed() <= REPAIR_BOUND)
    {
        poll(c, repairs);
        thread::sleep(Duration::from_millis(200));
    }
}

/// Check 11's findings: the read-back's, and repairs not done within the bound.
pub fn violations(repairs: &[Repair], findings: &[String]) -> Vec<String> {
    let mut out = findings.to_vec();
    for r in repairs.iter().filter(|r| r.done.is_none() && !r.replaced) {
        out.push(format!(
            "host {} ({}): not a voter the leader counts within {REPAIR_BOUND:?} of its restart ({})",
            r.host, r.id, r.what
        ));
    }
    out
}

/// One line per damaged node, with its restart-to-voter time.
pub fn table(repairs: &[Repair]) -> String {
    let mut s = String::new();
    for r in repairs {
        let t = match (r.done, r.replaced) {
            (Some(d), _) => format!("{:.2}s", d.as_secs_f64()),
            (None, true) => "none (replaced by a later fault first)".to_string(),
            (None, false) => "NOT within the bound".to_string(),
        };
        s.push_str(&format!(
            "  host {} ({}): {}: restart to voter {t}\n",
            r.host, r.id, r.what
        ));
    }
    if repairs.is_empty() {
        s.push_str("  (no disk damage in this run)\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repair(done: Option<Duration>, replaced: bool) -> Repair {
        Repair {
            host: 2,
            id: "n2".into(),
            what: "WalSegment BitFlip wal/wal/1.seg".into(),
            restarted: Instant::now(),
            done,
            replaced,
        }
    }

    #[test]
    fn a_node_not_back_as_a_voter_or_a_wrong_read_is_a_violation() {
        let ok = [repair(Some(Duration::from_secs(3)), false)];
        assert!(violations(&ok, &[]).is_empty());
        let replaced = [repair(None, true)];
        assert!(violations(&replaced, &[]).is_empty());
        let late = [repair(None, false)];
        let v = violations(&late, &[]);
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("not a voter"), "{v:?}");
        let wrong = vec!["host 2 served \"x\" at offset 7".to_string()];
        assert_eq!(violations(&ok, &wrong), wrong);
        assert!(table(&late).contains("NOT within the bound"));
    }
}
