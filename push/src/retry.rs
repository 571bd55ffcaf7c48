//! When to try a failed push again: exponential backoff with full jitter, never sooner
//! than the service's `Retry-After`, within a bounded number of attempts and total time.

use std::time::Duration;

use rand::Rng;

use crate::outcome::Failure;

/// Bounds of the retries of one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles after each.
    pub base: Duration,
    /// Ceiling of one backoff (before `Retry-After`).
    pub max_backoff: Duration,
    /// Time a push may spend from its first attempt until its last starts; a wait that
    /// would end later is not taken and the failure goes back to the caller.
    pub budget: Duration,
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` after `failure`, or `None` to give up.
    /// `elapsed` is the time since the first attempt started.
    #[must_use]
    pub fn next_delay(
        &self,
        attempt: u32,
        elapsed: Duration,
        failure: &Failure,
    ) -> Option<Duration> {
        if !failure.retryable || attempt >= self.max_attempts {
            return None;
        }
        let exp = self
            .base
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.max_backoff);
        // Full jitter spreads retries of many pushes that failed together; the floor
        // keeps a minimum spacing.
        let jittered = exp / 2 + jitter(exp / 2);
        let delay = failure
            .retry_after
            .map_or(jittered, |after| after.max(jittered));
        (elapsed + delay <= self.budget).then_some(delay)
    }
}

fn jitter(max: Duration) -> Duration {
    let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if max_ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..=max_ms))
}
