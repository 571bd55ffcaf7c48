//! ② The flow behind every RPC, on validated values and the three seams.
//!
//! [`send`]: idempotency claim → time-ordered id → inbox append (stored notifications)
//! → [`crate::route`] (one presence lookup for all recipients → group by gateway node →
//! one publish per node that holds recipients). [`live`]: topic publishes and broadcasts
//! go to their one subject, live only; presence lookups and disconnects. [`receipts`]:
//! receipts are followed through a bounded per-watcher buffer.
//!
//! Offline reach: [`devices`] registers where a user's notifications are pushed;
//! [`schedule`] puts a `send_at` request in the due-queue and cancels it; a `Send` with
//! a fallback leaves a check in the due-queue, which [`due`] (one worker per dispatcher)
//! claims when it comes due and [`fallback`] carries out: push to the devices of the
//! recipients that have not acked, then report those that never do as `EXPIRED`.
//!
//! # Idempotency keys
//! [`idempotency`] claims a keyed `Send`'s key, per caller scope and request
//! fingerprint, before anything else happens; its module docs state the rules.
//!
//! # Failure rules of `Send`
//! - Before the inbox append succeeds, any backend failure fails the call (`UNAVAILABLE`
//!   when transient), nothing is published, and the pending idempotency key is given up
//!   so a retry can go through. A call cancelled before that (timeout, client gone) gives
//!   it up in the background; a dispatcher that dies leaves it to expire after
//!   [`PENDING_CLAIM_TTL`].
//! - After a stored notification (`ttl_seconds > 0`) is appended, it is safe: gateways
//!   replay inboxes on (re)connect, and its key is settled. A failed lookup or publish is
//!   then the router's to retry: it is logged and counted
//!   (`kurir_dispatcher_route_failures_total`), routed again in the background, and the
//!   call still succeeds.
//! - A live notification (`ttl_seconds = 0`) exists only in flight: a failed lookup or
//!   publish fails the call and gives its key up; a successful publish settles it.
//! - A settle that fails is logged and the call still succeeds (the work is done): the
//!   key then expires after [`PENDING_CLAIM_TTL`], and a retry after that sends again, a
//!   duplicate rather than a loss.

mod devices;
mod due;
mod fallback;
pub mod idempotency;
mod live;
mod receipts;
mod report;
mod schedule;
mod send;

use std::sync::Arc;

use kurir_backends::{Backends, NotificationId, UserId};
use kurir_proto::v1::{Notification, Platform};
use kurir_push::ssrf::OriginAllowlist;
use kurir_push::Pusher;
use metrics::{counter, Counter};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::route::Router;
use crate::telemetry;

pub use due::DueSettings;
pub use idempotency::{Scope, IDEMPOTENCY_TTL, IN_PROGRESS_WAIT, PENDING_CLAIM_TTL};
use receipts::Watchers;
pub use receipts::{ReceiptFilter, ReceiptStream};

/// A validated `Send`.
#[derive(Debug, Clone)]
pub struct SendCommand {
    /// Distinct recipients, 1..=10000.
    pub users: Vec<UserId>,
    pub notification: Notification,
    /// 0 = live only.
    pub ttl_seconds: u32,
    pub idempotency_key: Option<String>,
    /// Push to the recipients' devices if they have not acked after a while.
    pub fallback: Option<FallbackPolicy>,
    /// Unix ms to send at, as requested; 0 or a time already passed = now.
    pub send_at: i64,
}

/// A validated `Send.fallback`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackPolicy {
    /// Distinct platforms; empty = all.
    pub channels: Vec<Platform>,
    /// Wait for an ack this long; 0 = push at once to recipients with no live connection.
    pub after_ms: u32,
}

/// What a `Send` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOutcome {
    pub id: NotificationId,
    /// Recipients with a live connection at lookup time (0 if the lookup failed, or for
    /// a repeated idempotency key).
    pub online_users: u32,
    /// Recipients whose inbox holds the notification.
    pub stored_users: u32,
}

/// A validated `Disconnect`.
#[derive(Debug, Clone)]
pub struct DisconnectCommand {
    pub user: UserId,
    /// At most 120 bytes.
    pub reason: String,
}

/// The flow. Cheap to clone.
#[derive(Clone)]
pub struct Dispatch {
    backends: Backends,
    router: Router,
    watchers: Arc<Watchers>,
    /// The background work of the flow (routing again what a `Send` could not route),
    /// awaited by [`Self::shutdown`].
    tasks: TaskTracker,
    stop: CancellationToken,
    stored: Counter,
    /// The push providers of `Send.fallback`.
    pusher: Arc<Pusher>,
    /// Where Web Push subscriptions may point (`KURIR_WEBPUSH_ALLOWED_ORIGINS`).
    allowlist: Arc<OriginAllowlist>,
    /// Wakes the due-worker for an item scheduled before its next claim.
    alarm: Arc<due::Alarm>,
}

impl Dispatch {
    /// At most `max_watchers` receipt streams at once, each buffering `watch_buffer`
    /// receipts.
    pub fn new(backends: Backends, max_watchers: usize, watch_buffer: usize) -> Self {
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        Self {
            router: Router::new(backends.clone(), tasks.clone(), stop.clone()),
            backends,
            watchers: Arc::new(Watchers::new(max_watchers, watch_buffer)),
            tasks,
            stop,
            stored: counter!(telemetry::STORED),
            pusher: Arc::new(Pusher::new(
                kurir_push::PushSettings::for_test().guard_policy(),
            )),
            allowlist: Arc::new(OriginAllowlist::default()),
            alarm: Arc::new(due::Alarm::default()),
        }
    }

    /// Where Web Push subscriptions may point.
    pub fn allowlist(&self) -> &OriginAllowlist {
        &self.allowlist
    }

    /// Push through `pusher`, and accept Web Push subscriptions on `allowlist`. Without
    /// it no provider is configured: fallbacks fail with `PUSH_FAILED` (not configured).
    #[must_use]
    pub fn with_push(mut self, pusher: Arc<Pusher>, allowlist: OriginAllowlist) -> Self {
        self.pusher = pusher;
        self.allowlist = Arc::new(allowlist);
        self
    }

    /// End the background work and wait for it, once no call runs any more: stored
    /// notifications still waiting to be routed again are left to the gateways' replay.
    pub async fn shutdown(&self) {
        self.stop_watchers().await;
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Name the notification in the current RPC span.
fn record_id(id: NotificationId) {
    tracing::Span::current().record("id", tracing::field::display(id));
}

#[cfg(test)]
mod tests;
