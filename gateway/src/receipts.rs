//! Receipts: DELIVERED when a targeted notification is written to a socket, ACKED when a
//! client acks one. Sessions hand them to a bounded queue; one task publishes them to
//! `kurir.<ns>.receipts`. Receipts are observability, not delivery: when the queue is
//! full they are dropped and counted (`kurir_gateway_dropped_total{reason="receipts_full"}`)
//! rather than slowing sockets down.

use bytes::Bytes;
use kurir_backends::{Backends, NodeId, NotificationId, UserId};
use kurir_proto::v1::{Receipt, ReceiptStatus};
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::telemetry;
use crate::ws::session::now_ms;

/// Handle to the receipt queue. Cheap to clone.
#[derive(Clone)]
pub struct Receipts {
    tx: mpsc::Sender<Receipt>,
    node: NodeId,
}

impl Receipts {
    pub fn channel(node: NodeId, capacity: usize) -> (Self, mpsc::Receiver<Receipt>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self { tx, node }, rx)
    }

    pub fn emit(&self, id: NotificationId, user: &UserId, status: ReceiptStatus) {
        let receipt = Receipt {
            id: id.to_string(),
            user_id: user.as_str().to_owned(),
            status: status as i32,
            node: self.node.as_str().to_owned(),
            at: now_ms(),
        };
        if self.tx.try_send(receipt).is_err() {
            telemetry::dropped("receipts_full");
        }
    }
}

/// Publish receipts until `stop`, then what is left in the queue.
pub async fn run(backends: Backends, mut rx: mpsc::Receiver<Receipt>, stop: CancellationToken) {
    let subject = backends.namespace.receipts_subject();
    loop {
        let receipt = tokio::select! {
            r = rx.recv() => r,
            () = stop.cancelled() => { rx.close(); rx.recv().await }
        };
        let Some(receipt) = receipt else { break };
        let payload = Bytes::from(receipt.encode_to_vec());
        if let Err(e) = backends.bus.publish(subject.clone(), payload).await {
            debug!(error = %e, "receipt not published");
        }
    }
}
