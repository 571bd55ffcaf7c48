//! A minimal SSE client for load: `GET /sse` over one TCP connection, the chunked body
//! decoded in place, one event's `data` returned at a time (borrowed from the buffer).
//! Like [`crate::ws`], it trusts the server it measures. Client actions would be HTTP
//! requests on other connections; the load scenarios that use SSE need none (topics go
//! in the stream's URL, live notifications need no ack).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ws::{http_request, ConnectError, Event};

/// Bytes read from a socket at once.
const READ_CHUNK: usize = 4096;
/// Largest event accepted.
const MAX_EVENT: usize = 16 << 20;

/// An open stream.
pub struct SseConn {
    stream: TcpStream,
    /// Bytes read, not yet de-chunked.
    raw: BytesMut,
    /// The de-chunked body: complete and partial events.
    body: BytesMut,
    /// Bytes of `body` consumed by the event returned last.
    consumed: usize,
    /// Bytes left in the current chunk (0: a size line comes next).
    chunk_left: usize,
    /// The terminating zero-size chunk was read.
    ended: bool,
}

impl SseConn {
    pub async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        host: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n");
        let (stream, raw, status) =
            tokio::time::timeout(timeout, http_request(addr, source, &request))
                .await
                .map_err(|_| ConnectError::Timeout)??;
        if status != 200 {
            return Err(ConnectError::Status(status));
        }
        Ok(Self {
            stream,
            raw,
            body: BytesMut::with_capacity(READ_CHUNK),
            consumed: 0,
            chunk_left: 0,
            ended: false,
        })
    }

    /// The next event's data (a JSON frame), or `Close(code)` for the server's `close`
    /// event; `None` when the stream ended. Comments (heartbeats) are skipped.
    pub async fn next(&mut self) -> std::io::Result<Option<Event<'_>>> {
        self.body.advance(self.consumed);
        self.consumed = 0;
        loop {
            if let Some(end) = find(&self.body, b"\n\n") {
                let block_len = end + 2;
                let Some(start) = find(&self.body[..end], b"data: ") else {
                    self.body.advance(block_len); // a comment, or `retry:` alone
                    continue;
                };
                let data_start = start + 6;
                let data_end = self.body[data_start..end]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(end, |p| data_start + p);
                self.consumed = block_len;
                let data = &self.body[data_start..data_end];
                if data.starts_with(br#"{"type":"close""#) {
                    let code = close_code(data).unwrap_or(1005);
                    return Ok(Some(Event::Close(code)));
                }
                return Ok(Some(Event::Text(&self.body[data_start..data_end])));
            }
            if self.body.len() > MAX_EVENT {
                return Err(invalid("event too large"));
            }
            if self.ended || !self.dechunk()? && self.read().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Move what `raw` holds of the chunked body into `body`; whether anything moved.
    fn dechunk(&mut self) -> std::io::Result<bool> {
        let mut moved = false;
        loop {
            if self.chunk_left == 0 {
                let Some(line) = find(&self.raw, b"\r\n") else {
                    return Ok(moved);
                };
                let size = std::str::from_utf8(&self.raw[..line])
                    .ok()
                    .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
                    .ok_or_else(|| invalid("bad chunk size"))?;
                if size == 0 {
                    self.ended = true;
                    return Ok(moved);
                }
                // The chunk, then its CRLF.
                self.raw.advance(line + 2);
                self.chunk_left = size + 2;
            }
            if self.raw.is_empty() {
                return Ok(moved);
            }
            let take = self.chunk_left.min(self.raw.len());
            // The chunk's trailing CRLF is not body.
            let data = take.min(self.chunk_left.saturating_sub(2));
            self.body.extend_from_slice(&self.raw[..data]);
            self.raw.advance(take);
            self.chunk_left -= take;
            moved |= data > 0;
        }
    }

    async fn read(&mut self) -> std::io::Result<usize> {
        if self.raw.capacity() - self.raw.len() < 512 {
            self.raw.reserve(READ_CHUNK);
        }
        self.stream.read_buf(&mut self.raw).await
    }

    /// End the stream from the client's side.
    pub async fn close(&mut self) -> std::io::Result<()> {
        self.stream.shutdown().await
    }
}

fn close_code(data: &[u8]) -> Option<u16> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    v["code"].as_u64().and_then(|c| u16::try_from(c).ok())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn invalid(why: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn decodes_chunked_events_split_anywhere() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 512];
            let _ = s.read(&mut req).await.unwrap();
            let events = "retry: 2000\n\ndata: {\"type\":\"welcome\"}\n\n: ping\n\nid: 1-0\ndata: {\"type\":\"notification\"}\n\ndata: {\"type\":\"close\",\"code\":1012}\n\n";
            let mut wire = String::from("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
            for part in events.as_bytes().chunks(7) {
                wire.push_str(&format!(
                    "{:x}\r\n{}\r\n",
                    part.len(),
                    std::str::from_utf8(part).unwrap()
                ));
            }
            wire.push_str("0\r\n\r\n");
            // Written in odd pieces: chunk boundaries fall inside lines and sizes.
            for piece in wire.as_bytes().chunks(5) {
                s.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let mut c = SseConn::connect(addr, None, "x", "/sse", Duration::from_secs(5))
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Some(ev) = c.next().await.unwrap() {
            got.push(match ev {
                Event::Text(t) => String::from_utf8(t.to_vec()).unwrap(),
                Event::Close(code) => format!("close {code}"),
            });
        }
        assert_eq!(
            got,
            [
                r#"{"type":"welcome"}"#,
                r#"{"type":"notification"}"#,
                "close 1012"
            ]
        );
        server.await.unwrap();
    }
}
