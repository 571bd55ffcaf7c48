//! The device registry: where each user's notifications are pushed when their app is
//! closed (Web Push subscriptions, FCM and APNs tokens). Redis hashes in a cluster, a
//! map in `--standalone`.
//!
//! # Contract
//! - A device is an opaque payload under a [`DeviceId`], per user. Registering an id the
//!   user already has replaces its payload and makes it the most recent.
//! - A user keeps at most the store's capacity of devices: registering one more drops
//!   the least recently registered or used ones, and `register` returns their ids.
//! - `list` returns a user's devices, most recently registered or used first.
//! - A user's devices expire together after the store's TTL without a `register` or a
//!   `touch`: an app nobody opens for months stops being pushed to.
//! - `touch` marks devices as used (most recent, TTL renewed); unknown ids are ignored.
//! - `unregister` removes one device; removing an unknown id is not an error.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::BackendError;
use crate::ids::{InvalidId, UserId};

pub mod memory;
pub mod redis;

pub use memory::MemoryDevices;
pub use redis::RedisDevices;

pub use crate::options::{DEFAULT_DEVICE_TTL, DEFAULT_MAX_DEVICES};

/// A device's id: 1..=64 characters of `[A-Za-z0-9_-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

impl DeviceId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidId {
                reason: "must be 1 to 64 characters of letters, digits, '-' and '_'",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// One registered device of one user.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredDevice {
    pub id: DeviceId,
    /// Encoded `kurir.v1.Device`: it holds push credentials, so it is never logged.
    pub payload: Bytes,
}

impl fmt::Debug for StoredDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredDevice")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait DeviceStore: Send + Sync + 'static {
    /// Store `payload` as device `id` of `user` (replacing it), the most recent one;
    /// returns the ids the cap dropped.
    async fn register(
        &self,
        user: &UserId,
        id: &DeviceId,
        payload: Bytes,
    ) -> Result<Vec<DeviceId>, BackendError>;

    /// Remove device `id`; `true` when it was there.
    async fn unregister(&self, user: &UserId, id: &DeviceId) -> Result<bool, BackendError>;

    /// The user's devices, most recent first.
    async fn list(&self, user: &UserId) -> Result<Vec<StoredDevice>, BackendError>;

    /// Mark `ids` as just used and renew the TTL of the user's devices.
    async fn touch(&self, user: &UserId, ids: &[DeviceId]) -> Result<(), BackendError>;
}
