//! Whether this node can deliver, as `/readyz` reports it. A handle only: the checks that
//! set it run in [`crate::liveness`] (bus probe, presence beat) and [`crate::auth`] (the
//! JWKS keys); drain sets it draining.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::telemetry;

/// The readiness checks that can fail, by their `check` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The probe published to this node's subject came back through the bus.
    BusProbe,
    /// The liveness beat to the presence store succeeded.
    Presence,
}

impl Check {
    /// `check` label of `kurir_gateway_readiness_failures_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::BusProbe => "bus_probe",
            Self::Presence => "presence",
        }
    }
}

/// Shared readiness state. Cheap to clone.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    draining: AtomicBool,
    bus_ok: AtomicBool,
    presence_ok: AtomicBool,
    probe_seq: AtomicU64,
    /// When a probe last came back.
    probe_back: Mutex<Option<Instant>>,
    /// Set while a JWKS is configured but no key was ever loaded from it.
    keys_missing: AtomicBool,
}

/// The body of `/readyz`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub ready: bool,
    pub draining: bool,
    pub bus: bool,
    pub presence: bool,
    pub keys: bool,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        let i = &self.inner;
        !i.draining.load(Ordering::Acquire)
            && i.bus_ok.load(Ordering::Acquire)
            && i.presence_ok.load(Ordering::Acquire)
            && !i.keys_missing.load(Ordering::Acquire)
    }

    /// Whether client tokens can be verified (false only before a configured JWKS was
    /// first loaded).
    pub fn set_keys_loaded(&self, loaded: bool) {
        self.inner.keys_missing.store(!loaded, Ordering::Release);
        self.publish_gauge();
    }

    pub fn report(&self) -> Report {
        let i = &self.inner;
        Report {
            ready: self.is_ready(),
            draining: i.draining.load(Ordering::Acquire),
            bus: i.bus_ok.load(Ordering::Acquire),
            presence: i.presence_ok.load(Ordering::Acquire),
            keys: !i.keys_missing.load(Ordering::Acquire),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
        self.publish_gauge();
    }

    /// The sequence number of the next probe to publish.
    pub fn next_probe(&self) -> u64 {
        self.inner.probe_seq.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The relay saw probe `seq` on the node subject. Only one of the last two probes
    /// sent counts: a probe held up for longer (a queue draining after an outage) says
    /// nothing about the subscription now.
    pub fn probe_returned(&self, seq: u64) {
        let latest = self.inner.probe_seq.load(Ordering::Acquire);
        if seq + 1 >= latest && seq <= latest {
            *self.inner.probe_back.lock() = Some(Instant::now());
        }
    }

    /// When a probe that counts last came back.
    pub fn probe_back(&self) -> Option<Instant> {
        *self.inner.probe_back.lock()
    }

    /// Record the outcome of `check`; a check that starts failing is counted and logged.
    pub fn set(&self, check: Check, ok: bool) {
        let flag = match check {
            Check::BusProbe => &self.inner.bus_ok,
            Check::Presence => &self.inner.presence_ok,
        };
        let was = flag.swap(ok, Ordering::AcqRel);
        let label = check.label();
        if was && !ok {
            metrics::counter!(telemetry::READINESS_FAILURES, "check" => label).increment(1);
            warn!(check = label, "readiness check failing");
        } else if !was && ok {
            info!(check = label, "readiness check passing");
        }
        self.publish_gauge();
    }

    fn publish_gauge(&self) {
        metrics::gauge!(telemetry::READY).set(if self.is_ready() { 1.0 } else { 0.0 });
    }
}

impl kurir_runtime::admin::Readiness for Readiness {
    type Report = Report;

    fn report(&self) -> (bool, Report) {
        let report = Readiness::report(self);
        (report.ready, report)
    }
}
