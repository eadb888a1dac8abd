//! The client CLI (`raftlog put|get|status|members|transfer|trim|cursor`) run as a
//! process against a real cluster: outputs (`--json` parsed), a dead first
//! `--addr` skipped, `get --follow` resuming on another node, exit codes.

#[path = "common/process.rs"]
mod harness;

use harness::{free_ports, wait_for, Cluster, BIN, LONG};
use serde_json::Value;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};

/// Runs `raftlog <args>` with `RAFTLOG_ADDR` unset; returns its output.
fn cli(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RAFTLOG_ADDR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raftlog");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], stdin: Option<&str>) -> String {
    let out = cli(args, stdin);
    assert_eq!(
        out.status.code(),
        Some(0),
        "raftlog {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn code(args: &[&str]) -> Option<i32> {
    cli(args, None).status.code()
}

#[test]
fn every_command_against_a_real_cluster() {
    let c = Cluster::start(3);
    let leader = c.wait_leader();
    let dead = format!("127.0.0.1:{}", free_ports(1)[0]);
    let addrs = format!("{dead},{}", c.info(leader).http_addr());
    let a = addrs.as_str();

    // put: one message, then stdin lines in order; the dead first address is skipped.
    let one = json_lines(&ok(&["put", "--addr", a, "--json", "hello"], None));
    assert_eq!(one[0]["offset"], 0, "{one:?}");
    let many = json_lines(&ok(&["put", "--addr", a, "--json"], Some("a\nb\nc\n")));
    let offsets: Vec<_> = many.iter().map(|v| v["offset"].as_u64()).collect();
    assert_eq!(offsets, [Some(1), Some(2), Some(3)]);
    let human = ok(&["put", "--addr", a, "--w", "all", "d"], None);
    assert!(human.starts_with("offset 4 (index "), "{human}");

    // get: a page as JSON lines, and as `offset<TAB>message`.
    let page = json_lines(&ok(&["get", "--addr", a, "--json"], None));
    let msgs: Vec<_> = page
        .iter()
        .map(|v| v["message"].as_str().unwrap())
        .collect();
    assert_eq!(msgs, ["hello", "a", "b", "c", "d"]);
    assert_eq!(
        ok(&["get", "--addr", a, "--from", "1", "--limit", "2"], None),
        "1\ta\n2\tb\n"
    );

    // status: three members, the leader marked, every one reachable and answering.
    let st: Value = serde_json::from_str(&ok(&["status", "--addr", a, "--json"], None)).unwrap();
    let members = st["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{st}");
    let leaders: Vec<_> = members.iter().filter(|m| m["role"] == "leader").collect();
    assert_eq!(leaders.len(), 1, "{st}");
    assert_eq!(leaders[0]["node_id"], c.id(leader));
    assert!(
        members
            .iter()
            .all(|m| m["answered"] == true && m["lag"].is_u64()),
        "{st}"
    );
    let table = ok(&["status", "--addr", a], None);
    assert!(table.starts_with("NODE"), "{table}");
    assert!(table.contains(&format!("{} *", c.id(leader))), "{table}");

    // members: list, add a learner, remove it (through a follower: the CLI follows
    // the leader hint).
    let list: Value =
        serde_json::from_str(&ok(&["members", "list", "--addr", a, "--json"], None)).unwrap();
    assert_eq!(list["members"].as_array().unwrap().len(), 3, "{list}");
    let f = (0..3).find(|&i| i != leader).unwrap();
    let fa = c.info(f).http_addr();
    let add = [
        "members",
        "add",
        "n9",
        "--grpc-addr",
        "127.0.0.1:1",
        "--http-addr",
        "127.0.0.1:2",
        "--addr",
        &fa,
    ];
    let added: Value = serde_json::from_str(&ok(&[&add[..], &["--json"]].concat(), None)).unwrap();
    assert_eq!(added["node_id"], "n9", "{added}");
    ok(&["members", "remove", "n9", "--addr", &fa], None);

    // transfer: to the follower, asked through the follower.
    let t: Value = serde_json::from_str(&ok(
        &["transfer", "--to", c.id(f), "--addr", &fa, "--json"],
        None,
    ))
    .unwrap();
    assert_eq!(t["transferring_to"], c.id(f));
    wait_for("the transfer", LONG, || {
        (c.wait_leader() == f).then_some(())
    });

    // Exit codes: refused by the server, usage, unreachable.
    assert_eq!(
        code(&["put", "--addr", a, "--w", "7", "x"]),
        Some(1),
        "w beyond the voters"
    );
    assert_eq!(code(&["get", "--addr", a, "--from", "x"]), Some(2));
    assert_eq!(
        code(&["trim", "--addr", a]),
        Some(2),
        "--before is required"
    );
    assert_eq!(
        code(&["cursor", "set", "c1", "--addr", a]),
        Some(2),
        "offset is required"
    );
    assert_eq!(
        code(&["cursor", "get", "--addr", a]),
        Some(2),
        "name is required"
    );
    assert_eq!(code(&["put", "--addr", "nohostport", "x"]), Some(2));
    assert_eq!(code(&["status", "--addr", &dead]), Some(3));
}

#[test]
fn follow_resumes_on_another_node_when_its_node_dies() {
    let c = Cluster::start(3);
    let leader = c.wait_leader();
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for k in 0..5 {
        c.write_retrying(
            leader,
            &format!("m{k}"),
            Value::Null,
            Some(&format!("k{k}")),
        );
    }
    let addrs = format!(
        "{},{}",
        c.info(followers[0]).http_addr(),
        c.info(followers[1]).http_addr()
    );
    let mut follow = Command::new(BIN)
        .args([
            "get", "--follow", "--from", "0", "--limit", "12", "--json", "--addr", &addrs,
        ])
        .env_remove("RAFTLOG_ADDR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    while lines.len() < 5 {
        lines.push(
            rx.recv_timeout(LONG)
                .expect("the first messages from the first node"),
        );
    }
    // The node serving the stream dies; the rest must come from the other one.
    c.kill(followers[0]);
    for k in 5..12 {
        c.write_retrying(
            leader,
            &format!("m{k}"),
            Value::Null,
            Some(&format!("k{k}")),
        );
    }
    let out = follow.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines.extend(rx.iter());
    let lines = json_lines(&lines.join("\n"));
    let got: Vec<_> = lines
        .iter()
        .map(|v| {
            (
                v["offset"].as_u64().unwrap(),
                v["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<_> = (0..12).map(|k| (k, format!("m{k}"))).collect();
    assert_eq!(got, want, "every message once, in order");
}
