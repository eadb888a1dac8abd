//! Health, heartbeats and observability with real processes (issue 5; SPEC
//! section 3 "Cluster and operations", `/v1/status` `health` and per-member
//! `reachable`, `/metrics`, `[debug] fault_injection`, `[health]`).
//!
//! - a slow-disk leader (injected fsync latency) hands leadership over within a
//!   bound, the cluster keeps taking writes, nothing is lost, and the node is
//!   healthy again once the fault is removed;
//! - every disk slow at once: the leader stays (no hand-over ping-pong) until
//!   one follower's disk heals, and then hands over to that one;
//! - heartbeats are isolated from data: saturated replication of large messages
//!   plus a snapshot transfer to a joining node for at least 30 s, and no node
//!   starts an election (metrics and logs);
//! - dropped messages to one peer: the leader shows it unreachable, then
//!   reachable again;
//! - a full disk (injected ENOSPC): writes get `storage_error`, reads work, and
//!   after space returns writes work and every acknowledged message is intact;
//! - `/metrics` parses as OpenMetrics text (the format it declares) with the
//!   strict parser in [`om`] below, and its counters move;
//! - the fault endpoint exists only with the config switch; `--log-format json`.
//!
//! Every wait is bounded; the only fixed-length loops are observation windows,
//! which poll throughout. Durations are measured and printed, never asserted,
//! except the bound on the slow-disk hand-over that the issue asks for.
//! Problems that do not lose data are collected as findings and reported together
//! at the end of a test, so one run shows all of them.

#[path = "common/process.rs"]
mod harness;

use harness::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// `[debug] fault_injection = true`.
const FAULTS_ON: (&str, &str) = ("RAFTLOG_DEBUG__FAULT_INJECTION", "true");

/// The bound on a slow-disk leader stepping aside (the config's unhealthy window
/// is 3 s; this leaves room for a loaded CI machine).
const HANDOVER_BOUND: Duration = Duration::from_secs(30);

/// Injected fsync latency: over the default `fsync_p99_max_ms` (500).
const SLOW_FSYNC_MS: u64 = 800;
/// Fault injection, and Raft's timing rule kept with disks that slow: the
/// election timeout well above a vote's round trip. A granted vote on an
/// SLOW_FSYNC_MS disk can wait for two fsyncs (1.6 s); under the harness's
/// 0.5-1 s timeout a candidate (a transferee, a healed node) could time out
/// before any answer came (CI: a transfer turned into an election; before the
/// core backed its timeout off after failed candidacies, another run reached
/// term 72 with no leader for a minute). The backoff ends such a livelock
/// after a few terms, but these tests check a hand-over, which must not turn
/// into an election.
const SLOW_DISK_ENV: [(&str, &str); 3] = [
    FAULTS_ON,
    ("RAFTLOG_RAFT__ELECTION_TIMEOUT_MIN_MS", "2000"),
    ("RAFTLOG_RAFT__ELECTION_TIMEOUT_MAX_MS", "4000"),
];

/// Length of the saturated run of the heartbeat isolation test.
const SATURATION_RUN: Duration = Duration::from_secs(30);

/// When the joiner starts in the saturated run (the snapshot it needs is then
/// tens of MiB, so its transfer overlaps the load).
const JOIN_AFTER: Duration = Duration::from_secs(8);

/// Size of the messages that saturate replication.
const BIG: usize = 256 * 1024;

/// Concurrent writers of big messages.
const BIG_WRITERS: usize = 4;

/// A role change caused by an election timeout (pre-vote or vote), in the
/// human log format: `reason="election timeout"` or `"election timeout: pre-vote"`.
/// Only to show the lines in a failure message: the checks count with
/// `raftlog_elections_started_total` (a reworded line cannot make them pass).
const ELECTION_TIMEOUT_LINE: &str = "reason=\"election timeout";

/// The saturation test loads disk and CPU hard (it is meant to); the tests that
/// watch timing-sensitive behaviour (elections, hand-overs) must not share the
/// machine with it. It takes this lock exclusively, every other cluster test shared.
static HEAVY: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared_machine() -> std::sync::RwLockReadGuard<'static, ()> {
    HEAVY.read().unwrap_or_else(|e| e.into_inner())
}

fn whole_machine() -> std::sync::RwLockWriteGuard<'static, ()> {
    HEAVY.write().unwrap_or_else(|e| e.into_inner())
}

// ----- findings ------------------------------------------------------------------------

/// Spec violations that lose no data, gathered so one run reports all of them
/// (data checks stay immediate assertions).
#[derive(Default)]
struct Findings(Mutex<Vec<String>>);

impl Findings {
    fn add(&self, what: impl Into<String>) {
        let what = what.into();
        eprintln!("FINDING: {what}");
        self.0.lock().unwrap().push(what);
    }

    fn check(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.add(what());
        }
    }

    /// Panics listing every finding (call while the cluster is alive, so its
    /// logs are printed).
    fn assert_none(&self, test: &str) {
        let v = self.0.lock().unwrap();
        assert!(
            v.is_empty(),
            "{test}: {} problem(s):\n- {}",
            v.len(),
            v.join("\n- ")
        );
    }
}

// ----- OpenMetrics text parser -----------------------------------------------------------

/// A strict parser of the OpenMetrics 1.0 text format (what `/metrics` declares in
/// its content type; the Prometheus text format plus `_total` counter samples,
/// `# UNIT` and a mandatory `# EOF`). It rejects anything the format does not
/// allow: blank lines, comments other than HELP/TYPE/UNIT, samples outside their
/// family or interleaved families, a family without `# TYPE`, sample names a type
/// does not have, bad names, label syntax or escapes, duplicate label names or
/// series, malformed numbers, histograms whose buckets are not cumulative or lack
/// `+Inf` = `_count`, negative counters, and anything after `# EOF`.
mod om {
    use std::collections::{BTreeMap, BTreeSet};

    pub type Labels = BTreeMap<String, String>;

    #[derive(Clone, Debug)]
    pub struct Sample {
        pub name: String,
        pub labels: Labels,
        pub value: f64,
    }

    #[derive(Clone, Debug)]
    pub struct Family {
        pub name: String,
        pub kind: String,
        pub help: Option<String>,
        pub unit: Option<String>,
        pub samples: Vec<Sample>,
        typed: bool,
    }

    #[derive(Clone, Debug, Default)]
    pub struct Exposition {
        pub families: Vec<Family>,
    }

    const KINDS: &[&str] = &[
        "counter",
        "gauge",
        "histogram",
        "gaugehistogram",
        "stateset",
        "info",
        "summary",
        "unknown",
    ];

    /// The suffixes a sample may add to its family name, by family type.
    fn suffixes(kind: &str) -> &'static [&'static str] {
        match kind {
            "counter" => &["_total", "_created"],
            "gauge" | "stateset" | "unknown" => &[""],
            "histogram" => &["_bucket", "_count", "_sum", "_created"],
            "gaugehistogram" => &["_bucket", "_gcount", "_gsum"],
            "summary" => &["", "_count", "_sum", "_created"],
            "info" => &["_info"],
            _ => &[],
        }
    }

    fn is_metric_name(s: &str) -> bool {
        let mut cs = s.chars();
        matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn is_label_name(s: &str) -> bool {
        let mut cs = s.chars();
        matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with("__")
    }

    /// A number: a real number, or (case-insensitive) `[+-]inf`, `[+-]infinity`,
    /// `nan`.
    pub fn parse_number(s: &str) -> Result<f64, String> {
        let lower = s.to_ascii_lowercase();
        let unsigned = lower.trim_start_matches(['+', '-']);
        let special = ["inf", "infinity"].contains(&unsigned) && lower.len() - unsigned.len() <= 1
            || lower == "nan";
        let real = !s.is_empty()
            && s.chars().any(|c| c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'));
        if !(special || real) {
            return Err(format!("{s:?} is not a number"));
        }
        s.parse::<f64>()
            .map_err(|e| format!("{s:?} is not a number: {e}"))
    }

    fn unescape_help(s: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut cs = s.chars();
        while let Some(c) = cs.next() {
            if c == '\\' {
                match cs.next() {
                    Some('\\') => out.push('\\'),
                    Some('"') => out.push('"'),
                    Some('n') => out.push('\n'),
                    other => return Err(format!("bad escape \\{other:?} in HELP")),
                }
            } else {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// `name{labels} value [timestamp]`.
    fn parse_sample(line: &str) -> Result<(String, Labels, f64), String> {
        let name_end = line
            .find(['{', ' '])
            .ok_or("a sample needs a value after its name")?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(format!("bad metric name {name:?}"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Labels::new();
        if let Some(mut r) = rest.strip_prefix('{') {
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
            } else {
                loop {
                    let eq = r.find('=').ok_or("label without `=`")?;
                    let lname = &r[..eq];
                    if !is_label_name(lname) {
                        return Err(format!("bad label name {lname:?}"));
                    }
                    r = r[eq + 1..]
                        .strip_prefix('"')
                        .ok_or_else(|| format!("value of label {lname} must be quoted"))?;
                    let mut value = String::new();
                    let mut cs = r.char_indices();
                    let end = loop {
                        match cs.next() {
                            None => return Err(format!("unterminated value of label {lname}")),
                            Some((k, '"')) => break k,
                            Some((_, '\\')) => match cs.next() {
                                Some((_, '\\')) => value.push('\\'),
                                Some((_, '"')) => value.push('"'),
                                Some((_, 'n')) => value.push('\n'),
                                other => {
                                    return Err(format!("bad escape {other:?} in label {lname}"))
                                }
                            },
                            Some((_, c)) => value.push(c),
                        }
                    };
                    if labels.insert(lname.to_string(), value).is_some() {
                        return Err(format!("label {lname} given twice"));
                    }
                    r = &r[end + 1..];
                    if let Some(after) = r.strip_prefix(',') {
                        r = after;
                    } else if let Some(after) = r.strip_prefix('}') {
                        rest = after;
                        break;
                    } else {
                        return Err("expected `,` or `}` after a label".into());
                    }
                }
            }
        }
        let rest = rest
            .strip_prefix(' ')
            .ok_or("expected one space before the value")?;
        let mut parts = rest.split(' ');
        let value = parse_number(parts.next().unwrap_or_default())?;
        match parts.next() {
            None => {}
            Some("#") => return Err("unexpected exemplar".into()),
            Some(ts) => {
                parse_number(ts).map_err(|e| format!("bad timestamp: {e}"))?;
            }
        }
        if parts.next().is_some() {
            return Err("trailing text after the value".into());
        }
        Ok((name.to_string(), labels, value))
    }

    pub fn parse(text: &str) -> Result<Exposition, String> {
        let body = text.strip_suffix('\n').unwrap_or(text);
        let mut lines: Vec<&str> = body.split('\n').collect();
        match lines.pop() {
            Some("# EOF") => {}
            other => {
                return Err(format!(
                    "the exposition must end with `# EOF`, its last line is {other:?}"
                ))
            }
        }
        let mut fams: Vec<Family> = Vec::new();
        let mut names = BTreeSet::new();
        for (n, line) in lines.iter().enumerate() {
            let at = |m: String| format!("line {} {line:?}: {m}", n + 1);
            if line.is_empty() {
                return Err(at("blank line".into()));
            }
            if let Some(meta) = line.strip_prefix("# ") {
                let (kw, rest) = meta
                    .split_once(' ')
                    .ok_or_else(|| at("metadata without a metric name".into()))?;
                let (name, arg) = rest
                    .split_once(' ')
                    .ok_or_else(|| at(format!("# {kw} needs a value after the name")))?;
                if !is_metric_name(name) {
                    return Err(at(format!("bad metric name {name:?}")));
                }
                if fams.last().is_none_or(|f| f.name != name) {
                    if !names.insert(name.to_string()) {
                        return Err(at(format!("family {name} appears twice (interleaved)")));
                    }
                    fams.push(Family {
                        name: name.to_string(),
                        kind: "unknown".into(),
                        help: None,
                        unit: None,
                        samples: Vec::new(),
                        typed: false,
                    });
                }
                let f = fams.last_mut().unwrap();
                if !f.samples.is_empty() {
                    return Err(at(format!("metadata of {name} after its samples")));
                }
                match kw {
                    "TYPE" => {
                        if f.typed {
                            return Err(at("second # TYPE".into()));
                        }
                        if !KINDS.contains(&arg) {
                            return Err(at(format!("unknown type {arg:?}")));
                        }
                        f.kind = arg.to_string();
                        f.typed = true;
                    }
                    "HELP" => {
                        if f.help.is_some() {
                            return Err(at("second # HELP".into()));
                        }
                        f.help = Some(unescape_help(arg).map_err(at)?);
                    }
                    "UNIT" => {
                        if f.unit.is_some() {
                            return Err(at("second # UNIT".into()));
                        }
                        if !arg.is_empty() && !name.ends_with(&format!("_{arg}")) {
                            return Err(at(format!("family name must end with _{arg}")));
                        }
                        f.unit = Some(arg.to_string());
                    }
                    other => return Err(at(format!("unknown metadata # {other}"))),
                }
                continue;
            }
            if line.starts_with('#') {
                return Err(at(
                    "only # HELP, # TYPE, # UNIT and # EOF may start with #".into()
                ));
            }
            let (name, labels, value) = parse_sample(line).map_err(at)?;
            let f = fams
                .last_mut()
                .ok_or_else(|| at("sample before any # TYPE".into()))?;
            let suffix = name.strip_prefix(f.name.as_str()).ok_or_else(|| {
                at(format!(
                    "sample outside its family (current family {})",
                    f.name
                ))
            })?;
            if !f.typed {
                return Err(at(format!("family {} has no # TYPE", f.name)));
            }
            if !suffixes(&f.kind).contains(&suffix) {
                return Err(at(format!(
                    "a {} family ({}) has no sample named {name}",
                    f.kind, f.name
                )));
            }
            if f.samples
                .iter()
                .any(|s| s.name == name && s.labels == labels)
            {
                return Err(at("duplicate series".into()));
            }
            f.samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        for f in &fams {
            validate(f).map_err(|e| format!("family {}: {e}", f.name))?;
        }
        Ok(Exposition { families: fams })
    }

    fn validate(f: &Family) -> Result<(), String> {
        match f.kind.as_str() {
            "counter" => {
                for s in &f.samples {
                    if s.name.ends_with("_total") && (s.value.is_nan() || s.value < 0.0) {
                        return Err(format!("counter value {} {:?}", s.value, s.labels));
                    }
                }
            }
            "histogram" => {
                let mut buckets: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
                let mut counts: BTreeMap<Labels, f64> = BTreeMap::new();
                for s in &f.samples {
                    if s.name.ends_with("_bucket") {
                        let mut key = s.labels.clone();
                        let le = key.remove("le").ok_or("a bucket without `le`")?;
                        let le = parse_number(&le)?;
                        if s.value < 0.0 || s.value.fract() != 0.0 {
                            return Err(format!("bucket count {} is not a count", s.value));
                        }
                        buckets.entry(key).or_default().push((le, s.value));
                    } else {
                        if s.labels.contains_key("le") {
                            return Err(format!("{} must not carry `le`", s.name));
                        }
                        if s.name.ends_with("_count") {
                            counts.insert(s.labels.clone(), s.value);
                        }
                    }
                }
                for (key, bs) in &buckets {
                    for w in bs.windows(2) {
                        if w[1].0 <= w[0].0 {
                            return Err(format!("buckets of {key:?} not in increasing `le`"));
                        }
                        if w[1].1 < w[0].1 {
                            return Err(format!("buckets of {key:?} are not cumulative"));
                        }
                    }
                    let (le, last) = *bs.last().unwrap();
                    if le != f64::INFINITY {
                        return Err(format!("buckets of {key:?} lack le=\"+Inf\""));
                    }
                    match counts.get(key) {
                        Some(c) if *c == last => {}
                        other => {
                            return Err(format!(
                                "_count {other:?} of {key:?} differs from the +Inf bucket {last}"
                            ))
                        }
                    }
                }
                if let Some(k) = counts.keys().find(|k| !buckets.contains_key(*k)) {
                    return Err(format!("_count of {k:?} without buckets"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    impl Exposition {
        pub fn family(&self, name: &str) -> Option<&Family> {
            self.families.iter().find(|f| f.name == name)
        }

        /// The value of the series `sample{labels}` (exactly these labels).
        pub fn get(&self, sample: &str, labels: &[(&str, &str)]) -> Option<f64> {
            let want: Labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            self.families
                .iter()
                .flat_map(|f| &f.samples)
                .find(|s| s.name == sample && s.labels == want)
                .map(|s| s.value)
        }

        /// As [`Exposition::get`], 0 when the series does not exist (yet).
        pub fn get0(&self, sample: &str, labels: &[(&str, &str)]) -> f64 {
            self.get(sample, labels).unwrap_or(0.0)
        }

        /// Observations above `x` in the unlabelled histogram `hist`.
        pub fn observed_above(&self, hist: &str, x: f64) -> f64 {
            let count = self.get0(&format!("{hist}_count"), &[]);
            let below = self
                .family(hist)
                .into_iter()
                .flat_map(|f| &f.samples)
                .filter(|s| s.name.ends_with("_bucket"))
                .filter(|s| {
                    s.labels
                        .get("le")
                        .and_then(|le| parse_number(le).ok())
                        .is_some_and(|le| le <= x)
                })
                .map(|s| s.value)
                .fold(0.0, f64::max);
            count - below
        }
    }
}

/// The parser must reject what the format forbids, or the `/metrics` tests below
/// prove nothing.
#[test]
fn openmetrics_parser_accepts_the_format_and_rejects_violations() {
    let good = "# HELP a_b Help with \\\\ and \\n.\n# TYPE a_b counter\na_b_total 3\n\
                a_b_created 1.7e9\n# TYPE g gauge\ng{x=\"q\\\"uote\",y=\"\"} -1.5\n\
                # TYPE h_seconds histogram\n# UNIT h_seconds seconds\n\
                h_seconds_sum 0.5\nh_seconds_count 2\nh_seconds_bucket{le=\"0.1\"} 1\n\
                h_seconds_bucket{le=\"+Inf\"} 2\n# EOF\n";
    let e = om::parse(good).unwrap_or_else(|e| panic!("valid text rejected: {e}"));
    assert_eq!(e.get("a_b_total", &[]), Some(3.0));
    assert_eq!(e.get("g", &[("x", "q\"uote"), ("y", "")]), Some(-1.5));
    assert_eq!(e.observed_above("h_seconds", 0.1), 1.0);
    assert_eq!(
        e.family("a_b").unwrap().help.as_deref(),
        Some("Help with \\ and \n.")
    );

    let bad: &[(&str, &str)] = &[
        ("no EOF", "# TYPE g gauge\ng 1\n"),
        ("text after EOF", "# TYPE g gauge\ng 1\n# EOF\ng 2\n"),
        ("blank line", "# TYPE g gauge\n\ng 1\n# EOF\n"),
        ("untyped family", "g 1\n# EOF\n"),
        ("bare counter sample", "# TYPE c counter\nc 1\n# EOF\n"),
        ("gauge with _total", "# TYPE g gauge\ng_total 1\n# EOF\n"),
        ("unquoted label", "# TYPE g gauge\ng{a=b} 1\n# EOF\n"),
        ("bad escape", "# TYPE g gauge\ng{a=\"\\t\"} 1\n# EOF\n"),
        ("trailing comma", "# TYPE g gauge\ng{a=\"1\",} 1\n# EOF\n"),
        (
            "duplicate label",
            "# TYPE g gauge\ng{a=\"1\",a=\"2\"} 1\n# EOF\n",
        ),
        ("duplicate series", "# TYPE g gauge\ng 1\ng 2\n# EOF\n"),
        ("bad number", "# TYPE g gauge\ng 1,5\n# EOF\n"),
        ("two spaces", "# TYPE g gauge\ng  1\n# EOF\n"),
        ("bad name", "# TYPE 1g gauge\n1g 1\n# EOF\n"),
        ("unknown type", "# TYPE g gouge\ng 1\n# EOF\n"),
        ("free comment", "# hello\n# TYPE g gauge\ng 1\n# EOF\n"),
        (
            "interleaved",
            "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\na 2\n# EOF\n",
        ),
        (
            "metadata after samples",
            "# TYPE a gauge\na 1\n# HELP a x\n# EOF\n",
        ),
        ("negative counter", "# TYPE c counter\nc_total -1\n# EOF\n"),
        (
            "non-cumulative buckets",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n# EOF\n",
        ),
        (
            "no +Inf bucket",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\n# EOF\n",
        ),
        (
            "count differs from +Inf",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 2\n# EOF\n",
        ),
    ];
    for (what, text) in bad {
        assert!(
            om::parse(text).is_err(),
            "the parser accepted a violation ({what}):\n{text}"
        );
    }
}

// ----- small helpers -----------------------------------------------------------------

/// `/metrics` of node `i`, parsed (panics if it does not parse).
fn scrape(c: &Cluster, i: usize) -> om::Exposition {
    try_scrape(c, i).unwrap_or_else(|e| panic!("GET /metrics on {}: {e}", c.id(i)))
}

/// `/metrics` of node `i`: `Err` if it does not answer 200; panics if the text
/// does not parse.
fn try_scrape(c: &Cluster, i: usize) -> Result<om::Exposition, String> {
    let r = c.try_get_timeout(i, "/metrics", REQUEST_TIMEOUT)?;
    if r.status != 200 {
        return Err(format!("{} {}", r.status, r.body));
    }
    Ok(om::parse(&r.body).unwrap_or_else(|e| {
        panic!(
            "/metrics of {} is not valid OpenMetrics text: {e}\n{}",
            c.id(i),
            r.body
        )
    }))
}

/// POST /v1/debug/faults on node `i` (replaces the whole fault set); checks the
/// answer and that GET reads it back.
fn set_faults(c: &Cluster, i: usize, faults: Value) {
    let r = c.post_raw(i, "/v1/debug/faults", faults.to_string(), &[]);
    assert_eq!(
        r.status,
        200,
        "POST /v1/debug/faults {faults} on {}: {}",
        c.id(i),
        r.body
    );
    let back = c.get(i, "/v1/debug/faults");
    assert_eq!(back.status, 200, "GET /v1/debug/faults: {}", back.body);
    for (k, v) in faults.as_object().unwrap() {
        assert_eq!(
            &back.json[k],
            v,
            "GET /v1/debug/faults on {} must read back {k}: {}",
            c.id(i),
            back.body
        );
    }
}

/// Member `id` of a `/v1/status` body (`Null` if absent).
fn member(status: &Value, id: &str) -> Value {
    status["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["node_id"] == id))
        .cloned()
        .unwrap_or(Value::Null)
}

/// What node `observer` reports as `peer`'s `reachable`, if it answers.
fn reachable(c: &Cluster, observer: usize, peer: &str) -> Option<Value> {
    c.status(observer)
        .map(|s| member(&s, peer)["reachable"].clone())
}

/// Lines of node `i`'s log containing `needle`, the last `n` of them.
fn log_lines(c: &Cluster, i: usize, needle: &str, n: usize) -> Vec<String> {
    let text = log_text(&c.info(i).log_path);
    let v: Vec<String> = text
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect();
    v[v.len().saturating_sub(n)..].to_vec()
}

/// `raftlog_elections_started_total` (pre-vote and vote rounds after an election
/// timeout) of each of `nodes`.
fn elections_started(c: &Cluster, nodes: &[usize]) -> Vec<f64> {
    counter_of(c, nodes, "raftlog_elections_started_total")
}

/// `raftlog_transfer_campaigns_total` (campaigns because the leader handed
/// leadership over) of each of `nodes`.
fn transfer_campaigns(c: &Cluster, nodes: &[usize]) -> Vec<f64> {
    counter_of(c, nodes, "raftlog_transfer_campaigns_total")
}

/// Counter `name` (no labels) of each of `nodes`. The series must be there: a
/// renamed metric read as 0 would make "it did not move" checks pass vacuously.
fn counter_of(c: &Cluster, nodes: &[usize], name: &str) -> Vec<f64> {
    nodes
        .iter()
        .map(|&i| {
            scrape(c, i)
                .get(name, &[])
                .unwrap_or_else(|| panic!("{} exposes no {name}", c.id(i)))
        })
        .collect()
}

/// `raftlog_snapshots_installed_total` of node `i`; 0 while it does not answer
/// (a joiner serves its API only once accepted).
fn snapshots_installed(c: &Cluster, i: usize) -> f64 {
    try_scrape(c, i).map_or(0.0, |m| {
        m.get("raftlog_snapshots_installed_total", &[])
            .unwrap_or_else(|| panic!("{} exposes no raftlog_snapshots_installed_total", c.id(i)))
    })
}

/// Asserts each acknowledged `(offset, message)` sits at its offset in `log`,
/// and nothing appears twice.
fn check_acked(log: &[(u64, String)], acked: &[(u64, String)], ctx: &str) {
    assert_dense(log);
    assert_unique(log);
    for (off, msg) in acked {
        let at = log.get(*off as usize).map(|(_, m)| m.as_str());
        assert!(
            at == Some(msg.as_str()),
            "{ctx}: acknowledged {msg:?} must be at offset {off}, found {at:?} (log has {} messages)",
            log.len()
        );
    }
}

/// Writes `msg` (as its own Idempotency-Key, w = majority) via `node`, retrying
/// 503, 504, 507 and transport errors for up to `bound`; returns its offset.
fn write_until_ok(c: &Cluster, node: usize, msg: &str, bound: Duration) -> u64 {
    let mut last: String;
    let deadline = Instant::now() + bound;
    loop {
        match c.write_with(node, msg, json!("majority"), "", Some(msg), REQUEST_TIMEOUT) {
            Ok(r) if r.status == 201 || r.status == 200 => return r.offset(),
            Ok(r) if matches!(r.status, 503 | 504 | 507) => {
                last = format!("{} {}", r.status, r.body)
            }
            Ok(r) => panic!(
                "write {msg:?} via {}: unexpected {} {}",
                c.id(node),
                r.status,
                r.body
            ),
            Err(e) => last = e,
        }
        assert!(
            Instant::now() < deadline,
            "write {msg:?} via {} not acknowledged within {bound:?}; last answer: {last}",
            c.id(node)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Acknowledged writes of a background writer, and why it had to retry.
#[derive(Default)]
struct Writes {
    acked: Mutex<Vec<(u64, String)>>,
    retries: Mutex<BTreeMap<String, usize>>,
}

impl Writes {
    fn len(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn acked(&self) -> Vec<(u64, String)> {
        self.acked.lock().unwrap().clone()
    }
}

/// Writes `"{prefix}-{k:05}"` for k = 0, 1, ... until `stop`, each with itself as
/// Idempotency-Key and w = majority, through `nodes` in turn; a 503, 504 or
/// transport error is retried (on the next node; the key makes it exactly-once)
/// until the write is acknowledged, for up to 2 x [`LONG`] per message.
fn keyed_writes(c: &Cluster, prefix: &str, nodes: &[usize], stop: &AtomicBool, out: &Writes) {
    let mut k = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let msg = format!("{prefix}-{k:05}");
        let deadline = Instant::now() + LONG * 2;
        let mut attempt = 0;
        loop {
            let node = nodes[(k + attempt) % nodes.len()];
            let why = match c.write_with(
                node,
                &msg,
                json!("majority"),
                "",
                Some(&msg),
                REQUEST_TIMEOUT,
            ) {
                Ok(r) if r.status == 201 || r.status == 200 => {
                    out.acked.lock().unwrap().push((r.offset(), msg.clone()));
                    break;
                }
                Ok(r) if matches!(r.status, 503 | 504) => {
                    format!("{} {}", r.status, r.code().unwrap_or("?"))
                }
                Ok(r) => panic!(
                    "write {msg:?} via {}: unexpected {} {}",
                    c.id(node),
                    r.status,
                    r.body
                ),
                Err(_) => "transport error".to_string(),
            };
            *out.retries.lock().unwrap().entry(why).or_default() += 1;
            if stop.load(Ordering::SeqCst) {
                break; // abandoned: may or may not be in the log (its key is unique)
            }
            assert!(
                Instant::now() < deadline,
                "write {msg:?} not acknowledged within {:?}",
                LONG * 2
            );
            attempt += 1;
            thread::sleep(Duration::from_millis(50));
        }
        k += 1;
    }
}

/// Snapshot chunks being received by a node (`snap-incoming/*.partial`).
fn partials(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir.join("snap-incoming")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .map(|e| e.path())
        .collect()
}

/// Waits until `leader` lists exactly `nodes` as members, all voters, and every
/// node of `nodes` has applied the same index.
fn wait_voters_caught_up(c: &Cluster, leader: usize, nodes: &[usize], bound: Duration) {
    let last = Mutex::new(String::new());
    wait_for_or(
        &format!("nodes {nodes:?} to be caught-up voters"),
        bound,
        || {
            let s = c.status(leader)?;
            let ms = s["members"].as_array()?;
            let voters = ms.iter().filter(|m| m["voter"] == true).count();
            let applied: Vec<Option<u64>> = nodes
                .iter()
                .map(|&i| c.status(i).and_then(|s| s["applied_index"].as_u64()))
                .collect();
            *last.lock().unwrap() =
                format!("{} members, {voters} voters, applied {applied:?}", ms.len());
            (ms.len() == nodes.len()
                && voters == nodes.len()
                && applied.iter().all(|a| a.is_some() && *a == applied[0]))
            .then_some(())
        },
        || last.lock().unwrap().clone(),
    );
}

// ----- the scenarios ---------------------------------------------------------------------

/// Inject fsync latency on the leader: it hands leadership over (by a transfer,
/// not by letting an election timer run out) within [`HANDOVER_BOUND`], the
/// cluster keeps accepting w = majority writes, no acknowledged write is lost, and
/// once the fault is removed the node reports health `ok` again.
#[test]
fn slow_disk_leader_hands_leadership_over_and_is_healthy_again() {
    let _machine = shared_machine();
    let c = Cluster::start_with_env(3, &SLOW_DISK_ENV);
    let found = Findings::default();
    let all: Vec<usize> = (0..3).collect();
    let l = c.wait_leader();
    let lid = c.id(l).to_string();
    let writes = Writes::default();
    let stop = AtomicBool::new(false);

    thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| keyed_writes(&c, "slow", &all, &stop, &writes));
        wait_for("10 writes before the fault", LONG, || {
            (writes.len() >= 10).then_some(())
        });
        let elections_before = elections_started(&c, &all);
        let transfers_before = transfer_campaigns(&c, &all);
        let slow_before = scrape(&c, l).observed_above("raftlog_wal_fsync_seconds", 0.5);

        let t0 = Instant::now();
        set_faults(&c, l, json!({ "fsync_delay_ms": SLOW_FSYNC_MS }));
        let mut unhealthy: Option<Value> = None;
        let new = wait_for_or(
            &format!("leadership to leave the slow-disk leader {lid}"),
            HANDOVER_BOUND,
            || {
                if unhealthy.is_none() {
                    if let Some(st) = c.status(l) {
                        if st["health"]["disk"] == "unhealthy" {
                            unhealthy = Some(st["health"].clone());
                        }
                    }
                }
                c.leader().filter(|&n| n != l)
            },
            || format!("{lid}'s status: {:?}", c.status(l)),
        );
        let took = t0.elapsed();
        eprintln!(
            "slow-disk leader {lid} (fsync +{SLOW_FSYNC_MS} ms) handed leadership to {} after {:.2} s",
            c.id(new),
            took.as_secs_f64()
        );
        let new = c.wait_leader();
        assert_ne!(new, l, "the slow-disk leader must not lead again");

        // How it stepped aside: the health manager's hand-over, a transfer.
        if unhealthy.is_none() {
            unhealthy = c
                .status(l)
                .filter(|s| s["health"]["disk"] == "unhealthy")
                .map(|s| s["health"].clone());
        }
        match &unhealthy {
            Some(h) => {
                eprintln!("{lid}'s health while its disk was slow: {h}");
                found.check(h["status"] == "degraded", || {
                    format!("an unhealthy disk must make health.status degraded: {h}")
                });
                found.check(h["reasons"].to_string().contains("fsync"), || {
                    format!("health.reasons must name the slow fsync: {h}")
                });
            }
            None => found.add(format!(
                "{lid} never reported health.disk \"unhealthy\" while its fsyncs took {SLOW_FSYNC_MS} ms"
            )),
        }
        let handovers = scrape(&c, l).get0("raftlog_leadership_handovers_total", &[]);
        found.check(handovers > 0.0, || {
            format!("{lid}'s raftlog_leadership_handovers_total is {handovers}: no hand-over")
        });
        found.check(
            transfer_campaigns(&c, &[new])[0] > transfers_before[new],
            || {
                format!(
                    "the new leader {} did not campaign because of a leadership transfer; its role changes: {:#?}",
                    c.id(new),
                    log_lines(&c, new, "role change", 6)
                )
            },
        );
        let elections_after = elections_started(&c, &all);
        found.check(elections_after == elections_before, || {
            format!(
                "a slow disk on the leader made nodes run out their election timers \
                 (raftlog_elections_started_total per node {elections_before:?} -> {elections_after:?})"
            )
        });
        let slow_after = scrape(&c, l).observed_above("raftlog_wal_fsync_seconds", 0.5);
        assert!(
            slow_after > slow_before,
            "raftlog_wal_fsync_seconds on {lid} must record fsyncs over 0.5 s ({slow_before} -> {slow_after})"
        );

        // The cluster keeps accepting writes; the degraded node does not lead again.
        let base = writes.len();
        let mut relead = false;
        let t = Instant::now();
        wait_for("20 more writes (and 3 s) after the hand-over", LONG, || {
            relead |= c.status(l).is_some_and(|s| s["role"] == "leader");
            (writes.len() >= base + 20 && t.elapsed() >= Duration::from_secs(3)).then_some(())
        });
        found.check(!relead, || {
            format!("{lid} became leader again while its disk was still slow")
        });

        // Healthy again once the fault is removed.
        set_faults(&c, l, json!({}));
        let t1 = Instant::now();
        let health = |c: &Cluster| c.status(l).map(|s| s["health"].clone());
        wait_for_or(
            &format!("{lid} to report disk ok after the fault was removed"),
            LONG,
            || health(&c).filter(|h| h["disk"] == "ok"),
            || format!("{lid}'s health: {:?}", health(&c)),
        );
        eprintln!(
            "{lid} reported disk ok {:.2} s after the fault was removed",
            t1.elapsed().as_secs_f64()
        );
        let ok = wait_for_bounded(Duration::from_secs(15), || {
            health(&c).is_some_and(|h| h["status"] == "ok")
        });
        found.check(ok, || {
            format!(
                "{lid} does not report health ok after the fault was removed (and its disk is ok): {:?}",
                health(&c)
            )
        });
        stop.store(true, Ordering::SeqCst);
    });

    let acked = writes.acked();
    eprintln!(
        "{} writes acknowledged; retries by cause: {:?}",
        acked.len(),
        writes.retries.lock().unwrap()
    );
    let log = c.wait_converged(&all, acked.len());
    check_acked(&log, &acked, "after the slow-disk hand-over");
    found.assert_none("slow-disk leader");
}

/// Every node's disk slow at once (the shared-disk case): the leader stays,
/// since a transfer would only move leadership onto another sick disk (and two
/// such nodes would pass it back and forth, each hand-over a failover for the
/// clients). It says so once, keeps taking writes and hands over nothing; once
/// one follower's disk is fast again, leadership goes to that follower.
#[test]
fn slow_disks_everywhere_keep_the_leader_and_a_healthy_follower_takes_over() {
    let _machine = shared_machine();
    let c = Cluster::start_with_env(3, &SLOW_DISK_ENV);
    let found = Findings::default();
    let all: Vec<usize> = (0..3).collect();
    let l = c.wait_leader();
    let lid = c.id(l).to_string();
    let term0 = c.status(l).unwrap()["term"].as_u64().unwrap();
    let writes = Writes::default();
    let stop = AtomicBool::new(false);
    let changes_before = counter_of(&c, &all, "raftlog_leader_changes_total");

    thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| keyed_writes(&c, "sick", &all, &stop, &writes));
        // The followers' disks first, until they say so in their heartbeat
        // answers (status shows the same flag), then the leader's.
        for &i in all.iter().filter(|&&i| i != l) {
            set_faults(&c, i, json!({ "fsync_delay_ms": SLOW_FSYNC_MS }));
        }
        for &i in all.iter().filter(|&&i| i != l) {
            wait_for_or(
                &format!("{} to report its disk unhealthy", c.id(i)),
                HANDOVER_BOUND,
                || c.status(i).filter(|s| s["health"]["disk"] == "unhealthy"),
                || format!("{}'s status: {:?}", c.id(i), c.status(i)),
            );
        }
        set_faults(&c, l, json!({ "fsync_delay_ms": SLOW_FSYNC_MS }));
        // Every node unhealthy, the leader past its window: it decides to stay.
        wait_for_or(
            &format!("{lid} to say it stays leader on a sick disk"),
            HANDOVER_BOUND,
            || (!log_lines(&c, l, "staying leader", 1).is_empty()).then_some(()),
            || {
                format!(
                    "statuses: {:?}",
                    all.iter().map(|&i| c.status(i)).collect::<Vec<_>>()
                )
            },
        );
        for &i in &all {
            let h = c.status(i).map(|s| s["health"]["disk"].clone());
            found.check(h == Some(json!("unhealthy")), || {
                format!(
                    "{} reports disk {h:?} while every fsync takes {SLOW_FSYNC_MS} ms",
                    c.id(i)
                )
            });
        }
        // A while longer: still the same leader and term, no hand-over.
        let base = writes.len();
        wait_for("5 more writes on sick disks", LONG, || {
            (writes.len() >= base + 5).then_some(())
        });
        let st = c.status(l);
        found.check(
            st.as_ref()
                .is_some_and(|s| s["role"] == "leader" && s["term"] == term0),
            || format!("{lid} did not keep leading term {term0} on sick disks: {st:?}"),
        );
        let handovers = scrape(&c, l).get0("raftlog_leadership_handovers_total", &[]);
        found.check(handovers == 0.0, || {
            format!("{lid} handed over {handovers} time(s) although no disk was healthy")
        });
        let changes = counter_of(&c, &all, "raftlog_leader_changes_total");
        found.check(changes == changes_before, || {
            format!("raftlog_leader_changes_total {changes_before:?} -> {changes:?} while every disk was sick")
        });

        // One follower's disk heals: leadership goes to it.
        let healed = all.iter().copied().find(|&i| i != l).unwrap();
        set_faults(&c, healed, json!({}));
        let new = wait_for_or(
            &format!("leadership to move to {}, whose disk healed", c.id(healed)),
            Duration::from_secs(60),
            || c.leader().filter(|&n| n != l),
            || {
                format!(
                    "statuses: {:?}",
                    all.iter().map(|&i| c.status(i)).collect::<Vec<_>>()
                )
            },
        );
        found.check(new == healed, || {
            format!(
                "leadership went to {}, not to {} whose disk is the healthy one",
                c.id(new),
                c.id(healed)
            )
        });
        for &i in &all {
            set_faults(&c, i, json!({}));
        }
        let base = writes.len();
        wait_for("10 writes after the hand-over", LONG, || {
            (writes.len() >= base + 10).then_some(())
        });
        stop.store(true, Ordering::SeqCst);
    });

    let acked = writes.acked();
    let log = c.wait_converged(&all, acked.len());
    check_acked(&log, &acked, "after slow disks everywhere");
    found.assert_none("slow disks everywhere");
}

/// Polls `f` every [`POLL`] for up to `timeout`; true once it holds.
fn wait_for_bounded(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// With replication saturated by large messages from several writers and a
/// snapshot transfer to a joining node in flight, no node starts an election over
/// a run of at least [`SATURATION_RUN`] (elections counted in metrics and in the
/// logs, pre-votes included), and the leader and term stay the same.
#[test]
fn heartbeats_are_isolated_from_saturated_replication_and_a_snapshot_transfer() {
    let _machine = whole_machine();
    // A leader whose fsync p99 passes `health.fsync_p99_max_ms` hands leadership
    // over on purpose (`slow_disk_leader_hands_leadership_over_and_is_healthy_again`); 15 MiB/s of 256 KiB
    // writes on a shared disk once took the p99 to 634 ms and so moved the
    // leader. This test is about heartbeats, so that threshold is out of reach.
    let mut c = Cluster::start_with_env(
        3,
        &[
            ("RAFTLOG_SNAPSHOT__EVERY_ENTRIES", "100"),
            ("RAFTLOG_HEALTH__FSYNC_P99_MAX_MS", "600000"),
        ],
    );
    let found = Findings::default();
    let voters: Vec<usize> = (0..3).collect();
    let l = c.wait_leader();
    let lid = c.id(l).to_string();
    let term0 = c.status(l).unwrap()["term"].as_u64().unwrap();
    // The joiner is described now and started mid-run (through the leader).
    let j = c.add_node_info(Some(c.info(l).grpc_addr()));
    let jid = c.id(j).to_string();
    let c = c; // no more changes to the node list

    let started_before = elections_started(&c, &voters);
    let snaps_before = scrape(&c, l).get0("raftlog_snapshots_total", &[]);

    let stop = AtomicBool::new(false);
    let ok = Mutex::new((0u64, BTreeMap::<String, u64>::new()));
    let mut leader_changes: Vec<String> = Vec::new();
    let mut partial_seen = false;
    let mut snapshot_received_at: Option<Duration> = None;
    let t0 = Instant::now();
    thread::scope(|s| {
        for t in 0..BIG_WRITERS {
            let (c, stop, ok) = (&c, &stop, &ok);
            s.spawn(move || {
                let mut k = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let head = format!("big-{t}-{k:06}-");
                    let msg = format!("{head}{}", "x".repeat(BIG - head.len()));
                    let node = (t + k) % 3;
                    let r = c.write_with(
                        node,
                        &msg,
                        json!("majority"),
                        "",
                        None,
                        Duration::from_secs(60),
                    );
                    let mut g = ok.lock().unwrap();
                    match r {
                        Ok(r) if r.status == 201 => g.0 += 1,
                        Ok(r) => {
                            *g.1.entry(format!("{} {}", r.status, r.code().unwrap_or("?")))
                                .or_default() += 1
                        }
                        Err(_) => *g.1.entry("transport error".into()).or_default() += 1,
                    }
                    drop(g);
                    k += 1;
                }
            });
        }

        let _stop = StopOnDrop(&stop);
        // A joiner after compaction needs a snapshot: start it once the leader
        // has taken one, while the writers keep replication saturated.
        wait_for("the leader to take a snapshot under load", LONG, || {
            let n = try_scrape(&c, l).ok()?.get0("raftlog_snapshots_total", &[]);
            (n > snaps_before && t0.elapsed() >= JOIN_AFTER).then_some(())
        });
        eprintln!(
            "leader snapshot after {:.1} s of load; starting {jid}",
            t0.elapsed().as_secs_f64()
        );
        c.restart(j);

        // Observe until the run is long enough and the snapshot has arrived.
        let deadline = t0 + SATURATION_RUN + LONG;
        loop {
            for i in 0..4 {
                if let Some(st) = c.status(i) {
                    let term = st["term"].as_u64().unwrap_or(0);
                    let leads = st["role"] == "leader" && i != l;
                    // A joiner reports term 0 until it first hears the leader;
                    // only a higher term (or another leader) is a change.
                    if (leads || term > term0) && leader_changes.len() < 5 {
                        leader_changes.push(format!(
                            "at {:.1} s {} reports role {} term {term} leader {}",
                            t0.elapsed().as_secs_f64(),
                            c.id(i),
                            st["role"],
                            st["leader_id"]
                        ));
                    }
                }
            }
            partial_seen |= !partials(&c.info(j).data_dir).is_empty();
            if snapshot_received_at.is_none() && snapshots_installed(&c, j) > 0.0 {
                snapshot_received_at = Some(t0.elapsed());
            }
            let long_enough = t0.elapsed() >= SATURATION_RUN;
            if long_enough && snapshot_received_at.is_some() {
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(250));
        }
        stop.store(true, Ordering::SeqCst);
    });
    let run = t0.elapsed();
    let (written, errors) = ok.into_inner().unwrap();
    eprintln!(
        "saturated run: {:.1} s, {written} writes of {} KiB acknowledged ({:.1} MiB/s), \
         errors {errors:?}; {jid} received its snapshot at {:?} (partial file seen: {partial_seen})",
        run.as_secs_f64(),
        BIG / 1024,
        (written as f64 * BIG as f64 / (1 << 20) as f64) / run.as_secs_f64(),
        snapshot_received_at
    );
    for i in 0..4 {
        eprintln!(
            "{}: snapshots: {:?}",
            c.id(i),
            log_lines(&c, i, "snapshot taken", 3)
        );
    }

    assert!(
        snapshot_received_at.is_some(),
        "{jid} joined after compaction and must have received a snapshot during the run"
    );
    assert!(
        written >= 40,
        "the writers must have kept replication busy (only {written} big writes acknowledged)"
    );
    let started_after = elections_started(&c, &voters);
    let joiner_started = elections_started(&c, &[j])[0];
    found.check(
        started_after == started_before && joiner_started == 0.0,
        || {
            let mut ls = Vec::new();
            for i in 0..4 {
                ls.extend(log_lines(&c, i, ELECTION_TIMEOUT_LINE, 3));
            }
            format!(
                "nodes ran out their election timers during the saturated run: \
                 raftlog_elections_started_total of the voters {started_before:?} -> \
                 {started_after:?}, of the joiner {joiner_started}; their lines: {ls:#?}"
            )
        },
    );
    found.check(leader_changes.is_empty(), || {
        format!("the leader {lid} (term {term0}) did not keep its place: {leader_changes:#?}")
    });
    let st = c.status(l);
    found.check(
        st.as_ref()
            .is_some_and(|s| s["role"] == "leader" && s["term"] == term0),
        || format!("{lid} must still lead in term {term0} after the run: {st:?}"),
    );

    // The joiner catches up and is promoted once the load stops.
    wait_voters_caught_up(&c, l, &[0, 1, 2, j], LONG * 2);
    found.assert_none("heartbeats under saturation");
}

/// Raft messages from the leader to one follower are dropped: the leader's
/// `/v1/status` shows that follower `reachable: false` within a few heartbeats,
/// and `true` again once the fault is removed; the same for a follower cut off in
/// both directions, which must then stay unreachable for as long as the cut lasts.
#[test]
fn dropped_messages_to_one_peer_show_it_unreachable_then_reachable() {
    let _machine = shared_machine();
    let c = Cluster::start_with_env(3, &[FAULTS_ON]);
    let found = Findings::default();
    let l = c.wait_leader();
    let (p, q) = (c.others(l)[0], c.others(l)[1]);
    let (lid, pid, qid) = (
        c.id(l).to_string(),
        c.id(p).to_string(),
        c.id(q).to_string(),
    );
    let rch = |c: &Cluster, on: usize| {
        try_scrape(c, on)
            .ok()
            .and_then(|m| m.get("raftlog_peer_reachable", &[("peer", &pid)]))
    };
    wait_for(&format!("{lid} to see {pid} reachable"), LONG, || {
        (reachable(&c, l, &pid)? == json!(true)).then_some(())
    });
    let s = c.status(l).unwrap();
    let m = member(&s, &pid);
    assert!(
        m["last_heartbeat_ms"].is_u64(),
        "a reachable member has a numeric last_heartbeat_ms: {m}"
    );
    assert_eq!(
        rch(&c, l),
        Some(1.0),
        "raftlog_peer_reachable{{peer={pid}}} on {lid}"
    );
    let mut acked = vec![(
        write_until_ok(&c, l, "before-drop", LONG),
        "before-drop".to_string(),
    )];

    // One way: the leader's messages to p are dropped (p still talks to it).
    set_faults(&c, l, json!({ "drop_to": [pid.clone()] }));
    let t0 = Instant::now();
    let seen = wait_for_or(
        &format!("{lid} to report {pid} unreachable"),
        LONG,
        || {
            let s = c.status(l)?;
            (member(&s, &pid)["reachable"] == false).then_some(s)
        },
        || format!("{lid}'s status: {:?}", c.status(l)),
    );
    eprintln!(
        "{lid} reported {pid} unreachable {:.2} s after dropping its messages to it: {}",
        t0.elapsed().as_secs_f64(),
        member(&seen, &pid)
    );
    let m = member(&seen, &pid);
    found.check(m["last_heartbeat_ms"].as_u64().is_some_and(|ms| ms >= 500), || {
        format!("an unreachable member's last_heartbeat_ms must be the age of the last contact (>= 500 ms): {m}")
    });
    found.check(seen["health"]["reasons"].to_string().contains(&pid), || {
        format!(
            "{lid}'s health.reasons must name the unreachable {pid}: {}",
            seen["health"]
        )
    });
    let metric_zero = wait_for_bounded(Duration::from_secs(10), || rch(&c, l) == Some(0.0));
    found.check(metric_zero, || {
        format!("raftlog_peer_reachable{{peer={pid}}} on {lid} never went to 0")
    });
    // Observe: does it stay unreachable while the leader cannot reach it?
    let (mut samples, mut flaps) = (0, 0);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        if let Some(r) = reachable(&c, l, &pid) {
            samples += 1;
            flaps += usize::from(r == json!(true));
        }
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!("one-way drop: {flaps} of {samples} samples over 3 s showed {pid} reachable");
    found.check(flaps == 0, || {
        format!(
            "with every message from {lid} to {pid} dropped, {lid} showed {pid} reachable \
             in {flaps} of {samples} samples over 3 s (messages *from* {pid}, e.g. pre-votes, \
             count as contact; {pid}'s role changes: {:?})",
            log_lines(&c, p, "role change", 3)
        )
    });
    acked.push((
        write_until_ok(&c, q, "during-drop", LONG),
        "during-drop".into(),
    ));

    set_faults(&c, l, json!({}));
    let t1 = Instant::now();
    wait_for(
        &format!("{lid} to report {pid} reachable again"),
        LONG,
        || (reachable(&c, l, &pid)? == json!(true)).then_some(()),
    );
    eprintln!(
        "{lid} reported {pid} reachable {:.2} s after the fault was removed",
        t1.elapsed().as_secs_f64()
    );
    let metric_one = wait_for_bounded(Duration::from_secs(10), || rch(&c, l) == Some(1.0));
    found.check(metric_one, || {
        format!("raftlog_peer_reachable{{peer={pid}}} on {lid} did not return to 1")
    });

    // Both ways: p is cut off from everyone (and everyone from p).
    set_faults(&c, l, json!({ "drop_to": [pid.clone()] }));
    set_faults(&c, q, json!({ "drop_to": [pid.clone()] }));
    set_faults(&c, p, json!({ "drop_to": [lid.clone(), qid.clone()] }));
    wait_for(
        &format!("{lid} to report the isolated {pid} unreachable"),
        LONG,
        || (reachable(&c, l, &pid)? == json!(false)).then_some(()),
    );
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        if let Some(r) = reachable(&c, l, &pid) {
            assert_eq!(
                r,
                json!(false),
                "{pid} sends nothing and receives nothing: {lid} must keep it unreachable"
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    let pv = wait_for_bounded(Duration::from_secs(10), || {
        reachable(&c, p, &lid) == Some(json!(false))
    });
    found.check(pv, || {
        format!(
            "the isolated {pid} must report the leader {lid} unreachable: {:?}",
            c.status(p)
        )
    });
    acked.push((
        write_until_ok(&c, l, "during-isolation", LONG),
        "during-isolation".into(),
    ));
    for i in [l, q, p] {
        set_faults(&c, i, json!({}));
    }
    wait_for(
        &format!("{lid} to report {pid} reachable after the cut"),
        LONG,
        || (reachable(&c, l, &pid)? == json!(true)).then_some(()),
    );
    let l2 = c.wait_leader();
    acked.push((write_until_ok(&c, p, "after", LONG), "after".into()));
    let log = c.wait_converged(&[0, 1, 2], acked.len());
    check_acked(&log, &acked, "after the dropped messages");
    if l2 != l {
        eprintln!(
            "leadership moved from {lid} to {} during the test",
            c.id(l2)
        );
    }
    found.assert_none("dropped messages");
}

/// What one write attempt to the full-disk node got.
#[derive(Clone, Debug)]
enum Outcome {
    Acked(u64),
    /// 507 / 503: nothing appended (SPEC).
    Refused(u16, String),
    /// 504 or a transport error: may or may not be in the log.
    Maybe(String),
}

/// Classifies the answer to a write sent to the full-disk node; answers the SPEC
/// does not allow go to `unexpected`.
fn classify(msg: &str, r: Result<Resp, String>, unexpected: &Mutex<Vec<String>>) -> Outcome {
    match r {
        Ok(r) if r.status == 201 => Outcome::Acked(r.offset()),
        Ok(r) if r.status == 507 || r.status == 503 => {
            if r.status == 507 && r.code() != Some("storage_error") {
                unexpected
                    .lock()
                    .unwrap()
                    .push(format!("507 with {}", r.body));
            }
            if r.json
                .pointer("/error/message")
                .and_then(Value::as_str)
                .is_none()
            {
                unexpected
                    .lock()
                    .unwrap()
                    .push(format!("{} without error.message: {}", r.status, r.body));
            }
            Outcome::Refused(r.status, r.code().unwrap_or("?").to_string())
        }
        Ok(r) if r.status == 504 => Outcome::Maybe(format!("504 {}", r.code().unwrap_or("?"))),
        Ok(r) => {
            unexpected
                .lock()
                .unwrap()
                .push(format!("{msg}: {} {}", r.status, r.body));
            Outcome::Maybe(format!("{} {}", r.status, r.body))
        }
        Err(_) => Outcome::Maybe("transport error".into()),
    }
}

/// A full disk (injected ENOSPC on WAL writes) on the leader: writes to it get
/// 507 `storage_error` while it leads (or are served by a new leader after a
/// hand-over), local reads keep working, and after space returns writes work, every
/// acknowledged message is intact on every node, refused ones are absent, and the
/// node's WAL survives a restart. Then the same for a follower, whose full disk
/// must not stop the cluster's writes.
#[test]
fn full_disk_refuses_writes_keeps_reads_and_recovers_without_loss() {
    let _machine = shared_machine();
    let c = Cluster::start_with_env(3, &[FAULTS_ON]);
    let found = Findings::default();
    let all: Vec<usize> = (0..3).collect();
    let l = c.wait_leader();
    let lid = c.id(l).to_string();
    let mut acked: Vec<(u64, String)> = (0..10)
        .map(|k| {
            let m = format!("pre-{k:02}");
            (write_until_ok(&c, l, &m, LONG), m)
        })
        .collect();
    let elections_before = elections_started(&c, &all);
    let transfers_before = transfer_campaigns(&c, &all);
    let errors_before = scrape(&c, l).get0("raftlog_storage_errors_total", &[]);

    // Probe writers hammer the leader before and during the fault.
    let stop = AtomicBool::new(false);
    let fault_at: Mutex<Option<Instant>> = Mutex::new(None);
    let outcomes: Mutex<Vec<(String, bool, Outcome)>> = Mutex::new(Vec::new());
    let unexpected: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut unhealthy: Option<Value> = None;
    let mut moved_after = None;
    let mut directed = 0;
    thread::scope(|s| {
        for t in 0..3 {
            let (c, stop, fault_at, outcomes, unexpected) =
                (&c, &stop, &fault_at, &outcomes, &unexpected);
            s.spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) {
                    let msg = format!("probe-{t}-{k:04}");
                    let after_fault = fault_at.lock().unwrap().is_some();
                    let r = c.write_with(
                        l,
                        &msg,
                        json!("majority"),
                        "?timeout_ms=3000",
                        None,
                        REQUEST_TIMEOUT,
                    );
                    let o = classify(&msg, r, unexpected);
                    outcomes.lock().unwrap().push((msg, after_fault, o));
                    k += 1;
                    thread::sleep(Duration::from_millis(20));
                }
            });
        }
        let _stop = StopOnDrop(&stop);
        wait_for("probe writes to succeed before the fault", LONG, || {
            let n = outcomes
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, _, o)| matches!(o, Outcome::Acked(_)))
                .count();
            (n >= 6).then_some(())
        });
        set_faults(&c, l, json!({ "fsync_fail": true }));
        let t0 = Instant::now();
        *fault_at.lock().unwrap() = Some(t0);
        // Until leadership leaves the node (the health manager hands it over
        // after its unhealthy window), observe its health.
        let new = wait_for_or(
            &format!("leadership to leave the full-disk leader {lid}"),
            HANDOVER_BOUND,
            || {
                let st = c.status(l);
                let sick = st.as_ref().filter(|s| s["health"]["disk"] == "unhealthy");
                if unhealthy.is_none() {
                    unhealthy = sick.map(|s| s["health"].clone());
                }
                // A write sent the moment the node knows its disk is full, while
                // it still leads, must be refused with 507 storage_error.
                if directed < 3 && sick.is_some_and(|s| s["role"] == "leader") {
                    let msg = format!("direct-{directed}");
                    let r = c.write_with(
                        l,
                        &msg,
                        json!("majority"),
                        "?timeout_ms=3000",
                        None,
                        REQUEST_TIMEOUT,
                    );
                    let o = classify(&msg, r, &unexpected);
                    outcomes.lock().unwrap().push((msg, true, o));
                    directed += 1;
                }
                c.leader().filter(|&n| n != l)
            },
            || format!("{lid}'s status: {:?}", c.status(l)),
        );
        moved_after = Some(t0.elapsed());
        eprintln!(
            "leadership left the full-disk leader {lid} for {} after {:.2} s",
            c.id(new),
            t0.elapsed().as_secs_f64()
        );
        // Writes sent to the faulty node after the hand-over.
        thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::SeqCst);
    });
    let new = c.wait_leader();
    let nid = c.id(new).to_string();
    let outcomes = outcomes.into_inner().unwrap();
    for u in unexpected.into_inner().unwrap() {
        found.add(format!(
            "unexpected answer to a write on the full-disk node: {u}"
        ));
    }
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for (_, after, o) in &outcomes {
        let k = match o {
            Outcome::Acked(_) => "201".to_string(),
            Outcome::Refused(st, code) => format!("{st} {code}"),
            Outcome::Maybe(why) => why.chars().take(60).collect(),
        };
        *tally
            .entry(format!("{} {k}", if *after { "after" } else { "before" }))
            .or_default() += 1;
    }
    eprintln!("writes to {lid} around the fault: {tally:#?}");
    let refused_507 = outcomes
        .iter()
        .filter(|(_, after, o)| *after && matches!(o, Outcome::Refused(507, _)))
        .count();
    found.check(refused_507 > 0, || {
        format!(
            "no write to the full-disk leader {lid} was refused with 507 storage_error \
             ({directed} sent while its status said leader with an unhealthy disk; leadership \
             left it after {moved_after:?}): {tally:?}"
        )
    });

    // Health and metrics of the faulty node.
    match &unhealthy {
        Some(h) => {
            eprintln!("{lid}'s health with a full disk: {h}");
            found.check(h["reasons"].to_string().contains("storage error"), || {
                format!("health.reasons must name the storage error: {h}")
            });
        }
        None => found.add(format!(
            "{lid} never reported health.disk \"unhealthy\" with a full disk"
        )),
    }
    let m = scrape(&c, l);
    let errors_after = m.get0("raftlog_storage_errors_total", &[]);
    found.check(errors_after > errors_before, || {
        format!("raftlog_storage_errors_total on {lid} did not move ({errors_before} -> {errors_after})")
    });
    let http_507 = m.get0(
        "raftlog_http_requests_total",
        &[
            ("route", "/v1/messages"),
            ("method", "POST"),
            ("status", "507"),
        ],
    );
    found.check(http_507 >= refused_507 as f64, || {
        format!("raftlog_http_requests_total{{status=\"507\"}} on {lid} is {http_507}, {refused_507} were seen")
    });
    // How leadership left: a hand-over (transfer), not followers' election timers
    // running out because the full-disk leader went silent.
    let elections_after = elections_started(&c, &all);
    let transfers_after = transfer_campaigns(&c, &all);
    found.check(
        transfers_after[new] > transfers_before[new] && elections_after == elections_before,
        || {
            format!(
                "leadership left the full-disk leader {lid} by an election, not a hand-over: \
                 raftlog_elections_started_total per node {elections_before:?} -> {elections_after:?}, \
                 raftlog_transfer_campaigns_total {transfers_before:?} -> {transfers_after:?}; \
                 {nid}'s role changes: {:#?}; {lid}'s log: {:#?}",
                log_lines(&c, new, "role change", 4),
                log_lines(&c, l, "disk", 4)
            )
        },
    );

    // Reads while the disk is still full: local reads on the faulty node serve
    // what it has; linearizable reads through a healthy node see every ack.
    let acked_so_far: Vec<(u64, String)> = acked
        .iter()
        .cloned()
        .chain(outcomes.iter().filter_map(|(m, _, o)| match o {
            Outcome::Acked(off) => Some((*off, m.clone())),
            _ => None,
        }))
        .collect();
    let local = c
        .try_log(l, "local")
        .unwrap_or_else(|e| panic!("local read on the full-disk node {lid}: {e}"));
    check_acked(&local, &acked, "local read on the full-disk node");
    let lin = c
        .try_log(new, "linearizable")
        .unwrap_or_else(|e| panic!("linearizable read on {nid}: {e}"));
    check_acked(
        &lin,
        &acked_so_far,
        "linearizable read on a healthy node during the fault",
    );
    let lin_faulty = c.try_get_timeout(l, "/v1/messages?limit=1", REQUEST_TIMEOUT);
    eprintln!(
        "linearizable read on the full-disk node {lid}: {:?}",
        lin_faulty.map(|r| (r.status, r.body.chars().take(120).collect::<String>()))
    );

    // Space returns: the node recovers by itself.
    set_faults(&c, l, json!({}));
    let t1 = Instant::now();
    wait_for_or(
        &format!("{lid} to report disk ok once space returned"),
        LONG,
        || c.status(l).filter(|s| s["health"]["disk"] == "ok"),
        || format!("{lid}'s status: {:?}", c.status(l)),
    );
    for k in 0..10 {
        let m = format!("post-{k:02}");
        acked.push((write_until_ok(&c, l, &m, LONG), m));
    }
    eprintln!(
        "{lid} took writes again {:.2} s after space returned",
        t1.elapsed().as_secs_f64()
    );
    acked.extend(
        acked_so_far
            .iter()
            .filter(|(_, m)| m.starts_with("probe"))
            .cloned(),
    );
    let log = c.wait_converged(&all, acked.len());
    check_acked(&log, &acked, "after space returned");
    for (msg, _, o) in &outcomes {
        let n = count(&log, msg);
        match o {
            Outcome::Refused(st, code) => {
                assert_eq!(n, 0, "{msg:?} was refused ({st} {code}) but is in the log")
            }
            Outcome::Maybe(_) => assert!(n <= 1, "{msg:?} appears {n} times"),
            Outcome::Acked(_) => assert_eq!(n, 1, "{msg:?}"),
        }
    }
    // The WAL that saw failed writes and their retries reopens intact.
    c.kill(l);
    c.restart(l);
    let log2 = c.wait_converged(&all, log.len());
    check_acked(
        &log2,
        &acked,
        "after restarting the node that had a full disk",
    );

    // A follower's full disk: the cluster keeps taking writes (through the
    // follower too), the follower keeps serving local reads, then catches up.
    let leader = c.wait_leader();
    let f = c.others(leader)[0];
    let fid = c.id(f).to_string();
    set_faults(&c, f, json!({ "fsync_fail": true }));
    for k in 0..10 {
        let m = format!("ffull-{k:02}");
        let via = if k % 2 == 0 { leader } else { f };
        acked.push((write_until_ok(&c, via, &m, LONG), m));
    }
    let r = c.read(f, 0, "local");
    assert_eq!(
        r.status, 200,
        "local read on the full-disk follower {fid}: {}",
        r.body
    );
    let fh = wait_for_bounded(Duration::from_secs(10), || {
        c.status(f)
            .is_some_and(|s| s["health"]["disk"] == "unhealthy")
    });
    found.check(fh, || {
        format!(
            "the full-disk follower {fid} must report health.disk unhealthy: {:?}",
            c.status(f)
        )
    });
    set_faults(&c, f, json!({}));
    let log = c.wait_converged(&all, acked.len());
    check_acked(&log, &acked, "after the follower's disk had space again");
    found.assert_none("full disk");
}

/// `/metrics` on every node of a 3-node cluster parses as OpenMetrics text and
/// has the issue's metric families; the counters move with writes (fsync
/// histogram, WAL, HTTP requests by route and status, write-concern timeouts) and
/// with a leader kill (elections started and won, leader changes, term, role,
/// peer reachability). Prints a `/v1/status` and a `/metrics` excerpt.
#[test]
fn metrics_parse_and_counters_move_with_writes_and_a_leader_kill() {
    let _machine = shared_machine();
    let c = Cluster::start(3);
    let found = Findings::default();
    let all: Vec<usize> = (0..3).collect();
    let l = c.wait_leader();
    let lid = c.id(l).to_string();
    let f = c.others(l)[0];

    let resp = c
        .client()
        .get(c.url(l, "/metrics"))
        .send()
        .expect("GET /metrics");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        ct.starts_with("application/openmetrics-text") || ct.starts_with("text/plain"),
        "/metrics content type: {ct:?}"
    );

    let required: &[(&str, &str)] = &[
        ("raftlog_role", "gauge"),
        ("raftlog_term", "gauge"),
        ("raftlog_leader_changes", "counter"),
        ("raftlog_elections_started", "counter"),
        ("raftlog_elections_won", "counter"),
        ("raftlog_commit_index", "gauge"),
        ("raftlog_applied_index", "gauge"),
        ("raftlog_last_log_index", "gauge"),
        ("raftlog_peer_match_index", "gauge"),
        ("raftlog_peer_lag_entries", "gauge"),
        ("raftlog_peer_reachable", "gauge"),
        ("raftlog_peer_heartbeat_rtt_seconds", "gauge"),
        ("raftlog_wal_fsync_seconds", "histogram"),
        ("raftlog_wal_bytes", "counter"),
        ("raftlog_wal_entries", "counter"),
        ("raftlog_snapshots", "counter"),
        ("raftlog_snapshot_seconds", "histogram"),
        ("raftlog_http_requests", "counter"),
        ("raftlog_http_request_seconds", "histogram"),
        ("raftlog_write_concern_waits", "counter"),
        ("raftlog_write_concern_timeouts", "counter"),
        ("raftlog_storage_errors", "counter"),
    ];
    for &i in &all {
        let m = scrape(&c, i);
        for (name, kind) in required {
            let fam = m
                .family(name)
                .unwrap_or_else(|| panic!("{} /metrics lacks the family {name}", c.id(i)));
            assert_eq!(&fam.kind, kind, "type of {name} on {}", c.id(i));
            assert!(
                fam.help.as_ref().is_some_and(|h| !h.is_empty()),
                "{name} needs a # HELP"
            );
        }
        // The role gauge: exactly one role at 1 (a just-promoted voter may
        // still call itself a learner for a moment).
        let role = if i == l { "leader" } else { "follower" };
        let ones = |m: &om::Exposition| -> Vec<String> {
            m.family("raftlog_role")
                .unwrap()
                .samples
                .iter()
                .filter(|s| s.value == 1.0)
                .filter_map(|s| s.labels.get("role").cloned())
                .collect()
        };
        wait_for_or(
            &format!("raftlog_role on {} to be {role}", c.id(i)),
            LONG,
            || (ones(&scrape(&c, i)) == vec![role.to_string()]).then_some(()),
            || format!("roles at 1: {:?}", ones(&scrape(&c, i))),
        );
        let st = c.status(i).unwrap();
        let term = m.get("raftlog_term", &[]).unwrap();
        assert_eq!(
            Some(term as u64),
            st["term"].as_u64(),
            "raftlog_term on {}",
            c.id(i)
        );
    }
    let m = scrape(&c, l);
    found.check(
        m.families.iter().any(|f| f.name.contains("segment")),
        || "the issue asks for WAL segments in /metrics; there is no *segment* family".into(),
    );
    for &p in &c.others(l) {
        let pid = c.id(p);
        for fam in [
            "raftlog_peer_match_index",
            "raftlog_peer_lag_entries",
            "raftlog_peer_reachable",
            "raftlog_peer_heartbeat_rtt_seconds",
        ] {
            assert!(
                m.get(fam, &[("peer", pid)]).is_some(),
                "{lid} must report {fam}{{peer=\"{pid}\"}}"
            );
        }
        assert_eq!(m.get("raftlog_peer_reachable", &[("peer", pid)]), Some(1.0));
    }

    // Writes move the WAL, fsync, index and HTTP figures.
    let post201 = [
        ("route", "/v1/messages"),
        ("method", "POST"),
        ("status", "201"),
    ];
    let before_l = scrape(&c, l);
    let before_f = scrape(&c, f);
    let mut acked = Vec::new();
    for k in 0..20 {
        let msg = format!("m-{k:02}");
        let r = c.write(l, &msg, json!("majority"));
        assert_eq!(r.status, 201, "{}", r.body);
        acked.push((r.offset(), msg));
    }
    for k in 0..10 {
        let msg = format!("f-{k:02}");
        let r = c.write(f, &msg, json!("majority"));
        assert_eq!(r.status, 201, "{}", r.body);
        acked.push((r.offset(), msg));
    }
    c.wait_converged(&all, acked.len());
    // Gauges are refreshed on the controller's tick: wait until they caught up.
    let settled = |i: usize, before: &om::Exposition| {
        wait_for_or(
            &format!("the index gauges of {} to move by 30", c.id(i)),
            LONG,
            || {
                let m = scrape(&c, i);
                [
                    "raftlog_commit_index",
                    "raftlog_applied_index",
                    "raftlog_last_log_index",
                ]
                .iter()
                .all(|g| m.get0(g, &[]) >= before.get0(g, &[]) + 30.0)
                .then_some(m)
            },
            String::new,
        )
    };
    let after_l = settled(l, &before_l);
    let after_f = settled(f, &before_f);
    let d = |a: &om::Exposition, b: &om::Exposition, s: &str, labels: &[(&str, &str)]| {
        a.get0(s, labels) - b.get0(s, labels)
    };
    for (who, a, b) in [(l, &after_l, &before_l), (f, &after_f, &before_f)] {
        let id = c.id(who);
        let fsyncs = d(a, b, "raftlog_wal_fsync_seconds_count", &[]);
        assert!(
            fsyncs >= 1.0,
            "fsync histogram count on {id} must grow ({fsyncs})"
        );
        let sum = d(a, b, "raftlog_wal_fsync_seconds_sum", &[]);
        assert!(sum > 0.0, "fsync histogram sum on {id} must grow ({sum})");
        let entries = d(a, b, "raftlog_wal_entries_total", &[]);
        assert!(
            entries >= 30.0,
            "raftlog_wal_entries_total on {id} grew by {entries}"
        );
        let bytes = d(a, b, "raftlog_wal_bytes_total", &[]);
        assert!(
            bytes >= 30.0 * 4.0,
            "raftlog_wal_bytes_total on {id} grew by {bytes}"
        );
    }
    assert_eq!(
        d(&after_l, &before_l, "raftlog_http_requests_total", &post201),
        20.0,
        "POST /v1/messages 201 on the leader {lid}"
    );
    assert_eq!(
        d(&after_f, &before_f, "raftlog_http_requests_total", &post201),
        10.0,
        "POST /v1/messages 201 on the follower {}",
        c.id(f)
    );
    let lat = d(
        &after_l,
        &before_l,
        "raftlog_http_request_seconds_count",
        &[("route", "/v1/messages")],
    );
    assert!(
        lat >= 20.0,
        "raftlog_http_request_seconds_count{{route=\"/v1/messages\"}} grew by {lat}"
    );
    let commit = after_l.get0("raftlog_commit_index", &[]);
    for &p in &c.others(l) {
        let pid = c.id(p);
        let mi = wait_for_or(
            &format!("{lid}'s raftlog_peer_match_index{{peer={pid}}} to reach {commit}"),
            LONG,
            || {
                let v = scrape(&c, l).get("raftlog_peer_match_index", &[("peer", pid)])?;
                (v >= commit).then_some(v)
            },
            String::new,
        );
        assert!(mi >= commit);
    }

    // A write that cannot reach its w in time: 504, counted.
    let timeouts_before = scrape(&c, l).get0("raftlog_write_concern_timeouts_total", &[]);
    c.stop(f);
    let r = c.write_with(
        l,
        "w-all",
        json!("all"),
        "?timeout_ms=300",
        None,
        REQUEST_TIMEOUT,
    );
    let r = r.expect("w=all write");
    assert_eq!(r.status, 504, "w=all with a stopped follower: {}", r.body);
    c.cont(f);
    let timeouts_after = scrape(&c, l).get0("raftlog_write_concern_timeouts_total", &[]);
    found.check(timeouts_after > timeouts_before, || {
        format!(
            "a 504 write_timeout must count in raftlog_write_concern_timeouts_total \
             ({timeouts_before} -> {timeouts_after})"
        )
    });
    let waits = scrape(&c, l).get0("raftlog_write_concern_waits_total", &[]);
    found.check(
        waits > before_l.get0("raftlog_write_concern_waits_total", &[]),
        || {
            format!(
                "30 w=majority writes and a w=all write that timed out did not move \
             raftlog_write_concern_waits_total on the leader ({waits})"
            )
        },
    );
    let t504 = scrape(&c, l).get0(
        "raftlog_http_requests_total",
        &[
            ("route", "/v1/messages"),
            ("method", "POST"),
            ("status", "504"),
        ],
    );
    assert!(t504 >= 1.0, "POST /v1/messages 504 must be counted");

    // Kill the leader: elections and leader changes move on the survivors.
    let survivors = c.others(l);
    let before: Vec<om::Exposition> = survivors.iter().map(|&i| scrape(&c, i)).collect();
    let term0 = before_l.get0("raftlog_term", &[]);
    c.kill(l);
    let nl = c.wait_leader_among(&survivors);
    let nid = c.id(nl).to_string();
    // Gauges (term, role) follow on the next tick, and a follower counts the
    // leader change only once it hears from the new leader (its term moves
    // earlier, when it votes): wait for all of them.
    let leader_changes = |ms: &[om::Exposition]| -> Vec<f64> {
        ms.iter()
            .map(|m| m.get0("raftlog_leader_changes_total", &[]))
            .collect()
    };
    let changes_before = leader_changes(&before);
    let seen_changes = std::cell::RefCell::new(changes_before.clone());
    let after: Vec<om::Exposition> = wait_for_or(
        "the survivors' term, role and leader-change metrics to show the new leader",
        LONG,
        || {
            let ms: Vec<om::Exposition> = survivors.iter().map(|&i| scrape(&c, i)).collect();
            let k = survivors.iter().position(|&i| i == nl).unwrap();
            *seen_changes.borrow_mut() = leader_changes(&ms);
            (ms.iter().all(|m| m.get0("raftlog_term", &[]) > term0)
                && ms[k].get("raftlog_role", &[("role", "leader")]) == Some(1.0)
                && seen_changes
                    .borrow()
                    .iter()
                    .zip(&changes_before)
                    .all(|(a, b)| a > b))
            .then_some(ms)
        },
        || {
            format!(
                "terms before: {term0}; raftlog_leader_changes_total {changes_before:?} -> {:?}",
                seen_changes.borrow()
            )
        },
    );
    let sum = |ms: &[om::Exposition], s: &str| ms.iter().map(|m| m.get0(s, &[])).sum::<f64>();
    assert!(
        sum(&after, "raftlog_elections_started_total")
            > sum(&before, "raftlog_elections_started_total"),
        "raftlog_elections_started_total over the survivors must grow after the leader kill"
    );
    for (k, &i) in survivors.iter().enumerate() {
        let lc = d(&after[k], &before[k], "raftlog_leader_changes_total", &[]);
        assert!(
            lc >= 1.0,
            "raftlog_leader_changes_total on {} grew by {lc}",
            c.id(i)
        );
        let t = after[k].get0("raftlog_term", &[]);
        assert!(
            t > term0,
            "raftlog_term on {} must pass {term0}: {t}",
            c.id(i)
        );
    }
    let k = survivors.iter().position(|&i| i == nl).unwrap();
    let won = d(&after[k], &before[k], "raftlog_elections_won_total", &[]);
    assert!(
        won >= 1.0,
        "raftlog_elections_won_total on the new leader {nid} grew by {won}"
    );
    assert_eq!(
        after[k].get("raftlog_role", &[("role", "leader")]),
        Some(1.0)
    );
    wait_for(
        &format!("{nid} to report the killed {lid} unreachable in metrics"),
        LONG,
        || {
            let v = scrape(&c, nl).get("raftlog_peer_reachable", &[("peer", &lid)])?;
            (v == 0.0).then_some(())
        },
    );
    let st = c.status(nl).unwrap();
    assert_eq!(member(&st, &lid)["reachable"], json!(false), "{st}");

    // Back to three nodes, then the excerpts for the issue note.
    c.restart(l);
    c.wait_all_voters();
    wait_for(
        &format!("{nid} to report {lid} reachable again"),
        LONG,
        || {
            let v = scrape(&c, nl).get("raftlog_peer_reachable", &[("peer", &lid)])?;
            (v == 1.0).then_some(())
        },
    );
    let nl = c.wait_leader();
    // The restarted node catches up without new writes, as the leader sees it.
    let commit = scrape(&c, nl).get0("raftlog_commit_index", &[]);
    let caught_up = wait_for_bounded(Duration::from_secs(10), || {
        scrape(&c, nl)
            .get("raftlog_peer_match_index", &[("peer", &lid)])
            .is_some_and(|v| v >= commit)
    });
    found.check(caught_up, || {
        format!(
            "10 s after its restart, the leader {} still reports raftlog_peer_match_index{{peer=\"{lid}\"}} = {:?} \
             (commit index {commit}); {lid}'s status: {:?}",
            c.id(nl),
            scrape(&c, nl).get("raftlog_peer_match_index", &[("peer", &lid)]),
            c.status(l).map(|s| (s["commit_index"].clone(), s["last_log_index"].clone()))
        )
    });
    for k in 0..5 {
        let msg = format!("excerpt-{k}");
        assert_eq!(c.write(nl, &msg, json!("majority")).status, 201);
    }
    let st = c.status(nl).unwrap();
    eprintln!(
        "===== /v1/status of the leader {} of a 3-node cluster =====\n{}",
        c.id(nl),
        serde_json::to_string_pretty(&st).unwrap()
    );
    let text = c.get(nl, "/metrics").body;
    let mut shown_buckets = 0;
    let excerpt: Vec<&str> = text
        .lines()
        .filter(|line| {
            if line.starts_with("raftlog_http_request_seconds_bucket")
                || line.starts_with("raftlog_snapshot_seconds_bucket")
            {
                return false;
            }
            if line.starts_with("raftlog_wal_fsync_seconds_bucket") {
                shown_buckets += 1;
                return (7..=12).contains(&shown_buckets) || line.contains("+Inf");
            }
            true
        })
        .collect();
    eprintln!(
        "===== /metrics of the leader {} (latency buckets trimmed) =====\n{}",
        c.id(nl),
        excerpt.join("\n")
    );
    found.assert_none("metrics");
}

/// The fault endpoint does not exist without `[debug] fault_injection`; with it,
/// GET reads and POST validates and sets the fault set. `--log-format json`
/// makes every log line a JSON object; the default is human text.
#[test]
fn fault_endpoint_only_with_the_switch_and_json_logs_on_request() {
    let _machine = shared_machine();
    let mut c = Cluster::empty(&[]);
    let plain = c.add_node_info(None);
    let drill = c.add_node_info(None);
    c.set_extra_args(plain, &["--log-format", "json"]);
    c.set_extra_env(drill, &[FAULTS_ON]);
    c.restart(plain);
    c.restart(drill);
    wait_for(
        "both single-node clusters to elect themselves",
        LONG,
        || {
            (c.status(plain)?["role"] == "leader" && c.status(drill)?["role"] == "leader")
                .then_some(())
        },
    );

    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let body =
            (method == reqwest::Method::POST).then(|| json!({"fsync_fail": true}).to_string());
        let r = c
            .try_request(
                plain,
                method.clone(),
                "/v1/debug/faults",
                body,
                &[],
                REQUEST_TIMEOUT,
            )
            .unwrap();
        assert_eq!(
            r.status, 404,
            "{method} /v1/debug/faults must not exist without the switch: {}",
            r.body
        );
    }
    let r = c.write(plain, "still-writable", json!(1));
    assert_eq!(r.status, 201, "{}", r.body);

    let r = c.get(drill, "/v1/debug/faults");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json["fsync_fail"], false, "{}", r.body);
    assert_eq!(r.json["fsync_delay_ms"], 0, "{}", r.body);
    for bad in ["{", "{\"fsync_fail\": 3}", "{\"no_such_fault\": true}"] {
        let r = c.post_raw(drill, "/v1/debug/faults", bad, &[]);
        r.assert_error(
            400,
            "invalid_request",
            &format!("POST /v1/debug/faults {bad}"),
        );
    }
    set_faults(
        &c,
        drill,
        json!({ "fsync_delay_ms": 5, "delay_to_ms": { "n9": 10 } }),
    );
    set_faults(&c, drill, json!({}));
    let r = c.get(drill, "/v1/debug/faults");
    assert_eq!(
        r.json["fsync_delay_ms"], 0,
        "{{}} clears every fault: {}",
        r.body
    );

    // Log formats.
    let json_log = log_text(&c.info(plain).log_path);
    let lines: Vec<&str> = json_log
        .lines()
        .filter(|l| !l.starts_with("===== harness"))
        .collect();
    assert!(lines.len() >= 3, "{json_log}");
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("--log-format json: a line is not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "a JSON log line has level and timestamp: {line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("role change")),
        "the JSON log has the role change: {json_log}"
    );
    let human = log_text(&c.info(drill).log_path);
    assert!(
        human
            .lines()
            .filter(|l| !l.starts_with("===== harness"))
            .all(|l| serde_json::from_str::<Value>(l).is_err()),
        "the default log format is human text: {human}"
    );
    assert!(human.contains("fault injection is enabled"), "{human}");
}

/// Injected latency of every read of old messages in the stall test: two
/// election timeouts of the test clusters (500..1000 ms).
const STORE_STALL_MS: u64 = 2000;

/// Readers of old messages on the leader in the stall test: more than the
/// node's blocking-read slots (4), so some reads wait for a slot.
const LEADER_READERS: usize = 6;

/// Reads of messages that left the cache stall for [`STORE_STALL_MS`] on every
/// node (fault switch): while clients keep reading old messages through the
/// stall, no node starts an election or sees a new leader, the term stays and
/// writes go on. (These reads used to run on the controller task: a stalled read
/// held heartbeats for as long.)
#[test]
fn stalled_message_store_reads_do_not_delay_heartbeats() {
    let _machine = shared_machine();
    // The smallest cache (1 MiB is always kept): the first messages are on disk only.
    // The disk-health hand-over (its own tests) out of reach: the shared disk's
    // fsyncs may pass 500 ms here without any fault.
    let c = Cluster::start_with_env(
        3,
        &[
            FAULTS_ON,
            ("RAFTLOG_READ__CACHE_BYTES", "0"),
            ("RAFTLOG_HEALTH__FSYNC_P99_MAX_MS", "600000"),
        ],
    );
    let found = Findings::default();
    let all: Vec<usize> = (0..3).collect();
    let l = c.wait_leader();
    let lid = c.id(l).to_string();
    let filler = "x".repeat(64 * 1024);
    let old: Vec<String> = (0..48).map(|k| format!("old-{k:02}-{filler}")).collect();
    for m in &old {
        let r = c.write(l, m, json!("all"));
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let term0 = c.status(l).unwrap()["term"].as_u64().unwrap();
    let elections_before = elections_started(&c, &all);
    let changes_before = counter_of(&c, &all, "raftlog_leader_changes_total");
    for &i in &all {
        set_faults(&c, i, json!({ "msgstore_read_delay_ms": STORE_STALL_MS }));
    }

    // Readers of offset 0 (on disk only): six on the leader, one per follower.
    let stop = AtomicBool::new(false);
    let reads = Mutex::new(Vec::<(usize, Duration, Result<String, String>)>::new());
    let mut writes = 0;
    let mut lost_lead: Vec<String> = Vec::new();
    thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let readers = (0..LEADER_READERS)
            .map(|_| l)
            .chain(all.iter().copied().filter(|&i| i != l));
        for node in readers {
            let (c, stop, reads) = (&c, &stop, &reads);
            s.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let t = Instant::now();
                    let path = "/v1/messages?from=0&limit=2&consistency=local";
                    let got = c
                        .try_get_timeout(node, path, LONG)
                        .and_then(|r| match r.status {
                            200 => Ok(r.json["messages"][0]["message"]
                                .as_str()
                                .unwrap_or_default()
                                .chars()
                                .take(6)
                                .collect()),
                            _ => Err(format!("{} {}", r.status, r.body)),
                        });
                    reads.lock().unwrap().push((node, t.elapsed(), got));
                }
            });
        }
        // Writes and the leader's status meanwhile, over three stalls.
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(3 * STORE_STALL_MS) {
            let msg = format!("during-{writes}");
            let r = c.write_with(l, &msg, json!("majority"), "", None, REQUEST_TIMEOUT);
            found.check(r.as_ref().is_ok_and(|r| r.status == 201), || {
                format!("a write during the stall: {r:?}")
            });
            writes += 1;
            match c.status(l) {
                Some(st) if st["role"] == "leader" && st["term"] == term0 => {}
                other => lost_lead.push(format!("{other:?}")),
            }
            thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::SeqCst);
    });
    for &i in &all {
        set_faults(&c, i, json!({}));
    }

    let reads = reads.into_inner().unwrap();
    eprintln!(
        "{} reads of old messages through a {STORE_STALL_MS} ms stall, {writes} writes meanwhile",
        reads.len()
    );
    for &i in &all {
        let mine: Vec<_> = reads.iter().filter(|(n, _, _)| *n == i).collect();
        // The fault was in effect: a read of old messages waited out the stall.
        found.check(
            mine.iter()
                .any(|(_, took, _)| *took >= Duration::from_millis(STORE_STALL_MS)),
            || format!("no read on {} waited out the stall: {mine:?}", c.id(i)),
        );
        for (_, _, got) in &mine {
            found.check(got.as_deref() == Ok("old-00"), || {
                format!("a read of offset 0 on {} answered {got:?}", c.id(i))
            });
        }
    }
    found.check(lost_lead.is_empty(), || {
        format!("{lid} did not keep leading in term {term0}: {lost_lead:#?}")
    });
    let elections_after = elections_started(&c, &all);
    found.check(elections_after == elections_before, || {
        format!(
            "stalled message-store reads made nodes run out their election timers: \
             raftlog_elections_started_total {elections_before:?} -> {elections_after:?}"
        )
    });
    let changes_after = counter_of(&c, &all, "raftlog_leader_changes_total");
    found.check(changes_after == changes_before, || {
        format!("raftlog_leader_changes_total {changes_before:?} -> {changes_after:?}")
    });
    found.assert_none("stalled_message_store_reads_do_not_delay_heartbeats");
}

/// Messages per write in the write-stall test, and the message store's segment
/// size there: a segment seals every few writes, so seals (`.idx`, new file,
/// directory fsyncs) happen during the stall too.
const STALL_FILLER: usize = 1024;
const STALL_SEGMENT_BYTES: &str = "16384";

/// Disk writes of the leader's message store stall (fault switch: its writer
/// thread sleeps [`STORE_STALL_MS`], two election timeouts, before every batch)
/// while a client keeps writing through two stalls. Appends and segment seals
/// wait on that thread, not on the controller: the leader acknowledges writes
/// while its message files do not grow, no node starts an election or sees a
/// new leader, the leader keeps its role and term (status), and afterwards
/// every node holds every acknowledged write at its offset. (These writes used
/// to run on the controller task: a stalled disk held the leader's heartbeats
/// for as long, and its followers, whose disks are fine, ran out their election
/// timers.)
#[test]
fn stalled_message_store_writes_do_not_delay_heartbeats() {
    let _machine = shared_machine();
    let c = Cluster::start_with_env(
        3,
        &[
            FAULTS_ON,
            ("RAFTLOG_WAL__SEGMENT_BYTES", STALL_SEGMENT_BYTES),
        ],
    );
    let found = Findings::default();
    let all: Vec<usize> = (0..3).collect();
    let l = c.wait_leader();
    let lid = c.id(l).to_string();
    let filler = "w".repeat(STALL_FILLER);
    let mut acked: Vec<(u64, String)> = Vec::new();
    for k in 0..20 {
        let m = format!("before-{k:02}-{filler}");
        let r = c.write(l, &m, json!("all"));
        assert_eq!(r.status, 201, "{}", r.body);
        acked.push((r.offset(), m));
    }
    let log_bytes = |i: usize| c.status(i).and_then(|s| s["log_bytes"].as_u64());
    let term0 = c.status(l).unwrap()["term"].as_u64().unwrap();
    let elections_before = elections_started(&c, &all);
    let changes_before = counter_of(&c, &all, "raftlog_leader_changes_total");
    set_faults(&c, l, json!({ "msgstore_write_delay_ms": STORE_STALL_MS }));
    // The writer is idle until the first write: its files hold this until then.
    let stalled_bytes = log_bytes(l).expect("the leader's status");

    let mut lost_lead: Vec<String> = Vec::new();
    let mut acked_while_stalled = 0;
    let backlog = |i: usize| scrape(&c, i).get0("raftlog_message_store_backlog_bytes", &[]);
    let mut max_backlog = 0.0_f64;
    let t0 = Instant::now();
    let mut k = 0;
    while t0.elapsed() < Duration::from_millis(2 * STORE_STALL_MS) {
        let m = format!("during-{k:03}-{filler}");
        k += 1;
        let r = c.write_with(l, &m, json!("majority"), "", None, REQUEST_TIMEOUT);
        match &r {
            Ok(r) if r.status == 201 => acked.push((r.offset(), m)),
            _ => found.check(false, || format!("a write during the stall: {r:?}")),
        }
        if log_bytes(l) == Some(stalled_bytes) {
            acked_while_stalled += 1;
        }
        max_backlog = max_backlog.max(backlog(l));
        match c.status(l) {
            Some(st) if st["role"] == "leader" && st["term"] == term0 => {}
            other => lost_lead.push(format!("{other:?}")),
        }
        thread::sleep(Duration::from_millis(100));
    }
    set_faults(&c, l, json!({}));
    eprintln!(
        "{k} writes through a {STORE_STALL_MS} ms message-store write stall, \
         {acked_while_stalled} acknowledged while the leader's files did not grow"
    );
    // The fault was in effect: writes were acknowledged while nothing reached
    // the leader's message files.
    found.check(acked_while_stalled >= 3, || {
        format!("only {acked_while_stalled} writes were acknowledged while the files stood still")
    });
    found.check(lost_lead.is_empty(), || {
        format!("{lid} did not keep leading in term {term0}: {lost_lead:#?}")
    });
    // The metric shows what the leader holds for its writer, then nothing.
    found.check(max_backlog >= STALL_FILLER as f64, || {
        format!(
            "raftlog_message_store_backlog_bytes on {lid} peaked at {max_backlog} during the stall"
        )
    });
    let drained = wait_for_bounded(LONG, || backlog(l) == 0.0);
    found.check(drained, || {
        format!(
            "raftlog_message_store_backlog_bytes on {lid} is {} after the stall",
            backlog(l)
        )
    });
    let elections_after = elections_started(&c, &all);
    found.check(elections_after == elections_before, || {
        format!(
            "stalled message-store writes made nodes run out their election timers: \
             raftlog_elections_started_total {elections_before:?} -> {elections_after:?}"
        )
    });
    let changes_after = counter_of(&c, &all, "raftlog_leader_changes_total");
    found.check(changes_after == changes_before, || {
        format!("raftlog_leader_changes_total {changes_before:?} -> {changes_after:?}")
    });
    let log = c.wait_converged(&all, acked.len());
    check_acked(&log, &acked, "after the message-store write stall");
    found.assert_none("stalled_message_store_writes_do_not_delay_heartbeats");
}
