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
use kurir_backends::presence::{Beat, Lease};
use kurir_backends::{NodeId, UserId};
use kurir_proto::internal::v1::{envelope::Kind, Envelope, Probe};
use parking_lot::Mutex;
use prost::Message;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::state::AppState;
use crate::telemetry;

/// Presence writes in flight at once while re-registering after a lapse.
const REREGISTER_CONCURRENCY: usize = 64;

/// This node's current incarnation in the presence store. It changes when the node
/// learns that its liveness mark lapsed: entries written before may have been pruned
/// by lookups (or Redis restarted empty), so the node starts a new epoch and writes all
/// its entries again under it, and nothing pruned under the old one can touch them.
/// Cheap to clone.
#[derive(Clone)]
pub struct CurrentLease(Arc<Mutex<Lease>>);

impl CurrentLease {
    pub fn new(node: NodeId) -> Self {
        Self(Arc::new(Mutex::new(Lease::new(node))))
    }

    pub fn get(&self) -> Lease {
        self.0.lock().clone()
    }

    /// Start a new epoch; returns it.
    fn rotate(&self) -> Lease {
        let mut lease = self.0.lock();
        *lease = Lease::new(lease.node.clone());
        lease.clone()
    }
}

/// Write presence for every local connection under `lease`. `true` when all writes
/// succeeded.
async fn reregister(state: &AppState, lease: &Lease) -> bool {
    use futures::StreamExt;
    let conns = state.hub.connections();
    let total = conns.len();
    let failed = futures::stream::iter(conns)
        .map(|c| {
            let presence = state.backends.presence.clone();
            async move { presence.add(lease, &c.user, c.id).await.is_err() }
        })
        .buffer_unordered(REREGISTER_CONCURRENCY)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    info!(
        connections = total,
        failed,
        epoch = %lease.epoch,
        "presence written again under a new epoch"
    );
    failed == 0
}

/// The liveness mark lapsed (or Redis lost it): new epoch, mark, every entry again,
/// then every connection re-reads its inbox, since stored notifications sent while its
/// presence did not count were routed nowhere. `true` when all of it was written.
async fn recover(state: &AppState, ttl: std::time::Duration) -> bool {
    let lease = state.lease.rotate();
    if let Err(e) = state.backends.presence.beat(&lease, ttl).await {
        warn!(error = %e, "liveness beat failed");
        return false;
    }
    let written = reregister(state, &lease).await;
    let n = state.hub.resync_all();
    info!(connections = n, "liveness lapsed; resynchronising inboxes");
    written
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

    /// The relay saw probe `seq` on the node subject. Only one of the last two probes
    /// sent counts: a probe held up for longer (a queue draining after an outage) says
    /// nothing about the subscription now.
    pub fn probe_returned(&self, seq: u64) {
        let latest = self.inner.probe_seq.load(Ordering::Acquire);
        if seq + 1 >= latest && seq <= latest {
            *self.inner.probe_back.lock() = Some(Instant::now());
        }
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

/// Beat, refresh presence and probe the bus until `stop`. `first_beat` fires after the
/// first beat that succeeded: connections accepted before it could be pruned as a dead
/// node's by a lookup in between.
pub async fn run(state: AppState, stop: CancellationToken, first_beat: oneshot::Sender<()>) {
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
    let mut first_beat = Some(first_beat);
    // Until the first beat the mark is expected to be missing: that is not a lapse.
    let mut marked = false;
    // A recovery that could not write everything is tried again on the next beat.
    let mut recovering = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = beat.tick() => {
                let lease = state.lease.get();
                let ok = match state.backends.presence.beat(&lease, cfg.liveness_ttl()).await {
                    Err(e) => {
                        warn!(error = %e, "liveness beat failed");
                        false
                    }
                    Ok(Beat::Lapsed) if marked || recovering => {
                        warn!(epoch = %lease.epoch, "liveness mark had lapsed");
                        recovering = !recover(&state, cfg.liveness_ttl()).await;
                        !recovering
                    }
                    Ok(_) => {
                        if recovering {
                            recovering = !recover(&state, cfg.liveness_ttl()).await;
                        }
                        !recovering
                    }
                };
                if ok {
                    marked = true;
                    if let Some(tx) = first_beat.take() {
                        let _ = tx.send(());
                    }
                }
                state.readiness.set("presence", ok);
            }
            _ = probe.tick() => {
                let seq = state.readiness.inner.probe_seq.fetch_add(1, Ordering::AcqRel) + 1;
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
