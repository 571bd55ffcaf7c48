//! Admission and liveness limits in process: Origin allowlist, connection cap, idle
//! timeout, and public-key tokens (RS256/ES256) including algorithm confusion.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kurir_backends::{Backends, Namespace};
use kurir_gateway::{Config, Gateway};
use kurir_testkit::ClientToken;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const SECRET: &str = kurir_gateway::config::TEST_JWT_SECRET;

async fn start(config: Config) -> std::net::SocketAddr {
    let backends = Backends::memory(config.backends.namespace.clone());
    let gw = Gateway::bind(config, backends, None).await.unwrap();
    let addr = gw.local_addr();
    tokio::spawn(gw.serve(std::future::pending()));
    addr
}

fn config() -> Config {
    Config::for_test(Namespace::random_for_test())
}

fn claims(user: &str) -> serde_json::Value {
    ClientToken::new(user).expires_in(60).claims()
}

fn hs256(user: &str, secret: &[u8]) -> String {
    kurir_testkit::token::hs256(secret, &claims(user))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

async fn status(addr: std::net::SocketAddr, token: &str, origin: Option<&str>) -> u16 {
    let mut req = format!("ws://{addr}/ws?token={token}")
        .into_client_request()
        .unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn origin_allowlist() {
    let mut c = config();
    c.allowed_origins = vec!["https://app.example".into()];
    let addr = start(c).await;
    let t = hs256("alice", SECRET.as_bytes());
    assert_eq!(status(addr, &t, Some("https://app.example")).await, 101);
    assert_eq!(status(addr, &t, Some("https://evil.example")).await, 403);
    // Non-browser clients send no Origin.
    assert_eq!(status(addr, &t, None).await, 101);
}

#[tokio::test]
async fn connection_cap_answers_503() {
    let mut c = config();
    c.max_connections = 1;
    let addr = start(c).await;
    let t = hs256("alice", SECRET.as_bytes());
    let (_first, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={t}"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(status(addr, &t, None).await, 503);
}

#[tokio::test]
async fn silent_clients_are_closed_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = config();
    c.heartbeat_ms = 100;
    c.idle_timeout_ms = 400;
    let addr = start(c).await;
    let t = hs256("alice", SECRET.as_bytes());
    // A raw client that never answers pings (tungstenite would answer them by itself).
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /ws?token={t} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let started = std::time::Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP head")
        + 4;
    assert!(buf.starts_with(b"HTTP/1.1 101"));
    // Walk the (unmasked) server frames to the close frame and read its code.
    let mut i = head_end;
    let mut code = None;
    while i + 2 <= buf.len() {
        let opcode = buf[i] & 0x0f;
        let (len, hdr) = match buf[i + 1] & 0x7f {
            126 => (u16::from_be_bytes([buf[i + 2], buf[i + 3]]) as usize, 4),
            127 => panic!("unexpected huge frame"),
            n => (n as usize, 2),
        };
        let payload = &buf[i + hdr..i + hdr + len];
        if opcode == 0x8 {
            code = Some(u16::from_be_bytes([payload[0], payload[1]]));
            break;
        }
        i += hdr + len;
    }
    assert_eq!(code, Some(1001));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_reading_client_stays_connected_past_the_idle_timeout() {
    let mut c = config();
    c.heartbeat_ms = 100;
    c.idle_timeout_ms = 400;
    let addr = start(c).await;
    let t = hs256("alice", SECRET.as_bytes());
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={t}"))
        .await
        .unwrap();
    // Reading lets tungstenite answer pings with pongs.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1200);
    while let Ok(m) = tokio::time::timeout_at(deadline, ws.next()).await {
        assert!(
            !matches!(m, Some(Ok(Message::Close(_))) | None),
            "closed while answering pings"
        );
    }
}

#[tokio::test]
async fn a_session_ends_with_1008_when_its_token_expires() {
    let mut c = config();
    c.heartbeat_ms = 100;
    c.idle_timeout_ms = 5_000;
    let addr = start(c).await;
    // From before the token is made: a slow connect (a loaded machine) must not make the
    // session look closed early.
    let started = tokio::time::Instant::now();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Valid for one to two seconds (exp is in whole seconds).
    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "alice", "exp": now + 2}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={t}"))
        .await
        .unwrap();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => break f,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let close = close.expect("a close code");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "token expired");
    // Not before the token expired, and within a heartbeat or so after.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

async fn public_key_gateway(public: &str) -> std::net::SocketAddr {
    let mut c = config();
    c.jwt_secret = None;
    c.jwt_public_key_file = Some(fixture(public));
    start(c).await
}

#[tokio::test]
async fn es256_and_rs256_tokens_and_no_algorithm_confusion() {
    for (alg, private, public) in [
        (Algorithm::ES256, "es256-private.pem", "es256-public.pem"),
        (Algorithm::RS256, "rs256-private.pem", "rs256-public.pem"),
    ] {
        let addr = public_key_gateway(public).await;
        let pem = std::fs::read(fixture(private)).unwrap();
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
            _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
        };
        let good = jsonwebtoken::encode(&Header::new(alg), &claims("alice"), &key).unwrap();
        assert_eq!(status(addr, &good, None).await, 101, "{alg:?}");
        // An HS256 token "signed" with the public key must not pass as the key holder's.
        let public_pem = std::fs::read(fixture(public)).unwrap();
        let forged = hs256("alice", &public_pem);
        assert_eq!(status(addr, &forged, None).await, 401, "{alg:?} confusion");
    }
}
