//! The socket edge in process, over in-memory backends: auth before the upgrade, frames,
//! limits and close codes.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kurir_backends::{Backends, Namespace};
use kurir_gateway::{Config, Gateway};
use kurir_testkit::ClientToken;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = kurir_gateway::config::TEST_JWT_SECRET;

async fn start() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let ns = Namespace::random_for_test();
    let config = Config::for_test(ns.clone());
    let gw = Gateway::bind(config, Backends::memory(ns), None)
        .await
        .unwrap();
    let addr = gw.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gw.serve(async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

fn token(user: &str, exp_in: i64) -> String {
    ClientToken::new(user).expires_in(exp_in).sign(SECRET)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: std::net::SocketAddr, user: &str) -> (Ws, Value) {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={}", token(user, 60)))
            .await
            .unwrap();
    let welcome = next_json(&mut ws).await;
    (ws, welcome)
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .ok()?
        {
            Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test]
async fn welcome_names_user_node_and_heartbeat() {
    let (addr, _stop) = start().await;
    let (_ws, w) = connect(addr, "alice").await;
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["user"], "alice");
    assert!(w["node"].is_string() && w["connection_id"].is_string());
    assert_eq!(w["heartbeat_ms"], 25_000);
}

#[tokio::test]
async fn refused_tokens_get_401_with_a_json_body() {
    let (addr, _stop) = start().await;
    for url in [
        format!("ws://{addr}/ws"),
        format!("ws://{addr}/ws?token=garbage"),
        format!("ws://{addr}/ws?token={}", token("alice", -5)),
    ] {
        match tokio_tungstenite::connect_async(&url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401, "{url}");
                let body: Value =
                    serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
                assert!(body["error"].is_string());
            }
            other => panic!("{url}: expected 401, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn header_token_works_too() {
    let (addr, _stop) = start().await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{addr}/ws"),
    )
    .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token("bob", 60)).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(next_json(&mut ws).await["user"], "bob");
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_session_goes_on() {
    let (addr, _stop) = start().await;
    let (mut ws, _) = connect(addr, "alice").await;
    for (frame, code) in [
        ("nope", "bad_frame"),
        (r#"{"type":"subscribe"}"#, "bad_frame"),
        (r#"{"type":"explode"}"#, "unknown_type"),
        (r#"{"type":"subscribe","topic":"no spaces"}"#, "bad_request"),
        (r#"{"type":"subscribe","topic":"secret"}"#, "forbidden"),
    ] {
        ws.send(Message::text(frame)).await.unwrap();
        let e = next_json(&mut ws).await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{frame}"
        );
    }
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(next_json(&mut ws).await["code"], "bad_frame");
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(next_json(&mut ws).await, json!({"type":"pong"}));
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let (addr, _stop) = start().await;
    let (mut ws, _) = connect(addr, "alice").await;
    let big = "x".repeat(2 * 1024 * 1024);
    let _ = ws.send(Message::text(big)).await;
    assert_eq!(close_code(&mut ws).await, Some(1009));
}

#[tokio::test]
async fn shutdown_drains_with_1012_spread_over_the_window() {
    // Config::for_test drains over 1 s: two connections close about 0.5 s apart.
    let (addr, stop) = start().await;
    let (mut a, _) = connect(addr, "alice").await;
    let (mut b, _) = connect(addr, "bob").await;
    let started = std::time::Instant::now();
    stop.send(()).unwrap();
    let (ca, cb) = tokio::join!(
        async { (close_code(&mut a).await, started.elapsed()) },
        async { (close_code(&mut b).await, started.elapsed()) }
    );
    assert_eq!((ca.0, cb.0), (Some(1012), Some(1012)));
    let gap = ca.1.abs_diff(cb.1);
    assert!(
        gap >= Duration::from_millis(300),
        "closes not spread: {gap:?} apart"
    );
    assert!(
        ca.1.max(cb.1) < Duration::from_secs(2),
        "drain overran its window"
    );
}

/// `GET /dev/token` exists in `--standalone` only; a normal gateway answers 404, and a
/// plain GET of `/ws` (no upgrade) is refused with a JSON reason.
#[tokio::test]
async fn dev_tokens_only_in_standalone_and_plain_gets_of_ws_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, _stop) = start().await;
    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let dev = get("/dev/token?user=alice").await;
    assert!(dev.starts_with("HTTP/1.1 404"), "{dev}");
    let plain = get("/ws").await;
    assert!(plain.starts_with("HTTP/1.1 400"), "{plain}");
    assert!(plain.contains("not_websocket"), "{plain}");
}
