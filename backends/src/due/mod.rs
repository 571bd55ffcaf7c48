//! The due-queue: work that must happen at a given time (scheduled sends, push
//! fallbacks, expiry reports), shared by every dispatcher and kept in Redis so that it
//! survives any of them. A sorted set in a cluster, a map in `--standalone`.
//!
//! # Contract
//! - `schedule` stores an item under its id, due at a unix-ms time; scheduling an id
//!   again replaces its payload and time.
//! - `claim` hands out items whose time has come, earliest first, each under a lease: a
//!   claimed item is invisible to every other claim until the lease ends. Claims are
//!   atomic, so two claimers, in one process or in two, never get the same item while a
//!   lease runs. An item whose claimer died before finishing (SIGKILL) is handed out
//!   again once its lease ends: items are processed at least once, and exactly once as
//!   long as each finishes within its lease.
//! - Each claim gets a fresh [`Lease`]; `complete` and `reschedule` act only while the
//!   caller's lease is the item's current one, so a claimer that overran its lease cannot
//!   remove or move the item under the one that took it over.
//! - `complete` removes an item (one removal). `reschedule` moves it to a later time
//!   with a new payload and ends the lease (the next stage of a multi-step item).
//! - `cancel` removes an item by id, unless it is leased right now (being processed),
//!   and says which of the three it found.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::BackendError;

pub mod memory;
pub mod redis;

pub use memory::MemoryDueQueue;
pub use redis::RedisDueQueue;

/// One claim of one item: which claim it is (1 for the first), fencing what the
/// claimer may do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub attempt: u64,
    /// Unix ms when the lease ends and the item may be claimed again.
    pub until: i64,
}

/// An item handed out by [`DueQueue::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: String,
    pub payload: Bytes,
    pub lease: Lease,
}

/// What [`DueQueue::cancel`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// The item was waiting and is gone now.
    Cancelled,
    /// No item with this id: never scheduled, or already completed or cancelled.
    NotFound,
    /// A claimer holds it right now; it stays.
    Leased,
}

#[async_trait]
pub trait DueQueue: Send + Sync + 'static {
    /// Store item `id`, due at `due_at` (unix ms), replacing any item with that id.
    async fn schedule(&self, id: &str, due_at: i64, payload: Bytes) -> Result<(), BackendError>;

    /// Up to `limit` items due at `now` (unix ms), earliest first, each leased until
    /// `now + lease`.
    async fn claim(
        &self,
        now: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claimed>, BackendError>;

    /// Remove a claimed item; `false` when the lease is no longer the item's (it ran
    /// out and another claim took over, or the item was removed): nothing changes.
    async fn complete(&self, item: &Claimed) -> Result<bool, BackendError>;

    /// Move a claimed item to `due_at` with `payload`, unleased; `false` as for
    /// [`Self::complete`].
    async fn reschedule(
        &self,
        item: &Claimed,
        due_at: i64,
        payload: Bytes,
    ) -> Result<bool, BackendError>;

    /// Remove item `id` if it is waiting (not leased at `now`).
    async fn cancel(&self, id: &str, now: i64) -> Result<Cancel, BackendError>;

    /// Unix ms when the earliest item is due (or its lease ends), if any: how long a
    /// claimer may sleep.
    async fn next_due(&self) -> Result<Option<i64>, BackendError>;
}

/// A lease duration in whole milliseconds, at least 1.
pub(crate) fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX).max(1)
}
