//! RFC 6455 WebSocket framing, and the server end of a WebSocket over any byte stream.
//!
//! The data path, in order: [`handshake`] answers the opening handshake's key;
//! [`frame`] is the codec (headers in both directions, masking, close codes), free of
//! IO; [`utf8`] checks text as it arrives; [`limits`] bounds what a peer can make the
//! read side hold; [`socket`] is one connection's frame stream (cancel-safe reads,
//! vectored writes of pre-framed `Bytes`, the closing handshake).
//!
//! The crate knows nothing of what the messages mean. `examples/echo.rs` is an echo
//! server on [`WsSocket`] that the Autobahn conformance suite drives.

#![forbid(unsafe_code)]

pub mod frame;
pub mod handshake;
pub mod limits;
pub mod socket;
pub mod utf8;

pub use frame::WireError;
pub use limits::{PartialBudget, ReadLimits};
pub use socket::{Incoming, ReadError, WireFrame, WsSocket};
