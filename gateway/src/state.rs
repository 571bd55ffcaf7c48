//! The handles a gateway's tasks share. Handles only: the logic lives in the flow modules.

use std::sync::Arc;

use kurir_backends::{Backends, NodeId};
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::hub::Hub;
use crate::liveness::Readiness;
use crate::receipts::Receipts;
use crate::relay::Topics;
use crate::ws::auth::Verifier;

/// Bytes tungstenite reads from a socket at once (it keeps this buffer per connection).
pub const READ_BUFFER: usize = 4096;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub node: NodeId,
    pub backends: Backends,
    pub hub: Hub,
    pub topics: Topics,
    pub receipts: Receipts,
    pub verifier: Arc<Verifier>,
    pub readiness: Readiness,
    /// Sessions, so that shutdown can wait for them (axum does not track upgraded sockets).
    pub tracker: TaskTracker,
}
