//! Metric names, their descriptions, the series registered from start-up, and the
//! histogram buckets the Prometheus recorder needs for them. The recorder, the process
//! collector and the log subscriber are [`kurir_runtime`]'s.

use kurir_runtime::metrics::{Buckets, RecorderError};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::PrometheusHandle;
use tonic::Code;

use crate::error::AuthFailure;
use crate::method::Method;

/// `{method,code}`: finished gRPC calls, by gRPC code name.
pub const REQUESTS: &str = "kurir_dispatcher_requests_total";
/// `{method}`: seconds from the call's arrival to its reply (stream set-up for
/// WatchReceipts).
pub const REQUEST_DURATION: &str = "kurir_dispatcher_request_duration_seconds";
/// Envelopes handed to the bus (node, topic and broadcast subjects).
pub const PUBLISHED: &str = "kurir_dispatcher_published_total";
/// Inbox entries written, one per recipient of a stored notification.
pub const STORED: &str = "kurir_dispatcher_stored_total";
/// `{stage}`: stored notifications their Send could not route live (lookup or publish
/// failed); they are in the inboxes and go to the reroute task.
pub const ROUTE_FAILURES: &str = "kurir_dispatcher_route_failures_total";
/// `{outcome}`: what became of stored notifications handed to the reroute task.
pub const REROUTES: &str = "kurir_dispatcher_reroutes_total";
/// Outcomes of [`REROUTES`].
pub const REROUTE_OUTCOMES: [&str; 4] = ["routed", "expired", "given_up", "dropped"];
/// `{reason}`: calls refused for a missing or invalid API key.
pub const AUTH_FAILURES: &str = "kurir_dispatcher_auth_failures_total";
/// Open WatchReceipts streams.
pub const WATCHERS: &str = "kurir_dispatcher_receipt_watchers";
/// WatchReceipts streams ended because their reader fell behind.
pub const WATCHERS_LAGGED: &str = "kurir_dispatcher_receipt_watchers_lagged_total";
/// 1 while `/readyz` answers 200.
pub const READY: &str = "kurir_dispatcher_ready";
/// `{check}`: readiness probes that failed.
pub const READINESS_FAILURES: &str = "kurir_dispatcher_readiness_failures_total";

/// Counter of unacked inbox entries pushed out by the inbox cap (each reported as a
/// `DROPPED` receipt).
pub const INBOX_DROPPED: &str = "kurir_inbox_dropped_total";
/// Counter of due items handled by this dispatcher's due-worker, by `kind`
/// (`scheduled`, `fallback`, `expiry`) and `outcome` (`done`, `retried`, `dropped`).
pub const DUE_ITEMS: &str = "kurir_dispatcher_due_items_total";
pub const DUE_KINDS: [&str; 3] = ["scheduled", "fallback", "expiry"];
pub const DUE_OUTCOMES: [&str; 3] = ["done", "retried", "dropped"];
pub const ROUTE_STAGES: [&str; 2] = ["lookup", "publish"];
pub const READINESS_CHECKS: [&str; 2] = ["bus", "presence"];

/// Codes registered at zero for every method, so error-rate queries have data from
/// start-up.
const REGISTERED_CODES: [Code; 9] = [
    Code::Ok,
    Code::InvalidArgument,
    Code::NotFound,
    Code::Unauthenticated,
    Code::Aborted,
    Code::ResourceExhausted,
    Code::DeadlineExceeded,
    Code::Unavailable,
    Code::Internal,
];

/// Request-duration buckets (seconds): a Send is a few Redis and NATS round trips, so
/// resolution sits between 0.5 ms and 1 s, with a tail up to the default 10 s timeout.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The dispatcher's histograms and their buckets. A process that embeds a dispatcher
/// beside other servers installs the recorder itself with these among the others'.
pub const BUCKETS: &[Buckets] = &[
    Buckets {
        metric: REQUEST_DURATION,
        bounds: DURATION_BUCKETS,
    },
    Buckets {
        metric: kurir_push::telemetry::DURATION_SECONDS,
        bounds: kurir_push::telemetry::DURATION_BUCKETS,
    },
];

/// The process-wide Prometheus recorder with [`BUCKETS`], installed on first call; later
/// calls (tests starting several dispatchers) get the same handle.
///
/// # Errors
/// Another recorder was installed first.
pub fn install_recorder() -> Result<PrometheusHandle, RecorderError> {
    kurir_runtime::metrics::install(BUCKETS)
}

/// Describe every dispatcher metric and register its series at zero. Idempotent.
pub fn describe() {
    describe_counter!(REQUESTS, "Finished gRPC calls, by method and gRPC code");
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "gRPC call duration, by method (stream set-up for WatchReceipts)"
    );
    describe_counter!(PUBLISHED, "Envelopes published to the bus");
    describe_counter!(STORED, "Inbox entries written, one per recipient");
    describe_counter!(
        ROUTE_FAILURES,
        "Stored notifications not routed live by their Send, by stage"
    );
    describe_counter!(
        REROUTES,
        "Stored notifications routed again in the background, by outcome"
    );
    describe_counter!(
        AUTH_FAILURES,
        "Calls refused for a missing or invalid API key"
    );
    describe_gauge!(WATCHERS, "Open WatchReceipts streams");
    describe_counter!(
        WATCHERS_LAGGED,
        "WatchReceipts streams ended because the reader fell behind"
    );
    describe_gauge!(READY, "1 while /readyz answers 200");
    describe_counter!(READINESS_FAILURES, "Failed readiness checks, by check");

    for method in Method::ALL {
        for code in REGISTERED_CODES {
            counter!(REQUESTS, "method" => method.as_str(), "code" => code_label(code)).absolute(0);
        }
        // Registering the handle makes the (empty) histogram render from start-up.
        let _ = metrics::histogram!(REQUEST_DURATION, "method" => method.as_str());
    }
    counter!(PUBLISHED).absolute(0);
    counter!(STORED).absolute(0);
    counter!(WATCHERS_LAGGED).absolute(0);
    for stage in ROUTE_STAGES {
        counter!(ROUTE_FAILURES, "stage" => stage).absolute(0);
    }
    for outcome in REROUTE_OUTCOMES {
        counter!(REROUTES, "outcome" => outcome).absolute(0);
    }
    for reason in AuthFailure::LABELS {
        counter!(AUTH_FAILURES, "reason" => reason).absolute(0);
    }
    for check in READINESS_CHECKS {
        counter!(READINESS_FAILURES, "check" => check).absolute(0);
    }
    describe_counter!(
        INBOX_DROPPED,
        "Unacked inbox entries pushed out by KURIR_INBOX_CAPACITY (DROPPED receipts)"
    );
    counter!(INBOX_DROPPED).absolute(0);
    describe_counter!(
        DUE_ITEMS,
        "Due items (scheduled sends, push fallbacks) handled, by kind and outcome"
    );
    for kind in DUE_KINDS {
        for outcome in DUE_OUTCOMES {
            counter!(DUE_ITEMS, "kind" => kind, "outcome" => outcome).absolute(0);
        }
    }
    describe_counter!(
        kurir_push::telemetry::SENT_TOTAL,
        "Pushes to a push service, by provider and outcome (sent, gone, retryable, failed)"
    );
    describe_histogram!(
        kurir_push::telemetry::DURATION_SECONDS,
        Unit::Seconds,
        "Duration of one request to a push service, by provider"
    );
    for provider in ["webpush", "fcm", "apns"] {
        for outcome in ["sent", "gone", "retryable", "failed"] {
            counter!(kurir_push::telemetry::SENT_TOTAL, "provider" => provider, "outcome" => outcome)
                .absolute(0);
        }
    }
    gauge!(WATCHERS).set(0.0);
    gauge!(READY).set(0.0);
    kurir_backends::telemetry::describe();
    // Created once per process and described on creation.
    kurir_runtime::metrics::process_collector();
}

/// A call refused by [`crate::api::auth`].
pub fn auth_failure(failure: AuthFailure) {
    counter!(AUTH_FAILURES, "reason" => failure.label()).increment(1);
}

/// One finished call.
pub fn request_done(method: Method, code: Code, seconds: Option<f64>) {
    counter!(REQUESTS, "method" => method.as_str(), "code" => code_label(code)).increment(1);
    if let Some(seconds) = seconds {
        metrics::histogram!(REQUEST_DURATION, "method" => method.as_str()).record(seconds);
    }
}

/// The gRPC code name, as the `code` label (`OK`, `InvalidArgument`, …).
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}
