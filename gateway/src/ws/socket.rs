//! One upgraded connection's frame stream: `kurir-wire`'s [`WsSocket`], with the read
//! limits every socket of the node shares.

pub use kurir_wire::socket::*;
pub use kurir_wire::{PartialBudget, ReadLimits};
