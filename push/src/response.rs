//! Reading a provider's HTTP answer the same way for all three: which statuses are worth
//! retrying and how long the service asked us to wait.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;

use crate::outcome::{Failure, FailureReason};

/// The `Retry-After` header, as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
#[must_use]
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Statuses after which the same request may succeed: throttling, timeouts, and
/// server-side errors.
#[must_use]
pub fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// The failure for an error status, carrying the service's own reason code.
#[must_use]
pub fn rejected(status: StatusCode, reason: String, headers: &HeaderMap) -> Failure {
    let reason = FailureReason::Rejected {
        status: status.as_u16(),
        reason,
    };
    if is_retryable(status) {
        Failure::transient(reason, retry_after(headers))
    } else {
        Failure::permanent(reason)
    }
}

/// The failure for a request that got no answer. Connection errors and timeouts are
/// worth retrying; a request Kurir could not build is not.
#[must_use]
pub fn transport(error: &reqwest::Error) -> Failure {
    // The error's URL would carry a Web Push endpoint (a capability): drop it.
    let text = error_kind(error);
    if error.is_builder() {
        Failure::permanent(FailureReason::Transport(text))
    } else {
        Failure::transient(FailureReason::Transport(text), None)
    }
}

fn error_kind(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_request() {
        "request"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "other"
    };
    let mut source = std::error::Error::source(error);
    let mut detail = String::new();
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// At most this much of a provider's error body is kept as a reason.
const MAX_REASON: usize = 200;

/// A short printable reason from an error body that is not JSON we understand.
#[must_use]
pub fn short_reason(status: StatusCode, body: &str) -> String {
    let text: String = body
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON)
        .collect();
    if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    }
}
