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

use kurir_proto::internal::v1::Delivery;
use kurir_runtime::now_ms;
use metrics::counter;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use super::{Paths, Recipient};
use crate::telemetry;

/// Notifications waiting to be routed again at most.
pub const QUEUE: usize = 10_000;
/// How long a notification is tried again; after that it waits for a reconnect.
pub const REROUTE_FOR: Duration = Duration::from_secs(120);
/// First and longest pause between two attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// A stored notification and its recipients, with their cursors.
struct Unrouted {
    delivery: Delivery,
    recipients: Vec<Recipient>,
}

/// A queued notification and when its `Send` failed to route it.
type Queued = (Unrouted, Instant);

/// What the task takes when it starts.
type Idle = (mpsc::Receiver<Queued>, Paths);

/// Handle on the reroute task, started with the first notification it gets (a process
/// whose routing never fails never runs it). Cheap to clone.
#[derive(Clone)]
pub(super) struct Reroute {
    tx: mpsc::Sender<Queued>,
    /// The task's end of the queue and what it needs, until it starts.
    idle: Arc<Mutex<Option<Idle>>>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Reroute {
    /// The task runs on `tasks` and ends when `stop` is cancelled.
    pub(super) fn new(paths: Paths, tasks: TaskTracker, stop: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            idle: Arc::new(Mutex::new(Some((rx, paths)))),
            tasks,
            stop,
        }
    }

    /// Route `delivery` to `recipients` again later. Never waits: a full queue leaves it
    /// to replay.
    pub(super) fn later(&self, delivery: Delivery, recipients: Vec<Recipient>) {
        if let Some((rx, paths)) = self.idle.lock().take() {
            self.tasks.spawn(run(paths, rx, self.stop.clone()));
        }
        let n = Unrouted {
            delivery,
            recipients,
        };
        if self.tx.try_send((n, Instant::now())).is_err() {
            counter!(telemetry::REROUTES, "outcome" => "dropped").increment(1);
        }
    }
}

async fn run(paths: Paths, mut rx: mpsc::Receiver<Queued>, stop: CancellationToken) {
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
            match paths.route(n.delivery.clone(), &n.recipients).await {
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
