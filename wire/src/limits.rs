//! What the read side of a socket may hold, and for how long. Whole client messages are
//! small and arrive at once; what stays in memory between reads is an unfinished frame
//! or a fragmented message. Those bytes are bounded three ways: per message
//! ([`ReadLimits::max_message`]), in time ([`ReadLimits::partial_timeout`], which control
//! frames do not extend), and per node ([`PartialBudget`], shared by every socket).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Largest message a client may send: the JSON frames clients send are under 1 KiB.
pub const DEFAULT_MAX_MESSAGE: usize = 4 * 1024;

/// How long a message may stay unfinished (an incomplete frame or missing fragments).
pub const DEFAULT_PARTIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of unfinished messages one node holds across all its sockets.
pub const DEFAULT_PARTIAL_BUDGET: usize = 64 << 20;

/// Read limits, shared by every socket of a node.
#[derive(Debug)]
pub struct ReadLimits {
    /// Largest frame or reassembled message (close 1009 above it).
    pub max_message: usize,
    /// How long a partial message may wait for the rest of its bytes, counted from its
    /// first byte; pings and pongs in between do not extend it.
    pub partial_timeout: Duration,
    /// The node-wide allowance for the bytes of partial messages.
    pub budget: Arc<PartialBudget>,
}

impl ReadLimits {
    pub fn new(max_message: usize, partial_timeout: Duration, budget_bytes: usize) -> Self {
        Self {
            max_message,
            partial_timeout,
            budget: Arc::new(PartialBudget::new(budget_bytes)),
        }
    }
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self::new(
            DEFAULT_MAX_MESSAGE,
            DEFAULT_PARTIAL_TIMEOUT,
            DEFAULT_PARTIAL_BUDGET,
        )
    }
}

/// A count of bytes held for partial messages, against a limit. A socket reserves what
/// its buffers hold before waiting for more, and releases it when the message completes
/// or the socket is dropped; one that cannot reserve is failed.
#[derive(Debug)]
pub struct PartialBudget {
    used: AtomicUsize,
    limit: usize,
}

impl PartialBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Take `n` bytes; `false` (and nothing taken) if that would pass the limit.
    pub fn try_reserve(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Give back `n` bytes taken earlier.
    pub fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes reserved now, across all sockets.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_come_back() {
        let b = PartialBudget::new(100);
        assert!(b.try_reserve(60));
        assert!(!b.try_reserve(41), "over the limit");
        assert_eq!(b.used(), 60, "a refused reservation takes nothing");
        assert!(b.try_reserve(40));
        b.release(60);
        assert_eq!(b.used(), 40);
        assert!(!b.try_reserve(usize::MAX), "no overflow");
    }
}
