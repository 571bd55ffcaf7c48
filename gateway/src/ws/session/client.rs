//! What a session reads: client frames under the rate limit (a token bucket; acks of
//! what was sent are free), WebSocket control frames, and the JSON protocol's `ping`,
//! `ack`, `subscribe` and `unsubscribe`.

use std::time::Duration;

use bytes::Bytes;
use kurir_backends::NotificationId;
use kurir_wire::frame::{self as wire, WireError};
use kurir_wire::{Incoming, ReadError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::debug;

use super::{Interrupt, Session, MILLI};
use crate::client::actions;
use crate::protocol::close::MESSAGE_TOO_SLOW;
use crate::protocol::frame::{self, ClientFrame, FrameError};
use crate::protocol::{CloseReason, ProtocolError};

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Take one frame's worth from the client's token bucket, refilled at
    /// `KURIR_CLIENT_FRAMES_PER_SECOND` since the last frame; `false` when empty.
    fn take_token(&mut self, since_last: Duration) -> bool {
        let cfg = &self.client.state.config;
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
        NotificationId::parse(&id).is_ok_and(|id| self.client.ack_once(id))
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
            ClientFrame::Ack { id } => self.client.ack(&id).await.err().map(|e| frame::error(&e)),
            ClientFrame::Subscribe { topic } => Some(match self.client.subscribe(&topic).await {
                Ok(t) => frame::subscribed(t.as_str()),
                Err(e) => frame::error(&e),
            }),
            ClientFrame::Unsubscribe { topic } => Some(match self.client.unsubscribe(&topic) {
                Ok(t) => frame::unsubscribed(t.as_str()),
                Err(e) => frame::error(&e),
            }),
            ClientFrame::PushSubscribe { subscription } => {
                let c = &self.client;
                Some(
                    match actions::push_subscribe(&c.state, &c.identity.user, &subscription).await {
                        Ok(id) => frame::push_subscribed(&id),
                        Err(e) => frame::error(&e),
                    },
                )
            }
            ClientFrame::PushUnsubscribe { endpoint } => {
                let c = &self.client;
                Some(
                    match actions::push_unsubscribe(&c.state, &c.identity.user, &endpoint).await {
                        Ok(()) => frame::push_unsubscribed(),
                        Err(e) => frame::error(&e),
                    },
                )
            }
        }
    }
}
