//! Kurir's seams, shared by the dispatcher and the gateways.
//!
//! Along the data path: [`namespace`] names every key and subject; the [`bus`] carries
//! envelopes dispatcher → gateway and receipts gateway → dispatcher; the [`presence`]
//! store says which node holds which user; the [`inbox`] keeps stored notifications
//! until acked; the [`devices`] registry says where to push a user whose app is closed,
//! and the [`due`] queue holds work that must happen later (scheduled sends, push
//! fallbacks), leased to one dispatcher at a time. Each seam is a trait with a NATS/Redis and an in-memory implementation,
//! and `contract` (feature `contract`) holds the one test suite both must pass.
#![forbid(unsafe_code)]

pub mod bus;
mod clock;
#[cfg(feature = "contract")]
pub mod contract;
pub mod devices;
pub mod due;
pub mod error;
pub mod ids;
pub mod inbox;
pub mod namespace;
mod options;
pub mod presence;
mod redis_client;
pub mod secret;
#[cfg(feature = "clap")]
pub mod settings;
mod sharded;
pub mod telemetry;
pub mod tls;
mod wiring;

pub use error::BackendError;
pub use ids::{ConnId, IdempotencyKey, InvalidId, NodeId, NotificationId, Topic, UserId};
pub use namespace::Namespace;
pub use options::{
    ConnectOptions, DEFAULT_COMMAND_TIMEOUT, DEFAULT_INBOX_CAPACITY, DEFAULT_PRESENCE_TTL,
    DEFAULT_SUBSCRIPTION_CAPACITY,
};
pub use secret::{Secret, ServerUrl};
#[cfg(feature = "clap")]
pub use settings::{BackendSettings, SettingsError};
pub use tls::{BackboneSecurity, SecurityError};
pub use wiring::Backends;
