//! The client CLI (`raftlog put|get|status|members|transfer|trim|cursor`), the
//! etcdctl of raftlog: every command is one or a few HTTP API calls.
//!
//! Invariants:
//! - Exit codes scripts can use: 0 ok, 1 refused by the server (its JSON error is
//!   printed), 2 usage, 3 no node reachable.
//! - `--addr` lists nodes (repeat or comma separate; env `RAFTLOG_ADDR`); a
//!   connection failure moves to the next one ([`conn`]).
//! - Human output by default; `--json` prints the server's JSON (one document per
//!   line for `put` and `get`), so scripts never parse tables.
//! - Writes from stdin go through [`put_lines`]: lines become atomic batches
//!   (`POST /v1/messages/batch`) of up to 1000 lines, in order.

pub mod conn;
mod follow;
mod status;

use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Value};
use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

use conn::{CliError, Conn};

/// Flags every client command takes.
#[derive(Args, Clone, Debug)]
pub struct ClientOpts {
    /// HTTP address(es) `host:port` of cluster nodes, tried in order.
    #[arg(
        long,
        value_delimiter = ',',
        env = "RAFTLOG_ADDR",
        default_value = "127.0.0.1:8081",
        global = true
    )]
    pub addr: Vec<String>,
    /// Bearer token for clusters with `[auth]`.
    #[arg(long, env = "RAFTLOG_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Speak HTTPS, trusting this CA (PEM).
    #[arg(long, value_name = "FILE", global = true)]
    pub cacert: Option<std::path::PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = crate::bench::parse_duration, global = true)]
    pub timeout: Duration,
}

/// The client commands.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Append MESSAGE, or each line of stdin when no MESSAGE is given.
    Put {
        #[command(flatten)]
        o: ClientOpts,
        message: Option<String>,
        /// Write concern: a number of voters, `majority` or `all`.
        #[arg(long, value_parser = crate::bench::parse_w)]
        w: Option<String>,
    },
    /// Read committed messages; `--follow` streams new ones as they commit.
    Get {
        #[command(flatten)]
        o: ClientOpts,
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// At most this many messages (without `--follow`: one page of them).
        #[arg(long)]
        limit: Option<u64>,
        /// Keep printing messages as they commit, resuming on another node when
        /// one fails.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// The members with their role, term, match index, lag, reachability, health.
    Status {
        #[command(flatten)]
        o: ClientOpts,
    },
    /// List, add or remove members.
    Members {
        #[command(flatten)]
        o: ClientOpts,
        #[command(subcommand)]
        cmd: MembersCommand,
    },
    /// Hand leadership to `--to` (or the most caught-up voter).
    Transfer {
        #[command(flatten)]
        o: ClientOpts,
        #[arg(long)]
        to: Option<String>,
    },
    /// Remove every message below offset `--before`.
    Trim {
        #[command(flatten)]
        o: ClientOpts,
        #[arg(long)]
        before: u64,
    },
    /// Named reader positions.
    Cursor {
        #[command(flatten)]
        o: ClientOpts,
        #[command(subcommand)]
        cmd: CursorCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum MembersCommand {
    List,
    /// Add (or update) a member; it joins as a learner unless `--voter`.
    Add {
        node_id: String,
        #[arg(long)]
        grpc_addr: String,
        #[arg(long)]
        http_addr: String,
        #[arg(long)]
        voter: bool,
    },
    Remove {
        node_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CursorCommand {
    List,
    Get {
        name: String,
    },
    Set {
        name: String,
        offset: u64,
        /// Allow moving the cursor backwards.
        #[arg(long)]
        force: bool,
    },
    Delete {
        name: String,
    },
}

impl ClientCommand {
    fn opts(&self) -> &ClientOpts {
        use ClientCommand::*;
        match self {
            Put { o, .. } | Get { o, .. } | Status { o } | Members { o, .. } => o,
            Transfer { o, .. } | Trim { o, .. } | Cursor { o, .. } => o,
        }
    }
}

/// Runs one client command and maps its outcome to the exit code.
pub async fn run(cmd: ClientCommand) -> ExitCode {
    let opts = cmd.opts().clone();
    let result = match connect(&opts) {
        Ok(mut conn) => execute(&opts, &mut conn, cmd).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match &e {
                CliError::Refused { body, .. } if opts.json => eprintln!("{body}"),
                _ => {}
            }
            eprintln!("raftlog: {}", e.line());
            ExitCode::from(e.exit_code())
        }
    }
}

fn connect(opts: &ClientOpts) -> Result<Conn, CliError> {
    let addrs = opts
        .addr
        .iter()
        .filter(|a| !a.trim().is_empty())
        .map(|a| crate::bench::normalize_addr(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CliError::Usage)?;
    if addrs.is_empty() {
        return Err(CliError::Usage("--addr: no address given".into()));
    }
    let tls = opts
        .cacert
        .as_deref()
        .map(crate::client::tls_connector)
        .transpose()
        .map_err(CliError::Usage)?;
    if tls.is_none() && opts.addr.iter().any(|a| a.trim().starts_with("https://")) {
        return Err(CliError::Usage(
            "--addr https://...: give the CA to trust with --cacert".into(),
        ));
    }
    let auth = opts
        .token
        .as_deref()
        .map(crate::client::bearer)
        .transpose()
        .map_err(CliError::Usage)?;
    Ok(Conn::new(addrs, tls, auth, opts.timeout))
}

async fn execute(opts: &ClientOpts, c: &mut Conn, cmd: ClientCommand) -> Result<(), CliError> {
    match cmd {
        ClientCommand::Put { message, w, .. } => match message {
            Some(m) => put_one(opts, c, &m, w.as_deref()).await,
            None => put_lines(opts, c, std::io::stdin().lock(), w.as_deref()).await,
        },
        ClientCommand::Get {
            from,
            limit,
            follow,
            ..
        } if follow => follow::run(opts, c, from, limit).await,
        ClientCommand::Get { from, limit, .. } => get(opts, c, from, limit).await,
        ClientCommand::Status { .. } => status::run(opts, c).await,
        ClientCommand::Members { cmd, .. } => members(opts, c, cmd).await,
        ClientCommand::Transfer { to, .. } => {
            let body = to.map_or(json!({}), |t| json!({ "to": t }));
            let v = admin(
                c,
                Method::POST,
                "/v1/cluster/transfer-leadership",
                Some(&body),
            )
            .await?;
            print(opts, &v, || {
                format!(
                    "transferring leadership to {}",
                    v["transferring_to"].as_str().unwrap_or("?")
                )
            });
            Ok(())
        }
        ClientCommand::Trim { before, .. } => {
            let body = json!({ "before_offset": before });
            let v = admin(c, Method::POST, "/v1/log/trim", Some(&body)).await?;
            print(opts, &v, || format!("trimmed below offset {before}"));
            Ok(())
        }
        ClientCommand::Cursor { cmd, .. } => cursor(opts, c, cmd).await,
    }
}

/// Prints `v` as JSON, or the human line.
fn print(opts: &ClientOpts, v: &Value, human: impl FnOnce() -> String) {
    if opts.json {
        println!("{v}");
    } else {
        println!("{}", human());
    }
}

fn write_path(w: Option<&str>) -> String {
    match w {
        Some(w) => format!("/v1/messages?w={w}"),
        None => "/v1/messages".into(),
    }
}

/// A fresh idempotency key per message: a write retried on another node after a
/// broken connection cannot be appended twice.
fn idempotency_key() -> String {
    format!("cli-{:032x}", rand::random::<u128>())
}

async fn put_one(
    opts: &ClientOpts,
    c: &mut Conn,
    m: &str,
    w: Option<&str>,
) -> Result<(), CliError> {
    let body = json!({ "message": m });
    let key = [("idempotency-key", idempotency_key())];
    let v = c
        .call(Method::POST, &write_path(w), Some(&body), &key)
        .await?;
    print(opts, &v, || {
        format!(
            "offset {} (index {}, term {})",
            v["offset"], v["index"], v["term"]
        )
    });
    Ok(())
}

/// Appends each line of `input` as one message, in order; stops at the first
/// refused write (later lines are not sent, so the log keeps the input's order).
pub async fn put_lines(
    opts: &ClientOpts,
    c: &mut Conn,
    input: impl BufRead,
    w: Option<&str>,
) -> Result<(), CliError> {
    let mut batch: Vec<String> = Vec::new();
    let mut bytes = 0;
    for line in input.lines() {
        let line = line.map_err(|e| CliError::Usage(format!("reading stdin: {e}")))?;
        bytes += line.len();
        batch.push(line);
        if batch.len() >= PUT_BATCH_MESSAGES || bytes >= PUT_BATCH_BYTES {
            put_batch(opts, c, std::mem::take(&mut batch), w).await?;
            bytes = 0;
        }
    }
    if !batch.is_empty() {
        put_batch(opts, c, batch, w).await?;
    }
    Ok(())
}

/// Lines sent per atomic batch, and the bytes of messages that end a batch early
/// (well under the server's default `write.max_batch_*`).
const PUT_BATCH_MESSAGES: usize = 1000;
const PUT_BATCH_BYTES: usize = 4 << 20;

/// One atomic batch (consecutive offsets, all or nothing) under one key, so a
/// retry on another node cannot append it twice; prints each message's offset.
async fn put_batch(
    opts: &ClientOpts,
    c: &mut Conn,
    messages: Vec<String>,
    w: Option<&str>,
) -> Result<(), CliError> {
    let body = json!({ "messages": messages });
    let key = [("idempotency-key", idempotency_key())];
    let path = match w {
        Some(w) => format!("/v1/messages/batch?w={w}"),
        None => "/v1/messages/batch".into(),
    };
    let v = c.call(Method::POST, &path, Some(&body), &key).await?;
    let first = v["first_offset"].as_u64().unwrap_or(0);
    for i in 0..v["count"].as_u64().unwrap_or(0) {
        let one = json!({
            "offset": first + i,
            "index": v["index"],
            "term": v["term"],
            "acks": v["acks"],
            "committed": v["committed"],
        });
        print(opts, &one, || (first + i).to_string());
    }
    Ok(())
}

async fn get(
    opts: &ClientOpts,
    c: &mut Conn,
    from: u64,
    limit: Option<u64>,
) -> Result<(), CliError> {
    let mut path = format!("/v1/messages?from={from}");
    if let Some(l) = limit {
        path.push_str(&format!("&limit={l}"));
    }
    let v = c.call(Method::GET, &path, None, &[]).await?;
    for m in v["messages"].as_array().into_iter().flatten() {
        print_message(opts, m);
    }
    Ok(())
}

/// One message: `{"offset","message"}` as JSON, or `offset<TAB>message`.
pub(crate) fn print_message(opts: &ClientOpts, m: &Value) {
    if opts.json {
        println!("{m}");
    } else {
        println!("{}\t{}", m["offset"], m["message"].as_str().unwrap_or(""));
    }
}

/// An admin call goes to the leader: a follower answers 503 `no_leader` (naming
/// the leader's HTTP address, or not); the CLI then asks for the leader and goes
/// there once.
async fn admin(
    c: &mut Conn,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, CliError> {
    match c.call(method.clone(), path, body, &[]).await {
        Err(CliError::Refused { body: err, status }) if err["error"]["code"] == "no_leader" => {
            let leader = match err["error"]["leader_hint"].as_str() {
                Some(hint) => Some(hint.to_string()),
                None => leader_http(c).await,
            };
            let Some(leader) = leader else {
                return Err(CliError::Refused { body: err, status });
            };
            c.prefer(&leader);
            c.call(method, path, body, &[]).await
        }
        other => other,
    }
}

/// The leader's HTTP address as the current node knows it.
async fn leader_http(c: &mut Conn) -> Option<String> {
    let st = c.call(Method::GET, "/v1/status", None, &[]).await.ok()?;
    let id = st["leader_id"].as_str()?;
    let m = st["members"]
        .as_array()?
        .iter()
        .find(|m| m["node_id"] == id)?;
    m["http_addr"].as_str().map(str::to_string)
}

async fn members(opts: &ClientOpts, c: &mut Conn, cmd: MembersCommand) -> Result<(), CliError> {
    match cmd {
        MembersCommand::List => {
            let v = c
                .call(Method::GET, "/v1/cluster/members", None, &[])
                .await?;
            if opts.json {
                println!("{v}");
                return Ok(());
            }
            let leader = v["leader_id"].as_str().unwrap_or("");
            let rows: Vec<Vec<String>> = v["members"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    let id = m["node_id"].as_str().unwrap_or("").to_string();
                    vec![
                        if id == leader { format!("{id} *") } else { id },
                        if m["voter"] == true {
                            "voter"
                        } else {
                            "learner"
                        }
                        .into(),
                        m["grpc_addr"].as_str().unwrap_or("").into(),
                        m["http_addr"].as_str().unwrap_or("").into(),
                    ]
                })
                .collect();
            print!(
                "{}",
                status::table(&["NODE", "KIND", "GRPC", "HTTP"], &rows)
            );
            Ok(())
        }
        MembersCommand::Add {
            node_id,
            grpc_addr,
            http_addr,
            voter,
        } => {
            let body = json!({"node_id": node_id, "grpc_addr": grpc_addr, "http_addr": http_addr, "voter": voter});
            let v = admin(c, Method::POST, "/v1/cluster/members", Some(&body)).await?;
            print(opts, &v, || {
                format!("added {node_id} at index {}", v["index"])
            });
            Ok(())
        }
        MembersCommand::Remove { node_id } => {
            let path = format!("/v1/cluster/members/{node_id}");
            let v = admin(c, Method::DELETE, &path, None).await?;
            print(opts, &v, || {
                format!("removed {node_id} at index {}", v["index"])
            });
            Ok(())
        }
    }
}

async fn cursor(opts: &ClientOpts, c: &mut Conn, cmd: CursorCommand) -> Result<(), CliError> {
    let v = match &cmd {
        CursorCommand::List => c.call(Method::GET, "/v1/cursors", None, &[]).await?,
        CursorCommand::Get { name } => {
            c.call(Method::GET, &format!("/v1/cursors/{name}"), None, &[])
                .await?
        }
        CursorCommand::Set {
            name,
            offset,
            force,
        } => {
            let body = json!({ "offset": offset, "force": force });
            c.call(
                Method::PUT,
                &format!("/v1/cursors/{name}"),
                Some(&body),
                &[],
            )
            .await?
        }
        CursorCommand::Delete { name } => {
            c.call(Method::DELETE, &format!("/v1/cursors/{name}"), None, &[])
                .await?
        }
    };
    print(opts, &v, || match &cmd {
        CursorCommand::List => v["cursors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("{}\t{}", c["name"].as_str().unwrap_or(""), c["offset"]))
            .collect::<Vec<_>>()
            .join("\n"),
        CursorCommand::Get { name } => format!("{name}\t{}", v["offset"]),
        CursorCommand::Set { name, offset, .. } => format!("{name} set to {offset}"),
        CursorCommand::Delete { name } => format!("{name} deleted"),
    });
    Ok(())
}
