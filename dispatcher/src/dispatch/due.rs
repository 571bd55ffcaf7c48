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
//!
//! Between claims the worker sleeps until the earliest item comes due (asked of the
//! queue), at most `KURIR_DUE_POLL_MS` (items other dispatchers add), at least
//! [`MIN_TICK`]; an item this dispatcher schedules sooner than that wakes it (the
//! [`Alarm`]). So an item goes out within a few milliseconds of its time, not a poll
//! interval later, and a busy queue is claimed in batches.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kurir_backends::due::Claimed;
use kurir_proto::internal::v1::due_item::Kind;
use kurir_proto::internal::v1::DueItem;
use kurir_runtime::now_ms;
use metrics::counter;
use prost::Message;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
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
/// Shortest time between two claims of one worker: items coming due closer together
/// than this are claimed together.
pub const MIN_TICK: Duration = Duration::from_millis(2);

/// When the due-worker claims next, and the bell that wakes it sooner.
#[derive(Debug)]
pub(super) struct Alarm {
    /// Unix ms of the worker's next claim; `i64::MAX` while it is awake (every item
    /// scheduled then rings, so the sleep that follows ends at once), 0 when no worker
    /// runs.
    at: AtomicI64,
    bell: Notify,
}

impl Default for Alarm {
    fn default() -> Self {
        Self {
            at: AtomicI64::new(0),
            bell: Notify::new(),
        }
    }
}

impl Alarm {
    /// An item was put in the queue, due at `due_at` (unix ms).
    pub(super) fn scheduled(&self, due_at: i64) {
        if due_at < self.at.load(Ordering::Acquire) {
            self.bell.notify_one();
        }
    }
}

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
            self.alarm.at.store(i64::MAX, Ordering::Release);
            if slots.available_permits() == 0 {
                // Every slot busy: nothing can be claimed until one frees up.
                tokio::select! {
                    () = self.stop.cancelled() => break,
                    permit = slots.clone().acquire_owned() => drop(permit),
                }
            }
            let claimed_at = Instant::now();
            let free = slots.available_permits();
            let claimed = match self
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
            // Full: more may be due, claim again as soon as a slot frees up.
            let pause = if full {
                Duration::ZERO
            } else {
                self.until_next_due(settings.poll).await
            };
            let wake_at = claimed_at + pause.max(MIN_TICK);
            self.alarm.at.store(
                now_ms().saturating_add(i64::try_from(pause.as_millis()).unwrap_or(i64::MAX)),
                Ordering::Release,
            );
            tokio::select! {
                () = self.stop.cancelled() => break,
                () = tokio::time::sleep_until(wake_at) => {}
                () = self.alarm.bell.notified() => {
                    tokio::select! {
                        () = self.stop.cancelled() => break,
                        () = tokio::time::sleep_until(claimed_at + MIN_TICK) => {}
                    }
                }
            }
        }
    }

    /// How long until the earliest item comes due, within `poll` (also when the queue
    /// cannot be asked).
    async fn until_next_due(&self, poll: Duration) -> Duration {
        match self.backends.due.next_due().await {
            Ok(Some(at)) => {
                let ms = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
                Duration::from_millis(ms).min(poll)
            }
            Ok(None) => poll,
            Err(e) => {
                debug!(error = %e, "due-queue not asked for its next item");
                poll
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
            Ok(true) => self.alarm.scheduled(at),
            Ok(false) => debug!(item = %item.id, "due item's lease was lost before it moved"),
            Err(e) => warn!(item = %item.id, error = %e, "due item not moved"),
        }
    }
}
