//! The presence store: which connections of which users are on which gateway node, and
//! which nodes are alive. Redis in a cluster, a map in `--standalone`.
//!
//! # Leases
//! A node writes presence under a [`Lease`]: its node id and an [`Epoch`], one
//! incarnation of the node. The epoch is chosen at start-up and again whenever the node
//! learns that its liveness lapsed ([`Beat::Lapsed`]). The node's liveness mark holds
//! the epoch of its current incarnation, and an entry counts only under that epoch:
//! - a restarted node (same id, new epoch) hides its previous incarnation's entries at
//!   its first beat, instead of counting them as ghosts until they expire;
//! - entries pruned while the mark had lapsed (a slow beat, a Redis hiccup) are written
//!   again by the node under a new epoch, and a prune decided before that can never
//!   remove them: it removes an entry only if it still holds the (node, epoch) seen.
//!
//! # Contract
//! - An entry (user, connection → node, epoch) counts only while its node's liveness
//!   mark is fresh ([`PresenceStore::beat`] with a TTL) and holds the entry's epoch. A
//!   SIGKILLed node's entries stop counting within that TTL without anyone deleting
//!   them; lookups may prune entries they found not counting.
//! - Entries themselves expire after the store's entry TTL unless
//!   [`PresenceStore::refresh`] is called for their users: a node refreshes its users
//!   well within that TTL.
//! - `add` and `remove` are idempotent. `lookup` answers all users in one round trip
//!   (two when it has to check a node's mark).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::BackendError;
use crate::ids::{ConnId, InvalidId, NodeId, UserId};

pub mod memory;
pub mod redis;

pub use memory::MemoryPresence;
pub use redis::RedisPresence;

/// One incarnation of a node in the presence store: a random 64 bits, written as 16
/// lowercase hex digits (the only form [`Epoch::parse`] accepts, so equal text means
/// equal epochs).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u64);

impl Epoch {
    pub fn generate() -> Self {
        Self(rand::random())
    }

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let canonical = s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        match canonical.then(|| u64::from_str_radix(s, 16)) {
            Some(Ok(v)) => Ok(Self(v)),
            _ => Err(InvalidId {
                reason: "must be 16 lowercase hex digits",
            }),
        }
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Epoch {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A node's incarnation in the presence store: chosen at start-up and again whenever
/// the node learns its liveness lapsed. Entries count only under the epoch that the
/// node's liveness mark currently holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub node: NodeId,
    pub epoch: Epoch,
}

impl Lease {
    /// A new incarnation of `node`.
    pub fn new(node: NodeId) -> Self {
        Self {
            node,
            epoch: Epoch::generate(),
        }
    }
}

/// What a [`PresenceStore::beat`] found before it renewed the mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// The mark held this lease's epoch: the node's entries counted all along.
    Kept,
    /// The mark was missing, expired or held another epoch: the node's entries did not
    /// count for a while and lookups may have pruned some of them. (A node's first beat
    /// is always `Lapsed`.) The node should take a new epoch, beat with it and add its
    /// connections again under it; re-adding under the old epoch could be undone by a
    /// prune decided during the lapse.
    Lapsed,
}

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
    /// Record that connection `conn` of `user` is held by the lease's node, under its
    /// epoch: the entry counts while the node's mark holds that epoch.
    async fn add(&self, lease: &Lease, user: &UserId, conn: ConnId) -> Result<(), BackendError>;

    /// Forget one connection.
    async fn remove(&self, user: &UserId, conn: ConnId) -> Result<(), BackendError>;

    /// Set the node's liveness mark to the lease's epoch for `ttl`, and say whether it
    /// held that epoch until now ([`Beat::Kept`]) or not ([`Beat::Lapsed`]).
    async fn beat(&self, lease: &Lease, ttl: Duration) -> Result<Beat, BackendError>;

    /// Extend the entry TTL of these users' presence (a node calls this for its users).
    async fn refresh(&self, users: &[UserId]) -> Result<(), BackendError>;

    /// A node leaves cleanly: drop its liveness mark (if it still holds the lease's
    /// epoch: a newer incarnation keeps its own) and these entries.
    async fn remove_node(
        &self,
        lease: &Lease,
        entries: &[(UserId, ConnId)],
    ) -> Result<(), BackendError>;

    /// The live connections of each user, in the order asked; one round trip while the
    /// nodes' marks are known (see the implementations).
    async fn lookup(&self, users: &[UserId]) -> Result<Vec<UserPresence>, BackendError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_print_and_parse_as_16_lowercase_hex() {
        let e = Epoch::generate();
        assert_eq!(e.to_string().len(), 16);
        assert_eq!(e.to_string().parse::<Epoch>().unwrap(), e);
        assert_eq!(Epoch(0xab).to_string(), "00000000000000ab");
        for bad in [
            "",
            "ab",
            "00000000000000AB",
            "+000000000000000",
            "00000000000000abc",
            "0000000g00000000",
        ] {
            assert!(Epoch::parse(bad).is_err(), "{bad:?}");
        }
    }
}
