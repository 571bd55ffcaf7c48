//! Persistent sessions (CONNECT with clean session off): what a client subscribed to,
//! kept on this node for its next CONNECT with the same client id and user.
//!
//! Kept in memory, bounded: at most [`MAX_SESSIONS`], each for [`SESSION_TTL`] after its
//! connection ended; beyond the cap the oldest goes. A session is not shared between
//! nodes and does not outlive the process: a device that reconnects elsewhere gets
//! `session present = 0` and subscribes again. The inbox, not the session, holds the
//! notifications themselves, so nothing stored is lost either way.

use std::collections::HashMap;
use std::time::Duration;

use kurir_backends::UserId;
use parking_lot::Mutex;
use tokio::time::Instant;

/// Persistent sessions one node keeps.
pub const MAX_SESSIONS: usize = 10_000;

/// How long a persistent session is kept after its connection ended.
pub const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);

/// Longest client id kept (MQTT allows 65535 bytes; a device's is short).
pub const MAX_CLIENT_ID: usize = 256;

/// What a persistent session remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    /// The granted QoS of `kurir/user`, when subscribed.
    pub user_qos: Option<u8>,
    /// Topic names subscribed as `kurir/topic/<name>`.
    pub topics: Vec<String>,
}

/// A session is found by its user and client id.
type Key = (UserId, Box<str>);

#[derive(Default)]
pub struct Sessions {
    /// Each with when its connection ended.
    map: Mutex<HashMap<Key, (Saved, Instant)>>,
}

impl Sessions {
    /// The session of `client_id` for `user`, taken out (its connection owns it now).
    pub fn take(&self, user: &UserId, client_id: &str) -> Option<Saved> {
        let (saved, at) = self
            .map
            .lock()
            .remove(&(user.clone(), Box::from(client_id)))?;
        (at.elapsed() < SESSION_TTL).then_some(saved)
    }

    /// Keep `saved` for the next connection of `client_id`.
    pub fn keep(&self, user: UserId, client_id: &str, saved: Saved) {
        if client_id.len() > MAX_CLIENT_ID {
            return;
        }
        let mut map = self.map.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, (_, at)| at.elapsed() < SESSION_TTL);
        }
        if map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert((user, Box::from(client_id)), (saved, Instant::now()));
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_session_is_kept_for_its_user_and_client_id_until_its_ttl() {
        let s = Sessions::default();
        let (alice, bob) = (
            UserId::parse("alice").unwrap(),
            UserId::parse("bob").unwrap(),
        );
        let saved = Saved {
            user_qos: Some(1),
            topics: vec!["news".into()],
        };
        s.keep(alice.clone(), "dev", saved.clone());
        assert_eq!(s.take(&bob, "dev"), None, "another user's");
        assert_eq!(s.take(&alice, "dev"), Some(saved.clone()));
        assert_eq!(s.take(&alice, "dev"), None, "taken");
        s.keep(alice.clone(), "dev", saved);
        tokio::time::advance(SESSION_TTL).await;
        assert_eq!(s.take(&alice, "dev"), None, "expired");
        assert!(s.is_empty());
    }
}
