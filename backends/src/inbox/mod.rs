//! The inbox: each user's stored notifications, kept until acked or expired, and the
//! idempotency keys of `Send`. Redis Streams in a cluster, a map in `--standalone`.
//!
//! # Contract
//! - `append` stores one entry per user and returns each user's [`Cursor`] for it.
//!   Cursors of one user's inbox strictly increase in append order. Appending an id the
//!   inbox still holds returns its cursor and stores nothing (a retried append).
//! - An inbox keeps at most its configured capacity of entries (oldest trimmed first)
//!   and expires as a whole after the longest TTL of what it holds.
//! - `pending` returns unacked, unexpired entries after a cursor, oldest first. An entry
//!   whose `expires_at` has passed is never returned.
//! - `ack` removes an entry by notification id; acking twice or acking an unknown id is
//!   not an error.
//! - `claim` is atomic across dispatchers: the first caller for a key wins. Claiming
//!   again with the id that holds the key is `New` (a retried claim).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::BackendError;
use crate::ids::{NotificationId, UserId};

pub mod memory;
pub mod redis;

pub use memory::MemoryInbox;
pub use redis::RedisInbox;

/// Default number of entries an inbox keeps.
pub const DEFAULT_CAPACITY: usize = 1000;

/// Position in one user's inbox (a Redis Stream entry id, `<ms>-<seq>`). Opaque to clients.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Cursor(String);

impl Cursor {
    /// Accepts `<u64>-<u64>`, the only shape a cursor has.
    pub fn parse(s: &str) -> Option<Self> {
        let (ms, seq) = s.split_once('-')?;
        (ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok()).then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `(ms, seq)` for ordering.
    pub fn key(&self) -> (u64, u64) {
        let (ms, seq) = self.0.split_once('-').unwrap_or(("0", "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    }
}

impl PartialOrd for Cursor {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cursor {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What `append` stores for every recipient.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub id: NotificationId,
    /// Unix milliseconds after which the entry must not be delivered.
    pub expires_at: i64,
    /// Encoded `kurir.internal.v1.Delivery` (without recipients).
    pub payload: Bytes,
}

/// One stored notification of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub cursor: Cursor,
    pub id: NotificationId,
    pub expires_at: i64,
    pub payload: Bytes,
}

/// Outcome of claiming an idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and now names the given id.
    New,
    /// The key already names this id.
    Existing(NotificationId),
}

/// Wall-clock unix milliseconds, the clock of [`NewEntry::expires_at`].
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[async_trait]
pub trait Inbox: Send + Sync + 'static {
    /// Store `entry` for every user, in one round trip; cursors in the order of `users`.
    async fn append(&self, users: &[UserId], entry: &NewEntry)
        -> Result<Vec<Cursor>, BackendError>;

    /// Up to `limit` pending entries after `after` (all when `None`), oldest first.
    async fn pending(
        &self,
        user: &UserId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, BackendError>;

    /// Remove the entry of notification `id`; `true` when something was removed.
    async fn ack(&self, user: &UserId, id: NotificationId) -> Result<bool, BackendError>;

    /// Reserve idempotency `key` for `id` for `ttl`, or learn which id holds it.
    async fn claim(
        &self,
        key: &str,
        id: NotificationId,
        ttl: Duration,
    ) -> Result<Claim, BackendError>;

    /// Give `key` up if it still names `id` (the send that claimed it failed).
    async fn release(&self, key: &str, id: NotificationId) -> Result<(), BackendError>;
}
