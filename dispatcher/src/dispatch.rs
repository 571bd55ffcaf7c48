//! ② The flow behind every RPC, on validated values and the three seams.
//!
//! `Send`: idempotency claim → time-ordered id → inbox append (stored notifications) →
//! one presence lookup for all recipients → group by gateway node → one publish per node
//! that holds recipients. Topic publishes and broadcasts go to their one subject, live
//! only. Receipts are followed through a bounded per-watcher buffer.
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
//!   then logged and counted (`kurir_dispatcher_route_failures_total`) and the call
//!   still succeeds.
//! - A live notification (`ttl_seconds = 0`) exists only in flight: a failed lookup or
//!   publish fails the call and gives its key up; a successful publish settles it.
//! - A settle that fails is logged and the call still succeeds (the work is done): the
//!   key then expires after [`PENDING_CLAIM_TTL`], and a retry after that sends again, a
//!   duplicate rather than a loss.

pub mod idempotency;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use kurir_backends::bus::Subscription;
use kurir_backends::inbox::NewEntry;
use kurir_backends::presence::UserPresence;
use kurir_backends::{BackendError, Backends, NotificationId, Topic, UserId};
use kurir_proto::internal::v1::{envelope::Kind, Delivery, Disconnect, Envelope, ReceiptBatch};
use kurir_proto::v1::{Notification, Receipt};
use metrics::{counter, gauge, Counter};
use prost::Message;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::error::DispatchError;
use crate::reroute::{Reroute, Unrouted};
use crate::route::Router;
use crate::telemetry;

use idempotency::{Admission, ClaimGuard};
pub use idempotency::{Scope, IDEMPOTENCY_TTL, IN_PROGRESS_WAIT, PENDING_CLAIM_TTL};

/// A validated `Send`.
#[derive(Debug, Clone)]
pub struct SendCommand {
    /// Distinct recipients, 1..=10000.
    pub users: Vec<UserId>,
    pub notification: Notification,
    /// 0 = live only.
    pub ttl_seconds: u32,
    pub idempotency_key: Option<String>,
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

/// Which receipts a watcher wants; an empty set matches everything.
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

/// The flow. Cheap to clone.
#[derive(Clone)]
pub struct Dispatch {
    backends: Backends,
    router: Router,
    reroute: Reroute,
    watchers: Arc<Watchers>,
    stored: Counter,
}

/// Limits and lifetime of the receipt watchers.
struct Watchers {
    /// One permit per open stream (`KURIR_MAX_WATCHERS`).
    slots: Arc<Semaphore>,
    /// `KURIR_WATCH_BUFFER`.
    buffer: usize,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Dispatch {
    pub fn new(backends: Backends, max_watchers: usize, watch_buffer: usize) -> Self {
        let stop = CancellationToken::new();
        let router = Router::new(backends.clone());
        Self {
            reroute: Reroute::new(router.clone(), stop.clone()),
            router,
            backends,
            watchers: Arc::new(Watchers {
                slots: Arc::new(Semaphore::new(max_watchers)),
                buffer: watch_buffer,
                stop,
                tracker: TaskTracker::new(),
            }),
            stored: counter!(telemetry::STORED),
        }
    }

    /// Notify users; see the module docs for the order of steps and the failure rules.
    /// `scope` is the caller's: its idempotency keys are its own.
    ///
    /// # Errors
    /// `Backend` when the claim or the append fails, or, for a live notification, when
    /// the lookup or a publish fails; `SendInProgress` when another call holds the
    /// idempotency key pending for longer than [`IN_PROGRESS_WAIT`];
    /// `IdempotencyKeyReused` when the key was used for a different request.
    pub async fn send(
        &self,
        cmd: SendCommand,
        scope: &Scope,
    ) -> Result<SendOutcome, DispatchError> {
        let id = NotificationId::generate();
        record_id(id);
        let claim = match idempotency::admit(&self.backends.inbox, scope, &cmd, id).await? {
            Admission::Send(claim) => claim,
            Admission::Repeat(first) => {
                record_id(first);
                return Ok(SendOutcome {
                    id: first,
                    online_users: 0,
                    stored_users: 0,
                });
            }
        };
        let result = self
            .route(id, cmd.users, cmd.notification, cmd.ttl_seconds, claim)
            .await;
        match &result {
            Ok(out) => debug!(%id, online = out.online_users, stored = out.stored_users, "sent"),
            Err(e) => debug!(%id, error = %e, "send failed"),
        }
        result
    }

    async fn route(
        &self,
        id: NotificationId,
        users: Vec<UserId>,
        notification: Notification,
        ttl_seconds: u32,
        mut claim: Option<ClaimGuard>,
    ) -> Result<SendOutcome, DispatchError> {
        let created_at = now_ms();
        let stored = ttl_seconds > 0;
        let expires_at = if stored {
            created_at + i64::from(ttl_seconds) * 1000
        } else {
            0
        };
        let delivery = Delivery {
            id: id.to_string(),
            notification: Some(notification),
            topic: String::new(),
            created_at,
            expires_at,
            recipients: Vec::new(),
        };

        let cursors = if stored {
            let collapse_key = delivery
                .notification
                .as_ref()
                .map(|n| n.collapse_key.clone());
            let entry = NewEntry {
                id,
                expires_at,
                payload: Bytes::from(delivery.encode_to_vec()),
                collapse_key,
            };
            let appended = match self.backends.inbox.append(&users, &entry).await {
                Ok(c) if c.len() == users.len() => c,
                Ok(c) => {
                    // A contract violation: the claim guard, dropped here, gives the key up.
                    let what = format!(
                        "append returned {} cursors for {} users",
                        c.len(),
                        users.len()
                    );
                    return Err(BackendError::corrupt("inbox", what).into());
                }
                Err(e) => {
                    if let Some(claim) = claim.take() {
                        claim.release().await;
                    }
                    return Err(e.into());
                }
            };
            self.stored.increment(users.len() as u64);
            // Stored: from here on the notification reaches its users whatever happens.
            if let Some(claim) = claim.take() {
                claim.settle().await;
            }
            appended
                .into_iter()
                .map(|c| c.as_str().to_owned())
                .collect()
        } else {
            vec![String::new(); users.len()]
        };
        let stored_users = if stored { users.len() as u32 } else { 0 };

        let online_users = match self.router.route(delivery, &users, &cursors).await {
            Ok(online) => online,
            Err(e) if stored => {
                counter!(telemetry::ROUTE_FAILURES, "stage" => e.stage).increment(1);
                warn!(%id, stage = e.stage, error = %e.error, "stored notification not routed live; routing it again in the background");
                self.reroute.later(Unrouted {
                    delivery: e.delivery,
                    users,
                    cursors,
                });
                0
            }
            Err(e) => {
                if let Some(claim) = claim {
                    claim.release().await;
                }
                return Err(e.error.into());
            }
        };
        if let Some(claim) = claim {
            claim.settle().await;
        }
        Ok(SendOutcome {
            id,
            online_users,
            stored_users,
        })
    }

    /// Deliver to every live connection subscribed to `topic`.
    ///
    /// # Errors
    /// `Backend` when the bus refuses the message.
    pub async fn publish(
        &self,
        topic: Topic,
        notification: Notification,
    ) -> Result<NotificationId, DispatchError> {
        let subject = self.backends.namespace.topic_subject(&topic);
        self.live(subject, topic.as_str(), notification).await
    }

    /// Deliver to every live connection of the cluster.
    ///
    /// # Errors
    /// `Backend` when the bus refuses the message.
    pub async fn broadcast(
        &self,
        notification: Notification,
    ) -> Result<NotificationId, DispatchError> {
        let subject = self.backends.namespace.broadcast_subject();
        self.live(subject, "", notification).await
    }

    async fn live(
        &self,
        subject: String,
        topic: &str,
        notification: Notification,
    ) -> Result<NotificationId, DispatchError> {
        let id = NotificationId::generate();
        record_id(id);
        let envelope = Envelope {
            kind: Some(Kind::Delivery(Delivery {
                id: id.to_string(),
                notification: Some(notification),
                topic: topic.to_owned(),
                created_at: now_ms(),
                expires_at: 0,
                recipients: Vec::new(),
            })),
        };
        self.router
            .publish_all(vec![(subject, Bytes::from(envelope.encode_to_vec()))])
            .await?;
        debug!(%id, topic, "published");
        Ok(id)
    }

    /// The live connections of `users`, in their order.
    ///
    /// # Errors
    /// `Backend` when the presence store fails.
    pub async fn presence(&self, users: &[UserId]) -> Result<Vec<UserPresence>, DispatchError> {
        Ok(self.router.lookup(users).await?)
    }

    /// Close every connection of a user: one envelope to each node holding one. Returns
    /// the number of connections the disconnect was routed to.
    ///
    /// # Errors
    /// `Backend` when the lookup or a publish fails.
    pub async fn disconnect(&self, cmd: DisconnectCommand) -> Result<u32, DispatchError> {
        let presence = self.router.lookup(std::slice::from_ref(&cmd.user)).await?;
        let Some(user) = presence.into_iter().next() else {
            return Ok(0);
        };
        let payload = Bytes::from(
            Envelope {
                kind: Some(Kind::Disconnect(Disconnect {
                    user_id: cmd.user.as_str().to_owned(),
                    reason: cmd.reason,
                })),
            }
            .encode_to_vec(),
        );
        let messages = user
            .nodes()
            .iter()
            .map(|node| (self.backends.namespace.node_subject(node), payload.clone()))
            .collect();
        self.router.publish_all(messages).await?;
        Ok(user.connections.len() as u32)
    }

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

/// Name the notification in the current RPC span.
fn record_id(id: NotificationId) {
    tracing::Span::current().record("id", tracing::field::display(id));
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use kurir_backends::bus::{Bus, MemoryBus};

    use kurir_backends::inbox::{
        Claim, Claimant, Cursor, IdempotencyKey, Inbox, MemoryInbox, StoredEntry,
    };
    use kurir_backends::presence::{Lease, MemoryPresence, PresenceStore};
    use kurir_backends::{ConnId, Namespace};
    use tokio::sync::watch;

    use super::*;

    fn down(backend: &'static str) -> BackendError {
        BackendError::unavailable(backend, "down for the test")
    }

    /// A bus whose publishes fail while `down`; counts the ones that went through.
    struct FlakyBus {
        inner: MemoryBus,
        down: AtomicBool,
        published: AtomicUsize,
    }

    #[async_trait]
    impl Bus for FlakyBus {
        async fn publish(&self, subject: String, payload: Bytes) -> Result<(), BackendError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(down("nats"));
            }
            self.published.fetch_add(1, Ordering::SeqCst);
            self.inner.publish(subject, payload).await
        }
        async fn subscribe(&self, subject: String) -> Result<Subscription, BackendError> {
            self.inner.subscribe(subject).await
        }
        async fn flush(&self) -> Result<(), BackendError> {
            Ok(())
        }
        fn reconnected(&self) -> watch::Receiver<u64> {
            self.inner.reconnected()
        }
        fn is_connected(&self) -> bool {
            true
        }
    }

    /// An inbox whose appends fail while `down` (claims keep working).
    struct FlakyInbox {
        inner: MemoryInbox,
        down: AtomicBool,
    }

    #[async_trait]
    impl Inbox for FlakyInbox {
        async fn append(
            &self,
            users: &[UserId],
            entry: &NewEntry,
        ) -> Result<Vec<Cursor>, BackendError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(down("redis"));
            }
            self.inner.append(users, entry).await
        }
        async fn pending(
            &self,
            user: &UserId,
            after: Option<&Cursor>,
            limit: usize,
        ) -> Result<Vec<StoredEntry>, BackendError> {
            self.inner.pending(user, after, limit).await
        }
        async fn ack(&self, user: &UserId, id: NotificationId) -> Result<bool, BackendError> {
            self.inner.ack(user, id).await
        }
        async fn claim(
            &self,
            key: &IdempotencyKey,
            by: Claimant,
            ttl: Duration,
        ) -> Result<Claim, BackendError> {
            self.inner.claim(key, by, ttl).await
        }
        async fn settle(
            &self,
            key: &IdempotencyKey,
            by: Claimant,
            ttl: Duration,
        ) -> Result<bool, BackendError> {
            self.inner.settle(key, by, ttl).await
        }
        async fn release(&self, key: &IdempotencyKey, by: Claimant) -> Result<(), BackendError> {
            self.inner.release(key, by).await
        }
    }

    struct Fixture {
        dispatch: Dispatch,
        bus: Arc<FlakyBus>,
        inbox: Arc<FlakyInbox>,
    }

    async fn fixture() -> Fixture {
        let bus = Arc::new(FlakyBus {
            inner: MemoryBus::new(64),
            down: AtomicBool::new(false),
            published: AtomicUsize::new(0),
        });
        let inbox = Arc::new(FlakyInbox {
            inner: MemoryInbox::new(100),
            down: AtomicBool::new(false),
        });
        let presence = Arc::new(MemoryPresence::new(Duration::from_secs(60)));
        let lease = Lease::new(kurir_backends::NodeId::parse("gw-1").unwrap());
        presence
            .add(&lease, &user("alice"), ConnId::generate())
            .await
            .unwrap();
        presence
            .beat(&lease, Duration::from_secs(60))
            .await
            .unwrap();
        let backends = Backends {
            namespace: Namespace::random_for_test(),
            bus: bus.clone(),
            presence,
            inbox: inbox.clone(),
        };
        Fixture {
            dispatch: Dispatch::new(backends, 1, 1),
            bus,
            inbox,
        }
    }

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    fn cmd(ttl_seconds: u32, key: Option<&str>) -> SendCommand {
        SendCommand {
            users: vec![user("alice"), user("bob")],
            notification: Notification {
                title: "t".into(),
                ..Default::default()
            },
            ttl_seconds,
            idempotency_key: key.map(str::to_owned),
        }
    }

    /// The scope every test call comes from.
    fn scope() -> Scope {
        Scope::of_api_key(b"test-api-key-0123456789abcdef0123456789")
    }

    /// `key` as stored for [`scope`].
    fn idem(key: &str) -> IdempotencyKey {
        IdempotencyKey::new(scope().as_str(), key).unwrap()
    }

    /// Another call of the same request as `c`, with its own id.
    fn twin(c: &SendCommand) -> Claimant {
        Claimant {
            id: NotificationId::generate(),
            fingerprint: idempotency::fingerprint(c),
        }
    }

    /// Whether `key` is free again (claiming it with a fresh id wins).
    async fn key_is_free(f: &Fixture, key: &str) -> bool {
        let probe = twin(&cmd(0, Some(key)));
        f.inbox
            .claim(&idem(key), probe, PENDING_CLAIM_TTL)
            .await
            .unwrap()
            == Claim::New
    }

    #[tokio::test]
    async fn a_send_settles_its_key() {
        let f = fixture().await;
        for (ttl, key) in [(60, "stored"), (0, "live")] {
            let out = f
                .dispatch
                .send(cmd(ttl, Some(key)), &scope())
                .await
                .unwrap();
            let probe = twin(&cmd(ttl, Some(key)));
            assert_eq!(
                f.inbox
                    .claim(&idem(key), probe, PENDING_CLAIM_TTL)
                    .await
                    .unwrap(),
                Claim::Existing(out.id),
                "{key}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_pending_past_the_wait_is_in_progress() {
        let f = fixture().await;
        let first = twin(&cmd(60, Some("k")));
        f.inbox
            .claim(&idem("k"), first, PENDING_CLAIM_TTL)
            .await
            .unwrap();
        let err = f
            .dispatch
            .send(cmd(60, Some("k")), &scope())
            .await
            .unwrap_err();
        assert!(matches!(err, DispatchError::SendInProgress), "{err:?}");
        assert!(f
            .inbox
            .pending(&user("alice"), None, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(f.bus.published.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_waits_for_the_first_send_to_settle_or_give_up() {
        let f = fixture().await;
        // Settled while the retry waits: the first id, nothing delivered.
        let first = twin(&cmd(60, Some("a")));
        f.inbox
            .claim(&idem("a"), first, PENDING_CLAIM_TTL)
            .await
            .unwrap();
        let retry = tokio::spawn({
            let dispatch = f.dispatch.clone();
            async move { dispatch.send(cmd(60, Some("a")), &scope()).await }
        });
        tokio::time::sleep(IN_PROGRESS_WAIT / 2).await;
        assert!(f
            .inbox
            .settle(&idem("a"), first, IDEMPOTENCY_TTL)
            .await
            .unwrap());
        let out = retry.await.unwrap().unwrap();
        assert_eq!((out.id, out.stored_users), (first.id, 0));
        assert_eq!(f.bus.published.load(Ordering::SeqCst), 0);

        // Given up while the retry waits: the retry is a new send.
        let first = twin(&cmd(60, Some("b")));
        f.inbox
            .claim(&idem("b"), first, PENDING_CLAIM_TTL)
            .await
            .unwrap();
        let retry = tokio::spawn({
            let dispatch = f.dispatch.clone();
            async move { dispatch.send(cmd(60, Some("b")), &scope()).await }
        });
        tokio::time::sleep(IN_PROGRESS_WAIT / 2).await;
        f.inbox.release(&idem("b"), first).await.unwrap();
        let out = retry.await.unwrap().unwrap();
        assert_ne!(out.id, first.id);
        assert_eq!(out.stored_users, 2);
        let stored = f.inbox.pending(&user("alice"), None, 10).await.unwrap();
        assert_eq!(stored.iter().map(|e| e.id).collect::<Vec<_>>(), [out.id]);
    }

    #[tokio::test]
    async fn a_stored_send_succeeds_when_only_routing_fails() {
        let f = fixture().await;
        f.bus.down.store(true, Ordering::SeqCst);
        let out = f
            .dispatch
            .send(cmd(60, Some("k")), &scope())
            .await
            .expect("stored is enough");
        assert_eq!((out.online_users, out.stored_users), (0, 2));
        assert_eq!(
            f.inbox
                .pending(&user("alice"), None, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        // The key keeps naming the stored notification.
        let again = f.dispatch.send(cmd(60, Some("k")), &scope()).await.unwrap();
        assert_eq!(again.id, out.id);
    }

    #[tokio::test]
    async fn a_stored_send_that_could_not_be_routed_is_routed_once_the_bus_is_back() {
        let f = fixture().await;
        f.bus.down.store(true, Ordering::SeqCst);
        let out = f.dispatch.send(cmd(60, None), &scope()).await.unwrap();
        assert_eq!(out.online_users, 0);
        assert_eq!(f.bus.published.load(Ordering::SeqCst), 0);
        // The reroute task keeps trying, with backoff, and gets through once it can.
        tokio::time::sleep(Duration::from_millis(250)).await;
        f.bus.down.store(false, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while f.bus.published.load(Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never routed again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            f.bus.published.load(Ordering::SeqCst),
            1,
            "one envelope, for gw-1"
        );
    }

    #[tokio::test]
    async fn a_live_send_fails_when_routing_fails_and_gives_its_key_up() {
        let f = fixture().await;
        f.bus.down.store(true, Ordering::SeqCst);
        let err = f
            .dispatch
            .send(cmd(0, Some("k")), &scope())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DispatchError::Backend(e) if e.is_transient()),
            "{err:?}"
        );
        assert!(key_is_free(&f, "k").await);
    }

    #[tokio::test]
    async fn a_failed_append_publishes_nothing_and_gives_the_key_up() {
        let f = fixture().await;
        f.inbox.down.store(true, Ordering::SeqCst);
        let err = f
            .dispatch
            .send(cmd(60, Some("k")), &scope())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DispatchError::Backend(e) if e.is_transient()),
            "{err:?}"
        );
        assert_eq!(f.bus.published.load(Ordering::SeqCst), 0);
        assert!(key_is_free(&f, "k").await);
    }

    #[tokio::test]
    async fn a_key_reused_for_another_request_is_refused_and_delivers_nothing() {
        let f = fixture().await;
        let first = f.dispatch.send(cmd(60, Some("k")), &scope()).await.unwrap();
        let published = f.bus.published.load(Ordering::SeqCst);
        for other in [cmd(0, Some("k")), {
            let mut c = cmd(60, Some("k"));
            c.notification.title = "another".into();
            c
        }] {
            let err = f.dispatch.send(other, &scope()).await.unwrap_err();
            assert!(
                matches!(err, DispatchError::IdempotencyKeyReused),
                "{err:?}"
            );
        }
        assert_eq!(f.bus.published.load(Ordering::SeqCst), published);
        let stored = f.inbox.pending(&user("alice"), None, 10).await.unwrap();
        assert_eq!(stored.iter().map(|e| e.id).collect::<Vec<_>>(), [first.id]);
        // The same request still gets the first id.
        let again = f.dispatch.send(cmd(60, Some("k")), &scope()).await.unwrap();
        assert_eq!(again.id, first.id);
    }

    #[tokio::test]
    async fn callers_with_other_scopes_do_not_share_keys() {
        let f = fixture().await;
        let other = Scope::of_api_key(b"test-api-key-other-0123456789abcdef0");
        let mine = f.dispatch.send(cmd(60, Some("k")), &scope()).await.unwrap();
        let theirs = f.dispatch.send(cmd(60, Some("k")), &other).await.unwrap();
        assert_ne!(mine.id, theirs.id);
        assert_eq!(
            theirs.stored_users, 2,
            "the second caller's send went through"
        );
        let mut different = cmd(60, Some("k"));
        different.notification.title = "another".into();
        let open = f
            .dispatch
            .send(different, &Scope::unauthenticated())
            .await
            .unwrap();
        assert!(open.id != mine.id && open.id != theirs.id);
    }

    #[tokio::test]
    async fn a_live_send_publishes_once_per_node() {
        let f = fixture().await;
        let out = f.dispatch.send(cmd(0, None), &scope()).await.unwrap();
        assert_eq!((out.online_users, out.stored_users), (1, 0));
        assert_eq!(f.bus.published.load(Ordering::SeqCst), 1);
    }

    fn receipt(user: &str, id: NotificationId) -> Receipt {
        Receipt {
            id: id.to_string(),
            user_id: user.into(),
            status: 1,
            node: "gw-1".into(),
            at: 0,
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
