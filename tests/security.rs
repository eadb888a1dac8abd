//! Security, as real processes: mutual TLS between nodes (a foreign CA, a stolen
//! certificate and plaintext are refused; the right CA joins), HTTPS with bearer
//! tokens end to end, and hostile clients (slow-loris heads and bodies, oversize
//! heads and bodies, too many connections) cut off while normal clients go on and
//! nothing acknowledged is lost.
//!
//! The role matrix per endpoint is tested in-process (`src/http/tests.rs`); these
//! tests check the wiring through the real binary.

#[path = "common/process.rs"]
mod harness;

use harness::{wait_for, Cluster, BIN, LONG};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-secret-0123456789abcdef";
const READER: &str = "reader-secret-0123456789abcdef";

/// `raftlog certs --out dir --nodes ...`; panics with its output on failure.
fn certs(dir: &Path, nodes: &str) {
    let out = Command::new(BIN)
        .args(["certs", "--out"])
        .arg(dir)
        .args(["--nodes", nodes])
        .output()
        .expect("run raftlog certs");
    assert!(
        out.status.success(),
        "raftlog certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tokens_file(dir: &Path) -> PathBuf {
    let path = dir.join("tokens.toml");
    let text = format!(
        "[[tokens]]\nname = \"ops\"\nrole = \"admin\"\nsecret = \"{ADMIN}\"\n\n\
         [[tokens]]\nname = \"dashboard\"\nrole = \"read\"\nsecret = \"{READER}\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `[tls]` for node `id` from `ca_dir`'s CA, with `cert_of`'s certificate.
fn tls_env(ca_dir: &Path, cert_dir: &Path, cert_of: &str) -> Vec<(String, String)> {
    let p = |d: &Path, f: String| d.join(f).to_string_lossy().into_owned();
    vec![
        ("RAFTLOG_TLS__CA_FILE".into(), p(ca_dir, "ca.pem".into())),
        (
            "RAFTLOG_TLS__CERT_FILE".into(),
            p(cert_dir, format!("{cert_of}.pem")),
        ),
        (
            "RAFTLOG_TLS__KEY_FILE".into(),
            p(cert_dir, format!("{cert_of}.key")),
        ),
    ]
}

fn set_env(c: &Cluster, i: usize, env: &[(String, String)]) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    c.set_extra_env(i, &env);
}

/// An HTTPS client trusting `ca.pem`, sending `token` on every request.
fn https_client(ca_dir: &Path, token: &str) -> reqwest::blocking::Client {
    let ca = std::fs::read(ca_dir.join("ca.pem")).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .default_headers(headers)
        .connect_timeout(Duration::from_secs(2))
        .timeout(harness::REQUEST_TIMEOUT)
        .build()
        .unwrap()
}

/// Starts node `i` (joining `join`) that must never get in: waits until its log
/// shows `refusals` failed join attempts containing `why`, then checks the leader
/// does not list it and stops it.
fn assert_refused(c: &mut Cluster, i: usize, leader: usize, why: &str) {
    c.spawn_detached(i);
    let log = c.info(i).log_path.clone();
    wait_for(&format!("{} to be refused ({why})", c.id(i)), LONG, || {
        let refusals = harness::log_text(&log)
            .lines()
            .filter(|l| l.contains("join target unreachable") && l.contains(why))
            .count();
        (refusals >= 3).then_some(())
    });
    let members = c.get(leader, "/v1/cluster/members");
    assert_eq!(members.status, 200, "{}", members.body);
    let ids: Vec<&str> = members.json["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["node_id"].as_str())
        .collect();
    assert!(!ids.contains(&c.id(i)), "{} got in: {ids:?}", c.id(i));
    c.kill(i);
}

#[test]
fn mutual_tls_keeps_strangers_and_impostors_out_and_lets_the_right_ca_in() {
    let keys = tempfile::tempdir().unwrap();
    let (ours, theirs) = (keys.path().join("ours"), keys.path().join("theirs"));
    certs(&ours, "n1,n2");
    certs(&theirs, "n3");
    let tokens = tokens_file(keys.path());
    let tokens = tokens.to_string_lossy().into_owned();

    let mut c = Cluster::empty(&[
        ("RAFTLOG_AUTH__TOKENS_FILE", tokens.as_str()),
        ("RAFTLOG_TLS__HANDSHAKE_TIMEOUT_MS", "1000"),
    ]);
    c.set_client(https_client(&ours, ADMIN), "https");
    let n1 = c.add_node_info(None);
    set_env(&c, n1, &tls_env(&ours, &ours, "n1"));
    c.start_node(n1);
    let seed = Some(c.info(n1).grpc_addr());
    let n2 = c.add_node_info(seed.clone());
    set_env(&c, n2, &tls_env(&ours, &ours, "n2"));
    c.start_node(n2);
    let leader = c.wait_all_voters();
    let first = c.write(leader, "over mutual TLS", json!(2));
    assert_eq!(first.status, 201, "{}", first.body);

    // A node with a certificate from another CA.
    let n3 = c.add_node_info(seed.clone());
    set_env(&c, n3, &tls_env(&theirs, &theirs, "n3"));
    assert_refused(&mut c, n3, leader, "certificate");
    // A node with a valid certificate of another node (n2's): an impostor.
    let n4 = c.add_node_info(seed.clone());
    set_env(&c, n4, &tls_env(&ours, &ours, "n2"));
    assert_refused(&mut c, n4, leader, "does not name node");
    // A node without TLS at all.
    let n5 = c.add_node_info(seed.clone());
    assert_refused(&mut c, n5, leader, "failed");

    // The right CA: a certificate made later with the same CA joins and votes.
    certs(&ours, "n6");
    let n6 = c.add_node_info(seed);
    set_env(&c, n6, &tls_env(&ours, &ours, "n6"));
    c.start_node(n6);
    wait_for("n6 to become a voter", LONG, || {
        let m = c.get(leader, "/v1/cluster/members");
        let voters: Vec<String> = m.json["members"]
            .as_array()?
            .iter()
            .filter(|m| m["voter"] == true)
            .filter_map(|m| m["node_id"].as_str().map(String::from))
            .collect();
        (voters == ["n1", "n2", "n6"]).then_some(())
    });
    let all = c.write(leader, "to every voter", json!("all"));
    assert_eq!(all.status, 201, "{}", all.body);
    assert_eq!(all.json["acks"], 3, "{}", all.body);
    let log = c.log(n6, "linearizable");
    let texts: Vec<&str> = log.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(texts, ["over mutual TLS", "to every voter"]);

    // Connections that never start their TLS handshake lose their slot on both ports.
    let silent: Vec<TcpStream> = [c.info(leader).grpc_addr(), c.info(leader).http_addr()]
        .iter()
        .flat_map(|a| (0..5).map(move |_| TcpStream::connect(a).unwrap()))
        .collect();
    for mut s in silent {
        s.set_read_timeout(Some(LONG)).unwrap();
        // Closed (end of stream, or a reset) rather than the read timing out.
        match s.read(&mut [0u8; 64]) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a silent connection was kept open: {other:?}"),
        }
    }
    assert_eq!(c.write(leader, "after silence", json!(3)).status, 201);

    // Tokens end to end over HTTPS: none, a reader writing, a reader reading.
    let bare = https_client_without_token(&ours);
    let url = c.url(leader, "/v1/messages");
    let r = bare.post(&url).body(r#"{"message":"x"}"#).send().unwrap();
    assert_eq!(r.status(), 401);
    let reader = https_client(&ours, READER);
    let r = reader.post(&url).body(r#"{"message":"x"}"#).send().unwrap();
    assert_eq!(r.status(), 403);
    let r = reader.get(&url).send().unwrap();
    assert_eq!(r.status(), 200);
    let r = bare.get(c.url(leader, "/ready")).send().unwrap();
    assert_eq!(r.status(), 200, "probes stay open");
    // Plain HTTP on the HTTPS port gets nowhere.
    let plain = reqwest::blocking::Client::new()
        .get(format!("http://{}/v1/status", c.info(leader).http_addr()))
        .timeout(Duration::from_secs(5))
        .send();
    assert!(plain.map_or(true, |r| !r.status().is_success()));
}

fn https_client_without_token(ca_dir: &Path) -> reqwest::blocking::Client {
    let ca = std::fs::read(ca_dir.join("ca.pem")).unwrap();
    reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .timeout(harness::REQUEST_TIMEOUT)
        .build()
        .unwrap()
}

// ------------------------------------------------------------ hostile clients

/// Opens a connection that sends a request head one byte at a time, forever.
fn slow_head(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    s
}

/// Opens a connection that sends a full head and then only part of its body.
fn slow_body(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"message\":\"",
    )
    .unwrap();
    s
}

/// Polls every stream still open, writing one more byte into it when `write`;
/// returns how many the server has closed (or answered and closed).
fn dribble(streams: &mut [Option<TcpStream>], answers: &mut Vec<String>, write: bool) -> usize {
    let mut closed = 0;
    for slot in streams.iter_mut() {
        let Some(s) = slot else {
            closed += 1;
            continue;
        };
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let mut buf = [0u8; 4096];
        let done = match s.read(&mut buf) {
            Ok(0) => true,
            Ok(n) => {
                answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                write && s.write_all(b"a").is_err()
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                write && s.write_all(b"a").is_err()
            }
            Err(_) => true,
        };
        if done {
            *slot = None;
            closed += 1;
        }
    }
    closed
}

#[test]
fn slow_loris_and_oversize_requests_are_cut_off_while_normal_clients_go_on() {
    let c = Cluster::start_with_env(
        3,
        &[
            ("RAFTLOG_LIMITS__HTTP_HEADER_TIMEOUT_MS", "1000"),
            ("RAFTLOG_LIMITS__HTTP_BODY_TIMEOUT_MS", "1000"),
        ],
    );
    let leader = c.wait_leader();
    let addr = c.info(leader).http_addr();
    // Heads and bodies dribbled a byte at a time, and bodies that stall outright.
    let mut dribbled: Vec<Option<TcpStream>> = (0..40).map(|_| Some(slow_head(&addr))).collect();
    dribbled.extend((0..10).map(|_| Some(slow_body(&addr))));
    let mut stalled: Vec<Option<TcpStream>> = (0..20).map(|_| Some(slow_body(&addr))).collect();

    // Normal clients write while the attack goes on; every write must succeed.
    let mut latencies = Vec::new();
    let (mut answers, mut stalled_answers) = (Vec::new(), Vec::new());
    let mut acked = Vec::new();
    let started = Instant::now();
    let mut all_closed_at = None;
    while all_closed_at.is_none() || latencies.len() < 50 {
        let t = Instant::now();
        let msg = format!("normal {}", latencies.len());
        let r = c.write(leader, &msg, json!("majority"));
        assert_eq!(r.status, 201, "a normal client was refused: {}", r.body);
        acked.push(msg);
        latencies.push(t.elapsed());
        let open = dribbled.len() - dribble(&mut dribbled, &mut answers, true) + stalled.len()
            - dribble(&mut stalled, &mut stalled_answers, false);
        if all_closed_at.is_none() && open == 0 {
            all_closed_at = Some(started.elapsed());
        }
        assert!(
            started.elapsed() < LONG,
            "slow connections still open after {LONG:?}"
        );
    }
    latencies.sort();
    eprintln!(
        "70 slow connections cut off after {:?}; {} normal writes, p50 {:?}, max {:?}",
        all_closed_at.unwrap(),
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies.last().unwrap()
    );
    // A stalled body gets its 408; a dribbling one gets it too unless the reset of
    // its unread last bytes overtook the answer. Slow heads are closed silently.
    let is_408 = |a: &String| a.starts_with("HTTP/1.1 408") && a.contains("request_timeout");
    assert_eq!(stalled_answers.len(), 20, "{stalled_answers:?}");
    assert!(stalled_answers.iter().all(is_408), "{stalled_answers:?}");
    assert!(answers.iter().all(is_408), "{answers:?}");

    // Oversize, announced by Content-Length: 413 before any body byte is read.
    let head = "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 8388700\r\n\r\n";
    let (status, body) = raw_exchange(&addr, head.as_bytes(), 0);
    assert_eq!(status, Some(413), "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
    // An oversize head and an oversize streamed body: 431 and 413, or cut off
    // mid-request (the node closes with our bytes unread, which may reset the
    // connection before its answer is read). Either way nothing is appended (checked
    // below) and the node keeps serving.
    let big_head = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "x".repeat(64 * 1024)
    );
    let (status, body) = raw_exchange(&addr, big_head.as_bytes(), 0);
    assert!(matches!(status, Some(431) | None), "{status:?} {body}");
    let chunked = "POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (status, body) = raw_exchange(&addr, chunked.as_bytes(), 16);
    assert!(matches!(status, Some(413) | None), "{status:?} {body}");

    // Nothing acknowledged was lost, and nothing refused was appended.
    let log = c.log(leader, "linearizable");
    let texts: Vec<&str> = log.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(texts, acked, "the log is exactly the acknowledged writes");
}

/// How long a node may take to answer (or close) a hostile request before the
/// test calls it a hang. The node's own bounds are 1 s (head and body timeouts).
const HANG_BOUND: Duration = Duration::from_secs(20);

/// Sends `head` then `chunks` chunks of 1 MiB (chunked encoding) on a fresh
/// connection and reads until the node closes it. Returns the status (None when the
/// node reset the connection before its answer could be read) and the raw answer.
/// Panics if the node neither answers nor closes within [`HANG_BOUND`]: a hang must
/// fail the test, not pass as "no answer".
fn raw_exchange(addr: &str, head: &[u8], chunks: usize) -> (Option<u16>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(HANG_BOUND)).unwrap();
    s.set_write_timeout(Some(HANG_BOUND)).unwrap();
    let mut sent = s.write_all(head);
    let chunk = vec![b'z'; 1 << 20];
    for _ in 0..chunks {
        if sent.is_err() {
            break;
        }
        let size = format!("{:x}\r\n", chunk.len());
        sent = s
            .write_all(size.as_bytes())
            .and_then(|_| s.write_all(&chunk))
            .and_then(|_| s.write_all(b"\r\n"));
    }
    if let Err(e) = &sent {
        // The node answered and closed mid-request (reset, broken pipe): fine.
        // It stopped reading but kept the connection open: a hang.
        assert!(
            !is_timeout(e),
            "the node stopped reading an oversized request for {HANG_BOUND:?} without closing it"
        );
    }
    let mut resp = Vec::new();
    if let Err(e) = s.read_to_end(&mut resp) {
        assert!(
            !is_timeout(&e),
            "the node neither answered nor closed an oversized request within {HANG_BOUND:?} \
             (read so far: {:?})",
            String::from_utf8_lossy(&resp)
        );
    }
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok());
    (status, text)
}

/// A socket timeout (as opposed to a reset or a closed pipe).
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

#[test]
fn too_many_connections_get_a_503_and_service_resumes_when_they_close() {
    let c = Cluster::start_with_env(1, &[("RAFTLOG_LIMITS__HTTP_MAX_CONNECTIONS", "8")]);
    let addr = c.info(0).http_addr();
    // Eight idle keep-alive connections take every slot.
    let idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let refused = wait_for("the ninth connection to be refused", LONG, || {
        let mut s = TcpStream::connect(&addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.starts_with("HTTP/1.1 503").then_some(resp)
    });
    assert!(refused.contains("too_many_connections"), "{refused}");
    drop(idle);
    wait_for("service to resume", LONG, || {
        let r = c
            .try_get_timeout(0, "/v1/status", Duration::from_secs(2))
            .ok()?;
        (r.status == 200).then_some(())
    });
    let w = c.write(0, "after the flood", json!(1));
    assert_eq!(w.status, 201, "{}", w.body);
}
