//! A minimal WebSocket client (RFC 6455 client side, framed by `kurir-wire`), written for load: one small
//! read buffer per connection, no per-frame allocation for reads, pings answered inline,
//! and an explicit source address so that many clients can share the loopback interface
//! without exhausting one address's ephemeral ports.
//!
//! It trusts the server it measures: the `Sec-WebSocket-Accept` value is not verified and
//! extensions are never negotiated.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use kurir_wire::frame::{
    self, Header, OP_BINARY, OP_CLOSE, OP_CONTINUATION as OP_CONT, OP_PING, OP_PONG, OP_TEXT,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Bytes read from a socket at once (the buffer grows only for larger frames).
const READ_CHUNK: usize = 4096;
/// Largest frame accepted from the server.
const MAX_FRAME: usize = 16 << 20;
/// Largest HTTP upgrade response accepted.
const MAX_HEADERS: usize = 16 << 10;

/// Why a connection could not be opened; `label` is a closed set for the report.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP connect or bind failed (`kind` of the io error).
    Tcp(std::io::ErrorKind),
    /// The server answered the upgrade with this HTTP status.
    Status(u16),
    /// Garbage instead of an HTTP response, or the socket closed during the handshake.
    Handshake,
    Timeout,
}

impl ConnectError {
    pub fn label(&self) -> String {
        match self {
            Self::Tcp(k) => format!("tcp_{k:?}").to_lowercase(),
            Self::Status(s) => format!("http_{s}"),
            Self::Handshake => "handshake".into(),
            Self::Timeout => "timeout".into(),
        }
    }
}

/// A TCP connection to `addr` from `source` (any port), Nagle off.
pub(crate) async fn tcp_connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Open TCP from `source` to `addr`, send `request`, and read the response head: the
/// stream, what was read after the head, and the status code.
pub(crate) async fn http_request(
    addr: SocketAddr,
    source: Option<IpAddr>,
    request: &str,
) -> Result<(TcpStream, BytesMut, u16), ConnectError> {
    let tcp = |e: std::io::Error| ConnectError::Tcp(e.kind());
    let mut stream = tcp_connect(addr, source).await.map_err(tcp)?;
    stream.write_all(request.as_bytes()).await.map_err(tcp)?;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let header_end = loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_HEADERS {
            return Err(ConnectError::Handshake);
        }
        buf.reserve(READ_CHUNK);
        if stream.read_buf(&mut buf).await.map_err(tcp)? == 0 {
            return Err(ConnectError::Handshake);
        }
    };
    let status = parse_status(&buf[..header_end]).ok_or(ConnectError::Handshake)?;
    buf.advance(header_end);
    Ok((stream, buf, status))
}

/// One received data frame (text or binary); control frames are handled internally.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Text(&'a [u8]),
    /// The server closed the connection with this code (1005 when none was given).
    Close(u16),
}

/// A client connection after a successful upgrade.
pub struct WsConn {
    stream: TcpStream,
    buf: BytesMut,
    /// Bytes of `buf` consumed by the frame returned last (discarded on the next call).
    consumed: usize,
    /// Payload of a fragmented message being reassembled.
    partial: Option<Vec<u8>>,
    mask_state: u32,
}

impl WsConn {
    /// Open TCP from `source` (port chosen by the kernel) to `addr` and upgrade at `path`.
    pub async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        host: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        tokio::time::timeout(timeout, Self::connect_inner(addr, source, host, path))
            .await
            .map_err(|_| ConnectError::Timeout)?
    }

    async fn connect_inner(
        addr: SocketAddr,
        source: Option<IpAddr>,
        host: &str,
        path: &str,
    ) -> Result<Self, ConnectError> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let (stream, buf, status) = http_request(addr, source, &request).await?;
        if status != 101 {
            return Err(ConnectError::Status(status));
        }
        let seed = addr.port() as u32 ^ (buf.as_ptr() as usize as u32) ^ 0x9e37_79b9;
        Ok(Self {
            stream,
            buf,
            consumed: 0,
            partial: None,
            mask_state: seed | 1,
        })
    }

    /// The next text/binary message or the server's close. `None`: the socket ended
    /// without a close frame. Pings are answered with pongs on the way.
    pub async fn next(&mut self) -> std::io::Result<Option<Event<'_>>> {
        self.buf.advance(self.consumed);
        self.consumed = 0;
        loop {
            match parse_frame(&self.buf)? {
                Some(frame) => {
                    let start = frame.header_len;
                    let end = frame.frame_len();
                    match frame.opcode {
                        OP_PING => {
                            let payload = self.buf[start..end].to_vec();
                            self.buf.advance(end);
                            self.send_frame(OP_PONG, &payload).await?;
                        }
                        OP_PONG => self.buf.advance(end),
                        OP_CLOSE => {
                            let code = if frame.payload_len >= 2 {
                                u16::from_be_bytes([self.buf[start], self.buf[start + 1]])
                            } else {
                                1005
                            };
                            self.buf.advance(end);
                            return Ok(Some(Event::Close(code)));
                        }
                        OP_TEXT | OP_BINARY | OP_CONT if !frame.fin || self.partial.is_some() => {
                            let part = self.partial.get_or_insert_with(Vec::new);
                            part.extend_from_slice(&self.buf[start..end]);
                            self.buf.advance(end);
                            if frame.fin {
                                let whole = self.partial.take().unwrap_or_default();
                                // Reassembled messages are rare (servers here never
                                // fragment); park them at the buffer's front.
                                let mut joined =
                                    BytesMut::with_capacity(whole.len() + self.buf.len());
                                joined.extend_from_slice(&whole);
                                joined.extend_from_slice(&self.buf);
                                self.buf = joined;
                                self.consumed = whole.len();
                                return Ok(Some(Event::Text(&self.buf[..whole.len()])));
                            }
                        }
                        OP_TEXT | OP_BINARY => {
                            self.consumed = end;
                            return Ok(Some(Event::Text(&self.buf[start..end])));
                        }
                        _ => return Err(invalid("unknown opcode")),
                    }
                }
                None => {
                    if self.buf.capacity() - self.buf.len() < 512 {
                        self.buf.reserve(READ_CHUNK);
                    }
                    if self.stream.read_buf(&mut self.buf).await? == 0 {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Send one text message (masked, as clients must).
    pub async fn send_text(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.send_frame(OP_TEXT, payload).await
    }

    /// Send a close frame with `code` and shut the write side down.
    pub async fn close(&mut self, code: u16) -> std::io::Result<()> {
        self.send_frame(OP_CLOSE, &code.to_be_bytes()).await?;
        self.stream.shutdown().await
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        // xorshift: masks need not be secret towards our own server.
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        let bytes = frame::masked(true, opcode, payload, x.to_be_bytes());
        self.stream.write_all(&bytes).await
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// A complete server frame's header at the front of `buf`, or `None` if more bytes are
/// needed.
fn parse_frame(buf: &[u8]) -> std::io::Result<Option<Header>> {
    match frame::parse_server_header(buf, MAX_FRAME) {
        Ok(Some(h)) if buf.len() >= h.frame_len() => Ok(Some(h)),
        Ok(_) => Ok(None),
        Err(e) => Err(invalid(&e.to_string())),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `HTTP/1.1 101 Switching Protocols` → 101.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_short_and_extended_lengths() {
        assert_eq!(parse_frame(&[0x81]).unwrap(), None);
        let f = parse_frame(&[0x81, 2, b'h', b'i']).unwrap().unwrap();
        assert_eq!(
            (f.fin, f.opcode, f.header_len, f.payload_len),
            (true, 1, 2, 2)
        );
        let mut long = vec![0x81, 126, 0x01, 0x00];
        assert_eq!(parse_frame(&long).unwrap(), None);
        long.extend(std::iter::repeat_n(b'x', 256));
        assert_eq!(parse_frame(&long).unwrap().unwrap().payload_len, 256);
        assert!(parse_frame(&[0x81, 0x82, 0, 0, 0, 0]).is_err(), "masked");
    }

    #[test]
    fn client_frames_are_masked() {
        let f = frame::masked(true, OP_TEXT, b"abc", [1, 2, 3, 4]);
        assert_eq!(f[..2], [0x81, 0x83]);
        assert_eq!(&f[2..6], &[1, 2, 3, 4]);
        assert_eq!(&f[6..], &[b'a' ^ 1, b'b' ^ 2, b'c' ^ 3]);
        let big = frame::masked(true, OP_TEXT, &[0; 300], [0; 4]);
        assert_eq!(big[1], 0x80 | 126);
        assert_eq!(u16::from_be_bytes([big[2], big[3]]), 300);
    }

    #[test]
    fn reads_status_line() {
        assert_eq!(parse_status(b"HTTP/1.1 101 Switching\r\n\r\n"), Some(101));
        assert_eq!(parse_status(b"HTTP/1.1 401 Unauthorized\r\n"), Some(401));
        assert_eq!(parse_status(b"garbage"), None);
    }

    #[tokio::test]
    async fn talks_to_a_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = vec![0u8; 1024];
            let mut got = 0;
            while find(&req[..got], b"\r\n\r\n").is_none() {
                got += s.read(&mut req[got..]).await.unwrap();
            }
            s.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
                .await
                .unwrap();
            // A ping, two texts in one write, then a close with 1013.
            s.write_all(&[0x89, 1, b'p', 0x81, 1, b'a', 0x81, 2, b'b', b'c'])
                .await
                .unwrap();
            // The pong comes back masked.
            let mut pong = [0u8; 7];
            s.read_exact(&mut pong).await.unwrap();
            assert_eq!(pong[0], 0x8A);
            assert_eq!(pong[6] ^ pong[2], b'p');
            s.write_all(&[0x01, 1, b'x', 0x80, 1, b'y']).await.unwrap();
            s.write_all(&[0x88, 2, 0x03, 0xF5]).await.unwrap();
        });
        let mut c = WsConn::connect(addr, None, "h", "/ws", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(c.next().await.unwrap(), Some(Event::Text(b"a")));
        assert_eq!(c.next().await.unwrap(), Some(Event::Text(b"bc")));
        assert_eq!(c.next().await.unwrap(), Some(Event::Text(b"xy")));
        assert_eq!(c.next().await.unwrap(), Some(Event::Close(1013)));
        server.await.unwrap();
    }
}
