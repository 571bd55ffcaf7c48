//! The bus: how dispatchers reach gateways (node, topic and broadcast subjects) and how
//! gateways report receipts. NATS in a cluster, in-process channels in `--standalone`.
//!
//! # Contract
//! - At-most-once: a message published while nobody is subscribed is gone.
//! - Per publisher and subject, messages arrive in publish order.
//! - A [`Subscription`] lives until dropped; it survives reconnects of the underlying
//!   client (the implementation re-subscribes), but messages published during the outage
//!   may be lost. [`Bus::reconnected`] tells subscribers when to resynchronise.
//! - A subscriber that falls behind loses messages rather than growing memory; losses are
//!   counted (`kurir_backend_errors_total{backend,op="slow_consumer"}`) and signalled
//!   through [`Bus::reconnected`] too.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::sync::watch;

use crate::error::BackendError;

pub mod memory;
pub mod nats;

pub use memory::MemoryBus;
pub use nats::NatsBus;

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Queue `payload` for `subject`. `Ok` means accepted by the client, not delivered.
    ///
    /// # Errors
    /// `Unavailable` when the client cannot take the message (disconnected and its
    /// buffer full, or closed).
    async fn publish(&self, subject: String, payload: Bytes) -> Result<(), BackendError>;

    /// Receive every message published to `subject` from now on.
    async fn subscribe(&self, subject: String) -> Result<Subscription, BackendError>;

    /// Wait until everything published so far has been handed to the server.
    async fn flush(&self) -> Result<(), BackendError>;

    /// A counter that increases each time messages may have been lost: the connection
    /// was re-established after an outage (not on the first connect), or a subscription
    /// fell behind and dropped messages. Subscribers resynchronise when it changes.
    fn reconnected(&self) -> watch::Receiver<u64>;

    /// Whether the client currently believes it is connected.
    fn is_connected(&self) -> bool;
}

/// A live subscription: a stream of payloads. Dropping it unsubscribes.
pub struct Subscription {
    stream: BoxStream<'static, Bytes>,
}

impl Subscription {
    pub fn new(stream: BoxStream<'static, Bytes>) -> Self {
        Self { stream }
    }
}

impl futures::Stream for Subscription {
    type Item = Bytes;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Bytes>> {
        self.stream.as_mut().poll_next(cx)
    }
}
