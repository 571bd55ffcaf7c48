//! Receipts: DELIVERED when a targeted notification is written to a socket, ACKED when a
//! client acks one. Sessions hand them to a bounded queue; one task publishes what has
//! collected as one [`ReceiptBatch`] on `kurir.<ns>.receipts`, so a busy node sends one
//! bus message per batch rather than one per delivery, and an idle one publishes each
//! receipt at once. Receipts are observability, not delivery: when the queue is full they
//! are dropped and counted (`kurir_gateway_dropped_total{reason="receipts_full"}`) rather
//! than slowing sockets down.

use std::time::Duration;

use bytes::Bytes;
use kurir_backends::{Backends, NodeId, NotificationId, UserId};
use kurir_proto::internal::v1::ReceiptBatch;
use kurir_proto::v1::{Receipt, ReceiptStatus};
use kurir_runtime::now_ms;
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::telemetry;

/// Receipts per bus message at most.
const BATCH: usize = 512;

/// Handle to the receipt queue. Cheap to clone.
#[derive(Clone)]
pub struct Receipts {
    tx: mpsc::Sender<Receipt>,
}

impl Receipts {
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<Receipt>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self { tx }, rx)
    }

    pub fn emit(&self, id: NotificationId, user: &UserId, status: ReceiptStatus) {
        let receipt = Receipt {
            id: id.to_string(),
            user_id: user.as_str().to_owned(),
            status: status as i32,
            // Said once per batch.
            node: String::new(),
            at: now_ms(),
            ..Default::default()
        };
        if self.tx.try_send(receipt).is_err() {
            telemetry::dropped("receipts_full");
        }
    }
}

/// Publish receipts until `stop`, then what is left in the queue.
///
/// A batch starts with the first receipt that arrives and collects for `linger` (or until
/// [`BATCH`] are in), so a node delivering thousands per second publishes a few hundred
/// bus messages per second at most, at the price of receipts reaching watchers up to
/// `linger` later.
pub async fn run(
    backends: Backends,
    node: NodeId,
    mut rx: mpsc::Receiver<Receipt>,
    linger: Duration,
    stop: CancellationToken,
) {
    let subject = backends.namespace.receipts_subject();
    let mut batch = ReceiptBatch {
        node: node.as_str().to_owned(),
        receipts: Vec::with_capacity(BATCH),
    };
    let mut stopping = false;
    loop {
        let n = if stopping {
            rx.recv_many(&mut batch.receipts, BATCH).await
        } else {
            tokio::select! {
                n = rx.recv_many(&mut batch.receipts, BATCH) => n,
                () = stop.cancelled() => { rx.close(); stopping = true; continue; }
            }
        };
        if n == 0 {
            break;
        }
        if !stopping && !linger.is_zero() {
            let until = tokio::time::Instant::now() + linger;
            while batch.receipts.len() < BATCH {
                let room = BATCH - batch.receipts.len();
                tokio::select! {
                    n = rx.recv_many(&mut batch.receipts, room) => if n == 0 { break },
                    () = tokio::time::sleep_until(until) => break,
                    () = stop.cancelled() => break,
                }
            }
        }
        let count = batch.receipts.len();
        let payload = Bytes::from(batch.encode_to_vec());
        batch.receipts.clear();
        if let Err(e) = backends.bus.publish(subject.clone(), payload).await {
            debug!(error = %e, receipts = count, "receipts not published");
        }
    }
}
