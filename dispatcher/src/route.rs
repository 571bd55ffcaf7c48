//! ② Routing one targeted delivery: one presence lookup for all recipients, recipients
//! grouped by the gateway node that holds them, one envelope per node, published
//! concurrently. Nodes that hold none of the recipients receive nothing. Used by `Send`
//! and, for stored notifications a `Send` could not route, by [`crate::reroute`].

use std::collections::BTreeMap;

use bytes::Bytes;
use kurir_backends::presence::UserPresence;
use kurir_backends::{BackendError, Backends, NodeId, UserId};
use kurir_proto::internal::v1::{envelope::Kind, Delivery, Envelope, Recipient};
use metrics::{counter, Counter};
use prost::Message;

use crate::telemetry;

/// A routing step that failed: `stage` is `lookup` or `publish` (the label of
/// `kurir_dispatcher_route_failures_total`). The delivery comes back (without
/// recipients), so it can be tried again without a copy on the way that worked.
#[derive(Debug)]
pub struct RouteError {
    pub stage: &'static str,
    pub error: BackendError,
    pub delivery: Delivery,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Router {
    backends: Backends,
    published: Counter,
}

impl Router {
    pub fn new(backends: Backends) -> Self {
        Self {
            backends,
            published: counter!(telemetry::PUBLISHED),
        }
    }

    /// Publish `delivery` to the nodes holding `users`; `cursors[i]` is `users[i]`'s
    /// position in its inbox (empty for a live notification). Returns how many users
    /// were online.
    ///
    /// # Errors
    /// The lookup failed, or a publish did (the others may have gone out).
    pub async fn route(
        &self,
        delivery: Delivery,
        users: &[UserId],
        cursors: &[String],
    ) -> Result<u32, RouteError> {
        let presence = match self.lookup(users).await {
            Ok(p) => p,
            Err(error) => {
                return Err(RouteError {
                    stage: "lookup",
                    error,
                    delivery,
                })
            }
        };
        let mut online_users = 0;
        let mut by_node: BTreeMap<NodeId, Vec<Recipient>> = BTreeMap::new();
        for (user, cursor) in presence.iter().zip(cursors) {
            if !user.online() {
                continue;
            }
            online_users += 1;
            for node in user.nodes() {
                by_node.entry(node).or_default().push(Recipient {
                    user_id: user.user.as_str().to_owned(),
                    cursor: cursor.clone(),
                });
            }
        }
        // One envelope per node; only the recipients differ between them.
        let mut envelope = Envelope {
            kind: Some(Kind::Delivery(delivery)),
        };
        let mut messages = Vec::with_capacity(by_node.len());
        for (node, recipients) in by_node {
            if let Some(Kind::Delivery(d)) = &mut envelope.kind {
                d.recipients = recipients;
            }
            let subject = self.backends.namespace.node_subject(&node);
            messages.push((subject, Bytes::from(envelope.encode_to_vec())));
        }
        if let Err(error) = self.publish_all(messages).await {
            let Some(Kind::Delivery(mut delivery)) = envelope.kind else {
                unreachable!("the envelope was built around the delivery above");
            };
            delivery.recipients.clear();
            return Err(RouteError {
                stage: "publish",
                error,
                delivery,
            });
        }
        Ok(online_users)
    }

    /// The presence of `users`, in their order; one round trip.
    ///
    /// # Errors
    /// The store failed, or answered for other users than asked.
    pub async fn lookup(&self, users: &[UserId]) -> Result<Vec<UserPresence>, BackendError> {
        let presence = self.backends.presence.lookup(users).await?;
        if presence.len() != users.len() {
            return Err(BackendError::corrupt(
                "presence",
                format!(
                    "lookup returned {} entries for {} users",
                    presence.len(),
                    users.len()
                ),
            ));
        }
        Ok(presence)
    }

    /// Publish every message concurrently; the first error if any failed.
    pub async fn publish_all(&self, messages: Vec<(String, Bytes)>) -> Result<(), BackendError> {
        let bus = &self.backends.bus;
        let results =
            futures::future::join_all(messages.into_iter().map(|(s, p)| bus.publish(s, p))).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(()) => self.published.increment(1),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
