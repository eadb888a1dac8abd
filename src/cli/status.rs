//! `raftlog status`: one row per member, each member asked for its own status
//! (role, term, health) and the leader's view for match index, lag and
//! reachability. A member that does not answer is shown as unreachable, not
//! skipped.

use hyper::Method;
use serde_json::{json, Value};
use std::time::Duration;

use super::conn::{CliError, Conn};
use super::ClientOpts;

/// How long a member has to answer its status.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(opts: &ClientOpts, c: &mut Conn) -> Result<(), CliError> {
    let first = c.call(Method::GET, "/v1/status", None, &[]).await?;
    let mut own = Vec::new();
    for m in first["members"].as_array().into_iter().flatten() {
        let addr = m["http_addr"].as_str().unwrap_or("").to_string();
        let mut sib = c.sibling(&addr, MEMBER_TIMEOUT);
        own.push(sib.call(Method::GET, "/v1/status", None, &[]).await.ok());
    }
    // The leader knows every follower's match index and reachability.
    let leader = own
        .iter()
        .flatten()
        .find(|s| s["role"] == "leader")
        .cloned()
        .unwrap_or_else(|| first.clone());
    let last = leader["last_log_index"].as_u64().unwrap_or(0);
    let rows: Vec<Value> = first["members"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(&own)
        .map(|(m, s)| {
            let id = m["node_id"].as_str().unwrap_or("");
            let view = leader["members"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["node_id"] == id)
                .cloned()
                .unwrap_or(Value::Null);
            let matched = view["match_index"].as_u64();
            json!({
                "node_id": id,
                "http_addr": m["http_addr"],
                "voter": m["voter"],
                "answered": s.is_some(),
                "role": s.as_ref().map(|s| s["role"].clone()),
                "term": s.as_ref().map(|s| s["term"].clone()),
                "match_index": matched,
                "lag": matched.map(|x| last.saturating_sub(x)),
                "reachable": view["reachable"],
                "health": s.as_ref().map(|s| s["health"]["status"].clone()),
                "fsync_p99_ms": s.as_ref().map(|s| s["health"]["fsync_p99_ms"].clone()),
            })
        })
        .collect();
    if opts.json {
        println!(
            "{}",
            json!({ "leader_id": leader["leader_id"], "members": rows })
        );
        return Ok(());
    }
    let text = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let leader_mark = if r["role"] == "leader" { " *" } else { "" };
            vec![
                format!("{}{leader_mark}", text(&r["node_id"])),
                if r["answered"] == true {
                    text(&r["role"])
                } else {
                    "DOWN".into()
                },
                text(&r["term"]),
                text(&r["match_index"]),
                text(&r["lag"]),
                text(&r["reachable"]),
                text(&r["health"]),
                text(&r["http_addr"]),
            ]
        })
        .collect();
    let head = [
        "NODE",
        "ROLE",
        "TERM",
        "MATCH",
        "LAG",
        "REACHABLE",
        "HEALTH",
        "HTTP",
    ];
    print!("{}", table(&head, &table_rows));
    Ok(())
}

/// Left-aligned columns, two spaces apart.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (cell, w) in cells.iter().zip(&width) {
            s.push_str(&format!("{cell:<w$}  "));
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(head.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}
