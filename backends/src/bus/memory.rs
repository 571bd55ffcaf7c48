//! The bus in one process (`--standalone`, fast tests): subject → the bounded queues of
//! its subscriptions.
//!
//! Same contract as NATS: nothing is kept for absent subscribers, one publisher's
//! messages arrive in order (one lock orders the queue writes), and a subscription whose
//! queue is full loses the message, counted as `slow_consumer`, instead of slowing the
//! publisher down.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::{Bus, Subscription};
use crate::error::BackendError;
use crate::telemetry;

pub struct MemoryBus {
    shared: Arc<Shared>,
}

struct Shared {
    /// Messages a subscription buffers before it loses new ones.
    capacity: usize,
    /// Counts the times a subscription lost messages (an in-process bus never
    /// reconnects). Kept open so that receivers wait instead of seeing it closed.
    losses: watch::Sender<u64>,
    subjects: Mutex<HashMap<String, Vec<Subscriber>>>,
    next_id: AtomicU64,
}

struct Subscriber {
    id: u64,
    queue: mpsc::Sender<Bytes>,
}

impl MemoryBus {
    /// `capacity`: messages each subscription buffers (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                capacity: capacity.max(1),
                losses: watch::Sender::new(0),
                subjects: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    #[cfg(test)]
    fn subscriptions(&self, subject: &str) -> usize {
        self.shared.subjects.lock().get(subject).map_or(0, Vec::len)
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, subject: String, payload: Bytes) -> Result<(), BackendError> {
        let mut subjects = self.shared.subjects.lock();
        let Some(subscribers) = subjects.get_mut(&subject) else {
            return Ok(());
        };
        subscribers.retain(|s| match s.queue.try_send(payload.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                telemetry::backend_error("memory", "slow_consumer");
                self.shared.losses.send_modify(|n| *n += 1);
                true
            }
            // Dropped without its guard having run yet.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if subscribers.is_empty() {
            subjects.remove(&subject);
        }
        Ok(())
    }

    async fn subscribe(&self, subject: String) -> Result<Subscription, BackendError> {
        // Full → the publisher drops the message and counts a slow consumer.
        let (queue, rx) = mpsc::channel(self.shared.capacity);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.shared
            .subjects
            .lock()
            .entry(subject.clone())
            .or_default()
            .push(Subscriber { id, queue });
        let receiver = Receiver {
            rx,
            _unsubscribe: Unsubscribe {
                shared: self.shared.clone(),
                subject,
                id,
            },
        };
        Ok(Subscription::new(receiver.boxed()))
    }

    async fn flush(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn reconnected(&self) -> watch::Receiver<u64> {
        self.shared.losses.subscribe()
    }

    fn is_connected(&self) -> bool {
        true
    }
}

struct Receiver {
    rx: mpsc::Receiver<Bytes>,
    _unsubscribe: Unsubscribe,
}

impl Stream for Receiver {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

/// Removes its subscription from the subject when the stream is dropped.
struct Unsubscribe {
    shared: Arc<Shared>,
    subject: String,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let mut subjects = self.shared.subjects.lock();
        if let Some(subscribers) = subjects.get_mut(&self.subject) {
            subscribers.retain(|s| s.id != self.id);
            if subscribers.is_empty() {
                subjects.remove(&self.subject);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_a_subscription_removes_it() {
        let bus = MemoryBus::new(8);
        let a = bus.subscribe("s".into()).await.unwrap();
        let b = bus.subscribe("s".into()).await.unwrap();
        assert_eq!(bus.subscriptions("s"), 2);
        drop(a);
        assert_eq!(bus.subscriptions("s"), 1);
        drop(b);
        assert_eq!(bus.subscriptions("s"), 0);
        assert!(bus.shared.subjects.lock().is_empty());
    }

    #[tokio::test]
    async fn a_full_queue_loses_new_messages_only() {
        let bus = MemoryBus::new(2);
        let mut sub = bus.subscribe("s".into()).await.unwrap();
        let losses = bus.reconnected();
        for i in 0..5u8 {
            bus.publish("s".into(), Bytes::from(vec![i])).await.unwrap();
        }
        assert_eq!(*losses.borrow(), 3, "each lost message is signalled");
        assert_eq!(sub.next().await.unwrap(), Bytes::from(vec![0]));
        assert_eq!(sub.next().await.unwrap(), Bytes::from(vec![1]));
        bus.publish("s".into(), Bytes::from(vec![9])).await.unwrap();
        assert_eq!(sub.next().await.unwrap(), Bytes::from(vec![9]));
    }

    #[tokio::test]
    async fn reconnected_never_closes() {
        let bus = MemoryBus::new(1);
        let mut rx = bus.reconnected();
        let changed = tokio::time::timeout(std::time::Duration::from_millis(20), rx.changed());
        assert!(
            changed.await.is_err(),
            "the watch must stay open and unchanged"
        );
    }
}
