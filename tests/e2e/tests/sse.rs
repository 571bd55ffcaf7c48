//! The SSE transport end to end, on real Redis and NATS with the real binaries: the same
//! inbox, replay, acks, resume, topics, presence, `Disconnect` and drain as a WebSocket,
//! with the client actions as HTTP requests. (The chaos run over SSE is in `durable`.)

use std::time::Duration;

use anyhow::Result;
use kurir_e2e::*;
use kurir_proto::v1::{DisconnectRequest, GetPresenceRequest, PublishRequest};
use serde_json::json;

const T: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(500);

#[tokio::test]
async fn a_stream_replays_acks_and_resumes_from_last_event_id() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let gw = &cluster.gateways[0];
    let addr = gw.addr.to_string();
    let alice = user("alice");
    let mut api = cluster.dispatcher.client().await?;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(send(&mut api, &[&alice], &format!("n{i}"), 600).await?.id);
    }

    let mut c = SseClient::connect(&addr, &token(&alice, &[], 60), None).await?;
    assert_eq!(c.welcome["user"], alice.as_str());
    assert!(c.retry_ms.is_some(), "a stream names its retry delay");
    let mut cursors = Vec::new();
    for id in &ids {
        let n = c.next_notification(T).await?;
        assert_eq!(
            (n["id"].as_str(), n["replayed"].as_bool()),
            (Some(id.as_str()), Some(true))
        );
        // The event id is the notification's cursor: what the browser resumes from.
        assert_eq!(c.last_id.as_deref(), n["cursor"].as_str());
        cursors.push(n["cursor"].as_str().unwrap().to_string());
    }
    // The liveness probe: a ping over HTTP is answered on the stream.
    assert_eq!(c.ping().await?, 202);
    assert_eq!(c.next_frame(T).await?, json!({"type": "pong"}));
    c.ack(&ids[0]).await?;
    // Live stored notifications carry their cursor as the event id too.
    let live = send(&mut api, &[&alice], "live", 600).await?;
    assert_eq!(live.online_users, 1, "an SSE stream is presence");
    let n = c.next_notification(T).await?;
    assert_eq!(
        (n["id"].as_str(), n["replayed"].as_bool()),
        (Some(live.id.as_str()), Some(false))
    );
    assert_eq!(c.last_id.as_deref(), n["cursor"].as_str());
    drop(c);

    // Reconnect as a browser does, naming the last event id it saw of n1: only what came
    // after it and is unacked.
    let mut c = SseClient::connect(&addr, &token(&alice, &[], 60), Some(&cursors[1])).await?;
    assert_eq!(c.next_notification(T).await?["id"], ids[2].as_str());
    assert_eq!(c.next_notification(T).await?["id"], live.id.as_str());
    c.expect_silence(QUIET).await?;
    drop(c);
    // Without a cursor: everything unacked (n0 was acked over HTTP).
    let mut c = SseClient::connect(&addr, &token(&alice, &[], 60), None).await?;
    for id in [&ids[1], &ids[2], &live.id] {
        assert_eq!(c.next_notification(T).await?["id"], id.as_str());
    }
    c.expect_silence(QUIET).await?;
    assert!(gw.metric("kurir_gateway_acks_total").await? >= 1.0);
    assert!(
        gw.metric("kurir_gateway_transport_deliveries_total{transport=\"sse\"}")
            .await?
            >= 7.0
    );
    Ok(())
}

#[tokio::test]
async fn topics_at_connect_and_over_http_with_the_same_rules() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let gw = &cluster.gateways[0];
    let addr = gw.addr.to_string();
    let (a, b) = (user("a"), user("b"));
    let mut sa =
        SseClient::connect_with(&addr, &token(&a, &["news.*"], 60), None, "&topics=news.eu")
            .await?;
    assert_eq!(
        sa.next_frame(T).await?,
        json!({"type":"subscribed","topic":"news.eu"})
    );
    let sb = SseClient::connect(&addr, &token(&b, &[], 60), None).await?;

    // Over HTTP: allowed, forbidden, someone else's stream, no such stream, bad bodies.
    assert_eq!(
        sa.subscribe("news.us").await?,
        (200, json!({"subscribed":"news.us"}))
    );
    let (status, body) = sa.subscribe("sports").await?;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let http = reqwest::Client::new();
    let post = |path: &str, tok: String, body: serde_json::Value| {
        http.post(format!("http://{addr}{path}"))
            .bearer_auth(tok)
            .json(&body)
            .send()
    };
    let other = post(
        "/v1/subscribe",
        token(&b, &["news.*"], 60),
        json!({"connection_id": sa.welcome["connection_id"], "topic": "news.eu"}),
    )
    .await?;
    assert_eq!(other.status(), 404, "b cannot address a's stream");
    let none = post(
        "/v1/subscribe",
        token(&a, &["news.*"], 60),
        json!({"connection_id": "00000000deadbeef", "topic": "news.eu"}),
    )
    .await?;
    assert_eq!(none.status(), 404);
    let bad = post("/v1/ack", token(&a, &[], 60), json!({"nope": 1})).await?;
    assert_eq!(bad.status(), 400);
    let bad: serde_json::Value = bad.json().await?;
    assert_eq!(bad["error"], "bad_request");
    let unauth = post("/v1/ack", "garbage".into(), json!({"id": "x"})).await?;
    assert_eq!(unauth.status(), 401);
    let big = post(
        "/v1/ack",
        token(&a, &[], 60),
        json!({"id": "x".repeat(10_000)}),
    )
    .await?;
    assert_eq!(big.status(), 413, "bodies are bounded");

    let mut api = cluster.dispatcher.client().await?;
    for topic in ["news.eu", "news.us"] {
        api.publish(PublishRequest {
            topic: topic.into(),
            notification: Some(note(topic)),
            ..Default::default()
        })
        .await?;
        let n = sa.next_notification(T).await?;
        assert_eq!(
            (n["title"].as_str(), n["topic"].as_str()),
            (Some(topic), Some(topic))
        );
    }
    assert_eq!(sa.unsubscribe("news.eu").await?.0, 200);
    api.publish(PublishRequest {
        topic: "news.eu".into(),
        notification: Some(note("later")),
        ..Default::default()
    })
    .await?;
    sa.expect_silence(QUIET).await?;
    drop(sb);
    Ok(())
}

#[tokio::test]
async fn refusals_are_http_errors_with_json_bodies() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let addr = cluster.gateways[0].addr.to_string();
    let (status, body) = SseClient::refused(&addr, "").await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("missing_token"))
    );
    let (status, _) = SseClient::refused(&addr, "token=garbage").await?;
    assert_eq!(status, 401);
    let tok = token(&user("a"), &[], 60);
    let (status, body) = SseClient::refused(&addr, &format!("token={tok}&cursor=x")).await?;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_cursor")));
    let many = (0..200)
        .map(|i| format!("t{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let (status, body) = SseClient::refused(&addr, &format!("token={tok}&topics={many}")).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("too_many_subscriptions"))
    );
    Ok(())
}

#[tokio::test]
async fn cross_origin_pages_may_use_it_when_their_origin_is_allowed() -> Result<()> {
    let opts_env = vec![("KURIR_ALLOWED_ORIGINS", "https://app.example".to_string())];
    let cluster = Cluster::start_with_env(1, &opts_env).await?;
    let addr = cluster.gateways[0].addr;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, format!("http://{addr}/v1/ack"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = preflight("https://app.example").await?;
    assert_eq!(ok.status(), 204);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(ok.headers()["access-control-allow-headers"]
        .to_str()?
        .contains("authorization"));
    let other = preflight("https://evil.example").await?;
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let tok = token(&user("a"), &[], 60);
    let stream = http
        .get(format!("http://{addr}/sse?token={tok}"))
        .header("origin", "https://evil.example")
        .send()
        .await?;
    assert_eq!(stream.status(), 403);
    let stream = http
        .get(format!("http://{addr}/sse?token={tok}"))
        .header("origin", "https://app.example")
        .send()
        .await?;
    assert_eq!(stream.status(), 200);
    assert_eq!(
        stream.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    Ok(())
}

#[tokio::test]
async fn disconnect_and_drain_end_streams_with_a_close_event() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    let addr = cluster.gateways[0].addr.to_string();
    let (alice, bob) = (user("alice"), user("bob"));
    let mut a = SseClient::connect(&addr, &token(&alice, &[], 60), None).await?;
    let mut b = SseClient::connect(&addr, &token(&bob, &[], 60), None).await?;
    let mut api = cluster.dispatcher.client().await?;
    let watcher = api.clone();
    let online = |u: String| {
        let mut api = watcher.clone();
        async move {
            let p = api
                .get_presence(GetPresenceRequest { user_ids: vec![u] })
                .await
                .ok()?
                .into_inner();
            Some(p.users[0].online)
        }
    };
    assert_eq!(online(alice.clone()).await, Some(true));
    let r = api
        .disconnect(DisconnectRequest {
            user_id: alice.clone(),
            reason: "account suspended".into(),
        })
        .await?
        .into_inner();
    assert_eq!(r.connections_closed, 1);
    let close = a.next_frame(T).await?;
    assert_eq!(
        (
            close["type"].as_str(),
            close["code"].as_u64(),
            close["reconnect"].as_bool()
        ),
        (Some("close"), Some(4001), Some(false))
    );
    assert_eq!(close["reason"], "account suspended");
    assert!(
        a.retry_ms.unwrap() >= 3_600_000,
        "told not to come back soon"
    );
    assert!(a.next_frame(T).await.is_err(), "the stream ended");
    eventually(T, "alice offline", || {
        let online = online(alice.clone());
        async move { (online.await == Some(false)).then_some(()) }
    })
    .await;

    cluster.gateways[0].proc.signal(Signal::TERM);
    let close = b.next_frame(T).await?;
    assert_eq!(
        (close["code"].as_u64(), close["reconnect"].as_bool()),
        (Some(1012), Some(true))
    );
    assert!(
        b.retry_ms.unwrap() <= 5_000,
        "drain asks for a prompt reconnect"
    );
    let _ = &mut cluster;
    Ok(())
}
