//! `raftlog serve` processes, one per test host, and the HTTP calls the nemesis and
//! the final checks make (always from the calling thread's namespace: the
//! clients' one).
//!
//! Host i (1-based) listens on `10.211.0.<i>:8080` (HTTP) and `:7070` (gRPC). A
//! host keeps its address for the whole run; its node id changes when the
//! nemesis removes the node and a fresh one joins from that host (`n2`, then
//! `n2.r1`, ...). Every process is started through `ip netns exec`, which execs,
//! so the child's pid is the node's pid: SIGKILL/SIGSTOP/SIGCONT go straight to
//! it. `Drop` kills (SIGCONT first) and reaps every node.

use super::http::{self, HttpError, Resp};
use super::net::{ip, Net};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

pub const HTTP_PORT: u16 = 8080;
pub const GRPC_PORT: u16 = 7070;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_raftlog");

pub fn http_addr(host: usize) -> String {
    format!("{}:{HTTP_PORT}", ip(host))
}

pub fn grpc_addr(host: usize) -> String {
    format!("{}:{GRPC_PORT}", ip(host))
}

/// One HTTP call to host `h` (from the calling thread's namespace).
pub fn call(
    h: usize,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<Resp, HttpError> {
    http::request(method, &http_addr(h), path, &[], body, timeout)
}

struct Slot {
    id: String,
    incarnation: u32,
    child: Option<Child>,
    stopped: bool,
    data_dir: PathBuf,
    log_path: PathBuf,
    starts: u32,
    /// Exit status of a node that exited by itself, until looked at.
    exited: Option<String>,
}

pub struct Cluster {
    pub net: Arc<Net>,
    dir: PathBuf,
    env: Vec<(String, String)>,
    slots: Vec<Mutex<Slot>>,
    unexpected: Mutex<Vec<String>>,
}

impl Cluster {
    /// Describes one node per host of `net` (nothing started yet).
    pub fn new(net: Arc<Net>, dir: &Path, env: Vec<(String, String)>) -> Cluster {
        let slots = (1..=net.size())
            .map(|h| {
                Mutex::new(Slot {
                    id: format!("n{h}"),
                    incarnation: 0,
                    child: None,
                    stopped: false,
                    data_dir: dir.join(format!("n{h}")),
                    log_path: dir.join(format!("host{h}.log")),
                    starts: 0,
                    exited: None,
                })
            })
            .collect();
        Cluster {
            net,
            dir: dir.to_path_buf(),
            env,
            slots,
            unexpected: Mutex::new(Vec::new()),
        }
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }

    pub fn hosts(&self) -> Vec<usize> {
        (1..=self.size()).collect()
    }

    fn slot(&self, h: usize) -> MutexGuard<'_, Slot> {
        self.slots[h - 1].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn id(&self, h: usize) -> String {
        self.slot(h).id.clone()
    }

    pub fn data_dir(&self, h: usize) -> PathBuf {
        self.slot(h).data_dir.clone()
    }

    pub fn log_path(&self, h: usize) -> PathBuf {
        self.slot(h).log_path.clone()
    }

    /// Starts host `h`'s node: founding the cluster, joining through the other
    /// hosts, or (state in its data dir) recovering; neither flag matters then.
    pub fn start(&self, h: usize, bootstrap: bool) {
        let mut s = self.slot(h);
        assert!(s.child.is_none(), "host {h} already runs a node");
        s.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log_path)
            .expect("node log");
        let _ = writeln!(
            log,
            "===== nemesis harness: start #{} of {} on host {h} =====",
            s.starts, s.id
        );
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.net.ns(h),
            BIN,
            "serve",
            "--node-id",
            &s.id,
        ])
        .arg("--data-dir")
        .arg(&s.data_dir)
        .args(["--http-addr", &http_addr(h), "--grpc-addr", &grpc_addr(h)]);
        if bootstrap {
            cmd.arg("--bootstrap");
        } else {
            let others: Vec<String> = self
                .hosts()
                .into_iter()
                .filter(|&o| o != h)
                .map(grpc_addr)
                .collect();
            cmd.arg("--join").arg(others.join(","));
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn node on host {h}: {e}"));
        s.child = Some(child);
        s.stopped = false;
    }

    /// Pid of host `h`'s node, if it runs.
    pub fn pid(&self, h: usize) -> Option<u32> {
        self.slot(h).child.as_ref().map(Child::id)
    }

    pub fn is_running(&self, h: usize) -> bool {
        let mut s = self.slot(h);
        if let Some(c) = s.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                let _ = writeln!(
                    File::options().append(true).open(&s.log_path).expect("log"),
                    "===== nemesis harness: node exited: {status} ====="
                );
                s.child = None;
                s.exited = Some(status.to_string());
            }
        }
        s.child.is_some()
    }

    /// If host `h`'s node exited by itself (not killed by [`Cluster::kill`]): how.
    pub fn exit_status(&self, h: usize) -> Option<String> {
        if self.is_running(h) {
            return None;
        }
        self.slot(h).exited.take()
    }

    pub fn note_unexpected_exit(&self, h: usize, status: &str) {
        let id = self.id(h);
        self.unexpected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("host {h} ({id}): {status}"));
    }

    /// Every exit the harness did not cause.
    pub fn unexpected_exits(&self) -> Vec<String> {
        self.unexpected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn signal(&self, h: usize, sig: libc::c_int) -> bool {
        let Some(pid) = self.pid(h) else { return false };
        // SAFETY: kill(2) on our own child's pid (not yet reaped, so not recycled).
        unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
    }

    /// SIGKILL and reap host `h`'s node.
    pub fn kill(&self, h: usize) {
        let mut s = self.slot(h);
        if let Some(mut c) = s.child.take() {
            // SAFETY: as in `signal`.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGCONT);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        s.exited = None;
        s.stopped = false;
    }

    pub fn pause(&self, h: usize) -> bool {
        let ok = self.signal(h, libc::SIGSTOP);
        if ok {
            self.slot(h).stopped = true;
        }
        ok
    }

    pub fn resume(&self, h: usize) {
        if self.slot(h).stopped {
            self.signal(h, libc::SIGCONT);
            self.slot(h).stopped = false;
        }
    }

    pub fn is_paused(&self, h: usize) -> bool {
        self.slot(h).stopped
    }

    /// Gives host `h` a new node: a fresh id and an empty data dir (the old node
    /// must be gone from the membership and killed). Returns the new id.
    pub fn renew(&self, h: usize) -> String {
        let mut s = self.slot(h);
        assert!(s.child.is_none(), "host {h}: kill the old node first");
        s.incarnation += 1;
        s.id = format!("n{h}.r{}", s.incarnation);
        let fresh = self.dir.join(&s.id);
        let old = std::mem::replace(&mut s.data_dir, fresh);
        let _ = std::fs::remove_dir_all(old);
        s.id.clone()
    }

    /// The last `n` lines of host `h`'s node log.
    pub fn tail(&self, h: usize, n: usize) -> String {
        let text = std::fs::read(self.log_path(h))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    // ----- cluster views --------------------------------------------------------

    pub fn status(&self, h: usize) -> Option<Value> {
        match call(h, "GET", "/v1/status", None, Duration::from_millis(1500)) {
            Ok(r) if r.status == 200 => Some(r.json),
            _ => None,
        }
    }

    /// The host of the leader with the highest term among the answering nodes.
    pub fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for h in self.hosts() {
            if self.is_paused(h) || self.pid(h).is_none() {
                continue;
            }
            let Some(s) = self.status(h) else { continue };
            if s["role"] == "leader" && s["node_id"].as_str() == Some(&self.id(h)) {
                let term = s["term"].as_u64().unwrap_or(0);
                if best.is_none_or(|(t, _)| term > t) {
                    best = Some((term, h));
                }
            }
        }
        best.map(|(_, h)| h)
    }

    /// Waits up to `timeout` for a leader.
    pub fn wait_leader(&self, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `(node_id, voter)` of every member, as host `h` (a leader) sees them.
    pub fn members(&self, h: usize) -> Option<Vec<(String, bool)>> {
        let s = self.status(h)?;
        Some(
            s["members"]
                .as_array()?
                .iter()
                .filter_map(|m| Some((m["node_id"].as_str()?.to_string(), m["voter"].as_bool()?)))
                .collect(),
        )
    }

    /// True when the leader lists exactly the current node of every host, all voters.
    pub fn fully_formed(&self) -> Option<usize> {
        let l = self.leader()?;
        let mut got = self.members(l)?;
        got.sort();
        let mut want: Vec<(String, bool)> = self
            .hosts()
            .into_iter()
            .map(|h| (self.id(h), true))
            .collect();
        want.sort();
        (got == want).then_some(l)
    }

    pub fn wait_formed(&self, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.fully_formed() {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(150));
        }
    }

    /// Host `h`'s whole committed log, read locally page by page.
    pub fn full_log(&self, h: usize) -> Result<Vec<(u64, String)>, String> {
        let mut out = Vec::new();
        loop {
            let path = format!(
                "/v1/messages?from={}&limit=10000&consistency=local",
                out.len()
            );
            let r =
                call(h, "GET", &path, None, Duration::from_secs(10)).map_err(|e| e.to_string())?;
            if r.status != 200 {
                return Err(format!("{}: {}", r.status, r.body));
            }
            let msgs = r.json["messages"]
                .as_array()
                .ok_or_else(|| format!("no messages in {}", r.body))?;
            if msgs.is_empty() {
                return Ok(out);
            }
            for m in msgs {
                let off = m["offset"].as_u64().ok_or("message without offset")?;
                let text = m["message"].as_str().ok_or("message without text")?;
                out.push((off, text.to_string()));
            }
            if out.last().map(|(o, _)| *o + 1) != Some(out.len() as u64) {
                // Offsets are not dense; the checker reports it.
                return Ok(out);
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for h in self.hosts() {
            self.kill(h);
        }
    }
}
