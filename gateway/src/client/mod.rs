//! A connected client, whatever carries it (WebSocket, SSE or MQTT): who it is, its place
//! in the hub, its topics, the stored notifications it was sent, and where it resumed
//! from. The transports own their sockets and framing; what a client *does* lives here
//! once, so every transport keeps the same promises:
//!
//! - presence is written before the inbox is read, so a notification sent meanwhile is
//!   either in the replay or routed here live (or both: [`seen`] drops the second copy);
//! - [`replay`] reads the inbox after the resume cursor, page by page, skipping what
//!   this connection already has;
//! - [`actions`]: an ack removes the inbox entry and emits `ACKED`; subscribing checks
//!   the token's topics and the limits;
//! - [`Client::leave`] gives back the topics and the presence entry.

pub mod actions;
pub mod live;
pub mod replay;
pub mod seen;

use std::sync::Arc;

use kurir_backends::inbox::Cursor;
use kurir_backends::{NotificationId, Topic};
use kurir_proto::v1::ReceiptStatus;
use tracing::debug;

use crate::auth::Identity;
use crate::hub::{ConnHandle, Mailbox, Registration};
use crate::protocol::CloseReason;
use crate::state::AppState;
use crate::telemetry;
use seen::SeenIds;

/// What carries a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Sse,
    Mqtt,
}

impl Transport {
    /// Its place in [`telemetry::TRANSPORTS`] (the per-transport series).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `transport` label of the gateway's per-transport series.
    pub fn label(self) -> &'static str {
        telemetry::TRANSPORTS[self.index()]
    }
}

/// One connected client's state on this node.
pub struct Client {
    pub state: Arc<AppState>,
    pub identity: Identity,
    registration: Registration,
    transport: Transport,
    topics: Vec<Topic>,
    /// Stored notification ids sent on this connection; allocated on the first one.
    seen: Option<Box<SeenIds>>,
    /// The cursor the client connected with: what it already has. The first replay and
    /// every resync read the inbox from there.
    resume: Option<Box<Cursor>>,
}

impl Client {
    pub fn new(
        state: Arc<AppState>,
        identity: Identity,
        cursor: Option<Cursor>,
        registration: Registration,
        transport: Transport,
    ) -> Self {
        Self {
            state,
            identity,
            registration,
            transport,
            topics: Vec::new(),
            seen: None,
            resume: cursor.map(Box::new),
        }
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    pub fn conn(&self) -> &ConnHandle {
        self.registration.conn()
    }

    pub fn mailbox(&self) -> &Mailbox {
        &self.registration.conn().mailbox
    }

    /// The cursor this client resumed from (`None`: from the start of its inbox).
    pub fn resume(&self) -> Option<Cursor> {
        self.resume.as_deref().cloned()
    }

    /// Write this connection's presence under the node's current epoch. Should the epoch
    /// change meanwhile (the node's liveness lapsed), the re-registration of every
    /// connection may have run before this write landed: write again under the new one.
    ///
    /// # Errors
    /// The presence store failed.
    pub async fn register_presence(&self) -> Result<(), kurir_backends::BackendError> {
        let presence = &self.state.backends.presence;
        let mut lease = self.state.lease.get();
        loop {
            presence
                .add(&lease, &self.identity.user, self.conn().id)
                .await?;
            let now = self.state.lease.get();
            if now.epoch == lease.epoch {
                return Ok(());
            }
            lease = now;
        }
    }

    /// Record a stored notification as sent here; `false` if it already was.
    pub fn first_time(&mut self, id: NotificationId) -> bool {
        let cap = self.state.config.backends.inbox_capacity;
        self.seen
            .get_or_insert_with(|| Box::new(SeenIds::new(cap)))
            .insert(id)
    }

    /// `true` the first time a stored notification sent here is acked.
    pub fn ack_once(&mut self, id: NotificationId) -> bool {
        self.seen.as_deref_mut().is_some_and(|s| s.ack_once(id))
    }

    pub fn receipt(&self, id: NotificationId, status: ReceiptStatus) {
        self.state.receipts.emit(id, &self.identity.user, status);
    }

    /// Leave the topics and presence; the hub's registration goes when the client is
    /// dropped. On drain the node removes all its presence at once.
    pub async fn leave(&mut self, reason: &CloseReason) {
        let id = self.conn().id;
        for t in self.topics.drain(..) {
            self.state.hub.unsubscribe(&t, id);
        }
        if !matches!(reason, CloseReason::Draining) {
            if let Err(e) = self
                .state
                .backends
                .presence
                .remove(&self.identity.user, id)
                .await
            {
                debug!(error = %e, "presence removal failed; the entry expires with the node");
            }
        }
    }
}
