//! The presence store: which connections of which users are on which gateway node, and
//! which nodes are alive. Redis in a cluster, a map in `--standalone`.
//!
//! # Contract
//! - An entry (user, connection → node) counts only while its node's liveness mark is
//!   fresh ([`PresenceStore::beat`] with a TTL). A SIGKILLed node's entries stop counting
//!   within that TTL without anyone deleting them; lookups may prune them lazily.
//! - Entries themselves expire after the store's entry TTL unless
//!   [`PresenceStore::refresh`] is called for their users: a node refreshes its users
//!   well within that TTL.
//! - `add` and `remove` are idempotent. `lookup` answers all users in one round trip.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::BackendError;
use crate::ids::{ConnId, NodeId, UserId};

pub mod memory;
pub mod redis;

pub use memory::MemoryPresence;
pub use redis::RedisPresence;

/// One user's live connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPresence {
    pub user: UserId,
    /// Connections on live nodes, sorted by connection id.
    pub connections: Vec<(ConnId, NodeId)>,
}

impl UserPresence {
    pub fn online(&self) -> bool {
        !self.connections.is_empty()
    }

    /// Distinct nodes, sorted.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.connections.iter().map(|(_, n)| n.clone()).collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }
}

#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Record that connection `conn` of `user` is held by `node`.
    async fn add(&self, node: &NodeId, user: &UserId, conn: ConnId) -> Result<(), BackendError>;

    /// Forget one connection.
    async fn remove(&self, user: &UserId, conn: ConnId) -> Result<(), BackendError>;

    /// Mark `node` alive for `ttl`.
    async fn beat(&self, node: &NodeId, ttl: Duration) -> Result<(), BackendError>;

    /// Extend the entry TTL of these users' presence (a node calls this for its users).
    async fn refresh(&self, users: &[UserId]) -> Result<(), BackendError>;

    /// A node leaves cleanly: drop its liveness mark and these entries.
    async fn remove_node(
        &self,
        node: &NodeId,
        entries: &[(UserId, ConnId)],
    ) -> Result<(), BackendError>;

    /// The live connections of each user, in the order asked; one round trip.
    async fn lookup(&self, users: &[UserId]) -> Result<Vec<UserPresence>, BackendError>;
}
