//! What a session reads: client frames under the rate limit (a token bucket; acks of
//! what was sent are free), WebSocket control frames, and the JSON protocol's `ping`,
//! `ack`, `subscribe` and `unsubscribe`.

use std::time::Duration;

use bytes::Bytes;
use kurir_backends::{NotificationId, Topic};
use kurir_proto::v1::ReceiptStatus;
use kurir_wire::frame::{self as wire, WireError};
use kurir_wire::{Incoming, ReadError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::debug;

use super::{Interrupt, Session, MILLI};
use crate::protocol::close::MESSAGE_TOO_SLOW;
use crate::protocol::frame::{self, ClientFrame, FrameError};
use crate::protocol::{CloseReason, ProtocolError};
use crate::relay::TopicError;
use crate::telemetry;

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Take one frame's worth from the client's token bucket, refilled at
    /// `KURIR_CLIENT_FRAMES_PER_SECOND` since the last frame; `false` when empty.
    fn take_token(&mut self, since_last: Duration) -> bool {
        let cfg = &self.state.config;
        let burst = u64::from(cfg.client_frames_burst) * MILLI;
        // One frame per second is one thousandth per millisecond.
        let refill =
            (since_last.as_millis() as u64).saturating_mul(u64::from(cfg.client_frames_per_second));
        self.tokens = self.tokens.saturating_add(refill).min(burst);
        match self.tokens.checked_sub(MILLI) {
            Some(left) => {
                self.tokens = left;
                true
            }
            None => false,
        }
    }

    /// Whether a client frame is free of the rate limit: the first ack of a stored
    /// notification sent on this connection (the client acks what we send it, as fast
    /// as we send it).
    fn is_free(&mut self, incoming: &Incoming) -> bool {
        let Incoming::Text(t) = incoming else {
            return false;
        };
        // Cheap test first; the frame is parsed again by `frame::parse`.
        if !t.contains("\"ack\"") {
            return false;
        }
        let Ok(ClientFrame::Ack { id }) = frame::parse(t) else {
            return false;
        };
        match (NotificationId::parse(&id), self.seen.as_deref_mut()) {
            (Ok(id), Some(seen)) => seen.ack_once(id),
            _ => false,
        }
    }

    pub(super) async fn on_incoming(
        &mut self,
        incoming: Result<Incoming, ReadError>,
    ) -> Option<CloseReason> {
        let now = Instant::now();
        let since_last = now.duration_since(self.last_heard);
        self.last_heard = now;
        if let Ok(msg) = &incoming {
            if !matches!(msg, Incoming::Close(_))
                && !self.is_free(msg)
                && !self.take_token(since_last)
            {
                return Some(CloseReason::RateLimited);
            }
        }
        let reply = match incoming {
            Ok(Incoming::Text(t)) => match frame::parse(&t) {
                Ok(f) => self.on_frame(f).await,
                Err(e) => Some(frame::error(&e)),
            },
            Ok(Incoming::Binary(_)) => Some(frame::error(&FrameError::new(
                "bad_frame",
                "binary frames are not supported; send JSON text",
            ))),
            Ok(Incoming::Ping(payload)) => {
                // Answered with the next pongs, once, however many came meanwhile.
                self.pong = Some(wire::frame(wire::OP_PONG, &payload));
                None
            }
            Ok(Incoming::Pong) => None,
            Ok(Incoming::Close(code)) => {
                // Answer the client's close with its own code (RFC 6455 §5.5.1).
                let echo =
                    code.map_or_else(|| wire::frame(wire::OP_CLOSE, &[]), |c| wire::close(c, ""));
                let _ = self.write(&[echo], Interrupt::Never).await;
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
            Some(r) => self.send(r).await.err(),
            None => None,
        }
    }

    async fn on_frame(&mut self, f: ClientFrame) -> Option<Bytes> {
        match f {
            ClientFrame::Ping => {
                self.json_pong = true;
                None
            }
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
        // In the hub first, then the bus subscription: the topic owner never drops a
        // subscription a connection is about to rely on (see `relay::Topics::ensure`).
        let conn = self.registration.conn();
        self.state.hub.subscribe(&topic, conn.clone());
        if let Err(e) = self.state.topics.ensure(&topic).await {
            // The topic owner finds the topic unused, if it is, on its next sweep.
            self.state.hub.unsubscribe(&topic, conn.id);
            return Err(match e {
                TopicError::TooMany => FrameError::new(
                    "too_many_topics",
                    "this node holds its limit of topics; retry later",
                ),
                TopicError::Unavailable => {
                    FrameError::new("unavailable", "subscription failed; retry later")
                }
            });
        }
        self.topics.push(topic.clone());
        Ok(topic)
    }

    fn unsubscribe(&mut self, name: &str) -> Result<Topic, FrameError> {
        let topic = Topic::parse(name)
            .map_err(|e| FrameError::new("bad_request", format!("topic: {e}")))?;
        if let Some(i) = self.topics.iter().position(|t| *t == topic) {
            self.topics.swap_remove(i);
            // The bus subscription goes a little later, when the topic owner finds the
            // topic without local subscribers.
            self.state
                .hub
                .unsubscribe(&topic, self.registration.conn().id);
        }
        Ok(topic)
    }
}
