//! Stored notification ids one connection has been sent: each reaches a connection
//! once, however many times replay and live routing bring it, and the first ack of one
//! is known (it is free of the client's rate limit).

use std::collections::{HashMap, VecDeque};

use kurir_backends::NotificationId;

/// The newest `cap` ids sent, each with whether the client acked it. Allocates nothing
/// until the first stored notification.
pub struct SeenIds {
    order: VecDeque<NotificationId>,
    acked: HashMap<NotificationId, bool>,
    cap: usize,
}

impl SeenIds {
    pub fn new(cap: usize) -> Self {
        Self {
            order: VecDeque::new(),
            acked: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// `false` when already seen.
    pub fn insert(&mut self, id: NotificationId) -> bool {
        if self.acked.contains_key(&id) {
            return false;
        }
        self.acked.insert(id, false);
        self.order.push_back(id);
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.acked.remove(&old);
            }
        }
        true
    }

    /// `true` the first time a sent id is acked.
    pub fn ack_once(&mut self, id: NotificationId) -> bool {
        match self.acked.get_mut(&id) {
            Some(acked) if !*acked => {
                *acked = true;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_ids_are_bounded() {
        let mut s = SeenIds::new(2);
        let ids: Vec<_> = (0..3).map(|_| NotificationId::generate()).collect();
        assert!(s.insert(ids[0]));
        assert!(!s.insert(ids[0]));
        assert!(s.insert(ids[1]));
        assert!(s.insert(ids[2]));
        assert!(s.insert(ids[0]), "oldest evicted");
        assert!(s.ack_once(ids[2]));
        assert!(!s.ack_once(ids[2]), "once");
        assert!(!s.ack_once(ids[1]), "evicted: not free");
    }
}
