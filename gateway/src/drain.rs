//! The SIGTERM sequence: `/readyz` turns 503 and new upgrades are refused, this node's
//! presence is removed, then sockets are closed with 1012 spread evenly over
//! `KURIR_DRAIN_SECONDS` (so clients come back through the load balancer without a
//! thundering herd), and sessions get a grace period to finish.

use std::time::Duration;

use kurir_backends::{ConnId, UserId};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::protocol::CloseReason;
use crate::state::AppState;

/// Tick of the close schedule.
const STEP: Duration = Duration::from_millis(50);
/// Extra time sessions get after the last close request.
const GRACE: Duration = Duration::from_secs(5);

pub async fn run(state: &AppState, sessions: &TaskTracker) {
    state.readiness.set_draining();
    let conns = state.hub.connections();
    info!(connections = conns.len(), "draining");
    let entries: Vec<(UserId, ConnId)> = conns.iter().map(|c| (c.user.clone(), c.id)).collect();
    if let Err(e) = state
        .backends
        .presence
        .remove_node(&state.lease.get(), &entries)
        .await
    {
        warn!(error = %e, "presence removal failed; entries expire with the liveness TTL");
    }
    // At most one batch per STEP; batches evenly spaced so the last close lands near
    // the end of the window however few connections there are.
    let drain = state.config.drain();
    let steps = (drain.as_millis() / STEP.as_millis()).max(1) as usize;
    let per_step = conns.len().div_ceil(steps).max(1);
    let batches = conns.len().div_ceil(per_step).max(1) as u32;
    let mut tick = tokio::time::interval((drain / batches).max(Duration::from_millis(1)));
    for chunk in conns.chunks(per_step) {
        tick.tick().await;
        for c in chunk {
            c.mailbox.close(CloseReason::Draining);
        }
    }
    sessions.close();
    if tokio::time::timeout(GRACE, sessions.wait()).await.is_err() {
        warn!(
            left = sessions.len(),
            "sessions still open after the grace period"
        );
    }
    if let Err(e) = state.backends.bus.flush().await {
        warn!(error = %e, "bus flush failed");
    }
}
