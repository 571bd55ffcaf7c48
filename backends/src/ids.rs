//! Identifiers, validated once at the edge. A value of one of these types is safe to put
//! in a Redis key or a NATS subject.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use thiserror::Error;

/// Why a string was refused as an id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{reason}")]
pub struct InvalidId {
    pub reason: &'static str,
}

const fn invalid(reason: &'static str) -> InvalidId {
    InvalidId { reason }
}

/// Longest accepted user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 128;
/// Longest accepted topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;
/// Longest accepted node id, in bytes.
pub const MAX_NODE_ID_LEN: usize = 64;

fn subject_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// An application's user id (the JWT `sub`). Any printable text without whitespace or
/// braces (braces would break the Redis Cluster hash tag around it), up to 128 bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

impl UserId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if s.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if s.len() > MAX_USER_ID_LEN {
            return Err(invalid("must be at most 128 bytes"));
        }
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
        {
            return Err(invalid(
                "must not contain whitespace, control characters or braces",
            ));
        }
        Ok(Self(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by user id can be searched with the `&str` off the wire, without building
/// (and allocating) a `UserId`: both hash and compare as the text.
impl std::borrow::Borrow<str> for UserId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A gateway node id: 1..=64 characters of `[A-Za-z0-9_-]`, so it is one NATS token.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if s.is_empty() || s.len() > MAX_NODE_ID_LEN {
            return Err(invalid("must be 1 to 64 characters"));
        }
        if !s.chars().all(subject_token_char) {
            return Err(invalid("may contain only letters, digits, '-' and '_'"));
        }
        Ok(Self(Arc::from(s)))
    }

    /// `<hostname>-<6 random hex>`, with the hostname reduced to subject-safe characters.
    pub fn generate() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "kurir".into());
        let mut base: String = host
            .trim()
            .chars()
            .map(|c| if subject_token_char(c) { c } else { '-' })
            .take(MAX_NODE_ID_LEN - 7)
            .collect();
        if base.is_empty() {
            base.push_str("kurir");
        }
        let suffix: u32 = rand::random::<u32>() & 0x00ff_ffff;
        Self(Arc::from(format!("{base}-{suffix:06x}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A topic: dot-separated segments of `[A-Za-z0-9_-]`, 1..=128 bytes, e.g. `orders.eu`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if s.is_empty() || s.len() > MAX_TOPIC_LEN {
            return Err(invalid("must be 1 to 128 characters"));
        }
        if s.split('.')
            .any(|seg| seg.is_empty() || !seg.chars().all(subject_token_char))
        {
            return Err(invalid(
                "must be dot-separated segments of letters, digits, '-' and '_'",
            ));
        }
        Ok(Self(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a JWT `topics` claim entry allows this topic: an exact name, `prefix.*`
    /// (any topic strictly below `prefix`), or `*` (every topic).
    pub fn allowed_by(&self, pattern: &str) -> bool {
        if pattern == "*" {
            return true;
        }
        match pattern.strip_suffix(".*") {
            Some(prefix) => self
                .0
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.') && rest.len() > 1),
            None => &*self.0 == pattern,
        }
    }
}

/// One WebSocket connection, unique across the cluster (random 64 bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    pub fn generate() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for ConnId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16)
            .map(Self)
            .map_err(|_| invalid("must be 16 hex digits"))
    }
}

/// A notification id: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NotificationId(pub uuid::Uuid);

impl NotificationId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        uuid::Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| invalid("must be a UUID"))
    }
}

impl fmt::Display for NotificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for NotificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

macro_rules! text_id {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
        impl FromStr for $t {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    )*};
}
text_id!(UserId, NodeId, Topic);

/// An idempotency key as stored: the caller's scope (a stable, non-secret name of its
/// credential) and the key it chose. The same key in two scopes names two claims.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    scope: String,
    key: String,
}

impl IdempotencyKey {
    /// `scope`: 1..=64 characters of `[A-Za-z0-9_-]`, so it cannot run into the key in
    /// the Redis key name. `key`: what the caller chose, validated at the edge.
    ///
    /// # Errors
    /// A scope of another shape.
    pub fn new(scope: &str, key: &str) -> Result<Self, InvalidId> {
        let valid = !scope.is_empty()
            && scope.len() <= 64
            && scope
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(InvalidId {
                reason: "scope must be 1 to 64 characters of letters, digits, '-' and '_'",
            });
        }
        Ok(Self {
            scope: scope.to_owned(),
            key: key.to_owned(),
        })
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        assert!(UserId::parse("alice@example.com").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a b").is_err());
        assert!(UserId::parse("a{b}").is_err());
        assert!(UserId::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn topics_and_patterns() {
        let t = Topic::parse("orders.eu").unwrap();
        assert!(t.allowed_by("orders.*"));
        assert!(t.allowed_by("orders.eu"));
        assert!(t.allowed_by("*"));
        assert!(!t.allowed_by("orders"));
        assert!(!t.allowed_by("order.*"));
        assert!(!Topic::parse("orders").unwrap().allowed_by("orders.*"));
        assert!(Topic::parse("a..b").is_err());
        assert!(Topic::parse("a.*").is_err());
        assert!(Topic::parse("a b").is_err());
    }

    #[test]
    fn node_ids() {
        let n = NodeId::generate();
        assert!(NodeId::parse(n.as_str()).is_ok(), "{n}");
        assert!(NodeId::parse("gw.1").is_err());
    }

    #[test]
    fn conn_id_roundtrip() {
        let c = ConnId::generate();
        assert_eq!(c.to_string().parse::<ConnId>().unwrap(), c);
    }
}
