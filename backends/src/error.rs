//! The one error type of the seams. Callers branch on [`BackendError::is_transient`]:
//! transient errors become gRPC `UNAVAILABLE`, the rest `INTERNAL`.

use thiserror::Error;

type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Error)]
pub enum BackendError {
    /// The server is unreachable, timed out or refused the command for now.
    #[error("{backend} unavailable")]
    Unavailable {
        backend: &'static str,
        #[source]
        source: Source,
    },
    /// Data that does not decode, or a reply of an unexpected shape.
    #[error("{backend} returned corrupt data: {what}")]
    Corrupt { backend: &'static str, what: String },
    /// A malformed URL or option, or a request the backend refuses whatever its state
    /// (an oversized payload). Retrying does not help.
    #[error("invalid {backend} request or configuration: {reason}")]
    Invalid {
        backend: &'static str,
        reason: String,
    },
}

impl BackendError {
    pub fn unavailable(backend: &'static str, source: impl Into<Source>) -> Self {
        Self::Unavailable {
            backend,
            source: source.into(),
        }
    }

    pub fn corrupt(backend: &'static str, what: impl Into<String>) -> Self {
        Self::Corrupt {
            backend,
            what: what.into(),
        }
    }

    pub fn invalid(backend: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            backend,
            reason: reason.into(),
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}
