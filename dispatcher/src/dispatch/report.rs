//! Receipts the dispatcher reports itself, on the receipts subject beside the gateways':
//! `PUSHED`, `PUSH_FAILED` and `EXPIRED` from [`super::fallback`], and `DROPPED` for the
//! unacked entries a `Send`'s append pushed out of a full inbox (counted in
//! `kurir_inbox_dropped_total`). Like every receipt they are at most once: a publish that
//! fails is logged, never retried. Their `node` is empty: no gateway was involved.

use bytes::Bytes;
use kurir_backends::inbox::Appended;
use kurir_backends::{NotificationId, UserId};
use kurir_proto::internal::v1::ReceiptBatch;
use kurir_proto::v1::{Receipt, ReceiptStatus};
use kurir_runtime::now_ms;
use metrics::counter;
use prost::Message;

use super::Dispatch;
use crate::telemetry;

impl Dispatch {
    /// One receipt batch on the receipts subject, as gateways send theirs. Receipts are
    /// at most once: a failed publish is logged, never retried.
    pub(super) async fn publish_receipts(&self, receipts: Vec<Receipt>) {
        if receipts.is_empty() {
            return;
        }
        let batch = ReceiptBatch {
            node: String::new(),
            receipts,
        };
        let subject = self.backends.namespace.receipts_subject();
        if let Err(e) = self
            .backends
            .bus
            .publish(subject, Bytes::from(batch.encode_to_vec()))
            .await
        {
            tracing::warn!(error = %e, "receipts not published");
        }
    }

    /// `DROPPED` for what the append trimmed from each user's inbox (`appended` is in
    /// the order of `users`).
    pub(super) async fn report_dropped(&self, users: &[UserId], appended: &[Appended]) {
        let dropped: Vec<Receipt> = users
            .iter()
            .zip(appended)
            .flat_map(|(user, a)| {
                a.dropped
                    .iter()
                    .map(move |id| receipt(*id, user, ReceiptStatus::Dropped, "", "inbox full"))
            })
            .collect();
        if dropped.is_empty() {
            return;
        }
        counter!(telemetry::INBOX_DROPPED).increment(dropped.len() as u64);
        tracing::debug!(
            dropped = dropped.len(),
            "inbox cap pushed out unacked entries"
        );
        self.publish_receipts(dropped).await;
    }
}

pub(super) fn receipt(
    id: NotificationId,
    user: &UserId,
    status: ReceiptStatus,
    device_id: &str,
    reason: &str,
) -> Receipt {
    Receipt {
        id: id.to_string(),
        user_id: user.as_str().to_owned(),
        status: status as i32,
        node: String::new(),
        at: now_ms(),
        reason: reason.to_owned(),
        device_id: device_id.to_owned(),
    }
}
