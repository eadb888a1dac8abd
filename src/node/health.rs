//! The health manager: is this node fit to lead?
//!
//! It measures fsync latency (a rolling window of recent syncs, p50/p99), free
//! space in the data directory's filesystem, storage failures and apply lag. The
//! disk is *unhealthy* when the fsync p99 is over the configured maximum, free
//! space is under the floor, or the last write failed; *failing* in the last
//! case, *degraded* in the others (core `DiskState`, in heartbeat answers). A
//! leader whose disk stays unhealthy for the configured window hands leadership
//! over (the controller does that) to a voter whose disk is better than its own:
//! a degraded leader only to a healthy voter, a failing one also to a degraded
//! voter (which can still take writes: on small disks every node is under the
//! free-space floor at once). When no voter's disk is better it stays, since a
//! hand-over would only start a ping-pong between equally sick disks, a failover
//! for clients at each turn. A node with an unhealthy disk delays its own
//! elections.
//!
//! Disk probes (`statvfs` for free space, the WAL's own [`wal::WalFiles`] for
//! its segment files) can block on a sick disk, so they never run on the controller
//! task: [`Health::start_disk_probe`] hands one to a blocking thread and
//! [`Health::collect_disk_probe`] picks up its result on a later turn.
//!
//! Invariants:
//! - at most one disk probe is in flight: a probe stuck on a hung disk delays the
//!   next one instead of piling blocking threads up;
//! - the controller task never waits for a probe; until the first one answers,
//!   free space is unknown (`free_bytes: null`, as before the first check);
//! - the health manager does not know the WAL's file layout; it asks the WAL.

use crate::config::HealthConfig;
use crate::core::DiskState;
use crate::wal;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Number of recent fsyncs the percentiles are computed over.
const WINDOW: usize = 256;
/// A sample older than this no longer counts (a disk that recovered is healthy).
const SAMPLE_TTL: Duration = Duration::from_secs(10);

pub struct Health {
    cfg: HealthConfig,
    dirs: DiskDirs,
    fsyncs: VecDeque<(Instant, Duration)>,
    free_bytes: Option<u64>,
    wal_segments: usize,
    /// The probe in flight, if any.
    probe: Option<oneshot::Receiver<DiskSample>>,
    storage_error: Option<String>,
    unhealthy_since: Option<Instant>,
    /// Unfit to lead, but no voter with a healthy disk to hand over to was
    /// said (logged once per unhealthy spell).
    stay_said: bool,
}

/// Where the disk probe looks: the data directory's filesystem for free space,
/// and the WAL's files as the WAL reports them (none without a WAL on disk).
#[derive(Clone, Debug)]
struct DiskDirs {
    data: PathBuf,
    wal: Option<wal::WalFiles>,
}

/// One disk probe's findings.
#[derive(Clone, Copy, Debug)]
struct DiskSample {
    free_bytes: Option<u64>,
    wal: Option<wal::DiskUsage>,
}

impl DiskDirs {
    /// Blocking: statvfs and a directory read.
    fn measure(&self) -> DiskSample {
        DiskSample {
            free_bytes: free_bytes(&self.data),
            wal: self.wal.as_ref().and_then(|w| w.usage().ok()),
        }
    }
}

/// Free bytes available to us on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

impl Health {
    /// `data_dir`: the node's data directory; `wal`: its WAL's files
    /// ([`wal::DiskStore::files`]; `None` without a WAL on disk).
    pub fn new(cfg: HealthConfig, data_dir: PathBuf, wal: Option<wal::WalFiles>) -> Self {
        Health {
            cfg,
            dirs: DiskDirs {
                data: data_dir,
                wal,
            },
            fsyncs: VecDeque::with_capacity(WINDOW),
            free_bytes: None,
            wal_segments: 0,
            probe: None,
            storage_error: None,
            unhealthy_since: None,
            stay_said: false,
        }
    }

    /// Starts a disk probe on a blocking thread unless one is still in flight.
    /// Must be called within a Tokio runtime.
    pub fn start_disk_probe(&mut self) {
        if self.probe.is_some() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        let dirs = self.dirs.clone();
        tokio::task::spawn_blocking(move || {
            let _ = tx.send(dirs.measure());
        });
        self.probe = Some(rx);
    }

    /// Takes the finished probe's result, if there is one; never waits.
    pub fn collect_disk_probe(&mut self) {
        let Some(rx) = &mut self.probe else {
            return;
        };
        match rx.try_recv() {
            Ok(sample) => {
                self.free_bytes = sample.free_bytes;
                if let Some(u) = sample.wal {
                    self.wal_segments = u.segments;
                }
                self.probe = None;
            }
            Err(oneshot::error::TryRecvError::Empty) => {}
            // The probe's thread died (a panic): try again next time.
            Err(oneshot::error::TryRecvError::Closed) => self.probe = None,
        }
    }

    /// How long the last fsync took (`None`: none yet).
    pub fn last_fsync(&self) -> Option<Duration> {
        self.fsyncs.back().map(|(_, d)| *d)
    }

    pub fn record_fsync(&mut self, took: Duration) {
        if self.fsyncs.len() == WINDOW {
            self.fsyncs.pop_front();
        }
        self.fsyncs.push_back((Instant::now(), took));
    }

    pub fn set_storage_error(&mut self, e: Option<String>) {
        self.storage_error = e;
    }

    pub fn storage_error(&self) -> Option<&str> {
        self.storage_error.as_deref()
    }

    fn percentile(&self, q: f64) -> Option<Duration> {
        let now = Instant::now();
        let mut v: Vec<Duration> = self
            .fsyncs
            .iter()
            .filter(|(t, _)| now.duration_since(*t) < SAMPLE_TTL)
            .map(|(_, d)| *d)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        Some(v[i])
    }

    /// Why the disk is unhealthy now (empty when healthy).
    pub fn disk_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p99) = self.percentile(0.99) {
            if p99 > Duration::from_millis(self.cfg.fsync_p99_max_ms) {
                out.push(format!(
                    "fsync p99 {} ms over {} ms",
                    p99.as_millis(),
                    self.cfg.fsync_p99_max_ms
                ));
            }
        }
        if let Some(free) = self.free_bytes {
            if free < self.cfg.min_free_bytes {
                out.push(format!(
                    "free disk space {free} bytes under {}",
                    self.cfg.min_free_bytes
                ));
            }
        }
        if let Some(e) = &self.storage_error {
            out.push(format!("storage error: {e}"));
        }
        out
    }

    /// Update how long the disk has been unhealthy, from the latest fsyncs, disk
    /// probe and storage error. Cheap: no I/O.
    pub fn check(&mut self) {
        let bad = !self.disk_problems().is_empty();
        match (bad, self.unhealthy_since) {
            (true, None) => self.unhealthy_since = Some(Instant::now()),
            (false, Some(_)) => {
                self.unhealthy_since = None;
                self.stay_said = false;
            }
            _ => {}
        }
    }

    /// The leader is unfit but stays (no voter with a healthy disk): true the
    /// first time in this unhealthy spell, so that it is logged once.
    pub fn first_stay(&mut self) -> bool {
        !std::mem::replace(&mut self.stay_said, true)
    }

    /// Number of WAL segment files, as of the latest disk probe.
    pub fn wal_segments(&self) -> usize {
        self.wal_segments
    }

    pub fn disk_degraded(&self) -> bool {
        self.unhealthy_since.is_some()
    }

    /// The disk as the core (and the heartbeat answers) see it: failing while
    /// the last write failed, degraded while unhealthy otherwise.
    pub fn disk_state(&self) -> DiskState {
        match (self.disk_degraded(), self.storage_error.is_some()) {
            (false, _) => DiskState::Healthy,
            (true, true) => DiskState::Failing,
            (true, false) => DiskState::Degraded,
        }
    }

    /// Unhealthy for the whole configured window: a leader should step aside.
    pub fn unfit_to_lead(&self) -> bool {
        let window = Duration::from_millis(self.cfg.unhealthy_window_ms);
        self.unhealthy_since.is_some_and(|t| t.elapsed() >= window)
    }

    /// The `health` object of `/v1/status`.
    pub fn report(&self, apply_lag: u64, unreachable: &[String]) -> Value {
        let problems = self.disk_problems();
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        let mut reasons = problems.clone();
        if !unreachable.is_empty() {
            reasons.push(format!("unreachable peers: {}", unreachable.join(", ")));
        }
        json!({
            "status": if reasons.is_empty() { "ok" } else { "degraded" },
            "reasons": reasons,
            "disk": if problems.is_empty() { "ok" } else { "unhealthy" },
            "fsync_p50_ms": ms(self.percentile(0.5)),
            "fsync_p99_ms": ms(self.percentile(0.99)),
            "free_bytes": self.free_bytes,
            "apply_lag": apply_lag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HealthConfig {
        HealthConfig {
            fsync_p99_max_ms: 10,
            unhealthy_window_ms: 0,
            min_free_bytes: 0,
        }
    }

    fn health(cfg: HealthConfig) -> Health {
        Health::new(cfg, std::env::temp_dir(), None)
    }

    /// Starts a probe and collects it, polling (never blocking the runtime)
    /// within a generous deadline.
    async fn probe(h: &mut Health) {
        h.start_disk_probe();
        let deadline = Instant::now() + Duration::from_secs(30);
        while h.probe.is_some() {
            assert!(
                Instant::now() < deadline,
                "the disk probe did not finish in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
            h.collect_disk_probe();
        }
    }

    #[test]
    fn slow_fsyncs_make_the_disk_unhealthy_and_fast_ones_heal_it() {
        let mut h = health(cfg());
        h.record_fsync(Duration::from_millis(1));
        h.check();
        assert!(!h.disk_degraded());
        for _ in 0..10 {
            h.record_fsync(Duration::from_millis(50));
        }
        h.check();
        assert!(h.disk_degraded() && h.unfit_to_lead());
        assert_eq!(h.disk_state(), DiskState::Degraded, "slow, but writes work");
        assert_eq!(h.report(0, &[])["status"], "degraded");
        for _ in 0..WINDOW {
            h.record_fsync(Duration::from_millis(1));
        }
        h.check();
        assert!(!h.disk_degraded());
        assert_eq!(h.disk_state(), DiskState::Healthy);
    }

    #[tokio::test]
    async fn storage_errors_and_free_space_count() {
        let mut h = health(cfg());
        h.set_storage_error(Some("no space".into()));
        h.check();
        assert!(h.disk_degraded());
        assert_eq!(h.disk_state(), DiskState::Failing);
        assert!(free_bytes(&std::env::temp_dir()).is_some());
        let mut floor = cfg();
        floor.min_free_bytes = u64::MAX;
        let mut h = health(floor);
        h.check();
        assert!(
            h.disk_problems().is_empty(),
            "free space unknown before a probe"
        );
        probe(&mut h).await;
        h.check();
        assert!(h.disk_problems()[0].contains("free disk space"));
        assert_eq!(h.disk_state(), DiskState::Degraded, "short of space only");
        assert!(h.report(0, &[])["free_bytes"].is_u64());
    }

    /// The probe asks the WAL for its files (the health manager knows no layout).
    #[tokio::test]
    async fn the_disk_probe_reports_the_wals_segments() {
        use crate::wal::conformance::entry;
        use crate::wal::LogStore;
        let tmp = tempfile::tempdir().unwrap();
        let wal_dir = tmp.path().join("wal");
        let mut store = wal::DiskStore::open(&wal_dir, 256).unwrap();
        for i in 1..=20 {
            store.append(&[entry(i, 1)]).unwrap();
            store.sync().unwrap();
        }
        let mut h = Health::new(cfg(), tmp.path().to_path_buf(), Some(store.files()));
        assert_eq!(h.wal_segments(), 0, "nothing known before a probe");
        probe(&mut h).await;
        let want = store.files().usage().unwrap().segments;
        assert!(want > 1, "256-byte segments must have rolled");
        assert_eq!(h.wal_segments(), want);
        assert!(h.report(0, &[])["free_bytes"].is_u64());
    }
}
