//! `Send`: validation, routing to the nodes that hold recipients, stored and live
//! notifications.

use kurir_backends::{Backends, NotificationId};
use kurir_proto::internal::v1::envelope::Kind;
use kurir_proto::v1::send_stream_reply::Result as Outcome;
use kurir_proto::v1::{
    BroadcastRequest, DisconnectRequest, Notification, PublishRequest, SendRequest,
    SendStreamRequest,
};
use tonic::Code;

use super::send_req;
use super::support::{self, *};

cases!(
    invalid_arguments_name_the_field_and_publish_nothing,
    send_routes_only_to_nodes_holding_recipients,
    live_send_reports_online_users_and_stores_nothing,
    a_send_stream_answers_each_send_in_order_and_an_error_ends_only_its_send,
);

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
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("topic: "), "{err:?}");
    let err = api
        .broadcast(BroadcastRequest {
            notification: huge,
            ..Default::default()
        })
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

async fn a_send_stream_answers_each_send_in_order_and_an_error_ends_only_its_send(
    backends: Backends,
) {
    let h = Harness::start(backends).await;
    let gw = node("gw-1");
    connect_user(&h.backends, &gw, &user("alice")).await;
    let mut spy = Spy::node(&h.backends, &gw).await;
    let mut api = h.client(Some(KEY)).await;

    const N: u64 = 300;
    let requests: Vec<SendStreamRequest> = (0..N)
        .map(|i| SendStreamRequest {
            r#ref: 1000 + i,
            send: Some(match i {
                // A bad one in the middle, and one without a Send.
                100 => send_req(&["alice", ""], 0),
                _ => send_req(&["alice"], 0),
            })
            .filter(|_| i != 200),
        })
        .collect();
    let mut replies = api
        .send_stream(futures::stream::iter(requests))
        .await
        .expect("stream")
        .into_inner();
    let mut ids = Vec::new();
    for i in 0..N {
        let reply = replies
            .message()
            .await
            .expect("reply")
            .expect("one per request");
        assert_eq!(reply.r#ref, 1000 + i, "in request order");
        match (i, reply.result.expect("a result")) {
            (100, Outcome::Error(e)) => {
                assert_eq!(e.code, Code::InvalidArgument as i32);
                assert!(e.message.starts_with("user_ids[1]:"), "{e:?}");
            }
            (200, Outcome::Error(e)) => {
                assert_eq!(e.code, Code::InvalidArgument as i32);
                assert_eq!(e.message, "send: required");
            }
            (_, Outcome::Reply(r)) => {
                assert_eq!(r.online_users, 1);
                ids.push(r.id);
            }
            (i, other) => panic!("send {i}: {other:?}"),
        }
    }
    assert!(replies.message().await.expect("end").is_none());
    // Every accepted Send was routed, once.
    let mut routed = spy.drain_delivery_ids().await;
    routed.sort();
    ids.sort();
    assert_eq!(routed.len(), N as usize - 2);
    assert_eq!(routed, ids);
}
