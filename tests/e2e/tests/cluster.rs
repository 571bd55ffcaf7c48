//! Issue 2, end to end: 1 dispatcher + 2 gateways as real processes on real Redis and NATS.

use std::time::Duration;

use anyhow::{Context, Result};
use kurir_e2e::*;
use kurir_proto::v1::{
    BroadcastRequest, DisconnectRequest, GetPresenceRequest, PublishRequest, SendRequest,
};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(500);
/// `KURIR_LIVENESS_TTL_MS` of the gateways [`GatewayProc::start`] runs.
const LIVENESS_TTL: Duration = Duration::from_millis(3000);

#[tokio::test]
async fn targeted_sends_reach_only_their_users_and_only_their_nodes() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let (g0, g1, idle) = (
        &cluster.gateways[0],
        &cluster.gateways[1],
        &cluster.gateways[2],
    );
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let mut a = Client::connect(&g0.ws_url(&token(&alice, &[], 60))).await?;
    let mut b = Client::connect(&g1.ws_url(&token(&bob, &[], 60))).await?;
    let mut c0 = Client::connect(&g0.ws_url(&token(&carol, &[], 60))).await?;
    let mut c1 = Client::connect(&g1.ws_url(&token(&carol, &[], 60))).await?;
    assert_eq!(a.welcome["node"], g0.node.as_str());
    assert_eq!(b.welcome["user"], bob.as_str());
    let mut api = cluster.dispatcher.client().await?;

    let reply = send(&mut api, &[&alice], "for alice", 0).await?;
    assert_eq!(reply.online_users, 1);
    let n = a.next_notification(T).await?;
    assert_eq!(n["title"], "for alice");
    assert_eq!(n["id"], reply.id.as_str());
    assert_eq!(n["replayed"], false);
    b.expect_silence(QUIET).await?;

    send(&mut api, &[&bob], "for bob", 0).await?;
    assert_eq!(b.next_notification(T).await?["title"], "for bob");
    a.expect_silence(QUIET).await?;

    send(&mut api, &[&carol], "for carol", 0).await?;
    assert_eq!(c0.next_notification(T).await?["title"], "for carol");
    assert_eq!(c1.next_notification(T).await?["title"], "for carol");

    // Each busy gateway wrote two notifications to sockets (alice and carol on g0, bob
    // and carol on g1); the counter may trail the socket write by a moment.
    const DELIVERIES: &str = "kurir_gateway_deliveries_total";
    for g in [g0, g1] {
        eventually(T, &format!("{} counts its deliveries", g.node), || async {
            (g.metric(DELIVERIES).await.ok()? >= 2.0).then_some(())
        })
        .await;
    }
    // The third gateway holds nobody: no targeted envelope ever reached it, and it
    // delivered nothing. It must export both series (registered at start-up), so a
    // missing series cannot pass for a zero.
    const ENVELOPES: &str = r#"kurir_gateway_bus_messages_total{kind="delivery"}"#;
    assert_eq!(idle.series(ENVELOPES).await?, Some(0.0), "{ENVELOPES}");
    assert_eq!(idle.series(DELIVERIES).await?, Some(0.0), "{DELIVERIES}");
    // g0 got exactly the envelopes for alice and carol, g1 those for bob and carol.
    assert_eq!(g0.metric(ENVELOPES).await?, 2.0);
    assert_eq!(g1.metric(ENVELOPES).await?, 2.0);
    Ok(())
}

#[tokio::test]
async fn publish_reaches_topic_subscribers_and_broadcast_reaches_everyone() -> Result<()> {
    let cluster = Cluster::start(2).await?;
    let (g0, g1) = (&cluster.gateways[0], &cluster.gateways[1]);
    let mut a = Client::connect(&g0.ws_url(&token(&user("a"), &["news.*"], 60))).await?;
    let mut b = Client::connect(&g1.ws_url(&token(&user("b"), &["news.eu"], 60))).await?;
    let mut c = Client::connect(&g1.ws_url(&token(&user("c"), &[], 60))).await?;
    assert_eq!(
        a.subscribe("news.eu").await?,
        json!({"type":"subscribed","topic":"news.eu"})
    );
    assert_eq!(b.subscribe("news.eu").await?["type"], "subscribed");
    let refused = c.subscribe("news.eu").await?;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "forbidden");
    let refused = b.subscribe("news.us").await?;
    assert_eq!(refused["code"], "forbidden");

    let mut api = cluster.dispatcher.client().await?;
    api.publish(PublishRequest {
        topic: "news.eu".into(),
        notification: Some(note("headline")),
        ..Default::default()
    })
    .await?;
    for client in [&mut a, &mut b] {
        let n = client.next_notification(T).await?;
        assert_eq!(n["title"], "headline");
        assert_eq!(n["topic"], "news.eu");
    }
    c.expect_silence(QUIET).await?;

    api.broadcast(BroadcastRequest {
        notification: Some(note("to all")),
        ..Default::default()
    })
    .await?;
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(client.next_notification(T).await?["title"], "to all");
    }

    // After unsubscribing, a publish no longer reaches the client.
    a.send_json(json!({"type":"unsubscribe","topic":"news.eu"}))
        .await?;
    assert_eq!(a.next_frame(T).await?["type"], "unsubscribed");
    api.publish(PublishRequest {
        topic: "news.eu".into(),
        notification: Some(note("later")),
        ..Default::default()
    })
    .await?;
    assert_eq!(b.next_notification(T).await?["title"], "later");
    a.expect_silence(QUIET).await?;
    Ok(())
}

#[tokio::test]
async fn presence_and_disconnect() -> Result<()> {
    let cluster = Cluster::start(2).await?;
    let (g0, g1) = (&cluster.gateways[0], &cluster.gateways[1]);
    let (alice, nobody) = (user("alice"), user("nobody"));
    let mut a0 = Client::connect(&g0.ws_url(&token(&alice, &[], 60))).await?;
    let mut a1 = Client::connect(&g1.ws_url(&token(&alice, &[], 60))).await?;
    let mut api = cluster.dispatcher.client().await?;
    let p = api
        .get_presence(GetPresenceRequest {
            user_ids: vec![alice.clone(), nobody.clone()],
        })
        .await?
        .into_inner();
    assert_eq!(p.users.len(), 2);
    assert_eq!(p.users[0].user_id, alice);
    assert!(p.users[0].online);
    assert_eq!(p.users[0].connections, 2);
    let mut nodes = p.users[0].nodes.clone();
    nodes.sort();
    let mut expected = vec![g0.node.clone(), g1.node.clone()];
    expected.sort();
    assert_eq!(nodes, expected);
    assert!(!p.users[1].online);
    assert_eq!(p.users[1].connections, 0);

    let r = api
        .disconnect(DisconnectRequest {
            user_id: alice.clone(),
            reason: "account suspended".into(),
        })
        .await?
        .into_inner();
    assert_eq!(r.connections_closed, 2);
    assert_eq!(a0.closed(T).await?, Ended::Closed(4001));
    assert_eq!(a1.closed(T).await?, Ended::Closed(4001));
    eventually(T, "alice offline", || {
        let mut api = api.clone();
        let alice = alice.clone();
        async move {
            let p = api
                .get_presence(GetPresenceRequest {
                    user_ids: vec![alice],
                })
                .await
                .ok()?;
            (!p.into_inner().users[0].online).then_some(())
        }
    })
    .await;
    Ok(())
}

async fn online(api: &Api, user: &str) -> Option<bool> {
    let mut api = api.clone();
    let p = api
        .get_presence(GetPresenceRequest {
            user_ids: vec![user.to_string()],
        })
        .await
        .ok()?;
    Some(p.into_inner().users[0].online)
}

#[tokio::test]
async fn sigkill_drops_presence_within_the_liveness_ttl_and_sigterm_drains() -> Result<()> {
    let mut cluster = Cluster::start(2).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let _a = Client::connect(&cluster.gateways[0].ws_url(&token(&alice, &[], 60))).await?;
    let mut b = Client::connect(&cluster.gateways[1].ws_url(&token(&bob, &[], 60))).await?;
    let api = cluster.dispatcher.client().await?;
    assert_eq!(online(&api, &alice).await, Some(true));

    // SIGKILL: nothing is cleaned up; the liveness mark must lapse. It lives 3 s
    // (`KURIR_LIVENESS_TTL_MS` of e2e gateways, refreshed every second) and a dispatcher
    // trusts a live node for up to 250 ms more: 1.5 s over the TTL is ample slack.
    let killed = std::time::Instant::now();
    cluster.gateways[0].proc.kill();
    let limit = LIVENESS_TTL + Duration::from_millis(1500);
    eventually(
        limit.saturating_sub(killed.elapsed()),
        "alice offline within the liveness TTL + 1.5 s of the SIGKILL",
        || async { (online(&api, &alice).await == Some(false)).then_some(()) },
    )
    .await;

    // SIGTERM: the client gets 1012 and presence is gone at once.
    let g1 = &mut cluster.gateways[1];
    g1.proc.signal(Signal::TERM);
    assert_eq!(b.closed(Duration::from_secs(5)).await?, Ended::Closed(1012));
    assert_eq!(online(&api, &bob).await, Some(false));
    let status = g1.proc.wait_exit(Duration::from_secs(15)).await?;
    assert!(status.success(), "gateway exit status {status}");
    Ok(())
}

/// Repeat `attempt` (a call that may fail while its backends reconnect) until `c` gets
/// a notification titled `title`, for at most 15 s. Notifications of earlier attempts of
/// other steps are skipped; a closed socket fails at once, since `c` must never have to
/// reconnect.
async fn until_received<F, Fut>(c: &mut Client, title: &str, mut attempt: F) -> Result<Value>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let sent = attempt().await.is_ok();
        // Read what arrives for a while, whether or not the call said it went out.
        let window =
            std::time::Instant::now() + Duration::from_millis(if sent { 1000 } else { 200 });
        loop {
            let left = window.saturating_duration_since(std::time::Instant::now());
            match c.next_notification(left).await {
                Ok(n) if n["title"] == title => return Ok(n),
                Ok(_) => continue,
                Err(e) if e.to_string().starts_with("no frame") => break,
                Err(e) => return Err(e.context(format!("the socket ended waiting for {title:?}"))),
            }
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{title:?} never reached the connection opened before the NATS restart"
        );
    }
}

#[tokio::test]
async fn readiness_follows_the_bus_and_subscriptions_come_back() -> Result<()> {
    let mut nats = OwnNats::start().await?;
    let ns = random_namespace();
    let dispatcher = DispatcherProc::start(&ns, &nats.url(), &redis_url()).await?;
    let opts = GatewayOpts {
        namespace: ns.clone(),
        nats_url: nats.url(),
        redis_url: redis_url(),
        extra: vec![],
    };
    let gw = GatewayProc::start(&format!("gw-{}", &ns[5..13]), &opts).await?;
    let alice = user("alice");
    let api = dispatcher.client().await?;
    // Connected and subscribed before the outage: what comes back must be this
    // connection's node, topic and broadcast subscriptions, not fresh ones.
    let mut a = Client::connect(&gw.ws_url(&token(&alice, &["news.*"], 600))).await?;
    assert_eq!(a.subscribe("news.eu").await?["type"], "subscribed");

    nats.stop();
    eventually(
        Duration::from_secs(6),
        "gateway unready without NATS",
        || async { (!gw.ready().await).then_some(()) },
    )
    .await;
    assert!(
        gw.metric(r#"kurir_gateway_readiness_failures_total{check="bus_probe"}"#)
            .await?
            >= 1.0
    );

    nats.restart().await?;
    gw.wait_ready(Duration::from_secs(15)).await?;
    // The dispatcher reconnects on its own schedule: retry each call until it lands.
    let n = until_received(&mut a, "targeted after restart", || {
        let (mut api, alice) = (api.clone(), alice.clone());
        async move {
            send(&mut api, &[&alice], "targeted after restart", 0).await?;
            Ok(())
        }
    })
    .await?;
    assert_eq!(n["topic"], Value::Null);
    let n = until_received(&mut a, "topic after restart", || {
        let mut api = api.clone();
        async move {
            api.publish(PublishRequest {
                topic: "news.eu".into(),
                notification: Some(note("topic after restart")),
                ..Default::default()
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    assert_eq!(n["topic"], "news.eu");
    until_received(&mut a, "broadcast after restart", || {
        let mut api = api.clone();
        async move {
            api.broadcast(BroadcastRequest {
                notification: Some(note("broadcast after restart")),
                ..Default::default()
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn bad_tokens_are_refused_before_the_upgrade() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let gw = &cluster.gateways[0];
    let bad_sig = token_with_secret("alice", &[], 60, "wrong-secret-0123456789abcdef-0123");
    // Past the gateway's default 30 s leeway.
    let expired = token("alice", &[], -120);
    let none = {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            + 60;
        format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"sub":"alice","exp":{exp}}}"#))
        )
    };
    for (what, t) in [
        ("bad signature", bad_sig),
        ("expired", expired),
        ("alg none", none),
        ("empty", String::new()),
    ] {
        assert_eq!(
            Client::refused_status(&gw.ws_url(&t)).await,
            Some(401),
            "{what}"
        );
    }
    assert!(
        gw.metric(r#"kurir_gateway_auth_failures_total{reason="invalid"}"#)
            .await?
            >= 2.0
    );
    Ok(())
}

#[tokio::test]
async fn malformed_unknown_and_oversized_frames() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let gw = &cluster.gateways[0];
    let mut c = Client::connect(&gw.ws_url(&token(&user("u"), &[], 60))).await?;
    c.send_raw(Message::text("{not json")).await?;
    let e = c.next_frame(T).await?;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("bad_frame"))
    );
    c.send_json(json!({"type":"dance"})).await?;
    assert_eq!(c.next_frame(T).await?["code"], "unknown_type");
    c.send_json(json!({"type":"ack","id":"not-a-uuid"})).await?;
    assert_eq!(c.next_frame(T).await?["code"], "bad_request");
    c.send_json(json!({"type":"ping"})).await?;
    assert_eq!(c.next_frame(T).await?, json!({"type":"pong"}));

    let big = "x".repeat(2 * 1024 * 1024);
    let _ = c.send_raw(Message::text(big)).await;
    assert_eq!(c.closed(T).await?, Ended::Closed(1009));
    // The server stays up.
    let mut again = Client::connect(&gw.ws_url(&token(&user("v"), &[], 60))).await?;
    again.send_json(json!({"type":"ping"})).await?;
    assert_eq!(again.next_frame(T).await?["type"], "pong");
    Ok(())
}

#[tokio::test]
async fn bad_grpc_requests_are_refused_and_deliver_nothing() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let gw = &cluster.gateways[0];
    let alice = user("alice");
    let mut a = Client::connect(&gw.ws_url(&token(&alice, &[], 60))).await?;

    let mut anon = api_client(cluster.dispatcher.grpc, None).await?;
    let err = send(&mut anon, &[&alice], "x", 0).await.unwrap_err();
    let status = err.downcast_ref::<tonic::Status>().expect("status");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let mut wrong = api_client(cluster.dispatcher.grpc, Some("wrong")).await?;
    let err = send(&mut wrong, &[&alice], "x", 0).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<tonic::Status>().unwrap().code(),
        tonic::Code::Unauthenticated
    );

    let mut api = cluster.dispatcher.client().await?;
    let too_many: Vec<String> = (0..10_001).map(|i| format!("u{i}")).collect();
    let big = kurir_proto::v1::Notification {
        title: "t".into(),
        body: "b".repeat(100 * 1024),
        ..Default::default()
    };
    let cases = [
        (
            "user_ids",
            SendRequest {
                user_ids: vec![],
                notification: Some(note("x")),
                ..Default::default()
            },
        ),
        (
            "user_ids",
            SendRequest {
                user_ids: too_many,
                notification: Some(note("x")),
                ..Default::default()
            },
        ),
        (
            "user_ids[1]",
            SendRequest {
                user_ids: vec![alice.clone(), String::new()],
                notification: Some(note("x")),
                ..Default::default()
            },
        ),
        (
            "notification",
            SendRequest {
                user_ids: vec![alice.clone()],
                notification: Some(big),
                ..Default::default()
            },
        ),
    ];
    for (field, req) in cases {
        let s = api.send(req).await.unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{field}: {s:?}");
        assert!(
            s.message().starts_with(field),
            "message {:?} should name {field}",
            s.message()
        );
    }
    let s = api
        .publish(PublishRequest {
            topic: "bad topic".into(),
            notification: Some(note("x")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(s.message().starts_with("topic"));
    a.expect_silence(QUIET).await?;
    assert_eq!(
        gw.metric(r#"kurir_gateway_bus_messages_total{kind="delivery"}"#)
            .await?,
        0.0
    );
    Ok(())
}

#[tokio::test]
async fn redis_unreachable_is_unavailable() -> Result<()> {
    let ns = random_namespace();
    let closed = format!("redis://127.0.0.1:{}", free_port());
    let dispatcher = DispatcherProc::start(&ns, &nats_url(), &closed).await?;
    let mut api = dispatcher.client().await?;
    let started = std::time::Instant::now();
    let s = api
        .send(SendRequest {
            user_ids: vec!["alice".into()],
            notification: Some(note("x")),
            ttl_seconds: 60,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
    let s = api
        .get_presence(GetPresenceRequest {
            user_ids: vec!["alice".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(10));
    Ok(())
}

#[tokio::test]
async fn presence_is_rewritten_after_redis_comes_back_empty() -> Result<()> {
    let mut redis = OwnRedis::start().await?;
    let cluster = Cluster::start_on(1, &nats_url(), &redis.url()).await?;
    let gw = &cluster.gateways[0];
    let alice = user("alice");
    let mut a = Client::connect(&gw.ws_url(&token(&alice, &[], 60))).await?;
    let api = cluster.dispatcher.client().await?;
    assert_eq!(online(&api, &alice).await, Some(true));

    redis.kill_and_wipe()?;
    eventually(
        Duration::from_secs(6),
        "gateway unready without Redis",
        || async { (!gw.ready().await).then_some(()) },
    )
    .await;
    redis.restart().await?;
    gw.wait_ready(Duration::from_secs(10)).await?;
    // The socket stayed open; its presence must be back without a reconnect.
    eventually(Duration::from_secs(10), "alice online again", || async {
        (online(&api, &alice).await == Some(true)).then_some(())
    })
    .await;
    let mut api = api.clone();
    send(&mut api, &[&alice], "after the wipe", 0).await?;
    assert_eq!(a.next_notification(T).await?["title"], "after the wipe");
    Ok(())
}

/// A node's liveness mark lapses while its sockets stay open (a stalled beat), and a
/// lookup prunes its entries meanwhile: on its next beat the node writes its presence
/// again under a new epoch, and the open connection gets, without reconnecting, a stored
/// notification sent while it counted as offline.
#[tokio::test]
async fn a_lapsed_liveness_mark_heals_without_a_reconnect() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let gw = &cluster.gateways[0];
    let alice = user("alice");
    let mut a = Client::connect(&gw.ws_url(&token(&alice, &[], 60))).await?;
    let mut api = cluster.dispatcher.client().await?;
    assert_eq!(online(&api, &alice).await, Some(true));
    let ns = &cluster.namespace;
    let lapse = [
        format!(
            "DEL {}",
            redis_quote(&format!("kurir:{ns}:node:{}", gw.node))
        ),
        format!(
            "DEL {}",
            redis_quote(&format!("kurir:{ns}:presence:{{{alice}}}"))
        ),
    ];
    // The beat (every second here) may win the race with the send: lapse again until
    // the send finds alice offline.
    let mut during = None;
    for attempt in 0..10 {
        redis_cli_batch(&redis_url(), &lapse)?;
        let reply = api
            .send(SendRequest {
                user_ids: vec![alice.clone()],
                notification: Some(note(&format!("during the lapse {attempt}"))),
                ttl_seconds: 600,
                ..Default::default()
            })
            .await?
            .into_inner();
        if reply.online_users == 0 {
            assert_eq!(reply.stored_users, 1);
            during = Some(format!("during the lapse {attempt}"));
            break;
        }
        // Delivered live: take it off the socket and try again.
        a.next_notification(T).await?;
    }
    let during = during.context("the beat always came first")?;
    assert_eq!(
        a.next_notification(Duration::from_secs(10)).await?["title"],
        during,
        "replayed on the open connection after the node healed"
    );
    eventually(Duration::from_secs(5), "alice online again", || async {
        (online(&api, &alice).await == Some(true)).then_some(())
    })
    .await;
    send(&mut api, &[&alice], "after the lapse", 0).await?;
    assert_eq!(a.next_notification(T).await?["title"], "after the lapse");
    Ok(())
}
