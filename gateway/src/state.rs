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

/// Bytes tungstenite reserves to read a socket (allocated per connection up front; it
/// grows for a larger frame). Client frames are small (acks, subscribes): 512 is plenty.
pub const READ_BUFFER: usize = 512;

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
