//! `WatchReceipts`: each watcher gets its own bus subscription to the receipts subject,
//! filtered, through a bounded buffer; a watcher that lets it fill is ended rather than
//! slowing the others, and every stream ends when the server drains.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use kurir_backends::bus::Subscription;
use kurir_backends::{BackendError, NotificationId};
use kurir_proto::internal::v1::ReceiptBatch;
use kurir_proto::v1::Receipt;
use metrics::{counter, gauge};
use prost::Message;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::Dispatch;
use crate::error::DispatchError;
use crate::telemetry;

/// Which receipts a watcher wants; an empty set matches everything. User ids are kept
/// as the validated strings they are compared with: receipts arrive as text.
#[derive(Debug, Clone, Default)]
pub struct ReceiptFilter {
    pub users: HashSet<String>,
    pub ids: HashSet<NotificationId>,
}

impl ReceiptFilter {
    pub fn matches(&self, receipt: &Receipt) -> bool {
        (self.users.is_empty() || self.users.contains(&receipt.user_id))
            && (self.ids.is_empty()
                || NotificationId::parse(&receipt.id).is_ok_and(|id| self.ids.contains(&id)))
    }
}

/// Receipts for one watcher, ending with an error when the watcher fell behind
/// (`WatcherLagged`), the server drains (`ShuttingDown`) or the bus subscription ended.
pub type ReceiptStream = ReceiverStream<Result<Receipt, DispatchError>>;

/// Limits and lifetime of the receipt watchers.
pub(super) struct Watchers {
    /// One permit per open stream (`KURIR_MAX_WATCHERS`).
    slots: Arc<Semaphore>,
    /// `KURIR_WATCH_BUFFER`.
    buffer: usize,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Watchers {
    pub(super) fn new(max_watchers: usize, buffer: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_watchers)),
            buffer,
            stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }
}

impl Dispatch {
    /// Follow receipts matching `filter` until the returned stream is dropped.
    ///
    /// # Errors
    /// `TooManyWatchers` past `KURIR_MAX_WATCHERS`; `Backend` when the bus subscription fails.
    pub async fn watch_receipts(
        &self,
        filter: ReceiptFilter,
    ) -> Result<ReceiptStream, DispatchError> {
        let w = &self.watchers;
        if w.stop.is_cancelled() {
            return Err(DispatchError::ShuttingDown);
        }
        let slot = w
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| DispatchError::TooManyWatchers)?;
        let subject = self.backends.namespace.receipts_subject();
        let subscription = self.backends.bus.subscribe(subject).await?;
        // One slot more than the buffer, kept free for the error that ends the stream:
        // when the buffer is full the watcher is too slow and gets RESOURCE_EXHAUSTED.
        let (tx, rx) = mpsc::channel(w.buffer + 1);
        w.tracker.spawn(forward_receipts(
            subscription,
            filter,
            tx,
            w.stop.clone(),
            slot,
        ));
        Ok(ReceiverStream::new(rx))
    }

    /// End every receipt stream (with `ShuttingDown`) and wait for their tasks.
    pub async fn stop_watchers(&self) {
        self.watchers.stop.cancel();
        self.watchers.tracker.close();
        self.watchers.tracker.wait().await;
    }
}

/// Bus → one watcher. Ends when the caller goes away, the server drains, the watcher
/// falls behind, or the subscription ends.
async fn forward_receipts(
    mut subscription: Subscription,
    filter: ReceiptFilter,
    tx: mpsc::Sender<Result<Receipt, DispatchError>>,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let open = gauge!(telemetry::WATCHERS);
    open.increment(1.0);
    loop {
        let payload = tokio::select! {
            p = subscription.next() => p,
            () = tx.closed() => break,
            () = stop.cancelled() => {
                let _ = tx.try_send(Err(DispatchError::ShuttingDown));
                break;
            }
        };
        let Some(payload) = payload else {
            let err = BackendError::unavailable("nats", "receipt subscription ended");
            let _ = tx.try_send(Err(err.into()));
            break;
        };
        let batch = match ReceiptBatch::decode(payload) {
            Ok(b) => b,
            Err(e) => {
                debug!(error = %e, "undecodable receipt batch skipped");
                continue;
            }
        };
        if !forward_batch(batch, &filter, &tx) {
            break;
        }
    }
    open.decrement(1.0);
}

/// Hand a batch's matching receipts to a watcher; `false` once its stream is over (gone,
/// or too slow: it is then told so and ended).
fn forward_batch(
    batch: ReceiptBatch,
    filter: &ReceiptFilter,
    tx: &mpsc::Sender<Result<Receipt, DispatchError>>,
) -> bool {
    for mut receipt in batch.receipts {
        if !filter.matches(&receipt) {
            continue;
        }
        if receipt.node.is_empty() {
            receipt.node.clone_from(&batch.node);
        }
        if tx.capacity() <= 1 {
            counter!(telemetry::WATCHERS_LAGGED).increment(1);
            debug!("receipt watcher fell behind; ending its stream");
            let _ = tx.try_send(Err(DispatchError::WatcherLagged));
            return false;
        }
        if tx.try_send(Ok(receipt)).is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(user: &str, id: NotificationId) -> Receipt {
        Receipt {
            id: id.to_string(),
            user_id: user.into(),
            status: 1,
            node: "gw-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn filters_match_users_and_ids() {
        let (a, b) = (NotificationId::generate(), NotificationId::generate());
        let all = ReceiptFilter::default();
        assert!(all.matches(&receipt("x", a)));
        let users = ReceiptFilter {
            users: ["alice".to_owned()].into(),
            ids: HashSet::new(),
        };
        assert!(users.matches(&receipt("alice", a)));
        assert!(!users.matches(&receipt("bob", a)));
        let both = ReceiptFilter {
            users: ["alice".to_owned()].into(),
            ids: [a].into(),
        };
        assert!(both.matches(&receipt("alice", a)));
        assert!(!both.matches(&receipt("alice", b)));
        assert!(!both.matches(&receipt("bob", a)));
    }
}
