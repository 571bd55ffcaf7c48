//! The one place that builds Redis keys and NATS subjects. Everything is prefixed by the
//! namespace (`KURIR_NAMESPACE`), which gives tenancy and test isolation.
//!
//! Per-user Redis keys wrap the user id in `{…}` so that, on Redis Cluster, all keys of a
//! user share a hash slot (the inbox script touches two of them atomically).

use std::fmt;
use std::sync::Arc;

use crate::ids::{IdempotencyKey, InvalidId, NodeId, Topic, UserId};

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Namespace(Arc<str>);

impl Namespace {
    /// 1..=64 characters of `[A-Za-z0-9_-]` (one NATS token, no `:` in Redis keys).
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        NodeId::parse(s)
            .map(|n| Self(Arc::from(n.as_str())))
            .map_err(|_| InvalidId {
                reason: "must be 1 to 64 characters of letters, digits, '-' and '_'",
            })
    }

    /// A fresh `test-<uuid>` namespace, for isolating tests on shared servers.
    pub fn random_for_test() -> Self {
        Self(Arc::from(format!("test-{}", uuid::Uuid::new_v4().simple())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `kurir.<ns>.node.<node_id>`: targeted deliveries, disconnects and probes for one gateway.
    pub fn node_subject(&self, node: &NodeId) -> String {
        format!("kurir.{}.node.{}", self.0, node)
    }

    /// `kurir.<ns>.topic.<topic>`.
    pub fn topic_subject(&self, topic: &Topic) -> String {
        format!("kurir.{}.topic.{}", self.0, topic)
    }

    /// `kurir.<ns>.broadcast`.
    pub fn broadcast_subject(&self) -> String {
        format!("kurir.{}.broadcast", self.0)
    }

    /// `kurir.<ns>.receipts`.
    pub fn receipts_subject(&self) -> String {
        format!("kurir.{}.receipts", self.0)
    }

    /// `kurir:<ns>:presence:{<user>}`: hash of connection id → node id.
    pub fn presence_key(&self, user: &UserId) -> String {
        format!("kurir:{}:presence:{{{}}}", self.0, user)
    }

    /// `kurir:<ns>:node:<node_id>`: node liveness, with a TTL.
    pub fn node_key(&self, node: &NodeId) -> String {
        format!("kurir:{}:node:{}", self.0, node)
    }

    /// `kurir:<ns>:inbox:{<user>}`: the user's stored notifications (a Redis Stream).
    pub fn inbox_key(&self, user: &UserId) -> String {
        format!("kurir:{}:inbox:{{{}}}", self.0, user)
    }

    /// `kurir:<ns>:inbox-ids:{<user>}`: notification id → stream entry id, so an ack by
    /// notification id finds its entry in O(1). Same slot as the inbox.
    pub fn inbox_index_key(&self, user: &UserId) -> String {
        format!("kurir:{}:inbox-ids:{{{}}}", self.0, user)
    }

    /// `kurir:<ns>:devices:{<user>}`: hash of device id → the user's registered device.
    pub fn devices_key(&self, user: &UserId) -> String {
        format!("kurir:{}:devices:{{{}}}", self.0, user)
    }

    /// `kurir:<ns>:device-order:{<user>}`: sorted set of device id → unix ms of its latest
    /// registration or push. Same slot as the devices.
    pub fn device_order_key(&self, user: &UserId) -> String {
        format!("kurir:{}:device-order:{{{}}}", self.0, user)
    }

    /// `kurir:<ns>:due:{due}`: the due-queue, a sorted set of item id → unix ms when it is
    /// due (or when its lease ends). The hash tag keeps it in the slot of its items.
    pub fn due_queue_key(&self) -> String {
        format!("kurir:{}:due:{{due}}", self.0)
    }

    /// `kurir:<ns>:due-items:{due}`: hash of `p:<id>` → payload, `a:<id>` → claims so
    /// far, `l:<id>` → lease end (unix ms) of the due-queue's items.
    pub fn due_items_key(&self) -> String {
        format!("kurir:{}:due-items:{{due}}", self.0)
    }

    /// `kurir:<ns>:idem:<scope>:<key>`: the claim of an idempotency key, per caller
    /// scope (the scope has no `:`, so two scopes never share a name).
    pub fn idempotency_key(&self, key: &IdempotencyKey) -> String {
        format!("kurir:{}:idem:{}:{}", self.0, key.scope(), key.key())
    }

    /// `kurir:<ns>:settings`: a hash of the settings every process of the namespace must
    /// agree on (`inbox_capacity`), written by whichever starts first.
    pub fn settings_key(&self) -> String {
        format!("kurir:{}:settings", self.0)
    }

    /// Pattern matching every Redis key of this namespace (for test clean-up).
    pub fn key_pattern(&self) -> String {
        format!("kurir:{}:*", self.0)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_the_design() {
        let ns = Namespace::parse("acme").unwrap();
        let u = UserId::parse("alice").unwrap();
        let n = NodeId::parse("gw-1").unwrap();
        assert_eq!(ns.node_subject(&n), "kurir.acme.node.gw-1");
        assert_eq!(
            ns.topic_subject(&Topic::parse("a.b").unwrap()),
            "kurir.acme.topic.a.b"
        );
        assert_eq!(ns.broadcast_subject(), "kurir.acme.broadcast");
        assert_eq!(ns.receipts_subject(), "kurir.acme.receipts");
        assert_eq!(ns.presence_key(&u), "kurir:acme:presence:{alice}");
        assert_eq!(ns.node_key(&n), "kurir:acme:node:gw-1");
        assert_eq!(ns.inbox_key(&u), "kurir:acme:inbox:{alice}");
        assert_eq!(ns.devices_key(&u), "kurir:acme:devices:{alice}");
        assert_eq!(ns.device_order_key(&u), "kurir:acme:device-order:{alice}");
        assert_eq!(ns.due_queue_key(), "kurir:acme:due:{due}");
        assert_eq!(ns.due_items_key(), "kurir:acme:due-items:{due}");
        assert_eq!(
            ns.idempotency_key(&IdempotencyKey::new("0123456789abcdef", "k").unwrap()),
            "kurir:acme:idem:0123456789abcdef:k"
        );
        assert!(IdempotencyKey::new("a:b", "k").is_err());
        assert!(IdempotencyKey::new("", "k").is_err());
        assert!(Namespace::parse("a.b").is_err());
        assert!(Namespace::parse("a:b").is_err());
    }
}
