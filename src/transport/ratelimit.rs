//! Per-source token buckets for join requests.
//!
//! Why: a join makes the leader append a membership entry and start replicating a
//! whole log (or a snapshot) to the newcomer, so a flood of joins is an expensive
//! attack even with a valid certificate. Legitimate joins retry with backoff of up
//! to 2 s and easily fit in the budget.
//!
//! Invariant: memory is bounded: at most [`MAX_SOURCES`] buckets; when full, buckets
//! that have refilled completely (they hold no information) are dropped first, and
//! if none has, the map is cleared (failing open for a moment rather than growing).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Most sources tracked at once.
pub const MAX_SOURCES: usize = 4096;

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        RateLimiter {
            per_second: per_second.max(1) as f64,
            burst: burst.max(1) as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `source` at `now`; false when its bucket is empty.
    pub fn allow(&self, source: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&source) {
            self.evict(&mut buckets, now);
        }
        let b = buckets.entry(source).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = self.refilled(b, now);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let secs = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + secs * self.per_second).min(self.burst)
    }

    fn evict(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        buckets.retain(|_, b| self.refilled(b, now) < self.burst);
        if buckets.len() >= MAX_SOURCES {
            buckets.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_sustained_rate_per_source() {
        let rl = RateLimiter::new(2, 3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        assert!((0..3).all(|_| rl.allow(a, t0)));
        assert!(!rl.allow(a, t0), "burst exhausted");
        assert!(rl.allow(b, t0), "another source has its own bucket");
        assert!(!rl.allow(a, t0 + Duration::from_millis(400)));
        assert!(
            rl.allow(a, t0 + Duration::from_millis(500)),
            "refills at 2/s"
        );
        assert!(!rl.allow(a, t0 + Duration::from_millis(500)));
    }

    #[test]
    fn memory_stays_bounded() {
        let rl = RateLimiter::new(1, 1);
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 * 3) {
            rl.allow(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(rl.buckets.lock().unwrap().len() <= MAX_SOURCES);
    }
}
