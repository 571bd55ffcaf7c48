//! The push metrics, named once.

use std::time::Duration;

use crate::outcome::{Outcome, Provider};

/// Counter of finished pushes by `provider` and `outcome` (`sent`, `gone`, `retryable`,
/// `failed`).
pub const SENT_TOTAL: &str = "kurir_push_sent_total";
/// Histogram of one request to a provider (each attempt), by `provider`.
pub const DURATION_SECONDS: &str = "kurir_push_duration_seconds";

/// Bucket bounds for [`DURATION_SECONDS`], in seconds: push services answer in tens to
/// hundreds of milliseconds, and the request timeout caps the tail.
pub const DURATION_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Counts one finished push.
pub fn record_outcome(provider: Provider, outcome: &Outcome) {
    metrics::counter!(SENT_TOTAL, "provider" => provider.as_str(), "outcome" => outcome.label())
        .increment(1);
}

/// Records the latency of one attempt.
pub fn record_attempt(provider: Provider, took: Duration) {
    metrics::histogram!(DURATION_SECONDS, "provider" => provider.as_str())
        .record(took.as_secs_f64());
}
