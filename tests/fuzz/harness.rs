use super::*;
use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEFAULT_SECONDS: f64 = 8.0;

/// Counts what the cases ran into (outcome kinds, decoder error kinds), so a run
/// shows which paths it reached.
#[derive(Default)]
pub struct Stats(BTreeMap<String, u64>);

impl Stats {
    pub fn note(&mut self, what: impl Into<String>) {
        *self.0.entry(what.into()).or_default() += 1;
    }

    /// Notes an error message by its kind (numbers dropped, cut short).
    pub fn note_error(&mut self, prefix: &str, error: impl std::fmt::Display) {
        self.note(format!("{prefix}: {}", shape(&error.to_string())));
    }
}

/// An error message's first words without numbers, quoted values or odd
/// characters: one key per error kind.
fn shape(s: &str) -> String {
    let mut quoted = false;
    let kept: String = s
        .chars()
        .filter(|&c| {
            quoted ^= c == '"';
            !quoted && c != '"' && (c == ' ' || c.is_ascii_graphic() && !c.is_ascii_digit())
        })
        .collect();
    kept.split_whitespace()
        .take(5)
        .collect::<Vec<_>>()
        .join(" ")
}

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} does not parse")),
    )
}

fn clock_seed() -> u64 {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    t.as_nanos() as u64 ^ u64::from(std::process::id())
}

/// A well-mixed case seed from the run seed and the case number.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    match (p.downcast_ref::<&str>(), p.downcast_ref::<String>()) {
        (Some(s), _) => format!("panicked: {s}"),
        (_, Some(s)) => format!("panicked: {s}"),
        _ => "panicked".into(),
    }
}

/// Runs `case` with fresh case seeds until the budget is spent (or once, for
/// `FUZZ_CASE`). A case returns `Err` (or panics) when a property fails; the
/// test then fails naming the case seed that reproduces it.
pub fn fuzz(name: &str, mut case: impl FnMut(&mut SmallRng, &mut Stats) -> Result<(), String>) {
    let seconds = env("FUZZ_SECONDS").unwrap_or(DEFAULT_SECONDS);
    let seed = env("FUZZ_SEED").unwrap_or_else(clock_seed);
    let only: Option<u64> = env("FUZZ_CASE");
    eprintln!("fuzz {name}: FUZZ_SEED={seed} FUZZ_SECONDS={seconds}");
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut stats = Stats::default();
    let mut cases = 0u64;
    loop {
        let case_seed = only.unwrap_or_else(|| splitmix(seed.wrapping_add(cases)));
        let mut rng = SmallRng::seed_from_u64(case_seed);
        let failure = match panic::catch_unwind(AssertUnwindSafe(|| case(&mut rng, &mut stats))) {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(p) => Some(panic_text(p)),
        };
        if let Some(e) = failure {
            panic!(
                "fuzz {name}: case {cases} failed: {e}\n  replay: FUZZ_CASE={case_seed} \
                 cargo test --test fuzz {name} -- --nocapture   (run FUZZ_SEED={seed})"
            );
        }
        cases += 1;
        if only.is_some() || start.elapsed() >= budget {
            break;
        }
    }
    report(name, cases, start.elapsed(), &stats);
}

fn report(name: &str, cases: u64, took: Duration, stats: &Stats) {
    let rate = cases as f64 / took.as_secs_f64().max(1e-9);
    eprintln!("fuzz {name}: {cases} cases in {took:.1?} ({rate:.0}/s); outcomes:");
    for (what, n) in &stats.0 {
        eprintln!("  {n:>9}  {what}");
    }
}

/// The first bytes of an input in hex, for failure messages.
pub fn hex(b: &[u8]) -> String {
    let shown: String = b.iter().take(256).map(|x| format!("{x:02x}")).collect();
    let more = if b.len() > 256 { "..." } else { "" };
    format!("{} bytes: {shown}{more}", b.len())
}
