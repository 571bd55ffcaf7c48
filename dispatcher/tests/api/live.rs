//! The live-only RPCs: Publish, Broadcast, GetPresence, Disconnect.

use kurir_backends::Backends;
use kurir_proto::internal::v1::envelope::Kind;
use kurir_proto::v1::{BroadcastRequest, DisconnectRequest, GetPresenceRequest, PublishRequest};

use super::support::{self, *};

cases!(
    publish_and_broadcast_reach_their_subjects,
    presence_reports_connections_and_nodes,
    disconnect_goes_to_each_node_of_the_user,
);

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
            ..Default::default()
        })
        .await
        .expect("publish")
        .into_inner();
    let broadcast = api
        .broadcast(BroadcastRequest {
            notification: note("all"),
            ..Default::default()
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
