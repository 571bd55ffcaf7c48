//! The contract suites: one `pub async fn` per behaviour of each seam, run against
//! every implementation (`tests/contract.rs` stamps each for memory and for NATS/Redis).
//! A case says in its name and doc which sentence of the trait contract it checks.
//!
//! Cases build what they test through a [`Factory`], which owns the case's namespace:
//! every key and subject a case touches is built from it, so cases can share servers.
//! Timing cases use TTLs of about a second and wait with [`eventually`], never a bare
//! sleep.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::bus::Bus;
use crate::devices::DeviceStore;
use crate::due::DueQueue;
use crate::inbox::Inbox;
use crate::namespace::Namespace;
use crate::presence::PresenceStore;

pub mod bus;
pub mod devices;
pub mod due;
pub mod inbox;
pub mod presence;

/// Builds the implementations under test for one case. Calls with the same arguments
/// give handles on the same data (for NATS/Redis, possibly through separate clients).
#[async_trait]
pub trait Factory: Send + Sync {
    /// The case's namespace.
    fn namespace(&self) -> &Namespace;

    /// A client of the bus: what one publishes, the others' subscriptions receive.
    async fn bus(&self) -> Arc<dyn Bus>;

    /// A presence store whose entries live `entry_ttl` without a refresh.
    async fn presence(&self, entry_ttl: Duration) -> Arc<dyn PresenceStore>;

    /// An inbox keeping at most `capacity` entries per user.
    async fn inbox(&self, capacity: usize) -> Arc<dyn Inbox>;

    /// A device registry keeping at most `capacity` devices per user for `ttl`.
    async fn devices(&self, capacity: usize, ttl: Duration) -> Arc<dyn DeviceStore>;

    /// A client of the due-queue (for NATS/Redis, a new client each call).
    async fn due(&self) -> Arc<dyn DueQueue>;
}

/// How long a case waits for something that should happen at once (a delivery).
pub const PROMPT: Duration = Duration::from_secs(5);

/// Poll `check` every 50 ms until it returns `Some`, or panic naming `what` after
/// `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
