//! What the admin listener (`KURIR_METRICS_LISTEN`, served by
//! [`kurir_runtime::admin`]: `/metrics`, `/healthz`, `/readyz`) reports as the
//! dispatcher's readiness, and the background probe that keeps it honest.
//!
//! `/readyz` is 200 only while the dispatcher can really serve: the bus client says it is
//! connected and a cheap Redis round trip (a presence lookup of a sentinel user, every
//! `KURIR_READINESS_INTERVAL_MS`) succeeded within the last three intervals. Otherwise,
//! and while draining, it is 503 with the failing checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kurir_backends::{Backends, UserId};
use metrics::{counter, gauge};
use serde::Serialize;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::telemetry;

/// A presence probe older than this many intervals no longer counts.
const STALE_INTERVALS: u32 = 3;

/// Readiness state, shared by the probe and `/readyz`. Cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

struct Inner {
    backends: Backends,
    interval: Duration,
    last_presence_ok: Mutex<Option<Instant>>,
    draining: AtomicBool,
}

/// The `/readyz` body.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    pub ready: bool,
    pub draining: bool,
    pub bus: bool,
    pub presence: bool,
    /// Names of the checks that fail.
    pub failing: Vec<&'static str>,
}

impl Readiness {
    pub fn new(backends: Backends, interval: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                backends,
                interval,
                last_presence_ok: Mutex::new(None),
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// The checks as they stand now.
    pub fn check(&self) -> Report {
        let i = &self.inner;
        let draining = i.draining.load(Ordering::Acquire);
        let bus = i.backends.bus.is_connected();
        let fresh = i.interval * STALE_INTERVALS;
        let presence = i
            .last_presence_ok
            .lock()
            .map(|t| t.is_some_and(|t| t.elapsed() <= fresh))
            .unwrap_or(false);
        let failing = [
            ("draining", draining),
            ("bus", !bus),
            ("presence", !presence),
        ]
        .into_iter()
        .filter_map(|(name, failed)| failed.then_some(name))
        .collect::<Vec<_>>();
        Report {
            ready: failing.is_empty(),
            draining,
            bus,
            presence,
            failing,
        }
    }

    /// From now on `/readyz` answers 503 (shutdown).
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
        gauge!(telemetry::READY).set(0.0);
    }

    fn presence_probed(&self, ok: bool) {
        if ok {
            if let Ok(mut last) = self.inner.last_presence_ok.lock() {
                *last = Some(Instant::now());
            }
        }
    }
}

impl kurir_runtime::admin::Readiness for Readiness {
    type Report = Report;

    fn report(&self) -> (bool, Report) {
        let report = self.check();
        (report.ready, report)
    }
}

/// Probe Redis (and look at the bus) every interval until `stop`.
pub async fn probe(readiness: Readiness, stop: CancellationToken) {
    let Ok(sentinel) = UserId::parse("kurir-readiness-probe") else {
        return;
    };
    let interval = readiness.inner.interval;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        let presence = &readiness.inner.backends.presence;
        let lookup =
            tokio::time::timeout(interval, presence.lookup(std::slice::from_ref(&sentinel)));
        let ok = tokio::select! {
            r = lookup => matches!(r, Ok(Ok(_))),
            () = stop.cancelled() => break,
        };
        readiness.presence_probed(ok);
        if !ok {
            counter!(telemetry::READINESS_FAILURES, "check" => "presence").increment(1);
            debug!("readiness: presence probe failed");
        }
        let report = readiness.check();
        if !report.bus {
            counter!(telemetry::READINESS_FAILURES, "check" => "bus").increment(1);
        }
        gauge!(telemetry::READY).set(if report.ready { 1.0 } else { 0.0 });
    }
}
