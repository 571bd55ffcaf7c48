//! The send flow over flaky seams: which failures fail a call, and what becomes of
//! the idempotency key and the notification in each case.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kurir_backends::bus::{Bus, MemoryBus, Subscription};
use kurir_backends::inbox::{
    Appended, Claim, Claimant, Cursor, IdempotencyKey, Inbox, MemoryInbox, NewEntry, StoredEntry,
};
use kurir_backends::presence::{Lease, MemoryPresence, PresenceStore};
use kurir_backends::{BackendError, ConnId, Namespace};
use tokio::sync::watch;

use super::*;
use crate::error::DispatchError;

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
    ) -> Result<Vec<Appended>, BackendError> {
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
    async fn holds(
        &self,
        users: &[UserId],
        id: NotificationId,
    ) -> Result<Vec<Option<i64>>, BackendError> {
        self.inner.holds(users, id).await
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
    let memory = Backends::memory(Namespace::random_for_test());
    let backends = Backends {
        bus: bus.clone(),
        presence,
        inbox: inbox.clone(),
        ..memory
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
        fallback: None,
        send_at: 0,
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
async fn shutdown_ends_the_reroute_task_and_waits_for_it() {
    let f = fixture().await;
    f.bus.down.store(true, Ordering::SeqCst);
    f.dispatch.send(cmd(60, None), &scope()).await.unwrap();
    assert_eq!(
        f.dispatch.tasks.len(),
        1,
        "the reroute task runs on the flow's tracker"
    );
    tokio::time::timeout(Duration::from_secs(5), f.dispatch.shutdown())
        .await
        .expect("shutdown waits for the reroute task, which ends at once");
    assert!(f.dispatch.tasks.is_empty());
    // Nothing is routed again after shutdown, even once the bus is back.
    f.bus.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.bus.published.load(Ordering::SeqCst), 0);
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
