//! The handles a gateway's tasks share. Handles only: the logic lives in the flow modules.

use std::sync::Arc;

use kurir_backends::{Backends, NodeId};
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::hub::Hub;
use crate::liveness::Readiness;
use crate::receipts::Receipts;
use crate::relay::Topics;
use crate::telemetry;
use crate::ws::auth::Verifier;

/// Bytes tungstenite reserves to read a socket (allocated per connection up front; it
/// grows for a larger frame). Client frames are small (acks, subscribes): 512 is plenty.
pub const READ_BUFFER: usize = 512;

/// Bytes of frames tungstenite collects before it writes to the socket: the frames a
/// session drains from its queue in one go go out in one `write` (a fan-out burst or a
/// busy user costs one syscall per batch, not per frame), and the buffer a connection
/// keeps after a burst stays this small. A flush writes whatever is collected.
pub const WRITE_BUFFER: usize = 4096;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub node: NodeId,
    pub backends: Backends,
    pub hub: Hub,
    pub topics: Topics,
    pub receipts: Receipts,
    /// Series written per delivery, resolved once.
    pub metrics: telemetry::Hot,
    pub verifier: Arc<Verifier>,
    pub readiness: Readiness,
    /// Sessions, so that shutdown can wait for them (axum does not track upgraded sockets).
    pub tracker: TaskTracker,
}
