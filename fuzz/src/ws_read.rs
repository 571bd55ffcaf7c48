//! One connection's read path: bytes from the network, in whatever pieces they arrive,
//! into messages and control frames, until the stream ends or the client breaks a rule.
//!
//! Input: a byte choosing the size limit, a byte choosing how many bytes the HTTP layer
//! had already read past the upgrade, a byte choosing the sizes of the reads, then the
//! client's bytes. The same bytes read in one piece must give the same messages and the
//! same ending; every message respects the limits.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::under_test::{Connection, Message, ReadEnd};

/// Size limits: the gateway's smallest allowed, its default, and the edges of the
/// frame-length encodings.
pub const LIMITS: [usize; 6] = [256, 64 * 1024, 125, 126, 65_535, 65_536];

pub fn run(data: &[u8]) {
    let [max, early, reads, stream @ ..] = data else {
        return;
    };
    let max = LIMITS[usize::from(*max) % LIMITS.len()];
    let early = usize::from(*early).min(stream.len());
    let split = read_all(&stream[..early], Wire::new(&stream[early..], *reads), max);
    let whole = read_all(&[], Wire::new(stream, 0), max);
    assert_eq!(
        split, whole,
        "the pieces the bytes came in changed what was read"
    );
    let (messages, _) = whole;
    for m in &messages {
        match m {
            Message::Text(t) => assert!(t.len() <= max),
            Message::Ping(p) => assert!(p.len() <= 125),
            Message::Binary | Message::Pong | Message::Close(_) => {}
        }
    }
}

thread_local! {
    /// A partial message arms a timer, which needs a runtime's clock to exist (the
    /// reads themselves are polled by hand).
    static CLOCK: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
}

/// Every message until the connection ends, and how it ended.
fn read_all(early: &[u8], wire: Wire<'_>, max: usize) -> (Vec<Message>, ReadEnd) {
    CLOCK.with(|rt| {
        let _clock = rt.enter();
        read_all_in_runtime(early, wire, max)
    })
}

fn read_all_in_runtime(early: &[u8], wire: Wire<'_>, max: usize) -> (Vec<Message>, ReadEnd) {
    let mut conn = Connection::new(wire, early, max);
    let mut cx = Context::from_waker(Waker::noop());
    let mut messages = Vec::new();
    loop {
        match conn.poll_read(&mut cx) {
            Poll::Ready(Ok(m)) => messages.push(m),
            Poll::Ready(Err(end)) => return (messages, end),
            Poll::Pending => panic!("waited on a stream that had bytes or its end ready"),
        }
    }
}

/// The client's side of the connection, in memory: hands out its bytes in reads whose
/// sizes cycle through a pattern, then the end of the stream; swallows writes.
struct Wire<'a> {
    bytes: &'a [u8],
    /// 0 = as much as the reader asks for.
    pattern: u8,
    turn: usize,
}

impl<'a> Wire<'a> {
    fn new(bytes: &'a [u8], pattern: u8) -> Self {
        Self {
            bytes,
            pattern,
            turn: 0,
        }
    }

    /// The size of the next read: 1..=16 bytes, varying with the pattern's bits.
    fn next_size(&mut self) -> usize {
        if self.pattern == 0 {
            return usize::MAX;
        }
        self.turn += 1;
        let bits = self.pattern.rotate_left((self.turn % 8) as u32);
        usize::from(bits & 0x0F) + 1
    }
}

impl AsyncRead for Wire<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = this.next_size().min(buf.remaining()).min(this.bytes.len());
        let (now, rest) = this.bytes.split_at(n);
        buf.put_slice(now);
        this.bytes = rest;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Wire<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
