//! One connection's life: register → presence → `welcome` → replay → live.
//!
//! The session is the only writer of its socket. It drains its bounded queue (several
//! frames per vectored write), answers client frames, and obeys the signals in its
//! [`Mailbox`](crate::hub::Mailbox): close requests (slow consumer, `Disconnect`, drain),
//! resync requests (the bus may have lost messages: re-read the inbox) and heartbeats
//! (ping; close when the client has been silent too long).
//!
//! Its memory and time are bounded whatever the client does: every write goes through
//! [`Session::write`], which fails when the client stops reading for the write stall
//! timeout and gives way to a close request (so `Disconnect`, token expiry and drain
//! always end it within seconds); pings are answered once however many arrive
//! together; client frames are rate limited (token bucket, 1008 beyond). Stored
//! notifications are
//! deduplicated by id, so a connection never sees one twice even when replay and live
//! routing both deliver it.
//!
//! Any error ends this session only; it is logged once, with the connection id.
//!
//! `delivery` is what the session writes (replay, queued notifications, receipts,
//! duplicates dropped); `client` is what it reads (client frames, the rate limit,
//! subscriptions and acks).

mod client;
mod delivery;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use kurir_backends::inbox::Cursor;
use kurir_wire::frame as wire;
use kurir_wire::{Incoming, ReadError, WireFrame, WsSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{debug, debug_span, warn, Instrument};

use super::stall::{Stall, Stalled};
use crate::auth::Identity;
use crate::client::{Client, Transport};
use crate::hub::Registration;
use crate::protocol::close::TOKEN_EXPIRED;
use crate::protocol::{frame, CloseReason};
use crate::state::AppState;
use crate::telemetry;

/// Client frames handled in a row before queued deliveries get their turn: pings that
/// arrive together are answered with one pong.
const READ_BATCH: usize = 32;

/// How long a closing socket waits for the client's side of the close.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How long a session told to close lets a write in flight finish, and then its close
/// frame take, before it drops the connection without one: `Disconnect`, token expiry
/// and drain end a session within a few seconds whatever the client does.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Rate limiter unit: a thousandth of a frame, so that refilling needs no floats.
const MILLI: u64 = 1000;

/// Run a session to its end and clean up after it. `registration` is the connection's
/// place in the hub, taken when its upgrade was admitted.
///
/// Everything the session owns is built here, synchronously, and moved into the
/// returned future once: arguments of an `async fn` would stay in its state beside
/// their moved copies, and every idle connection carries that state.
pub fn run<S>(
    socket: WsSocket<S>,
    state: Arc<AppState>,
    identity: Identity,
    cursor: Option<Cursor>,
    registration: Registration,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // A debug span: at the default level it is never created, so an idle connection
    // carries no span state; warnings name the connection themselves.
    let span = debug_span!("session", conn_id = %registration.conn().id, user = %identity.user);
    telemetry::connection_opened(Transport::WebSocket.label());
    let burst = u64::from(state.config.client_frames_burst) * MILLI;
    let mut session = Session {
        socket,
        client: Client::new(state, identity, cursor, registration, Transport::WebSocket),
        last_heard: Instant::now(),
        tokens: burst,
        pong: None,
        json_pong: false,
        abandoned: false,
    };
    async move {
        let reason = session.run().await;
        debug!(reason = reason.label(), "session closed");
        Box::pin(session.finish(&reason)).await;
        telemetry::connection_closed(Transport::WebSocket.label(), reason.label());
    }
    .instrument(span)
}

struct Session<S> {
    socket: WsSocket<S>,
    client: Client,
    /// When the last client frame came: the idle timeout and the rate limiter's refill.
    last_heard: Instant,
    /// Frames the client may still send at once, in thousandths (token bucket).
    tokens: u64,
    /// The answer to the latest WebSocket ping not answered yet (older ones are not
    /// answered: RFC 6455 §5.5.3 allows answering only the most recent).
    pong: Option<Bytes>,
    /// A JSON `ping` to answer (several in a row get one `pong`).
    json_pong: bool,
    /// A write was given up part-way: no close frame can follow, drop the connection.
    abandoned: bool,
}

/// Whether a write may be cut short by a close request (every write but the close
/// frame's own).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    OnClose,
    Never,
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn run(&mut self) -> CloseReason {
        let client = &self.client;
        // Presence before the inbox read: a notification sent meanwhile is then either
        // in what we read or routed to us live (or both; it is written once).
        if let Err(e) = Box::pin(client.register_presence()).await {
            warn!(conn_id = %client.conn().id, user = %client.identity.user, error = %e, "presence write failed");
            return CloseReason::Internal;
        }
        let welcome = frame::welcome(
            client.conn().id.to_string(),
            client.state.node.as_str(),
            client.identity.user.as_str(),
            client.state.config.heartbeat_ms,
        );
        // Sends in `run` and `live` are boxed: a write's state (~200 bytes) then lives
        // on the heap only while it runs, not in every idle connection's task.
        if let Err(reason) = Box::pin(self.send(welcome)).await {
            return reason;
        }
        // Replay and frame handling are boxed: their state lives on the heap only while
        // they run, so an idle connection's task stays small.
        if let Err(reason) = Box::pin(self.replay()).await {
            return reason;
        }
        self.live().await
    }

    async fn live(&mut self) -> CloseReason {
        let mailbox = self.client.conn().mailbox.clone();
        loop {
            // Signals first, then queued frames, then answers to pings; wait only when
            // there is nothing to do.
            if let Some(reason) = mailbox.take_close() {
                return reason;
            }
            if mailbox.take_resync() {
                if let Err(reason) = Box::pin(self.replay()).await {
                    return reason;
                }
            }
            if mailbox.take_heartbeat() {
                if self.last_heard.elapsed() > self.client.state.config.idle_timeout() {
                    return CloseReason::Idle;
                }
                // A session lives no longer than its token (checked once per heartbeat).
                if self.client.identity.expired() {
                    return CloseReason::Policy(TOKEN_EXPIRED);
                }
                if let Err(reason) = Box::pin(self.send(wire::ping())).await {
                    return reason;
                }
            }
            if let Some(first) = mailbox.pop() {
                if let Err(reason) = Box::pin(self.write_batch(first)).await {
                    return reason;
                }
                continue;
            }
            if let Err(reason) = Box::pin(self.answer_pings()).await {
                return reason;
            }
            // Wait for the mailbox or the client, whichever comes first: one poll
            // function rather than a `select!` of futures, so nothing but two pointers
            // is kept in an idle connection's task while it waits.
            let incoming = std::future::poll_fn(|cx| {
                if mailbox.poll_pending(cx).is_ready() {
                    return Poll::Ready(None);
                }
                self.socket.poll_read(cx).map(Some)
            })
            .await;
            if let Some(incoming) = incoming {
                if let Some(reason) = Box::pin(self.on_incoming_batch(incoming)).await {
                    return reason;
                }
            }
        }
    }

    /// Handle `first` and the client frames already read behind it, up to
    /// [`READ_BATCH`]: pings among them are answered once, afterwards.
    async fn on_incoming_batch(
        &mut self,
        first: Result<Incoming, ReadError>,
    ) -> Option<CloseReason> {
        if let Some(reason) = self.on_incoming(first).await {
            return Some(reason);
        }
        for _ in 1..READ_BATCH {
            let next = std::future::poll_fn(|cx| Poll::Ready(self.socket.poll_read(cx))).await;
            let Poll::Ready(incoming) = next else {
                break;
            };
            if let Some(reason) = self.on_incoming(incoming).await {
                return Some(reason);
            }
        }
        None
    }

    /// Write the pongs owed, one of each kind at most.
    async fn answer_pings(&mut self) -> Result<(), CloseReason> {
        if let Some(pong) = self.pong.take() {
            self.send(pong).await?;
        }
        if std::mem::take(&mut self.json_pong) {
            self.send(frame::pong()).await?;
        }
        Ok(())
    }

    /// The one way bytes reach the socket. Fails when the write makes no progress for
    /// `KURIR_WRITE_STALL_TIMEOUT_MS` (the client does not read: 1013), and, unless
    /// `interrupt` is `Never`, gives way to a close request (`Disconnect`, drain, a full
    /// queue) or an expired token: the write in flight then gets [`CLOSE_WAIT`] to finish
    /// and is given up after it, so that nothing the client does can hold the session.
    async fn write<F: WireFrame>(
        &mut self,
        frames: &[F],
        interrupt: Interrupt,
    ) -> Result<(), CloseReason> {
        let stall = self.client.state.config.write_stall_timeout();
        let mailbox = self.client.mailbox();
        let identity = &self.client.identity;
        let write = pin!(self.socket.write(frames));
        let mut write = Stall::new(write, stall);
        // The write first: it usually completes at once, and then nothing else is
        // looked at.
        let outcome = std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = std::pin::Pin::new(&mut write).poll(cx) {
                return Poll::Ready(Ok(done));
            }
            if interrupt == Interrupt::Never {
                return Poll::Pending;
            }
            mailbox.register(cx.waker());
            if let Some(reason) = mailbox.take_close() {
                return Poll::Ready(Err(reason));
            }
            if mailbox.heartbeat_due() && identity.expired() {
                return Poll::Ready(Err(CloseReason::Policy(TOKEN_EXPIRED)));
            }
            Poll::Pending
        })
        .await;
        let done = match outcome {
            Ok(done) => done,
            Err(reason) => {
                // Let the frames in flight finish if the client takes them soon, so
                // that a close frame can still follow; otherwise drop the connection.
                match tokio::time::timeout(CLOSE_WAIT, write).await {
                    Ok(Ok(Ok(()))) => {}
                    _ => self.abandoned = true,
                }
                return Err(reason);
            }
        };
        match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(CloseReason::Client),
            Err(Stalled) => {
                self.abandoned = true;
                Err(CloseReason::WriteStalled)
            }
        }
    }

    /// Write one frame.
    async fn send(&mut self, frame: Bytes) -> Result<(), CloseReason> {
        self.write(std::slice::from_ref(&frame), Interrupt::OnClose)
            .await
    }

    /// Say goodbye with the close code, then leave the topics and presence; the hub's
    /// registration goes when the session is dropped.
    async fn finish(&mut self, reason: &CloseReason) {
        // The client's own close was answered when it came; a broken socket gets none;
        // a client that does not read cannot take one: its connection is dropped.
        if !matches!(reason, CloseReason::Client) && !self.abandoned {
            let close = reason.frame();
            let sent = tokio::time::timeout(
                CLOSE_WAIT,
                self.write(std::slice::from_ref(&close), Interrupt::Never),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                self.abandoned = true;
            }
        }
        if !self.abandoned {
            self.socket.close(None, CLOSE_WAIT, CLOSE_LINGER).await;
        }
        self.client.leave(reason).await;
    }
}

#[cfg(test)]
mod idle_footprint {
    use kurir_wire::WsSocket;

    #[tokio::test]
    async fn an_idle_session_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let (state, _channels) = crate::state::for_test();
        let id = crate::auth::Identity {
            user: kurir_backends::UserId::parse("a").unwrap(),
            topics: vec![],
            expires_at: 0,
        };
        let socket = WsSocket::new(stream, &[], Default::default());
        assert!(
            std::mem::size_of_val(&socket) <= 96,
            "socket grew to {} bytes",
            std::mem::size_of_val(&socket)
        );
        let conn = crate::hub::ConnHandle::new(kurir_backends::ConnId(1), id.user.clone(), 8);
        let registration = state.hub.admit(conn, 10, 10).unwrap();
        let fut = super::run(socket, state, id, None, registration);
        // Every idle connection carries this future in a task cell that tokio rounds up
        // to 128 bytes: keep both under 512 (release is a little smaller than this debug
        // build). The sends, replay and frame handling are boxed to stay out of it.
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 512, "session future grew to {size} bytes");
        assert_eq!(std::mem::size_of::<crate::hub::Queued>(), 8);
    }
}
