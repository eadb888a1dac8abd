//! Test hosts in network namespaces, and the network faults between them.
//!
//! The recipe of `shared/faults/` (README, `netns_cluster.sh`, `nfq_delay.py`),
//! redone with a per-run prefix so two runs (or another engineer's run of the
//! recipe) never share a namespace:
//! - `<prefix>-br` holds the bridge `br0`; `<prefix>-n<i>` is host i
//!   (`10.211.0.<i>/24` on `eth0`); `<prefix>-c` is the clients' host
//!   (`10.211.0.100`). Nothing is added to the root namespace but an
//!   `unreachable 10.211.0.0/24` route, the recipe's safety net.
//! - Partitions are stateless nft drops (table `inet faults`); a two-way partition
//!   drops on input and output on both sides, a one-way one only on the input
//!   side of the deaf host (output drops would hand EPERM to local senders).
//! - Loss: nft `numgen random` on input. Delay (+jitter, +loss): iptables NFQUEUE
//!   on input and `nfq_delay.py` in the host's namespace (the kernel has no netem;
//!   nft's own queue statement is not built in).
//! - Clients never run in the root namespace: [`enter`] moves the calling thread
//!   (network namespaces are per thread, and inherited by threads it spawns) and
//!   proves it by binding the client address.
//!
//! Cleanup: [`Net`]'s `Drop` kills the delayers and every process still inside
//! one of its namespaces, then deletes the namespaces; [`sweep_stale`] removes
//! what a killed earlier run left behind (namespaces whose owner pid is gone).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The test subnet (a /24 of its own, not the recipe's 10.210.0).
pub const SUBNET: &str = "10.211.0";
/// Host number of the clients' namespace.
pub const CLIENT_HOST: usize = 100;
/// Namespace names start with this, then the owner's pid.
const PREFIX: &str = "rfj";

/// Address of host `i` (1-based).
pub fn ip(i: usize) -> String {
    format!("{SUBNET}.{i}")
}

/// Runs a command; `Err` with its output when it fails.
pub fn sh(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        pipe.write_all(input.as_bytes())
            .map_err(|e| format!("{}: writing stdin: {e}", args.join(" ")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "`{}` failed ({}): {text}",
            args.join(" "),
            out.status
        ))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = sh(args, None) {
        panic!("network setup: {e}");
    }
}

/// Why this machine cannot run the harness, if it cannot.
pub fn unsupported() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces)".into());
    }
    for tool in ["ip", "nft", "iptables", "python3"] {
        if sh(&["sh", "-c", &format!("command -v {tool}")], None).is_err() {
            return Some(format!(
                "{tool} is not installed (scripts/test.sh installs it)"
            ));
        }
    }
    None
}

/// Moves the calling thread into namespace `ns` and checks that it holds
/// `must_have` (an address of that namespace).
pub fn enter(ns: &str, must_have: &str) {
    let path = format!("/var/run/netns/{ns}");
    let f = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on an fd we own; CLONE_NEWNET affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({ns}): {}", std::io::Error::last_os_error());
    std::net::TcpListener::bind((must_have, 0))
        .unwrap_or_else(|e| panic!("thread is not in namespace {ns} (bind {must_have}: {e})"));
}

/// PIDs of the processes inside namespace `ns`.
fn pids_in(ns: &str) -> Vec<i32> {
    sh(&["ip", "netns", "pids", ns], None)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn kill_all_in(ns: &str) {
    for _ in 0..50 {
        let me = i32::try_from(std::process::id()).unwrap_or(-1);
        let pids: Vec<i32> = pids_in(ns).into_iter().filter(|&p| p != me).collect();
        if pids.is_empty() {
            return;
        }
        for p in pids {
            // SAFETY: kill(2) only sends signals; these run in our test namespace.
            unsafe {
                libc::kill(p, libc::SIGCONT);
                libc::kill(p, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn our_namespaces() -> Vec<String> {
    sh(&["ip", "netns", "list"], None)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect()
}

/// Deletes namespaces (and kills their processes) left by earlier runs whose
/// process is gone (a run killed by SIGKILL cannot clean up itself).
pub fn sweep_stale() {
    for ns in our_namespaces() {
        let owner: Option<i32> = ns[PREFIX.len()..]
            .split(['x', '-'])
            .next()
            .and_then(|p| p.parse().ok());
        let alive = owner.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            eprintln!("nemesis: removing stale namespace {ns}");
            kill_all_in(&ns);
            let _ = sh(&["ip", "netns", "del", &ns], None);
        }
    }
}

/// Which faults are set on one host, as nft/iptables state.
#[derive(Default, Clone, Debug, PartialEq)]
struct HostFaults {
    /// Hosts whose packets this host drops on input.
    deaf_to: Vec<usize>,
    /// Hosts this host drops packets to on output.
    mute_to: Vec<usize>,
    loss_pct: u32,
}

/// The test network: `n` hosts and the clients' host, each in its namespace.
pub struct Net {
    prefix: String,
    n: usize,
    dir: PathBuf,
    faults: Mutex<BTreeMap<usize, HostFaults>>,
    delayers: Mutex<BTreeMap<usize, Child>>,
    route_added: bool,
    script: PathBuf,
}

impl Net {
    /// Creates the bridge, `n` hosts and the clients' host. `tag` tells two nets of
    /// one process apart; `dir` receives the delayers' logs.
    pub fn up(n: usize, tag: &str, dir: &Path) -> Net {
        let prefix = format!("{PREFIX}{}x{tag}", std::process::id());
        let route_added = sh(
            &[
                "ip",
                "route",
                "add",
                "unreachable",
                &format!("{SUBNET}.0/24"),
            ],
            None,
        )
        .is_ok();
        let net = Net {
            prefix,
            n,
            dir: dir.to_path_buf(),
            faults: Mutex::new(BTreeMap::new()),
            delayers: Mutex::new(BTreeMap::new()),
            route_added,
            script: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/netns/nfq_delay.py"),
        };
        let br = net.bridge_ns();
        must(&["ip", "netns", "add", &br]);
        must(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &br, "link", "set", "br0", "up"]);
        let mut hosts: Vec<(String, usize)> = (1..=n).map(|i| (net.ns(i), i)).collect();
        hosts.push((net.client_ns(), CLIENT_HOST));
        for (ns, host) in hosts {
            let veth = format!("v{host}");
            must(&["ip", "netns", "add", &ns]);
            must(&[
                "ip", "link", "add", &veth, "netns", &br, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            must(&["ip", "-n", &br, "link", "set", &veth, "master", "br0", "up"]);
            must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", ip(host)),
                "dev",
                "eth0",
            ]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    pub fn size(&self) -> usize {
        self.n
    }

    /// Every namespace of this net is named `<prefix>-...`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Namespace of host `i` (1-based).
    pub fn ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }

    pub fn client_ns(&self) -> String {
        format!("{}-c", self.prefix)
    }

    fn bridge_ns(&self) -> String {
        format!("{}-br", self.prefix)
    }

    /// Moves the calling thread into the clients' namespace.
    pub fn enter_client(&self) {
        enter(&self.client_ns(), &ip(CLIENT_HOST));
    }

    /// Writes host `i`'s nft table from its fault state (one `nft -f` call).
    fn apply(&self, i: usize, f: &HostFaults) -> Result<(), String> {
        let mut s = String::from(
            "add table inet faults\n\
             flush table inet faults\n\
             add chain inet faults in { type filter hook input priority 0; }\n\
             add chain inet faults out { type filter hook output priority 0; }\n",
        );
        for j in &f.deaf_to {
            s += &format!("add rule inet faults in ip saddr {} drop\n", ip(*j));
        }
        for j in &f.mute_to {
            s += &format!("add rule inet faults out ip daddr {} drop\n", ip(*j));
        }
        if f.loss_pct > 0 {
            s += &format!(
                "add rule inet faults in iifname \"eth0\" numgen random mod 100 lt {} drop\n",
                f.loss_pct
            );
        }
        sh(
            &["ip", "netns", "exec", &self.ns(i), "nft", "-f", "-"],
            Some(&s),
        )
        .map(|_| ())
    }

    /// Changes the fault state, then rewrites the table of every host it touched.
    fn change(&self, f: impl FnOnce(&mut BTreeMap<usize, HostFaults>)) -> Result<(), String> {
        let mut all = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let before = all.clone();
        f(&mut all);
        for (i, hf) in all.iter() {
            assert!((1..=self.n).contains(i), "no host {i}");
            if before.get(i) != Some(hf) {
                self.apply(*i, hf)?;
            }
        }
        Ok(())
    }

    /// Hosts of `deaf` stop hearing the hosts of `from` (one way: they still send).
    pub fn deafen(&self, deaf: &[usize], from: &[usize]) -> Result<(), String> {
        self.change(|all| {
            for &a in deaf {
                for &b in from {
                    if a != b {
                        all.entry(a).or_default().deaf_to.push(b);
                    }
                }
            }
        })
    }

    /// No traffic between any host of `left` and any host of `right`, either way.
    pub fn partition(&self, left: &[usize], right: &[usize]) -> Result<(), String> {
        self.change(|all| {
            for &a in left {
                for &b in right {
                    if a == b {
                        continue;
                    }
                    for (x, y) in [(a, b), (b, a)] {
                        let f = all.entry(x).or_default();
                        f.deaf_to.push(y);
                        f.mute_to.push(y);
                    }
                }
            }
        })
    }

    /// Every host of `side` is cut off from every other host.
    pub fn split(&self, side: &[usize]) -> Result<(), String> {
        let rest: Vec<usize> = (1..=self.n).filter(|h| !side.contains(h)).collect();
        self.partition(side, &rest)
    }

    /// Host `i` drops `pct` % of what it receives.
    pub fn loss(&self, i: usize, pct: u32) -> Result<(), String> {
        self.change(|all| all.entry(i).or_default().loss_pct = pct)
    }

    /// What host `i` receives is held `ms` (+/- `jitter_ms`) and `loss_pct` % dropped.
    pub fn delay(&self, i: usize, ms: u32, loss_pct: u32, jitter_ms: u32) -> Result<(), String> {
        let mut delayers = self.delayers.lock().unwrap_or_else(|e| e.into_inner());
        if delayers.contains_key(&i) {
            return Err(format!("host {i} is already delayed"));
        }
        let ns = self.ns(i);
        let ipt = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &ns, "iptables"];
            v.extend_from_slice(args);
            sh(&v, None)
        };
        ipt(&["-N", "FAULTS_DELAY"])?;
        ipt(&[
            "-A",
            "FAULTS_DELAY",
            "-i",
            "eth0",
            "-j",
            "NFQUEUE",
            "--queue-num",
            "0",
            "--queue-bypass",
        ])?;
        ipt(&["-A", "INPUT", "-j", "FAULTS_DELAY"])?;
        let log_path = self.dir.join(format!("delay-{i}.log"));
        let log = File::create(&log_path).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "python3"])
            .arg(&self.script)
            .args([
                "0",
                &ms.to_string(),
                &loss_pct.to_string(),
                &jitter_ms.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn nfq_delay.py: {e}"))?;
        delayers.insert(i, child);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("nfq_delay:") {
                return Ok(());
            }
            if Instant::now() >= deadline || text.contains("failed") || text.contains("Error") {
                return Err(format!("nfq_delay.py on host {i} did not start: {text}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Removes every partition, loss and delay.
    pub fn heal(&self) {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        for i in 1..=self.n {
            let ns = self.ns(i);
            if faults.remove(&i).is_some() {
                let _ = sh(
                    &[
                        "ip", "netns", "exec", &ns, "nft", "delete", "table", "inet", "faults",
                    ],
                    None,
                );
            }
        }
        drop(faults);
        let mut delayers = self.delayers.lock().unwrap_or_else(|e| e.into_inner());
        for (i, mut child) in std::mem::take(&mut *delayers) {
            let ns = self.ns(i);
            // Rule first (the queue has --queue-bypass), then the delayer.
            let _ = sh(
                &[
                    "ip",
                    "netns",
                    "exec",
                    &ns,
                    "iptables",
                    "-D",
                    "INPUT",
                    "-j",
                    "FAULTS_DELAY",
                ],
                None,
            );
            let _ = sh(
                &["ip", "netns", "exec", &ns, "iptables", "-F", "FAULTS_DELAY"],
                None,
            );
            let _ = sh(
                &["ip", "netns", "exec", &ns, "iptables", "-X", "FAULTS_DELAY"],
                None,
            );
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Kills every process in the namespaces named `<prefix>-*` and deletes them
/// (for a watchdog that cannot wait for [`Net`]'s `Drop`).
pub fn destroy(prefix: &str) {
    let ours: Vec<String> = our_namespaces()
        .into_iter()
        .filter(|ns| ns.strip_prefix(prefix).is_some_and(|r| r.starts_with('-')))
        .collect();
    for ns in &ours {
        kill_all_in(ns);
    }
    for ns in &ours {
        let _ = sh(&["ip", "netns", "del", ns], None);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.heal();
        destroy(&self.prefix);
        if self.route_added {
            let _ = sh(
                &[
                    "ip",
                    "route",
                    "del",
                    "unreachable",
                    &format!("{SUBNET}.0/24"),
                ],
                None,
            );
        }
    }
}
