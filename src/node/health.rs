//! The health manager: is this node fit to lead?
//!
//! It measures fsync latency (a rolling window of recent syncs, p50/p99), free
//! space in the data directory's filesystem, storage failures and apply lag. The
//! disk is *unhealthy* when the fsync p99 is over the configured maximum, free
//! space is under the floor, or the last write failed. A leader whose disk stays
//! unhealthy for the configured window hands leadership over (the controller does
//! that); a node with an unhealthy disk delays its own elections (core `degraded`).

use crate::config::HealthConfig;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Number of recent fsyncs the percentiles are computed over.
const WINDOW: usize = 256;
/// A sample older than this no longer counts (a disk that recovered is healthy).
const SAMPLE_TTL: Duration = Duration::from_secs(10);

pub struct Health {
    cfg: HealthConfig,
    data_dir: PathBuf,
    fsyncs: VecDeque<(Instant, Duration)>,
    free_bytes: Option<u64>,
    storage_error: Option<String>,
    unhealthy_since: Option<Instant>,
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
    pub fn new(cfg: HealthConfig, data_dir: PathBuf) -> Self {
        Health {
            cfg,
            data_dir,
            fsyncs: VecDeque::with_capacity(WINDOW),
            free_bytes: None,
            storage_error: None,
            unhealthy_since: None,
        }
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

    /// Re-read free space and update how long the disk has been unhealthy.
    pub fn check(&mut self) {
        self.free_bytes = free_bytes(&self.data_dir);
        let bad = !self.disk_problems().is_empty();
        match (bad, self.unhealthy_since) {
            (true, None) => self.unhealthy_since = Some(Instant::now()),
            (false, Some(_)) => self.unhealthy_since = None,
            _ => {}
        }
    }

    /// Number of WAL segment files (`<data_dir>/wal/wal/*.seg`).
    pub fn wal_segments(&self) -> usize {
        let dir = self.data_dir.join("wal").join("wal");
        std::fs::read_dir(dir).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .count()
        })
    }

    pub fn disk_degraded(&self) -> bool {
        self.unhealthy_since.is_some()
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

    #[test]
    fn slow_fsyncs_make_the_disk_unhealthy_and_fast_ones_heal_it() {
        let mut h = Health::new(cfg(), std::env::temp_dir());
        h.record_fsync(Duration::from_millis(1));
        h.check();
        assert!(!h.disk_degraded());
        for _ in 0..10 {
            h.record_fsync(Duration::from_millis(50));
        }
        h.check();
        assert!(h.disk_degraded() && h.unfit_to_lead());
        assert_eq!(h.report(0, &[])["status"], "degraded");
        for _ in 0..WINDOW {
            h.record_fsync(Duration::from_millis(1));
        }
        h.check();
        assert!(!h.disk_degraded());
    }

    #[test]
    fn storage_errors_and_free_space_count() {
        let mut h = Health::new(cfg(), std::env::temp_dir());
        h.set_storage_error(Some("no space".into()));
        h.check();
        assert!(h.disk_degraded());
        assert!(free_bytes(&std::env::temp_dir()).is_some());
        let mut floor = cfg();
        floor.min_free_bytes = u64::MAX;
        let mut h = Health::new(floor, std::env::temp_dir());
        h.check();
        assert!(h.disk_problems()[0].contains("free disk space"));
    }
}
