//! The QoS 1 publishes a connection has not had a PUBACK for: packet id → notification
//! id, at most [`WINDOW`] at once. Beyond, the session waits for acks (and closes the
//! connection as stalled when none come within the write stall timeout while more
//! notifications wait).

use std::collections::VecDeque;

use kurir_backends::NotificationId;

/// Unacked QoS 1 publishes per connection.
pub const WINDOW: usize = 32;

#[derive(Debug, Default)]
pub struct Inflight {
    sent: VecDeque<(u16, NotificationId)>,
    last: u16,
}

impl Inflight {
    pub fn has_room(&self) -> bool {
        self.sent.len() < WINDOW
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    /// A packet id for `id`, not in use on this connection. Call only with room.
    pub fn insert(&mut self, id: NotificationId) -> u16 {
        loop {
            self.last = self.last.wrapping_add(1).max(1);
            let pkid = self.last;
            if self.sent.iter().all(|(p, _)| *p != pkid) {
                self.sent.push_back((pkid, id));
                return pkid;
            }
        }
    }

    /// The notification a PUBACK acknowledges (`None`: not a packet id in flight).
    pub fn remove(&mut self, pkid: u16) -> Option<NotificationId> {
        let i = self.sent.iter().position(|(p, _)| *p == pkid)?;
        self.sent.remove(i).map(|(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_are_unique_nonzero_and_bounded() {
        let mut w = Inflight::default();
        let ids: Vec<_> = (0..WINDOW).map(|_| NotificationId::generate()).collect();
        let pkids: Vec<_> = ids.iter().map(|id| w.insert(*id)).collect();
        assert!(!w.has_room());
        assert!(!pkids.contains(&0));
        assert_eq!(w.remove(pkids[3]), Some(ids[3]));
        assert_eq!(w.remove(pkids[3]), None, "once");
        assert!(w.has_room());
        assert_eq!(w.remove(pkids[4]), Some(ids[4]));
        // Wrapping around never hands out an id still in flight.
        w.last = u16::MAX - 1;
        let a = w.insert(NotificationId::generate());
        let b = w.insert(NotificationId::generate());
        assert_eq!((a, b), (u16::MAX, 4), "1..=3 are in flight, 4 was acked");
    }
}
