//! What a hostile client can make a gateway's read side hold: the "fragment pin" (an
//! unfinished message kept alive by pings) against a real gateway, in process, with
//! raw frames a browser would never send.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kurir_backends::{Backends, Namespace};
use kurir_gateway::{Config, Gateway};
use kurir_testkit::ClientToken;
use kurir_wire::frame::{self, OP_CLOSE, OP_PING, OP_TEXT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = kurir_gateway::config::TEST_JWT_SECRET;

async fn start(config: Config) -> SocketAddr {
    let backends = Backends::memory(config.backends.namespace.clone());
    let gw = Gateway::bind(config, backends, None).await.unwrap();
    let addr = gw.local_addr();
    tokio::spawn(gw.serve(std::future::pending()));
    addr
}

fn token(user: &str) -> String {
    ClientToken::new(user).expires_in(120).sign(SECRET)
}

/// A raw upgraded connection; bytes after the `101` head are kept in `rx`.
struct Raw {
    stream: TcpStream,
    rx: Vec<u8>,
}

impl Raw {
    async fn open(addr: SocketAddr, user: &str) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /ws?token={} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            token(user)
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut rx = Vec::new();
        let end = loop {
            if let Some(at) = rx.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed during the handshake");
            rx.extend_from_slice(&chunk[..n]);
        };
        assert!(
            rx.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&rx)
        );
        rx.drain(..end);
        Self { stream, rx }
    }

    /// Send an unfinished message, then a ping every `every` until the server closes:
    /// the close code and reason, and when it came.
    async fn pin(mut self, fragment: usize, every: Duration, for_at_most: Duration) -> Closed {
        let start = Instant::now();
        self.stream
            .write_all(&frame::masked(
                false,
                OP_TEXT,
                &vec![b' '; fragment],
                [1, 2, 3, 4],
            ))
            .await
            .unwrap();
        let mut ping = tokio::time::interval(every);
        loop {
            if let Some(closed) = self.close_frame() {
                return Closed {
                    at: start.elapsed(),
                    ..closed
                };
            }
            let mut chunk = [0u8; 4096];
            tokio::select! {
                _ = ping.tick() => {
                    // A closed socket may refuse the ping: the close frame is read next.
                    let _ = self.stream.write_all(&frame::masked(true, OP_PING, b"", [5; 4])).await;
                }
                n = self.stream.read(&mut chunk) => match n {
                    Ok(n) if n > 0 => self.rx.extend_from_slice(&chunk[..n]),
                    _ => return Closed { code: None, reason: String::new(), at: start.elapsed() },
                },
            }
            assert!(
                start.elapsed() < for_at_most,
                "still open after {for_at_most:?}"
            );
        }
    }

    /// The server's close frame, once it is in `rx` (other frames are skipped).
    fn close_frame(&mut self) -> Option<Closed> {
        while let Some(h) = frame::parse_server_header(&self.rx, 1 << 20).unwrap() {
            if self.rx.len() < h.frame_len() {
                return None;
            }
            let whole: Vec<u8> = self.rx.drain(..h.frame_len()).collect();
            if h.opcode == OP_CLOSE {
                let p = frame::payload_of(&whole);
                return Some(Closed {
                    code: Some(u16::from_be_bytes([p[0], p[1]])),
                    reason: String::from_utf8_lossy(&p[2..]).into_owned(),
                    at: Duration::ZERO,
                });
            }
        }
        None
    }
}

#[derive(Debug)]
struct Closed {
    code: Option<u16>,
    reason: String,
    at: Duration,
}

fn config() -> Config {
    let mut c = Config::for_test(Namespace::random_for_test());
    // The message size the fragment pin used before the limit was lowered.
    c.max_frame_bytes = 64 * 1024;
    c
}

#[tokio::test]
async fn pinned_fragments_are_closed_within_the_partial_timeout() {
    let mut c = config();
    c.partial_message_timeout_ms = 1_000;
    let addr = start(c).await;
    let mut pins = Vec::new();
    for i in 0..20 {
        let raw = Raw::open(addr, &format!("pin-{i}")).await;
        pins.push(tokio::spawn(raw.pin(
            60_000,
            Duration::from_millis(200),
            Duration::from_secs(10),
        )));
    }
    for p in pins {
        let closed = p.await.unwrap();
        assert_eq!(closed.code, Some(1008), "{closed:?}");
        assert_eq!(closed.reason, "message too slow");
        assert!(
            closed.at >= Duration::from_millis(900) && closed.at < Duration::from_millis(2_500),
            "closed after {:?} with a 1 s limit",
            closed.at
        );
    }
}

#[tokio::test]
async fn the_node_budget_bounds_what_pinned_fragments_hold() {
    let mut c = config();
    // Room for about four 60 KB fragments; none times out during the test.
    c.partial_message_budget_bytes = 256 * 1024;
    c.partial_message_timeout_ms = 60_000;
    let addr = start(c).await;
    let mut pins = Vec::new();
    for i in 0..10 {
        let raw = Raw::open(addr, &format!("budget-{i}")).await;
        pins.push(tokio::spawn(tokio::time::timeout(
            Duration::from_secs(4),
            raw.pin(60_000, Duration::from_millis(500), Duration::from_secs(10)),
        )));
    }
    let mut refused = 0;
    let mut held = 0;
    for p in pins {
        match p.await.unwrap() {
            Ok(closed) => {
                assert_eq!(closed.code, Some(1013), "{closed:?}");
                assert_eq!(closed.reason, "server busy: reconnect");
                refused += 1;
            }
            Err(_still_open) => held += 1,
        }
    }
    assert!(
        held <= 4,
        "{held} fragments of 60 KB held in a 256 KiB budget"
    );
    assert!(refused >= 6, "{refused} refused");
}

#[tokio::test]
async fn by_default_a_60_kb_message_is_refused_at_its_header() {
    let addr = start(Config::for_test(Namespace::random_for_test())).await;
    let raw = Raw::open(addr, "big").await;
    let closed = raw
        .pin(60_000, Duration::from_millis(200), Duration::from_secs(5))
        .await;
    assert_eq!(closed.code, Some(1009), "{closed:?}");
    assert!(closed.at < Duration::from_secs(1), "{:?}", closed.at);
}
