//! Sessions bounded in memory and time, and admission, in process on the real Redis and
//! NATS (`KURIR_REDIS_URL`, `KURIR_NATS_URL`): a client that never reads is closed within
//! the write stall timeout; `Disconnect` ends a session stuck writing; per-user and node
//! caps hold under concurrent upgrades; a frame flood is closed with 1008; a topic flood
//! leaves no bus subscription behind and the node's topic cap holds; a malformed Origin is
//! refused; an SSE client that never reads is hung up.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use kurir_backends::{Backends, ConnectOptions, Namespace, UserId};
use kurir_gateway::{telemetry, Config, Gateway};
use kurir_testkit::{eventually, ClientToken};
use metrics_exporter_prometheus::PrometheusHandle;
use prost::Message as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const SECRET: &str = kurir_gateway::config::TEST_JWT_SECRET;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// The process-wide recorder (each test runs in its own process under nextest).
fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| kurir_runtime::metrics::install(telemetry::HISTOGRAMS).expect("recorder"))
        .clone()
}

struct Node {
    addr: SocketAddr,
    metrics: SocketAddr,
    node: kurir_backends::NodeId,
    backends: Backends,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn config() -> Config {
    let mut c = Config::for_test(Namespace::random_for_test());
    if let Ok(u) = std::env::var("KURIR_NATS_URL") {
        c.backends.nats_url = u.as_str().into();
    }
    if let Ok(u) = std::env::var("KURIR_REDIS_URL") {
        c.backends.redis_url = u.as_str().into();
    }
    c
}

async fn start(config: Config) -> Node {
    let opts = ConnectOptions::new(
        config.backends.namespace.clone(),
        config.backends.nats_url.as_str(),
        config.backends.redis_url.as_str(),
    );
    let backends = Backends::connect(&opts).await.expect("NATS and Redis");
    let gw = Gateway::bind(config, backends.clone(), Some(recorder()))
        .await
        .unwrap();
    let (addr, metrics, node) = (
        gw.local_addr(),
        gw.metrics_addr().unwrap(),
        gw.node_id().clone(),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gw.serve(async move {
        let _ = rx.await;
    }));
    // Ready once it answers.
    eventually(Duration::from_secs(10), "gateway listening", || async {
        TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;
    Node {
        addr,
        metrics,
        node,
        backends,
        _stop: tx,
    }
}

fn token(user: &str) -> String {
    ClientToken::new(user)
        .expires_in(300)
        .topics(&["*"])
        .sign(SECRET)
}

/// One series from the node's `/metrics` (0 when absent).
async fn metric(node: &Node, series: &str) -> f64 {
    let mut s = TcpStream::connect(node.metrics).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

async fn connections(node: &Node) -> f64 {
    metric(node, "kurir_gateway_connections").await
}

/// Upgrade over a raw socket whose receive buffer is tiny; the HTTP status line's code.
async fn raw_upgrade(addr: SocketAddr, path: &str, extra: &str) -> (TcpStream, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // Read the head byte by byte: nothing past it is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await {
            Ok(Ok(1)) => head.push(b[0]),
            _ => break,
        }
    }
    let status = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (s, status)
}

/// A masked client frame.
fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Send pings (never reading a pong) until the server stops reading too: a write that
/// does not complete within two seconds. Returns how many were sent.
async fn wedge(s: &mut TcpStream) -> usize {
    let ping = masked(0x9, &[b'p'; 100]);
    let batch: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 64).collect();
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(20) {
        match tokio::time::timeout(Duration::from_secs(2), s.write_all(&batch)).await {
            Ok(Ok(())) => sent += 64,
            Ok(Err(_)) => return sent,
            Err(_) => return sent,
        }
    }
    panic!("the server kept reading {sent} pings without any being read back");
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_within_the_stall_timeout() {
    let mut c = config();
    c.write_stall_timeout_ms = 1_000;
    c.client_frames_per_second = 1_000_000;
    c.client_frames_burst = 1_000_000;
    let node = start(c).await;
    let (mut s, status) = raw_upgrade(node.addr, &format!("/ws?token={}", token("u1")), "").await;
    assert_eq!(status, 101);
    eventually(Duration::from_secs(5), "session open", || async {
        (connections(&node).await == 1.0).then_some(())
    })
    .await;
    let sent = wedge(&mut s).await;
    let wedged = Instant::now();
    eventually(Duration::from_secs(5), "stalled session closed", || async {
        (connections(&node).await == 0.0).then_some(())
    })
    .await;
    let took = wedged.elapsed();
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
    let stalled = metric(
        &node,
        "kurir_gateway_connections_closed_total{reason=\"write_stalled\"}",
    )
    .await;
    assert_eq!(stalled, 1.0, "counted as write_stalled");
    eprintln!("{sent} pings sent before the server stopped reading; closed {took:?} later");
}

#[tokio::test]
async fn disconnect_ends_a_session_stuck_writing() {
    use kurir_proto::internal::v1::{envelope::Kind, Disconnect, Envelope};
    let mut c = config();
    // Far beyond the test: only the disconnect can end the session in time.
    c.write_stall_timeout_ms = 120_000;
    c.client_frames_per_second = 1_000_000;
    c.client_frames_burst = 1_000_000;
    let node = start(c).await;
    let user = UserId::parse("stuck").unwrap();
    let (mut s, status) =
        raw_upgrade(node.addr, &format!("/ws?token={}", token("stuck")), "").await;
    assert_eq!(status, 101);
    eventually(Duration::from_secs(5), "online", || async {
        let p = node
            .backends
            .presence
            .lookup(std::slice::from_ref(&user))
            .await
            .ok()?;
        p[0].online().then_some(())
    })
    .await;
    wedge(&mut s).await;
    // What the dispatcher's `Disconnect` publishes to the node holding the user.
    let env = Envelope {
        kind: Some(Kind::Disconnect(Disconnect {
            user_id: "stuck".into(),
            reason: "bye".into(),
        })),
    };
    let asked = Instant::now();
    node.backends
        .bus
        .publish(
            node.backends.namespace.node_subject(&node.node),
            env.encode_to_vec().into(),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "session ended", || async {
        (connections(&node).await == 0.0).then_some(())
    })
    .await;
    eventually(Duration::from_secs(3), "offline", || async {
        let p = node
            .backends
            .presence
            .lookup(std::slice::from_ref(&user))
            .await
            .ok()?;
        (!p[0].online()).then_some(())
    })
    .await;
    eprintln!("ended {:?} after the disconnect", asked.elapsed());
}

async fn ws_status(addr: SocketAddr, user: &str) -> Result<Ws, (u16, Value)> {
    let url = format!("ws://{addr}/ws?token={}", token(user));
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn the_per_user_cap_answers_429_and_a_freed_slot_is_reused() {
    let mut c = config();
    c.max_connections_per_user = 2;
    let node = start(c).await;
    let a = ws_status(node.addr, "alice").await.unwrap();
    let _b = ws_status(node.addr, "alice").await.unwrap();
    let (status, body) = ws_status(node.addr, "alice").await.err().unwrap();
    assert_eq!(status, 429);
    assert_eq!(body["error"], "too_many_connections");
    // Another user is not affected.
    let _other = ws_status(node.addr, "bob").await.unwrap();
    drop(a);
    eventually(Duration::from_secs(5), "slot freed", || async {
        ws_status(node.addr, "alice").await.ok()
    })
    .await;
}

#[tokio::test]
async fn the_per_user_cap_holds_under_concurrent_upgrades() {
    let mut c = config();
    c.max_connections_per_user = 3;
    let node = start(c).await;
    let path = format!("/ws?token={}", token("burst"));
    let attempts =
        futures::future::join_all((0..30).map(|_| raw_upgrade(node.addr, &path, ""))).await;
    let ok = attempts.iter().filter(|(_, s)| *s == 101).count();
    let refused = attempts.iter().filter(|(_, s)| *s == 429).count();
    assert_eq!((ok, refused), (3, 27));
}

#[tokio::test]
async fn the_node_cap_counts_from_the_upgrade() {
    let mut c = config();
    c.max_connections = 5;
    let node = start(c).await;
    let paths: Vec<String> = (0..40)
        .map(|i| format!("/ws?token={}", token(&format!("n{i}"))))
        .collect();
    let attempts =
        futures::future::join_all(paths.iter().map(|p| raw_upgrade(node.addr, p, ""))).await;
    let ok = attempts.iter().filter(|(_, s)| *s == 101).count();
    let refused = attempts.iter().filter(|(_, s)| *s == 503).count();
    assert_eq!((ok, refused), (5, 35), "upgrades answered 101 over the cap");
    drop(attempts);
    // Slots come back when the sessions end.
    eventually(Duration::from_secs(5), "slots free", || async {
        ws_status(node.addr, "later").await.ok()
    })
    .await;
}

async fn close_of(ws: &mut Ws) -> Option<(u16, String)> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .ok()?
        {
            Some(Ok(Message::Close(f))) => {
                return f.map(|f| (u16::from(f.code), f.reason.to_string()))
            }
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test]
async fn a_frame_flood_is_closed_with_1008() {
    let mut c = config();
    c.client_frames_per_second = 20;
    c.client_frames_burst = 50;
    let node = start(c).await;
    // Within the burst: answered, and the connection stays.
    let mut calm = ws_status(node.addr, "calm").await.unwrap();
    for i in 0..40 {
        calm.send(Message::text(r#"{"type":"ping"}"#))
            .await
            .unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), calm.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.contains("pong") => break,
                Ok(Some(Ok(_))) => {}
                other => panic!("calm client after {i} pings: {other:?}"),
            }
        }
    }
    // Control frames count too.
    let mut flood = ws_status(node.addr, "flood").await.unwrap();
    for _ in 0..200 {
        if flood.send(Message::Ping(vec![1].into())).await.is_err() {
            break;
        }
    }
    assert_eq!(
        close_of(&mut flood).await,
        Some((1008, "rate limit".into()))
    );
    // Counted once the session has finished closing.
    eventually(
        Duration::from_secs(5),
        "counted as rate_limited",
        || async {
            let series = "kurir_gateway_connections_closed_total{reason=\"rate_limited\"}";
            (metric(&node, series).await == 1.0).then_some(())
        },
    )
    .await;
}

async fn topic_gauge(node: &Node) -> f64 {
    metric(node, "kurir_gateway_topic_subscriptions").await
}

/// Send every frame, then read replies until `n` non-welcome frames came back.
async fn pipeline(ws: &mut Ws, frames: &[Value], n: usize) -> Vec<Value> {
    for f in frames {
        ws.feed(Message::text(f.to_string())).await.unwrap();
    }
    ws.flush().await.unwrap();
    let mut replies = Vec::new();
    while replies.len() < n {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] != "welcome" {
                    replies.push(v);
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("after {} replies: {other:?}", replies.len()),
        }
    }
    replies
}

#[tokio::test]
async fn a_topic_flood_leaves_no_bus_subscription_behind() {
    let mut c = config();
    c.client_frames_per_second = 1_000_000;
    c.client_frames_burst = 1_000_000;
    let node = start(c).await;
    let clients = 8;
    let per_client = 500;
    let runs = (0..clients).map(|i| {
        let addr = node.addr;
        async move {
            let mut ws = ws_status(addr, &format!("t{i}")).await.unwrap();
            let frames: Vec<Value> = (0..per_client)
                .flat_map(|j| {
                    let topic = format!("flood.c{i}.t{j}");
                    [
                        json!({"type": "subscribe", "topic": topic}),
                        json!({"type": "unsubscribe", "topic": topic}),
                    ]
                })
                .collect();
            let replies = pipeline(&mut ws, &frames, frames.len()).await;
            assert!(
                replies.iter().all(|r| r["type"] != "error"),
                "{:?}",
                replies.iter().find(|r| r["type"] == "error")
            );
            // Half of them left subscribed when the connection goes.
            let keep: Vec<Value> = (0..per_client / 2)
                .map(|j| json!({"type": "subscribe", "topic": format!("keep.c{i}.t{j}")}))
                .collect();
            pipeline(&mut ws, &keep, keep.len()).await;
            ws
        }
    });
    let sockets = futures::future::join_all(runs).await;
    let peak = topic_gauge(&node).await;
    assert!(peak > 0.0);
    drop(sockets);
    eventually(
        Duration::from_secs(20),
        "no topic subscription left",
        || async { (topic_gauge(&node).await == 0.0).then_some(()) },
    )
    .await;
    eprintln!(
        "{} subscribe/unsubscribe pairs over {clients} connections; gauge {peak} at the end, 0 after",
        clients * per_client
    );
}

#[tokio::test]
async fn the_node_topic_cap_holds() {
    let mut c = config();
    c.max_topics_per_node = 20;
    c.client_frames_per_second = 1_000_000;
    c.client_frames_burst = 1_000_000;
    let node = start(c).await;
    let mut ws = ws_status(node.addr, "capped").await.unwrap();
    let frames: Vec<Value> = (0..30)
        .map(|j| json!({"type": "subscribe", "topic": format!("cap.t{j}")}))
        .collect();
    let replies = pipeline(&mut ws, &frames, 30).await;
    let ok = replies.iter().filter(|r| r["type"] == "subscribed").count();
    let refused = replies
        .iter()
        .filter(|r| r["type"] == "error" && r["code"] == "too_many_topics")
        .count();
    assert_eq!((ok, refused), (20, 10));
    assert_eq!(topic_gauge(&node).await, 20.0);
    // Topics that lost their last subscriber make room for new ones.
    let off: Vec<Value> = (0..30)
        .map(|j| json!({"type": "unsubscribe", "topic": format!("cap.t{j}")}))
        .collect();
    pipeline(&mut ws, &off, 30).await;
    // Unused topics are looked for again at most every 100 ms under a refusal flood.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh: Vec<Value> = (0..20)
        .map(|j| json!({"type": "subscribe", "topic": format!("cap.new{j}")}))
        .collect();
    let replies = pipeline(&mut ws, &fresh, 20).await;
    assert!(
        replies.iter().all(|r| r["type"] == "subscribed"),
        "{replies:?}"
    );
    assert!(topic_gauge(&node).await <= 20.0);
}

#[tokio::test]
async fn an_origin_that_is_not_visible_ascii_is_refused() {
    let mut c = config();
    c.allowed_origins = vec!["https://app.example".into()];
    let node = start(c).await;
    let path = format!("/ws?token={}", token("o"));
    // Not visible ASCII (UTF-8 bytes of "é"): no browser sends that.
    let (_s, status) = raw_upgrade(node.addr, &path, "Origin: https://\u{e9}vil.example\r\n").await;
    assert_eq!(status, 403);
    let (_s, status) = raw_upgrade(node.addr, &path, "Origin: https://app.example\r\n").await;
    assert_eq!(status, 101);
}

/// An SSE stream whose client never reads: the stream's writer stalls, and the
/// connection is hung up (no body end can reach such a client) within the stall timeout.
#[tokio::test]
async fn an_sse_client_that_never_reads_is_hung_up_within_the_stall_timeout() {
    use kurir_backends::NotificationId;
    use kurir_proto::internal::v1::{envelope::Kind, Delivery, Envelope, Recipient};
    use kurir_proto::v1::Notification;
    let mut c = config();
    c.write_stall_timeout_ms = 1_000;
    // Room for everything sent: the stall, not the queue, must end it.
    c.outbound_queue = 100_000;
    let node = start(c).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(node.addr).await.unwrap();
    let req = format!(
        "GET /sse?token={} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
        token("deaf")
    );
    s.write_all(req.as_bytes()).await.unwrap();
    eventually(Duration::from_secs(5), "stream open", || async {
        (metric(
            &node,
            "kurir_gateway_transport_connections{transport=\"sse\"}",
        )
        .await
            == 1.0)
            .then_some(())
    })
    .await;
    let body = "x".repeat(8 * 1024);
    let started = Instant::now();
    // 8 MiB of live notifications: far more than the socket buffers hold.
    for _ in 0..1024 {
        let env = Envelope {
            kind: Some(Kind::Delivery(Delivery {
                id: NotificationId::generate().to_string(),
                notification: Some(Notification {
                    body: body.clone(),
                    ..Default::default()
                }),
                created_at: 1,
                recipients: vec![Recipient {
                    user_id: "deaf".into(),
                    cursor: String::new(),
                }],
                ..Default::default()
            })),
        };
        node.backends
            .bus
            .publish(
                node.backends.namespace.node_subject(&node.node),
                env.encode_to_vec().into(),
            )
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(10), "stalled stream ended", || async {
        (connections(&node).await == 0.0).then_some(())
    })
    .await;
    let took = started.elapsed();
    assert_eq!(
        metric(
            &node,
            "kurir_gateway_connections_closed_total{reason=\"write_stalled\"}"
        )
        .await,
        1.0,
        "counted as write_stalled"
    );
    // Hung up: reading what is buffered ends in EOF or a reset, not a wait.
    let mut sink = vec![0u8; 64 * 1024];
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the connection was not closed");
    eprintln!("stalled stream hung up {took:?} after the burst began");
}
