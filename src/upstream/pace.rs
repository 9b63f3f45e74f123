//! Pacing of new upstream connections (a token bucket).
//!
//! When a region's link heals, every node's clients re-list and re-watch
//! at once, and every watch needs a TLS connection of its own (HTTP/1.1
//! cannot multiplex). The bucket lets a burst of `rate` dials through at
//! once (a kubelet start or a heal of one node needs about a dozen), then
//! spaces further dials `1/rate` apart, so a fleet's handshakes spread
//! out instead of arriving in the same second. Requests served from the
//! pool and the health probe are never paced.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bucket: `rate` tokens a second, at most `rate` banked.
#[derive(Debug)]
pub struct Pacer {
    /// Tokens per second (0: unpaced).
    rate: u32,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens banked at `at` (may be negative: dials already promised).
    tokens: f64,
    at: Instant,
}

impl Pacer {
    /// A full bucket of `rate` tokens refilled at `rate` a second.
    pub fn new(rate: u32) -> Pacer {
        Pacer {
            rate,
            state: Mutex::new(Bucket {
                tokens: f64::from(rate),
                at: Instant::now(),
            }),
        }
    }

    /// Takes a token: how long the caller must wait before it dials
    /// (zero while the burst lasts).
    pub fn reserve(&self) -> Duration {
        self.reserve_at(Instant::now())
    }

    fn reserve_at(&self, now: Instant) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let Ok(mut bucket) = self.state.lock() else {
            return Duration::ZERO;
        };
        let rate = f64::from(self.rate);
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(rate) - 1.0;
        bucket.at = now;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / rate)
        }
    }

    /// Waits for a token; true if the dial had to wait.
    pub async fn wait(&self) -> bool {
        let wait = self.reserve();
        if wait.is_zero() {
            return false;
        }
        smol::Timer::after(wait).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_dials_are_spaced() {
        let pacer = Pacer::new(4);
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(pacer.reserve_at(t0), Duration::ZERO);
        }
        // The fifth waits a quarter second, the sixth half a second.
        let fifth = pacer.reserve_at(t0);
        let sixth = pacer.reserve_at(t0);
        assert!((fifth.as_secs_f64() - 0.25).abs() < 1e-6, "{fifth:?}");
        assert!((sixth.as_secs_f64() - 0.5).abs() < 1e-6, "{sixth:?}");
        // After a quiet second the debt is paid and one token is back.
        let later = t0 + Duration::from_millis(1750);
        assert_eq!(pacer.reserve_at(later), Duration::ZERO);
    }

    #[test]
    fn the_bank_never_exceeds_the_burst() {
        let pacer = Pacer::new(2);
        let t0 = Instant::now() + Duration::from_secs(3600);
        assert_eq!(pacer.reserve_at(t0), Duration::ZERO);
        assert_eq!(pacer.reserve_at(t0), Duration::ZERO);
        assert!(pacer.reserve_at(t0) > Duration::ZERO);
    }

    #[test]
    fn zero_rate_is_unpaced() {
        let pacer = Pacer::new(0);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(pacer.reserve_at(t0), Duration::ZERO);
        }
    }
}
