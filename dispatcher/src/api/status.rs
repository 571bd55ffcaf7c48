//! The only place a gRPC `Status` is built. Callers learn what they can act on (which
//! field, retry later, back off); internal causes go to the log, never to the caller.

use tonic::Status;
use tracing::{error, warn};

use crate::error::DispatchError;

impl From<DispatchError> for Status {
    fn from(err: DispatchError) -> Self {
        match err {
            DispatchError::InvalidArgument { field, reason } => {
                Status::invalid_argument(format!("{field}: {reason}"))
            }
            DispatchError::Unauthenticated(failure) => Status::unauthenticated(failure.to_string()),
            DispatchError::Overloaded => {
                Status::resource_exhausted("too many requests in flight; retry with backoff")
            }
            DispatchError::TooManyWatchers => {
                Status::resource_exhausted("too many receipt watchers; retry later")
            }
            DispatchError::SendInProgress => {
                Status::aborted("idempotency_key: a Send with this key is still in progress; retry")
            }
            // Not ALREADY_EXISTS: clients commonly read that as "done", which would turn
            // this refusal into a silently lost notification.
            DispatchError::IdempotencyKeyReused => Status::failed_precondition(
                "idempotency_key: already used for a different request (recipients, \
                 notification, ttl_seconds, fallback or send_at differ); use a new key for a \
                 new notification",
            ),
            DispatchError::Unscoped => {
                error!("call authenticated without a caller scope");
                Status::internal("internal error")
            }
            DispatchError::Timeout => Status::deadline_exceeded("request timed out"),
            DispatchError::WatcherLagged => Status::resource_exhausted(
                "receipt stream fell behind and was ended; read faster or filter, then reconnect",
            ),
            DispatchError::NotFound(what) => Status::not_found(what),
            DispatchError::ShuttingDown => Status::unavailable("server shutting down; reconnect"),
            DispatchError::Backend(e) if e.is_transient() => {
                warn!(error = %e, cause = ?std::error::Error::source(&e), "backend unavailable");
                Status::unavailable("backend unavailable")
            }
            DispatchError::Backend(e) => {
                error!(error = %e, "backend failure");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kurir_backends::BackendError;
    use tonic::Code;

    use super::*;
    use crate::error::AuthFailure;

    #[test]
    fn invalid_arguments_name_the_field() {
        let s = Status::from(DispatchError::invalid("user_ids[3]", "must not be empty"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "user_ids[3]: must not be empty");
    }

    #[test]
    fn a_send_in_progress_is_aborted_and_says_retry() {
        let s = Status::from(DispatchError::SendInProgress);
        assert_eq!(s.code(), Code::Aborted);
        assert_eq!(
            s.message(),
            "idempotency_key: a Send with this key is still in progress; retry"
        );
    }

    #[test]
    fn a_reused_key_is_a_failed_precondition_naming_the_field() {
        let s = Status::from(DispatchError::IdempotencyKeyReused);
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().starts_with("idempotency_key: "), "{s:?}");
    }

    #[test]
    fn transient_backend_errors_are_unavailable() {
        let e = BackendError::unavailable("redis", "connection refused to 10.0.0.7:6379");
        let s = Status::from(DispatchError::Backend(e));
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "backend unavailable");
    }

    #[test]
    fn other_errors_hide_their_cause() {
        let e = BackendError::corrupt("redis", "inbox entry 17 has no payload");
        let s = Status::from(DispatchError::Backend(e));
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(s.message(), "internal error");
    }

    #[test]
    fn the_rest() {
        let cases = [
            (
                DispatchError::Unauthenticated(AuthFailure::Missing),
                Code::Unauthenticated,
            ),
            (
                DispatchError::Unauthenticated(AuthFailure::Invalid),
                Code::Unauthenticated,
            ),
            (DispatchError::Overloaded, Code::ResourceExhausted),
            (DispatchError::TooManyWatchers, Code::ResourceExhausted),
            (DispatchError::WatcherLagged, Code::ResourceExhausted),
            (DispatchError::SendInProgress, Code::Aborted),
            (
                DispatchError::IdempotencyKeyReused,
                Code::FailedPrecondition,
            ),
            (DispatchError::Unscoped, Code::Internal),
            (DispatchError::Timeout, Code::DeadlineExceeded),
            (DispatchError::ShuttingDown, Code::Unavailable),
        ];
        for (err, code) in cases {
            assert_eq!(Status::from(err).code(), code);
        }
    }
}
