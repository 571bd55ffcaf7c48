//! The device registry in one process (`--standalone`, fast tests), with the Redis
//! store's semantics. Lifetimes are [`tokio::time::Instant`]s, so tests can drive them
//! with `tokio::time::pause()`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::{DeviceId, DeviceStore, StoredDevice};
use crate::error::BackendError;
use crate::ids::UserId;
use crate::sharded::Sharded;

pub struct MemoryDevices {
    capacity: usize,
    ttl: Duration,
    users: Sharded<UserId, UserDevices>,
}

struct UserDevices {
    /// Least recent first; at most `capacity` long.
    devices: Vec<StoredDevice>,
    expires: Instant,
}

impl MemoryDevices {
    /// At most `capacity` devices per user (at least 1), dropped `ttl` after their user's
    /// last registration or push.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            ttl,
            users: Sharded::new(),
        }
    }
}

#[async_trait]
impl DeviceStore for MemoryDevices {
    async fn register(
        &self,
        user: &UserId,
        id: &DeviceId,
        payload: Bytes,
    ) -> Result<Vec<DeviceId>, BackendError> {
        let now = Instant::now();
        let mut shard = self.users.shard(user);
        let entry = shard.entry(user.clone()).or_insert_with(|| UserDevices {
            devices: Vec::new(),
            expires: now,
        });
        if entry.expires <= now {
            entry.devices.clear();
        }
        entry.devices.retain(|d| &d.id != id);
        entry.devices.push(StoredDevice {
            id: id.clone(),
            payload,
        });
        let over = entry.devices.len().saturating_sub(self.capacity);
        let dropped = entry.devices.drain(..over).map(|d| d.id).collect();
        entry.expires = now + self.ttl;
        drop(shard);
        self.users.wrote(|u| u.expires <= Instant::now());
        Ok(dropped)
    }

    async fn unregister(&self, user: &UserId, id: &DeviceId) -> Result<bool, BackendError> {
        let mut shard = self.users.shard(user);
        let Some(entry) = shard.get_mut(user) else {
            return Ok(false);
        };
        let before = entry.devices.len();
        entry.devices.retain(|d| &d.id != id);
        let removed = entry.devices.len() < before && entry.expires > Instant::now();
        if entry.devices.is_empty() {
            shard.remove(user);
        }
        Ok(removed)
    }

    async fn list(&self, user: &UserId) -> Result<Vec<StoredDevice>, BackendError> {
        let now = Instant::now();
        let mut shard = self.users.shard(user);
        match shard.get(user) {
            Some(entry) if entry.expires > now => Ok(entry.devices.iter().rev().cloned().collect()),
            Some(_) => {
                shard.remove(user);
                Ok(Vec::new())
            }
            None => Ok(Vec::new()),
        }
    }

    async fn touch(&self, user: &UserId, ids: &[DeviceId]) -> Result<(), BackendError> {
        let now = Instant::now();
        let mut shard = self.users.shard(user);
        let Some(entry) = shard.get_mut(user) else {
            return Ok(());
        };
        if entry.expires <= now {
            shard.remove(user);
            return Ok(());
        }
        // Used devices move to the most recent end, in the order given.
        for id in ids {
            if let Some(at) = entry.devices.iter().position(|d| &d.id == id) {
                let device = entry.devices.remove(at);
                entry.devices.push(device);
            }
        }
        entry.expires = now + self.ttl;
        Ok(())
    }
}
