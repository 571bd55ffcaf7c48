//! One SSE stream's life: register → presence → `welcome` → topics → replay → live, the
//! same as a WebSocket session, written as events into the response body.
//!
//! The stream's task writes chunks into a small bounded channel that hyper drains into
//! the socket. A write that waits longer than the stall timeout means the client does
//! not read: the connection is hung up ([`Hangup`]). Close requests (slow consumer,
//! `Disconnect`, drain, token expiry) end the stream with a `close` event and, for
//! drain, a retry hint that spreads the reconnects.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kurir_backends::inbox::Cursor;
use tokio::sync::mpsc;
use tracing::{debug, debug_span, warn, Instrument};

use super::event;
use crate::auth::Identity;
use crate::client::{Client, Transport};
use crate::hub::streams::Request;
use crate::hub::{Queued, Registration};
use crate::protocol::close::TOKEN_EXPIRED;
use crate::protocol::{frame, CloseReason};
use crate::state::AppState;
use crate::telemetry;
use crate::ws::accept::Hangup;
use kurir_wire::frame::payload_of;

/// How long a browser waits before reconnecting a stream that broke.
const RETRY_MS: u64 = 2_000;

/// After a drain, reconnects are spread over this long (by connection id).
const DRAIN_SPREAD_MS: u64 = 4_000;

/// A stream that should not come back asks the browser to wait this long (a client
/// that reads the `close` event stops at once).
const NO_RETRY_MS: u64 = 86_400_000;

/// How long a closing stream lets its `close` event take.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Events written per chunk at most (coalescing under load).
const WRITE_BATCH: usize = 64;

/// What the stream was opened with.
pub struct Opened {
    pub identity: Identity,
    pub cursor: Option<Cursor>,
    pub registration: Registration,
    /// Topics named at connect, subscribed before the replay.
    pub topics: Vec<String>,
}

/// Run a stream to its end; `body` is what hyper sends, `hangup` drops the connection.
pub async fn run(state: Arc<AppState>, opened: Opened, body: mpsc::Sender<Bytes>, hangup: Hangup) {
    let Opened {
        identity,
        cursor,
        registration,
        topics,
    } = opened;
    let span = debug_span!("sse", conn_id = %registration.conn().id, user = %identity.user);
    let (_listed, requests) = state
        .streams
        .list(registration.conn().id, identity.user.clone());
    let mut stream = Stream {
        client: Client::new(state, identity, cursor, registration, Transport::Sse),
        body,
        requests,
        abandoned: false,
    };
    async move {
        telemetry::connection_opened(Transport::Sse.label());
        let reason = stream.run(topics).await;
        debug!(reason = reason.label(), "stream closed");
        stream.finish(&reason, &hangup).await;
        telemetry::connection_closed(Transport::Sse.label(), reason.label());
    }
    .instrument(span)
    .await;
}

struct Stream {
    client: Client,
    body: mpsc::Sender<Bytes>,
    requests: mpsc::Receiver<Request>,
    /// A write was given up: the connection is hung up, no close event follows.
    abandoned: bool,
}

impl Stream {
    async fn run(&mut self, topics: Vec<String>) -> CloseReason {
        let client = &self.client;
        if let Err(e) = client.register_presence().await {
            warn!(conn_id = %client.conn().id, user = %client.identity.user, error = %e, "presence write failed");
            return CloseReason::Internal;
        }
        let welcome = frame::welcome(
            client.conn().id.to_string(),
            client.state.node.as_str(),
            client.identity.user.as_str(),
            client.state.config.heartbeat_ms,
        );
        let mut hello = BytesMut::from(&event::retry(RETRY_MS)[..]);
        event::append(&mut hello, payload_of(&welcome), None);
        if let Err(reason) = self.send(hello.freeze()).await {
            return reason;
        }
        for topic in topics {
            let answer = match self.client.subscribe(&topic).await {
                Ok(t) => frame::subscribed(t.as_str()),
                Err(e) => frame::error(&e),
            };
            if let Err(reason) = self.send(event::from_frame(&answer, None)).await {
                return reason;
            }
        }
        if let Err(reason) = self.replay().await {
            return reason;
        }
        self.live().await
    }

    async fn live(&mut self) -> CloseReason {
        let mailbox = self.client.conn().mailbox.clone();
        loop {
            if let Some(reason) = mailbox.take_close() {
                return reason;
            }
            if mailbox.take_resync() {
                if let Err(reason) = self.replay().await {
                    return reason;
                }
            }
            if mailbox.take_heartbeat() {
                // A stream lives no longer than its token (checked once per heartbeat).
                if self.client.identity.expired() {
                    return CloseReason::Policy(TOKEN_EXPIRED);
                }
                if let Err(reason) = self.send(event::heartbeat()).await {
                    return reason;
                }
            }
            if let Some(first) = mailbox.pop() {
                if let Err(reason) = self.write_batch(first).await {
                    return reason;
                }
                continue;
            }
            // Wait for the mailbox, a request, or the client to go (hyper drops the
            // body's receiver).
            let woke = {
                let mut gone = pin!(self.body.closed());
                let requests = &mut self.requests;
                poll_fn(|cx| {
                    if mailbox.poll_pending(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    if let Poll::Ready(r) = requests.poll_recv(cx) {
                        return Poll::Ready(Some(r));
                    }
                    gone.as_mut().poll(cx).map(|()| Some(None))
                })
                .await
            };
            match woke {
                None => {}
                Some(Some(request)) => {
                    if let Err(reason) = self.answer(request).await {
                        return reason;
                    }
                }
                // The client left, or every request sender is gone (never: the
                // registry holds one while the stream is listed).
                Some(None) => return CloseReason::Client,
            }
        }
    }

    async fn answer(&mut self, request: Request) -> Result<(), CloseReason> {
        match request {
            Request::Subscribe(topic, reply) => {
                let _ = reply.send(self.client.subscribe(&topic).await);
            }
            Request::Unsubscribe(topic, reply) => {
                let _ = reply.send(self.client.unsubscribe(&topic));
            }
            Request::Ping(reply) => {
                let _ = reply.send(());
                self.send(event::from_frame(&frame::pong(), None)).await?;
            }
        }
        Ok(())
    }

    async fn replay(&mut self) -> Result<(), CloseReason> {
        let mut replay = self.client.replay();
        loop {
            let page = self.client.next_page(&mut replay).await?;
            if page.is_empty() {
                return Ok(());
            }
            for r in page {
                self.send(event::from_frame(&r.frame, Some(r.cursor.as_str())))
                    .await?;
                self.client.replayed(r.id);
            }
        }
    }

    /// `first` and whatever else is queued, up to [`WRITE_BATCH`], as one chunk.
    async fn write_batch(&mut self, first: Queued) -> Result<(), CloseReason> {
        let batch = self.client.batch(first, WRITE_BATCH);
        if batch.is_empty() {
            return Ok(());
        }
        let mut chunk = BytesMut::new();
        for out in &batch {
            event::append(&mut chunk, payload_of(&out.frame), out.cursor.as_deref());
        }
        let chunk = chunk.freeze();
        self.send(chunk).await?;
        self.client.delivered(batch.iter());
        Ok(())
    }

    /// Hand a chunk to hyper. Fails when the client has not taken the chunks before it
    /// within the write stall timeout, or gives way to a close request (the chunk then
    /// gets [`CLOSE_WAIT`] more).
    async fn send(&mut self, chunk: Bytes) -> Result<(), CloseReason> {
        let stall = self.client.state.config.write_stall_timeout();
        let mailbox = self.client.mailbox();
        let outcome = tokio::select! {
            biased;
            permit = tokio::time::timeout(stall, self.body.reserve()) => Ok(permit),
            reason = mailbox.closing() => Err(reason),
        };
        let permit = match outcome {
            Ok(permit) => permit,
            Err(reason) => {
                match tokio::time::timeout(CLOSE_WAIT, self.body.reserve()).await {
                    Ok(Ok(permit)) => permit.send(chunk),
                    Ok(Err(_)) => {}
                    Err(_) => self.abandoned = true,
                }
                return Err(reason);
            }
        };
        match permit {
            Ok(Ok(permit)) => {
                permit.send(chunk);
                Ok(())
            }
            Ok(Err(_)) => Err(CloseReason::Client),
            Err(_) => {
                self.abandoned = true;
                Err(CloseReason::WriteStalled)
            }
        }
    }

    /// Say why the stream ends (a `close` event, with when to come back), end the body
    /// or hang up on a client that does not read, then leave the topics and presence.
    async fn finish(&mut self, reason: &CloseReason, hangup: &Hangup) {
        if !matches!(reason, CloseReason::Client) && !self.abandoned {
            let retry = match reason {
                CloseReason::Draining => {
                    RETRY_MS.min(500) + self.client.conn().id.0 % DRAIN_SPREAD_MS
                }
                r if r.reconnect() => RETRY_MS,
                _ => NO_RETRY_MS,
            };
            let sent = tokio::time::timeout(CLOSE_WAIT, self.body.reserve()).await;
            match sent {
                Ok(Ok(permit)) => permit.send(event::close(reason, retry)),
                Ok(Err(_)) => {}
                Err(_) => self.abandoned = true,
            }
        }
        if self.abandoned {
            hangup.now();
        }
        self.client.leave(reason).await;
    }
}
