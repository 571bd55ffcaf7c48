//! Kurir on a real three-node NATS cluster (routes between the nodes, every node on
//! loopback ports): the dispatcher on one node, each gateway on another. Deliveries,
//! topics and broadcasts cross the routes; a gateway whose NATS node is SIGKILLed
//! mid-stream moves to a surviving node, re-subscribes, and no stored notification is
//! lost.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use kurir_e2e::steady::*;
use kurir_e2e::*;
use kurir_proto::v1::{BroadcastRequest, PublishRequest};
use kurir_testkit::http;

const T: Duration = Duration::from_secs(5);

/// How many `kurir-gateway` clients node `i` holds (from its `/connz`).
async fn gateways_on(nats: &NatsCluster, i: usize) -> usize {
    match http::get(nats.monitor(i), "/connz", Duration::from_secs(2)).await {
        Ok(reply) => reply.body.matches("\"name\": \"kurir-gateway\"").count(),
        Err(_) => 0,
    }
}

#[tokio::test]
async fn deliveries_topics_and_broadcasts_cross_the_routes() -> Result<()> {
    let nats = NatsCluster::start(3).await?;
    let cluster =
        Cluster::start_spread(&nats.url(0), &[nats.url(1), nats.url(2)], &redis_url()).await?;
    assert_eq!(
        (gateways_on(&nats, 1).await, gateways_on(&nats, 2).await),
        (1, 1)
    );
    let (a, b) = (user("a"), user("b"));
    let mut ca = Client::connect(&cluster.gateways[0].ws_url(&token(&a, &["news"], 60))).await?;
    let mut cb = Client::connect(&cluster.gateways[1].ws_url(&token(&b, &["news"], 60))).await?;
    let mut api = cluster.dispatcher.client().await?;
    // Targeted: from the dispatcher's node to each gateway's.
    for (c, u) in [(&mut ca, &a), (&mut cb, &b)] {
        let r = send(&mut api, &[u], "over the routes", 600).await?;
        let n = c.next_notification(T).await?;
        assert_eq!(n["id"], r.id.as_str());
        c.ack(&r.id).await?;
    }
    for c in [&mut ca, &mut cb] {
        assert_eq!(c.subscribe("news").await?["type"], "subscribed");
    }
    // A subscription's interest reaches the other nodes over the routes a moment after
    // the subscriber's own node has it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.publish(PublishRequest {
        topic: "news".into(),
        notification: Some(note("topic")),
        ..Default::default()
    })
    .await?;
    api.broadcast(BroadcastRequest {
        notification: Some(note("everyone")),
        ..Default::default()
    })
    .await?;
    for c in [&mut ca, &mut cb] {
        let mut titles = vec![
            c.next_notification(T).await?["title"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            c.next_notification(T).await?["title"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ];
        titles.sort();
        assert_eq!(titles, ["everyone", "topic"]);
    }
    cleanup_namespace(&redis_url(), &cluster.namespace);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_the_nats_node_of_a_gateway_sigkilled_mid_stream_loses_nothing() -> Result<()> {
    let mut nats = NatsCluster::start(3).await?;
    let redis = redis_url();
    let cluster = Cluster::start_spread(&nats.url(0), &[nats.url(1), nats.url(2)], &redis).await?;
    let users: Vec<String> = (0..USERS).map(|i| user(&format!("u{i}"))).collect();
    let gws = [
        cluster.gateways[0].addr.to_string(),
        cluster.gateways[1].addr.to_string(),
    ];
    let fleet = Fleet::start(&users, &gws);
    eventually(Duration::from_secs(20), "the fleet connected", || async {
        (fleet.connected().len() == USERS).then_some(())
    })
    .await;
    let api = cluster.dispatcher.client().await?;
    let progress = Arc::new(AtomicUsize::new(0));
    let mut sender = tokio::spawn(send_steadily(api, users.clone(), progress.clone(), false));

    reached(&progress, FAULT_AT, &mut sender).await?;
    assert_eq!(gateways_on(&nats, 1).await, 1, "gateway 0 starts on node 1");
    // Gateway 0's node goes; its clients' sockets stay up, its bus connection does not.
    nats.kill(1);
    let killed = Instant::now();
    // The gateway finds a surviving node (the cluster told it their addresses) and
    // takes its subscriptions there.
    poll(
        Duration::from_secs(15),
        "gateway 0 on a surviving node",
        || async { (gateways_on(&nats, 0).await + gateways_on(&nats, 2).await == 2).then_some(()) },
    )
    .await?;
    let moved = killed.elapsed();
    // On loopback the move takes milliseconds, less than a readiness probe interval, so
    // no unready gap need show; the node must be ready on its new NATS node.
    cluster.gateways[0]
        .wait_ready(Duration::from_secs(15))
        .await?;
    reached(&progress, REPAIR_AT, &mut sender).await?;
    nats.restart(1).await?;

    let sent = sender.await??;
    all_received(
        &fleet,
        &sent.ok,
        std::slice::from_ref(&redis),
        &cluster.namespace,
    )
    .await?;
    eprintln!(
        "gateway 0 moved to a surviving NATS node {moved:?} after its node was killed; {} sends, all delivered",
        sent.ok.len()
    );
    fleet.stop().await;
    cleanup_namespace(&redis, &cluster.namespace);
    Ok(())
}
