//! One connection's life: register → presence → `welcome` → replay → live.
//!
//! The session is the only writer of its socket. It drains its bounded queue (several
//! frames per vectored write), answers client frames, and obeys the signals in its
//! [`Mailbox`](crate::hub::Mailbox): close requests (slow consumer, `Disconnect`, drain),
//! resync requests (the bus may have lost messages: re-read the inbox) and heartbeats
//! (ping; close when the client has been silent too long). Stored notifications are
//! deduplicated by id, so a connection never sees one twice even when replay and live
//! routing both deliver it.
//!
//! Any error ends this session only; it is logged once, with the connection id.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use kurir_backends::inbox::Cursor;
use kurir_backends::{ConnId, NotificationId, Topic};
use kurir_proto::internal::v1::Delivery;
use kurir_proto::v1::ReceiptStatus;
use prost::Message as _;
use tokio::time::Instant;
use tracing::{debug, debug_span, warn, Instrument};

use tokio::io::{AsyncRead, AsyncWrite};

use super::auth::Identity;
use super::close::{CloseReason, ProtocolError};
use super::frame::{self, ClientFrame, FrameError, PreparedNotification};
use super::socket::{Incoming, ReadError, WireFrame, WsSocket};
use super::wire::{self, WireError};
use crate::hub::{ConnHandle, Queued};
use crate::state::AppState;
use crate::telemetry;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

/// Frames written per vectored write at most (coalescing under load).
const WRITE_BATCH: usize = 64;

/// The close reason (code 1008) of a session whose token expired: clients that can get
/// a fresh token reconnect with it, others stop.
pub const TOKEN_EXPIRED: &str = "token expired";

/// The close reason (code 1008) of a session whose client left a message unfinished
/// past `KURIR_PARTIAL_MESSAGE_TIMEOUT_MS`.
pub const MESSAGE_TOO_SLOW: &str = "message too slow";

/// How long a closing socket waits for the client's side of the close.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How long a connection told to close may take to read what is in flight before its
/// close frame (a slow consumer's 1013); after that it is dropped without one.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

impl WireFrame for crate::hub::Outbound {
    fn wire(&self) -> &[u8] {
        &self.frame
    }
}

/// Run a session to its end and clean up after it.
///
/// Everything the session owns is built here, synchronously, and moved into the
/// returned future once: arguments of an `async fn` would stay in its state beside
/// their moved copies, and every idle connection carries that state.
pub fn run<S>(
    socket: WsSocket<S>,
    state: Arc<AppState>,
    identity: Identity,
    cursor: Option<Cursor>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let id = ConnId::generate();
    // A debug span: at the default level it is never created, so an idle connection
    // carries no span state; warnings name the connection themselves.
    let span = debug_span!("session", conn_id = %id, user = %identity.user);
    let handle = ConnHandle::new(id, identity.user.clone(), state.config.outbound_queue);
    state.hub.register(handle.clone());
    metrics::gauge!(telemetry::CONNECTIONS).increment(1.0);
    metrics::counter!(telemetry::OPENED).increment(1);
    let mut session = Session {
        socket,
        state,
        identity,
        handle,
        topics: Vec::new(),
        seen: None,
        resume: cursor.map(Box::new),
        last_heard: Instant::now(),
    };
    async move {
        let reason = session.run().await;
        debug!(reason = reason.label(), "session closed");
        Box::pin(session.finish(&reason)).await;
        metrics::gauge!(telemetry::CONNECTIONS).decrement(1.0);
        metrics::counter!(telemetry::CLOSED, "reason" => reason.label()).increment(1);
    }
    .instrument(span)
}

struct Session<S> {
    socket: WsSocket<S>,
    state: Arc<AppState>,
    identity: Identity,
    handle: ConnHandle,
    topics: Vec<Topic>,
    /// Stored notification ids sent on this connection; allocated on the first one.
    seen: Option<Box<SeenIds>>,
    /// The cursor the client connected with: what it already has. The first replay and
    /// every resync read the inbox from there.
    resume: Option<Box<Cursor>>,
    last_heard: Instant,
}

/// A write failed: the peer is gone.
struct Gone;

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn run(&mut self) -> CloseReason {
        let user = self.identity.user.clone();
        // Presence before the inbox read: a notification sent meanwhile is then either
        // in what we read or routed to us live (or both; `seen` drops the second copy).
        if let Err(e) = Box::pin(self.register_presence()).await {
            warn!(conn_id = %self.handle.id, user = %user, error = %e, "presence write failed");
            return CloseReason::Internal;
        }
        let welcome = frame::welcome(
            self.handle.id.to_string(),
            self.state.node.as_str(),
            user.as_str(),
            self.state.config.heartbeat_ms,
        );
        // Sends in `run` and `live` are boxed: a write's state (~200 bytes) then lives
        // on the heap only while it runs, not in every idle connection's task.
        if Box::pin(self.send(welcome)).await.is_err() {
            return CloseReason::Client;
        }
        // Replay and frame handling are boxed: their state lives on the heap only while
        // they run, so an idle connection's task stays small.
        let from = self.resume.as_deref().cloned();
        if let Err(reason) = Box::pin(self.replay(from)).await {
            return reason;
        }
        self.live().await
    }

    async fn live(&mut self) -> CloseReason {
        let mailbox = self.handle.mailbox.clone();
        loop {
            // Signals first, then queued frames; wait only when there is nothing to do.
            if let Some(reason) = mailbox.take_close() {
                return reason;
            }
            if mailbox.take_resync() {
                let from = self.resume.as_deref().cloned();
                if let Err(reason) = Box::pin(self.replay(from)).await {
                    return reason;
                }
            }
            if mailbox.take_heartbeat() {
                if self.last_heard.elapsed() > self.state.config.idle_timeout() {
                    return CloseReason::Idle;
                }
                // A session lives no longer than its token (checked once per heartbeat).
                if self.identity.expired() {
                    return CloseReason::Policy(TOKEN_EXPIRED);
                }
                if Box::pin(self.send(wire::ping())).await.is_err() {
                    return CloseReason::Client;
                }
            }
            if let Some(first) = mailbox.pop() {
                if let Err(reason) = Box::pin(self.write_batch(first)).await {
                    return reason;
                }
                continue;
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
                if let Some(reason) = Box::pin(self.on_incoming(incoming)).await {
                    return reason;
                }
            }
        }
    }

    /// Deliver pending stored notifications after `after` (all when `None`), oldest
    /// first, skipping what this connection already has.
    async fn replay(&mut self, mut after: Option<Cursor>) -> Result<(), CloseReason> {
        let inbox = self.state.backends.inbox.clone();
        let page = self.state.config.replay_page;
        let mut budget = self.state.config.inbox_capacity;
        while budget > 0 {
            let entries = inbox
                .pending(&self.identity.user, after.as_ref(), page.min(budget))
                .await
                .map_err(|e| {
                    warn!(conn_id = %self.handle.id, user = %self.identity.user, error = %e, "inbox read failed");
                    CloseReason::Internal
                })?;
            let n = entries.len();
            for entry in entries {
                budget -= 1;
                after = Some(entry.cursor.clone());
                if !self.first_time(entry.id) {
                    continue;
                }
                let Ok(d) = Delivery::decode(entry.payload.as_ref()) else {
                    warn!(conn_id = %self.handle.id, user = %self.identity.user, id = %entry.id, "undecodable inbox entry skipped");
                    continue;
                };
                let frame = PreparedNotification::new(&d).frame(true, Some(entry.cursor.as_str()));
                if self.send(frame).await.is_err() {
                    return Err(CloseReason::Client);
                }
                let hot = &self.state.metrics;
                hot.replayed.increment(1);
                // A replay is not a delivery delay: only live writes feed the histogram.
                hot.deliveries.increment(1);
                self.receipt(entry.id, ReceiptStatus::Delivered);
            }
            if n < page {
                break;
            }
        }
        Ok(())
    }

    /// Write `first` and whatever else is queued, up to [`WRITE_BATCH`], in one vectored
    /// write. A client that stops reading stalls it: the wait ends when the hub asks
    /// this connection to close (its queue filled up) or after the idle timeout.
    async fn write_batch(&mut self, first: Queued) -> Result<(), CloseReason> {
        let mut batch: Vec<Queued> = Vec::with_capacity(8);
        let mut next = Some(first);
        let mut n = 0;
        while let Some(out) = next.take() {
            if out.stored && !self.first_time(out.id) {
                telemetry::dropped("duplicate");
            } else {
                batch.push(out);
            }
            n += 1;
            if n < WRITE_BATCH {
                next = self.handle.mailbox.pop();
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let mailbox = self.handle.mailbox.clone();
        let stall = self.state.config.idle_timeout();
        {
            let write = self.socket.write(&batch);
            tokio::pin!(write);
            // The write first: it usually completes at once, and then neither the
            // close signal nor the stall timer is ever polled (or registered).
            tokio::select! {
                biased;
                written = &mut write => written.map_err(|_| CloseReason::Client)?,
                reason = mailbox.closing() => {
                    // Let the frame in flight finish if the client takes it soon, so its
                    // close frame (1013 for a slow consumer) can still follow.
                    let _ = tokio::time::timeout(CLOSE_WAIT, &mut write).await;
                    return Err(reason);
                }
                () = tokio::time::sleep(stall) => return Err(CloseReason::SlowConsumer),
            }
        }
        let hot = &self.state.metrics;
        hot.deliveries.increment(batch.len() as u64);
        let now = now_ms();
        for out in batch {
            // created_at has millisecond resolution.
            hot.latency
                .record((now - out.created_at).max(0) as f64 / 1000.0);
            if out.direct {
                self.receipt(out.id, ReceiptStatus::Delivered);
            }
        }
        Ok(())
    }

    /// Write this connection's presence under the node's current epoch. Should the epoch
    /// change meanwhile (the node's liveness lapsed), the re-registration of every
    /// connection may have run before this write landed: write again under the new one.
    async fn register_presence(&mut self) -> Result<(), kurir_backends::BackendError> {
        let presence = &self.state.backends.presence;
        let mut lease = self.state.lease.get();
        loop {
            presence
                .add(&lease, &self.identity.user, self.handle.id)
                .await?;
            let now = self.state.lease.get();
            if now.epoch == lease.epoch {
                return Ok(());
            }
            lease = now;
        }
    }

    /// Record a stored notification as sent here; `false` if it already was.
    fn first_time(&mut self, id: NotificationId) -> bool {
        let cap = self.state.config.inbox_capacity;
        self.seen
            .get_or_insert_with(|| Box::new(SeenIds::new(cap)))
            .insert(id)
    }

    fn receipt(&self, id: NotificationId, status: ReceiptStatus) {
        self.state.receipts.emit(id, &self.identity.user, status);
    }

    async fn on_incoming(&mut self, incoming: Result<Incoming, ReadError>) -> Option<CloseReason> {
        self.last_heard = Instant::now();
        let reply = match incoming {
            Ok(Incoming::Text(t)) => match frame::parse(&t) {
                Ok(f) => self.on_frame(f).await,
                Err(e) => Some(frame::error(&e)),
            },
            Ok(Incoming::Binary(_)) => Some(frame::error(&FrameError::new(
                "bad_frame",
                "binary frames are not supported; send JSON text",
            ))),
            Ok(Incoming::Ping(payload)) => Some(wire::frame(wire::OP_PONG, &payload)),
            Ok(Incoming::Pong) => None,
            Ok(Incoming::Close(code)) => {
                // Answer the client's close with its own code (RFC 6455 §5.5.1).
                let echo =
                    code.map_or_else(|| wire::frame(wire::OP_CLOSE, &[]), |c| wire::close(c, ""));
                let _ = self.send(echo).await;
                return Some(CloseReason::Client);
            }
            Err(ReadError::Closed) => return Some(CloseReason::Client),
            Err(ReadError::Wire(WireError::TooLarge)) => return Some(CloseReason::FrameTooLarge),
            Err(ReadError::Wire(WireError::Protocol(why))) => {
                debug!(why, "protocol error");
                return Some(CloseReason::Protocol(ProtocolError::Framing(why)));
            }
            Err(ReadError::InvalidText) => {
                return Some(CloseReason::Protocol(ProtocolError::InvalidText))
            }
            Err(ReadError::MessageTooSlow) => return Some(CloseReason::Policy(MESSAGE_TOO_SLOW)),
            Err(ReadError::Overloaded) => return Some(CloseReason::Overloaded),
        };
        match reply {
            Some(r) => self.send(r).await.err().map(|Gone| CloseReason::Client),
            None => None,
        }
    }

    async fn on_frame(&mut self, f: ClientFrame) -> Option<Bytes> {
        match f {
            ClientFrame::Ping => Some(frame::pong()),
            ClientFrame::Ack { id } => self.ack(&id).await.err().map(|e| frame::error(&e)),
            ClientFrame::Subscribe { topic } => Some(match self.subscribe(&topic).await {
                Ok(t) => frame::subscribed(t.as_str()),
                Err(e) => frame::error(&e),
            }),
            ClientFrame::Unsubscribe { topic } => Some(match self.unsubscribe(&topic) {
                Ok(t) => frame::unsubscribed(t.as_str()),
                Err(e) => frame::error(&e),
            }),
        }
    }

    async fn ack(&mut self, id: &str) -> Result<(), FrameError> {
        let id = NotificationId::parse(id)
            .map_err(|e| FrameError::new("bad_request", format!("id: {e}")))?;
        let removed = self
            .state
            .backends
            .inbox
            .ack(&self.identity.user, id)
            .await
            .map_err(|_| FrameError::new("unavailable", "ack not recorded; retry later"))?;
        metrics::counter!(telemetry::ACKS).increment(1);
        if removed {
            self.receipt(id, ReceiptStatus::Acked);
        }
        Ok(())
    }

    async fn subscribe(&mut self, name: &str) -> Result<Topic, FrameError> {
        let topic = Topic::parse(name)
            .map_err(|e| FrameError::new("bad_request", format!("topic: {e}")))?;
        if !self.identity.may_subscribe(&topic) {
            return Err(FrameError::new(
                "forbidden",
                format!("token does not allow topic {topic}"),
            ));
        }
        if self.topics.contains(&topic) {
            return Ok(topic);
        }
        if self.topics.len() >= self.state.config.max_subscriptions {
            return Err(FrameError::new(
                "too_many_subscriptions",
                format!(
                    "at most {} topics per connection",
                    self.state.config.max_subscriptions
                ),
            ));
        }
        self.state.hub.subscribe(&topic, self.handle.clone());
        if self.state.topics.ensure(&topic).await.is_err() {
            if self.state.hub.unsubscribe(&topic, self.handle.id) {
                self.state.topics.release(&topic);
            }
            return Err(FrameError::new(
                "unavailable",
                "subscription failed; retry later",
            ));
        }
        self.topics.push(topic.clone());
        Ok(topic)
    }

    fn unsubscribe(&mut self, name: &str) -> Result<Topic, FrameError> {
        let topic = Topic::parse(name)
            .map_err(|e| FrameError::new("bad_request", format!("topic: {e}")))?;
        if let Some(i) = self.topics.iter().position(|t| *t == topic) {
            self.topics.swap_remove(i);
            if self.state.hub.unsubscribe(&topic, self.handle.id) {
                self.state.topics.release(&topic);
            }
        }
        Ok(topic)
    }

    /// Write one frame.
    async fn send(&mut self, frame: Bytes) -> Result<(), Gone> {
        self.socket
            .write(std::slice::from_ref(&frame))
            .await
            .map_err(|_| Gone)
    }

    /// Leave the hub and presence, then say goodbye with the close code.
    async fn finish(&mut self, reason: &CloseReason) {
        let emptied = self
            .state
            .hub
            .unregister(&self.identity.user, self.handle.id, &self.topics);
        for t in &emptied {
            self.state.topics.release(t);
        }
        // The client's own close was answered when it came; a broken socket gets none.
        let frame = (!matches!(reason, CloseReason::Client)).then(|| reason.frame());
        self.socket.close(frame, CLOSE_WAIT, CLOSE_LINGER).await;
        if !matches!(reason, CloseReason::Draining) {
            // On drain the node removes all its presence at once.
            if let Err(e) = self
                .state
                .backends
                .presence
                .remove(&self.identity.user, self.handle.id)
                .await
            {
                debug!(error = %e, "presence removal failed; the entry expires with the node");
            }
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Stored notification ids this connection has been sent, newest `cap` kept. Allocates
/// nothing until the first stored notification.
struct SeenIds {
    order: VecDeque<NotificationId>,
    set: HashSet<NotificationId>,
    cap: usize,
}

impl SeenIds {
    fn new(cap: usize) -> Self {
        Self {
            order: VecDeque::new(),
            set: HashSet::new(),
            cap: cap.max(1),
        }
    }

    /// `false` when already seen.
    fn insert(&mut self, id: NotificationId) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_ids_are_bounded() {
        let mut s = SeenIds::new(2);
        let ids: Vec<_> = (0..3).map(|_| NotificationId::generate()).collect();
        assert!(s.insert(ids[0]));
        assert!(!s.insert(ids[0]));
        assert!(s.insert(ids[1]));
        assert!(s.insert(ids[2]));
        assert!(s.insert(ids[0]), "oldest evicted");
    }
}

#[cfg(test)]
mod idle_footprint {
    use crate::ws::socket::WsSocket;

    #[tokio::test]
    async fn an_idle_session_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let ns = kurir_backends::Namespace::random_for_test();
        let (topics, _t) = crate::relay::Topics::channel();
        let node = kurir_backends::NodeId::generate();
        let (receipts, _r) = crate::receipts::Receipts::channel(8);
        let state = std::sync::Arc::new(crate::state::AppState {
            config: std::sync::Arc::new(crate::Config::for_test(ns.clone(), "x")),
            lease: crate::liveness::CurrentLease::new(node.clone()),
            node,
            backends: kurir_backends::Backends::memory(ns),
            hub: crate::hub::Hub::new(),
            topics,
            receipts,
            metrics: crate::telemetry::Hot::resolve(),
            verifier: std::sync::Arc::new(crate::ws::auth::Verifier::hs256(b"x")),
            read_limits: Default::default(),
            readiness: Default::default(),
            tracker: Default::default(),
        });
        let id = crate::ws::auth::Identity {
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
        let fut = super::run(socket, state, id, None);
        // Every idle connection carries this future in a task cell that tokio rounds up
        // to 128 bytes: keep both under 512 (release is a little smaller than this debug
        // build). The sends, replay and frame handling are boxed to stay out of it.
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 512, "session future grew to {size} bytes");
        assert_eq!(std::mem::size_of::<crate::hub::Queued>(), 8);
    }
}
