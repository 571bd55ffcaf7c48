//! Client ids on this node: the live connection of each (user, client id), and the
//! persistent sessions (CONNECT with clean session off): what a client subscribed to,
//! kept for its next CONNECT with the same client id and user.
//!
//! A new connection with the client id of a live one takes over (MQTT 3.1.1 §3.1.4): the
//! old one is closed, and waited for (at most [`TAKEOVER_WAIT`]) so that the session it
//! keeps is the one the new connection finds.
//!
//! Kept in memory, bounded: at most [`MAX_SESSIONS`], each for [`SESSION_TTL`] after its
//! connection ended; beyond the cap the oldest goes. A session is not shared between
//! nodes and does not outlive the process: a device that reconnects elsewhere gets
//! `session present = 0` and subscribes again. The inbox, not the session, holds the
//! notifications themselves, so nothing stored is lost either way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kurir_backends::{ConnId, UserId};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::hub::ConnHandle;
use crate::protocol::CloseReason;

/// Persistent sessions one node keeps.
pub const MAX_SESSIONS: usize = 10_000;

/// How long a persistent session is kept after its connection ended.
pub const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a connection taking over a client id waits for the old connection to end.
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(3);

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
    /// The open connection of each client id (one entry per connection at most).
    live: Mutex<HashMap<Key, Live>>,
}

struct Live {
    conn: ConnHandle,
    /// Cancelled when the connection has ended and kept its session.
    done: CancellationToken,
}

/// A connection with a client id: the live one of its (user, client id), and, for a
/// persistent session, what it keeps when it ends.
pub struct Named {
    sessions: Arc<Sessions>,
    key: Key,
    conn: ConnId,
    done: CancellationToken,
    /// What a persistent session keeps (`None` for a clean session).
    pub saved: Option<Saved>,
}

impl Named {
    /// The connection ended: keep a persistent session, and let a connection taking
    /// over go on.
    pub fn release(self) {
        let Self {
            sessions,
            key,
            conn,
            done,
            saved,
        } = self;
        if let Some(saved) = saved {
            sessions.keep(key.0.clone(), &key.1, saved);
        }
        let mut live = sessions.live.lock();
        if live.get(&key).is_some_and(|l| l.conn.id == conn) {
            live.remove(&key);
        }
        drop(live);
        done.cancel();
    }
}

impl Sessions {
    /// Make `conn` the live connection of `client_id` for `user`, taking over from the
    /// one before it; then its session: the kept one for a persistent connection
    /// (whether there was one is the CONNACK's "session present"), none for a clean one
    /// (which also ends the kept one).
    pub async fn claim(
        self: &Arc<Self>,
        user: &UserId,
        client_id: &str,
        conn: &ConnHandle,
        persistent: bool,
    ) -> (Named, bool) {
        let key: Key = (user.clone(), Box::from(client_id));
        let done = CancellationToken::new();
        let before = self.live.lock().insert(
            key.clone(),
            Live {
                conn: conn.clone(),
                done: done.clone(),
            },
        );
        if let Some(old) = before {
            old.conn
                .mailbox
                .close(CloseReason::Disconnected("session taken over".into()));
            let _ = tokio::time::timeout(TAKEOVER_WAIT, old.done.cancelled()).await;
        }
        let kept = self.take(user, client_id);
        let present = persistent && kept.is_some();
        let named = Named {
            sessions: self.clone(),
            key,
            conn: conn.id,
            done,
            saved: persistent.then(|| kept.unwrap_or_default()),
        };
        (named, present)
    }

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
