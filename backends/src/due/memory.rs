//! The due-queue in one process (`--standalone`, fast tests), with the Redis queue's
//! semantics. One lock over the whole queue: claims take a handful of items at a time,
//! a few times a second, far from the hot path.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;

use super::{lease_ms, Cancel, Claimed, DueQueue, Lease};
use crate::error::BackendError;

#[derive(Default)]
pub struct MemoryDueQueue {
    inner: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    /// `(due or lease end, id)`, earliest first.
    order: BTreeSet<(i64, String)>,
    items: HashMap<String, Item>,
}

struct Item {
    at: i64,
    payload: Bytes,
    attempts: u64,
    /// The current lease, while one runs or until the next claim.
    lease: Option<Lease>,
}

impl MemoryDueQueue {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Queue {
    fn move_to(&mut self, id: &str, at: i64) {
        if let Some(item) = self.items.get_mut(id) {
            self.order.remove(&(item.at, id.to_owned()));
            item.at = at;
            self.order.insert((at, id.to_owned()));
        }
    }

    fn holds(&self, claimed: &Claimed) -> bool {
        self.items
            .get(&claimed.id)
            .is_some_and(|item| item.lease == Some(claimed.lease))
    }

    fn remove(&mut self, id: &str) {
        if let Some(item) = self.items.remove(id) {
            self.order.remove(&(item.at, id.to_owned()));
        }
    }
}

#[async_trait]
impl DueQueue for MemoryDueQueue {
    async fn schedule(&self, id: &str, due_at: i64, payload: Bytes) -> Result<(), BackendError> {
        let mut q = self.inner.lock();
        q.remove(id);
        q.items.insert(
            id.to_owned(),
            Item {
                at: due_at,
                payload,
                attempts: 0,
                lease: None,
            },
        );
        q.order.insert((due_at, id.to_owned()));
        Ok(())
    }

    async fn claim(
        &self,
        now: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claimed>, BackendError> {
        let until = now.saturating_add(lease_ms(lease));
        let mut q = self.inner.lock();
        let due: Vec<String> = q
            .order
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for id in due {
            q.move_to(&id, until);
            if let Some(item) = q.items.get_mut(&id) {
                item.attempts += 1;
                let lease = Lease {
                    attempt: item.attempts,
                    until,
                };
                item.lease = Some(lease);
                out.push(Claimed {
                    payload: item.payload.clone(),
                    id,
                    lease,
                });
            }
        }
        Ok(out)
    }

    async fn complete(&self, item: &Claimed) -> Result<bool, BackendError> {
        let mut q = self.inner.lock();
        if !q.holds(item) {
            return Ok(false);
        }
        q.remove(&item.id);
        Ok(true)
    }

    async fn reschedule(
        &self,
        item: &Claimed,
        due_at: i64,
        payload: Bytes,
    ) -> Result<bool, BackendError> {
        let mut q = self.inner.lock();
        if !q.holds(item) {
            return Ok(false);
        }
        q.move_to(&item.id, due_at);
        if let Some(stored) = q.items.get_mut(&item.id) {
            stored.payload = payload;
            stored.lease = None;
        }
        Ok(true)
    }

    async fn cancel(&self, id: &str, now: i64) -> Result<Cancel, BackendError> {
        let mut q = self.inner.lock();
        let Some(item) = q.items.get(id) else {
            return Ok(Cancel::NotFound);
        };
        if item.lease.is_some_and(|l| l.until > now) {
            return Ok(Cancel::Leased);
        }
        q.remove(id);
        Ok(Cancel::Cancelled)
    }

    async fn next_due(&self) -> Result<Option<i64>, BackendError> {
        Ok(self.inner.lock().order.first().map(|(at, _)| *at))
    }
}
