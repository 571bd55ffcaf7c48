//! Why a connection ends, and the close code and reason each cause is sent with. The one
//! place close codes are chosen.

use bytes::Bytes;
use kurir_wire::frame::{self as wire, truncate};

/// The close reason (code 1008) of a session whose token expired: clients that can get
/// a fresh token reconnect with it, others stop.
pub const TOKEN_EXPIRED: &str = "token expired";

/// The close reason (code 1008) of a session whose client left a message unfinished
/// past `KURIR_PARTIAL_MESSAGE_TIMEOUT_MS`.
pub const MESSAGE_TOO_SLOW: &str = "message too slow";

/// Closed set of reasons a session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed or the socket broke.
    Client,
    /// Nothing received within the idle timeout.
    Idle,
    /// The outbound queue was full.
    SlowConsumer,
    /// A write made no progress for the stall timeout: the client does not read.
    WriteStalled,
    /// The client sent frames faster than its rate limit.
    RateLimited,
    /// The node is shutting down.
    Draining,
    /// A backend asked for it (`Disconnect` RPC); carries the caller's reason.
    Disconnected(String),
    /// The client broke policy (e.g. a frame that is not text).
    Policy(&'static str),
    /// A frame above the size limit.
    FrameTooLarge,
    /// The node's budget for unfinished client messages is spent.
    Overloaded,
    /// Bytes that are not the WebSocket protocol (bad framing, or text that is not UTF-8).
    Protocol(ProtocolError),
    /// Something on our side failed (e.g. presence could not be written).
    Internal,
}

impl CloseReason {
    pub fn code(&self) -> u16 {
        match self {
            Self::Client => 1000,
            Self::Idle => 1001,
            Self::Policy(_) | Self::RateLimited => 1008,
            Self::FrameTooLarge => 1009,
            Self::Protocol(ProtocolError::Framing(_)) => 1002,
            Self::Protocol(ProtocolError::InvalidText) => 1007,
            Self::Internal => 1011,
            Self::Draining => 1012,
            Self::SlowConsumer | Self::Overloaded | Self::WriteStalled => 1013,
            Self::Disconnected(_) => 4001,
        }
    }

    /// Whether a client should reconnect (soon) after this close.
    pub fn reconnect(&self) -> bool {
        !matches!(
            self,
            Self::Policy(_) | Self::RateLimited | Self::Disconnected(_)
        )
    }

    /// `reason` label of `kurir_gateway_connections_closed_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Idle => "idle",
            Self::SlowConsumer => "slow_consumer",
            Self::WriteStalled => "write_stalled",
            Self::RateLimited => "rate_limited",
            Self::Draining => "draining",
            Self::Disconnected(_) => "disconnected",
            Self::Policy(_) => "policy",
            Self::FrameTooLarge => "frame_too_large",
            Self::Overloaded => "overloaded",
            Self::Protocol(_) => "protocol",
            Self::Internal => "error",
        }
    }

    /// Every [`CloseReason::label`], for series registered at zero.
    pub const LABELS: [&'static str; 12] = [
        "client",
        "idle",
        "slow_consumer",
        "write_stalled",
        "rate_limited",
        "draining",
        "disconnected",
        "policy",
        "frame_too_large",
        "overloaded",
        "protocol",
        "error",
    ];

    /// Close reason text: at most 120 bytes (the protocol allows 123), never internal detail.
    pub fn text(&self) -> String {
        let text = match self {
            Self::Client => "bye",
            Self::Idle => "idle timeout",
            Self::SlowConsumer => "slow consumer: reconnect",
            Self::WriteStalled => "not reading: reconnect",
            Self::RateLimited => "rate limit",
            Self::Draining => "server draining: reconnect",
            Self::Disconnected(reason) if !reason.is_empty() => reason,
            Self::Disconnected(_) => "disconnected by the server",
            Self::Policy(why) => why,
            Self::FrameTooLarge => "frame too large",
            Self::Overloaded => "server busy: reconnect",
            Self::Protocol(ProtocolError::Framing(why)) => why,
            Self::Protocol(ProtocolError::InvalidText) => "text frame is not UTF-8",
            Self::Internal => "internal error: reconnect",
        };
        truncate(text, 120).to_owned()
    }

    /// The close frame, ready for the wire.
    pub fn frame(&self) -> Bytes {
        wire::close(self.code(), &self.text())
    }
}

/// How a client broke the WebSocket protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// Framing against RFC 6455 (close 1002).
    Framing(&'static str),
    /// A text message that is not UTF-8 (close 1007).
    InvalidText,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_reconnect() {
        assert_eq!(CloseReason::Draining.code(), 1012);
        assert!(CloseReason::Draining.reconnect());
        assert_eq!(CloseReason::SlowConsumer.code(), 1013);
        assert!(CloseReason::SlowConsumer.reconnect());
        assert_eq!(CloseReason::Overloaded.code(), 1013);
        assert!(CloseReason::Overloaded.reconnect());
        assert_eq!(CloseReason::Disconnected(String::new()).code(), 4001);
        assert!(!CloseReason::Disconnected(String::new()).reconnect());
        assert!(!CloseReason::Policy("x").reconnect());
        assert_eq!(CloseReason::WriteStalled.code(), 1013);
        assert_eq!(CloseReason::RateLimited.code(), 1008);
        assert_eq!(CloseReason::RateLimited.text(), "rate limit");
        assert!(!CloseReason::RateLimited.reconnect());
    }

    #[test]
    fn reasons_stay_short() {
        let long = "é".repeat(100);
        let text = CloseReason::Disconnected(long).text();
        assert!(text.len() <= 120);
        assert!(text.chars().all(|c| c == 'é'));
    }
}
