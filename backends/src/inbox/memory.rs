//! The inbox in one process (`--standalone`, fast tests), with the Redis store's
//! semantics: per-user entries ordered by `<ms>-<seq>` cursors, capped at the capacity
//! (oldest trimmed first), expired entries never returned, each inbox dropped as a whole
//! after its longest TTL, idempotency claims that are pending, then settled, and expire.
//!
//! Cursors take their milliseconds from the wall clock, like Redis stream ids, and stay
//! strictly increasing when it stalls or steps back. Inbox and claim lifetimes are
//! [`tokio::time::Instant`]s, so tests can drive them with `tokio::time::pause()`.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::{
    now_ms, Appended, Claim, Claimant, Cursor, IdempotencyKey, Inbox, NewEntry, StoredEntry,
    EXPIRED_GRACE,
};
use crate::error::BackendError;
use crate::ids::{NotificationId, UserId};
use crate::sharded::Sharded;

/// `(ms, seq)`, the ordering key of a [`Cursor`].
type Position = (u64, u64);

pub struct MemoryInbox {
    capacity: usize,
    users: Sharded<UserId, UserInbox>,
    claims: Sharded<IdempotencyKey, Held>,
}

struct UserInbox {
    entries: BTreeMap<Position, Entry>,
    index: HashMap<NotificationId, Position>,
    /// Collapse key → the id of the entry that holds it.
    collapsed: HashMap<String, NotificationId>,
    last: Position,
    expires: Instant,
}

struct Entry {
    id: NotificationId,
    expires_at: i64,
    payload: Bytes,
    collapse_key: Option<String>,
}

struct Held {
    by: Claimant,
    /// `false` while pending.
    settled: bool,
    until: Instant,
}

fn cursor(p: Position) -> Cursor {
    Cursor(format!("{}-{}", p.0, p.1))
}

impl UserInbox {
    fn new(now: Instant) -> Self {
        Self {
            entries: BTreeMap::new(),
            index: HashMap::new(),
            collapsed: HashMap::new(),
            last: (0, 0),
            expires: now,
        }
    }

    /// Remove the entry of `id`, and its collapse key if that still names it.
    fn remove(&mut self, id: NotificationId) -> bool {
        let Some(p) = self.index.remove(&id) else {
            return false;
        };
        let Some(entry) = self.entries.remove(&p) else {
            return false;
        };
        if let Some(key) = entry.collapse_key {
            if self.collapsed.get(&key) == Some(&id) {
                self.collapsed.remove(&key);
            }
        }
        true
    }

    /// The next position after `last`, like Redis' `XADD *`.
    fn next_position(&mut self, wall_ms: u64) -> Position {
        let next = if wall_ms > self.last.0 {
            (wall_ms, 0)
        } else {
            match self.last.1.checked_add(1) {
                Some(seq) => (self.last.0, seq),
                None => (self.last.0 + 1, 0),
            }
        };
        self.last = next;
        next
    }
}

impl MemoryInbox {
    /// `capacity`: entries kept per user (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            users: Sharded::new(),
            claims: Sharded::new(),
        }
    }
}

#[async_trait]
impl Inbox for MemoryInbox {
    async fn append(
        &self,
        users: &[UserId],
        entry: &NewEntry,
    ) -> Result<Vec<Appended>, BackendError> {
        let now = Instant::now();
        let wall = now_ms();
        let ttl = Duration::from_millis(u64::try_from(entry.expires_at - wall).unwrap_or(0).max(1));
        let mut cursors = Vec::with_capacity(users.len());
        for user in users {
            let mut shard = self.users.shard(user);
            let inbox = shard
                .entry(user.clone())
                .or_insert_with(|| UserInbox::new(now));
            if inbox.expires <= now {
                *inbox = UserInbox::new(now);
            }
            // Appending an id the inbox still holds stores nothing twice.
            if let Some(&p) = inbox.index.get(&entry.id) {
                cursors.push(Appended {
                    cursor: cursor(p),
                    dropped: Vec::new(),
                });
                continue;
            }
            if let Some(key) = entry.collapse_key() {
                if let Some(older) = inbox.collapsed.insert(key.to_owned(), entry.id) {
                    inbox.remove(older);
                    inbox.collapsed.insert(key.to_owned(), entry.id);
                }
            }
            let p = inbox.next_position(u64::try_from(wall).unwrap_or(0));
            inbox.entries.insert(
                p,
                Entry {
                    id: entry.id,
                    expires_at: entry.expires_at,
                    payload: entry.payload.clone(),
                    collapse_key: entry.collapse_key().map(str::to_owned),
                },
            );
            inbox.index.insert(entry.id, p);
            let mut dropped = Vec::new();
            while inbox.entries.len() > self.capacity {
                if let Some((oldest, exp)) = inbox
                    .entries
                    .first_key_value()
                    .map(|(_, e)| (e.id, e.expires_at))
                {
                    inbox.remove(oldest);
                    // An entry past its expiry was not pushed out, it was over.
                    if exp > wall {
                        dropped.push(oldest);
                    }
                }
            }
            inbox.expires = inbox.expires.max(now + ttl + EXPIRED_GRACE);
            cursors.push(Appended {
                cursor: cursor(p),
                dropped,
            });
        }
        self.users.wrote(|inbox| inbox.expires <= now);
        Ok(cursors)
    }

    async fn pending(
        &self,
        user: &UserId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, BackendError> {
        let now = Instant::now();
        let wall = now_ms();
        let mut shard = self.users.shard(user);
        let Some(inbox) = shard.get(user) else {
            return Ok(Vec::new());
        };
        if inbox.expires <= now {
            shard.remove(user);
            return Ok(Vec::new());
        }
        let from = after.map_or(Bound::Unbounded, |c| Bound::Excluded(c.key()));
        Ok(inbox
            .entries
            .range((from, Bound::Unbounded))
            .filter(|(_, e)| e.expires_at > wall)
            .take(limit)
            .map(|(p, e)| StoredEntry {
                cursor: cursor(*p),
                id: e.id,
                expires_at: e.expires_at,
                payload: e.payload.clone(),
            })
            .collect())
    }

    async fn holds(
        &self,
        users: &[UserId],
        id: NotificationId,
    ) -> Result<Vec<Option<i64>>, BackendError> {
        let now = Instant::now();
        Ok(users
            .iter()
            .map(|user| {
                let shard = self.users.shard(user);
                let inbox = shard.get(user).filter(|inbox| inbox.expires > now)?;
                let p = inbox.index.get(&id)?;
                inbox.entries.get(p).map(|e| e.expires_at)
            })
            .collect())
    }

    async fn ack(&self, user: &UserId, id: NotificationId) -> Result<bool, BackendError> {
        let mut shard = self.users.shard(user);
        let Some(inbox) = shard.get_mut(user) else {
            return Ok(false);
        };
        Ok(inbox.remove(id))
    }

    async fn claim(
        &self,
        key: &IdempotencyKey,
        by: Claimant,
        pending_ttl: Duration,
    ) -> Result<Claim, BackendError> {
        let now = Instant::now();
        let claim = {
            let mut shard = self.claims.shard(key);
            match shard.get(key) {
                Some(held) if held.until > now && held.by.id == by.id => Claim::New,
                Some(held) if held.until > now && held.by.fingerprint != by.fingerprint => {
                    Claim::OtherRequest
                }
                Some(held) if held.until > now && held.settled => Claim::Existing(held.by.id),
                Some(held) if held.until > now => Claim::InProgress(held.by.id),
                _ => {
                    shard.insert(
                        key.clone(),
                        Held {
                            by,
                            settled: false,
                            until: now + pending_ttl,
                        },
                    );
                    Claim::New
                }
            }
        };
        self.claims.wrote(|held| held.until <= now);
        Ok(claim)
    }

    async fn settle(
        &self,
        key: &IdempotencyKey,
        by: Claimant,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let now = Instant::now();
        let mut shard = self.claims.shard(key);
        match shard.get_mut(key) {
            Some(held) if held.until > now && held.by == by => {
                held.settled = true;
                held.until = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, key: &IdempotencyKey, by: Claimant) -> Result<(), BackendError> {
        let now = Instant::now();
        let mut shard = self.claims.shard(key);
        if shard
            .get(key)
            .is_some_and(|held| held.by == by && !held.settled && held.until > now)
        {
            shard.remove(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ttl: Duration) -> NewEntry {
        NewEntry {
            id: NotificationId::generate(),
            expires_at: now_ms() + i64::try_from(ttl.as_millis()).unwrap(),
            payload: Bytes::from_static(b"x"),
            collapse_key: None,
        }
    }

    #[test]
    fn positions_increase_when_the_clock_stalls_or_steps_back() {
        let mut inbox = UserInbox::new(Instant::now());
        assert_eq!(inbox.next_position(10), (10, 0));
        assert_eq!(inbox.next_position(10), (10, 1));
        assert_eq!(inbox.next_position(9), (10, 2));
        assert_eq!(inbox.next_position(11), (11, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_inbox_is_dropped_after_its_longest_ttl() {
        let inbox = MemoryInbox::new(10);
        let user = UserId::parse("alice").unwrap();
        inbox
            .append(std::slice::from_ref(&user), &entry(Duration::from_secs(60)))
            .await
            .unwrap();
        // Past the entry's TTL it is no longer delivered but still known (an unacked
        // expiry); past the grace the inbox is gone.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(inbox.users.len(), 1);
        tokio::time::advance(super::super::EXPIRED_GRACE).await;
        assert!(inbox.pending(&user, None, 10).await.unwrap().is_empty());
        assert_eq!(inbox.users.len(), 0);
    }

    fn claimant() -> Claimant {
        Claimant {
            id: NotificationId::generate(),
            fingerprint: super::super::Fingerprint([7; 16]),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn claims_expire_pending_then_settled() {
        let inbox = MemoryInbox::new(10);
        let k = &IdempotencyKey::new("scope", "k").unwrap();
        let (a, b, c) = (claimant(), claimant(), claimant());
        let pending = Duration::from_secs(30);
        let settled = Duration::from_secs(3600);
        assert_eq!(inbox.claim(k, a, pending).await.unwrap(), Claim::New);
        assert_eq!(
            inbox.claim(k, b, pending).await.unwrap(),
            Claim::InProgress(a.id)
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(inbox.claim(k, b, pending).await.unwrap(), Claim::New);
        // Settling extends the claim past its pending TTL.
        assert!(inbox.settle(k, b, settled).await.unwrap());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            inbox.claim(k, c, pending).await.unwrap(),
            Claim::Existing(b.id)
        );
        tokio::time::advance(settled).await;
        assert_eq!(inbox.claim(k, c, pending).await.unwrap(), Claim::New);
        // A claim that expired cannot be settled any more.
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(!inbox.settle(k, c, settled).await.unwrap());
    }
}
