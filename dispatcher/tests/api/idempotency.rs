//! Idempotency keys over the API: a retry gets the first id and delivers nothing twice,
//! whatever the first call is doing when the retry arrives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kurir_backends::Backends;
use kurir_proto::v1::{SendReply, SendRequest};
use tonic::Code;

use super::send_req;
use super::support::{self, *};

cases!(
    idempotent_retry_returns_the_first_id_and_publishes_once,
    a_retry_while_the_first_send_fails_is_never_told_it_succeeded,
    a_retry_while_the_first_send_succeeds_gets_its_id_and_delivers_once,
    a_retry_while_the_first_send_hangs_is_aborted,
);

async fn idempotent_retry_returns_the_first_id_and_publishes_once(backends: Backends) {
    let h = Harness::start(backends).await;
    let gw = node("gw-1");
    connect_user(&h.backends, &gw, &user("alice")).await;
    let mut spy = Spy::node(&h.backends, &gw).await;
    let mut api = h.client(Some(KEY)).await;
    let req = SendRequest {
        idempotency_key: "order-42-shipped".into(),
        ..send_req(&["alice"], 3600)
    };
    let first = api.send(req.clone()).await.expect("first").into_inner();
    let again = api.send(req).await.expect("retry").into_inner();
    assert_eq!(first.id, again.id);
    assert_eq!(spy.drain().await.len(), 1, "the retry published again");
    let pending = h
        .backends
        .inbox
        .pending(&user("alice"), None, 10)
        .await
        .expect("pending");
    assert_eq!(pending.len(), 1, "the retry stored again");

    let other = SendRequest {
        idempotency_key: "order-43-shipped".into(),
        ..send_req(&["alice"], 3600)
    };
    let third = api.send(other).await.expect("other key").into_inner();
    assert_ne!(third.id, first.id);
}

type SendResult = Result<tonic::Response<SendReply>, tonic::Status>;

/// Two Sends of one idempotency key, the second sent while the first is held in its
/// inbox append: what a client retrying after a lost reply or a timeout does.
struct Race {
    h: Harness,
    inbox: Arc<GatedInbox>,
    open: Option<tokio::sync::oneshot::Sender<bool>>,
    first: tokio::task::JoinHandle<SendResult>,
    spy: Spy,
    req: SendRequest,
}

impl Race {
    /// The first Send, held once it has claimed its key.
    async fn start(backends: Backends, key: &str) -> Self {
        let (backends, gate) = GatedInbox::wrap(backends);
        let h = Harness::start(backends).await;
        let gw = node("gw-1");
        connect_user(&h.backends, &gw, &user("alice")).await;
        let spy = Spy::node(&h.backends, &gw).await;
        let req = SendRequest {
            idempotency_key: key.into(),
            ..send_req(&["alice"], 3600)
        };
        let mut api = h.client(Some(KEY)).await;
        let first = tokio::spawn({
            let req = req.clone();
            async move { api.send(req).await }
        });
        tokio::time::timeout(Duration::from_secs(10), gate.entered)
            .await
            .expect("the first send reached its append")
            .expect("gate");
        Self {
            h,
            inbox: gate.inbox,
            open: Some(gate.open),
            first,
            spy,
            req,
        }
    }

    /// The retry, sent while the first is held; returns once it has claimed the key.
    async fn retry(&self) -> tokio::task::JoinHandle<SendResult> {
        let mut api = self.h.client(Some(KEY)).await;
        let req = self.req.clone();
        let claims = self.inbox.claims();
        let retry = tokio::spawn(async move { api.send(req).await });
        eventually(
            Duration::from_secs(10),
            "the retry to claim the key",
            || {
                let inbox = self.inbox.clone();
                async move { (inbox.claims() > claims).then_some(()) }
            },
        )
        .await;
        retry
    }

    /// Let the first Send's append through (`true`) or fail it; its reply.
    async fn finish_first(&mut self, pass: bool) -> SendResult {
        let open = self.open.take().expect("first still held");
        open.send(pass).expect("first still waiting");
        (&mut self.first).await.expect("first task")
    }

    /// The ids of the deliveries published so far, and the ids in alice's inbox.
    async fn delivered(&mut self) -> (Vec<String>, Vec<String>) {
        let published = self.spy.drain_delivery_ids().await;
        let stored = self
            .h
            .backends
            .inbox
            .pending(&user("alice"), None, 10)
            .await
            .expect("pending")
            .into_iter()
            .map(|e| e.id.to_string())
            .collect();
        (published, stored)
    }
}

/// The first Send fails after a retry found its key in progress: the retry must not be
/// answered with an id that was never stored or delivered. It goes through as a new
/// send (the first gave the key up), or is ABORTED if it found the key still held.
async fn a_retry_while_the_first_send_fails_is_never_told_it_succeeded(backends: Backends) {
    let mut race = Race::start(backends, "order-44-shipped").await;
    let retry = race.retry().await;
    let first = race.finish_first(false).await;
    assert_eq!(
        first.expect_err("the first fails").code(),
        Code::Unavailable
    );
    match retry.await.expect("retry task") {
        Ok(reply) => {
            let reply = reply.into_inner();
            assert_eq!(reply.stored_users, 1, "{reply:?}");
            let (published, stored) = race.delivered().await;
            assert_eq!(
                published,
                [reply.id.as_str()],
                "the retry's id was not published"
            );
            assert_eq!(stored, [reply.id.as_str()], "the retry's id was not stored");
        }
        Err(status) => {
            assert_eq!(status.code(), Code::Aborted, "{status:?}");
            let (published, stored) = race.delivered().await;
            assert!(
                published.is_empty() && stored.is_empty(),
                "{published:?} {stored:?}"
            );
        }
    }
}

/// The first Send succeeds after a retry found its key in progress: the retry gets the
/// first id, and the notification is stored and delivered once.
async fn a_retry_while_the_first_send_succeeds_gets_its_id_and_delivers_once(backends: Backends) {
    let mut race = Race::start(backends, "order-45-shipped").await;
    let retry = race.retry().await;
    let first = race.finish_first(true).await.expect("first").into_inner();
    let again = retry
        .await
        .expect("retry task")
        .expect("retry")
        .into_inner();
    assert_eq!(again.id, first.id);
    assert_eq!(
        race.delivered().await,
        (vec![first.id.clone()], vec![first.id]),
        "published or stored other than once"
    );
}

/// A first Send in flight for longer than a retry waits: the retry is ABORTED (and
/// counted so) and delivers nothing; once the first succeeds, retries get its id.
async fn a_retry_while_the_first_send_hangs_is_aborted(backends: Backends) {
    let mut race = Race::start(backends, "order-46-shipped").await;
    let started = Instant::now();
    let status = race
        .retry()
        .await
        .await
        .expect("retry task")
        .expect_err("aborted while the first is held");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(
        status.message(),
        "idempotency_key: a Send with this key is still in progress; retry"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "did not wait"
    );
    let (published, stored) = race.delivered().await;
    assert!(
        published.is_empty() && stored.is_empty(),
        "{published:?} {stored:?}"
    );

    let first = race.finish_first(true).await.expect("first").into_inner();
    let mut api = race.h.client(Some(KEY)).await;
    let again = api
        .send(race.req.clone())
        .await
        .expect("later retry")
        .into_inner();
    assert_eq!(again.id, first.id);
    assert_eq!(
        race.delivered().await,
        (vec![first.id.clone()], vec![first.id])
    );
    let (_, metrics) = race.h.admin_get("/metrics").await;
    let aborted = r#"kurir_dispatcher_requests_total{method="Send",code="Aborted"}"#;
    assert!(metrics.contains(aborted), "missing {aborted}");
}
