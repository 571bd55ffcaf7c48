//! ③ Bus → hub. Subscribes this node's subject and the broadcast subject for the node's
//! life, and a topic subject only while a local connection needs it. Each envelope is
//! decoded once and its frame serialized once; connections get clones of the `Bytes`.
//!
//! Topic subscriptions have one owner, the [`Topics`] task, fed by a bounded channel: it
//! subscribes on the first local subscriber and unsubscribes a little after the last, so
//! a client that resubscribes at once does not churn the bus.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kurir_backends::bus::Subscription;
use kurir_backends::{NotificationId, Topic, UserId};
use kurir_proto::internal::v1::{envelope::Kind, Delivery, Envelope};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::hub::{Hub, Outbound};
use crate::state::AppState;
use crate::telemetry;
use crate::ws::close::CloseReason;
use crate::ws::frame::PreparedNotification;
use crate::ws::session::now_ms;

/// How long a topic subject stays subscribed after its last local subscriber left.
pub const TOPIC_LINGER: Duration = Duration::from_secs(5);
/// Topic commands queued before subscribers wait (back-pressure on `subscribe` frames).
const TOPIC_COMMANDS: usize = 1024;

/// Least time between two inbox resynchronisations: a burst of losses costs one.
const RESYNC_SPACING: Duration = Duration::from_secs(1);

/// Run the node and broadcast subscriptions and the loss watcher until `stop`.
/// `subscribed` fires once the node and broadcast subscriptions are first live. A
/// subscription that ends is taken again, and whatever it may have missed is recovered
/// as after any loss: every connection re-reads its inbox.
pub async fn run(
    state: AppState,
    topics_rx: mpsc::Receiver<TopicCommand>,
    stop: CancellationToken,
    subscribed: oneshot::Sender<()>,
) {
    let topics = tokio::spawn(run_topics(state.clone(), topics_rx, stop.clone()));
    let mut losses = state.backends.bus.reconnected();
    let mut subscribed = Some(subscribed);
    'subscribe: loop {
        let ns = &state.backends.namespace;
        let node_sub = subscribe_forever(&state, ns.node_subject(&state.node), &stop).await;
        let broadcast_sub = subscribe_forever(&state, ns.broadcast_subject(), &stop).await;
        let (Some(node_sub), Some(broadcast_sub)) = (node_sub, broadcast_sub) else {
            break;
        };
        info!(node = %state.node, "relay subscribed");
        match subscribed.take() {
            Some(first) => {
                let _ = first.send(());
            }
            None => resync(&state, "bus subscriptions taken again").await,
        }
        // Their own tasks: resynchronising (a flush, then a signal to every session)
        // must never hold up deliveries.
        let mut node = tokio::spawn(relay_node(state.clone(), node_sub));
        let mut broadcast = tokio::spawn(relay_fanout(state.hub.clone(), broadcast_sub, None));
        let mut resync_at: Option<tokio::time::Instant> = None;
        let mut last_resync: Option<tokio::time::Instant> = None;
        loop {
            let at = resync_at.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                () = stop.cancelled() => {
                    node.abort();
                    broadcast.abort();
                    break 'subscribe;
                }
                _ = &mut node => {
                    warn!("node subscription ended; subscribing again");
                    broadcast.abort();
                    continue 'subscribe;
                }
                _ = &mut broadcast => {
                    warn!("broadcast subscription ended; subscribing again");
                    node.abort();
                    continue 'subscribe;
                }
                changed = losses.changed() => {
                    if changed.is_err() {
                        node.abort();
                        broadcast.abort();
                        break 'subscribe;
                    }
                    // A burst of losses costs one pass, at most one per RESYNC_SPACING.
                    let earliest = last_resync.map_or_else(tokio::time::Instant::now, |t| t + RESYNC_SPACING);
                    resync_at.get_or_insert(earliest);
                }
                () = tokio::time::sleep_until(at), if resync_at.is_some() => {
                    resync_at = None;
                    last_resync = Some(tokio::time::Instant::now());
                    resync(&state, "bus messages may have been lost").await;
                }
            }
        }
    }
    topics.abort();
}

/// Messages published while the bus could not deliver them are gone from the bus but not
/// from the inboxes: make every connection re-read its inbox. First a flush, so that the
/// server has processed this node's subscriptions (re-sent after a reconnect): whatever
/// is appended after the inboxes are read then reaches the node live.
async fn resync(state: &AppState, why: &str) {
    if let Err(e) = state.backends.bus.flush().await {
        debug!(error = %e, "bus flush before resynchronising failed");
    }
    let n = state.hub.resync_all();
    info!(connections = n, why, "resynchronising inboxes");
}

async fn subscribe_forever(
    state: &AppState,
    subject: String,
    stop: &CancellationToken,
) -> Option<Subscription> {
    let mut delay = Duration::from_millis(100);
    loop {
        match state.backends.bus.subscribe(subject.clone()).await {
            Ok(s) => return Some(s),
            Err(e) => warn!(error = %e, %subject, "subscribe failed; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn relay_node(state: AppState, mut sub: Subscription) {
    while let Some(payload) = sub.next().await {
        let Ok(env) = Envelope::decode(payload.as_ref()) else {
            warn!("undecodable envelope on node subject");
            continue;
        };
        match env.kind {
            Some(Kind::Delivery(d)) => {
                telemetry::bus_message("delivery");
                deliver_direct(&state.hub, &d);
            }
            Some(Kind::Disconnect(d)) => {
                telemetry::bus_message("disconnect");
                if let Ok(user) = UserId::parse(&d.user_id) {
                    let n = state
                        .hub
                        .close_user(&user, &CloseReason::Disconnected(d.reason));
                    debug!(%user, connections = n, "disconnect");
                }
            }
            Some(Kind::Probe(p)) => {
                telemetry::bus_message("probe");
                state.readiness.probe_returned(p.seq);
            }
            None => {}
        }
    }
}

fn live(d: &Delivery) -> Option<NotificationId> {
    if d.expires_at > 0 && d.expires_at <= now_ms() {
        telemetry::dropped("expired");
        return None;
    }
    NotificationId::parse(&d.id).ok()
}

/// A targeted delivery: one frame per recipient (their cursors differ), or one for all
/// when the notification is not stored.
fn deliver_direct(hub: &Hub, d: &Delivery) {
    let Some(id) = live(d) else { return };
    let prepared = PreparedNotification::new(d);
    let stored = d.expires_at > 0;
    let outbound = |frame| {
        Arc::new(Outbound {
            id,
            stored,
            direct: true,
            created_at: d.created_at,
            frame,
        })
    };
    if !stored {
        let shared = outbound(prepared.into_frame());
        for r in &d.recipients {
            hub.to_user(&r.user_id, &shared);
        }
        return;
    }
    for r in &d.recipients {
        let cursor = (!r.cursor.is_empty()).then_some(r.cursor.as_str());
        hub.to_user(&r.user_id, &outbound(prepared.frame(false, cursor)));
    }
}

/// Topic or broadcast: one frame for everyone.
async fn relay_fanout(hub: Hub, mut sub: Subscription, topic: Option<Topic>) {
    while let Some(payload) = sub.next().await {
        let Ok(Envelope {
            kind: Some(Kind::Delivery(d)),
        }) = Envelope::decode(payload.as_ref())
        else {
            continue;
        };
        telemetry::bus_message(if topic.is_some() {
            "topic"
        } else {
            "broadcast"
        });
        let Some(id) = live(&d) else { continue };
        let msg = Arc::new(Outbound {
            id,
            stored: false,
            direct: false,
            created_at: d.created_at,
            frame: PreparedNotification::new(&d).into_frame(),
        });
        match &topic {
            Some(t) => hub.to_topic(t, &msg),
            None => hub.to_all(&msg),
        };
    }
}

/// A request to the topic owner.
#[derive(Debug)]
pub enum TopicCommand {
    Ensure(Topic, oneshot::Sender<bool>),
    Release(Topic),
    Recheck(Topic),
}

/// Handle on the topic owner task. Cheap to clone.
#[derive(Clone)]
pub struct Topics {
    tx: mpsc::Sender<TopicCommand>,
}

impl Topics {
    pub fn channel() -> (Self, mpsc::Receiver<TopicCommand>) {
        let (tx, rx) = mpsc::channel(TOPIC_COMMANDS);
        (Self { tx }, rx)
    }

    /// Make sure this node holds the topic's bus subscription; `Err` if it cannot.
    pub async fn ensure(&self, topic: &Topic) -> Result<(), ()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(TopicCommand::Ensure(topic.clone(), tx))
            .await
            .map_err(|_| ())?;
        match rx.await {
            Ok(true) => Ok(()),
            _ => Err(()),
        }
    }

    /// The topic's last local subscriber left. When the queue is full the command is
    /// dropped: the subject then stays subscribed until the next release of the topic.
    pub fn release(&self, topic: &Topic) {
        let _ = self.tx.try_send(TopicCommand::Release(topic.clone()));
    }
}

async fn run_topics(
    state: AppState,
    mut rx: mpsc::Receiver<TopicCommand>,
    stop: CancellationToken,
) {
    let mut held: HashMap<Topic, JoinHandle<()>> = HashMap::new();
    let bus = state.backends.bus.clone();
    let ns = state.backends.namespace.clone();
    let recheck = state.topics.tx.clone();
    while let Some(cmd) = tokio::select! {
        () = stop.cancelled() => None,
        c = rx.recv() => c,
    } {
        match cmd {
            TopicCommand::Ensure(topic, reply) => {
                if held.get(&topic).is_some_and(|h| !h.is_finished()) {
                    let _ = reply.send(true);
                    continue;
                }
                match bus.subscribe(ns.topic_subject(&topic)).await {
                    Ok(sub) => {
                        let task =
                            tokio::spawn(relay_fanout(state.hub.clone(), sub, Some(topic.clone())));
                        held.insert(topic, task);
                        let _ = reply.send(true);
                    }
                    Err(e) => {
                        warn!(error = %e, %topic, "topic subscribe failed");
                        let _ = reply.send(false);
                    }
                }
            }
            TopicCommand::Release(topic) => {
                let tx = recheck.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(TOPIC_LINGER).await;
                    let _ = tx.send(TopicCommand::Recheck(topic)).await;
                });
            }
            TopicCommand::Recheck(topic) => {
                if !state.hub.has_subscribers(&topic) {
                    if let Some(task) = held.remove(&topic) {
                        task.abort();
                        debug!(%topic, "topic unsubscribed");
                    }
                }
            }
        }
        metrics::gauge!(telemetry::TOPIC_SUBSCRIPTIONS).set(held.len() as f64);
    }
    for (_, task) in held {
        task.abort();
    }
}
