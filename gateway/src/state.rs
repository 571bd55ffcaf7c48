//! The handles a gateway's tasks share. Handles only: the logic lives in the flow modules.

use std::sync::Arc;

use kurir_backends::{Backends, NodeId};
use kurir_wire::ReadLimits;
use tokio_util::task::TaskTracker;

use crate::auth::Verifier;
use crate::config::Config;
use crate::hub::streams::Streams;
use crate::hub::Hub;
use crate::liveness::CurrentLease;
use crate::readiness::Readiness;
use crate::receipts::Receipts;
use crate::relay::Topics;
use crate::telemetry;
use crate::webpush::WebPushEdge;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub node: NodeId,
    /// This incarnation of `node` in the presence store (changes after a lapse).
    pub lease: CurrentLease,
    pub backends: Backends,
    pub hub: Hub,
    pub topics: Topics,
    pub receipts: Receipts,
    /// Series written per delivery, resolved once.
    pub metrics: telemetry::Hot,
    pub verifier: Arc<Verifier>,
    /// Read limits of every socket, with the node's budget for partial messages.
    pub read_limits: Arc<ReadLimits>,
    pub readiness: Readiness,
    /// Sessions, so that shutdown can wait for them.
    pub tracker: TaskTracker,
    /// This node's SSE streams, where client requests over HTTP find them.
    pub streams: Streams,
    /// Where browsers' Web Push subscriptions may point, and the VAPID key they use.
    pub webpush: Arc<WebPushEdge>,
}
