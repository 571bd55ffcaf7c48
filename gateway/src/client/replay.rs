//! Replay: the stored notifications a client has not acked, read from the inbox after
//! its resume cursor, oldest first, a page at a time, each at most once per connection.
//! The transport writes each one and then calls [`Client::replayed`].

use bytes::Bytes;
use kurir_backends::inbox::Cursor;
use kurir_backends::NotificationId;
use kurir_proto::internal::v1::Delivery;
use kurir_proto::v1::ReceiptStatus;
use prost::Message as _;
use tracing::warn;

use super::Client;
use crate::protocol::{CloseReason, PreparedNotification};

/// Where a replay stands: the last cursor read and how many entries it may still read
/// (an inbox holds at most its capacity, so a replay ends even if entries keep coming).
pub struct Replay {
    after: Option<Cursor>,
    budget: usize,
    done: bool,
}

/// One stored notification to write.
pub struct Replayed {
    pub id: NotificationId,
    pub cursor: Cursor,
    /// The notification frame (`replayed: true`, with its cursor), framed for a
    /// WebSocket; other transports take its payload (`kurir_wire::frame::payload_of`).
    pub frame: Bytes,
}

impl Client {
    /// A replay from the cursor the client resumed from.
    pub fn replay(&self) -> Replay {
        Replay {
            after: self.resume(),
            budget: self.state.config.backends.inbox_capacity,
            done: false,
        }
    }

    /// The next page of stored notifications this connection has not been sent;
    /// empty when the replay is over.
    ///
    /// # Errors
    /// The inbox could not be read (logged here): the connection should end, and the
    /// client resumes elsewhere or later.
    pub async fn next_page(&mut self, replay: &mut Replay) -> Result<Vec<Replayed>, CloseReason> {
        let page = self.state.config.replay_page;
        let mut out = Vec::new();
        while out.is_empty() && !replay.done && replay.budget > 0 {
            let entries = self
                .state
                .backends
                .inbox
                .pending(&self.identity.user, replay.after.as_ref(), page.min(replay.budget))
                .await
                .map_err(|e| {
                    warn!(conn_id = %self.conn().id, user = %self.identity.user, error = %e, "inbox read failed");
                    CloseReason::Internal
                })?;
            replay.done = entries.len() < page;
            for entry in entries {
                replay.budget -= 1;
                replay.after = Some(entry.cursor.clone());
                if !self.first_time(entry.id) {
                    continue;
                }
                let Ok(d) = Delivery::decode(entry.payload.as_ref()) else {
                    warn!(conn_id = %self.conn().id, user = %self.identity.user, id = %entry.id, "undecodable inbox entry skipped");
                    continue;
                };
                let frame = PreparedNotification::new(&d).frame(true, Some(entry.cursor.as_str()));
                out.push(Replayed {
                    id: entry.id,
                    cursor: entry.cursor,
                    frame,
                });
            }
        }
        Ok(out)
    }

    /// A replayed notification reached the transport: counted, and `DELIVERED` emitted.
    pub fn replayed(&self, id: NotificationId) {
        let hot = &self.state.metrics;
        hot.replayed.increment(1);
        // A replay is not a delivery delay: only live writes feed the histogram.
        hot.deliveries.increment(1);
        hot.by_transport(self.transport().index()).increment(1);
        self.receipt(id, ReceiptStatus::Delivered);
    }
}
