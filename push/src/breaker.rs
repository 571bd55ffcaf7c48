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
    /// One probe is in flight; others are refused until it reports.
    HalfOpen,
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
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *state {
            State::Closed { .. } => Admission::Allowed,
            State::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    *state = State::HalfOpen;
                    Admission::Allowed
                } else {
                    Admission::Refused {
                        retry_in: until - now,
                    }
                }
            }
            State::HalfOpen => Admission::Refused {
                retry_in: self.policy.open_for,
            },
        }
    }

    /// An admitted call got a healthy answer (including a gone device or a rejected
    /// request: the service works).
    pub fn record_success(&self) {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = State::Closed { failures: 0 };
    }

    /// An admitted call failed in a way that speaks of the service's health.
    pub fn record_failure(&self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = State::Open {
            until: Instant::now() + self.policy.open_for,
        };
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.policy.failure_threshold => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            State::Closed { .. } | State::HalfOpen => {
                tracing::warn!(
                    open_for_ms = self.policy.open_for.as_millis(),
                    "push circuit opened"
                );
                open
            }
            // A call admitted before the circuit opened: keep the pause as it is.
            State::Open { until } => State::Open { until },
        };
    }

    /// Whether the circuit refuses calls now (for readiness and tests).
    #[must_use]
    pub fn is_open(&self) -> bool {
        matches!(
            *self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            State::Open { until } if Instant::now() < until
        )
    }
}
