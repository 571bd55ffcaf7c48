//! Presence in Redis, for a cluster of gateways.
//!
//! - `kurir:<ns>:presence:{<user>}`: a hash of connection id (16 hex) → `<node>/<epoch>`
//!   (the node id, `/`, the epoch as 16 lowercase hex), with the entry TTL on the whole
//!   hash (refreshed by the nodes holding the user).
//! - `kurir:<ns>:node:<node>`: the epoch of the node's current incarnation (16 lowercase
//!   hex) with the liveness TTL, set by [`PresenceStore::beat`] with `SET … PX … GET`
//!   (Redis ≥ 6.2), whose reply (the epoch replaced, if any) tells `Kept` from `Lapsed`.
//!
//! An entry counts only while its node's key holds the entry's epoch. Fields of another
//! shape (no `/`, a malformed node id or epoch) are ignored, never pruned, and left to
//! the entry TTL.
//!
//! Every command and script touches one key, so everything works on Redis Cluster;
//! batches are pipelines, which fred routes per slot.
//!
//! A lookup reads the users' hashes (round 1), then the keys of the nodes found (round
//! 2, one pipeline). Marks read are remembered for [`ALIVE_CACHE`]: an entry whose node
//! and epoch match a remembered mark counts without round 2, so under load a lookup is
//! one round trip (marks change on the scale of the liveness TTL, seconds): a node that
//! dies counts for at most that much longer, which the liveness TTL already allows for,
//! and a stored notification routed to it meanwhile is replayed from the inbox. An entry
//! of an unknown node, or of another epoch than the remembered one, sends its node to
//! round 2, whose read then judges all that node's entries: a new incarnation counts at
//! once.
//!
//! Entries that a round-2 read (never the cache) found not counting are pruned in the
//! background, each only if its field still holds the value the lookup read ([`PRUNE`]):
//! a connection its node wrote again meanwhile, under a new epoch, survives.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fred::prelude::{Client, Expiration, HashesInterface, KeysInterface, Value};
use parking_lot::Mutex;
use tracing::{debug, warn};

use super::{Beat, Epoch, Lease, PresenceStore, UserPresence};
use crate::error::BackendError;
use crate::ids::{ConnId, NodeId, UserId};
use crate::namespace::Namespace;
use crate::redis_client::{all_ok, corrupt, failed, ready, spread, Script, ScriptCall};

const OP: &str = "presence";
/// Commands per pipeline when a batch is unbounded (refresh, remove_node, prune).
const CHUNK: usize = 1000;
/// How long a node's mark, once read, is taken to hold without asking Redis again.
pub const ALIVE_CACHE: Duration = Duration::from_millis(250);

/// Delete the fields of one presence hash that still hold the values a lookup read.
///
/// KEYS: presence hash. ARGV: field, value, field, value, …
const PRUNE: &str = r"
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
";

/// Delete a node's mark only if it still holds this epoch.
///
/// KEYS: node key. ARGV: epoch.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

pub struct RedisPresence {
    client: Client,
    ns: Namespace,
    entry_ttl_ms: i64,
    /// Marks read recently: node → the epoch its key held, and when (live nodes only: a
    /// few per cluster).
    marks: Mutex<HashMap<NodeId, (Epoch, Instant)>>,
    prune: Arc<Script>,
    release: Script,
}

/// One field of a presence hash, as read.
struct Entry {
    conn: ConnId,
    node: NodeId,
    epoch: Epoch,
    /// The field's value as stored: what a prune must still find there.
    value: String,
}

impl Entry {
    /// `None` for a field of another shape.
    fn parse(conn: &str, value: String) -> Option<Self> {
        let (node, epoch) = {
            let (node, epoch) = value.split_once('/')?;
            (NodeId::parse(node).ok()?, Epoch::parse(epoch).ok()?)
        };
        Some(Self {
            conn: conn.parse().ok()?,
            node,
            epoch,
            value,
        })
    }
}

/// The value of a presence field written under `lease`.
fn entry_value(lease: &Lease) -> String {
    format!("{}/{}", lease.node, lease.epoch)
}

impl RedisPresence {
    /// `entry_ttl`: how long a user's entries live without [`PresenceStore::refresh`].
    pub fn new(client: Client, namespace: Namespace, entry_ttl: Duration) -> Self {
        Self {
            client,
            ns: namespace,
            entry_ttl_ms: millis(entry_ttl),
            marks: Mutex::new(HashMap::new()),
            prune: Arc::new(Script::new(PRUNE)),
            release: Script::new(RELEASE),
        }
    }

    /// A lookup without its pruning: the presence of `users`, and one prune call per
    /// hash holding entries that a fresh read of their node's mark found not counting.
    async fn read(
        &self,
        users: &[UserId],
    ) -> Result<(Vec<UserPresence>, Vec<ScriptCall>), BackendError> {
        if users.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        ready(&self.client, OP)?;

        // Round 1: every user's hash.
        let p = self.client.pipeline();
        for user in users {
            queued(p.hgetall(self.ns.presence_key(user)).await)?;
        }
        let hashes = self.send(p, users.len()).await?;
        let mut found: Vec<Vec<Entry>> = Vec::with_capacity(users.len());
        let mut malformed = 0usize;
        for hash in hashes {
            let fields: HashMap<String, String> = hash
                .convert()
                .map_err(|e| corrupt(OP, format!("presence hash: {e}")))?;
            let total = fields.len();
            let entries: Vec<Entry> = fields
                .into_iter()
                .filter_map(|(conn, value)| Entry::parse(&conn, value))
                .collect();
            malformed += total - entries.len();
            found.push(entries);
        }
        if malformed > 0 {
            warn!(malformed, "ignored malformed presence entries");
        }

        // Round 2, for the nodes of entries the cache does not vouch for.
        let now = Instant::now();
        let ask: BTreeSet<NodeId> = {
            let marks = self.marks.lock();
            found
                .iter()
                .flatten()
                .filter(|e| {
                    !marks.get(&e.node).is_some_and(|(epoch, at)| {
                        *epoch == e.epoch && now.duration_since(*at) < ALIVE_CACHE
                    })
                })
                .map(|e| e.node.clone())
                .collect()
        };
        let read = if ask.is_empty() {
            HashMap::new()
        } else {
            self.read_marks(ask).await?
        };

        // A node read in round 2 is judged by that read, for all its entries; the
        // entries of every other node matched a fresh cached mark.
        let mut stale = Vec::new();
        let presence = users
            .iter()
            .zip(found)
            .map(|(user, entries)| {
                let mut live = Vec::with_capacity(entries.len());
                let mut gone: Vec<Value> = Vec::new();
                for e in entries {
                    let counts = read.get(&e.node).is_none_or(|mark| *mark == Some(e.epoch));
                    if counts {
                        live.push((e.conn, e.node));
                    } else {
                        gone.push(e.conn.to_string().into());
                        gone.push(e.value.into());
                    }
                }
                if !gone.is_empty() {
                    stale.push(ScriptCall {
                        keys: vec![self.ns.presence_key(user)],
                        args: gone,
                    });
                }
                live.sort_unstable_by_key(|(conn, _)| *conn);
                UserPresence {
                    user: user.clone(),
                    connections: live,
                }
            })
            .collect();
        Ok((presence, stale))
    }

    /// The epoch each node's key holds (`None`: missing, or not an epoch), read in one
    /// pipeline and remembered for [`ALIVE_CACHE`].
    async fn read_marks(
        &self,
        nodes: BTreeSet<NodeId>,
    ) -> Result<HashMap<NodeId, Option<Epoch>>, BackendError> {
        // The mark is at least as fresh as the moment we asked.
        let asked = Instant::now();
        let p = self.client.pipeline();
        for node in &nodes {
            queued(p.get(self.ns.node_key(node)).await)?;
        }
        let replies = self.send(p, nodes.len()).await?;
        let mut cache = self.marks.lock();
        cache.retain(|_, (_, at)| asked.duration_since(*at) < ALIVE_CACHE);
        Ok(nodes
            .into_iter()
            .zip(replies)
            .map(|(node, reply)| {
                let epoch = reply.as_str().and_then(|s| Epoch::parse(&s).ok());
                if epoch.is_none() && !reply.is_null() {
                    // Not ours, or an older release's "1": no incarnation counts.
                    debug!(%node, "node mark is not an epoch");
                }
                match epoch {
                    Some(epoch) => cache.insert(node.clone(), (epoch, asked)),
                    None => cache.remove(&node),
                };
                (node, epoch)
            })
            .collect())
    }

    /// Send a pipeline and check every reply.
    async fn send(
        &self,
        pipeline: fred::clients::Pipeline<Client>,
        n: usize,
    ) -> Result<Vec<Value>, BackendError> {
        all_ok(OP, spread(pipeline.try_all::<Value>().await, n))
    }
}

/// Milliseconds for `PX`/`PEXPIRE`, at least 1 (0 is an error for Redis).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Queue a command on a pipeline; only malformed arguments fail here.
fn queued(r: Result<(), fred::prelude::Error>) -> Result<(), BackendError> {
    r.map_err(|e| failed(OP, e))
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn add(&self, lease: &Lease, user: &UserId, conn: ConnId) -> Result<(), BackendError> {
        ready(&self.client, OP)?;
        let key = self.ns.presence_key(user);
        let p = self.client.pipeline();
        queued(p.hset(&key, (conn.to_string(), entry_value(lease))).await)?;
        queued(p.pexpire(&key, self.entry_ttl_ms, None).await)?;
        self.send(p, 2).await.map(drop)
    }

    async fn remove(&self, user: &UserId, conn: ConnId) -> Result<(), BackendError> {
        ready(&self.client, OP)?;
        self.client
            .hdel::<(), _, _>(self.ns.presence_key(user), conn.to_string())
            .await
            .map_err(|e| failed(OP, e))
    }

    async fn beat(&self, lease: &Lease, ttl: Duration) -> Result<Beat, BackendError> {
        ready(&self.client, OP)?;
        let epoch = lease.epoch.to_string();
        let previous: Value = self
            .client
            .set(
                self.ns.node_key(&lease.node),
                epoch.as_str(),
                Some(Expiration::PX(millis(ttl))),
                None,
                true,
            )
            .await
            .map_err(|e| failed(OP, e))?;
        Ok(if previous.as_str().as_deref() == Some(epoch.as_str()) {
            Beat::Kept
        } else {
            Beat::Lapsed
        })
    }

    async fn refresh(&self, users: &[UserId]) -> Result<(), BackendError> {
        for chunk in users.chunks(CHUNK) {
            ready(&self.client, OP)?;
            let p = self.client.pipeline();
            for user in chunk {
                queued(
                    p.pexpire(self.ns.presence_key(user), self.entry_ttl_ms, None)
                        .await,
                )?;
            }
            self.send(p, chunk.len()).await?;
        }
        Ok(())
    }

    async fn remove_node(
        &self,
        lease: &Lease,
        entries: &[(UserId, ConnId)],
    ) -> Result<(), BackendError> {
        ready(&self.client, OP)?;
        self.marks.lock().remove(&lease.node);
        let release = ScriptCall {
            keys: vec![self.ns.node_key(&lease.node)],
            args: vec![lease.epoch.to_string().into()],
        };
        self.release
            .run(&self.client, release)
            .await
            .map_err(|e| failed(OP, e))?;
        let mut by_user: HashMap<&UserId, Vec<String>> = HashMap::new();
        for (user, conn) in entries {
            by_user.entry(user).or_default().push(conn.to_string());
        }
        let by_user: Vec<_> = by_user.into_iter().collect();
        for chunk in by_user.chunks(CHUNK) {
            ready(&self.client, OP)?;
            let p = self.client.pipeline();
            for (user, conns) in chunk {
                queued(p.hdel(self.ns.presence_key(user), conns.clone()).await)?;
            }
            self.send(p, chunk.len()).await?;
        }
        Ok(())
    }

    async fn lookup(&self, users: &[UserId]) -> Result<Vec<UserPresence>, BackendError> {
        let (presence, stale) = self.read(users).await?;
        if !stale.is_empty() {
            tokio::spawn(prune(self.client.clone(), self.prune.clone(), stale));
        }
        Ok(presence)
    }
}

/// Delete the entries a lookup found not counting, each only if it still holds the value
/// read. Best effort: a failure only leaves entries that lookups keep ignoring and the
/// entry TTL eventually removes.
async fn prune(client: Client, script: Arc<Script>, stale: Vec<ScriptCall>) {
    for chunk in stale.chunks(CHUNK) {
        if let Some(e) = script
            .run_many(&client, chunk)
            .await
            .into_iter()
            .find_map(Result::err)
        {
            debug!(error = %e, "pruning stale presence entries failed");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use fred::prelude::ClientLike;

    use super::*;
    use crate::options::ConnectOptions;

    /// A store on the test Redis (`KURIR_REDIS_URL`) in a fresh namespace.
    async fn store() -> RedisPresence {
        let url =
            std::env::var("KURIR_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let ns = Namespace::random_for_test();
        let opts = ConnectOptions::new(ns.clone(), "nats://127.0.0.1:4222", &url);
        let client = crate::redis_client::connect(&opts).await.unwrap();
        assert!(client.is_connected(), "Redis at {url} is unreachable");
        RedisPresence::new(client, ns, Duration::from_secs(60))
    }

    async fn cleanup(store: &RedisPresence, user: &UserId, node: &NodeId) {
        let keys = [store.ns.presence_key(user), store.ns.node_key(node)];
        for key in keys {
            let _: () = store.client.del(key).await.unwrap();
        }
    }

    fn lease(epoch: u64) -> Lease {
        Lease {
            node: NodeId::parse("gw-1").unwrap(),
            epoch: Epoch(epoch),
        }
    }

    #[test]
    fn entries_parse_only_in_the_lease_shape() {
        let e = Entry::parse("00000000000000ff", entry_value(&lease(7))).unwrap();
        assert_eq!(
            (e.conn, e.node.as_str(), e.epoch),
            (ConnId(255), "gw-1", Epoch(7))
        );
        assert_eq!(e.value, "gw-1/0000000000000007");
        for bad in [
            "gw-1",
            "gw-1/",
            "gw-1/7",
            "gw.1/0000000000000007",
            "/0000000000000007",
            "gw-1/0000000000000007/x",
        ] {
            assert!(Entry::parse("ff", bad.into()).is_none(), "{bad}");
        }
        assert!(Entry::parse("not-hex", entry_value(&lease(7))).is_none());
    }

    /// A prune decided during a lapse must not remove the connection its node wrote
    /// again since, under a new epoch, while it still removes what it saw.
    #[tokio::test]
    async fn a_prune_keeps_entries_written_again_since_the_lookup() {
        let store = store().await;
        let (old, new) = (lease(1), lease(2));
        let alice = UserId::parse("alice").unwrap();
        store.add(&old, &alice, ConnId(1)).await.unwrap();
        store.add(&old, &alice, ConnId(2)).await.unwrap();
        // The node's mark is missing: the lookup finds both entries stale.
        let (presence, stale) = store.read(std::slice::from_ref(&alice)).await.unwrap();
        assert!(!presence[0].online());
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].args.len(), 4);
        // Before the prune runs, the node comes back and writes connection 1 again.
        assert_eq!(
            store.beat(&new, Duration::from_secs(60)).await.unwrap(),
            Beat::Lapsed
        );
        store.add(&new, &alice, ConnId(1)).await.unwrap();
        prune(store.client.clone(), store.prune.clone(), stale).await;
        let fields: HashMap<String, String> = store
            .client
            .hgetall(store.ns.presence_key(&alice))
            .await
            .unwrap();
        let expected = HashMap::from([(ConnId(1).to_string(), entry_value(&new))]);
        assert_eq!(fields, expected);
        let found = store.lookup(std::slice::from_ref(&alice)).await.unwrap();
        assert_eq!(found[0].connections, vec![(ConnId(1), new.node.clone())]);
        cleanup(&store, &alice, &new.node).await;
    }

    /// Steady state is one round trip: within [`ALIVE_CACHE`] of reading a mark, a
    /// lookup trusts it without reading the node key again; a new epoch is read at once.
    #[tokio::test]
    async fn a_fresh_mark_is_trusted_and_a_new_epoch_read_at_once() {
        let store = store().await;
        let (old, new) = (lease(1), lease(2));
        let alice = UserId::parse("alice").unwrap();
        store.beat(&old, Duration::from_secs(60)).await.unwrap();
        store.add(&old, &alice, ConnId(1)).await.unwrap();
        let read = Instant::now();
        assert!(store.lookup(std::slice::from_ref(&alice)).await.unwrap()[0].online());
        // Behind the store's back: the mark now holds another epoch.
        let _: () = store
            .client
            .set(
                store.ns.node_key(&old.node),
                new.epoch.to_string(),
                None,
                None,
                false,
            )
            .await
            .unwrap();
        let (found, stale) = store.read(std::slice::from_ref(&alice)).await.unwrap();
        if read.elapsed() < ALIVE_CACHE {
            assert!(found[0].online(), "a fresh cached mark is trusted");
            assert!(stale.is_empty(), "the cache alone never prunes");
        }
        // An entry of the new epoch is not vouched for by the cache: its node is read,
        // and that read judges the old entry too.
        store.add(&new, &alice, ConnId(2)).await.unwrap();
        let (found, stale) = store.read(std::slice::from_ref(&alice)).await.unwrap();
        assert_eq!(found[0].connections, vec![(ConnId(2), new.node.clone())]);
        assert_eq!(stale.len(), 1);
        cleanup(&store, &alice, &new.node).await;
    }
}
