//! Why a request failed, named by cause. Built by [`crate::api::validate`],
//! [`crate::api::auth`] and [`crate::dispatch`]; turned into a gRPC `Status` in exactly
//! one place, [`crate::api::status`].

use kurir_backends::BackendError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DispatchError {
    /// A request field is missing, malformed or out of range. Nothing was stored or
    /// published.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },

    /// No `authorization: Bearer <key>` metadata, or a key that is not configured.
    #[error("{0}")]
    Unauthenticated(AuthFailure),

    /// `KURIR_MAX_IN_FLIGHT` calls are already running: this one is shed, not queued.
    #[error("too many requests in flight")]
    Overloaded,

    /// `KURIR_MAX_WATCHERS` receipt streams are already open.
    #[error("too many receipt watchers")]
    TooManyWatchers,

    /// Another `Send` with the same idempotency key is still running (its claim stayed
    /// pending past [`IN_PROGRESS_WAIT`](crate::dispatch::IN_PROGRESS_WAIT)). Nothing was
    /// stored or published by this call; retrying later either goes through or returns
    /// the first call's id.
    #[error("a Send with this idempotency key is still in progress")]
    SendInProgress,

    /// The idempotency key is held, in this caller's scope, for a request with another
    /// fingerprint (recipients, notification or TTL differ). Nothing was stored or
    /// published; the other request's id is not revealed.
    #[error("idempotency key already used for a different request")]
    IdempotencyKeyReused,

    /// The auth layer let a call through without naming its caller's scope: a bug in
    /// that layer. Refused rather than run in a scope shared with other callers.
    #[error("authenticated call without a caller scope")]
    Unscoped,

    /// The request did not finish within `KURIR_REQUEST_TIMEOUT_MS`.
    #[error("request timed out")]
    Timeout,

    /// A receipt watcher did not read its stream fast enough; its bounded buffer filled.
    #[error("receipt watcher fell behind")]
    WatcherLagged,

    /// What the request names does not exist (a scheduled notification already sent).
    #[error("{0}")]
    NotFound(&'static str),

    /// The server is draining; long-lived streams are ended so clients reconnect elsewhere.
    #[error("server shutting down")]
    ShuttingDown,

    /// Redis or NATS failed; [`BackendError::is_transient`] picks `UNAVAILABLE` over
    /// `INTERNAL`.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl DispatchError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Why a caller was not authenticated. Also the `reason` label of
/// `kurir_dispatcher_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AuthFailure {
    #[error("missing API key: send `authorization: Bearer <key>` metadata")]
    Missing,
    #[error("invalid API key")]
    Invalid,
}

impl AuthFailure {
    pub const LABELS: [&'static str; 2] = ["missing", "invalid"];

    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid => "invalid",
        }
    }
}
