//! Metrics the seams record themselves, whichever binary they run in.

/// `kurir_backend_errors_total{backend,op}`: failed calls to Redis or NATS, and messages a
/// slow bus subscriber lost (`op="slow_consumer"`).
pub const BACKEND_ERRORS: &str = "kurir_backend_errors_total";

/// Backends and operations, so every series exists from start-up.
pub const SERIES: &[(&str, &str)] = &[
    ("redis", "presence"),
    ("redis", "inbox"),
    ("redis", "idempotency"),
    ("nats", "publish"),
    ("nats", "subscribe"),
    ("nats", "flush"),
    ("nats", "slow_consumer"),
    ("memory", "slow_consumer"),
];

pub fn describe() {
    metrics::describe_counter!(
        BACKEND_ERRORS,
        "Failed Redis/NATS calls and messages lost by slow bus subscribers"
    );
    for (backend, op) in SERIES {
        metrics::counter!(BACKEND_ERRORS, "backend" => *backend, "op" => *op).absolute(0);
    }
}

pub(crate) fn backend_error(backend: &'static str, op: &'static str) {
    metrics::counter!(BACKEND_ERRORS, "backend" => backend, "op" => op).increment(1);
}
