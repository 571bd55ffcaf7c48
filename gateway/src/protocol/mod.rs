//! The client protocol, below everything that speaks it: the JSON frames a client and
//! the gateway exchange ([`frame`], with the notification frame every recipient shares)
//! and why a connection ends, with its close code and reason ([`close`]). The hub, the
//! relay and the sessions all build on it; it knows nothing of them.

pub mod close;
pub mod frame;

pub use close::{CloseReason, ProtocolError};
pub use frame::PreparedNotification;
