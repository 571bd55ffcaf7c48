//! ② Routing one targeted delivery: one presence lookup for all recipients, recipients
//! grouped by the gateway node that holds them, one envelope per node, published
//! concurrently. Nodes that hold none of the recipients receive nothing.
//!
//! The router also owns what happens when routing fails. A live notification exists only
//! in flight, so its failure goes back to the caller. A stored one is already safe in the
//! inboxes: its failure is counted (`kurir_dispatcher_route_failures_total`) and the
//! notification is handed to [`reroute`], which tries again in the background.

pub mod reroute;

use std::collections::BTreeMap;

use bytes::Bytes;
use kurir_backends::inbox::Cursor;
use kurir_backends::presence::UserPresence;
use kurir_backends::{BackendError, Backends, NodeId, UserId};
use kurir_proto::internal::v1::{envelope::Kind, Delivery, Envelope, Recipient as Addressed};
use metrics::{counter, Counter};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::telemetry;
use reroute::Reroute;

/// One recipient of a targeted delivery: the user, and for a stored notification its
/// position in that user's inbox (gateways acknowledge and replay by it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub user: UserId,
    pub cursor: Option<Cursor>,
}

impl Recipient {
    /// A recipient of a live notification.
    pub fn live(user: UserId) -> Self {
        Self { user, cursor: None }
    }
}

/// A routing step that failed: `stage` is `lookup` or `publish` (the label of
/// `kurir_dispatcher_route_failures_total`). The delivery comes back (without
/// recipients), so it can be tried again without a copy on the way that worked.
#[derive(Debug)]
pub struct RouteError {
    pub stage: &'static str,
    pub error: BackendError,
    pub delivery: Delivery,
}

/// Routes deliveries, and routes again later what it could not route now. Cheap to
/// clone.
#[derive(Clone)]
pub struct Router {
    paths: Paths,
    reroute: Reroute,
}

impl Router {
    /// The reroute task, started with the first stored notification that needs it, runs
    /// on `tasks` until `stop`.
    pub fn new(backends: Backends, tasks: TaskTracker, stop: CancellationToken) -> Self {
        let paths = Paths {
            backends,
            published: counter!(telemetry::PUBLISHED),
        };
        Self {
            reroute: Reroute::new(paths.clone(), tasks, stop),
            paths,
        }
    }

    /// Route a live notification to `recipients`. Returns how many were online.
    ///
    /// # Errors
    /// The lookup failed, or a publish did (the others may have gone out).
    pub async fn route_live(
        &self,
        delivery: Delivery,
        recipients: &[Recipient],
    ) -> Result<u32, RouteError> {
        self.paths.route(delivery, recipients).await
    }

    /// Route a stored notification to `recipients`. Returns how many were online; 0 when
    /// the lookup or a publish failed, in which case it is routed again in the
    /// background (it is in the inboxes either way).
    pub async fn route_stored(&self, delivery: Delivery, recipients: Vec<Recipient>) -> u32 {
        match self.paths.route(delivery, &recipients).await {
            Ok(online) => online,
            Err(e) => {
                counter!(telemetry::ROUTE_FAILURES, "stage" => e.stage).increment(1);
                warn!(id = %e.delivery.id, stage = e.stage, error = %e.error, "stored notification not routed live; routing it again in the background");
                self.reroute.later(e.delivery, recipients);
                0
            }
        }
    }

    /// The presence of `users`, in their order; one round trip.
    ///
    /// # Errors
    /// The store failed, or answered for other users than asked.
    pub async fn lookup(&self, users: &[UserId]) -> Result<Vec<UserPresence>, BackendError> {
        self.paths.lookup(users).await
    }

    /// Publish every message concurrently; the first error if any failed.
    ///
    /// # Errors
    /// A publish failed (the others may have gone out).
    pub async fn publish_all(&self, messages: Vec<(String, Bytes)>) -> Result<(), BackendError> {
        self.paths.publish_all(messages).await
    }
}

/// The routing itself, without the reroute that retries it: what the reroute task runs.
#[derive(Clone)]
struct Paths {
    backends: Backends,
    published: Counter,
}

impl Paths {
    async fn route(&self, delivery: Delivery, recipients: &[Recipient]) -> Result<u32, RouteError> {
        let users: Vec<UserId> = recipients.iter().map(|r| r.user.clone()).collect();
        let presence = match self.lookup(&users).await {
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
        let mut by_node: BTreeMap<NodeId, Vec<Addressed>> = BTreeMap::new();
        // `lookup` answers for exactly the users asked, in their order.
        for (user, recipient) in presence.iter().zip(recipients) {
            if !user.online() {
                continue;
            }
            online_users += 1;
            let cursor = recipient
                .cursor
                .as_ref()
                .map_or_else(String::new, |c| c.as_str().to_owned());
            for node in user.nodes() {
                by_node.entry(node).or_default().push(Addressed {
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
        for (node, addressed) in by_node {
            if let Some(Kind::Delivery(d)) = &mut envelope.kind {
                d.recipients = addressed;
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

    async fn lookup(&self, users: &[UserId]) -> Result<Vec<UserPresence>, BackendError> {
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

    async fn publish_all(&self, messages: Vec<(String, Bytes)>) -> Result<(), BackendError> {
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
