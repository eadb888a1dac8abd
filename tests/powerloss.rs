//! Power loss: SIGKILL plus a cut of the page cache, on all nodes, on a majority
//! and on the leader alone, while writers at w=majority and w=all are writing.
//!
//! Why: a process crash keeps the page cache, a power loss does not. Each node's
//! data directory is a FUSE mount of `tests/powerloss/lazyfs.py`, which keeps
//! what was not fsynced in memory and throws it away on a cut; in strict mode
//! (the default here) a new, renamed or removed directory entry survives only if
//! its parent directory was fsynced after it. Small WAL and message-store
//! segments (8-128 KiB), a snapshot every 25-250 entries (both drawn again at
//! each restart) and message sizes from 16 B to 9 KB make cuts land on segment
//! rolls and snapshots.
//!
//! Checks after every cycle: every node restarts; all converge on one dense log;
//! every acknowledged write (w=majority or w=all) is in it exactly once at its
//! acknowledged offset; a w=all write succeeds. The bytes each cut threw away
//! are printed, and the run fails if no cut threw anything away.
//!
//! Run as root (FUSE mounts), with python3 and `fusepy` (libfuse2):
//! `cargo test --test powerloss -- --ignored --nocapture`.
//! `POWERLOSS_CYCLES` (default 6: two per variant), `POWERLOSS_SEED` (default
//! random, printed), `POWERLOSS_MODE=lenient` (directory entries survive at once),
//! `POWERLOSS_PYTHON` (default `python3`).

#[path = "common/process.rs"]
mod harness;

use harness::{assert_dense, assert_unique, wait_for, Cluster, LONG};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const SIZES: [usize; 5] = [16, 200, 2_000, 5_000, 9_000];

/// One lazyfs mount (killed and unmounted on drop).
struct LazyFs {
    child: Child,
    mount: PathBuf,
    ctl: PathBuf,
}

fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = path.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == want))
}

impl LazyFs {
    fn mount(mount: &Path, ctl: PathBuf, log: &Path, strict: bool) -> LazyFs {
        std::fs::create_dir_all(mount).expect("mount point");
        let script = script();
        let python = std::env::var("POWERLOSS_PYTHON").unwrap_or_else(|_| "python3".into());
        let out = std::fs::File::create(log).expect("lazyfs log");
        let mut cmd = Command::new(&python);
        cmd.arg(&script).arg(mount).arg(&ctl);
        if strict {
            cmd.arg("--strict");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().expect("log handle")))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python} {}: {e}", script.display()));
        let mut fs = LazyFs {
            child,
            mount: mount.to_path_buf(),
            ctl,
        };
        wait_for(&format!("lazyfs on {}", mount.display()), LONG, || {
            if let Ok(Some(status)) = fs.child.try_wait() {
                panic!(
                    "lazyfs exited ({status}) before mounting {}:\n{}",
                    mount.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            (mounted(mount) && fs.ctl.exists()).then_some(())
        });
        fs
    }

    fn command(&self, cmd: &str) -> Value {
        let mut s = UnixStream::connect(&self.ctl).expect("lazyfs control socket");
        s.set_read_timeout(Some(LONG)).expect("timeout");
        s.write_all(cmd.as_bytes()).expect("send");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("reply");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("lazyfs reply {line:?}: {e}"))
    }

    /// The power cut: returns the bytes thrown away.
    fn cut(&self) -> u64 {
        let r = self.command("cut");
        r["lost_bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("lazyfs cut: {r}"))
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.mount)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cluster and its mounts, torn down in order: nodes, then mounts, then the
/// temp dir (which would otherwise be removed through live mounts).
struct Rig {
    c: Cluster,
    fs: Vec<LazyFs>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for i in 0..self.c.len() {
            self.c.kill(i);
        }
        self.fs.clear();
        if thread::panicking() {
            // The node logs outlive the temp dir, for the post-mortem.
            let keep =
                std::env::temp_dir().join(format!("powerloss-failed-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&keep);
            for e in std::fs::read_dir(self.c.dir())
                .into_iter()
                .flatten()
                .flatten()
            {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let _ = std::fs::copy(e.path(), keep.join(e.file_name()));
                }
            }
            eprintln!("powerloss: node and lazyfs logs kept in {}", keep.display());
        }
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/powerloss/lazyfs.py")
}

fn check_prerequisites(python: &str) {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "the power-loss test mounts FUSE file systems: run it as root"
    );
    assert!(Path::new("/dev/fuse").exists(), "/dev/fuse is missing");
    let out = Command::new(python).arg(script()).arg("--check").output();
    let ok = out.as_ref().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{python} cannot load fusepy and libfuse (apt-get install python3-fusepy, or \
         libfuse2 and `pip install fusepy`; POWERLOSS_PYTHON names the interpreter): {out:?}"
    );
}

fn start_rig(strict: bool) -> Rig {
    let mut c = Cluster::empty(&[
        ("RAFTLOG_SNAPSHOT__EVERY_ENTRIES", "40"),
        ("RAFTLOG_WAL__SEGMENT_BYTES", "32768"),
        ("RAFTLOG_READ__CACHE_BYTES", "0"),
    ]);
    let mut fs = Vec::new();
    for i in 0..3 {
        let join = (i > 0).then(|| c.info(0).grpc_addr());
        let i = c.add_node_info(join);
        let dir = c.dir().to_path_buf();
        fs.push(LazyFs::mount(
            &c.info(i).data_dir,
            dir.join(format!("lazyfs-{i}.sock")),
            &dir.join(format!("lazyfs-{i}.log")),
            strict,
        ));
        c.start_node(i);
    }
    c.wait_all_voters();
    Rig { c, fs }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    All,
    Majority,
    Leader,
}

/// Totals per variant.
#[derive(Default)]
struct Tally {
    cycles: usize,
    acked_majority: usize,
    acked_all: usize,
    lost_writes: usize,
    lost_bytes: u64,
    restarts: Vec<Duration>,
}

/// An acknowledged write: offset and message.
type Acked = (u64, String);

/// Writers at w=majority (two) and w=all (one) until `stop`; returns what each
/// acknowledged with its `w`.
fn write_until(
    c: &Cluster,
    stop: &AtomicBool,
    seed: u64,
    cycle: usize,
) -> Vec<(Acked, &'static str)> {
    let ws = ["majority", "all", "majority"];
    thread::scope(|s| {
        let handles: Vec<_> = ws
            .iter()
            .enumerate()
            .map(|(wi, &w)| {
                s.spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(seed ^ ((cycle as u64) << 8) ^ wi as u64);
                    let mut got = Vec::new();
                    let mut k = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let size = SIZES[rng.gen_range(0..SIZES.len())];
                        let msg = format!("c{cycle}-w{wi}-{k}-{}", "x".repeat(size));
                        let node = rng.gen_range(0..3);
                        let r =
                            c.write_with(node, &msg, json!(w), "", None, Duration::from_secs(3));
                        if let Ok(r) = r {
                            if r.status == 201 {
                                got.push(((r.offset(), msg), w));
                            }
                        }
                        k += 1;
                    }
                    got
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer"))
            .collect()
    })
}

fn short(m: &str) -> String {
    m.split('-').take(3).collect::<Vec<_>>().join("-")
}

/// Checks the log is dense with no message twice; returns the acknowledged
/// writes that are not at their acknowledged offset (lost), described.
fn lost_writes(log: &[(u64, String)], acked: &[Acked]) -> Vec<String> {
    assert_dense(log);
    assert_unique(log);
    acked
        .iter()
        .filter_map(|(off, msg)| {
            let at = log.get(*off as usize).map(|(_, m)| m.as_str());
            (at != Some(msg.as_str()))
                .then(|| format!("{} at offset {off}, found {:?}", short(msg), at.map(short)))
        })
        .collect()
}

#[test]
#[ignore = "needs root and FUSE; run by scripts/test.sh"]
fn power_cuts_lose_no_acknowledged_write() {
    let python = std::env::var("POWERLOSS_PYTHON").unwrap_or_else(|_| "python3".into());
    check_prerequisites(&python);
    let seed: u64 = std::env::var("POWERLOSS_SEED")
        .ok()
        .map(|s| s.parse().expect("POWERLOSS_SEED is a number"))
        .unwrap_or_else(rand::random);
    let cycles: usize = std::env::var("POWERLOSS_CYCLES")
        .ok()
        .map(|s| s.parse().expect("POWERLOSS_CYCLES is a number"))
        .unwrap_or(6);
    let strict = std::env::var("POWERLOSS_MODE").map_or(true, |m| m != "lenient");
    eprintln!("powerloss: seed {seed}, {cycles} cycles, strict directory entries: {strict}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let rig = start_rig(strict);
    let c = &rig.c;
    let variants = [Variant::All, Variant::Majority, Variant::Leader];
    let mut tally: Vec<(Variant, Tally)> =
        variants.iter().map(|v| (*v, Tally::default())).collect();
    let mut acked: Vec<Acked> = Vec::new();
    let mut total_lost = 0;
    for cycle in 0..cycles {
        let variant = variants[cycle % variants.len()];
        let leader = c.wait_leader();
        let victims: Vec<usize> = match variant {
            Variant::All => vec![0, 1, 2],
            Variant::Majority => {
                let others = c.others(leader);
                vec![leader, others[rng.gen_range(0..others.len())]]
            }
            Variant::Leader => vec![leader],
        };
        let run_for = Duration::from_millis(rng.gen_range(1_500..3_000));
        let stop = AtomicBool::new(false);
        let mut lost = Vec::new();
        let got = thread::scope(|s| {
            let writers = s.spawn(|| write_until(c, &stop, seed, cycle));
            thread::sleep(run_for);
            for &i in &victims {
                c.kill(i);
            }
            for &i in &victims {
                lost.push((c.id(i).to_string(), rig.fs[i].cut()));
            }
            stop.store(true, Ordering::SeqCst);
            writers.join().expect("writers")
        });
        let mut restarts = Vec::new();
        for &i in &victims {
            // Vary where the next cut lands: snapshot interval and segment size.
            let every = [25, 40, 100, 250][rng.gen_range(0..4)].to_string();
            let seg = [8192, 32768, 131072][rng.gen_range(0..3)].to_string();
            c.set_extra_env(
                i,
                &[
                    ("RAFTLOG_SNAPSHOT__EVERY_ENTRIES", &every),
                    ("RAFTLOG_WAL__SEGMENT_BYTES", &seg),
                ],
            );
            let t0 = Instant::now();
            c.restart(i);
            restarts.push(t0.elapsed());
        }
        c.wait_leader();
        // A power cut is not damage: a node that repaired itself from the leader
        // would hide a durability bug behind the fetch.
        for &i in &victims {
            let repairs = c.metric(i, "raftlog_repairs_started_total");
            assert_eq!(
                repairs,
                0.0,
                "cycle {cycle}: {} repaired after a power cut",
                c.id(i)
            );
        }
        let n_major = got.iter().filter(|(_, w)| *w == "majority").count();
        let n_all = got.len() - n_major;
        acked.extend(got.into_iter().map(|(a, _)| a));
        let log = c.wait_converged(&[0, 1, 2], acked.len());
        let lost_now = lost_writes(&log, &acked);
        let key = format!("c{cycle}-after");
        let r = c.write_retrying(c.wait_leader(), &key, json!("all"), Some(&key));
        assert!(
            r.status == 201 || r.status == 200,
            "w=all after cycle {cycle}: {}",
            r.body
        );
        acked.push((r.offset(), key));
        let lost_sum: u64 = lost.iter().map(|(_, b)| b).sum();
        total_lost += lost_sum;
        eprintln!(
            "powerloss cycle {cycle}: {variant:?} cut {:?} after {run_for:?}; acked w=majority {n_major}, \
             w=all {n_all}; bytes thrown away {lost:?}; restarts {restarts:?}; log {} messages",
            victims.iter().map(|&i| c.id(i)).collect::<Vec<_>>(),
            log.len()
        );
        let t = &mut tally
            .iter_mut()
            .find(|(v, _)| *v == variant)
            .expect("variant")
            .1;
        t.cycles += 1;
        t.acked_majority += n_major;
        t.acked_all += n_all;
        t.lost_bytes += lost_sum;
        t.lost_writes += lost_now.len();
        t.restarts.extend(restarts);
        assert!(
            lost_now.is_empty(),
            "cycle {cycle} ({variant:?}): acknowledged writes lost: {lost_now:?}"
        );
    }
    // Once more at the end: every write acknowledged in any cycle is there.
    let log = c.wait_converged(&[0, 1, 2], acked.len());
    let lost_end = lost_writes(&log, &acked);
    assert!(
        lost_end.is_empty(),
        "at the end: acknowledged writes lost: {lost_end:?}"
    );
    eprintln!("powerloss summary (seed {seed}, strict {strict}): variant | cycles | acked w=majority | acked w=all | lost | bytes thrown away | restart max");
    for (v, t) in &tally {
        eprintln!(
            "powerloss summary: {v:?} | {} | {} | {} | {} | {} | {:?}",
            t.cycles,
            t.acked_majority,
            t.acked_all,
            t.lost_writes,
            t.lost_bytes,
            t.restarts.iter().max().copied().unwrap_or_default()
        );
    }
    assert!(
        total_lost > 0,
        "no cut threw anything away: the test tested nothing"
    );
}
