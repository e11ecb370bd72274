//! Exponential backoff with jitter between reconnection attempts, so a
//! fleet that lost its broker does not come back in one synchronised
//! wave (AWS's "exponential backoff and jitter" advice).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// Consecutive failures so far.
    failures: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        // Jitter needs no cryptographic randomness, only devices that do not
        // agree: the clock's nanoseconds and the process id differ enough.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Backoff::with_seed(initial, max, nanos ^ (u64::from(std::process::id()) << 32))
    }

    pub fn with_seed(initial: Duration, max: Duration, seed: u64) -> Backoff {
        // A day is long enough to wait for any broker, and keeps the
        // arithmetic below far from overflowing.
        const DAY: Duration = Duration::from_secs(86_400);
        let initial = initial.clamp(Duration::from_millis(1), DAY);
        Backoff {
            initial,
            max: max.clamp(initial, DAY),
            failures: 0,
            rng: seed | 1,
        }
    }

    /// The delay before the next attempt: the exponential step for the
    /// failures so far, capped at `max`, then a random point in its upper
    /// half ("equal jitter": never retries at once, never all together).
    pub fn next_delay(&mut self) -> Duration {
        let step = self
            .initial
            .saturating_mul(1u32.checked_shl(self.failures.min(20)).unwrap_or(u32::MAX))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = step / 2;
        let millis = half.as_millis().max(1) as u64;
        half + Duration::from_millis(self.random() % (millis + 1))
    }

    /// Forgets the failures (after a connection that stayed up).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn random(&mut self) -> u64 {
        // xorshift64
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::with_seed(Duration::from_secs(1), Duration::from_secs(60), 42);
        let mut steps = Vec::new();
        for _ in 0..12 {
            steps.push(b.next_delay());
        }
        for (i, d) in steps.iter().enumerate() {
            let step = Duration::from_secs(1 << i.min(6)).min(Duration::from_secs(60));
            assert!(
                *d >= step / 2 && *d <= step,
                "attempt {i}: {d:?} vs step {step:?}"
            );
        }
        assert!(steps[11] >= Duration::from_secs(30));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn two_devices_do_not_retry_in_lockstep() {
        let mut a = Backoff::with_seed(Duration::from_secs(8), Duration::from_secs(60), 1);
        let mut b = Backoff::with_seed(Duration::from_secs(8), Duration::from_secs(60), 2);
        let same = (0..10).filter(|_| a.next_delay() == b.next_delay()).count();
        assert!(same < 3);
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::with_seed(Duration::from_secs(u64::MAX / 4), Duration::MAX, 7);
        for _ in 0..100 {
            b.next_delay();
        }
    }
}
