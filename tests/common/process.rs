//! A process-level test cluster harness: N real `raftlog serve` child processes on
//! loopback, driven over the HTTP API with a blocking client.
//!
//! Why a separate file from `tests/common/mod.rs`: that module is the in-memory
//! consensus simulator shared by `tests/sim.rs`; this one starts the built binary.
//! A test file includes it with
//! `#[path = "common/process.rs"] mod harness;`.
//!
//! Invariants:
//! - Ports are picked by binding `127.0.0.1:0` and releasing; a node that then
//!   fails to bind ("address already in use") is started again, on fresh ports for
//!   a first start, on the same ports (after a short pause) for a restart.
//! - Every node is checked to be ours (its `/v1/status` names its node id) before
//!   a test talks to it, so a foreign process on a recycled port is never mistaken
//!   for a node.
//! - Each node's stdout and stderr go to `<tempdir>/<node>.log`, appended across
//!   restarts; when the test thread panics, the last lines of every log are printed.
//! - Every child process is killed by PID (SIGCONT first, so stopped ones die too)
//!   and reaped when the [`Cluster`] (or [`DevProcess`]) is dropped.
//! - Every wait is bounded ([`wait_for`]) and polls at a short interval; nothing
//!   synchronizes on a bare sleep.
#![allow(dead_code)]

use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_raftlog");

/// Poll interval of every wait.
pub const POLL: Duration = Duration::from_millis(25);

/// Generous bound for things that take "a few election timeouts" (election,
/// step-down, catch-up) on a loaded 2-core CI machine.
pub const LONG: Duration = Duration::from_secs(30);

/// Default timeout of one HTTP request (a stopped node never answers).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Timeout of a status probe (used while looking for a leader).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How many lines of each node's log are printed on failure.
const LOG_TAIL_LINES: usize = 80;

/// How many times a node start is retried when its port is taken.
const START_ATTEMPTS: usize = 8;

/// Fast Raft timing for tests: heartbeat 50 ms, election timeout 500..1000 ms.
pub fn fast_env() -> Vec<(String, String)> {
    [
        ("RAFTLOG_RAFT__HEARTBEAT_INTERVAL_MS", "50"),
        ("RAFTLOG_RAFT__ELECTION_TIMEOUT_MIN_MS", "500"),
        ("RAFTLOG_RAFT__ELECTION_TIMEOUT_MAX_MS", "1000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Polls `f` every [`POLL`] until it returns `Some`, or panics naming `what`
/// once `timeout` has passed.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(POLL);
    }
}

/// `n` distinct free loopback ports (all held until every one is picked).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// A base port such that `base..base + n` are all free right now.
pub fn free_port_range(n: u16) -> u16 {
    wait_for("a free range of consecutive ports", LONG, || {
        let first = TcpListener::bind("127.0.0.1:0").ok()?;
        let base = first.local_addr().ok()?.port();
        if u32::from(base) + u32::from(n) > 65_000 {
            return None;
        }
        let rest: Option<Vec<TcpListener>> = (1..n)
            .map(|k| TcpListener::bind(("127.0.0.1", base + k)).ok())
            .collect();
        rest.map(|_| base)
    })
}

/// Sends `sig` to `pid` (no-op if the process is gone).
pub fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) only sends a signal; the pid is one of our own children.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `T`, `Z`, ...), if the
/// process exists.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// PIDs of the live processes whose parent is `ppid`.
pub fn children_of(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, after)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(ppid) && fields[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

/// True while `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// True if `pid` runs the raftlog binary (guards against a recycled pid).
pub fn is_raftlog(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("raftlog"))
        .unwrap_or(false)
}

/// Does `pid`'s command line contain `needle`?
pub fn cmdline_contains(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(needle))
        .unwrap_or(false)
}

/// A node's log (lossy UTF-8; empty when it cannot be read yet).
pub fn log_text(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// What a node logged since the harness's latest start marker in its log.
pub fn log_since_last_start(path: &Path) -> String {
    let text = log_text(path);
    match text.rfind("===== harness: start #") {
        Some(k) => text[k..].to_string(),
        None => text,
    }
}

/// The last `n` lines of a file, ANSI colour codes removed.
pub fn tail(path: &Path, n: usize) -> String {
    let text = log_text(path);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    strip_ansi(&lines[start..].join("\n"))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// An error with its sources (reqwest's top-level message hides the cause).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

/// An HTTP answer: status, parsed JSON body (`Value::Null` if not JSON), raw body
/// and the `Retry-After` header.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub json: Value,
    pub body: String,
    pub retry_after: Option<String>,
}

impl Resp {
    fn from(resp: reqwest::blocking::Response) -> Result<Resp, String> {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.text().map_err(|e| format!("reading body: {e}"))?;
        let json = serde_json::from_str(&body).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            json,
            body,
            retry_after,
        })
    }

    /// `error.code` of an error body.
    pub fn code(&self) -> Option<&str> {
        self.json.pointer("/error/code").and_then(Value::as_str)
    }

    /// Asserts the SPEC's error shape `{"error": {"code", "message"}}` with this
    /// status and code.
    pub fn assert_error(&self, status: u16, code: &str, ctx: &str) {
        assert_eq!(self.status, status, "{ctx}: status; body {}", self.body);
        assert_eq!(
            self.code(),
            Some(code),
            "{ctx}: error code; body {}",
            self.body
        );
        let message = self.json.pointer("/error/message").and_then(Value::as_str);
        assert!(
            message.is_some_and(|m| !m.is_empty()),
            "{ctx}: error.message must be a non-empty string; body {}",
            self.body
        );
    }

    /// `offset` of a successful write.
    pub fn offset(&self) -> u64 {
        self.json["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("no offset in {}", self.body))
    }
}

/// What the harness knows of one node.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// `n1`, `n2`, ...
    pub id: String,
    pub http_port: u16,
    pub grpc_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// `None`: founds the cluster; `Some(addr)`: joins through it.
    pub join: Option<String>,
}

impl NodeInfo {
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }
}

#[derive(Default)]
struct Proc {
    child: Option<Child>,
    stopped: bool,
    starts: u32,
    /// Start without `--bootstrap` / `--join` (see [`Cluster::set_plain_start`]).
    plain: bool,
    /// Extra command-line flags (see [`Cluster::set_extra_args`]).
    extra_args: Vec<String>,
    /// Extra environment, after the cluster's (see [`Cluster::set_extra_env`]).
    extra_env: Vec<(String, String)>,
}

/// Why a start did not produce a serving node.
enum StartError {
    PortInUse(String),
    Other(String),
}

/// A running cluster of `raftlog serve` processes. Node `i` (0-based) is `n{i+1}`.
pub struct Cluster {
    dir: tempfile::TempDir,
    infos: Vec<NodeInfo>,
    procs: Vec<Mutex<Proc>>,
    env: Vec<(String, String)>,
    client: Client,
    /// `http` or `https` (nodes with `[tls] http`).
    scheme: &'static str,
}

impl Cluster {
    /// Starts an `n`-node cluster with [`fast_env`] timing and waits until every
    /// node is a voter, ready, and knows the leader.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with_env(n, &[])
    }

    /// As [`Cluster::start`], with extra `RAFTLOG_*` environment for every node.
    pub fn start_with_env(n: usize, extra_env: &[(&str, &str)]) -> Cluster {
        assert!(n >= 1);
        let dir = tempfile::Builder::new()
            .prefix("raftlog-cluster-")
            .tempdir()
            .expect("tempdir");
        let mut env = fast_env();
        env.push(("NO_COLOR".into(), "1".into()));
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let ports = free_ports(2 * n);
        let infos: Vec<NodeInfo> = (0..n)
            .map(|i| NodeInfo {
                id: format!("n{}", i + 1),
                http_port: ports[2 * i],
                grpc_port: ports[2 * i + 1],
                data_dir: dir.path().join(format!("n{}", i + 1)),
                log_path: dir.path().join(format!("n{}.log", i + 1)),
                join: None,
            })
            .collect();
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(16)
            .build()
            .expect("http client");
        let mut c = Cluster {
            dir,
            procs: (0..n).map(|_| Mutex::new(Proc::default())).collect(),
            infos,
            env,
            client,
            scheme: "http",
        };
        c.first_start(0);
        let seed = c.infos[0].grpc_addr();
        for i in 1..n {
            c.infos[i].join = Some(seed.clone());
        }
        // Joiners start one after another (each waits for its HTTP API, which
        // comes up once it has joined), so a port clash can be retried alone.
        for i in 1..n {
            c.first_start(i);
        }
        c.wait_all_voters();
        c
    }

    /// A cluster with no node yet, [`fast_env`] timing plus `extra_env`; nodes
    /// come with [`Cluster::add_node`] (or [`Cluster::add_node_info`] and a start).
    pub fn empty(extra_env: &[(&str, &str)]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("raftlog-cluster-")
            .tempdir()
            .expect("tempdir");
        let mut env = fast_env();
        env.push(("NO_COLOR".into(), "1".into()));
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(16)
            .build()
            .expect("http client");
        Cluster {
            dir,
            infos: Vec::new(),
            procs: Vec::new(),
            env,
            client,
            scheme: "http",
        }
    }

    /// Talks to the nodes with `client` over `scheme` from now on (HTTPS with a
    /// private CA, default headers such as a bearer token).
    pub fn set_client(&mut self, client: Client, scheme: &'static str) {
        self.client = client;
        self.scheme = scheme;
    }

    /// First start of node `i` (see [`Cluster::add_node_info`]), waiting until its
    /// HTTP API answers.
    pub fn start_node(&mut self, i: usize) {
        self.first_start(i);
    }

    /// Describes node `n{len+1}` (fresh ports, its own data dir and log) without
    /// starting it; `join` `None` founds (`--bootstrap`), `Some(addrs)` joins
    /// (`--join=<addrs>`, comma separated for several). Returns its index.
    pub fn add_node_info(&mut self, join: Option<String>) -> usize {
        let i = self.infos.len();
        let ports = free_ports(2);
        let id = format!("n{}", i + 1);
        self.infos.push(NodeInfo {
            http_port: ports[0],
            grpc_port: ports[1],
            data_dir: self.dir.path().join(&id),
            log_path: self.dir.path().join(format!("{id}.log")),
            id,
            join,
        });
        self.procs.push(Mutex::new(Proc::default()));
        i
    }

    /// Adds node `n{len+1}` and starts it on an empty data dir, waiting until its
    /// HTTP API answers (for a joiner: once a leader has accepted it). Returns its
    /// index.
    pub fn add_node(&mut self, join: Option<String>) -> usize {
        let i = self.add_node_info(join);
        self.first_start(i);
        i
    }

    /// Changes how node `i` starts next time (`None`: `--bootstrap`).
    pub fn set_join(&mut self, i: usize, join: Option<String>) {
        self.infos[i].join = join;
    }

    /// With `plain`, node `i` is (re)started with neither `--bootstrap` nor
    /// `--join` (a node recovering from its data dir needs neither).
    pub fn set_plain_start(&self, i: usize, plain: bool) {
        self.proc(i).plain = plain;
    }

    /// Extra flags for node `i`'s next starts (after the harness's own flags).
    pub fn set_extra_args(&self, i: usize, args: &[&str]) {
        self.proc(i).extra_args = args.iter().map(|a| a.to_string()).collect();
    }

    /// Extra environment for node `i`'s next starts (overrides the cluster's).
    pub fn set_extra_env(&self, i: usize, env: &[(&str, &str)]) {
        self.proc(i).extra_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// First start of node `i` without waiting for its HTTP API (a joiner serves
    /// HTTP only once accepted): returns once the process has bound its ports
    /// (its log says "starting" after the harness's start marker). A port clash
    /// re-picks ports and data dir, as for any first start.
    pub fn spawn_detached(&mut self, i: usize) {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            assert!(
                self.proc(i).child.is_none(),
                "{} is already running",
                self.infos[i].id
            );
            let child = self.spawn(i);
            {
                let mut p = self.proc(i);
                p.child = Some(child);
                p.stopped = false;
            }
            let id = self.infos[i].id.clone();
            let path = self.infos[i].log_path.clone();
            let outcome = wait_for(&format!("{id} to bind its ports"), LONG, || {
                if let Some(status) = self.exited(i) {
                    return Some(Err(status));
                }
                log_since_last_start(&path)
                    .contains("starting")
                    .then_some(Ok(()))
            });
            match outcome {
                Ok(()) => return,
                Err(status) => {
                    last = tail(&path, 20);
                    if !last.contains("in use") {
                        panic!("{id} exited early ({status}); log:\n{last}");
                    }
                    let ports = free_ports(2);
                    self.infos[i].http_port = ports[0];
                    self.infos[i].grpc_port = ports[1];
                    let _ = std::fs::remove_dir_all(&self.infos[i].data_dir);
                }
            }
        }
        panic!("{} could not get free ports: {last}", self.infos[i].id);
    }

    /// Reaps node `i` if its process has exited; its exit status then.
    pub fn exited(&self, i: usize) -> Option<ExitStatus> {
        let mut p = self.proc(i);
        match p.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => {
                p.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.infos.len()
    }

    pub fn info(&self, i: usize) -> &NodeInfo {
        &self.infos[i]
    }

    /// The node id of node `i` (`n{i+1}`).
    pub fn id(&self, i: usize) -> &str {
        &self.infos[i].id
    }

    /// The index of the node named `id`.
    pub fn index_of(&self, id: &str) -> usize {
        self.infos
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("unknown node id {id}"))
    }

    /// The temp directory holding data dirs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `http://127.0.0.1:<port><path>` of node `i` (`https` after [`Cluster::set_client`]).
    pub fn url(&self, i: usize, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.infos[i].http_addr(), path)
    }

    fn proc(&self, i: usize) -> MutexGuard<'_, Proc> {
        self.procs[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lines of node `i`'s whole log (all its starts) containing `needle`.
    pub fn log_count(&self, i: usize, needle: &str) -> usize {
        log_text(&self.infos[i].log_path)
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// PID of node `i`'s process, if running.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.proc(i).child.as_ref().map(Child::id)
    }

    /// True if node `i`'s process runs and is not stopped (SIGSTOP).
    pub fn is_up(&self, i: usize) -> bool {
        let p = self.proc(i);
        p.child.is_some() && !p.stopped
    }

    /// Indices of the nodes that run and are not stopped.
    pub fn up_nodes(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.is_up(i)).collect()
    }

    // ----- process control -------------------------------------------------------

    /// First start of node `i` on an empty data dir; a port clash re-picks ports.
    fn first_start(&mut self, i: usize) {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match self.try_start(i) {
                Ok(()) => return,
                Err(StartError::PortInUse(log)) => {
                    last = log;
                    let ports = free_ports(2);
                    self.infos[i].http_port = ports[0];
                    self.infos[i].grpc_port = ports[1];
                    let _ = std::fs::remove_dir_all(&self.infos[i].data_dir);
                }
                Err(StartError::Other(e)) => panic!("{} failed to start: {e}", self.infos[i].id),
            }
        }
        panic!("{} could not get free ports: {last}", self.infos[i].id);
    }

    /// Starts node `i` again from its data dir, on the same ports, and waits until
    /// its HTTP API answers.
    pub fn restart(&self, i: usize) {
        assert!(
            self.proc(i).child.is_none(),
            "{} is still running",
            self.infos[i].id
        );
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match self.try_start(i) {
                Ok(()) => return,
                Err(StartError::PortInUse(log)) => {
                    last = log;
                    // The old socket may linger a moment; retry on the same ports.
                    thread::sleep(Duration::from_millis(250));
                }
                Err(StartError::Other(e)) => panic!("{} failed to restart: {e}", self.infos[i].id),
            }
        }
        panic!("{} could not rebind its ports: {last}", self.infos[i].id);
    }

    fn spawn(&self, i: usize) -> Child {
        let info = &self.infos[i];
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&info.log_path)
            .expect("open node log");
        let starts = {
            let mut p = self.proc(i);
            p.starts += 1;
            p.starts
        };
        let _ = writeln!(
            log,
            "===== harness: start #{starts} of {} (http {}, grpc {}) =====",
            info.id,
            info.http_addr(),
            info.grpc_addr()
        );
        let err = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg(format!("--node-id={}", info.id))
            .arg(format!("--data-dir={}", info.data_dir.display()))
            .arg(format!("--http-addr={}", info.http_addr()))
            .arg(format!("--grpc-addr={}", info.grpc_addr()));
        let plain = self.proc(i).plain;
        match &info.join {
            _ if plain => {}
            None => {
                cmd.arg("--bootstrap");
            }
            Some(seed) => {
                cmd.arg(format!("--join={seed}"));
            }
        }
        let (extra_args, extra_env) = {
            let p = self.proc(i);
            (p.extra_args.clone(), p.extra_env.clone())
        };
        cmd.args(&extra_args);
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN}: {e}"))
    }

    fn try_start(&self, i: usize) -> Result<(), StartError> {
        let child = self.spawn(i);
        {
            let mut p = self.proc(i);
            p.child = Some(child);
            p.stopped = false;
        }
        let id = self.infos[i].id.clone();
        let deadline = Instant::now() + LONG;
        loop {
            let exited = {
                let mut p = self.proc(i);
                match p.child.as_mut().map(|c| c.try_wait()) {
                    Some(Ok(Some(status))) => {
                        p.child = None;
                        Some(status)
                    }
                    _ => None,
                }
            };
            if let Some(status) = exited {
                let log = tail(&self.infos[i].log_path, 20);
                return if log.contains("in use") {
                    Err(StartError::PortInUse(log))
                } else {
                    Err(StartError::Other(format!(
                        "exited early ({status}); log:\n{log}"
                    )))
                };
            }
            if let Ok(r) = self.try_get_timeout(i, "/v1/status", PROBE_TIMEOUT) {
                if r.status == 200 {
                    let got = r.json["node_id"].as_str().unwrap_or_default();
                    if got != id {
                        return Err(StartError::Other(format!(
                            "port {} answers as {got:?}, not {id}: a foreign process",
                            self.infos[i].http_port
                        )));
                    }
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(StartError::Other(format!(
                    "HTTP API not up within {LONG:?}; log:\n{}",
                    tail(&self.infos[i].log_path, 40)
                )));
            }
            thread::sleep(POLL);
        }
    }

    /// SIGKILL node `i` and reap it.
    pub fn kill(&self, i: usize) {
        let mut p = self.proc(i);
        if let Some(mut child) = p.child.take() {
            signal(child.id(), libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
        p.stopped = false;
    }

    /// SIGSTOP node `i` (it keeps its sockets but answers nothing) and wait until
    /// the kernel reports it stopped.
    pub fn stop(&self, i: usize) {
        let pid = self
            .pid(i)
            .unwrap_or_else(|| panic!("{} is not running", self.infos[i].id));
        signal(pid, libc::SIGSTOP);
        self.proc(i).stopped = true;
        wait_for(&format!("{} to be stopped", self.infos[i].id), LONG, || {
            (proc_state(pid) == Some('T')).then_some(())
        });
    }

    /// SIGCONT node `i`.
    pub fn cont(&self, i: usize) {
        if let Some(pid) = self.pid(i) {
            signal(pid, libc::SIGCONT);
        }
        self.proc(i).stopped = false;
    }

    /// SIGTERM node `i` and wait (bounded by `timeout`) for it to exit; returns
    /// its exit status, or `None` if it was still running at the deadline (it is
    /// then left running, for the caller to report and the Drop to kill).
    pub fn term(&self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        let pid = self
            .pid(i)
            .unwrap_or_else(|| panic!("{} is not running", self.infos[i].id));
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut p = self.proc(i);
                if let Some(Ok(Some(status))) = p.child.as_mut().map(|c| c.try_wait()) {
                    p.child = None;
                    return Some(status);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    // ----- HTTP --------------------------------------------------------------------

    /// GET `path` on node `i` with a custom timeout; `Err` on a transport error.
    pub fn try_get_timeout(&self, i: usize, path: &str, timeout: Duration) -> Result<Resp, String> {
        let resp = self
            .client
            .get(self.url(i, path))
            .timeout(timeout)
            .send()
            .map_err(|e| error_chain(&e))?;
        Resp::from(resp)
    }

    /// The unlabelled sample `name` (e.g. `raftlog_elections_won_total`) of node
    /// `i`'s `/metrics`. `Err` when the node does not answer or does not expose it:
    /// a missing series is never read as 0, so a renamed metric cannot make a
    /// "nothing happened" check pass.
    pub fn try_metric(&self, i: usize, name: &str) -> Result<f64, String> {
        let r = self.try_get_timeout(i, "/metrics", PROBE_TIMEOUT)?;
        if r.status != 200 {
            return Err(format!("GET /metrics: {} {}", r.status, r.body));
        }
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("{} exposes no sample {name}", self.infos[i].id))
    }

    /// As [`Cluster::try_metric`], panicking when it fails.
    pub fn metric(&self, i: usize, name: &str) -> f64 {
        self.try_metric(i, name)
            .unwrap_or_else(|e| panic!("metric {name} of {}: {e}", self.infos[i].id))
    }

    /// GET `path` on node `i`; panics on a transport error.
    pub fn get(&self, i: usize, path: &str) -> Resp {
        self.try_get_timeout(i, path, REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", self.infos[i].id))
    }

    /// Any request with a raw body; `Err` on a transport error.
    pub fn try_request(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Resp, String> {
        let mut req = self
            .client
            .request(method, self.url(i, path))
            .timeout(timeout);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        Resp::from(req.send().map_err(|e| error_chain(&e))?)
    }

    /// POST a raw body to `path` on node `i`; panics on a transport error.
    pub fn post_raw(
        &self,
        i: usize,
        path: &str,
        body: impl Into<String>,
        headers: &[(&str, &str)],
    ) -> Resp {
        self.try_request(
            i,
            reqwest::Method::POST,
            path,
            Some(body.into()),
            headers,
            REQUEST_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("POST {path} on {}: {e}", self.infos[i].id))
    }

    /// POST /v1/messages `{"message": msg, "w": w}` (`w` omitted when null).
    pub fn write(&self, i: usize, msg: &str, w: Value) -> Resp {
        self.write_with(i, msg, w, "", None, REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("write {msg:?} to {}: {e}", self.infos[i].id))
    }

    /// The general write: `query` is appended to the path as is (`"?w=2"` or
    /// `""`), `key` becomes the `Idempotency-Key` header.
    pub fn write_with(
        &self,
        i: usize,
        msg: &str,
        w: Value,
        query: &str,
        key: Option<&str>,
        timeout: Duration,
    ) -> Result<Resp, String> {
        let mut body = json!({ "message": msg });
        if !w.is_null() {
            body["w"] = w;
        }
        let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
        self.try_request(
            i,
            reqwest::Method::POST,
            &format!("/v1/messages{query}"),
            Some(body.to_string()),
            &headers,
            timeout,
        )
    }

    /// Writes until a 201 (or 200 duplicate) comes back, retrying 503s and
    /// transport errors (e.g. during an election) for up to [`LONG`]. Use only for
    /// writes that are safe to retry: with an idempotency key, or where a
    /// duplicate would be caught by the caller's exactly-once check.
    pub fn write_retrying(&self, i: usize, msg: &str, w: Value, key: Option<&str>) -> Resp {
        wait_for(
            &format!("write {msg:?} via {} to succeed", self.infos[i].id),
            LONG,
            || match self.write_with(i, msg, w.clone(), "", key, REQUEST_TIMEOUT) {
                Ok(r) if r.status == 201 || r.status == 200 => Some(r),
                Ok(r) if r.status == 503 => None,
                Ok(r) => panic!(
                    "write {msg:?} via {}: unexpected {} {}",
                    self.infos[i].id, r.status, r.body
                ),
                Err(_) => None,
            },
        )
    }

    /// GET /v1/messages?from=&consistency= on node `i`.
    pub fn read(&self, i: usize, from: u64, consistency: &str) -> Resp {
        self.get(
            i,
            &format!("/v1/messages?from={from}&consistency={consistency}"),
        )
    }

    /// Node `i`'s whole committed log as `(offset, message)`, paging through
    /// GET /v1/messages; `Err` on any non-200 or transport error.
    pub fn try_log(&self, i: usize, consistency: &str) -> Result<Vec<(u64, String)>, String> {
        let mut out = Vec::new();
        let mut from = 0;
        let mut cons = consistency;
        loop {
            let path = format!("/v1/messages?from={from}&consistency={cons}&limit=1000");
            let r = self.try_get_timeout(i, &path, REQUEST_TIMEOUT)?;
            if r.status != 200 {
                return Err(format!("{} {}", r.status, r.body));
            }
            let msgs = r.json["messages"]
                .as_array()
                .ok_or_else(|| format!("no messages in {}", r.body))?;
            if msgs.is_empty() {
                return Ok(out);
            }
            for m in msgs {
                let off = m["offset"]
                    .as_u64()
                    .ok_or_else(|| format!("bad entry {m}"))?;
                let text = m["message"]
                    .as_str()
                    .ok_or_else(|| format!("bad entry {m}"))?;
                out.push((off, text.to_string()));
            }
            let next = r.json["next_offset"]
                .as_u64()
                .ok_or_else(|| format!("no next_offset in {}", r.body))?;
            if next <= from {
                return Err(format!("next_offset {next} does not advance past {from}"));
            }
            from = next;
            // Later pages need no new ReadIndex: this node has applied past the
            // first page's read point.
            cons = "local";
        }
    }

    /// As [`Cluster::try_log`], panicking on error.
    pub fn log(&self, i: usize, consistency: &str) -> Vec<(u64, String)> {
        self.try_log(i, consistency)
            .unwrap_or_else(|e| panic!("reading the log of {}: {e}", self.infos[i].id))
    }

    /// Waits until every node in `nodes` has the same local log of at least
    /// `min_len` messages; returns it (checked dense and 0-based).
    pub fn wait_converged(&self, nodes: &[usize], min_len: usize) -> Vec<(u64, String)> {
        let last: std::cell::RefCell<Vec<(usize, usize)>> = Default::default();
        let log = wait_for_or(
            &format!("nodes {nodes:?} to hold the same log of at least {min_len} messages"),
            LONG,
            || {
                let logs: Vec<Vec<(u64, String)>> = nodes
                    .iter()
                    .map(|&i| self.try_log(i, "local").unwrap_or_default())
                    .collect();
                *last.borrow_mut() = nodes
                    .iter()
                    .zip(&logs)
                    .map(|(&i, l)| (i, l.len()))
                    .collect();
                let first = &logs[0];
                (first.len() >= min_len && logs.iter().all(|l| l == first)).then(|| first.clone())
            },
            || format!("last seen lengths (node, len): {:?}", last.borrow()),
        );
        assert_dense(&log);
        log
    }

    /// `/v1/status` of node `i`, or `None` if it does not answer 200 promptly.
    pub fn status(&self, i: usize) -> Option<Value> {
        match self.try_get_timeout(i, "/v1/status", PROBE_TIMEOUT) {
            Ok(r) if r.status == 200 => Some(r.json),
            _ => None,
        }
    }

    /// The node that, among the running and not stopped ones, reports itself
    /// leader with the highest term.
    pub fn leader(&self) -> Option<usize> {
        self.up_nodes()
            .into_iter()
            .filter_map(|i| {
                let s = self.status(i)?;
                (s["role"] == "leader").then(|| (s["term"].as_u64().unwrap_or(0), i))
            })
            .max()
            .map(|(_, i)| i)
    }

    /// Waits for a leader that every running, not stopped node agrees on.
    pub fn wait_leader(&self) -> usize {
        self.wait_leader_among(&self.up_nodes())
    }

    /// Waits for a leader among `nodes` that every node in `nodes` names.
    pub fn wait_leader_among(&self, nodes: &[usize]) -> usize {
        wait_for(
            &format!("a leader agreed on by nodes {nodes:?}"),
            LONG,
            || {
                let l = self.leader()?;
                if !nodes.contains(&l) {
                    return None;
                }
                let id = self.id(l).to_string();
                nodes
                    .iter()
                    .all(|&i| {
                        self.status(i)
                            .is_some_and(|s| s["leader_id"] == id.as_str())
                    })
                    .then_some(l)
            },
        )
    }

    /// The nodes other than `leader`.
    pub fn others(&self, leader: usize) -> Vec<usize> {
        (0..self.len()).filter(|&i| i != leader).collect()
    }

    /// Waits until the leader lists every node as a voter and every node is
    /// ready (run phase, leader known).
    pub fn wait_all_voters(&self) -> usize {
        let n = self.len();
        wait_for(&format!("all {n} nodes to be ready voters"), LONG, || {
            let l = self.leader()?;
            let s = self.status(l)?;
            let members = s["members"].as_array()?;
            let voters = members.iter().filter(|m| m["voter"] == true).count();
            if members.len() != n || voters != n {
                return None;
            }
            (0..n)
                .all(|i| {
                    self.try_get_timeout(i, "/ready", PROBE_TIMEOUT)
                        .is_ok_and(|r| r.status == 200)
                })
                .then_some(l)
        })
    }
}

/// As [`wait_for`], with extra context computed on timeout.
pub fn wait_for_or<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    ctx: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; {}", ctx());
        }
        thread::sleep(POLL);
    }
}

/// Asserts offsets are 0, 1, 2, ... with no gap.
pub fn assert_dense(log: &[(u64, String)]) {
    for (k, (off, _)) in log.iter().enumerate() {
        assert_eq!(*off, k as u64, "offsets must be dense and 0-based: {log:?}");
    }
}

/// Asserts no message appears twice (tests write unique messages).
pub fn assert_unique(log: &[(u64, String)]) {
    let mut seen = std::collections::HashMap::new();
    for (off, m) in log {
        if let Some(prev) = seen.insert(m.as_str(), *off) {
            panic!("message {m:?} appears twice, at offsets {prev} and {off}");
        }
    }
}

/// How many times `msg` appears in `log`.
pub fn count(log: &[(u64, String)], msg: &str) -> usize {
    log.iter().filter(|(_, m)| m == msg).count()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "===== raftlog cluster in {} failed; node logs follow =====",
                self.dir.path().display()
            );
            for info in &self.infos {
                eprintln!(
                    "----- {} (http {}, grpc {}), last {LOG_TAIL_LINES} lines of {} -----",
                    info.id,
                    info.http_addr(),
                    info.grpc_addr(),
                    info.log_path.display()
                );
                eprintln!("{}", tail(&info.log_path, LOG_TAIL_LINES));
            }
        }
        for p in &self.procs {
            let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(mut child) = p.child.take() {
                signal(child.id(), libc::SIGCONT);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A `raftlog dev` process in its own process group, output captured to a file.
pub struct DevProcess {
    pub child: Option<Child>,
    pub pid: u32,
    pub log_path: PathBuf,
    pub data_dir: PathBuf,
    pub base_http_port: u16,
    pub base_grpc_port: u16,
    pub nodes: u16,
    /// Child PIDs seen so far (to kill them if the dev process dies first).
    pub seen_children: Mutex<Vec<u32>>,
    _dir: tempfile::TempDir,
}

impl DevProcess {
    /// Starts `raftlog dev --nodes <nodes>` on free ports with a temp data dir.
    pub fn start(nodes: u16) -> DevProcess {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new()
            .prefix("raftlog-dev-")
            .tempdir()
            .expect("tempdir");
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("dev.log");
        let base_http_port = free_port_range(nodes);
        let base_grpc_port = free_port_range(nodes);
        let log = File::create(&log_path).expect("create dev log");
        let err = log.try_clone().expect("clone log");
        let child = Command::new(BIN)
            .arg("dev")
            .arg(format!("--nodes={nodes}"))
            .arg(format!("--base-http-port={base_http_port}"))
            .arg(format!("--base-grpc-port={base_grpc_port}"))
            .arg(format!("--data-dir={}", data_dir.display()))
            .envs(fast_env())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN} dev: {e}"));
        let pid = child.id();
        DevProcess {
            child: Some(child),
            pid,
            log_path,
            data_dir,
            base_http_port,
            base_grpc_port,
            nodes,
            seen_children: Mutex::new(Vec::new()),
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:<base+k><path>` of node `k` (0-based).
    pub fn url(&self, k: u16, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.base_http_port + k, path)
    }

    /// Waits for the dev process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "----- raftlog dev output, last {LOG_TAIL_LINES} lines of {} -----",
                self.log_path.display()
            );
            eprintln!("{}", tail(&self.log_path, LOG_TAIL_LINES));
        }
        let mut pids = self
            .seen_children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
        {
            // Still our process (not reaped), so its pid cannot have been reused.
            pids.extend(children_of(self.pid));
        }
        // A pid seen earlier may belong to another test's node by now: only kill
        // processes whose command line names this dev cluster's data dir.
        let ours = self.data_dir.to_string_lossy().into_owned();
        for pid in pids {
            if alive(pid) && is_raftlog(pid) && cmdline_contains(pid, &ours) {
                signal(pid, libc::SIGCONT);
                signal(pid, libc::SIGKILL);
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sets its flag when dropped: background writers stop even when the test
/// thread panics (otherwise the thread scope would wait for them forever).
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
