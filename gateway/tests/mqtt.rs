//! The MQTT listener in process, on the real Redis and NATS (`KURIR_REDIS_URL`,
//! `KURIR_NATS_URL`): off unless configured, MQTT over TLS with the gateway's
//! certificate, and the bound on connections that never send their CONNECT. The protocol
//! itself (acks, replay, topics, sessions, limits) is tested end to end in
//! `tests/e2e/tests/mqtt.rs`.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use kurir_backends::{Backends, ConnectOptions, Namespace};
use kurir_gateway::{Config, Gateway};
use kurir_testkit::ClientToken;
use kurir_tls::test_certs::{tempdir, TestCa};
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet, Subscribe};
use rumqttc::mqttbytes::QoS;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const SECRET: &str = kurir_gateway::config::TEST_JWT_SECRET;
const T: Duration = Duration::from_secs(5);

struct Running {
    mqtt: SocketAddr,
    node: kurir_backends::NodeId,
    backends: Backends,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn backends(ns: Namespace) -> Backends {
    let nats = std::env::var("KURIR_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let redis =
        std::env::var("KURIR_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    Backends::connect(&ConnectOptions::new(ns, &nats, &redis))
        .await
        .unwrap_or_else(|e| panic!("NATS {nats} / Redis {redis}: {e}"))
}

async fn start(tweak: impl FnOnce(&mut Config)) -> Running {
    let mut config = Config::for_test(Namespace::random_for_test());
    config.mqtt_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    tweak(&mut config);
    let backends = backends(config.backends.namespace.clone()).await;
    let gw = Gateway::bind(config, backends.clone(), None).await.unwrap();
    let (mqtt, node) = (gw.mqtt_addr().unwrap(), gw.node_id().clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gw.serve(async move {
        let _ = rx.await;
    }));
    Running {
        mqtt,
        node,
        backends,
        _stop: tx,
    }
}

async fn send<S: AsyncWrite + Unpin>(io: &mut S, packet: Packet) {
    let mut out = BytesMut::new();
    packet.write(&mut out, usize::MAX).unwrap();
    io.write_all(&out).await.unwrap();
}

async fn recv<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut) -> Packet {
    tokio::time::timeout(T, async {
        loop {
            if let Ok(p) = Packet::read(buf, 1 << 20) {
                return p;
            }
            assert!(io.read_buf(buf).await.unwrap() > 0, "closed");
        }
    })
    .await
    .expect("a packet within 5 s")
}

/// A live notification to `user`, as the dispatcher routes it to this node.
async fn notify(gw: &Running, user: &str, title: &str) {
    support::notify(&gw.backends, &gw.node, user, title).await;
}

#[tokio::test]
async fn mqtt_is_off_unless_configured() {
    let config = Config::for_test(Namespace::random_for_test());
    assert_eq!(config.mqtt_listen, None);
    let backends = backends(config.backends.namespace.clone()).await;
    let gw = Gateway::bind(config, backends, None).await.unwrap();
    assert_eq!(gw.mqtt_addr(), None);
}

/// With `KURIR_TLS_CERT`, the MQTT listener speaks TLS with the same certificate.
#[tokio::test]
async fn mqtt_over_tls_delivers() {
    let ca = TestCa::new("kurir test CA");
    let dir = tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    ca.issue("gateway").write(&cert, &key);
    let gw = start(|c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
    })
    .await;
    let tcp = TcpStream::connect(gw.mqtt).await.unwrap();
    // MQTT clients send no ALPN.
    let mut io = TlsConnector::from(ca.client_config(None, &[]))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let mut connect = Connect::new("tls-device");
    connect.set_login(
        "device",
        ClientToken::new("alice").expires_in(60).sign(SECRET),
    );
    send(&mut io, Packet::Connect(connect)).await;
    match recv(&mut io, &mut buf).await {
        Packet::ConnAck(a) => assert_eq!(a.code, ConnectReturnCode::Success),
        other => panic!("{other:?}"),
    }
    send(
        &mut io,
        Packet::Subscribe(Subscribe::new("kurir/user", QoS::AtLeastOnce)),
    )
    .await;
    assert!(matches!(recv(&mut io, &mut buf).await, Packet::SubAck(_)));
    notify(&gw, "alice", "over TLS").await;
    match recv(&mut io, &mut buf).await {
        Packet::Publish(p) => {
            let n: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            assert_eq!(
                (p.topic.as_str(), n["title"].as_str()),
                ("kurir/user", Some("over TLS"))
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Connections waiting for their CONNECT are bounded: beyond the limit a new one is
/// closed at once, and a slot comes back when a waiting one sends its CONNECT.
#[tokio::test]
async fn connections_that_never_send_connect_are_bounded() {
    let gw = start(|c| {
        c.max_pending_handshakes = 2;
        c.handshake_timeout_ms = 60_000;
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(gw.mqtt).await.unwrap());
    }
    // Let the listener take both before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(gw.mqtt).await.unwrap();
    let mut b = [0u8; 8];
    let closed = tokio::time::timeout(T, third.read(&mut b)).await;
    assert!(matches!(closed, Ok(Ok(0) | Err(_))), "{closed:?}");
    // One of the waiting two connects: its slot is free again.
    let mut first = silent.remove(0);
    let mut connect = Connect::new("");
    connect.set_login(
        "device",
        ClientToken::new("bob").expires_in(60).sign(SECRET),
    );
    send(&mut first, Packet::Connect(connect)).await;
    let mut buf = BytesMut::new();
    assert!(matches!(
        recv(&mut first, &mut buf).await,
        Packet::ConnAck(_)
    ));
    let mut fourth = TcpStream::connect(gw.mqtt).await.unwrap();
    let still_open = tokio::time::timeout(Duration::from_millis(500), fourth.read(&mut b)).await;
    assert!(still_open.is_err(), "a freed slot is taken: {still_open:?}");
}
