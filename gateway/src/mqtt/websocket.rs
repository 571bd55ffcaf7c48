//! MQTT over WebSocket: `GET /mqtt` with subprotocol `mqtt` (MQTT 3.1.1 §6), on the main
//! listener, for browsers and devices behind proxies that pass only HTTP. After the
//! upgrade the connection is an MQTT one like any other ([`super::connect`] then
//! [`super::session`]): [`WsBytes`] turns the client's binary messages into the byte
//! stream the codec reads (MQTT packets may span messages, and a message may hold
//! several), and every write into one binary message.
//!
//! WebSocket pings are not answered (MQTT clients keep alive with PINGREQ); a text
//! message is a protocol error; a close message ends the stream.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use kurir_wire::frame::{self as wire, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::connect::Handshake;
use super::persist::Sessions;
use super::MAX_PACKET_BYTES;
use crate::admission::{self, Denied};
use crate::state::AppState;
use crate::ws::accept::EdgeStream;
use crate::ws::handshake;

/// The subprotocol MQTT over WebSocket names.
const SUBPROTOCOL: &str = "mqtt";

/// What `/mqtt` needs beyond the node's state: the persistent sessions the TCP listener
/// shares, and the drain signal.
#[derive(Clone)]
pub struct Edge {
    pub sessions: Arc<Sessions>,
    pub stop: CancellationToken,
}

/// `GET /mqtt`: the WebSocket handshake (with the `mqtt` subprotocol) and the Origin;
/// the token comes later, in CONNECT.
pub async fn upgrade(State(state): State<Arc<AppState>>, edge: Edge, mut req: Request) -> Response {
    let accept = match handshake::check(req.headers()) {
        Ok(accept) => accept,
        Err(refusal) => return refusal.into_response(),
    };
    if let Err(denied) = admission::check_origin(&state, req.headers()) {
        return denied.into_response();
    }
    let offered = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case(SUBPROTOCOL));
    if !offered {
        return Denied::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "MQTT over WebSocket needs the `mqtt` subprotocol",
        )
        .into_response();
    }
    let Some(on_upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
        return Denied::new(
            StatusCode::UPGRADE_REQUIRED,
            "not_upgradable",
            "this connection cannot be upgraded (HTTP/1.1 required)",
        )
        .into_response();
    };
    let tracker = state.tracker.clone();
    tracker.spawn(async move {
        let Some(stream) = take_stream(on_upgrade).await else {
            return;
        };
        let deadline = tokio::time::Instant::now() + state.config.handshake_timeout();
        let handshake = Handshake {
            state,
            sessions: edge.sessions,
            // The HTTP listener bounded this connection's handshake up to the upgrade.
            permit: None,
            deadline,
            stop: edge.stop,
        };
        handshake.run(stream).await;
    });
    let mut response = handshake::switching_protocols(&accept);
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    response
}

/// The upgraded connection's stream, with what hyper read past the request.
async fn take_stream(on_upgrade: OnUpgrade) -> Option<WsBytes<EdgeStream>> {
    let upgraded = on_upgrade.await.ok()?;
    match upgraded.downcast::<TokioIo<EdgeStream>>() {
        Ok(parts) => Some(WsBytes::new(
            parts.io.into_inner(),
            BytesMut::from(&parts.read_buf[..]),
        )),
        Err(_) => {
            warn!("upgraded connection is not an accepted stream; dropped");
            None
        }
    }
}

/// A WebSocket connection as a byte stream of its binary messages' payloads.
pub struct WsBytes<S> {
    io: S,
    /// Bytes read, not yet a whole frame (at most one frame's worth is held).
    raw: BytesMut,
    /// Unmasked payload the reader has not taken yet.
    payload: BytesMut,
    /// The client's close message came, or the socket ended.
    closed: bool,
    /// A frame being written, how much of it is written, and the caller's byte count.
    out: Option<(Bytes, usize, usize)>,
}

impl<S> WsBytes<S> {
    pub fn new(io: S, early: BytesMut) -> Self {
        Self {
            io,
            raw: early,
            payload: BytesMut::new(),
            closed: false,
            out: None,
        }
    }

    /// The next whole frame in `raw`, if any, into `payload` (data) or the state.
    fn take_frame(&mut self) -> io::Result<bool> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        // A frame's payload is at most one packet and its header (packets may also
        // span frames, so nothing that works needs more).
        let Some(h) = wire::parse_header(&self.raw, MAX_PACKET_BYTES + 8)
            .map_err(|e| invalid(e.to_string()))?
        else {
            return Ok(false);
        };
        if self.raw.len() < h.frame_len() {
            return Ok(false);
        }
        let mut frame = self.raw.split_to(h.frame_len());
        let mut data = frame.split_off(h.header_len);
        wire::unmask(&mut data, h.mask);
        match h.opcode {
            OP_BINARY | OP_CONTINUATION => self.payload.extend_from_slice(&data),
            OP_CLOSE => self.closed = true,
            OP_PING | OP_PONG => {}
            _ => return Err(invalid("MQTT over WebSocket is binary".into())),
        }
        Ok(true)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.payload.is_empty() {
                let n = buf.remaining().min(this.payload.len());
                buf.put_slice(&this.payload.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            if this.take_frame()? {
                continue;
            }
            let mut chunk = [0u8; 4096];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.closed = true;
            }
            this.raw.extend_from_slice(read.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    /// Writes `buf` as one binary message; reports it written once the whole frame is.
    /// A caller polled again after `Pending` passes the same bytes, as `AsyncWrite`
    /// asks, so the frame in flight is not built again.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() && this.out.is_none() {
            return Poll::Ready(Ok(0));
        }
        let (frame, at, n) = this
            .out
            .get_or_insert_with(|| (wire::frame(OP_BINARY, buf), 0, buf.len()));
        while *at < frame.len() {
            let w = ready!(Pin::new(&mut this.io).poll_write(cx, &frame[*at..]))?;
            if w == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *at += w;
        }
        let n = *n;
        this.out = None;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn binary_messages_are_one_byte_stream_and_writes_are_messages() {
        let (server, mut client) = tokio::io::duplex(1024);
        let mut ws = WsBytes::new(server, BytesMut::new());
        let mask = [1, 2, 3, 4];
        // "hello world" over a fragmented message and a ping in between.
        let mut sent = wire::masked(false, OP_BINARY, b"hello ", mask);
        sent.extend(wire::masked(true, OP_PING, b"", mask));
        sent.extend(wire::masked(true, OP_CONTINUATION, b"world", mask));
        sent.extend(wire::masked(true, OP_CLOSE, &1000u16.to_be_bytes(), mask));
        client.write_all(&sent).await.unwrap();
        let mut got = Vec::new();
        ws.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello world");

        ws.write_all(b"abc").await.unwrap();
        let mut frame = [0u8; 5];
        client.read_exact(&mut frame).await.unwrap();
        assert_eq!(frame, *b"\x82\x03abc");
    }

    #[tokio::test]
    async fn text_is_refused() {
        let (server, mut client) = tokio::io::duplex(1024);
        let mut ws = WsBytes::new(server, BytesMut::new());
        client
            .write_all(&wire::masked(true, wire::OP_TEXT, b"{}", [0; 4]))
            .await
            .unwrap();
        let mut b = [0u8; 4];
        assert!(ws.read(&mut b).await.is_err());
    }
}
