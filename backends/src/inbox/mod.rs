//! The inbox: each user's stored notifications, kept until acked or expired, and the
//! idempotency keys of `Send`. Redis Streams in a cluster, a map in `--standalone`.
//!
//! # Contract
//! - `append` stores one entry per user and returns each user's [`Cursor`] for it, with
//!   the ids of the unexpired entries the capacity pushed out to make room (oldest
//!   first; they were never acked and are gone).
//!   Cursors of one user's inbox strictly increase in append order. Appending an id the
//!   inbox still holds returns its cursor and stores nothing (a retried append).
//! - An entry appended with a collapse key replaces the user's unacked entry with the
//!   same key, if any: a replay sends only the newest of them ("3 new messages" instead
//!   of three banners). Entries with other keys or none are untouched.
//! - An inbox keeps at most its configured capacity of entries (oldest trimmed first)
//!   and expires as a whole [`EXPIRED_GRACE`] after the longest TTL of what it holds.
//! - `holds` says, per user, whether an entry is still in the inbox (neither acked nor
//!   trimmed) and when it expires; an entry past its expiry is still held during the
//!   grace, so the expiry of an unacked notification can be told from an ack.
//! - `pending` returns unacked, unexpired entries after a cursor, oldest first. An entry
//!   whose `expires_at` has passed is never returned.
//! - `ack` removes an entry by notification id; acking twice or acking an unknown id is
//!   not an error.
//! - Idempotency claims have two phases. `claim` is atomic across dispatchers: the first
//!   caller for a free key wins and holds it *pending* for the short TTL it asked for;
//!   `settle` makes its claim *settled* for the long TTL once the send is safe (stored or
//!   published). Later callers with another id learn which phase the holder is in
//!   (`InProgress` while pending, `Existing` once settled), so a retry is never told
//!   that a send succeeded before it has. Claiming again with the id that holds the key,
//!   pending or settled, is `New` (a retried claim). `release` frees only a pending
//!   claim, never a settled one: what a settled key names has reached its users.
//! - A claim remembers the [`Fingerprint`] of the request it was made for. A later
//!   caller whose fingerprint differs learns only that (`OtherRequest`), in either phase,
//!   never the holder's id: reusing a key for a different request is a caller's bug,
//!   and answering it with another request's id would hide a lost notification.
//! - Keys are scoped ([`IdempotencyKey`]): the same key chosen by two callers (two API
//!   keys) names two independent claims.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::BackendError;
pub use crate::ids::IdempotencyKey;
use crate::ids::{NotificationId, UserId};

pub mod memory;
pub mod redis;

pub use memory::MemoryInbox;
pub use redis::RedisInbox;

/// Default number of entries an inbox keeps.
pub use crate::options::DEFAULT_INBOX_CAPACITY as DEFAULT_CAPACITY;

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
    /// The notification's `collapse_key`: a newer entry with the same key replaces this
    /// one while it is unacked. `None` (or empty) collapses nothing.
    pub collapse_key: Option<String>,
}

impl NewEntry {
    /// The collapse key, if the entry has a non-empty one.
    pub fn collapse_key(&self) -> Option<&str> {
        self.collapse_key.as_deref().filter(|k| !k.is_empty())
    }
}

/// What `append` did in one user's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub cursor: Cursor,
    /// Unacked entries the capacity trimmed to make room, oldest first.
    pub dropped: Vec<NotificationId>,
}

/// One stored notification of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub cursor: Cursor,
    pub id: NotificationId,
    pub expires_at: i64,
    pub payload: Bytes,
}

/// What a request said, hashed (128 bits): two requests with the same fingerprint are
/// the same request. Stored beside the id a key names; shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// 32 lowercase or uppercase hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Who claims a key: the notification it would name and the request it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimant {
    pub id: NotificationId,
    pub fingerprint: Fingerprint,
}

/// Outcome of claiming an idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and now holds a pending claim of the given id, or already held a
    /// claim of that id, pending or settled (a retried claim).
    New,
    /// A pending claim of this other id holds the key: its send is still running, and
    /// may yet settle or give the key up.
    InProgress(NotificationId),
    /// A settled claim of this other id holds the key: that notification was stored or
    /// published.
    Existing(NotificationId),
    /// A claim of a request with another fingerprint holds the key, pending or settled:
    /// this caller reused the key for a different request. The holder is not named.
    OtherRequest,
}

/// How long an inbox outlives the expiry of its longest-lived entry: the window in which
/// an expired, unacked entry can still be told from an acked one (`EXPIRED` receipts).
pub const EXPIRED_GRACE: Duration = Duration::from_secs(300);

pub use crate::clock::now_ms;

#[async_trait]
pub trait Inbox: Send + Sync + 'static {
    /// Store `entry` for every user, in one round trip; one [`Appended`] per user, in the
    /// order of `users`.
    async fn append(
        &self,
        users: &[UserId],
        entry: &NewEntry,
    ) -> Result<Vec<Appended>, BackendError>;

    /// Up to `limit` pending entries after `after` (all when `None`), oldest first.
    async fn pending(
        &self,
        user: &UserId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, BackendError>;

    /// For each user, in order: the `expires_at` of notification `id` while the user's
    /// inbox holds it (unacked, untrimmed, expired or not), `None` otherwise. One round
    /// trip.
    async fn holds(
        &self,
        users: &[UserId],
        id: NotificationId,
    ) -> Result<Vec<Option<i64>>, BackendError>;

    /// Remove the entry of notification `id`; `true` when something was removed.
    async fn ack(&self, user: &UserId, id: NotificationId) -> Result<bool, BackendError>;

    /// Hold idempotency `key` pending for `by`, for `pending_ttl` (which frees the key
    /// if the claimer dies before settling or releasing it), or learn who holds it. A
    /// retried claim leaves the holder's phase and TTL as they are.
    async fn claim(
        &self,
        key: &IdempotencyKey,
        by: Claimant,
        pending_ttl: Duration,
    ) -> Result<Claim, BackendError>;

    /// Turn the pending claim of `by` on `key` into a settled one that lasts `ttl`
    /// (settling again renews it). `true` when the key now names `by.id` settled; `false`
    /// when it held no claim of `by` (the pending one expired, and maybe another id holds
    /// the key now): nothing changes then. The caller has done its work either way, so it
    /// logs a `false` and carries on; a later retry may then send again (a duplicate,
    /// never a loss).
    async fn settle(
        &self,
        key: &IdempotencyKey,
        by: Claimant,
        ttl: Duration,
    ) -> Result<bool, BackendError>;

    /// Give `key` up if it holds a pending claim of `by` (the send that claimed it
    /// failed); a settled claim, or another's, stays.
    async fn release(&self, key: &IdempotencyKey, by: Claimant) -> Result<(), BackendError>;
}
