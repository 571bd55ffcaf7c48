//! Presence in Redis, for a cluster of gateways.
//!
//! - `kurir:<ns>:presence:{<user>}`: a hash of connection id (16 hex) → node id, with the
//!   entry TTL on the whole hash (refreshed by the nodes holding the user).
//! - `kurir:<ns>:node:<node>`: `"1"` with the liveness TTL, set by [`PresenceStore::beat`].
//!
//! Every command touches one key, so everything works on Redis Cluster; batches are
//! pipelines, which fred routes per slot.
//!
//! A lookup reads the users' hashes, then checks the liveness of the nodes found. Nodes
//! seen alive are remembered for [`ALIVE_CACHE`], so under load a lookup is one round trip
//! (liveness changes on the scale of the liveness TTL, seconds): a node that dies counts
//! for at most that much longer, which the liveness TTL already allows for, and a
//! stored notification routed to it meanwhile is replayed from the inbox.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fred::prelude::{Client, Expiration, HashesInterface, KeysInterface, Value};
use parking_lot::Mutex;
use tracing::{debug, warn};

use super::{PresenceStore, UserPresence};
use crate::error::BackendError;
use crate::ids::{ConnId, NodeId, UserId};
use crate::namespace::Namespace;
use crate::redis_client::{all_ok, corrupt, failed, ready, spread};

const OP: &str = "presence";
/// Commands per pipeline when a batch is unbounded (refresh, remove_node).
const CHUNK: usize = 1000;
/// How long a node seen alive is taken to be alive without asking Redis again.
pub const ALIVE_CACHE: Duration = Duration::from_millis(250);

pub struct RedisPresence {
    client: Client,
    ns: Namespace,
    entry_ttl_ms: i64,
    /// Nodes seen alive, and when (only live nodes: a few per cluster).
    alive: Mutex<HashMap<NodeId, Instant>>,
}

impl RedisPresence {
    /// `entry_ttl`: how long a user's entries live without [`PresenceStore::refresh`].
    pub fn new(client: Client, namespace: Namespace, entry_ttl: Duration) -> Self {
        Self {
            client,
            ns: namespace,
            entry_ttl_ms: millis(entry_ttl),
            alive: Mutex::new(HashMap::new()),
        }
    }

    /// Which of `nodes` are alive: recently seen ones from memory, the rest from Redis
    /// in one pipeline.
    async fn alive(&self, nodes: BTreeSet<NodeId>) -> Result<BTreeSet<NodeId>, BackendError> {
        let now = Instant::now();
        let (mut alive, unknown): (BTreeSet<NodeId>, Vec<NodeId>) = {
            let seen = self.alive.lock();
            let (fresh, stale): (Vec<_>, Vec<_>) = nodes.into_iter().partition(|n| {
                seen.get(n)
                    .is_some_and(|at| now.duration_since(*at) < ALIVE_CACHE)
            });
            (fresh.into_iter().collect(), stale)
        };
        if unknown.is_empty() {
            return Ok(alive);
        }
        let p = self.client.pipeline();
        for node in &unknown {
            queued(p.exists(self.ns.node_key(node)).await)?;
        }
        let marks = self.send(p, unknown.len()).await?;
        let mut seen = self.alive.lock();
        seen.retain(|_, at| now.duration_since(*at) < ALIVE_CACHE);
        for (node, mark) in unknown.into_iter().zip(marks) {
            match mark.as_i64() {
                Some(1) => {
                    seen.insert(node.clone(), now);
                    alive.insert(node);
                }
                Some(0) => {
                    seen.remove(&node);
                }
                _ => return Err(corrupt(OP, format!("EXISTS replied {mark:?}"))),
            }
        }
        Ok(alive)
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
    async fn add(&self, node: &NodeId, user: &UserId, conn: ConnId) -> Result<(), BackendError> {
        ready(&self.client, OP)?;
        let key = self.ns.presence_key(user);
        let p = self.client.pipeline();
        queued(p.hset(&key, (conn.to_string(), node.as_str())).await)?;
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

    async fn beat(&self, node: &NodeId, ttl: Duration) -> Result<(), BackendError> {
        ready(&self.client, OP)?;
        self.client
            .set::<(), _, _>(
                self.ns.node_key(node),
                "1",
                Some(Expiration::PX(millis(ttl))),
                None,
                false,
            )
            .await
            .map_err(|e| failed(OP, e))
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
        node: &NodeId,
        entries: &[(UserId, ConnId)],
    ) -> Result<(), BackendError> {
        ready(&self.client, OP)?;
        self.alive.lock().remove(node);
        self.client
            .del::<(), _>(self.ns.node_key(node))
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
        if users.is_empty() {
            return Ok(Vec::new());
        }
        ready(&self.client, OP)?;

        // Round 1: every user's hash.
        let p = self.client.pipeline();
        for user in users {
            queued(p.hgetall(self.ns.presence_key(user)).await)?;
        }
        let hashes = self.send(p, users.len()).await?;
        let mut found: Vec<Vec<(ConnId, NodeId)>> = Vec::with_capacity(users.len());
        let mut nodes = BTreeSet::new();
        let mut malformed = 0usize;
        for hash in hashes {
            let fields: HashMap<String, String> = hash
                .convert()
                .map_err(|e| corrupt(OP, format!("presence hash: {e}")))?;
            let mut conns = Vec::with_capacity(fields.len());
            for (conn, node) in fields {
                match (conn.parse::<ConnId>(), NodeId::parse(&node)) {
                    (Ok(conn), Ok(node)) => {
                        nodes.insert(node.clone());
                        conns.push((conn, node));
                    }
                    _ => malformed += 1,
                }
            }
            found.push(conns);
        }
        if malformed > 0 {
            warn!(malformed, "ignored malformed presence entries");
        }
        if nodes.is_empty() {
            return Ok(users
                .iter()
                .map(|user| UserPresence {
                    user: user.clone(),
                    connections: Vec::new(),
                })
                .collect());
        }

        // Round 2, when not known: which of the nodes found are alive.
        let alive = self.alive(nodes).await?;

        let mut dead: Vec<(String, Vec<String>)> = Vec::new();
        let presence = users
            .iter()
            .zip(found)
            .map(|(user, conns)| {
                let (mut live, gone): (Vec<_>, Vec<_>) = conns
                    .into_iter()
                    .partition(|(_, node)| alive.contains(node));
                if !gone.is_empty() {
                    let fields = gone.into_iter().map(|(c, _)| c.to_string()).collect();
                    dead.push((self.ns.presence_key(user), fields));
                }
                live.sort_unstable_by_key(|(conn, _)| *conn);
                UserPresence {
                    user: user.clone(),
                    connections: live,
                }
            })
            .collect();
        if !dead.is_empty() {
            tokio::spawn(prune(self.client.clone(), dead));
        }
        Ok(presence)
    }
}

/// Drop entries of dead nodes found by a lookup. Best effort: a failure only leaves
/// entries that lookups keep ignoring and the entry TTL eventually removes.
async fn prune(client: Client, dead: Vec<(String, Vec<String>)>) {
    for chunk in dead.chunks(CHUNK) {
        let p = client.pipeline();
        for (key, fields) in chunk {
            if p.hdel::<(), _, _>(key.as_str(), fields.clone())
                .await
                .is_err()
            {
                return;
            }
        }
        if let Err(e) = p.all::<Value>().await {
            debug!(error = %e, "pruning dead presence entries failed");
            return;
        }
    }
}
