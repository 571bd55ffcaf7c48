//! The due-worker: every dispatcher runs one. It claims due items from the shared
//! due-queue (a lease each, so no two dispatchers run the same item), runs each in its
//! own task, and completes, moves or retries it:
//! - a scheduled request ([`super::schedule`]) is sent and completed;
//! - a fallback check ([`super::fallback`]) runs its step and moves to the next one;
//! - a step that failed on a backend error is tried again a second later; an item that
//!   does not decode, or failed [`MAX_ATTEMPTS`] claims, is dropped and logged.
//!
//! At most `KURIR_DUE_BATCH` items run at once per dispatcher: the worker claims only
//! as many as it has free slots, so what it cannot take stays in Redis for the others.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kurir_backends::due::Claimed;
use kurir_proto::internal::v1::due_item::Kind;
use kurir_proto::internal::v1::DueItem;
use kurir_runtime::now_ms;
use metrics::counter;
use prost::Message;
use tokio::sync::Semaphore;
use tracing::{debug, error, warn};

use super::fallback::Next;
use super::Dispatch;
use crate::error::DispatchError;
use crate::telemetry;

/// Claims after which an item is given up: one that fails every time must not come
/// back forever.
pub const MAX_ATTEMPTS: u64 = 10;
/// How long after a failed step it is tried again, in milliseconds.
const RETRY_AFTER_MS: i64 = 1_000;

/// How the due-worker polls (`KURIR_DUE_POLL_MS`, `KURIR_DUE_LEASE_MS`,
/// `KURIR_DUE_BATCH`).
#[derive(Debug, Clone, Copy)]
pub struct DueSettings {
    pub poll: Duration,
    pub lease: Duration,
    pub batch: usize,
}

impl Dispatch {
    /// Start the due-worker among the flow's background tasks; it stops at
    /// [`Self::shutdown`], after the items it runs are finished.
    pub fn start_due_worker(&self, settings: DueSettings) {
        self.tasks.spawn(self.clone().due_worker(settings));
    }

    async fn due_worker(self, settings: DueSettings) {
        let slots = Arc::new(Semaphore::new(settings.batch.max(1)));
        loop {
            let free = slots.available_permits();
            let claimed = if free == 0 {
                Vec::new()
            } else {
                match self
                    .backends
                    .due
                    .claim(now_ms(), settings.lease, free)
                    .await
                {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        debug!(error = %e, "due-queue not polled");
                        Vec::new()
                    }
                }
            };
            let full = !claimed.is_empty() && claimed.len() == free;
            for item in claimed {
                // Never fails: only this loop takes permits, and it claimed at most `free`.
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    break;
                };
                let this = self.clone();
                self.tasks.spawn(async move {
                    this.handle_due(item).await;
                    drop(permit);
                });
            }
            if full {
                // More may be due: claim again as soon as a slot frees up.
                tokio::task::yield_now().await;
            }
            tokio::select! {
                () = self.stop.cancelled() => break,
                () = tokio::time::sleep(if full { Duration::from_millis(10) } else { settings.poll }) => {}
            }
        }
    }

    /// Run one claimed item to its next state.
    async fn handle_due(&self, item: Claimed) {
        let kind = match DueItem::decode(item.payload.clone()) {
            Ok(DueItem { kind: Some(kind) }) => kind,
            _ => {
                error!(item = %item.id, "due item does not decode; dropped");
                self.finish(&item, "unknown", "dropped").await;
                return;
            }
        };
        let label = match &kind {
            Kind::Scheduled(_) => "scheduled",
            Kind::Fallback(c) if c.pushed => "expiry",
            Kind::Fallback(_) => "fallback",
        };
        if item.lease.attempt > MAX_ATTEMPTS {
            error!(item = %item.id, attempts = item.lease.attempt, "due item failed too often; dropped");
            self.finish(&item, label, "dropped").await;
            return;
        }
        let result = match kind {
            Kind::Scheduled(s) => self.run_scheduled(s).await.map(|()| Next::Done),
            Kind::Fallback(check) => self.run_fallback(check).await,
        };
        match result {
            Ok(Next::Done) => self.finish(&item, label, "done").await,
            Ok(Next::At(at, check)) => {
                let payload = DueItem {
                    kind: Some(Kind::Fallback(*check)),
                };
                self.move_item(&item, at, Bytes::from(payload.encode_to_vec()))
                    .await;
                counter!(telemetry::DUE_ITEMS, "kind" => label, "outcome" => "done").increment(1);
            }
            Err(DispatchError::Backend(e)) if e.is_transient() => {
                warn!(item = %item.id, error = %e, "due item failed; trying again shortly");
                self.move_item(&item, now_ms() + RETRY_AFTER_MS, item.payload.clone())
                    .await;
                counter!(telemetry::DUE_ITEMS, "kind" => label, "outcome" => "retried")
                    .increment(1);
            }
            Err(e) => {
                error!(item = %item.id, error = %e, "due item cannot be carried out; dropped");
                self.finish(&item, label, "dropped").await;
            }
        }
    }

    async fn finish(&self, item: &Claimed, kind: &'static str, outcome: &'static str) {
        match self.backends.due.complete(item).await {
            Ok(true) => {}
            Ok(false) => debug!(item = %item.id, "due item's lease was lost before completion"),
            // Left leased: it comes due again when the lease ends.
            Err(e) => warn!(item = %item.id, error = %e, "due item not completed"),
        }
        counter!(telemetry::DUE_ITEMS, "kind" => kind, "outcome" => outcome).increment(1);
    }

    async fn move_item(&self, item: &Claimed, at: i64, payload: Bytes) {
        match self.backends.due.reschedule(item, at, payload).await {
            Ok(true) => {}
            Ok(false) => debug!(item = %item.id, "due item's lease was lost before it moved"),
            Err(e) => warn!(item = %item.id, error = %e, "due item not moved"),
        }
    }
}
