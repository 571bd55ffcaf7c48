//! The MQTT transport end to end, on real Redis and NATS with the real binaries, with a
//! packet-level MQTT 3.1.1 client and `mosquitto_sub`: targeted sends on `kurir/user`
//! acked by PUBACK, replay after being offline, topics under the token's rules, refusals
//! in CONNACK and SUBACK, persistent sessions and their takeover, and MQTT over WebSocket.
//! (Keepalive, limits and drain are in `mqtt_limits`; the chaos run over MQTT is in
//! `durable`.)

use std::time::Duration;

use anyhow::{Context as _, Result};
use kurir_e2e::*;
use kurir_proto::v1::{PublishRequest, ReceiptStatus, WatchReceiptsRequest};
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet, SubscribeReasonCode};
use rumqttc::mqttbytes::QoS;

const T: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(500);
const USER: &str = "kurir/user";

fn granted(q: QoS) -> SubscribeReasonCode {
    SubscribeReasonCode::Success(q)
}

#[tokio::test]
async fn a_targeted_send_arrives_on_kurir_user_and_puback_acks_it() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let gw = &cluster.gateways[0];
    let alice = user("alice");
    let mut api = cluster.dispatcher.client().await?;
    let mut receipts = api
        .watch_receipts(WatchReceiptsRequest {
            user_ids: vec![alice.clone()],
            notification_ids: vec![],
        })
        .await?
        .into_inner();
    eventually(T, "receipt watcher open", || async {
        (cluster
            .dispatcher
            .metric("kurir_dispatcher_receipt_watchers")
            .await
            .ok()?
            >= 1.0)
            .then_some(())
    })
    .await;
    let mut d = mqtt_device(gw, &alice, &[]).await?;
    assert!(!d.session_present);
    assert_eq!(
        d.subscribe(&[(USER, QoS::ExactlyOnce)]).await?,
        [granted(QoS::AtLeastOnce)],
        "QoS 1 at most"
    );
    // The subscription's replay (of nothing) is over before the send.
    d.expect_silence(QUIET).await?;

    let sent = send(&mut api, &[&alice], "hello", 600).await?;
    assert_eq!(sent.online_users, 1, "an MQTT connection is presence");
    let n = d.next_publish(T).await?;
    assert_eq!((n.topic.as_str(), n.qos), (USER, QoS::AtLeastOnce));
    assert_eq!(n.json["id"], sent.id.as_str());
    assert_eq!(n.json["title"], "hello");
    assert_eq!(n.json["replayed"], false);
    let status = |s: ReceiptStatus| s as i32;
    let next_receipt = |r: Option<Result<kurir_proto::v1::Receipt, tonic::Status>>| {
        let r = r.expect("receipt stream open").expect("receipt");
        (r.id, r.status)
    };
    use futures::StreamExt as _;
    let r = next_receipt(tokio::time::timeout(T, receipts.next()).await?);
    assert_eq!(r, (sent.id.clone(), status(ReceiptStatus::Delivered)));

    d.puback(n.pkid).await?;
    let r = next_receipt(tokio::time::timeout(T, receipts.next()).await?);
    assert_eq!(r, (sent.id.clone(), status(ReceiptStatus::Acked)));
    eventually(T, "inbox empty after the PUBACK", || async {
        (inbox_entries(&redis_url(), &cluster.namespace).ok()? == 0).then_some(())
    })
    .await;

    // Not stored: QoS 0, nothing to ack.
    let live = send(&mut api, &[&alice], "fleeting", 0).await?;
    let n = d.next_publish(T).await?;
    assert_eq!(
        (n.json["id"].as_str(), n.qos),
        (Some(live.id.as_str()), QoS::AtMostOnce)
    );
    d.expect_silence(QUIET).await?;
    assert!(
        gw.metric("kurir_gateway_transport_deliveries_total{transport=\"mqtt\"}")
            .await?
            >= 2.0
    );
    assert_eq!(
        gw.metric("kurir_gateway_transport_connections{transport=\"mqtt\"}")
            .await?,
        1.0
    );
    d.disconnect().await;
    Ok(())
}

#[tokio::test]
async fn stored_notifications_sent_while_offline_are_replayed_on_reconnect() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let gw = &cluster.gateways[0];
    let alice = user("alice");
    let mut api = cluster.dispatcher.client().await?;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(send(&mut api, &[&alice], &format!("n{i}"), 600).await?.id);
    }
    let mut d = mqtt_device(gw, &alice, &[]).await?;
    d.expect_silence(QUIET).await?;
    // Nothing before the subscription; all of it, oldest first, after.
    d.subscribe(&[(USER, QoS::AtLeastOnce)]).await?;
    for (i, id) in ids.iter().enumerate() {
        let n = d.next_publish(T).await.context("replay")?;
        assert_eq!(n.json["id"], id.as_str());
        assert_eq!(n.json["replayed"], true);
        assert!(n.json["cursor"].is_string());
        if i < 2 {
            d.puback(n.pkid).await?;
        }
    }
    d.expect_silence(QUIET).await?;
    d.disconnect().await;

    // Offline for a while: one more arrives meanwhile.
    let later = send(&mut api, &[&alice], "later", 600).await?;
    assert_eq!(later.online_users, 0);
    let mut d = mqtt_device(gw, &alice, &[]).await?;
    d.subscribe(&[(USER, QoS::AtLeastOnce)]).await?;
    for id in [&ids[2], &later.id] {
        let n = d.next_acked(T).await.context("second replay")?;
        assert_eq!(n.json["id"], id.as_str(), "unacked only, in order");
    }
    d.expect_silence(QUIET).await?;
    d.disconnect().await;

    // A QoS 0 subscriber gets stored ones at QoS 0 and cannot ack them: they stay.
    let kept = send(&mut api, &[&alice], "kept", 600).await?;
    for _ in 0..2 {
        let mut d = mqtt_device(gw, &alice, &[]).await?;
        assert_eq!(
            d.subscribe(&[(USER, QoS::AtMostOnce)]).await?,
            [granted(QoS::AtMostOnce)]
        );
        let n = d.next_publish(T).await.context("QoS 0 replay")?;
        assert_eq!(
            (n.json["id"].as_str(), n.qos),
            (Some(kept.id.as_str()), QoS::AtMostOnce)
        );
        d.disconnect().await;
    }
    Ok(())
}

#[tokio::test]
async fn topics_follow_the_tokens_rules_and_other_filters_are_refused() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let gw = &cluster.gateways[0];
    let (alice, bob) = (user("alice"), user("bob"));
    let mut d = mqtt_device(gw, &alice, &["news.*"]).await?;
    let codes = d
        .subscribe(&[
            ("kurir/topic/news.eu", QoS::AtLeastOnce),
            ("kurir/topic/sports", QoS::AtMostOnce),
            (&format!("kurir/user/{bob}"), QoS::AtLeastOnce),
            ("kurir/#", QoS::AtMostOnce),
            ("#", QoS::AtMostOnce),
            ("kurir/topic/+", QoS::AtMostOnce),
            (USER, QoS::AtMostOnce),
        ])
        .await?;
    use SubscribeReasonCode::Failure;
    assert_eq!(
        codes,
        [
            granted(QoS::AtMostOnce),
            Failure,
            Failure,
            Failure,
            Failure,
            Failure,
            granted(QoS::AtMostOnce)
        ]
    );
    let mut api = cluster.dispatcher.client().await?;
    for topic in ["sports", "news.eu"] {
        api.publish(PublishRequest {
            topic: topic.into(),
            notification: Some(note(topic)),
            ..Default::default()
        })
        .await?;
    }
    let n = d.next_publish(T).await?;
    assert_eq!(
        (n.topic.as_str(), n.qos, n.json["topic"].as_str()),
        ("kurir/topic/news.eu", QoS::AtMostOnce, Some("news.eu"))
    );
    // Bob's notifications never reach alice, whatever she subscribed to.
    send(&mut api, &[&bob], "for bob", 600).await?;
    d.expect_silence(QUIET).await?;
    Ok(())
}

#[tokio::test]
async fn bad_tokens_are_refused_in_connack() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let addr = cluster.gateways[0].mqtt.to_string();
    let alice = user("alice");
    let refused = |r: std::result::Result<MqttClient, ConnectReturnCode>| r.err();
    assert_eq!(
        refused(MqttClient::try_connect(&addr, "", "", true, 30).await?),
        Some(ConnectReturnCode::BadUserNamePassword),
        "no password"
    );
    assert_eq!(
        refused(MqttClient::try_connect(&addr, "garbage", "", true, 30).await?),
        Some(ConnectReturnCode::NotAuthorized)
    );
    let wrong = token_with_secret(
        &alice,
        &[],
        60,
        "another-secret-0123456789abcdef-0123456789",
    );
    assert_eq!(
        refused(MqttClient::try_connect(&addr, &wrong, "", true, 30).await?),
        Some(ConnectReturnCode::NotAuthorized),
        "signed with another key"
    );
    assert_eq!(
        refused(MqttClient::try_connect(&addr, &token(&alice, &[], -60), "", true, 30).await?),
        Some(ConnectReturnCode::NotAuthorized),
        "expired"
    );
    assert_eq!(
        refused(MqttClient::try_connect(&addr, &token(&alice, &[], 60), "", false, 30).await?),
        Some(ConnectReturnCode::BadClientId),
        "a persistent session needs a client id"
    );
    assert_eq!(
        refused(MqttClient::try_connect(&addr, &token(&alice, &[], 60), "", true, 30).await?),
        None
    );
    Ok(())
}

#[tokio::test]
async fn a_persistent_session_keeps_its_subscriptions() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let gw = &cluster.gateways[0];
    let addr = gw.mqtt.to_string();
    let (alice, bob) = (user("alice"), user("bob"));
    let tok = token(&alice, &["news.*"], 60);
    let mut d = MqttClient::connect(&addr, &tok, "dev-1", false).await?;
    assert!(!d.session_present);
    d.subscribe(&[
        ("kurir/topic/news.eu", QoS::AtMostOnce),
        (USER, QoS::AtLeastOnce),
    ])
    .await?;
    d.disconnect().await;
    mqtt_all_gone(gw).await;

    let mut api = cluster.dispatcher.client().await?;
    let stored = send(&mut api, &[&alice], "while away", 600).await?;
    // Same client id and user: the session is there, subscriptions and all.
    let mut d = MqttClient::connect(&addr, &tok, "dev-1", false).await?;
    assert!(d.session_present);
    let n = d.next_acked(T).await?;
    assert_eq!(
        (n.topic.as_str(), n.json["id"].as_str()),
        (USER, Some(stored.id.as_str()))
    );
    api.publish(PublishRequest {
        topic: "news.eu".into(),
        notification: Some(note("news")),
        ..Default::default()
    })
    .await?;
    let n = d.next_publish(T).await?;
    assert_eq!(n.topic, "kurir/topic/news.eu");
    d.disconnect().await;
    mqtt_all_gone(gw).await;

    // Another user with the same client id has no session of alice's.
    let d = MqttClient::connect(&addr, &token(&bob, &[], 60), "dev-1", false).await?;
    assert!(!d.session_present);
    d.disconnect().await;
    mqtt_all_gone(gw).await;
    // A clean session ends it.
    let d = MqttClient::connect(&addr, &tok, "dev-1", true).await?;
    assert!(!d.session_present);
    d.disconnect().await;
    mqtt_all_gone(gw).await;
    let mut d = MqttClient::connect(&addr, &tok, "dev-1", false).await?;
    assert!(!d.session_present);
    api.publish(PublishRequest {
        topic: "news.eu".into(),
        notification: Some(note("news")),
        ..Default::default()
    })
    .await?;
    d.expect_silence(QUIET).await?;
    Ok(())
}

/// `mosquitto_sub`, a device as people run one: QoS 1 on `kurir/user`, its PUBACKs ack.
#[tokio::test]
async fn mosquitto_sub_receives_and_acks() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let gw = &cluster.gateways[0];
    let alice = user("alice");
    let mut api = cluster.dispatcher.client().await?;
    let sent = send(&mut api, &[&alice], "to mosquitto", 600).await?;
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &gw.mqtt.port().to_string()])
            .args(["-u", "device", "-P", &token(&alice, &[], 60)])
            .args(["-t", USER, "-q", "1", "-C", "1", "-W", "8"])
            .output(),
    )
    .await??;
    assert!(out.status.success(), "mosquitto_sub: {out:?}");
    let n: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(n["id"], sent.id.as_str());
    assert_eq!(n["title"], "to mosquitto");
    eventually(T, "acked by mosquitto_sub's PUBACK", || async {
        (inbox_entries(&redis_url(), &cluster.namespace).ok()? == 0).then_some(())
    })
    .await;
    // Refused: a wrong password.
    let out = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &gw.mqtt.port().to_string()])
        .args([
            "-u", "device", "-P", "garbage", "-t", USER, "-C", "1", "-W", "3",
        ])
        .output()
        .await?;
    assert!(!out.status.success());
    Ok(())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next MQTT packet from binary WebSocket messages (which may split or join them).
async fn ws_packet(ws: &mut Ws, buf: &mut bytes::BytesMut) -> Result<Packet> {
    use futures::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        if let Ok(p) = Packet::read(buf, 1 << 20) {
            return Ok(p);
        }
        match tokio::time::timeout(T, ws.next())
            .await
            .context("no message in time")?
        {
            Some(Ok(Message::Binary(b))) => buf.extend_from_slice(&b),
            other => anyhow::bail!("expected a binary message, got {other:?}"),
        }
    }
}

async fn ws_send(ws: &mut Ws, bytes: &[u8]) -> Result<()> {
    use futures::SinkExt as _;
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        bytes.to_vec().into(),
    ))
    .await?;
    Ok(())
}

fn encoded(p: Packet) -> Vec<u8> {
    let mut b = bytes::BytesMut::new();
    p.write(&mut b, usize::MAX).expect("encodable");
    b.to_vec()
}

/// MQTT over WebSocket on the main listener: `/mqtt` with the `mqtt` subprotocol, the
/// same CONNECT, topics and PUBACK acks; packets may span messages.
#[tokio::test]
async fn mqtt_over_websocket_at_slash_mqtt() -> Result<()> {
    use rumqttc::mqttbytes::v4::{Connect, PubAck, Subscribe};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let cluster = Cluster::start(1).await?;
    let gw = &cluster.gateways[0];
    let alice = user("alice");
    let mut api = cluster.dispatcher.client().await?;
    let sent = send(&mut api, &[&alice], "over ws", 600).await?;
    let url = format!("ws://{}/mqtt", gw.addr);
    assert!(
        tokio_tungstenite::connect_async(url.as_str())
            .await
            .is_err(),
        "the mqtt subprotocol is required"
    );
    let mut req = url.as_str().into_client_request()?;
    req.headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse()?);
    let (mut ws, answer) = tokio_tungstenite::connect_async(req).await?;
    assert_eq!(answer.headers()["sec-websocket-protocol"], "mqtt");
    let mut buf = bytes::BytesMut::new();
    let mut connect = Connect::new("ws-device");
    connect.set_login("device", token(&alice, &[], 60));
    let c = encoded(Packet::Connect(connect));
    ws_send(&mut ws, &c[..5]).await?;
    ws_send(&mut ws, &c[5..]).await?;
    match ws_packet(&mut ws, &mut buf).await? {
        Packet::ConnAck(a) => assert_eq!(a.code, ConnectReturnCode::Success),
        other => anyhow::bail!("expected CONNACK, got {other:?}"),
    }
    ws_send(
        &mut ws,
        &encoded(Packet::Subscribe(Subscribe::new(USER, QoS::AtLeastOnce))),
    )
    .await?;
    assert!(matches!(
        ws_packet(&mut ws, &mut buf).await?,
        Packet::SubAck(_)
    ));
    let p = match ws_packet(&mut ws, &mut buf).await? {
        Packet::Publish(p) => p,
        other => anyhow::bail!("expected PUBLISH, got {other:?}"),
    };
    let n: serde_json::Value = serde_json::from_slice(&p.payload)?;
    assert_eq!(
        (p.topic.as_str(), n["id"].as_str()),
        (USER, Some(sent.id.as_str()))
    );
    ws_send(&mut ws, &encoded(Packet::PubAck(PubAck::new(p.pkid)))).await?;
    eventually(T, "acked over WebSocket", || async {
        (inbox_entries(&redis_url(), &cluster.namespace).ok()? == 0).then_some(())
    })
    .await;
    // A bad token is refused in CONNACK here too.
    let mut req = url.as_str().into_client_request()?;
    req.headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let mut connect = Connect::new("");
    connect.set_login("device", "garbage");
    ws_send(&mut ws, &encoded(Packet::Connect(connect))).await?;
    let mut buf = bytes::BytesMut::new();
    match ws_packet(&mut ws, &mut buf).await? {
        Packet::ConnAck(a) => assert_eq!(a.code, ConnectReturnCode::NotAuthorized),
        other => anyhow::bail!("expected CONNACK, got {other:?}"),
    }
    Ok(())
}

/// A device reconnecting while its old connection is still open (a half-open socket after
/// a network change) takes over: the old one is closed, and its persistent session is
/// the one the new connection finds.
#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let gw = &cluster.gateways[0];
    let addr = gw.mqtt.to_string();
    let alice = user("alice");
    let tok = token(&alice, &["news.*"], 60);
    let mut old = MqttClient::connect(&addr, &tok, "dev-3", false).await?;
    old.subscribe(&[("kurir/topic/news.eu", QoS::AtMostOnce)])
        .await?;
    let mut new = MqttClient::connect(&addr, &tok, "dev-3", false).await?;
    assert!(
        new.session_present,
        "the old connection's session, taken over"
    );
    assert!(old.closed_within(T).await, "the old connection is closed");
    closes_counted(gw, "disconnected", 1.0).await;
    let mut api = cluster.dispatcher.client().await?;
    api.publish(PublishRequest {
        topic: "news.eu".into(),
        notification: Some(note("news")),
        ..Default::default()
    })
    .await?;
    assert_eq!(new.next_publish(T).await?.topic, "kurir/topic/news.eu");
    // Without a client id nothing is taken over.
    let mut a = mqtt_device(gw, &alice, &[]).await?;
    let _b = mqtt_device(gw, &alice, &[]).await?;
    a.expect_silence(QUIET).await?;
    Ok(())
}
