//! Presence in one process (`--standalone`, fast tests), with the Redis store's
//! semantics: per-user entries (connection → node, epoch) that expire as a whole after
//! the entry TTL unless refreshed, and node marks (epoch, liveness deadline) that decide
//! which entries count. A lookup drops the entries it finds not counting; here that is
//! one step under the shard lock, so no re-added entry can be lost to it.
//!
//! Deadlines are [`tokio::time::Instant`]s, so tests can drive them with
//! `tokio::time::pause()` and `advance()`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Beat, Epoch, Lease, PresenceStore, UserPresence};
use crate::error::BackendError;
use crate::ids::{ConnId, NodeId, UserId};
use crate::sharded::Sharded;

pub struct MemoryPresence {
    entry_ttl: Duration,
    /// Node → the epoch its mark holds and the end of its liveness.
    nodes: Mutex<HashMap<NodeId, Mark>>,
    users: Sharded<UserId, Entries>,
}

#[derive(Clone, Copy)]
struct Mark {
    epoch: Epoch,
    until: Instant,
}

/// One user's connections; the whole set expires together, like the Redis hash.
struct Entries {
    conns: HashMap<ConnId, (NodeId, Epoch)>,
    expires: Instant,
}

impl Entries {
    fn expired(&self, now: Instant) -> bool {
        self.expires <= now
    }
}

impl MemoryPresence {
    /// `entry_ttl`: how long a user's entries live without [`PresenceStore::refresh`].
    pub fn new(entry_ttl: Duration) -> Self {
        Self {
            entry_ttl,
            nodes: Mutex::new(HashMap::new()),
            users: Sharded::new(),
        }
    }

    fn sweep(&self) {
        let now = Instant::now();
        self.users.wrote(|e| e.expired(now));
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn add(&self, lease: &Lease, user: &UserId, conn: ConnId) -> Result<(), BackendError> {
        let now = Instant::now();
        {
            let mut users = self.users.shard(user);
            let entries = users.entry(user.clone()).or_insert_with(|| Entries {
                conns: HashMap::new(),
                expires: now,
            });
            if entries.expired(now) {
                entries.conns.clear();
            }
            entries
                .conns
                .insert(conn, (lease.node.clone(), lease.epoch));
            entries.expires = now + self.entry_ttl;
        }
        self.sweep();
        Ok(())
    }

    async fn remove(&self, user: &UserId, conn: ConnId) -> Result<(), BackendError> {
        let mut users = self.users.shard(user);
        if let Some(entries) = users.get_mut(user) {
            entries.conns.remove(&conn);
            if entries.conns.is_empty() {
                users.remove(user);
            }
        }
        Ok(())
    }

    async fn beat(&self, lease: &Lease, ttl: Duration) -> Result<Beat, BackendError> {
        let now = Instant::now();
        let mut nodes = self.nodes.lock();
        nodes.retain(|_, mark| mark.until > now);
        let mark = Mark {
            epoch: lease.epoch,
            until: now + ttl,
        };
        Ok(match nodes.insert(lease.node.clone(), mark) {
            Some(previous) if previous.epoch == lease.epoch => Beat::Kept,
            _ => Beat::Lapsed,
        })
    }

    async fn refresh(&self, users: &[UserId]) -> Result<(), BackendError> {
        let now = Instant::now();
        for user in users {
            let mut shard = self.users.shard(user);
            if let Some(entries) = shard.get_mut(user) {
                if entries.expired(now) {
                    shard.remove(user);
                } else {
                    entries.expires = now + self.entry_ttl;
                }
            }
        }
        Ok(())
    }

    async fn remove_node(
        &self,
        lease: &Lease,
        entries: &[(UserId, ConnId)],
    ) -> Result<(), BackendError> {
        {
            let mut nodes = self.nodes.lock();
            if nodes
                .get(&lease.node)
                .is_some_and(|m| m.epoch == lease.epoch)
            {
                nodes.remove(&lease.node);
            }
        }
        for (user, conn) in entries {
            self.remove(user, *conn).await?;
        }
        Ok(())
    }

    async fn lookup(&self, users: &[UserId]) -> Result<Vec<UserPresence>, BackendError> {
        let now = Instant::now();
        let marks: HashMap<NodeId, Mark> = self.nodes.lock().clone();
        let counts = |node: &NodeId, epoch: Epoch| {
            marks
                .get(node)
                .is_some_and(|m| m.epoch == epoch && m.until > now)
        };
        Ok(users
            .iter()
            .map(|user| {
                let mut shard = self.users.shard(user);
                let mut connections = Vec::new();
                if let Some(entries) = shard.get_mut(user) {
                    if entries.expired(now) {
                        shard.remove(user);
                    } else {
                        // Entries not counting are pruned here, as the Redis store does.
                        entries
                            .conns
                            .retain(|_, (node, epoch)| counts(node, *epoch));
                        connections.extend(entries.conns.iter().map(|(c, (n, _))| (*c, n.clone())));
                        if entries.conns.is_empty() {
                            shard.remove(user);
                        }
                    }
                }
                connections.sort_unstable_by_key(|(conn, _)| *conn);
                UserPresence {
                    user: user.clone(),
                    connections,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Lease, UserId) {
        (
            Lease {
                node: NodeId::parse("gw-1").unwrap(),
                epoch: Epoch(1),
            },
            UserId::parse("alice").unwrap(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_ends_at_the_beat_ttl() {
        let store = MemoryPresence::new(Duration::from_secs(3600));
        let (lease, user) = ids();
        let ttl = Duration::from_secs(30);
        assert_eq!(store.beat(&lease, ttl).await.unwrap(), Beat::Lapsed);
        store.add(&lease, &user, ConnId(1)).await.unwrap();
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(store.lookup(std::slice::from_ref(&user)).await.unwrap()[0].online());
        assert_eq!(store.beat(&lease, ttl).await.unwrap(), Beat::Kept);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(!store.lookup(std::slice::from_ref(&user)).await.unwrap()[0].online());
        // Pruned: a later beat does not bring the entry back, and says so.
        assert_eq!(store.beat(&lease, ttl).await.unwrap(), Beat::Lapsed);
        assert!(!store.lookup(std::slice::from_ref(&user)).await.unwrap()[0].online());
        // The node's answer to `Lapsed`: a new epoch, and its connections again.
        let lease = Lease::new(lease.node);
        store.beat(&lease, ttl).await.unwrap();
        store.add(&lease, &user, ConnId(1)).await.unwrap();
        assert!(store.lookup(&[user]).await.unwrap()[0].online());
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_unless_refreshed() {
        let store = MemoryPresence::new(Duration::from_secs(60));
        let (lease, user) = ids();
        store.beat(&lease, Duration::from_secs(3600)).await.unwrap();
        store.add(&lease, &user, ConnId(1)).await.unwrap();
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(40)).await;
            store.refresh(std::slice::from_ref(&user)).await.unwrap();
        }
        assert!(store.lookup(std::slice::from_ref(&user)).await.unwrap()[0].online());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!store.lookup(&[user]).await.unwrap()[0].online());
        assert_eq!(store.users.len(), 0);
    }
}
