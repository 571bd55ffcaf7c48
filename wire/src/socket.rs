//! One upgraded connection's byte stream, server side, speaking RFC 6455 frames through
//! [`frame`](crate::frame).
//!
//! Reading is cancel-safe (everything read but not yet parsed lives in the socket, not in
//! the future), so a session can wait for a client frame in a `select!`. Writing takes
//! whole, pre-framed frames and writes a batch of them with one vectored write: the bytes
//! a fan-out shares go to the kernel as they are, with no per-connection write buffer.
//!
//! An idle socket holds no buffer and no timer: reads go through a stack buffer, and only
//! the tail of an incomplete frame is kept. What is kept between reads is a *partial
//! message* (an incomplete frame, or a message whose fragments have not all come), and
//! it is bounded by [`ReadLimits`]: buffers grow with the bytes that arrive (never from a
//! length a header announces), the partial message has a deadline that pings do not move,
//! and its bytes are reserved from the node's [`PartialBudget`](crate::PartialBudget).
//! Text is checked for UTF-8 as it arrives, so a bad byte fails the connection at once.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;

use crate::frame::{self, Header, WireError};
use crate::limits::ReadLimits;
use crate::utf8::Utf8Validator;

/// Bytes read from the kernel per call, on the stack: client frames are small.
const READ_CHUNK: usize = 2048;

/// Frames handed to one vectored write at most.
const MAX_IOV: usize = 64;

/// What a client sent, control frames included (the caller answers pings itself).
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    /// The client's close frame, with its code if it gave one (always a valid one).
    Close(Option<u16>),
}

/// Why reading ended the connection.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer closed the stream (or it broke).
    #[error("connection closed")]
    Closed,
    /// A frame against the protocol or the size limit.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Text (a message or a close reason) that is not UTF-8; judged as bytes arrive.
    #[error("text is not UTF-8")]
    InvalidText,
    /// A partial message outlived [`ReadLimits::partial_timeout`].
    #[error("message too slow")]
    MessageTooSlow,
    /// The node's [`PartialBudget`](crate::PartialBudget) could not cover this socket's
    /// partial message.
    #[error("partial message budget exhausted")]
    Overloaded,
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

/// Frames shared by many sockets (a fan-out's one encoded notification).
impl<T: WireFrame + ?Sized> WireFrame for Arc<T> {
    fn wire(&self) -> &[u8] {
        (**self).wire()
    }
}

/// A message on its way in: exists only while the socket holds bytes of an unfinished
/// frame or message (rare: boxed), and carries that message's deadline and reservation.
#[derive(Debug)]
struct Partial {
    /// The opcode (text or binary) of a message whose first fragment has come.
    message: Option<u8>,
    /// Payload of the fragments so far.
    data: Vec<u8>,
    /// UTF-8 state of a text message, across fragments and within the current frame.
    utf8: Utf8Validator,
    /// Payload bytes of the incomplete frame at the front of `rx` already unmasked and
    /// checked.
    checked: usize,
    /// When the message must be whole; not moved by control frames.
    deadline: Pin<Box<Sleep>>,
    /// Bytes reserved from the budget for `rx` and `data`.
    reserved: usize,
    limits: Arc<ReadLimits>,
}

impl Partial {
    fn new(limits: &Arc<ReadLimits>) -> Box<Self> {
        Box::new(Self {
            message: None,
            data: Vec::new(),
            utf8: Utf8Validator::new(),
            checked: 0,
            deadline: Box::pin(tokio::time::sleep(limits.partial_timeout)),
            reserved: 0,
            limits: limits.clone(),
        })
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        self.limits.budget.release(self.reserved);
    }
}

/// The server end of a WebSocket, over any byte stream (TCP, TLS).
#[derive(Debug)]
pub struct WsSocket<S> {
    io: S,
    /// Bytes read but not yet a whole frame; unallocated while there are none.
    rx: Vec<u8>,
    /// The message being received, while one is unfinished.
    partial: Option<Box<Partial>>,
    limits: Arc<ReadLimits>,
    /// A write stopped part-way through a frame: nothing more may be written.
    torn: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsSocket<S> {
    /// `early`: bytes the HTTP layer read past the upgrade request.
    pub fn new(io: S, early: &[u8], limits: Arc<ReadLimits>) -> Self {
        Self {
            io,
            rx: early.to_vec(),
            partial: None,
            limits,
            torn: false,
        }
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The next message or control frame. Cancel-safe.
    ///
    /// # Errors
    /// The stream ended, the client broke the protocol or a read limit.
    pub async fn read(&mut self) -> Result<Incoming, ReadError> {
        poll_fn(|cx| self.poll_read(cx)).await
    }

    /// [`WsSocket::read`] as a poll function, for waiting on it beside other things.
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, ReadError>> {
        loop {
            // Checked here too, not only when the socket would wait: a client sending
            // pings back to back must not keep a partial message alive.
            if self
                .partial
                .as_ref()
                .is_some_and(|p| tokio::time::Instant::now() >= p.deadline.deadline())
            {
                return Poll::Ready(Err(ReadError::MessageTooSlow));
            }
            if let Some(msg) = self.parse()? {
                return Poll::Ready(Ok(msg));
            }
            self.account()?;
            let mut chunk = [0u8; READ_CHUNK];
            let mut buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    self.rx.extend_from_slice(buf.filled());
                }
                Poll::Ready(_) => return Poll::Ready(Err(ReadError::Closed)),
                Poll::Pending => {
                    if let Some(p) = &mut self.partial {
                        ready!(p.deadline.as_mut().poll(cx));
                        return Poll::Ready(Err(ReadError::MessageTooSlow));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Before waiting for more bytes: an unfinished message gets (or keeps) its deadline
    /// and reserves what the socket holds for it; with nothing unfinished, nothing is kept.
    fn account(&mut self) -> Result<(), ReadError> {
        let in_message = self.partial.as_ref().is_some_and(|p| p.message.is_some());
        if self.rx.is_empty() && !in_message {
            self.rx = Vec::new();
            self.partial = None;
            return Ok(());
        }
        let limits = &self.limits;
        let p = self.partial.get_or_insert_with(|| Partial::new(limits));
        let held = self.rx.capacity() + p.data.capacity();
        if held > p.reserved {
            if !limits.budget.try_reserve(held - p.reserved) {
                return Err(ReadError::Overloaded);
            }
        } else {
            limits.budget.release(p.reserved - held);
        }
        p.reserved = held;
        Ok(())
    }

    /// Take whole frames off `rx` until one completes a message or is a control frame;
    /// `None` when more bytes are needed.
    fn parse(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let Some(h) = frame::parse_header(&self.rx, self.limits.max_message)? else {
                return Ok(None);
            };
            // The rules of message order and size, judged from the header alone.
            let in_message = self.partial.as_ref().and_then(|p| p.message);
            let text = match (h.opcode, in_message) {
                (frame::OP_CONTINUATION, None) => {
                    return Err(WireError::Protocol("continuation without a message").into())
                }
                (frame::OP_CONTINUATION, Some(op)) => op == frame::OP_TEXT,
                (frame::OP_TEXT | frame::OP_BINARY, Some(_)) => {
                    return Err(WireError::Protocol("new message inside a fragmented one").into())
                }
                (op, _) => op == frame::OP_TEXT,
            };
            let so_far = self.partial.as_ref().map_or(0, |p| p.data.len());
            if !h.is_control() && so_far + h.payload_len > self.limits.max_message {
                return Err(WireError::TooLarge.into());
            }
            let end = h.frame_len();
            if self.rx.len() < end {
                if text {
                    // Check the part of the payload that is here: a bad byte fails now,
                    // not when the rest of the frame comes.
                    let limits = &self.limits;
                    let p = self.partial.get_or_insert_with(|| Partial::new(limits));
                    let from = h.header_len + p.checked;
                    if self.rx.len() > from {
                        let piece = &mut self.rx[from..];
                        frame::unmask_from(piece, h.mask, p.checked);
                        p.utf8.feed(piece).map_err(|_| ReadError::InvalidText)?;
                        p.checked += piece.len();
                    }
                }
                return Ok(None);
            }
            let checked = match &mut self.partial {
                Some(p) => std::mem::take(&mut p.checked),
                None => 0,
            };
            frame::unmask_from(&mut self.rx[h.header_len + checked..end], h.mask, checked);
            let incoming = self.on_frame(&h, text, checked);
            self.consume(end);
            if let Some(msg) = incoming? {
                return Ok(Some(msg));
            }
        }
    }

    /// One whole, unmasked frame at the front of `rx` (its first `checked` payload bytes
    /// already checked); `None` for a fragment that does not end its message.
    fn on_frame(
        &mut self,
        h: &Header,
        text: bool,
        checked: usize,
    ) -> Result<Option<Incoming>, ReadError> {
        let payload = &self.rx[h.header_len..h.frame_len()];
        match h.opcode {
            frame::OP_PING => return Ok(Some(Incoming::Ping(Bytes::copy_from_slice(payload)))),
            frame::OP_PONG => return Ok(Some(Incoming::Pong)),
            frame::OP_CLOSE => return close_frame(payload).map(Some),
            _ => {}
        }
        let single = h.fin && self.partial.as_ref().is_none_or(|p| p.message.is_none());
        if single && self.partial.is_none() {
            // The common case: a whole message in one frame that came at once.
            return Ok(Some(if text {
                Incoming::Text(
                    String::from_utf8(payload.to_vec()).map_err(|_| ReadError::InvalidText)?,
                )
            } else {
                Incoming::Binary(Bytes::copy_from_slice(payload))
            }));
        }
        let limits = &self.limits;
        let p = self.partial.get_or_insert_with(|| Partial::new(limits));
        if text {
            p.utf8
                .feed(&payload[checked..])
                .map_err(|_| ReadError::InvalidText)?;
            if h.fin {
                p.utf8.finish().map_err(|_| ReadError::InvalidText)?;
            }
        }
        let data = if single {
            payload.to_vec()
        } else {
            p.message.get_or_insert(h.opcode);
            p.data.extend_from_slice(payload);
            if !h.fin {
                return Ok(None);
            }
            std::mem::take(&mut p.data)
        };
        // The message is whole: its deadline and reservation go with it.
        self.partial = None;
        Ok(Some(if text {
            Incoming::Text(String::from_utf8(data).map_err(|_| ReadError::InvalidText)?)
        } else {
            Incoming::Binary(Bytes::from(data))
        }))
    }

    /// Drop the first `n` bytes of `rx`, giving memory back once little is left.
    fn consume(&mut self, n: usize) {
        if self.rx.len() == n {
            // An idle connection keeps no buffer.
            self.rx = Vec::new();
        } else {
            self.rx.drain(..n);
            if self.rx.capacity() > READ_CHUNK && self.rx.len() < self.rx.capacity() / 4 {
                self.rx.shrink_to_fit();
            }
        }
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
        self.rx = Vec::new();
        self.partial = None;
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

/// A close frame's payload: nothing, or a valid code and a UTF-8 reason.
fn close_frame(payload: &[u8]) -> Result<Incoming, ReadError> {
    match payload {
        [] => Ok(Incoming::Close(None)),
        [_] => Err(WireError::Protocol("close payload of one byte").into()),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !frame::close_code_allowed(code) {
                return Err(WireError::Protocol("invalid close code").into());
            }
            std::str::from_utf8(reason).map_err(|_| ReadError::InvalidText)?;
            Ok(Incoming::Close(Some(code)))
        }
    }
}

#[cfg(test)]
mod tests;
