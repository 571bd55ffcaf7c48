//! A circuit breaker per provider: after repeated failures the provider is not called for
//! a while, so pushes to it fail fast instead of tying up workers, and the other
//! providers keep their share. After the pause one probe decides whether to close again.

use std::time::{Duration, Instant};

use std::sync::Mutex;

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failed pushes that open the circuit.
    pub failure_threshold: u32,
    /// How long it stays open before a probe is let through.
    pub open_for: Duration,
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; others are refused until it reports, or until a pause
    /// has passed (the probe's caller may have given up without reporting).
    HalfOpen {
        since: Instant,
    },
}

/// Whether a call may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Refused; the circuit may let a probe through after this long.
    Refused {
        retry_in: Duration,
    },
}

/// One provider's breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    policy: BreakerPolicy,
    state: Mutex<State>,
}

impl CircuitBreaker {
    #[must_use]
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Asks to make a call; a refused call must not be made.
    pub fn admit(&self) -> Admission {
        let mut state = self.lock();
        let now = Instant::now();
        match *state {
            State::Closed { .. } => Admission::Allowed,
            State::Open { until } if now < until => Admission::Refused {
                retry_in: until - now,
            },
            State::HalfOpen { since } if now.duration_since(since) < self.policy.open_for => {
                Admission::Refused {
                    retry_in: self.policy.open_for - now.duration_since(since),
                }
            }
            State::Open { .. } | State::HalfOpen { .. } => {
                *state = State::HalfOpen { since: now };
                Admission::Allowed
            }
        }
    }

    /// An admitted call got a healthy answer (including a gone device or a rejected
    /// request: the service works).
    pub fn record_success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    /// An admitted call failed in a way that speaks of the service's health; true when
    /// this failure opened the circuit.
    pub fn record_failure(&self) -> bool {
        let mut state = self.lock();
        let (next, opened) = match *state {
            State::Closed { failures } if failures + 1 < self.policy.failure_threshold => (
                State::Closed {
                    failures: failures + 1,
                },
                false,
            ),
            State::Closed { .. } | State::HalfOpen { .. } => (
                State::Open {
                    until: Instant::now() + self.policy.open_for,
                },
                true,
            ),
            // A call admitted before the circuit opened: keep the pause as it is.
            State::Open { until } => (State::Open { until }, false),
        };
        *state = next;
        opened
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value, valid even if a holder panicked.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the circuit refuses calls now (for readiness and tests).
    #[must_use]
    pub fn is_open(&self) -> bool {
        matches!(*self.lock(), State::Open { until } if Instant::now() < until)
    }
}
