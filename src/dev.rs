//! `raftlog dev`: a local N-node cluster of real `raftlog serve` child processes on
//! loopback, for trying the system out on one machine.
//!
//! Why child processes (not tasks): each node is then exactly what production
//! runs, with its own data directory, ports and signals; killing one is a real
//! crash.
//!
//! Invariants:
//! - Node k (1-based) is `nk`, listens on `base_http_port + k - 1` and
//!   `base_grpc_port + k - 1`, keeps its data in `<data_dir>/nk`; `n1` bootstraps,
//!   the others join through `n1`'s gRPC address.
//! - Children stay in our process group, so a terminal's Ctrl-C reaches them too;
//!   on SIGINT/SIGTERM we also send each a SIGTERM ourselves, give them
//!   [`STOP_GRACE`] to stop, then SIGKILL the rest, and exit 0.
//! - We own each `Child` until we reap it, so a pid we signal is never reused.
//! - Each child's output lines are prefixed with its node id; cluster-wide
//!   warnings show once ([`relay`]).

mod relay;

use clap::Args;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};

/// How long stopped children get to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How often children are polled for an unexpected exit.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Most nodes `dev` starts (a sanity bound, not a Raft limit).
pub const MAX_NODES: u16 = 99;

/// `raftlog dev` flags.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct DevArgs {
    /// Number of nodes to start.
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// HTTP port of n1; node k uses base + k - 1.
    #[arg(long, default_value_t = 8081)]
    pub base_http_port: u16,
    /// gRPC port of n1; node k uses base + k - 1.
    #[arg(long, default_value_t = 7071)]
    pub base_grpc_port: u16,
    /// Parent directory of the nodes' data directories.
    #[arg(long, default_value = "./data/dev")]
    pub data_dir: PathBuf,
}

impl Default for DevArgs {
    fn default() -> Self {
        DevArgs {
            nodes: 3,
            base_http_port: 8081,
            base_grpc_port: 7071,
            data_dir: "./data/dev".into(),
        }
    }
}

/// One node to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    pub node_id: String,
    pub http_addr: String,
    pub grpc_addr: String,
    pub data_dir: PathBuf,
    /// `None`: bootstrap; `Some(addr)`: join through this gRPC address.
    pub join: Option<String>,
}

impl NodePlan {
    /// The `raftlog serve` arguments for this node.
    pub fn serve_args(&self) -> Vec<String> {
        let mut args = vec![
            "serve".to_string(),
            format!("--node-id={}", self.node_id),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--http-addr={}", self.http_addr),
            format!("--grpc-addr={}", self.grpc_addr),
        ];
        match &self.join {
            None => args.push("--bootstrap".into()),
            Some(seed) => args.push(format!("--join={seed}")),
        }
        args
    }
}

/// The nodes `args` asks for, or why they cannot be started.
pub fn plan(args: &DevArgs) -> Result<Vec<NodePlan>, String> {
    if args.nodes == 0 || args.nodes > MAX_NODES {
        return Err(format!("--nodes must be between 1 and {MAX_NODES}"));
    }
    let http = port_range("--base-http-port", args.base_http_port, args.nodes)?;
    let grpc = port_range("--base-grpc-port", args.base_grpc_port, args.nodes)?;
    if http.start < grpc.end && grpc.start < http.end {
        return Err("the HTTP and gRPC port ranges overlap".into());
    }
    let seed = format!("127.0.0.1:{}", args.base_grpc_port);
    Ok((0..args.nodes)
        .map(|i| NodePlan {
            node_id: format!("n{}", i + 1),
            http_addr: format!("127.0.0.1:{}", http.start + u32::from(i)),
            grpc_addr: format!("127.0.0.1:{}", grpc.start + u32::from(i)),
            data_dir: args.data_dir.join(format!("n{}", i + 1)),
            join: (i > 0).then(|| seed.clone()),
        })
        .collect())
}

fn port_range(flag: &str, base: u16, nodes: u16) -> Result<std::ops::Range<u32>, String> {
    let (start, end) = (u32::from(base), u32::from(base) + u32::from(nodes));
    if base == 0 || end - 1 > u32::from(u16::MAX) {
        return Err(format!(
            "{flag} {base}: ports {start}..{end} do not fit in 1..=65535"
        ));
    }
    Ok(start..end)
}

/// A started node.
struct Running {
    node_id: String,
    child: Child,
}

/// Starts the cluster and supervises it until SIGINT/SIGTERM (then `Ok`) or until
/// every node has exited on its own (then `Err`).
pub async fn run(args: DevArgs) -> Result<(), String> {
    let plans = plan(&args)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut nodes = start_all(&plans)?;
    print_banner(&args, &plans);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    let outcome = loop {
        tokio::select! {
            biased;
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = tick.tick() => {
                reap_exited(&mut nodes, "exited unexpectedly");
                if nodes.is_empty() {
                    break Err("every node has exited".to_string());
                }
            }
        }
    };
    stop_all(&mut nodes).await;
    outcome
}

fn start_all(plans: &[NodePlan]) -> Result<Vec<Running>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let mut nodes = Vec::with_capacity(plans.len());
    let width = plans.iter().map(|p| p.node_id.len()).max().unwrap_or(2);
    let seen = relay::Seen::default();
    for p in plans {
        match start(&exe, p, width, &seen) {
            Ok(child) => nodes.push(Running {
                node_id: p.node_id.clone(),
                child,
            }),
            Err(e) => {
                kill_all(&mut nodes);
                return Err(e);
            }
        }
    }
    Ok(nodes)
}

/// Starts one node with its output relayed, prefixed with its id.
fn start(
    exe: &std::path::Path,
    p: &NodePlan,
    width: usize,
    seen: &relay::Seen,
) -> Result<Child, String> {
    crate::durable::create_dir_durable(&p.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", p.data_dir.display()))?;
    let mut child = Command::new(exe)
        .args(p.serve_args())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", p.node_id))?;
    if let Some(out) = child.stdout.take() {
        relay::spawn(p.node_id.clone(), width, out, seen.clone());
    }
    if let Some(err) = child.stderr.take() {
        relay::spawn(p.node_id.clone(), width, err, seen.clone());
    }
    Ok(child)
}

fn print_banner(args: &DevArgs, plans: &[NodePlan]) {
    println!(
        "raftlog dev: {} node(s), data in {}; Ctrl-C stops them all",
        plans.len(),
        args.data_dir.display()
    );
    for p in plans {
        let role = match &p.join {
            None => "bootstrap".to_string(),
            Some(seed) => format!("joins {seed}"),
        };
        println!(
            "  {:<4} http http://{}  grpc {}  ({role})",
            p.node_id, p.http_addr, p.grpc_addr
        );
    }
    let first = &plans[0].http_addr;
    let last = &plans[plans.len() - 1].http_addr;
    println!("try:");
    println!(
        "  curl -s -X POST http://{first}/v1/messages -H 'content-type: application/json' \
         -d '{{\"message\":\"hello\",\"w\":\"majority\"}}'"
    );
    println!("  curl -s 'http://{last}/v1/messages?from=0'");
    println!("  raftlog get --follow --addr {last}        # or: raftlog status --addr {first}");
}

/// Removes (and reports) every node whose process has exited.
fn reap_exited(nodes: &mut Vec<Running>, why: &str) {
    nodes.retain_mut(|n| match n.child.try_wait() {
        Ok(None) => true,
        Ok(Some(status)) => {
            eprintln!("raftlog dev: node {} {why} ({status})", n.node_id);
            false
        }
        Err(e) => {
            eprintln!("raftlog dev: node {}: cannot check status: {e}", n.node_id);
            true
        }
    });
}

/// SIGTERM to all, up to [`STOP_GRACE`] to exit, then SIGKILL the rest.
async fn stop_all(nodes: &mut Vec<Running>) {
    for n in nodes.iter() {
        send_sigterm(&n.child);
    }
    let deadline = Instant::now() + STOP_GRACE;
    while !nodes.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(POLL_INTERVAL).await;
        reap_exited(nodes, "stopped");
    }
    kill_all(nodes);
}

fn send_sigterm(child: &Child) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) has no memory effects; the pid is our unreaped child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// SIGKILL and reap every node still running.
fn kill_all(nodes: &mut Vec<Running>) {
    for mut n in nodes.drain(..) {
        if n.child.try_wait().ok().flatten().is_none() {
            eprintln!(
                "raftlog dev: node {} did not stop in time; killing it",
                n.node_id
            );
            let _ = n.child.kill();
        }
        let _ = n.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_is_three_loopback_nodes() {
        let plans = plan(&DevArgs::default()).unwrap();
        assert_eq!(plans.len(), 3);
        assert_eq!(plans[0].http_addr, "127.0.0.1:8081");
        assert_eq!(plans[2].grpc_addr, "127.0.0.1:7073");
        assert_eq!(plans[1].data_dir, PathBuf::from("./data/dev/n2"));
        assert_eq!(plans[0].join, None);
        assert_eq!(plans[2].join.as_deref(), Some("127.0.0.1:7071"));
    }

    #[test]
    fn serve_args_bootstrap_and_join() {
        let plans = plan(&DevArgs {
            nodes: 2,
            ..DevArgs::default()
        })
        .unwrap();
        let a = plans[0].serve_args();
        assert_eq!(a[0], "serve");
        assert!(a.contains(&"--node-id=n1".to_string()));
        assert!(a.contains(&"--bootstrap".to_string()));
        assert!(plans[1]
            .serve_args()
            .contains(&"--join=127.0.0.1:7071".to_string()));
    }

    #[test]
    fn bad_plans_are_refused() {
        assert!(plan(&DevArgs {
            nodes: 0,
            ..DevArgs::default()
        })
        .is_err());
        let overflow = DevArgs {
            base_http_port: 65535,
            nodes: 2,
            ..DevArgs::default()
        };
        assert!(plan(&overflow).is_err());
        let overlap = DevArgs {
            base_http_port: 7072,
            ..DevArgs::default()
        };
        assert!(plan(&overlap).unwrap_err().contains("overlap"));
    }

    #[test]
    fn serve_args_parse_as_a_serve_command() {
        use crate::config::ServeArgs;
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: Cmd,
        }
        #[derive(clap::Subcommand)]
        enum Cmd {
            Serve(ServeArgs),
        }
        let plans = plan(&DevArgs::default()).unwrap();
        let argv = std::iter::once("raftlog".to_string()).chain(plans[1].serve_args());
        let Cmd::Serve(args) = Cli::try_parse_from(argv).unwrap().cmd;
        assert_eq!(args.node_id.as_deref(), Some("n2"));
        assert_eq!(args.join, vec!["127.0.0.1:7071".to_string()]);
        assert_eq!(args.bootstrap, None);
    }
}
