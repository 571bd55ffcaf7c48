//! A map key → connections, split into shards by key hash so that fan-out on one key
//! never contends with registrations of others.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};

use kurir_backends::ConnId;
use parking_lot::RwLock;
use smallvec::SmallVec;

use super::ConnHandle;

/// The connections of one key: most users hold one, kept inline (no allocation).
type Conns = SmallVec<[ConnHandle; 1]>;

type Shard<K> = RwLock<HashMap<K, Conns>>;

pub(super) struct Shards<K> {
    shards: Box<[Shard<K>]>,
    hasher: RandomState,
}

impl<K: Hash + Eq> Shards<K> {
    pub(super) fn new(n: usize) -> Self {
        Self {
            shards: (0..n).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Lookups take anything the key borrows as (a `&str` for a user id): the hash is the
    /// same, so the shard is too.
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Shard<K> {
        let i = self.hasher.hash_one(key) as usize & (self.shards.len() - 1);
        &self.shards[i]
    }

    /// Returns `true` when `key` had no connection before.
    pub(super) fn insert(&self, key: K, conn: ConnHandle) -> bool {
        let mut map = self.shard(&key).write();
        let conns = map.entry(key).or_default();
        if conns.iter().any(|c| c.id == conn.id) {
            return false;
        }
        conns.push(conn);
        conns.len() == 1
    }

    /// Insert unless `key` already holds `cap` connections; `false` (nothing inserted)
    /// when it does. The check and the insert happen under one lock: concurrent
    /// upgrades of one user cannot both take its last slot.
    pub(super) fn insert_capped(&self, key: K, conn: ConnHandle, cap: usize) -> bool {
        let mut map = self.shard(&key).write();
        if map.get(&key).map_or(0, SmallVec::len) >= cap {
            return false;
        }
        map.entry(key).or_default().push(conn);
        true
    }

    /// Returns `true` when something was removed.
    pub(super) fn remove(&self, key: &K, id: ConnId) -> bool {
        let mut map = self.shard(key).write();
        let Some(conns) = map.get_mut(key) else {
            return false;
        };
        let before = conns.len();
        conns.retain(|c| c.id != id);
        let removed = conns.len() != before;
        if conns.is_empty() {
            map.remove(key);
        }
        removed
    }

    pub(super) fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key).read().contains_key(key)
    }

    /// Apply `f` to each connection of `key` under the shard's read lock; counts `true`s.
    pub(super) fn each_of<Q>(&self, key: &Q, mut f: impl FnMut(&ConnHandle) -> bool) -> usize
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.shard(key).read();
        map.get(key)
            .map_or(0, |conns| conns.iter().filter(|c| f(c)).count())
    }

    /// Apply `f` to every connection of shard `i` (wrapping); counts `true`s.
    pub(super) fn each_in(&self, i: usize, mut f: impl FnMut(&ConnHandle) -> bool) -> usize {
        let map = self.shards[i % self.shards.len()].read();
        map.values().flatten().filter(|c| f(c)).count()
    }

    /// Apply `f` to every connection, one shard at a time.
    pub(super) fn each(&self, mut f: impl FnMut(&ConnHandle) -> bool) -> usize {
        let mut n = 0;
        for shard in self.shards.iter() {
            let map = shard.read();
            n += map.values().flatten().filter(|c| f(c)).count();
        }
        n
    }
}
