//! The MQTT transport's bounds end to end, on real Redis and NATS with the real
//! binaries: keepalive, the packet size and rate limits, connections that never send
//! CONNECT, devices that never read or ack, the QoS 1 window, and drain.

use std::time::{Duration, Instant};

use anyhow::Result;
use kurir_e2e::*;
use rumqttc::mqttbytes::v4::Packet;
use rumqttc::mqttbytes::QoS;

const T: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(500);
const USER: &str = "kurir/user";

#[tokio::test]
async fn keepalive_pings_and_limits() -> Result<()> {
    let cluster =
        Cluster::start_with_env(1, &[("KURIR_HANDSHAKE_TIMEOUT_MS", "1500".into())]).await?;
    let gw = &cluster.gateways[0];
    let addr = gw.mqtt.to_string();
    let alice = user("alice");
    let tok = token(&alice, &[], 60);

    // PINGREQ is answered; silence past 1.5 × the keep-alive closes the connection.
    let mut d = MqttClient::try_connect(&addr, &tok, "", true, 1)
        .await?
        .map_err(|c| anyhow::anyhow!("{c:?}"))?;
    d.send(Packet::PingReq).await?;
    assert_eq!(d.recv(T).await?, Packet::PingResp);
    let started = Instant::now();
    assert!(d.closed_within(T).await, "keepalive lapsed");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1200) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    closes_counted(gw, "idle", 1.0).await;

    // A packet above 64 KiB is refused: a SUBSCRIBE whose header says 70000 bytes.
    let mut d = mqtt_device(gw, &alice, &[]).await?;
    d.send_raw(&[0x82, 0xF0, 0xA2, 0x04]).await?;
    assert!(d.closed_within(T).await, "oversize packet");
    closes_counted(gw, "frame_too_large", 1.0).await;

    // Devices do not publish.
    let mut d = mqtt_device(gw, &alice, &[]).await?;
    d.publish("kurir/user", b"{}").await?;
    assert!(d.closed_within(T).await, "publish refused");
    closes_counted(gw, "policy", 1.0).await;

    // Packets beyond the burst (100 by default) are a flood: closed.
    let mut d = mqtt_device(gw, &alice, &[]).await?;
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.extend_from_slice(&[0xC0, 0x00]); // PINGREQ
    }
    d.send_raw(&flood).await?;
    assert!(d.closed_within(T).await, "flood");
    closes_counted(gw, "rate_limited", 1.0).await;

    // A connection that never sends CONNECT is closed after the handshake timeout.
    let mut raw = tokio::net::TcpStream::connect(&addr).await?;
    let mut sink = [0u8; 16];
    let r = tokio::time::timeout(T, async {
        use tokio::io::AsyncReadExt as _;
        raw.read(&mut sink).await
    })
    .await;
    assert!(
        matches!(r, Ok(Ok(0) | Err(_))),
        "closed without CONNECT: {r:?}"
    );
    Ok(())
}

/// A device that takes QoS 1 publishes and never reads or acks them is closed within
/// the write stall timeout once its in-flight window is full.
#[tokio::test]
async fn a_client_that_never_reads_is_closed_within_the_stall_timeout() -> Result<()> {
    let cluster =
        Cluster::start_with_env(1, &[("KURIR_WRITE_STALL_TIMEOUT_MS", "1000".into())]).await?;
    let gw = &cluster.gateways[0];
    let alice = user("alice");
    let mut d = mqtt_device(gw, &alice, &[]).await?;
    d.subscribe(&[(USER, QoS::AtLeastOnce)]).await?;
    let mut api = cluster.dispatcher.client().await?;
    for i in 0..40 {
        send(&mut api, &[&alice], &format!("n{i}"), 600).await?;
    }
    let started = Instant::now();
    eventually(T, "deaf device closed", || async {
        (gw.metric("kurir_gateway_connections_closed_total{reason=\"write_stalled\"}")
            .await
            .ok()?
            == 1.0)
            .then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(d.closed_within(T).await);
    // Nothing was acked: all 40 are still there for its next connection.
    assert_eq!(inbox_entries(&redis_url(), &cluster.namespace)?, 40);
    Ok(())
}

/// SIGTERM: the node drains, its MQTT connections are closed (MQTT 3.1.1 has no server
/// DISCONNECT) and the gateway exits; stored notifications wait in the inbox.
#[tokio::test]
async fn drain_closes_mqtt_connections() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    let alice = user("alice");
    let mut d = mqtt_device(&cluster.gateways[0], &alice, &[]).await?;
    d.subscribe(&[(USER, QoS::AtLeastOnce)]).await?;
    d.expect_silence(QUIET).await?;
    let gw = &mut cluster.gateways[0];
    gw.proc.signal(Signal::TERM);
    assert!(
        d.closed_within(Duration::from_secs(8)).await,
        "closed on drain"
    );
    gw.proc.wait_exit(Duration::from_secs(10)).await?;
    Ok(())
}

/// More stored notifications than the QoS 1 window (32): the replay goes on as PUBACKs
/// free the window, in order, and every one is acked.
#[tokio::test]
async fn a_replay_longer_than_the_window_goes_on_as_acks_come() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let gw = &cluster.gateways[0];
    let alice = user("alice");
    let mut api = cluster.dispatcher.client().await?;
    let mut ids = Vec::new();
    for i in 0..45 {
        ids.push(send(&mut api, &[&alice], &format!("n{i}"), 600).await?.id);
    }
    let mut d = mqtt_device(gw, &alice, &[]).await?;
    d.subscribe(&[(USER, QoS::AtLeastOnce)]).await?;
    for id in &ids {
        let n = d.next_acked(T).await?;
        assert_eq!(
            (n.json["id"].as_str(), n.qos),
            (Some(id.as_str()), QoS::AtLeastOnce)
        );
    }
    d.expect_silence(QUIET).await?;
    eventually(T, "all acked", || async {
        (inbox_entries(&redis_url(), &cluster.namespace).ok()? == 0).then_some(())
    })
    .await;
    Ok(())
}

/// A full QoS 1 window with nothing else to send is no stall: the device may take its
/// time to ack; once it does, what came meanwhile follows.
#[tokio::test]
async fn a_full_window_with_nothing_queued_is_not_a_stall() -> Result<()> {
    let cluster =
        Cluster::start_with_env(1, &[("KURIR_WRITE_STALL_TIMEOUT_MS", "1000".into())]).await?;
    let gw = &cluster.gateways[0];
    let alice = user("alice");
    let mut d = mqtt_device(gw, &alice, &[]).await?;
    d.subscribe(&[(USER, QoS::AtLeastOnce)]).await?;
    d.expect_silence(QUIET).await?;
    let mut api = cluster.dispatcher.client().await?;
    let mut pkids = Vec::new();
    for i in 0..32 {
        send(&mut api, &[&alice], &format!("n{i}"), 600).await?;
        pkids.push(d.next_publish(T).await?.pkid);
    }
    // Twice the stall timeout with the window full and nothing queued.
    d.expect_silence(Duration::from_millis(2000)).await?;
    let more = send(&mut api, &[&alice], "more", 600).await?;
    for pkid in pkids {
        d.puback(pkid).await?;
    }
    let n = d.next_acked(T).await?;
    assert_eq!(n.json["id"], more.id.as_str());
    Ok(())
}
