//! What stands around every provider: a concurrency limit, a per-attempt timeout, the
//! retry loop and the circuit breaker, with metrics and logs of each push.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::breaker::{Admission, BreakerPolicy, CircuitBreaker};
use crate::outcome::{Failure, FailureReason, Outcome, Provider};
use crate::retry::RetryPolicy;
use crate::telemetry;

/// The limits of one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardPolicy {
    /// Requests in flight to the provider at once.
    pub concurrency: usize,
    /// Time one request may take, connection included.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
}

/// One provider's guard.
#[derive(Debug)]
pub struct Guard {
    provider: Provider,
    policy: GuardPolicy,
    permits: Semaphore,
    breaker: CircuitBreaker,
}

impl Guard {
    #[must_use]
    pub fn new(provider: Provider, policy: GuardPolicy) -> Self {
        Self {
            provider,
            policy,
            permits: Semaphore::new(policy.concurrency.max(1)),
            breaker: CircuitBreaker::new(policy.breaker),
        }
    }

    #[must_use]
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retry policy gives up,
    /// and returns the last outcome. `attempt` makes one request.
    pub async fn run<F, Fut>(&self, mut attempt: F) -> Outcome
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let started = Instant::now();
        let mut tries = 0;
        let mut previous: Option<Failure> = None;
        let outcome = loop {
            tries += 1;
            let outcome = self.once(&mut attempt).await;
            let Outcome::Failed(failure) = &outcome else {
                break outcome;
            };
            if failure.reason == FailureReason::CircuitOpen {
                // Opened by this push's own failures: report the provider's reason,
                // to be retried no sooner than the circuit lets a probe through.
                break match previous {
                    Some(last) => Outcome::Failed(Failure {
                        retry_after: last.retry_after.max(failure.retry_after),
                        ..last
                    }),
                    None => outcome,
                };
            }
            let Some(delay) = self
                .policy
                .retry
                .next_delay(tries, started.elapsed(), failure)
            else {
                break outcome;
            };
            tracing::debug!(provider = %self.provider, attempt = tries, delay_ms = delay.as_millis(), reason = %failure.reason, "push retry");
            previous = Some(failure.clone());
            tokio::time::sleep(delay).await;
        };
        telemetry::record_outcome(self.provider, &outcome);
        match &outcome {
            Outcome::Sent { .. } => {
                tracing::debug!(provider = %self.provider, attempts = tries, "push sent")
            }
            Outcome::Gone { reason } => {
                tracing::info!(provider = %self.provider, %reason, "push device gone")
            }
            Outcome::Failed(failure) => tracing::warn!(
                provider = %self.provider,
                attempts = tries,
                reason = %failure.reason,
                retryable = failure.retryable,
                "push failed"
            ),
        }
        outcome
    }

    async fn once<F, Fut>(&self, attempt: &mut F) -> Outcome
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        if let Admission::Refused { retry_in } = self.breaker.admit() {
            return Outcome::Failed(Failure::transient(
                FailureReason::CircuitOpen,
                Some(retry_in),
            ));
        }
        let Ok(_permit) = self.permits.acquire().await else {
            unreachable!("the semaphore is never closed")
        };
        let began = Instant::now();
        let outcome = match tokio::time::timeout(self.policy.timeout, attempt()).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Failed(Failure::transient(
                FailureReason::Transport("timeout".into()),
                None,
            )),
        };
        telemetry::record_attempt(self.provider, began.elapsed());
        match &outcome {
            Outcome::Failed(failure) if speaks_of_health(&failure.reason) && failure.retryable => {
                if self.breaker.record_failure() {
                    tracing::warn!(
                        provider = %self.provider,
                        open_for_ms = self.policy.breaker.open_for.as_millis(),
                        reason = %failure.reason,
                        "push circuit opened"
                    );
                }
            }
            _ => self.breaker.record_success(),
        }
        outcome
    }
}

/// Failures that say the service (or the way to it) is unwell, as opposed to a problem
/// with one device or message.
fn speaks_of_health(reason: &FailureReason) -> bool {
    matches!(
        reason,
        FailureReason::Rejected { .. }
            | FailureReason::Transport(_)
            | FailureReason::Credentials(_)
    )
}
