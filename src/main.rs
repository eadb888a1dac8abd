//! The `raftlog` binary: `serve` runs one node, `dev` a local cluster of them,
//! `bench` loads a running cluster, and the client commands (`put`, `get`,
//! `status`, `members`, `transfer`, `trim`, `cursor`) talk to one (see `cli`).
//!
//! Invariants:
//! - An invalid config exits with code 2 before anything starts, printing one line
//!   per problem to stderr, each naming its key.
//! - Logs go to stderr; the level comes from `RUST_LOG` (default `info`), the
//!   format from `log.format`.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

use raftlog::bench::{self, BenchArgs};
use raftlog::config::{self, Config, LogFormat, ServeArgs};
use raftlog::dev::{self, DevArgs};

/// mimalloc instead of glibc's malloc, tuned by `raftlog::alloc::tune` (why: there).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for an invalid configuration or command line.
const EXIT_BAD_CONFIG: u8 = 2;

/// A replicated, durable, totally ordered message log over Raft.
#[derive(Parser, Debug)]
#[command(name = "raftlog", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one node.
    Serve(ServeArgs),
    /// Run a local cluster of N `serve` processes on loopback.
    Dev(DevArgs),
    /// Load-test a running cluster over its HTTP API and print latency percentiles.
    Bench(BenchArgs),
    /// Make a cluster CA and node certificates for `[tls]` (reuses an existing CA).
    Certs(raftlog::certs::CertsArgs),
    #[command(flatten)]
    Client(raftlog::cli::ClientCommand),
}

fn main() -> ExitCode {
    raftlog::alloc::tune();
    let cli = Cli::parse();
    match cli.command {
        Command::Client(cmd) => run_client(cmd),
        Command::Serve(args) => serve_command(&args),
        Command::Dev(args) => dev_command(args),
        Command::Bench(args) => run_async(bench::run(args)),
        Command::Certs(args) => match raftlog::certs::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("certs: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve_command(args: &ServeArgs) -> ExitCode {
    let cfg = match config::load(args) {
        Ok(cfg) => cfg,
        Err(lines) => {
            eprintln!("{lines}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    init_tracing(cfg.log.format);
    raftlog::alloc::start_collector();
    run_async_with(cfg.runtime.worker_threads(), serve(cfg))
}

/// A client command on a small runtime; its exit code is the command's.
fn run_client(cmd: raftlog::cli::ClientCommand) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(raftlog::cli::run(cmd)),
        Err(e) => {
            eprintln!("raftlog: cannot start the async runtime: {e}");
            ExitCode::from(3)
        }
    }
}

fn dev_command(args: DevArgs) -> ExitCode {
    run_async(dev::run(args))
}

/// Runs `fut` on a multi-threaded runtime; an error is printed and exits 1.
fn run_async(fut: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    run_async_with(None, fut)
}

/// As [`run_async`], with `worker_threads` runtime threads (`None` = tokio's
/// default, one per CPU core).
fn run_async_with(
    worker_threads: Option<usize>,
    fut: impl std::future::Future<Output = Result<(), String>>,
) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftlog: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(fut);
    // Do not wait for stray blocking work (a DNS lookup of a peer that is gone)
    // once the node itself has stopped.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftlog: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the node until it is stopped.
async fn serve(cfg: Config) -> Result<(), String> {
    raftlog::node::run(cfg).await
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
