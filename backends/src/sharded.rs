//! The lock-striped map the in-memory presence store and inbox keep their per-user
//! state in, so that calls for different users rarely contend (`--standalone` serves
//! every dispatch and every connection from one process).
//!
//! Locks are `parking_lot` and held only for the map operation at hand, never across an
//! `.await`.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Mutex, MutexGuard};

const SHARDS: usize = 16;
/// Every this many writes, one shard is swept of expired values, so state nobody reads
/// again does not stay forever.
const SWEEP_EVERY: usize = 256;

pub(crate) struct Sharded<K, V> {
    shards: Box<[Mutex<HashMap<K, V>>]>,
    hasher: RandomState,
    writes: AtomicUsize,
}

impl<K: Hash + Eq, V> Sharded<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            writes: AtomicUsize::new(0),
        }
    }

    /// The shard holding `key`, locked.
    pub(crate) fn shard(&self, key: &K) -> MutexGuard<'_, HashMap<K, V>> {
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        self.shards[i].lock()
    }

    /// Count a write; every [`SWEEP_EVERY`] writes, drop the values of one shard (in
    /// turn) for which `expired` says so.
    pub(crate) fn wrote(&self, expired: impl Fn(&V) -> bool) {
        let n = self.writes.fetch_add(1, Ordering::Relaxed);
        if n % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let i = (n / SWEEP_EVERY) % self.shards.len();
            self.shards[i].lock().retain(|_, v| !expired(v));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_every_shard_in_turn() {
        let map: Sharded<u32, bool> = Sharded::new();
        for k in 0..100 {
            map.shard(&k).insert(k, true);
        }
        for _ in 0..SWEEP_EVERY * SHARDS {
            map.wrote(|expired| *expired);
        }
        assert_eq!(map.len(), 0);
    }
}
