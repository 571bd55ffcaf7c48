//! ② Stored notifications that a `Send` appended but could not route live (the presence
//! lookup or a publish failed) are routed again in the background, with backoff, until
//! that works or [`REROUTE_FOR`] has passed. Gateways re-read inboxes only on their own
//! losses and on reconnects, so without this a user whose connection stays open — to a
//! gateway that never noticed the dispatcher's trouble — would see them only on the
//! next reconnect.
//!
//! One task, oldest first: during an outage everything waits behind the first
//! notification, and follows it as soon as it goes through. The queue is bounded
//! ([`QUEUE`]); when it is full, a notification is left to replay alone and counted
//! (`kurir_dispatcher_reroutes_total{outcome="dropped"}`): it is still in the inbox.

use std::sync::Arc;
use std::time::Duration;

use kurir_backends::UserId;
use kurir_proto::internal::v1::Delivery;
use metrics::counter;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::dispatch::now_ms;
use crate::route::Router;
use crate::telemetry;

/// Notifications waiting to be routed again at most.
pub const QUEUE: usize = 10_000;
/// How long a notification is tried again; after that it waits for a reconnect.
pub const REROUTE_FOR: Duration = Duration::from_secs(120);
/// First and longest pause between two attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// A stored notification and its recipients' cursors.
pub struct Unrouted {
    pub delivery: Delivery,
    pub users: Vec<UserId>,
    pub cursors: Vec<String>,
}

/// A queued notification and when its `Send` failed to route it.
type Queued = (Unrouted, Instant);

/// What the task takes when it starts.
type Idle = (mpsc::Receiver<Queued>, Router);

/// Handle on the reroute task, started with the first notification it gets. Cheap to
/// clone.
#[derive(Clone)]
pub struct Reroute {
    tx: mpsc::Sender<Queued>,
    /// The task's end of the queue and what it needs, until it starts.
    idle: Arc<Mutex<Option<Idle>>>,
    stop: CancellationToken,
}

impl Reroute {
    /// The task ends when `stop` is cancelled.
    pub fn new(router: Router, stop: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            idle: Arc::new(Mutex::new(Some((rx, router)))),
            stop,
        }
    }

    /// Route `n` again later. Never waits: a full queue leaves it to replay.
    pub fn later(&self, n: Unrouted) {
        if let Some((rx, router)) = self.idle.lock().take() {
            tokio::spawn(run(router, rx, self.stop.clone()));
        }
        if self.tx.try_send((n, Instant::now())).is_err() {
            counter!(telemetry::REROUTES, "outcome" => "dropped").increment(1);
        }
    }
}

async fn run(router: Router, mut rx: mpsc::Receiver<(Unrouted, Instant)>, stop: CancellationToken) {
    let mut pause = BACKOFF.0;
    while let Some((n, since)) = tokio::select! {
        () = stop.cancelled() => None,
        next = rx.recv() => next,
    } {
        loop {
            if n.delivery.expires_at <= now_ms() {
                counter!(telemetry::REROUTES, "outcome" => "expired").increment(1);
                break;
            }
            match router.route(n.delivery.clone(), &n.users, &n.cursors).await {
                Ok(online) => {
                    counter!(telemetry::REROUTES, "outcome" => "routed").increment(1);
                    debug!(id = %n.delivery.id, online, "stored notification routed on a later attempt");
                    pause = BACKOFF.0;
                    break;
                }
                Err(e) if since.elapsed() >= REROUTE_FOR => {
                    counter!(telemetry::REROUTES, "outcome" => "given_up").increment(1);
                    info!(id = %n.delivery.id, stage = e.stage, error = %e.error, "giving up routing a stored notification; it waits for a reconnect");
                    break;
                }
                Err(_) => {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(BACKOFF.1);
                }
            }
        }
    }
}
