//! Live-only work: topic publishes and broadcasts (one subject each, nothing stored),
//! presence lookups, and disconnects (one envelope to each node holding the user).

use bytes::Bytes;
use kurir_backends::presence::UserPresence;
use kurir_backends::{NotificationId, Topic, UserId};
use kurir_proto::internal::v1::{envelope::Kind, Delivery, Disconnect, Envelope};
use kurir_proto::v1::Notification;
use kurir_runtime::now_ms;
use prost::Message;
use tracing::debug;

use super::{record_id, DisconnectCommand, Dispatch};
use crate::error::DispatchError;

impl Dispatch {
    /// Deliver to every live connection subscribed to `topic`.
    ///
    /// # Errors
    /// `Backend` when the bus refuses the message.
    pub async fn publish(
        &self,
        topic: Topic,
        notification: Notification,
    ) -> Result<NotificationId, DispatchError> {
        let subject = self.backends.namespace.topic_subject(&topic);
        self.live(subject, topic.as_str(), notification).await
    }

    /// Deliver to every live connection of the cluster.
    ///
    /// # Errors
    /// `Backend` when the bus refuses the message.
    pub async fn broadcast(
        &self,
        notification: Notification,
    ) -> Result<NotificationId, DispatchError> {
        let subject = self.backends.namespace.broadcast_subject();
        self.live(subject, "", notification).await
    }

    async fn live(
        &self,
        subject: String,
        topic: &str,
        notification: Notification,
    ) -> Result<NotificationId, DispatchError> {
        self.live_as(NotificationId::generate(), subject, topic, notification)
            .await
    }

    /// A live notification under an id given before (a scheduled one's).
    pub(super) async fn live_as(
        &self,
        id: NotificationId,
        subject: String,
        topic: &str,
        notification: Notification,
    ) -> Result<NotificationId, DispatchError> {
        record_id(id);
        let envelope = Envelope {
            kind: Some(Kind::Delivery(Delivery {
                id: id.to_string(),
                notification: Some(notification),
                topic: topic.to_owned(),
                created_at: now_ms(),
                expires_at: 0,
                recipients: Vec::new(),
            })),
        };
        self.router
            .publish_all(vec![(subject, Bytes::from(envelope.encode_to_vec()))])
            .await?;
        debug!(%id, topic, "published");
        Ok(id)
    }

    /// The live connections of `users`, in their order.
    ///
    /// # Errors
    /// `Backend` when the presence store fails.
    pub async fn presence(&self, users: &[UserId]) -> Result<Vec<UserPresence>, DispatchError> {
        Ok(self.router.lookup(users).await?)
    }

    /// Close every connection of a user: one envelope to each node holding one. Returns
    /// the number of connections the disconnect was routed to.
    ///
    /// # Errors
    /// `Backend` when the lookup or a publish fails.
    pub async fn disconnect(&self, cmd: DisconnectCommand) -> Result<u32, DispatchError> {
        let presence = self.router.lookup(std::slice::from_ref(&cmd.user)).await?;
        let Some(user) = presence.into_iter().next() else {
            return Ok(0);
        };
        let payload = Bytes::from(
            Envelope {
                kind: Some(Kind::Disconnect(Disconnect {
                    user_id: cmd.user.as_str().to_owned(),
                    reason: cmd.reason,
                })),
            }
            .encode_to_vec(),
        );
        let messages = user
            .nodes()
            .iter()
            .map(|node| (self.backends.namespace.node_subject(node), payload.clone()))
            .collect();
        self.router.publish_all(messages).await?;
        Ok(user.connections.len() as u32)
    }
}
