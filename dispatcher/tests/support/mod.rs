//! Fixtures: a dispatcher served in process on `127.0.0.1:0`, gRPC clients, bus spies.

#![allow(dead_code, unused_macros, unused_imports)] // Each test binary uses a different part of the fixtures.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use bytes::Bytes;
use futures::StreamExt;
use kurir_backends::bus::Subscription;
use kurir_backends::inbox::{
    Appended, Claim, Claimant, Cursor, IdempotencyKey, Inbox, NewEntry, StoredEntry,
};
use kurir_backends::presence::{Epoch, Lease};
use kurir_backends::{
    BackendError, Backends, ConnId, ConnectOptions, Namespace, NodeId, NotificationId, UserId,
};
use kurir_dispatcher::config::TEST_API_KEY;
use kurir_dispatcher::{telemetry, Config, Dispatcher, ServeError};
use kurir_proto::internal::v1::{envelope::Kind, Envelope};
use kurir_proto::v1::dispatcher_client::DispatcherClient;
use kurir_proto::v1::Notification;
use prost::Message;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub use kurir_testkit::ports::free_port as closed_port;
pub use kurir_testkit::{eventually, nats_url, redis_url, Bearer};

pub const KEY: &str = TEST_API_KEY;
/// A second API key, for cases with two callers.
pub const OTHER_KEY: &str = "test-api-key-other-0123456789abcdef0";

/// Stamp each case for both implementations of the seams: `memory::<case>` over the
/// in-memory seams, `real::<case>` over real NATS and Redis in a random namespace.
macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::support::memory()).await;
                }
            )*
        }
        mod real {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::support::real().await).await;
                }
            )*
        }
    };
}

/// In-memory seams in a fresh namespace.
pub fn memory() -> Backends {
    Backends::memory(Namespace::random_for_test())
}

/// Real NATS and Redis (`KURIR_NATS_URL`, `KURIR_REDIS_URL`) in a fresh namespace.
pub async fn real() -> Backends {
    real_with(&redis_url()).await
}

pub async fn real_with(redis_url: &str) -> Backends {
    let opts = ConnectOptions::new(Namespace::random_for_test(), &nats_url(), redis_url);
    Backends::connect(&opts)
        .await
        .unwrap_or_else(|e| panic!("NATS {} / Redis {redis_url}: {e}", nats_url()))
}

/// A dispatcher serving in this process; shut down when dropped.
pub struct Harness {
    pub backends: Backends,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Harness {
    pub async fn start(backends: Backends) -> Self {
        Self::start_with(backends, |_| {}).await
    }

    pub async fn start_with(backends: Backends, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::for_test(backends.namespace.clone());
        tweak(&mut config);
        let metrics = telemetry::install_recorder().expect("metrics recorder");
        let dispatcher = Dispatcher::bind(config, backends.clone(), metrics)
            .await
            .expect("bind");
        let (grpc, admin) = (dispatcher.grpc_addr(), dispatcher.metrics_addr());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(dispatcher.serve(async {
            let _ = rx.await;
        }));
        Self {
            backends,
            grpc,
            admin,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.endpoint())
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect")
    }

    /// A Dispatcher client presenting `key` (none when `None`).
    pub async fn client(&self, key: Option<&str>) -> Api {
        let bearer = Bearer::optional(key).expect("a key usable as a header");
        DispatcherClient::with_interceptor(self.channel().await, bearer)
    }

    /// Signal shutdown and wait for `serve` to return.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        drop(self.shutdown.take());
        self.task
            .take()
            .expect("running")
            .await
            .expect("serve panicked")
    }

    /// `GET path` on the admin listener: status code and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).await
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        drop(self.shutdown.take());
    }
}

pub type Api = DispatcherClient<InterceptedService<Channel, Bearer>>;

/// `GET path` on `addr`: status code and body (panics when it cannot connect).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let reply = kurir_testkit::http::get(addr, path, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (reply.status, reply.body)
}

pub fn note(title: &str) -> Option<Notification> {
    Some(Notification {
        title: title.into(),
        body: "body".into(),
        ..Default::default()
    })
}

pub fn user(id: &str) -> UserId {
    UserId::parse(id).expect("user id")
}

pub fn node(id: &str) -> NodeId {
    NodeId::parse(id).expect("node id")
}

/// Register one live connection of `user` on `node` (and mark the node alive).
pub async fn connect_user(backends: &Backends, node: &NodeId, user: &UserId) -> ConnId {
    // One incarnation per node id for the whole test, so every user connected counts.
    let lease = Lease {
        node: node.clone(),
        epoch: Epoch(0),
    };
    let conn = ConnId::generate();
    backends
        .presence
        .add(&lease, user, conn)
        .await
        .expect("presence add");
    backends
        .presence
        .beat(&lease, Duration::from_secs(60))
        .await
        .expect("presence beat");
    conn
}

/// A subscription to one subject that can prove a negative: [`Spy::drain`] publishes a
/// marker after everything under test and collects what arrived before it. The bus
/// keeps per-publisher order and the dispatcher shares these backends, so whatever it
/// published before the marker arrives before the marker.
pub struct Spy {
    subject: String,
    backends: Backends,
    sub: Subscription,
}

const MARKER: &[u8] = b"\xffkurir-test-marker";

impl Spy {
    pub async fn on(backends: &Backends, subject: String) -> Self {
        let sub = backends
            .bus
            .subscribe(subject.clone())
            .await
            .expect("subscribe spy");
        Self {
            subject,
            backends: backends.clone(),
            sub,
        }
    }

    pub async fn node(backends: &Backends, node: &NodeId) -> Self {
        Self::on(backends, backends.namespace.node_subject(node)).await
    }

    /// Everything published to the subject so far.
    pub async fn drain(&mut self) -> Vec<Bytes> {
        self.backends
            .bus
            .publish(self.subject.clone(), Bytes::from_static(MARKER))
            .await
            .expect("publish marker");
        let mut seen = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), self.sub.next())
                .await
                .unwrap_or_else(|_| panic!("no marker on {} within 10 s", self.subject))
                .expect("spy subscription ended");
            if next.as_ref() == MARKER {
                return seen;
            }
            seen.push(next);
        }
    }

    /// The ids of the deliveries published so far (any other envelope fails the test).
    pub async fn drain_delivery_ids(&mut self) -> Vec<String> {
        self.drain_envelopes()
            .await
            .into_iter()
            .map(|k| match k {
                Kind::Delivery(d) => d.id,
                other => panic!("not a delivery: {other:?}"),
            })
            .collect()
    }

    pub async fn drain_envelopes(&mut self) -> Vec<Kind> {
        self.drain()
            .await
            .into_iter()
            .map(|b| {
                Envelope::decode(b)
                    .expect("envelope")
                    .kind
                    .expect("envelope kind")
            })
            .collect()
    }
}

/// An inbox whose first `append` is held until the test opens the gate, then fails or
/// goes through as the test says; later appends pass at once. Counts claims, so a test
/// can tell when a retry is waiting on an idempotency key. Everything else goes to the
/// wrapped inbox.
pub struct GatedInbox {
    inner: Arc<dyn Inbox>,
    first: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<bool>)>>,
    claims: AtomicUsize,
}

/// The test's side of a [`GatedInbox`].
pub struct Gate {
    /// Fires once the first append is held.
    pub entered: oneshot::Receiver<()>,
    /// `true`: let the held append through; `false` (or dropped): fail it.
    pub open: oneshot::Sender<bool>,
    pub inbox: Arc<GatedInbox>,
}

impl GatedInbox {
    /// `backends` with their inbox behind a gate.
    pub fn wrap(backends: Backends) -> (Backends, Gate) {
        let (entered_tx, entered) = oneshot::channel();
        let (open, open_rx) = oneshot::channel();
        let inbox = Arc::new(Self {
            inner: backends.inbox.clone(),
            first: Mutex::new(Some((entered_tx, open_rx))),
            claims: AtomicUsize::new(0),
        });
        let gated = Backends {
            inbox: inbox.clone(),
            ..backends
        };
        (
            gated,
            Gate {
                entered,
                open,
                inbox,
            },
        )
    }

    /// Claims made so far.
    pub fn claims(&self) -> usize {
        self.claims.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Inbox for GatedInbox {
    async fn append(
        &self,
        users: &[UserId],
        entry: &NewEntry,
    ) -> Result<Vec<Appended>, BackendError> {
        let held = self.first.lock().expect("gate lock").take();
        if let Some((entered, open)) = held {
            let _ = entered.send(());
            if !open.await.unwrap_or(false) {
                return Err(BackendError::unavailable("redis", "gate shut by the test"));
            }
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
        pending_ttl: Duration,
    ) -> Result<Claim, BackendError> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        self.inner.claim(key, by, pending_ttl).await
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
