//! One upgraded connection's byte stream, speaking RFC 6455 frames through [`wire`].
//!
//! Reading is cancel-safe (everything read but not yet parsed lives in the socket, not in
//! the future), so a session can wait for a client frame in a `select!`. Writing takes
//! whole, pre-framed frames and writes a batch of them with one vectored write: the bytes
//! a fan-out shares go to the kernel as they are, with no per-connection write buffer.
//! An idle socket holds no buffer at all: reads go through a stack buffer, and only the
//! tail of an incomplete frame is kept.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::wire::{self, WireError};

/// Bytes read from the kernel per call, on the stack: client frames are small.
const READ_CHUNK: usize = 2048;

/// Frames handed to one vectored write at most.
const MAX_IOV: usize = 64;

/// What a client sent, control frames included (the session answers pings itself).
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary,
    Ping(Bytes),
    Pong,
    /// The client's close frame, with its code if it gave one.
    Close(Option<u16>),
}

/// Why reading ended the connection.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the stream (or it broke).
    Closed,
    /// A frame against the protocol or the size limit.
    Wire(WireError),
    /// A text message that is not UTF-8.
    InvalidText,
}

impl From<WireError> for ReadError {
    fn from(e: WireError) -> Self {
        Self::Wire(e)
    }
}

/// A frame ready for the wire (header included).
pub trait WireFrame {
    fn wire(&self) -> &[u8];
}

impl WireFrame for Bytes {
    fn wire(&self) -> &[u8] {
        self
    }
}

/// A message arriving in fragments.
#[derive(Debug)]
struct Fragments {
    text: bool,
    data: Vec<u8>,
}

/// The server end of a WebSocket.
#[derive(Debug)]
pub struct WsSocket<S> {
    io: S,
    /// Bytes read but not yet a whole frame; unallocated while there are none.
    rx: Vec<u8>,
    /// A fragmented message being put together (rare: boxed).
    fragments: Option<Box<Fragments>>,
    /// Largest frame or message accepted.
    max_message: usize,
    /// A write stopped part-way through a frame: nothing more may be written.
    torn: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsSocket<S> {
    /// `early`: bytes the HTTP layer read past the upgrade request.
    pub fn new(io: S, early: &[u8], max_message: usize) -> Self {
        Self {
            io,
            rx: early.to_vec(),
            fragments: None,
            max_message,
            torn: false,
        }
    }

    /// The next message or control frame. Cancel-safe.
    ///
    /// # Errors
    /// The stream ended, or the client broke the protocol or the size limit.
    pub async fn read(&mut self) -> Result<Incoming, ReadError> {
        poll_fn(|cx| self.poll_read(cx)).await
    }

    /// [`WsSocket::read`] as a poll function, for waiting on it beside other things.
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, ReadError>> {
        loop {
            if let Some(msg) = self.parse()? {
                return Poll::Ready(Ok(msg));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut buf = ReadBuf::new(&mut chunk);
            if ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf)).is_err()
                || buf.filled().is_empty()
            {
                return Poll::Ready(Err(ReadError::Closed));
            }
            self.rx.extend_from_slice(buf.filled());
        }
    }

    /// Take one whole frame off `rx`; `None` until one is there.
    fn parse(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let Some(h) = wire::parse_header(&self.rx, self.max_message)? else {
                return Ok(None);
            };
            if self.rx.len() < h.frame_len() {
                self.rx.reserve_exact(h.frame_len() - self.rx.len());
                return Ok(None);
            }
            let mut payload = self.rx[h.header_len..h.frame_len()].to_vec();
            if self.rx.len() == h.frame_len() {
                // Give the buffer back: an idle connection keeps none.
                self.rx = Vec::new();
            } else {
                self.rx.drain(..h.frame_len());
            }
            wire::unmask(&mut payload, h.mask);
            if let Some(msg) = self.on_frame(h, payload)? {
                return Ok(Some(msg));
            }
        }
    }

    /// One whole frame; `None` for a fragment that does not end a message.
    fn on_frame(
        &mut self,
        h: wire::Header,
        payload: Vec<u8>,
    ) -> Result<Option<Incoming>, ReadError> {
        match h.opcode {
            wire::OP_PING => return Ok(Some(Incoming::Ping(Bytes::from(payload)))),
            wire::OP_PONG => return Ok(Some(Incoming::Pong)),
            wire::OP_CLOSE => {
                return match payload.len() {
                    0 => Ok(Some(Incoming::Close(None))),
                    1 => Err(WireError::Protocol("close payload of one byte").into()),
                    _ => {
                        if std::str::from_utf8(&payload[2..]).is_err() {
                            return Err(ReadError::InvalidText);
                        }
                        Ok(Some(Incoming::Close(Some(u16::from_be_bytes([
                            payload[0], payload[1],
                        ])))))
                    }
                };
            }
            _ => {}
        }
        let (text, data) = match (h.opcode, self.fragments.take()) {
            (wire::OP_CONTINUATION, None) => {
                return Err(WireError::Protocol("continuation without a message").into())
            }
            (wire::OP_CONTINUATION, Some(mut f)) => {
                if f.data.len() + payload.len() > self.max_message {
                    return Err(WireError::TooLarge.into());
                }
                f.data.extend_from_slice(&payload);
                if !h.fin {
                    self.fragments = Some(f);
                    return Ok(None);
                }
                (f.text, f.data)
            }
            (_, Some(_)) => {
                return Err(WireError::Protocol("new message inside a fragmented one").into())
            }
            (op, None) => {
                let text = op == wire::OP_TEXT;
                if !h.fin {
                    self.fragments = Some(Box::new(Fragments {
                        text,
                        data: payload,
                    }));
                    return Ok(None);
                }
                (text, payload)
            }
        };
        if !text {
            return Ok(Some(Incoming::Binary));
        }
        String::from_utf8(data)
            .map(|t| Some(Incoming::Text(t)))
            .map_err(|_| ReadError::InvalidText)
    }

    /// Write whole frames, as few syscalls as the kernel allows. Not cancel-safe: a
    /// write dropped part-way leaves the socket unable to write more (its close then
    /// skips the close frame).
    ///
    /// # Errors
    /// The peer is gone.
    pub async fn write<F: WireFrame>(&mut self, frames: &[F]) -> io::Result<()> {
        if self.torn {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.torn = true;
        let (mut first, mut offset) = (0, 0);
        while first < frames.len() {
            let n = poll_fn(|cx| self.poll_write(cx, &frames[first..], offset)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            // Advance past what was written.
            let mut left = n;
            while left > 0 {
                let rest = frames[first].wire().len() - offset;
                if left >= rest {
                    left -= rest;
                    first += 1;
                    offset = 0;
                } else {
                    offset += left;
                    left = 0;
                }
            }
            // Skip empty frames (none are built, but a zero-length slice never advances).
            while first < frames.len() && frames[first].wire().len() == offset {
                first += 1;
                offset = 0;
            }
        }
        self.torn = false;
        Ok(())
    }

    fn poll_write<F: WireFrame>(
        &mut self,
        cx: &mut Context<'_>,
        frames: &[F],
        offset: usize,
    ) -> Poll<io::Result<usize>> {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        for (i, f) in frames.iter().take(MAX_IOV).enumerate() {
            slices[i] = IoSlice::new(if i == 0 {
                &f.wire()[offset..]
            } else {
                f.wire()
            });
            n += 1;
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n])
    }

    /// Say goodbye: the close frame (unless a write was torn; the frame may wait up to
    /// `wait` behind what the client has yet to read), a half-close, then read until the
    /// client closes too or `linger` passes, so that unread client bytes do not turn our
    /// close into a reset that could discard the close frame on their side.
    pub async fn close(&mut self, frame: Option<Bytes>, wait: Duration, linger: Duration) {
        if let (Some(f), false) = (frame, self.torn) {
            match tokio::time::timeout(wait, self.write(&[f])).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        let _ = tokio::time::timeout(linger, async {
            if self.io.shutdown().await.is_err() {
                return;
            }
            self.rx = Vec::new();
            let mut chunk = [0u8; 512];
            while poll_fn(|cx| {
                let mut buf = ReadBuf::new(&mut chunk);
                Pin::new(&mut self.io)
                    .poll_read(cx, &mut buf)
                    .map(|r| r.map(|()| buf.filled().len()))
            })
            .await
            .is_ok_and(|n| n > 0)
            {}
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::wire::{masked, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_TEXT};
    use tokio::io::{AsyncReadExt, DuplexStream};

    fn pair(max: usize) -> (WsSocket<DuplexStream>, DuplexStream) {
        let (server, client) = tokio::io::duplex(1 << 20);
        (WsSocket::new(server, &[], max), client)
    }

    #[tokio::test]
    async fn reads_messages_split_and_coalesced() {
        let (mut ws, mut client) = pair(1000);
        let mut bytes = masked(true, OP_TEXT, b"{\"type\":\"ping\"}", [1, 2, 3, 4]);
        bytes.extend(masked(true, OP_PING, b"p", [5, 6, 7, 8]));
        bytes.extend(masked(false, OP_TEXT, b"ab", [0; 4]));
        bytes.extend(masked(true, OP_PING, b"", [0; 4]));
        bytes.extend(masked(true, OP_CONTINUATION, "cé".as_bytes(), [7; 4]));
        // One byte at a time, then everything at once.
        for b in &bytes[..5] {
            client.write_all(&[*b]).await.unwrap();
        }
        client.write_all(&bytes[5..]).await.unwrap();
        assert_eq!(
            ws.read().await.unwrap(),
            Incoming::Text("{\"type\":\"ping\"}".into())
        );
        assert_eq!(
            ws.read().await.unwrap(),
            Incoming::Ping(Bytes::from_static(b"p"))
        );
        assert_eq!(ws.read().await.unwrap(), Incoming::Ping(Bytes::new()));
        assert_eq!(ws.read().await.unwrap(), Incoming::Text("abcé".into()));
        assert!(ws.rx.capacity() == 0, "nothing kept once all is read");
        client
            .write_all(&masked(true, OP_BINARY, b"\x00", [0; 4]))
            .await
            .unwrap();
        assert_eq!(ws.read().await.unwrap(), Incoming::Binary);
        client
            .write_all(&masked(true, OP_CLOSE, b"\x03\xe8ok", [3; 4]))
            .await
            .unwrap();
        assert_eq!(ws.read().await.unwrap(), Incoming::Close(Some(1000)));
        drop(client);
        assert!(matches!(ws.read().await, Err(ReadError::Closed)));
    }

    #[tokio::test]
    async fn limits_and_protocol_errors() {
        let (mut ws, mut client) = pair(100);
        client
            .write_all(&masked(true, OP_TEXT, &[b'a'; 101], [0; 4])[..8])
            .await
            .unwrap();
        assert!(matches!(
            ws.read().await,
            Err(ReadError::Wire(WireError::TooLarge))
        ));

        let (mut ws, mut client) = pair(100);
        let mut bytes = masked(false, OP_TEXT, &[b'a'; 60], [0; 4]);
        bytes.extend(masked(true, OP_CONTINUATION, &[b'a'; 60], [0; 4]));
        client.write_all(&bytes).await.unwrap();
        assert!(
            matches!(ws.read().await, Err(ReadError::Wire(WireError::TooLarge))),
            "the limit holds for a message in fragments"
        );

        let (mut ws, mut client) = pair(100);
        client
            .write_all(&masked(true, OP_CONTINUATION, b"x", [0; 4]))
            .await
            .unwrap();
        assert!(matches!(
            ws.read().await,
            Err(ReadError::Wire(WireError::Protocol(_)))
        ));

        let (mut ws, mut client) = pair(100);
        client
            .write_all(&masked(true, OP_TEXT, b"\xff\xfe", [0; 4]))
            .await
            .unwrap();
        assert!(matches!(ws.read().await, Err(ReadError::InvalidText)));
    }

    #[tokio::test]
    async fn early_bytes_are_read_first() {
        let (server, _client) = tokio::io::duplex(64);
        let early = masked(true, OP_TEXT, b"hi", [1; 4]);
        let mut ws = WsSocket::new(server, &early, 100);
        assert_eq!(ws.read().await.unwrap(), Incoming::Text("hi".into()));
    }

    #[tokio::test]
    async fn writes_batches_whole_even_through_a_small_pipe() {
        // A pipe smaller than the batch: writes complete in pieces while the peer reads.
        let (server, mut client) = tokio::io::duplex(7);
        let mut ws = WsSocket::new(server, &[], 100);
        let frames: Vec<Bytes> = (0..100)
            .map(|i| wire::text(format!("frame {i}").as_bytes()))
            .collect();
        let mut expected: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        expected.extend_from_slice(&wire::close(1012, "drain"));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        ws.write(&frames).await.unwrap();
        let wait = Duration::from_secs(5);
        ws.close(Some(wire::close(1012, "drain")), wait, wait).await;
        assert_eq!(
            reader.await.unwrap(),
            expected,
            "frames, then the close frame, then EOF"
        );
    }
}
