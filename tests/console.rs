//! The web console in a real browser: headless Chromium driven over WebDriver
//! (chromedriver's HTTP API, spoken with reqwest) against a real 3-node cluster.
//!
//! Why a browser and not only router tests: the console is JavaScript under a
//! strict CSP; only a browser shows that it runs (no console errors, no request
//! leaving the node) and that its live tail and admin buttons work.
//!
//! `#[ignore]`: needs Debian's `chromium` and `chromium-driver`. scripts/test.sh
//! installs them and runs it; without them it fails when `CI=true` and otherwise
//! says why it could not run (never a silent pass).

#[path = "common/process.rs"]
mod harness;

use harness::{free_ports, wait_for, Cluster, LONG};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session; both end on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let port = free_ports(1)[0];
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        wait_for("chromedriver ready", LONG, || {
            let r = http.get(format!("{base}/status")).send().ok()?;
            let v: Value = r.json().ok()?;
            (v["value"]["ready"] == true).then_some(())
        });
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
            "unhandledPromptBehavior": "ignore",
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            http,
            _profile: profile,
        };
        let v = b.call("POST", "/session", caps);
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    /// One WebDriver command; panics with the driver's error.
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"))
    }

    fn try_call(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let resp = req.send().map_err(|e| e.to_string())?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().map_err(|e| e.to_string())?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(v["value"].to_string())
        }
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), json!({ "url": url }));
    }

    /// Runs `script` (a function body) in the page and returns its result.
    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            json!({"script": script, "args": []}),
        )
    }

    /// Clicks the element `css` selects. The members table is redrawn every poll,
    /// so an element found just before a redraw is stale: find it again then.
    fn click(&self, css: &str) {
        wait_for(&format!("a click on {css}"), LONG, || {
            let e = self.call(
                "POST",
                &self.s("/element"),
                json!({"using": "css selector", "value": css}),
            );
            let id = e[ELEMENT].as_str().expect("element id").to_string();
            match self.try_call("POST", &self.s(&format!("/element/{id}/click")), json!({})) {
                Ok(_) => Some(()),
                Err(e) if e.contains("stale element reference") => None,
                Err(e) => panic!("clicking {css}: {e}"),
            }
        });
    }

    /// Accepts the confirm() dialog, waiting for it to open.
    fn accept_dialog(&self) -> String {
        wait_for("the confirm dialog", LONG, || {
            let text = self
                .try_call("GET", &self.s("/alert/text"), json!({}))
                .ok()?;
            self.call("POST", &self.s("/alert/accept"), json!({}));
            Some(text.as_str().unwrap_or_default().to_string())
        })
    }

    /// Browser console entries so far (chromedriver's log endpoint).
    fn console_log(&self) -> Vec<Value> {
        let v = self
            .try_call("POST", &self.s("/se/log"), json!({"type": "browser"}))
            .or_else(|_| self.try_call("POST", &self.s("/log"), json!({"type": "browser"})))
            .expect("browser log");
        v.as_array().cloned().unwrap_or_default()
    }

    fn screenshot_png(&self) -> Vec<u8> {
        let v = self.call("GET", &self.s("/screenshot"), json!({}));
        base64_decode(v.as_str().expect("base64 screenshot"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_call("DELETE", &self.s(""), json!({}));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Polls `f` until it holds or `LONG` passes; on timeout the panic shows what the
/// page shows (banner, notice, members, tail state) and its console log.
fn wait_page(b: &Browser, what: &str, mut f: impl FnMut() -> Option<()>) {
    let deadline = std::time::Instant::now() + LONG;
    while std::time::Instant::now() < deadline {
        if f().is_some() {
            return;
        }
        std::thread::sleep(harness::POLL * 4);
    }
    let page = b.try_call(
        "POST",
        &b.s("/execute/sync"),
        json!({"script": "return ['banner','notice','summary','tail-state','members']\
            .map(id => id + ': ' + (document.getElementById(id) || {}).textContent);", "args": []}),
    );
    panic!(
        "timed out after {LONG:?} waiting for {what}; page: {page:?}; console: {:?}",
        b.try_call("POST", &b.s("/se/log"), json!({"type": "browser"}))
    );
}

/// The members table: (node id, leader marked, shown reachable).
fn members(b: &Browser) -> Vec<(String, bool, bool)> {
    let v = b.js(
        "return Array.from(document.querySelectorAll('#members tbody tr')).map(r => \
         [r.dataset.node, r.dataset.leader === 'true', r.dataset.reachable === 'true']);",
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap_or_default().to_string(),
                r[1] == true,
                r[2] == true,
            )
        })
        .collect()
}

/// Whether the test can run here; with `CI=true` it must.
fn browser_available() -> bool {
    let ok = std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if !ok {
        let msg = "chromium and chromium-driver are not installed \
                   (apt-get install chromium chromium-driver)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("NOT RUN: {msg}");
    }
    ok
}

#[test]
#[ignore = "needs chromium and chromium-driver; run by scripts/test.sh"]
fn console_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let c = Cluster::start(3);
    let leader = c.wait_all_voters();
    let b = Browser::start();
    let origin = format!("http://{}", c.info(leader).http_addr());
    b.goto(&format!("{origin}/ui"));

    // Three members, the leader marked, everyone reachable.
    let leader_id = c.id(leader).to_string();
    let mut last = Vec::new();
    wait_page(&b, "three members with the leader marked", || {
        let m = members(&b);
        if m != last {
            eprintln!("members shown: {m:?}");
            last = m.clone();
        }
        (m.len() == 3
            && m.iter().all(|(_, _, up)| *up)
            && m.iter()
                .filter(|(_, l, _)| *l)
                .map(|(id, _, _)| id.as_str())
                .eq([leader_id.as_str()]))
        .then_some(())
    });

    // A message written through the API shows in the live tail.
    let msg = "hello-from-the-console-test";
    let w = c.write(leader, msg, json!("majority"));
    assert!(w.status == 200 || w.status == 201, "write: {}", w.body);
    wait_page(&b, "the message in the live tail", || {
        let text = b.js("return document.getElementById('tail').textContent;");
        text.as_str()
            .unwrap_or_default()
            .contains(msg)
            .then_some(())
    });

    // A few more writes; the write rate is drawn from /metrics.
    for i in 0..20 {
        let w = c.write(leader, &format!("message {i}"), json!("majority"));
        assert!(w.status == 200 || w.status == 201, "write: {}", w.body);
    }
    wait_page(&b, "a write rate drawn", || {
        let v = b.js("const l = document.querySelector('#write-spark polyline');\
             return l ? l.getAttribute('points').split(' ').length : 0;");
        (v.as_u64() >= Some(3)).then_some(())
    });
    // The log browser pages to the latest messages.
    b.click("#latest");
    wait_page(&b, "the latest page of the log", || {
        let text = b.js("return document.querySelector('#page tbody').textContent;");
        text.as_str()
            .unwrap_or_default()
            .contains("message 19")
            .then_some(())
    });

    // A killed follower is shown unreachable.
    let victim = c.others(leader)[0];
    let victim_id = c.id(victim).to_string();
    c.kill(victim);
    wait_page(&b, "the killed node shown unreachable", || {
        members(&b)
            .iter()
            .any(|(id, _, up)| *id == victim_id && !up)
            .then_some(())
    });
    let png = b.screenshot_png();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    // CONSOLE_SCREENSHOT=docs/console.png refreshes the README's picture.
    let shot = std::env::var("CONSOLE_SCREENSHOT")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/console.png").to_string());
    std::fs::write(&shot, &png).unwrap_or_else(|e| panic!("{shot}: {e}"));

    // A leadership transfer from the page moves leadership.
    let target = c.others(leader).into_iter().find(|&i| i != victim).unwrap();
    let target_id = c.id(target).to_string();
    b.click(&format!("#transfer-{target_id}"));
    let question = b.accept_dialog();
    assert!(question.contains(&target_id), "confirm text: {question}");
    wait_for("leadership moved to the chosen node", LONG, || {
        (c.leader() == Some(target)).then_some(())
    });

    // Nothing left the node and the page logged no errors.
    let foreign = b.js(&format!(
        "return performance.getEntriesByType('resource').map(e => e.name)\
         .filter(n => !n.startsWith('{origin}/'));"
    ));
    assert_eq!(foreign, json!([]), "requests leaving the node");
    let errors: Vec<Value> = b
        .console_log()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");

    // The node serving the page dies: a banner says so and no member is shown
    // reachable any more (the browser now logs failed requests, as it should).
    c.kill(leader);
    wait_page(&b, "the node-unreachable banner", || {
        let v = b.js(
            "const b = document.getElementById('banner');\
             return !b.classList.contains('hidden') && b.textContent.includes('node unreachable');",
        );
        (v == true && members(&b).iter().all(|(_, _, up)| !up)).then_some(())
    });
}

/// On a node with tokens the page loads without one, says it is not allowed, and
/// with a read token pasted shows the members and tails the log by long polls
/// (EventSource cannot send the token).
#[test]
#[ignore = "needs chromium and chromium-driver; run by scripts/test.sh"]
fn console_with_a_pasted_token() {
    if !browser_available() {
        return;
    }
    const ADMIN: &str = "console-admin-secret-0123456789";
    const READER: &str = "console-reader-secret-0123456789";
    let keys = tempfile::tempdir().unwrap();
    let tokens = keys.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[tokens]]\nname = \"ops\"\nrole = \"admin\"\nsecret = \"{ADMIN}\"\n\n\
             [[tokens]]\nname = \"dashboard\"\nrole = \"read\"\nsecret = \"{READER}\"\n"
        ),
    )
    .unwrap();
    let tokens = tokens.to_string_lossy().into_owned();
    let mut c = Cluster::empty(&[("RAFTLOG_AUTH__TOKENS_FILE", tokens.as_str())]);
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {ADMIN}");
    headers.insert(reqwest::header::AUTHORIZATION, bearer.parse().unwrap());
    let client = reqwest::blocking::Client::builder()
        .default_headers(headers)
        .timeout(harness::REQUEST_TIMEOUT)
        .build()
        .unwrap();
    c.set_client(client, "http");
    let n1 = c.add_node_info(None);
    c.start_node(n1);
    let seed = Some(c.info(n1).grpc_addr());
    for _ in 0..2 {
        let i = c.add_node_info(seed.clone());
        c.start_node(i);
    }
    let leader = c.wait_all_voters();

    let b = Browser::start();
    b.goto(&format!("http://{}/ui", c.info(leader).http_addr()));
    wait_page(&b, "the not-allowed banner", || {
        let v = b.js("return document.getElementById('banner').textContent;");
        v.as_str()
            .unwrap_or_default()
            .contains("not allowed")
            .then_some(())
    });
    let input = b.call(
        "POST",
        &b.s("/element"),
        json!({"using": "css selector", "value": "#token"}),
    );
    let id = input[ELEMENT].as_str().unwrap().to_string();
    b.call(
        "POST",
        &b.s(&format!("/element/{id}/value")),
        json!({ "text": READER }),
    );
    b.click("#token-form button[type=submit]");
    wait_page(&b, "three members with a read token", || {
        let m = members(&b);
        (m.len() == 3 && m.iter().filter(|(_, l, _)| *l).count() == 1).then_some(())
    });
    let stored = b.js("return sessionStorage.getItem('raftlog.token');");
    assert_eq!(stored, json!(READER));
    let msg = "tailed-with-a-token";
    let w = c.write(leader, msg, json!("majority"));
    assert!(w.status == 200 || w.status == 201, "write: {}", w.body);
    wait_page(&b, "the message in the long-poll tail", || {
        let v = b.js(
            "return document.getElementById('tail').textContent + '|' + \
             document.getElementById('tail-state').textContent;",
        );
        let text = v.as_str().unwrap_or_default();
        (text.contains(msg) && text.contains("long poll")).then_some(())
    });
}
