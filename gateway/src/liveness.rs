//! ④ Presence and node-liveness upkeep, and readiness.
//!
//! A node is ready only while it can really deliver: it publishes a probe to its own
//! node subject every few seconds and must see it come back through the bus, and its
//! liveness beat to the presence store must succeed. A dead subscription or an
//! unreachable Redis turns `/readyz` unready (and is counted) instead of staying green.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use kurir_backends::UserId;
use kurir_proto::internal::v1::{envelope::Kind, Envelope, Probe};
use parking_lot::Mutex;
use prost::Message;
use serde::Serialize;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::state::AppState;
use crate::telemetry;

/// Presence writes in flight at once while re-registering after an outage.
const REREGISTER_CONCURRENCY: usize = 64;

/// Write presence for every local connection again. `true` when all writes succeeded.
async fn reregister(state: &AppState) -> bool {
    use futures::StreamExt;
    let conns = state.hub.connections();
    let total = conns.len();
    let failed = futures::stream::iter(conns)
        .map(|c| {
            let (presence, node) = (state.backends.presence.clone(), state.node.clone());
            async move { presence.add(&node, &c.user, c.id).await.is_err() }
        })
        .buffer_unordered(REREGISTER_CONCURRENCY)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    info!(
        connections = total,
        failed, "presence re-registered after an outage"
    );
    failed == 0
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
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub ready: bool,
    pub draining: bool,
    pub bus: bool,
    pub presence: bool,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        let i = &self.inner;
        !i.draining.load(Ordering::Acquire)
            && i.bus_ok.load(Ordering::Acquire)
            && i.presence_ok.load(Ordering::Acquire)
    }

    pub fn report(&self) -> Report {
        let i = &self.inner;
        Report {
            ready: self.is_ready(),
            draining: i.draining.load(Ordering::Acquire),
            bus: i.bus_ok.load(Ordering::Acquire),
            presence: i.presence_ok.load(Ordering::Acquire),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
        self.publish_gauge();
    }

    /// The relay saw probe `seq` on the node subject.
    pub fn probe_returned(&self, _seq: u64) {
        *self.inner.probe_back.lock() = Some(Instant::now());
    }

    fn set(&self, check: &'static str, ok: bool) {
        let flag = match check {
            "bus_probe" => &self.inner.bus_ok,
            _ => &self.inner.presence_ok,
        };
        let was = flag.swap(ok, Ordering::AcqRel);
        if was && !ok {
            metrics::counter!(telemetry::READINESS_FAILURES, "check" => check).increment(1);
            warn!(check, "readiness check failing");
        } else if !was && ok {
            info!(check, "readiness check passing");
        }
        self.publish_gauge();
    }

    fn publish_gauge(&self) {
        metrics::gauge!(telemetry::READY).set(if self.is_ready() { 1.0 } else { 0.0 });
    }
}

/// Beat, refresh presence and probe the bus until `stop`.
pub async fn run(state: AppState, stop: CancellationToken) {
    let cfg = state.config.clone();
    let started = Instant::now();
    let mut beat = tokio::time::interval(cfg.liveness_ttl() / 3);
    let mut probe = tokio::time::interval(cfg.probe_interval());
    let mut refresh = tokio::time::interval(cfg.presence_ttl() / 3);
    for t in [&mut beat, &mut probe, &mut refresh] {
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    refresh.reset();
    let subject = state.backends.namespace.node_subject(&state.node);
    let mut lapsed = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = beat.tick() => {
                let ok = state.backends.presence.beat(&state.node, cfg.liveness_ttl()).await;
                if let Err(e) = &ok {
                    warn!(error = %e, "liveness beat failed");
                    lapsed = true;
                } else if lapsed {
                    // Redis was unreachable for a while: it may have restarted empty, or
                    // lookups may have pruned our entries as a dead node's. Write them again.
                    lapsed = !reregister(&state).await;
                }
                state.readiness.set("presence", ok.is_ok());
            }
            _ = probe.tick() => {
                let seq = state.readiness.inner.probe_seq.fetch_add(1, Ordering::Relaxed) + 1;
                let env = Envelope { kind: Some(Kind::Probe(Probe { seq })) };
                let _ = state.backends.bus.publish(subject.clone(), Bytes::from(env.encode_to_vec())).await;
                let back = *state.readiness.inner.probe_back.lock();
                let fresh = back.is_some_and(|t| t.elapsed() <= cfg.probe_timeout());
                // Before the first probe can return, only a grace period counts as fresh.
                let starting = back.is_none() && started.elapsed() <= cfg.probe_timeout();
                if !starting {
                    state.readiness.set("bus_probe", fresh);
                }
            }
            _ = refresh.tick() => {
                let users: HashSet<UserId> = state.hub.connections().into_iter().map(|c| c.user).collect();
                let users: Vec<UserId> = users.into_iter().collect();
                for chunk in users.chunks(1000) {
                    if let Err(e) = state.backends.presence.refresh(chunk).await {
                        warn!(error = %e, "presence refresh failed");
                        break;
                    }
                }
            }
        }
    }
}
