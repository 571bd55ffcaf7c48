//! This node's SSE streams by connection id, so that `POST /v1/subscribe` reaches the
//! stream it names (an SSE client's requests come apart from its stream). A stream takes its requests from a small bounded queue and answers
//! each; only its own user may address it.

use std::collections::HashMap;
use std::sync::Arc;

use kurir_backends::{ConnId, Topic, UserId};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::protocol::frame::FrameError;

/// Requests a stream answers at once, at most; beyond, the caller is told to retry.
pub const QUEUED_REQUESTS: usize = 4;

/// A request to a stream, with where to answer.
pub enum Request {
    Subscribe(String, oneshot::Sender<Result<Topic, FrameError>>),
    Unsubscribe(String, oneshot::Sender<Result<Topic, FrameError>>),
    /// Write a `pong` event on the stream: the client's proof that its stream is alive
    /// (an `EventSource` shows no heartbeat comments).
    Ping(oneshot::Sender<()>),
}

struct Entry {
    user: UserId,
    requests: mpsc::Sender<Request>,
}

/// The registry. Cheap to clone.
#[derive(Clone, Default)]
pub struct Streams {
    inner: Arc<Mutex<HashMap<ConnId, Entry>>>,
}

/// A stream's place in the registry, given back when dropped.
pub struct Listed {
    streams: Streams,
    id: ConnId,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.streams.inner.lock().remove(&self.id);
    }
}

impl Streams {
    /// List a stream; its requests arrive on the returned receiver.
    pub fn list(&self, id: ConnId, user: UserId) -> (Listed, mpsc::Receiver<Request>) {
        let (tx, rx) = mpsc::channel(QUEUED_REQUESTS);
        self.inner.lock().insert(id, Entry { user, requests: tx });
        let listed = Listed {
            streams: self.clone(),
            id,
        };
        (listed, rx)
    }

    /// Where to send requests for stream `id`, if it is here and `user`'s.
    pub fn find(&self, id: ConnId, user: &UserId) -> Option<mpsc::Sender<Request>> {
        let streams = self.inner.lock();
        let entry = streams.get(&id)?;
        (entry.user == *user).then(|| entry.requests.clone())
    }

    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_its_user_finds_a_stream_and_it_leaves_when_dropped() {
        let streams = Streams::default();
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let (listed, _rx) = streams.list(ConnId(7), alice.clone());
        assert!(streams.find(ConnId(7), &alice).is_some());
        assert!(streams.find(ConnId(7), &bob).is_none());
        assert!(streams.find(ConnId(8), &alice).is_none());
        drop(listed);
        assert!(streams.find(ConnId(7), &alice).is_none());
        assert!(streams.is_empty());
    }
}
