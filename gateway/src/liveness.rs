//! ④ Presence and node-liveness upkeep, and the checks behind readiness.
//!
//! A node is ready only while it can really deliver: it publishes a probe to its own
//! node subject every few seconds and must see it come back through the bus, and its
//! liveness beat to the presence store must succeed. A dead subscription or an
//! unreachable Redis turns `/readyz` unready (and is counted) instead of staying green.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kurir_backends::presence::{Beat, Lease};
use kurir_backends::{Backends, NodeId, UserId};
use kurir_proto::internal::v1::{envelope::Kind, Envelope, Probe};
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::hub::Hub;
use crate::readiness::{Check, Readiness};

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

/// The intervals of the liveness task.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// `KURIR_LIVENESS_TTL_MS`: the mark is beaten every third of it.
    pub liveness_ttl: Duration,
    /// `KURIR_PROBE_INTERVAL_MS`.
    pub probe_interval: Duration,
    /// `KURIR_PROBE_TIMEOUT_MS`: a probe not back within it turns the node unready.
    pub probe_timeout: Duration,
    /// `KURIR_PRESENCE_TTL_SECONDS`: entries are refreshed every third of it.
    pub presence_ttl: Duration,
}

/// What the liveness task works on: this node's connections, its lease in the presence
/// store, the bus to probe through and the readiness it reports to.
#[derive(Clone)]
pub struct Liveness {
    pub node: NodeId,
    pub lease: CurrentLease,
    pub backends: Backends,
    pub hub: Hub,
    pub readiness: Readiness,
    pub timers: Timers,
}

/// Write presence for every local connection under `lease`. `true` when all writes
/// succeeded.
async fn reregister(state: &Liveness, lease: &Lease) -> bool {
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
async fn recover(state: &Liveness, ttl: Duration) -> bool {
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

/// Beat, refresh presence and probe the bus until `stop`. `first_beat` fires after the
/// first beat that succeeded: connections accepted before it could be pruned as a dead
/// node's by a lookup in between.
pub async fn run(state: Liveness, stop: CancellationToken, first_beat: oneshot::Sender<()>) {
    let cfg = state.timers;
    let started = Instant::now();
    let mut beat = tokio::time::interval(cfg.liveness_ttl / 3);
    let mut probe = tokio::time::interval(cfg.probe_interval);
    let mut refresh = tokio::time::interval(cfg.presence_ttl / 3);
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
                let ok = match state.backends.presence.beat(&lease, cfg.liveness_ttl).await {
                    Err(e) => {
                        warn!(error = %e, "liveness beat failed");
                        false
                    }
                    Ok(Beat::Lapsed) if marked || recovering => {
                        warn!(epoch = %lease.epoch, "liveness mark had lapsed");
                        recovering = !recover(&state, cfg.liveness_ttl).await;
                        !recovering
                    }
                    Ok(_) => {
                        if recovering {
                            recovering = !recover(&state, cfg.liveness_ttl).await;
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
                state.readiness.set(Check::Presence, ok);
            }
            _ = probe.tick() => {
                let seq = state.readiness.next_probe();
                let env = Envelope { kind: Some(Kind::Probe(Probe { seq })) };
                let _ = state.backends.bus.publish(subject.clone(), Bytes::from(env.encode_to_vec())).await;
                let back = state.readiness.probe_back();
                let fresh = back.is_some_and(|t| t.elapsed() <= cfg.probe_timeout);
                // Before the first probe can return, only a grace period counts as fresh.
                let starting = back.is_none() && started.elapsed() <= cfg.probe_timeout;
                if !starting {
                    state.readiness.set(Check::BusProbe, fresh);
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
