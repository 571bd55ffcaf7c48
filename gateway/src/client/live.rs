//! Live notifications, queued for a client by the hub: stored ones pass once per
//! connection, and what was written is counted (delivery latency) and receipted
//! (`DELIVERED` for notifications sent to the user by id).

use kurir_proto::v1::ReceiptStatus;
use kurir_runtime::now_ms;

use super::Client;
use crate::hub::Queued;
use crate::telemetry;

impl Client {
    /// Whether a queued notification should be written: `false` for a stored one this
    /// connection already has (counted as a duplicate dropped).
    pub fn admit(&mut self, out: &Queued) -> bool {
        if out.stored && !self.first_time(out.id) {
            telemetry::dropped("duplicate");
            return false;
        }
        true
    }

    /// `first` and whatever else is queued behind it, `max` in all at most, without the
    /// stored ones this connection already has: one write's worth.
    pub fn batch(&mut self, first: Queued, max: usize) -> Vec<Queued> {
        let mut batch = Vec::with_capacity(8);
        let mut next = Some(first);
        let mut n = 0;
        while let Some(out) = next.take() {
            if self.admit(&out) {
                batch.push(out);
            }
            n += 1;
            if n < max {
                next = self.mailbox().pop();
            }
        }
        batch
    }

    /// Queued notifications reached the transport.
    pub fn delivered<'a>(&self, written: impl ExactSizeIterator<Item = &'a Queued>) {
        let hot = &self.state.metrics;
        let n = written.len() as u64;
        hot.deliveries.increment(n);
        hot.by_transport(self.transport().index()).increment(n);
        let now = now_ms();
        for out in written {
            // created_at has millisecond resolution.
            hot.latency
                .record((now - out.created_at).max(0) as f64 / 1000.0);
            if out.direct {
                self.receipt(out.id, ReceiptStatus::Delivered);
            }
        }
    }
}
