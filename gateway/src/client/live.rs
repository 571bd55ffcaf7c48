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

    /// Queued notifications reached the transport.
    pub fn delivered<'a>(&self, written: impl ExactSizeIterator<Item = &'a Queued>) {
        let hot = &self.state.metrics;
        let n = written.len() as u64;
        hot.deliveries.increment(n);
        hot.by_transport(self.transport().label()).increment(n);
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
