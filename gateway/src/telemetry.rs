//! Metric names, their descriptions, the series registered from start-up and the
//! buckets of the gateway's histograms. The recorder itself, process metrics and logs
//! are `kurir_runtime`'s. A leaf: the callers pass in what it counts.

use kurir_runtime::metrics::Buckets;
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, Counter, Histogram, Unit,
};

pub const CONNECTIONS: &str = "kurir_gateway_connections";
pub const OPENED: &str = "kurir_gateway_connections_opened_total";
pub const CLOSED: &str = "kurir_gateway_connections_closed_total";
pub const DELIVERIES: &str = "kurir_gateway_deliveries_total";
pub const DROPPED: &str = "kurir_gateway_dropped_total";
pub const ACKS: &str = "kurir_gateway_acks_total";
pub const REPLAYED: &str = "kurir_gateway_replayed_total";
pub const AUTH_FAILURES: &str = "kurir_gateway_auth_failures_total";
pub const READY: &str = "kurir_gateway_ready";
pub const READINESS_FAILURES: &str = "kurir_gateway_readiness_failures_total";
pub const TOPIC_SUBSCRIPTIONS: &str = "kurir_gateway_topic_subscriptions";
pub const DELIVERY_LATENCY: &str = "kurir_delivery_latency_seconds";
pub const BUS_MESSAGES: &str = "kurir_gateway_bus_messages_total";
pub const JWKS_REFRESHES: &str = "kurir_gateway_jwks_refreshes_total";
pub const JWKS_KEYS: &str = "kurir_gateway_jwks_keys";
/// Open connections and deliveries, by `transport` (`websocket`, `sse`, `mqtt`); the
/// unlabelled series above count every transport.
pub const TRANSPORT_CONNECTIONS: &str = "kurir_gateway_transport_connections";
pub const TRANSPORT_DELIVERIES: &str = "kurir_gateway_transport_deliveries_total";
/// The transports' labels, in `client::Transport` order.
pub const TRANSPORTS: [&str; 3] = ["websocket", "sse", "mqtt"];

/// The accept loop's handshake bound (`ws::accept`).
pub const HANDSHAKES_PENDING: &str = "kurir_gateway_handshakes_pending";
pub const HANDSHAKES_REFUSED: &str = "kurir_gateway_handshakes_refused_total";
/// `at_capacity`: over `KURIR_MAX_PENDING_HANDSHAKES`; `timeout`: past
/// `KURIR_HANDSHAKE_TIMEOUT_MS`; `tls_error`: the TLS handshake failed.
pub const HANDSHAKE_REFUSALS: [&str; 3] = ["at_capacity", "timeout", "tls_error"];
pub const ADMISSIONS_REFUSED: &str = "kurir_gateway_admissions_refused_total";

pub const BUS_KINDS: [&str; 5] = ["delivery", "disconnect", "probe", "topic", "broadcast"];

pub const DROP_REASONS: [&str; 4] = ["slow_consumer", "expired", "duplicate", "receipts_full"];
pub const AUTH_REASONS: [&str; 4] = ["missing", "invalid", "expired", "origin"];
pub const READINESS_CHECKS: [&str; 2] = ["bus_probe", "presence"];
pub const ADMISSION_REASONS: [&str; 2] = ["node_full", "user_full"];

/// Latency buckets (seconds): sub-millisecond resolution for the hot path, up to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The buckets of every gateway histogram, for `kurir_runtime::metrics::install` (a
/// process embedding the gateway adds them to its own).
pub const HISTOGRAMS: &[Buckets] = &[Buckets {
    metric: DELIVERY_LATENCY,
    bounds: LATENCY_BUCKETS,
}];

/// Describe every gateway metric and register its series at zero; `close_reasons` are
/// the `reason` labels of [`CLOSED`].
pub fn describe(close_reasons: &[&'static str]) {
    describe_gauge!(CONNECTIONS, "Open client connections (every transport)");
    describe_counter!(OPENED, "Client connections accepted (every transport)");
    describe_counter!(CLOSED, "Client connections closed, by reason");
    describe_counter!(DELIVERIES, "Notifications written to clients");
    describe_gauge!(
        TRANSPORT_CONNECTIONS,
        "Open client connections, by transport"
    );
    describe_counter!(
        TRANSPORT_DELIVERIES,
        "Notifications written to clients, by transport"
    );
    describe_counter!(DROPPED, "Notifications not written, by reason");
    describe_counter!(ACKS, "Acks received from clients");
    describe_counter!(REPLAYED, "Stored notifications replayed from inboxes");
    describe_counter!(AUTH_FAILURES, "Upgrades refused, by reason");
    describe_counter!(
        ADMISSIONS_REFUSED,
        "Upgrades refused at a connection cap (node_full: 503, user_full: 429)"
    );
    describe_gauge!(
        READY,
        "1 while the node can deliver (probe and presence healthy)"
    );
    describe_counter!(READINESS_FAILURES, "Readiness checks that failed, by check");
    describe_gauge!(
        TOPIC_SUBSCRIPTIONS,
        "Topic subjects this node holds on the bus"
    );
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "From the notification's created_at to written to a socket"
    );
    gauge!(CONNECTIONS).set(0.0);
    gauge!(READY).set(0.0);
    gauge!(TOPIC_SUBSCRIPTIONS).set(0.0);
    counter!(OPENED).absolute(0);
    counter!(DELIVERIES).absolute(0);
    counter!(ACKS).absolute(0);
    counter!(REPLAYED).absolute(0);
    for t in TRANSPORTS {
        gauge!(TRANSPORT_CONNECTIONS, "transport" => t).set(0.0);
        counter!(TRANSPORT_DELIVERIES, "transport" => t).absolute(0);
    }
    for &r in close_reasons {
        counter!(CLOSED, "reason" => r).absolute(0);
    }
    for r in DROP_REASONS {
        counter!(DROPPED, "reason" => r).absolute(0);
    }
    for r in AUTH_REASONS {
        counter!(AUTH_FAILURES, "reason" => r).absolute(0);
    }
    for k in BUS_KINDS {
        counter!(BUS_MESSAGES, "kind" => k).absolute(0);
    }
    for c in READINESS_CHECKS {
        counter!(READINESS_FAILURES, "check" => c).absolute(0);
    }
    describe_counter!(
        JWKS_REFRESHES,
        "JWKS fetches, by outcome (ok, failed: the keys held are kept)"
    );
    describe_gauge!(JWKS_KEYS, "Signing keys held from the JWKS");
    for o in ["ok", "failed"] {
        counter!(JWKS_REFRESHES, "outcome" => o).absolute(0);
    }
    gauge!(JWKS_KEYS).set(0.0);
    for r in ADMISSION_REASONS {
        counter!(ADMISSIONS_REFUSED, "reason" => r).absolute(0);
    }
    // Registering the handle makes the (empty) histogram render from start-up.
    let _ = metrics::histogram!(DELIVERY_LATENCY);
    kurir_backends::telemetry::describe();
    // Described from start-up, not from the first scrape.
    let _ = kurir_runtime::metrics::process_collector();
}

/// Describe the accept loop's handshake metrics and register their series at zero.
pub fn describe_handshakes() {
    describe_gauge!(
        HANDSHAKES_PENDING,
        "Connections in their TLS handshake or waiting for their first request head"
    );
    describe_counter!(
        HANDSHAKES_REFUSED,
        "Connections closed before their first request, by reason"
    );
    gauge!(HANDSHAKES_PENDING).set(0.0);
    for r in HANDSHAKE_REFUSALS {
        counter!(HANDSHAKES_REFUSED, "reason" => r).absolute(0);
    }
}

pub fn handshake_refused(reason: &'static str) {
    counter!(HANDSHAKES_REFUSED, "reason" => reason).increment(1);
}

/// Handles of the series written for every delivery, resolved once: a by-name lookup
/// hashes the key and takes a registry lock on every call.
#[derive(Clone)]
pub struct Hot {
    pub deliveries: Counter,
    pub replayed: Counter,
    pub latency: Histogram,
    /// Deliveries by transport, in [`TRANSPORTS`] order.
    transports: [Counter; 3],
}

impl Hot {
    /// Resolve against the installed recorder (a no-op one when none is).
    pub fn resolve() -> Self {
        Self {
            deliveries: counter!(DELIVERIES),
            replayed: counter!(REPLAYED),
            latency: metrics::histogram!(DELIVERY_LATENCY),
            transports: TRANSPORTS.map(|t| counter!(TRANSPORT_DELIVERIES, "transport" => t)),
        }
    }

    /// Deliveries over the transport at `index` in [`TRANSPORTS`].
    pub fn by_transport(&self, index: usize) -> &Counter {
        &self.transports[index]
    }
}

/// A client connected over `transport`.
pub fn connection_opened(transport: &'static str) {
    gauge!(CONNECTIONS).increment(1.0);
    counter!(OPENED).increment(1);
    gauge!(TRANSPORT_CONNECTIONS, "transport" => transport).increment(1.0);
}

/// A client's connection over `transport` ended for `reason`.
pub fn connection_closed(transport: &'static str, reason: &'static str) {
    gauge!(CONNECTIONS).decrement(1.0);
    counter!(CLOSED, "reason" => reason).increment(1);
    gauge!(TRANSPORT_CONNECTIONS, "transport" => transport).decrement(1.0);
}

/// An upgrade refused at a connection cap.
pub fn admission_refused(reason: &'static str) {
    counter!(ADMISSIONS_REFUSED, "reason" => reason).increment(1);
}

pub fn dropped(reason: &'static str) {
    counter!(DROPPED, "reason" => reason).increment(1);
}

pub fn bus_message(kind: &'static str) {
    counter!(BUS_MESSAGES, "kind" => kind).increment(1);
}

pub fn auth_failure(reason: &'static str) {
    counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

/// A JWKS fetch ended; `keys` are the keys held after it.
pub fn jwks_refresh(ok: bool, keys: usize) {
    counter!(JWKS_REFRESHES, "outcome" => if ok { "ok" } else { "failed" }).increment(1);
    #[allow(clippy::cast_precision_loss)]
    gauge!(JWKS_KEYS).set(keys as f64);
}
