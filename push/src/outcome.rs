//! The typed result of one push, which the caller acts on: done, try later, or forget
//! the device.

use std::fmt;
use std::time::Duration;

use thiserror::Error;

use crate::ssrf::SsrfError;

/// The three push services (the `provider` label of the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    WebPush,
    Fcm,
    Apns,
}

impl Provider {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebPush => "webpush",
            Self::Fcm => "fcm",
            Self::Apns => "apns",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to one push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The service accepted it; `id` is its message id when it returns one.
    Sent { id: Option<String> },
    /// The registration no longer exists (Web Push 404/410, FCM `UNREGISTERED`, APNs
    /// 410): the caller should remove the device.
    Gone { reason: String },
    /// Not delivered; see whether and when to try again.
    Failed(Failure),
}

impl Outcome {
    /// The `outcome` label of `kurir_push_sent_total`.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Sent { .. } => "sent",
            Self::Gone { .. } => "gone",
            Self::Failed(f) if f.retryable => "retryable",
            Self::Failed(_) => "failed",
        }
    }
}

/// Why a push was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: FailureReason,
    /// Whether the same push may succeed later.
    pub retryable: bool,
    /// The service's `Retry-After` (or the breaker's remaining open time).
    pub retry_after: Option<Duration>,
}

impl Failure {
    #[must_use]
    pub fn permanent(reason: FailureReason) -> Self {
        Self {
            reason,
            retryable: false,
            retry_after: None,
        }
    }

    #[must_use]
    pub fn transient(reason: FailureReason, retry_after: Option<Duration>) -> Self {
        Self {
            reason,
            retryable: true,
            retry_after,
        }
    }
}

/// The reason of a [`Failure`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FailureReason {
    /// The service answered with an error status; `reason` is its own error code.
    #[error("{status} {reason}")]
    Rejected { status: u16, reason: String },
    /// No answer: connection, TLS or timeout.
    #[error("transport: {0}")]
    Transport(String),
    /// The provider's credentials could not be obtained (FCM access token).
    #[error("credentials: {0}")]
    Credentials(String),
    /// The device's registration is malformed (bad keys, bad endpoint URL).
    #[error("invalid device: {0}")]
    InvalidDevice(String),
    /// The endpoint is not one Kurir may connect to.
    #[error(transparent)]
    Refused(#[from] SsrfError),
    /// The encrypted payload would exceed what the service accepts.
    #[error("payload of {0} bytes is too large")]
    PayloadTooLarge(usize),
    /// The provider has no configuration in this process.
    #[error("{0} is not configured")]
    NotConfigured(Provider),
    /// Recent sends to this provider failed; not tried.
    #[error("circuit open")]
    CircuitOpen,
}
