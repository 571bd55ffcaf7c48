//! Kurir's push providers: the client side of Web Push, FCM HTTP v1 and APNs, used to
//! reach a user whose app is closed.
//!
//! The caller hands [`Pusher::send`] a [`Device`] and a [`PushMessage`] and gets back an
//! [`Outcome`]: sent, failed with the provider's reason (retryable or not, with its
//! `Retry-After`), or gone (the registration no longer exists and should be removed).
//! Each provider sits behind its own concurrency limit, retry policy and circuit breaker
//! ([`guard`]), so a slow or failing service cannot hold up the other two.

pub mod apns;
pub mod breaker;
pub mod device;
pub mod fcm;
pub mod guard;
pub mod message;
pub mod outcome;
pub mod pusher;
pub mod response;
pub mod retry;
pub mod secret;
pub mod settings;
pub mod ssrf;
pub mod telemetry;
pub mod webpush;

pub use device::{Device, WebPushSubscription};
pub use message::{Priority, PushMessage};
pub use outcome::{Failure, FailureReason, Outcome, Provider};
pub use pusher::{Pusher, PusherError};
pub use settings::{PushSettings, SettingsError};
