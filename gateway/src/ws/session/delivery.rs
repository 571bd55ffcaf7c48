//! What a session writes: stored notifications replayed from the inbox, queued ones in
//! vectored batches, each stored notification once per connection however many times
//! replay and live routing bring it, and a DELIVERED receipt for targeted ones.

use std::collections::{HashMap, VecDeque};

use kurir_backends::inbox::Cursor;
use kurir_backends::NotificationId;
use kurir_proto::internal::v1::Delivery;
use kurir_proto::v1::ReceiptStatus;
use kurir_runtime::now_ms;
use kurir_wire::WireFrame;
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::warn;

use super::{Interrupt, Session};
use crate::hub::{Outbound, Queued};
use crate::protocol::{CloseReason, PreparedNotification};
use crate::telemetry;

/// Frames written per vectored write at most (coalescing under load).
const WRITE_BATCH: usize = 64;

impl WireFrame for Outbound {
    fn wire(&self) -> &[u8] {
        &self.frame
    }
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Deliver pending stored notifications after `after` (all when `None`), oldest
    /// first, skipping what this connection already has.
    pub(super) async fn replay(&mut self, mut after: Option<Cursor>) -> Result<(), CloseReason> {
        let inbox = self.state.backends.inbox.clone();
        let page = self.state.config.replay_page;
        let mut budget = self.state.config.backends.inbox_capacity;
        while budget > 0 {
            let entries = inbox
                .pending(&self.identity.user, after.as_ref(), page.min(budget))
                .await
                .map_err(|e| {
                    warn!(conn_id = %self.registration.conn().id, user = %self.identity.user, error = %e, "inbox read failed");
                    CloseReason::Internal
                })?;
            let n = entries.len();
            for entry in entries {
                budget -= 1;
                after = Some(entry.cursor.clone());
                if !self.first_time(entry.id) {
                    continue;
                }
                let Ok(d) = Delivery::decode(entry.payload.as_ref()) else {
                    warn!(conn_id = %self.registration.conn().id, user = %self.identity.user, id = %entry.id, "undecodable inbox entry skipped");
                    continue;
                };
                let frame = PreparedNotification::new(&d).frame(true, Some(entry.cursor.as_str()));
                self.send(frame).await?;
                let hot = &self.state.metrics;
                hot.replayed.increment(1);
                // A replay is not a delivery delay: only live writes feed the histogram.
                hot.deliveries.increment(1);
                self.receipt(entry.id, ReceiptStatus::Delivered);
            }
            if n < page {
                break;
            }
        }
        Ok(())
    }

    /// Write `first` and whatever else is queued, up to [`WRITE_BATCH`], in one vectored
    /// write.
    pub(super) async fn write_batch(&mut self, first: Queued) -> Result<(), CloseReason> {
        let mut batch: Vec<Queued> = Vec::with_capacity(8);
        let mut next = Some(first);
        let mut n = 0;
        while let Some(out) = next.take() {
            if out.stored && !self.first_time(out.id) {
                telemetry::dropped("duplicate");
            } else {
                batch.push(out);
            }
            n += 1;
            if n < WRITE_BATCH {
                next = self.registration.conn().mailbox.pop();
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.write(&batch, Interrupt::OnClose).await?;
        let hot = &self.state.metrics;
        hot.deliveries.increment(batch.len() as u64);
        let now = now_ms();
        for out in batch {
            // created_at has millisecond resolution.
            hot.latency
                .record((now - out.created_at).max(0) as f64 / 1000.0);
            if out.direct {
                self.receipt(out.id, ReceiptStatus::Delivered);
            }
        }
        Ok(())
    }

    /// Record a stored notification as sent here; `false` if it already was.
    pub(super) fn first_time(&mut self, id: NotificationId) -> bool {
        let cap = self.state.config.backends.inbox_capacity;
        self.seen
            .get_or_insert_with(|| Box::new(SeenIds::new(cap)))
            .insert(id)
    }

    pub(super) fn receipt(&self, id: NotificationId, status: ReceiptStatus) {
        self.state.receipts.emit(id, &self.identity.user, status);
    }
}

/// Stored notification ids this connection has been sent, newest `cap` kept, each with
/// whether the client acked it. Allocates nothing until the first stored notification.
pub(super) struct SeenIds {
    order: VecDeque<NotificationId>,
    acked: HashMap<NotificationId, bool>,
    cap: usize,
}

impl SeenIds {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            order: VecDeque::new(),
            acked: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// `false` when already seen.
    pub(super) fn insert(&mut self, id: NotificationId) -> bool {
        if self.acked.contains_key(&id) {
            return false;
        }
        self.acked.insert(id, false);
        self.order.push_back(id);
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.acked.remove(&old);
            }
        }
        true
    }

    /// `true` the first time a sent id is acked.
    pub(super) fn ack_once(&mut self, id: NotificationId) -> bool {
        match self.acked.get_mut(&id) {
            Some(acked) if !*acked => {
                *acked = true;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_ids_are_bounded() {
        let mut s = SeenIds::new(2);
        let ids: Vec<_> = (0..3).map(|_| NotificationId::generate()).collect();
        assert!(s.insert(ids[0]));
        assert!(!s.insert(ids[0]));
        assert!(s.insert(ids[1]));
        assert!(s.insert(ids[2]));
        assert!(s.insert(ids[0]), "oldest evicted");
        assert!(s.ack_once(ids[2]));
        assert!(!s.ack_once(ids[2]), "once");
        assert!(!s.ack_once(ids[1]), "evicted: not free");
    }
}
