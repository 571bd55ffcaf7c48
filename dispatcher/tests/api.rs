//! The dispatcher's gRPC API end to end, in process: a `Dispatcher` on `127.0.0.1:0` and
//! tonic clients. Every case runs twice, over the in-memory seams (`memory::…`) and over
//! real NATS and Redis in a random namespace (`real::…`).

#[macro_use]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use kurir_backends::{Backends, NotificationId};
use kurir_proto::internal::v1::{envelope::Kind, ReceiptBatch};
use kurir_proto::v1::{
    BroadcastRequest, DisconnectRequest, GetPresenceRequest, Notification, PublishRequest, Receipt,
    ReceiptStatus, SendReply, SendRequest, WatchReceiptsRequest,
};
use prost::Message;
use support::*;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

cases!(
    missing_or_wrong_key_is_unauthenticated,
    health_is_answered_without_a_key,
    reflection_lists_the_dispatcher,
    invalid_arguments_name_the_field_and_publish_nothing,
    send_routes_only_to_nodes_holding_recipients,
    live_send_reports_online_users_and_stores_nothing,
    idempotent_retry_returns_the_first_id_and_publishes_once,
    a_retry_while_the_first_send_fails_is_never_told_it_succeeded,
    a_retry_while_the_first_send_succeeds_gets_its_id_and_delivers_once,
    a_retry_while_the_first_send_hangs_is_aborted,
    publish_and_broadcast_reach_their_subjects,
    presence_reports_connections_and_nodes,
    disconnect_goes_to_each_node_of_the_user,
    receipts_are_filtered,
    a_receipt_watcher_that_falls_behind_is_ended,
    shutdown_ends_receipt_streams_and_returns,
    admin_endpoints_answer,
);

fn send_req(users: &[&str], ttl_seconds: u32) -> SendRequest {
    SendRequest {
        user_ids: users.iter().map(|u| u.to_string()).collect(),
        notification: note("hello"),
        ttl_seconds,
        idempotency_key: String::new(),
    }
}

async fn missing_or_wrong_key_is_unauthenticated(backends: Backends) {
    let h = Harness::start(backends).await;
    for key in [None, Some("wrong-key")] {
        let mut api = h.client(key).await;
        let err = api.send(send_req(&["alice"], 0)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{key:?}: {err:?}");
        let err = api
            .get_presence(GetPresenceRequest {
                user_ids: vec!["alice".into()],
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    // A valid key gets through auth (the call itself may fail on placeholder backends).
    let mut api = h.client(Some(KEY)).await;
    let status = api.send(send_req(&[], 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

async fn health_is_answered_without_a_key(backends: Backends) {
    let h = Harness::start(backends).await;
    let mut health = HealthClient::new(h.channel().await);
    for service in ["", "kurir.v1.Dispatcher"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health {service:?}: {e:?}"))
            .into_inner();
        assert_eq!(reply.status, ServingStatus::Serving as i32, "{service:?}");
    }
}

async fn reflection_lists_the_dispatcher(backends: Backends) {
    let h = Harness::start(backends).await;
    let mut reflection = ServerReflectionClient::new(h.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let reply = replies.next().await.expect("one reply").expect("ok reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reply {reply:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"kurir.v1.Dispatcher"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
}

async fn invalid_arguments_name_the_field_and_publish_nothing(backends: Backends) {
    let h = Harness::start(backends).await;
    let gw = node("gw-1");
    connect_user(&h.backends, &gw, &user("alice")).await;
    let mut node_spy = Spy::node(&h.backends, &gw).await;
    let mut broadcast_spy = Spy::on(&h.backends, h.backends.namespace.broadcast_subject()).await;
    let mut api = h.client(Some(KEY)).await;

    let too_many: Vec<String> = (0..10_001).map(|i| format!("u{i}")).collect();
    let huge = Some(Notification {
        title: "t".into(),
        body: "x".repeat(100 * 1024),
        ..Default::default()
    });
    let cases: Vec<(SendRequest, &str)> = vec![
        (send_req(&[], 60), "user_ids: "),
        (
            SendRequest {
                user_ids: too_many,
                ..send_req(&[], 60)
            },
            "user_ids: ",
        ),
        (
            send_req(&["alice", ""], 60),
            "user_ids[1]: must not be empty",
        ),
        (
            SendRequest {
                notification: huge.clone(),
                ..send_req(&["alice"], 60)
            },
            "notification: encoded size",
        ),
        (
            SendRequest {
                notification: None,
                ..send_req(&["alice"], 60)
            },
            "notification: required",
        ),
        (
            SendRequest {
                ttl_seconds: 31 * 24 * 3600,
                ..send_req(&["alice"], 60)
            },
            "ttl_seconds: ",
        ),
    ];
    for (req, expected) in cases {
        let err = api.send(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{expected}: {err:?}");
        assert!(err.message().starts_with(expected), "{expected}: {err:?}");
    }

    let err = api
        .publish(PublishRequest {
            topic: "bad topic".into(),
            notification: note("t"),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("topic: "), "{err:?}");
    let err = api
        .broadcast(BroadcastRequest { notification: huge })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("notification: "), "{err:?}");
    let err = api
        .disconnect(DisconnectRequest {
            user_id: String::new(),
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("user_id: "), "{err:?}");

    assert!(node_spy.drain().await.is_empty(), "a node got an envelope");
    assert!(
        broadcast_spy.drain().await.is_empty(),
        "a broadcast went out"
    );
    let stored = h
        .backends
        .inbox
        .pending(&user("alice"), None, 10)
        .await
        .expect("pending");
    assert!(stored.is_empty(), "something was stored: {stored:?}");
}

async fn send_routes_only_to_nodes_holding_recipients(backends: Backends) {
    let h = Harness::start(backends).await;
    let (gw1, gw2, gw3) = (node("gw-1"), node("gw-2"), node("gw-3"));
    connect_user(&h.backends, &gw1, &user("alice")).await;
    connect_user(&h.backends, &gw2, &user("bob")).await;
    connect_user(&h.backends, &gw2, &user("dave")).await;
    connect_user(&h.backends, &gw1, &user("dave")).await;
    let mut spies = [
        Spy::node(&h.backends, &gw1).await,
        Spy::node(&h.backends, &gw2).await,
        Spy::node(&h.backends, &gw3).await,
    ];
    let mut api = h.client(Some(KEY)).await;

    let reply = api
        .send(send_req(&["alice", "bob", "carol", "dave", "alice"], 3600))
        .await
        .expect("send")
        .into_inner();
    assert_eq!(reply.online_users, 3, "{reply:?}");
    assert_eq!(reply.stored_users, 4, "{reply:?}");
    let id = NotificationId::parse(&reply.id).expect("uuid id");
    assert_eq!(id.0.get_version_num(), 7);

    let recipients_of = |kinds: Vec<Kind>| -> Vec<Vec<String>> {
        kinds
            .into_iter()
            .map(|k| {
                let Kind::Delivery(d) = k else {
                    panic!("not a delivery: {k:?}")
                };
                assert_eq!(d.id, reply.id);
                assert!(d.expires_at > d.created_at);
                assert_eq!(
                    d.notification.as_ref().map(|n| n.title.as_str()),
                    Some("hello")
                );
                let mut users: Vec<String> = d
                    .recipients
                    .iter()
                    .map(|r| {
                        assert!(!r.cursor.is_empty(), "stored recipients carry a cursor");
                        r.user_id.clone()
                    })
                    .collect();
                users.sort();
                users
            })
            .collect()
    };
    let [s1, s2, s3] = &mut spies;
    assert_eq!(
        recipients_of(s1.drain_envelopes().await),
        [["alice", "dave"]]
    );
    assert_eq!(recipients_of(s2.drain_envelopes().await), [["bob", "dave"]]);
    assert!(
        s3.drain().await.is_empty(),
        "gw-3 holds nobody and got an envelope"
    );

    // Everyone, online or not, has it in the inbox.
    for u in ["alice", "bob", "carol", "dave"] {
        let pending = h
            .backends
            .inbox
            .pending(&user(u), None, 10)
            .await
            .expect("pending");
        assert_eq!(pending.len(), 1, "{u}");
        assert_eq!(pending[0].id, id);
    }
}

async fn live_send_reports_online_users_and_stores_nothing(backends: Backends) {
    let h = Harness::start(backends).await;
    let gw = node("gw-1");
    connect_user(&h.backends, &gw, &user("alice")).await;
    let mut spy = Spy::node(&h.backends, &gw).await;
    let mut api = h.client(Some(KEY)).await;
    let reply = api
        .send(send_req(&["alice", "bob"], 0))
        .await
        .expect("send")
        .into_inner();
    assert_eq!((reply.online_users, reply.stored_users), (1, 0));
    let kinds = spy.drain_envelopes().await;
    assert_eq!(kinds.len(), 1);
    let Kind::Delivery(d) = &kinds[0] else {
        panic!("not a delivery")
    };
    assert_eq!(d.expires_at, 0);
    assert_eq!(d.recipients.len(), 1);
    assert_eq!(d.recipients[0].cursor, "");
    for u in ["alice", "bob"] {
        assert!(h
            .backends
            .inbox
            .pending(&user(u), None, 10)
            .await
            .expect("pending")
            .is_empty());
    }
}

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
        let published = self
            .spy
            .drain_envelopes()
            .await
            .into_iter()
            .map(|k| match k {
                Kind::Delivery(d) => d.id,
                other => panic!("not a delivery: {other:?}"),
            })
            .collect();
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

async fn publish_and_broadcast_reach_their_subjects(backends: Backends) {
    let h = Harness::start(backends).await;
    let ns = &h.backends.namespace;
    let topic = kurir_backends::Topic::parse("orders.eu").expect("topic");
    let mut topic_spy = Spy::on(&h.backends, ns.topic_subject(&topic)).await;
    let mut broadcast_spy = Spy::on(&h.backends, ns.broadcast_subject()).await;
    let mut api = h.client(Some(KEY)).await;

    let published = api
        .publish(PublishRequest {
            topic: "orders.eu".into(),
            notification: note("order"),
        })
        .await
        .expect("publish")
        .into_inner();
    let broadcast = api
        .broadcast(BroadcastRequest {
            notification: note("all"),
        })
        .await
        .expect("broadcast")
        .into_inner();
    assert_ne!(published.id, broadcast.id);

    let kinds = topic_spy.drain_envelopes().await;
    let [Kind::Delivery(d)] = kinds.as_slice() else {
        panic!("{kinds:?}")
    };
    assert_eq!(
        (d.id.as_str(), d.topic.as_str()),
        (published.id.as_str(), "orders.eu")
    );
    assert!(d.recipients.is_empty() && d.expires_at == 0);
    let kinds = broadcast_spy.drain_envelopes().await;
    let [Kind::Delivery(d)] = kinds.as_slice() else {
        panic!("{kinds:?}")
    };
    assert_eq!(
        (d.id.as_str(), d.topic.as_str()),
        (broadcast.id.as_str(), "")
    );
}

async fn presence_reports_connections_and_nodes(backends: Backends) {
    let h = Harness::start(backends).await;
    let alice = user("alice");
    connect_user(&h.backends, &node("gw-2"), &alice).await;
    connect_user(&h.backends, &node("gw-1"), &alice).await;
    connect_user(&h.backends, &node("gw-1"), &alice).await;
    let mut api = h.client(Some(KEY)).await;
    let reply = api
        .get_presence(GetPresenceRequest {
            user_ids: vec!["alice".into(), "bob".into()],
        })
        .await
        .expect("presence")
        .into_inner();
    assert_eq!(reply.users.len(), 2);
    let (a, b) = (&reply.users[0], &reply.users[1]);
    assert_eq!(
        (a.user_id.as_str(), a.online, a.connections),
        ("alice", true, 3)
    );
    assert_eq!(a.nodes, ["gw-1", "gw-2"]);
    assert_eq!(
        (b.user_id.as_str(), b.online, b.connections),
        ("bob", false, 0)
    );
    assert!(b.nodes.is_empty());
}

async fn disconnect_goes_to_each_node_of_the_user(backends: Backends) {
    let h = Harness::start(backends).await;
    let (gw1, gw2, gw3) = (node("gw-1"), node("gw-2"), node("gw-3"));
    let alice = user("alice");
    connect_user(&h.backends, &gw1, &alice).await;
    connect_user(&h.backends, &gw1, &alice).await;
    connect_user(&h.backends, &gw2, &alice).await;
    connect_user(&h.backends, &gw3, &user("bob")).await;
    let mut spies = [
        Spy::node(&h.backends, &gw1).await,
        Spy::node(&h.backends, &gw2).await,
        Spy::node(&h.backends, &gw3).await,
    ];
    let mut api = h.client(Some(KEY)).await;
    let reply = api
        .disconnect(DisconnectRequest {
            user_id: "alice".into(),
            reason: "é".repeat(100),
        })
        .await
        .expect("disconnect")
        .into_inner();
    assert_eq!(reply.connections_closed, 3);
    let [s1, s2, s3] = &mut spies;
    for spy in [s1, s2] {
        let kinds = spy.drain_envelopes().await;
        let [Kind::Disconnect(d)] = kinds.as_slice() else {
            panic!("{kinds:?}")
        };
        assert_eq!(d.user_id, "alice");
        assert_eq!(d.reason.len(), 120);
    }
    assert!(s3.drain().await.is_empty());

    let reply = api
        .disconnect(DisconnectRequest {
            user_id: "nobody".into(),
            reason: String::new(),
        })
        .await
        .expect("disconnect offline user")
        .into_inner();
    assert_eq!(reply.connections_closed, 0);
}

/// A gateway's batch of one receipt.
fn receipt(user: &str, id: NotificationId, status: ReceiptStatus) -> Bytes {
    Bytes::from(
        ReceiptBatch {
            node: "gw-1".into(),
            receipts: vec![Receipt {
                id: id.to_string(),
                user_id: user.into(),
                status: status as i32,
                node: String::new(),
                at: 1,
            }],
        }
        .encode_to_vec(),
    )
}

async fn receipts_are_filtered(backends: Backends) {
    let h = Harness::start(backends).await;
    let mut api = h.client(Some(KEY)).await;
    let mut stream = api
        .watch_receipts(WatchReceiptsRequest {
            user_ids: vec!["alice".into()],
            notification_ids: vec![],
        })
        .await
        .expect("watch")
        .into_inner();
    // The subscription exists once the call returned: what is published now is seen.
    let subject = h.backends.namespace.receipts_subject();
    let (n1, n2) = (NotificationId::generate(), NotificationId::generate());
    for payload in [
        receipt("bob", n1, ReceiptStatus::Delivered),
        Bytes::from_static(b"\xff not a receipt"),
        receipt("alice", n1, ReceiptStatus::Delivered),
        receipt("alice", n2, ReceiptStatus::Acked),
    ] {
        h.backends
            .bus
            .publish(subject.clone(), payload)
            .await
            .expect("publish");
    }
    let mut got = Vec::new();
    while got.len() < 2 {
        let r = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("receipt within 10 s")
            .expect("stream open")
            .expect("receipt");
        assert_eq!(r.node, "gw-1", "the batch's node is each receipt's");
        got.push((r.user_id, r.id, r.status));
    }
    assert_eq!(
        got,
        [
            (
                "alice".into(),
                n1.to_string(),
                ReceiptStatus::Delivered as i32
            ),
            ("alice".into(), n2.to_string(), ReceiptStatus::Acked as i32),
        ]
    );

    let err = api
        .watch_receipts(WatchReceiptsRequest {
            user_ids: vec![],
            notification_ids: vec!["not-a-uuid".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "notification_ids[0]: must be a UUID");
}

async fn a_receipt_watcher_that_falls_behind_is_ended(backends: Backends) {
    let h = Harness::start_with(backends, |c| c.watch_buffer = 1).await;
    let mut api = h.client(Some(KEY)).await;
    let mut stream = api
        .watch_receipts(WatchReceiptsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    // Far more than the HTTP/2 windows hold, published while nobody reads.
    let subject = h.backends.namespace.receipts_subject();
    let payload = receipt(
        "alice",
        NotificationId::generate(),
        ReceiptStatus::Delivered,
    );
    for _ in 0..40_000 {
        h.backends
            .bus
            .publish(subject.clone(), payload.clone())
            .await
            .expect("publish");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut received = 0;
    let end = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, stream.next()).await {
            Ok(Some(Ok(_))) => received += 1,
            Ok(Some(Err(status))) => break status,
            Ok(None) => panic!("stream ended without an error after {received}"),
            Err(_) => panic!("stream neither lagged nor ended after {received} receipts"),
        }
    };
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
    assert!(received < 40_000);
}

async fn shutdown_ends_receipt_streams_and_returns(backends: Backends) {
    let h = Harness::start(backends).await;
    let mut health = HealthClient::new(h.channel().await);
    let mut api = h.client(Some(KEY)).await;
    let mut stream = api
        .watch_receipts(WatchReceiptsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let stopped = tokio::time::timeout(Duration::from_secs(10), h.stop())
        .await
        .expect("serve returned within 10 s");
    stopped.expect("clean stop");
    match stream.next().await {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    // The health service stopped with the server.
    assert!(health.check(HealthCheckRequest::default()).await.is_err());
}

async fn admin_endpoints_answer(backends: Backends) {
    let h = Harness::start(backends).await;
    assert_eq!(h.admin_get("/healthz").await.0, 200);
    let (_, body) = eventually(Duration::from_secs(10), "/readyz 200", || async {
        let r = h.admin_get("/readyz").await;
        (r.0 == 200).then_some(r)
    })
    .await;
    let report: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(report["ready"], true);

    let mut api = h.client(Some(KEY)).await;
    let _ = api.send(send_req(&[], 0)).await;
    let (status, metrics) = h.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for series in [
        r#"kurir_dispatcher_requests_total{method="Send",code="OK"}"#,
        r#"kurir_dispatcher_requests_total{method="Disconnect",code="OK"}"#,
        r#"kurir_dispatcher_requests_total{method="Send",code="InvalidArgument"}"#,
        r#"kurir_dispatcher_request_duration_seconds_bucket{method="Send",le="0.005"}"#,
        "kurir_dispatcher_published_total",
        "kurir_dispatcher_stored_total",
        "kurir_backend_errors_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(metrics.contains(series), "missing {series}");
    }
}

// Cases that only make sense on real servers.

#[tokio::test]
async fn redis_unreachable_is_unavailable_within_seconds() {
    let backends = real_with(&format!("redis://127.0.0.1:{}", closed_port())).await;
    let h = Harness::start(backends).await;
    let mut api = h.client(Some(KEY)).await;
    for ttl in [3600, 0] {
        let started = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(8), api.send(send_req(&["alice"], ttl)))
            .await
            .expect("Send answered within 8 s")
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "ttl {ttl}: {err:?}");
        assert_eq!(err.message(), "backend unavailable");
        assert!(started.elapsed() < Duration::from_secs(8));
    }
    let err = tokio::time::timeout(
        Duration::from_secs(8),
        api.get_presence(GetPresenceRequest {
            user_ids: vec!["alice".into()],
        }),
    )
    .await
    .expect("GetPresence answered within 8 s")
    .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    let (status, body) = h.admin_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("presence"), "{body}");
}

/// The value of one series in a Prometheus text body.
fn series(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A Send that fails because Redis is down is counted against Redis, under the operation
/// that failed. The inbox and idempotency series are touched by nothing else here (the
/// readiness probe only looks up presence), so each must have grown by that call alone.
#[tokio::test]
async fn failed_backend_calls_are_counted() {
    let backends = real_with(&format!("redis://127.0.0.1:{}", closed_port())).await;
    let h = Harness::start(backends).await;
    let mut api = h.client(Some(KEY)).await;
    for (op, req) in [
        ("inbox", send_req(&["alice"], 3600)),
        (
            "idempotency",
            SendRequest {
                idempotency_key: "order-47-shipped".into(),
                ..send_req(&["alice"], 3600)
            },
        ),
    ] {
        let name = format!(r#"kurir_backend_errors_total{{backend="redis",op="{op}"}}"#);
        let before = series(&h.admin_get("/metrics").await.1, &name)
            .unwrap_or_else(|| panic!("{name} not exported from start-up"));
        let err = api.send(req).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{op}: {err:?}");
        let after = series(&h.admin_get("/metrics").await.1, &name).expect("still exported");
        assert!(
            after >= before + 1.0,
            "{name}: {before} before, {after} after"
        );
    }
}

#[tokio::test]
async fn bad_configuration_exits_64_with_one_line() {
    let run = |args: &[&str], keys: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kurir-dispatcher"));
        cmd.args(args)
            .env_remove("KURIR_API_KEYS")
            .env_remove("KURIR_INSECURE_NO_AUTH")
            .env("KURIR_GRPC_LISTEN", "127.0.0.1:0")
            .env("KURIR_METRICS_LISTEN", "127.0.0.1:0");
        if let Some(keys) = keys {
            cmd.env("KURIR_API_KEYS", keys);
        }
        cmd.output().expect("run kurir-dispatcher")
    };
    for (args, keys, expected) in [
        (&[][..], None, "KURIR_API_KEYS"),
        (&["--grpc-listen", "nope"][..], Some(KEY), "grpc-listen"),
        (&["--namespace", "a.b"][..], Some(KEY), "namespace"),
        (&["--insecure-no-auth"][..], Some(KEY), "--insecure-no-auth"),
        (
            &["--max-in-flight", "0"][..],
            Some(KEY),
            "KURIR_MAX_IN_FLIGHT",
        ),
        // A key under 32 bytes, even beside a good one; the message never shows it.
        (
            &[][..],
            Some("test-api-key-0123456789abcdef0123456789,short-key-31-bytes-0123456789ab"),
            "KURIR_API_KEYS: key 2 is 31 bytes; keys must be at least 32 bytes",
        ),
        (
            &["--grpc-max-message-bytes", "1000"][..],
            Some(KEY),
            "KURIR_GRPC_MAX_MESSAGE_BYTES",
        ),
    ] {
        let out = run(args, keys);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("short-key-31"), "{args:?}: {stderr}");
    }
}
