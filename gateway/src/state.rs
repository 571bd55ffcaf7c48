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

/// A node's shared state over in-memory backends, for unit tests; the second value keeps
/// the topic and receipt channels open for as long as it is held.
#[cfg(test)]
pub fn for_test() -> (Arc<AppState>, Box<dyn std::any::Any>) {
    let ns = kurir_backends::Namespace::random_for_test();
    let (topics, topics_rx) = Topics::channel();
    let node = NodeId::generate();
    let (receipts, receipts_rx) = Receipts::channel(8);
    let state = Arc::new(AppState {
        config: Arc::new(Config::for_test(ns.clone())),
        lease: CurrentLease::new(node.clone()),
        node,
        backends: Backends::memory(ns),
        hub: Hub::new(),
        topics,
        receipts,
        metrics: telemetry::Hot::resolve(),
        verifier: Arc::new(Verifier::hs256(b"x")),
        read_limits: Default::default(),
        readiness: Default::default(),
        tracker: Default::default(),
        streams: Default::default(),
        webpush: Default::default(),
    });
    (state, Box::new((topics_rx, receipts_rx)))
}
