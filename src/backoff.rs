//! The one retry pause of the project: capped exponential backoff with jitter.
//!
//! Why one: every retry loop (peer reconnects, joins, requests that follow the
//! leader) must be bounded and jittered so that nodes retrying together do not
//! synchronise; one implementation keeps them all that way.
//!
//! Invariants:
//! - every delay lies in `[current/2, current]`, and `current` never exceeds `max`;
//! - `min` is at least 1 ms, so a loop using it never spins.

use rand::Rng;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// The next pause; the one after it doubles (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let cur = self.current;
        self.current = (cur * 2).min(self.max);
        rand::thread_rng().gen_range(cur / 2..=cur)
    }

    /// Back to the shortest pause (after a success).
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stay_in_their_jitter_band() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(10), ms(50));
        let bands = [(5, 10), (10, 20), (20, 40), (25, 50), (25, 50)];
        for (lo, hi) in bands {
            let d = b.next_delay();
            assert!(d >= ms(lo) && d <= ms(hi), "{d:?} outside {lo}..={hi} ms");
        }
        b.reset();
        assert!(b.next_delay() <= ms(10));
        let mut zero = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert!(zero.next_delay() <= ms(1));
    }
}
