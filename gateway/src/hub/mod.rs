//! ② The local registry: user → connections and topic → connections of this node, and
//! the bounded queue in front of every socket.
//!
//! Fan-out only `try_send`s into those queues; a full queue marks the connection for
//! closing with 1013 (slow consumer) and never blocks the relay or other connections.
//! Maps are sharded, behind synchronous locks held only for map operations.

mod shard;
pub mod streams;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures::task::AtomicWaker;
use kurir_backends::{ConnId, NotificationId, Topic, UserId};
use parking_lot::Mutex;

use crate::protocol::CloseReason;
use crate::telemetry;
use shard::Shards;

/// A notification frame on its way to sockets, built once and shared by every
/// connection it goes to.
#[derive(Debug)]
pub struct Outbound {
    pub id: NotificationId,
    /// Stored notifications are deduplicated by id per connection.
    pub stored: bool,
    /// Sent to its user by id (not a topic or broadcast): emits a DELIVERED receipt.
    pub direct: bool,
    /// Unix ms, for the delivery latency histogram.
    pub created_at: i64,
    /// A stored notification's inbox cursor (also in the frame): what a transport that
    /// resumes by event id (SSE) names it by.
    pub cursor: Option<Box<str>>,
    pub frame: Bytes,
}

/// What a connection's queue holds: a pointer, so fan-out clones a reference count.
pub type Queued = Arc<Outbound>;

/// A queue that shrank back to empty keeps at most this many slots allocated.
const KEEP_SLOTS: usize = 16;

/// One connection's bounded queue and out-of-band signals, shared by the hub (the
/// writers) and the session (the one reader). An idle connection's mailbox allocates
/// nothing beyond itself: the queue grows on the first message.
///
/// There is one waiter, the session task, so a waker slot and a "look again" flag are
/// all the wake-up machinery needed: writers set what changed, raise the flag, wake.
#[derive(Debug)]
pub struct Mailbox {
    queue: Mutex<VecDeque<Queued>>,
    capacity: usize,
    close: Mutex<Option<CloseReason>>,
    resync: AtomicBool,
    heartbeat: AtomicBool,
    /// Set with every change above; cleared by the session when it looks.
    pending: AtomicBool,
    waker: AtomicWaker,
}

impl Mailbox {
    fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            capacity,
            close: Mutex::new(None),
            resync: AtomicBool::new(false),
            heartbeat: AtomicBool::new(false),
            pending: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    /// Tell the session to look again.
    fn wake(&self) {
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Queue without waiting. When the queue is full the connection is told to close
    /// with 1013 (slow consumer) and `false` is returned.
    pub fn offer(&self, msg: &Queued) -> bool {
        let mut queue = self.queue.lock();
        if queue.len() >= self.capacity {
            drop(queue);
            telemetry::dropped("slow_consumer");
            self.close(CloseReason::SlowConsumer);
            return false;
        }
        queue.push_back(Arc::clone(msg));
        drop(queue);
        self.wake();
        true
    }

    /// The oldest queued message (the session's side).
    pub fn pop(&self) -> Option<Queued> {
        let mut queue = self.queue.lock();
        let msg = queue.pop_front();
        if queue.is_empty() && queue.capacity() > KEEP_SLOTS {
            // A burst is over: give its memory back.
            queue.shrink_to(KEEP_SLOTS);
        }
        msg
    }

    /// Ask the session to close; the first reason wins.
    pub fn close(&self, reason: CloseReason) {
        let mut slot = self.close.lock();
        if slot.is_none() {
            *slot = Some(reason);
            drop(slot);
            self.wake();
        }
    }

    /// Ask the session to re-read its inbox (the bus may have lost messages).
    pub fn resync(&self) {
        self.resync.store(true, Ordering::Release);
        self.wake();
    }

    /// Wait until the session is asked to close (while it is stuck writing, say).
    pub async fn closing(&self) -> CloseReason {
        poll_fn(|cx| {
            self.waker.register(cx.waker());
            match self.take_close() {
                Some(reason) => Poll::Ready(reason),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// Wake the session on any change from now on, while it waits on something else
    /// (a write in flight, say).
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// Whether a heartbeat is due, without taking it (the live loop takes it).
    pub fn heartbeat_due(&self) -> bool {
        self.heartbeat.load(Ordering::Acquire)
    }

    pub fn take_close(&self) -> Option<CloseReason> {
        self.close.lock().clone()
    }

    pub fn take_resync(&self) -> bool {
        self.resync.swap(false, Ordering::AcqRel)
    }

    /// Tell the session its heartbeat is due (ping, idle and token checks).
    pub fn heartbeat(&self) {
        self.heartbeat.store(true, Ordering::Release);
        self.wake();
    }

    pub fn take_heartbeat(&self) -> bool {
        self.heartbeat.swap(false, Ordering::AcqRel)
    }

    /// Ready once something changed since the session last looked (a message or a
    /// signal). A change made while nobody waits is kept, so looking, then waiting,
    /// misses nothing.
    pub fn poll_pending(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        if self.pending.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The hub's handle on one connection. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    pub user: UserId,
    pub mailbox: Arc<Mailbox>,
}

impl ConnHandle {
    /// `queue` bounds the mailbox: when full, the connection is closed with 1013.
    pub fn new(id: ConnId, user: UserId, queue: usize) -> Self {
        Self {
            id,
            user,
            mailbox: Arc::new(Mailbox::new(queue)),
        }
    }

    pub fn offer(&self, msg: &Queued) -> bool {
        self.mailbox.offer(msg)
    }
}

/// Why a connection is not admitted (answered before the upgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `KURIR_MAX_CONNECTIONS` reached (HTTP 503).
    #[error("node at connection limit")]
    NodeFull,
    /// `KURIR_MAX_CONNECTIONS_PER_USER` reached for this user on this node (HTTP 429).
    #[error("too many connections for this user on this node")]
    UserFull,
}

/// An admitted connection's place in the hub: it counts against the node's and its
/// user's caps until this drops, whether or not its session ever started.
pub struct Registration {
    hub: Hub,
    conn: ConnHandle,
}

impl Registration {
    pub fn conn(&self) -> &ConnHandle {
        &self.conn
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Registration").field(&self.conn.id).finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(&self.conn.user, self.conn.id);
    }
}

/// The registry. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    users: Shards<UserId>,
    topics: Shards<Topic>,
    count: AtomicUsize,
}

/// Shards per map; a power of two.
const SHARDS: usize = 64;

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                users: Shards::new(SHARDS),
                topics: Shards::new(SHARDS),
                count: AtomicUsize::new(0),
            }),
        }
    }

    /// Connections currently registered (admitted, from the answer to their upgrade).
    pub fn len(&self) -> usize {
        self.inner.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Register a connection without checking any cap (tests, benchmarks).
    pub fn register(&self, conn: ConnHandle) {
        self.inner.users.insert(conn.user.clone(), conn);
        self.inner.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Admit a connection under the node's cap (`max_node`) and its user's
    /// (`max_user`), and register it. Called before the upgrade is answered, so a
    /// connection counts from its `101` on: a burst of upgrades cannot overshoot either
    /// cap, and the count is released when the returned [`Registration`] drops.
    ///
    /// # Errors
    /// Which cap is reached; nothing is registered then.
    pub fn admit(
        &self,
        conn: ConnHandle,
        max_node: usize,
        max_user: usize,
    ) -> Result<Registration, Refused> {
        let count = &self.inner.count;
        // Take the node slot first, then check: two racing admissions cannot both see
        // the last one free.
        if count.fetch_add(1, Ordering::AcqRel) >= max_node {
            count.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::NodeFull);
        }
        if !self
            .inner
            .users
            .insert_capped(conn.user.clone(), conn.clone(), max_user)
        {
            count.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::UserFull);
        }
        Ok(Registration {
            hub: self.clone(),
            conn,
        })
    }

    /// Remove a connection from the user map (not from topics: see
    /// [`Hub::unsubscribe`]).
    pub fn unregister(&self, user: &UserId, id: ConnId) {
        if self.inner.users.remove(user, id) {
            self.inner.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Returns `true` when this is the topic's first local subscriber.
    pub fn subscribe(&self, topic: &Topic, conn: ConnHandle) -> bool {
        self.inner.topics.insert(topic.clone(), conn)
    }

    /// Returns `true` when the topic has no local subscriber left.
    pub fn unsubscribe(&self, topic: &Topic, id: ConnId) -> bool {
        self.inner.topics.remove(topic, id) && !self.inner.topics.contains(topic)
    }

    pub fn has_subscribers(&self, topic: &Topic) -> bool {
        self.inner.topics.contains(topic)
    }

    /// Offer to every connection of `user` (the id as text, no `UserId` needed); returns
    /// how many accepted.
    pub fn to_user(&self, user: &str, msg: &Queued) -> usize {
        self.inner.users.each_of(user, |c| c.offer(msg))
    }

    /// Offer to every subscriber of `topic`.
    pub fn to_topic(&self, topic: &Topic, msg: &Queued) -> usize {
        self.inner.topics.each_of(topic, |c| c.offer(msg))
    }

    /// Offer to every connection of this node.
    pub fn to_all(&self, msg: &Queued) -> usize {
        self.inner.users.each(|c| c.offer(msg))
    }

    /// Tell every connection of `user` to close; returns how many.
    pub fn close_user(&self, user: &UserId, reason: &CloseReason) -> usize {
        self.inner.users.each_of(user, |c| {
            c.mailbox.close(reason.clone());
            true
        })
    }

    /// Shards of the user map; [`Hub::heartbeat_shard`] takes `0..shards()`.
    pub fn shards(&self) -> usize {
        SHARDS
    }

    /// Tell every connection in user-map shard `i` that its heartbeat is due.
    pub fn heartbeat_shard(&self, i: usize) -> usize {
        self.inner.users.each_in(i, |c| {
            c.mailbox.heartbeat();
            true
        })
    }

    /// Ask every connection to re-read its inbox.
    pub fn resync_all(&self) -> usize {
        self.inner.users.each(|c| {
            c.mailbox.resync();
            true
        })
    }

    /// A copy of every handle (drain, presence refresh).
    pub fn connections(&self) -> Vec<ConnHandle> {
        let mut all = Vec::with_capacity(self.len());
        self.inner.users.each(|c| {
            all.push(c.clone());
            true
        });
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Queued {
        Arc::new(Outbound {
            id: NotificationId::generate(),
            stored: false,
            direct: false,
            created_at: 0,
            cursor: None,
            frame: Bytes::from_static(b"{}"),
        })
    }

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn routes_to_users_and_topics() {
        let hub = Hub::new();
        let a1 = ConnHandle::new(ConnId(1), user("a"), 4);
        let a2 = ConnHandle::new(ConnId(2), user("a"), 4);
        let b = ConnHandle::new(ConnId(3), user("b"), 4);
        for c in [&a1, &a2, &b] {
            hub.register(c.clone());
        }
        assert_eq!(hub.len(), 3);
        assert_eq!(hub.to_user("a", &msg()), 2);
        assert!(a1.mailbox.pop().is_some() && a2.mailbox.pop().is_some());
        assert!(b.mailbox.pop().is_none());

        let t = Topic::parse("news").unwrap();
        assert!(hub.subscribe(&t, b.clone()));
        assert!(!hub.subscribe(&t, a1.clone()));
        assert_eq!(hub.to_topic(&t, &msg()), 2);
        assert_eq!(hub.to_all(&msg()), 3);
        assert!(!hub.unsubscribe(&t, ConnId(3)));
        hub.unregister(&user("a"), ConnId(1));
        assert!(hub.unsubscribe(&t, ConnId(1)));
        assert!(!hub.has_subscribers(&t));
        assert_eq!(hub.len(), 2);
    }

    #[test]
    fn admission_holds_both_caps_and_releases_on_drop() {
        let hub = Hub::new();
        let conn = |id, u: &str| ConnHandle::new(ConnId(id), user(u), 4);
        let a1 = hub.admit(conn(1, "a"), 3, 2).unwrap();
        let _a2 = hub.admit(conn(2, "a"), 3, 2).unwrap();
        assert_eq!(
            hub.admit(conn(3, "a"), 3, 2).unwrap_err(),
            Refused::UserFull
        );
        let _b = hub.admit(conn(4, "b"), 3, 2).unwrap();
        assert_eq!(
            hub.admit(conn(5, "c"), 3, 2).unwrap_err(),
            Refused::NodeFull
        );
        assert_eq!(hub.len(), 3, "refusals leave no count behind");
        assert_eq!(hub.to_user("a", &msg()), 2);
        drop(a1);
        assert_eq!(hub.len(), 2);
        let _a3 = hub.admit(conn(6, "a"), 3, 2).unwrap();
        assert_eq!(hub.to_user("a", &msg()), 2);
    }

    #[test]
    fn concurrent_admissions_never_overshoot() {
        let hub = Hub::new();
        let admitted: Vec<_> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..8u64)
                .map(|t| {
                    let hub = hub.clone();
                    s.spawn(move || {
                        (0..100u64)
                            .filter_map(|i| {
                                let u = if i % 2 == 0 { "same" } else { "other" };
                                hub.admit(ConnHandle::new(ConnId(t * 1000 + i), user(u), 1), 50, 20)
                                    .ok()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        assert_eq!(admitted.len(), 40, "20 per user");
        assert_eq!(hub.len(), 40);
        drop(admitted);
        assert_eq!(hub.len(), 0);
    }

    #[test]
    fn full_queue_closes_with_1013_and_spares_others() {
        let hub = Hub::new();
        let slow = ConnHandle::new(ConnId(1), user("s"), 1);
        let fast = ConnHandle::new(ConnId(2), user("f"), 8);
        hub.register(slow.clone());
        hub.register(fast.clone());
        assert_eq!(hub.to_all(&msg()), 2);
        assert_eq!(hub.to_all(&msg()), 1);
        assert_eq!(slow.mailbox.take_close(), Some(CloseReason::SlowConsumer));
        assert_eq!(std::iter::from_fn(|| fast.mailbox.pop()).count(), 2);
    }
}
