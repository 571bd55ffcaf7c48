//! Barriers: proof that the bus server has processed this node's earlier commands. A
//! NATS server handles one connection's commands in order, so once a probe this node
//! published to its own subject comes back, every subscription it asked for before that
//! publish is in place. A `subscribed` answer waits for one, so a publish right after it
//! reaches the new subscriber.
//!
//! Barrier probes share the readiness probe's envelope with the top bit of `seq` set;
//! the readiness check ignores them.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// The bit that marks a probe as a barrier.
pub const BARRIER_BIT: u64 = 1 << 63;

/// Barriers waiting for a publish to come back beyond which they are cleaned up.
const WAITING_MAX: usize = 1024;

/// The barriers in flight. Cheap to clone.
#[derive(Clone, Default)]
pub struct Barriers {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    waiting: HashMap<u64, oneshot::Sender<()>>,
}

impl Barriers {
    /// A new barrier: the probe `seq` to publish, and what resolves when it is back.
    pub fn open(&self) -> (u64, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.inner.lock();
        if inner.waiting.len() >= WAITING_MAX {
            // Probes lost while the bus was down: their waiters gave up long ago.
            inner.waiting.retain(|_, tx| !tx.is_closed());
        }
        inner.next += 1;
        let seq = BARRIER_BIT | inner.next;
        inner.waiting.insert(seq, tx);
        (seq, rx)
    }

    /// Probe `seq` came back; `false` when it is not a barrier (a readiness probe).
    pub fn passed(&self, seq: u64) -> bool {
        if seq & BARRIER_BIT == 0 {
            return false;
        }
        if let Some(tx) = self.inner.lock().waiting.remove(&seq) {
            let _ = tx.send(());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_barrier_resolves_when_its_probe_returns_and_only_then() {
        let b = Barriers::default();
        let (s1, mut r1) = b.open();
        let (s2, r2) = b.open();
        assert_ne!(s1, s2);
        assert!(!b.passed(7), "readiness probes are not barriers");
        assert!(r1.try_recv().is_err());
        assert!(b.passed(s2));
        r2.await.unwrap();
        assert!(
            r1.try_recv().is_err(),
            "each barrier waits for its own probe"
        );
        assert!(b.passed(s1));
        r1.await.unwrap();
    }

    #[test]
    fn abandoned_barriers_are_cleaned_up() {
        let b = Barriers::default();
        for _ in 0..WAITING_MAX + 10 {
            drop(b.open());
        }
        assert!(b.inner.lock().waiting.len() <= WAITING_MAX);
    }
}
