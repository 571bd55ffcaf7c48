//! ③ Bus → hub. Subscribes this node's subject and the broadcast subject for the node's
//! life, and a topic subject only while a local connection needs it. Each envelope is
//! decoded once and its frame serialized once; connections get clones of the `Bytes`.
//!
//! Topic subscriptions have one owner, the [`Topics`] task, fed by a bounded channel: it
//! subscribes on the first local subscriber and unsubscribes a little after the last, so
//! a client that resubscribes at once does not churn the bus. It finds the last
//! subscriber gone by looking at the hub (no release message that could be lost), and
//! holds at most `KURIR_MAX_TOPICS_PER_NODE` topics. A new topic subscription is
//! confirmed only once the bus server has it ([`barrier`]).

pub mod barrier;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kurir_backends::bus::Subscription;
use kurir_backends::{Backends, NodeId, NotificationId, Topic, UserId};
use kurir_proto::internal::v1::{envelope::Kind, Delivery, Envelope, Probe};
use kurir_runtime::now_ms;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::hub::{Hub, Outbound};
use crate::protocol::{CloseReason, PreparedNotification};
use crate::readiness::Readiness;
use crate::telemetry;

/// How long a topic subject stays subscribed after its last local subscriber left.
pub const TOPIC_LINGER: Duration = Duration::from_secs(5);
/// Topic commands queued before subscribers wait (back-pressure on `subscribe` frames).
const TOPIC_COMMANDS: usize = 1024;
/// How often the topic owner compares the subscriptions it holds with the hub's needs.
const TOPIC_SWEEP: Duration = Duration::from_secs(1);
/// Least time between two extra looks for unused topics when a subscribe finds the
/// node at its topic cap.
const REMARK_SPACING: Duration = Duration::from_millis(100);

/// How long a subscriber waits for the bus to confirm a new topic subscription before
/// it is answered anyway (the bus is slow or away; readiness reports that).
const BARRIER_WAIT: Duration = Duration::from_secs(2);

/// Least time between two inbox resynchronisations: a burst of losses costs one.
const RESYNC_SPACING: Duration = Duration::from_secs(1);

/// What the relay works on: the bus it reads, the hub it writes to, and the readiness
/// its probes report to.
#[derive(Clone)]
pub struct Relay {
    pub node: NodeId,
    pub backends: Backends,
    pub hub: Hub,
    pub readiness: Readiness,
    /// `KURIR_MAX_TOPICS_PER_NODE`.
    pub max_topics: usize,
    pub barriers: barrier::Barriers,
}

/// Run the node and broadcast subscriptions and the loss watcher until `stop`.
/// `subscribed` fires once the node and broadcast subscriptions are first live. A
/// subscription that ends is taken again, and whatever it may have missed is recovered
/// as after any loss: every connection re-reads its inbox.
pub async fn run(
    state: Relay,
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
async fn resync(state: &Relay, why: &str) {
    if let Err(e) = state.backends.bus.flush().await {
        debug!(error = %e, "bus flush before resynchronising failed");
    }
    let n = state.hub.resync_all();
    info!(connections = n, why, "resynchronising inboxes");
}

async fn subscribe_forever(
    state: &Relay,
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

async fn relay_node(state: Relay, mut sub: Subscription) {
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
                if !state.barriers.passed(p.seq) {
                    state.readiness.probe_returned(p.seq);
                }
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
    let outbound = |frame, cursor: Option<&str>| {
        Arc::new(Outbound {
            id,
            stored,
            direct: true,
            created_at: d.created_at,
            cursor: cursor.map(Box::from),
            frame,
        })
    };
    if !stored {
        let shared = outbound(prepared.into_frame(), None);
        for r in &d.recipients {
            hub.to_user(&r.user_id, &shared);
        }
        return;
    }
    for r in &d.recipients {
        let cursor = (!r.cursor.is_empty()).then_some(r.cursor.as_str());
        hub.to_user(&r.user_id, &outbound(prepared.frame(false, cursor), cursor));
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
            cursor: None,
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
    /// Hold the topic's subscription; the answer carries the barrier to wait for when
    /// the subscription is new.
    Ensure(
        Topic,
        oneshot::Sender<Result<Option<oneshot::Receiver<()>>, TopicError>>,
    ),
}

/// Why a topic's bus subscription could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The node holds `KURIR_MAX_TOPICS_PER_NODE` topics, none of them unused.
    #[error("this node holds its limit of topics")]
    TooMany,
    /// The bus refused the subscription, or the node is stopping.
    #[error("the bus subscription failed")]
    Unavailable,
}

/// Handle on the topic owner task. Cheap to clone.
#[derive(Clone)]
pub struct Topics {
    tx: mpsc::Sender<TopicCommand>,
}

impl Topics {
    pub fn channel() -> (Self, mpsc::Receiver<TopicCommand>) {
        // Full: subscribers wait their turn (back-pressure on `subscribe` frames).
        let (tx, rx) = mpsc::channel(TOPIC_COMMANDS);
        (Self { tx }, rx)
    }

    /// Make sure this node holds the topic's bus subscription. Call after adding the
    /// connection to the hub's topic map: the owner then never drops a subscription
    /// that a connection is about to rely on.
    ///
    /// # Errors
    /// The node's topic cap is reached, or the bus subscription failed.
    pub async fn ensure(&self, topic: &Topic) -> Result<(), TopicError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(TopicCommand::Ensure(topic.clone(), tx))
            .await
            .map_err(|_| TopicError::Unavailable)?;
        let barrier = rx.await.unwrap_or(Err(TopicError::Unavailable))?;
        if let Some(barrier) = barrier {
            // Waited for here, not by the owner: subscribes to other topics go on.
            if tokio::time::timeout(BARRIER_WAIT, barrier).await.is_err() {
                debug!(%topic, "the bus did not confirm the subscription in time");
            }
        }
        Ok(())
    }
}

/// One topic's bus subscription, relayed by its own task.
struct Held {
    task: JoinHandle<()>,
    /// When the sweep first found it without a local subscriber.
    idle_since: Option<tokio::time::Instant>,
}

/// The topic subscriptions of this node, owned by one task. Nothing tells it that a
/// topic lost its last subscriber (a message saying so could be lost or queue up under
/// a flood): it looks, every [`TOPIC_SWEEP`], at each topic it holds in the hub, and
/// drops those without a local subscriber for [`TOPIC_LINGER`]. What it holds is
/// therefore always what the hub needs, plus topics left within the last few seconds.
struct TopicOwner {
    state: Relay,
    held: HashMap<Topic, Held>,
    /// Held topics found idle by the last look: candidates to make room at the cap.
    idle: usize,
    /// When the held topics were last compared with the hub.
    marked_at: Option<tokio::time::Instant>,
}

impl TopicOwner {
    async fn ensure(&mut self, topic: Topic) -> Result<Option<oneshot::Receiver<()>>, TopicError> {
        if let Some(h) = self.held.get_mut(&topic) {
            if !h.task.is_finished() {
                if h.idle_since.take().is_some() {
                    self.idle -= 1;
                }
                return Ok(None);
            }
            // Its subscription ended: take it again.
            self.drop_topic(&topic);
        }
        if self.held.len() >= self.state.max_topics && !self.evict_idle() {
            return Err(TopicError::TooMany);
        }
        let subject = self.state.backends.namespace.topic_subject(&topic);
        match self.state.backends.bus.subscribe(subject).await {
            Ok(sub) => {
                let task = tokio::spawn(relay_fanout(
                    self.state.hub.clone(),
                    sub,
                    Some(topic.clone()),
                ));
                self.held.insert(
                    topic,
                    Held {
                        task,
                        idle_since: None,
                    },
                );
                Ok(Some(self.barrier().await))
            }
            Err(e) => {
                warn!(error = %e, %topic, "topic subscribe failed");
                Err(TopicError::Unavailable)
            }
        }
    }

    /// Publish a barrier probe to this node's subject, after the subscription just
    /// asked for. A failed publish leaves the barrier to time out.
    async fn barrier(&self) -> oneshot::Receiver<()> {
        let (seq, rx) = self.state.barriers.open();
        let env = Envelope {
            kind: Some(Kind::Probe(Probe { seq })),
        };
        let subject = self.state.backends.namespace.node_subject(&self.state.node);
        if let Err(e) = self
            .state
            .backends
            .bus
            .publish(subject, env.encode_to_vec().into())
            .await
        {
            debug!(error = %e, "barrier probe not published");
        }
        rx
    }

    /// Drop one held topic that has no local subscriber (lingering); `false` if none.
    /// When the last sweep found none, look again, at most once per [`REMARK_SPACING`]:
    /// a flood of refused subscribes costs a bounded number of passes over the topics.
    fn evict_idle(&mut self) -> bool {
        if self.idle == 0 {
            let now = tokio::time::Instant::now();
            if self
                .marked_at
                .is_some_and(|at| now.duration_since(at) < REMARK_SPACING)
            {
                return false;
            }
            self.mark(now);
        }
        let hub = &self.state.hub;
        let victim = self
            .held
            .iter()
            .find(|(t, h)| h.idle_since.is_some() && !hub.has_subscribers(t))
            .map(|(t, _)| t.clone());
        match victim {
            Some(t) => {
                self.drop_topic(&t);
                true
            }
            None => false,
        }
    }

    /// Mark held topics without local subscribers idle (and the others not); returns
    /// those idle past the linger, and those whose subscription ended while connections
    /// still want them.
    fn mark(&mut self, now: tokio::time::Instant) -> (Vec<Topic>, Vec<Topic>) {
        let hub = &self.state.hub;
        let mut gone = Vec::new();
        let mut ended = Vec::new();
        self.idle = 0;
        self.marked_at = Some(now);
        for (topic, h) in &mut self.held {
            if hub.has_subscribers(topic) {
                h.idle_since = None;
                if h.task.is_finished() {
                    ended.push(topic.clone());
                }
                continue;
            }
            let since = *h.idle_since.get_or_insert(now);
            if now.duration_since(since) >= TOPIC_LINGER {
                gone.push(topic.clone());
            }
            self.idle += 1;
        }
        (gone, ended)
    }

    fn drop_topic(&mut self, topic: &Topic) {
        if let Some(h) = self.held.remove(topic) {
            h.task.abort();
            if h.idle_since.is_some() {
                self.idle -= 1;
            }
            debug!(%topic, "topic unsubscribed");
        }
    }

    /// Compare what is held with what the hub needs: mark topics without local
    /// subscribers idle, drop those idle past the linger, take again a subscription
    /// that ended while connections still want it.
    async fn sweep(&mut self) {
        let (gone, ended) = self.mark(tokio::time::Instant::now());
        for topic in gone {
            self.drop_topic(&topic);
        }
        for topic in ended {
            warn!(%topic, "topic subscription ended; subscribing again");
            self.drop_topic(&topic);
            let _ = self.ensure(topic).await;
        }
    }
}

async fn run_topics(state: Relay, mut rx: mpsc::Receiver<TopicCommand>, stop: CancellationToken) {
    let mut owner = TopicOwner {
        state,
        held: HashMap::new(),
        idle: 0,
        marked_at: None,
    };
    let mut sweep = tokio::time::interval(TOPIC_SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            cmd = rx.recv() => match cmd {
                Some(TopicCommand::Ensure(topic, reply)) => {
                    let _ = reply.send(owner.ensure(topic).await);
                }
                None => break,
            },
            _ = sweep.tick() => owner.sweep().await,
        }
        metrics::gauge!(telemetry::TOPIC_SUBSCRIPTIONS).set(owner.held.len() as f64);
    }
    for (_, h) in owner.held.drain() {
        h.task.abort();
    }
    metrics::gauge!(telemetry::TOPIC_SUBSCRIPTIONS).set(0.0);
}
