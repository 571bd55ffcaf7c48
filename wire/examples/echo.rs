//! An echo server on exactly the read and write path a Kurir gateway uses ([`WsSocket`]),
//! for the Autobahn conformance suite (`scripts/autobahn.sh`). Test-only: it has the
//! smallest opening handshake that works and no authentication.
//!
//! `cargo run -p kurir-wire --example echo -- [ADDR]` (default `127.0.0.1:0`); the first
//! line on stdout is `listening on HOST:PORT`.
//!
//! Text and binary messages come back as they came, pings get pongs, a close is answered
//! with the client's code, and a read error gets the close code a gateway sends for it.
//! Messages may be as large as the suite's (16 MiB) rather than a gateway's 4 KiB.

use std::sync::Arc;
use std::time::Duration;

use kurir_wire::frame::{self, OP_BINARY, OP_CLOSE, OP_PONG};
use kurir_wire::limits::DEFAULT_PARTIAL_TIMEOUT;
use kurir_wire::{handshake, Incoming, ReadError, ReadLimits, WireError, WsSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The suite's largest message is 16 MiB.
const MAX_MESSAGE: usize = 64 << 20;
/// Room for a few of those at once.
const BUDGET: usize = 1 << 30;
/// Largest request head accepted.
const MAX_HEAD: usize = 8 << 10;
const CLOSE_WAIT: Duration = Duration::from_secs(5);
const CLOSE_LINGER: Duration = Duration::from_secs(1);

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let limits = Arc::new(ReadLimits::new(
        MAX_MESSAGE,
        DEFAULT_PARTIAL_TIMEOUT,
        BUDGET,
    ));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream, limits.clone()));
    }
}

/// The opening handshake, then echo until the connection ends.
async fn serve(mut stream: TcpStream, limits: Arc<ReadLimits>) {
    let mut head = Vec::with_capacity(1024);
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await {
            Ok(n) if n > 0 && head.len() + n <= MAX_HEAD => head.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    };
    let Some(key) = header(&head[..end], "sec-websocket-key") else {
        let _ = stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        handshake::accept_key(key)
    );
    if stream.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    let mut ws = WsSocket::new(stream, &head[end..], limits);
    loop {
        let reply = match ws.read().await {
            Ok(Incoming::Text(t)) => frame::text(t.as_bytes()),
            Ok(Incoming::Binary(b)) => frame::frame(OP_BINARY, &b),
            Ok(Incoming::Ping(p)) => frame::frame(OP_PONG, &p),
            Ok(Incoming::Pong) => continue,
            Ok(Incoming::Close(code)) => {
                // Answer with the client's own code (RFC 6455 §5.5.1).
                let echo =
                    code.map_or_else(|| frame::frame(OP_CLOSE, &[]), |c| frame::close(c, ""));
                ws.close(Some(echo), CLOSE_WAIT, CLOSE_LINGER).await;
                return;
            }
            Err(ReadError::Closed) => return,
            Err(e) => {
                let code = match e {
                    ReadError::Wire(WireError::TooLarge) => 1009,
                    ReadError::InvalidText => 1007,
                    ReadError::MessageTooSlow => 1008,
                    ReadError::Overloaded => 1013,
                    _ => 1002,
                };
                let close = frame::close(code, &e.to_string());
                ws.close(Some(close), CLOSE_WAIT, CLOSE_LINGER).await;
                return;
            }
        };
        if ws.write(&[reply]).await.is_err() {
            return;
        }
    }
}

/// The value of header `name` (lower case) in a request head.
fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (k, v) = line.split_at(colon);
        k.eq_ignore_ascii_case(name.as_bytes())
            .then(|| v[1..].trim_ascii())
    })
}
