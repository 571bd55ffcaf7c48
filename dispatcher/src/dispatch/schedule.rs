//! `send_at`: a `Send`, `Publish` or `Broadcast` for later is answered at once with its
//! notification id and kept in the due-queue as item `s:<id>`, holding the request. When
//! it comes due, [`super::due`] runs it under that id, as if it had just arrived.
//! `CancelScheduled` removes the item while it waits.
//!
//! A keyed `Send` settles its idempotency key once the item is scheduled: from then on
//! the notification will go out (or be cancelled), whatever happens to this dispatcher.

use bytes::Bytes;
use kurir_backends::due::Cancel;
use kurir_backends::{BackendError, NotificationId, Topic, UserId};
use kurir_proto::internal::v1::due_item::Kind;
use kurir_proto::internal::v1::scheduled_request::Request;
use kurir_proto::internal::v1::{DueItem, ScheduledRequest};
use kurir_proto::v1::{
    BroadcastRequest, Fallback, Notification, Platform, PublishRequest, SendRequest,
};
use kurir_runtime::now_ms;
use prost::Message;
use tracing::{debug, warn};

use super::idempotency::ClaimGuard;
use super::{Dispatch, FallbackPolicy, SendCommand, SendOutcome};
use crate::error::DispatchError;

/// The due-queue id of a scheduled request.
pub(super) fn scheduled_item(id: NotificationId) -> String {
    format!("s:{id}")
}

impl Dispatch {
    /// Keep a `Send` for `cmd.send_at`; see the module docs.
    pub(super) async fn schedule_send(
        &self,
        id: NotificationId,
        cmd: SendCommand,
        claim: Option<ClaimGuard>,
    ) -> Result<SendOutcome, DispatchError> {
        let at = cmd.send_at;
        let request = Request::Send(SendRequest {
            user_ids: cmd.users.iter().map(|u| u.as_str().to_owned()).collect(),
            notification: Some(cmd.notification),
            ttl_seconds: cmd.ttl_seconds,
            idempotency_key: String::new(),
            fallback: cmd.fallback.map(|f| Fallback {
                channels: f.channels.iter().map(|p| *p as i32).collect(),
                after_ms: f.after_ms,
            }),
            send_at: 0,
        });
        match self.schedule(id, at, request).await {
            Ok(()) => {
                if let Some(claim) = claim {
                    claim.settle().await;
                }
                Ok(SendOutcome {
                    id,
                    online_users: 0,
                    stored_users: 0,
                })
            }
            Err(e) => {
                if let Some(claim) = claim {
                    claim.release().await;
                }
                Err(e.into())
            }
        }
    }

    /// Publish to `topic` now, or keep it for `send_at` (unix ms) when that is ahead.
    ///
    /// # Errors
    /// `Backend` when the bus or the due-queue refuses it.
    pub async fn publish_at(
        &self,
        topic: Topic,
        notification: Notification,
        send_at: i64,
    ) -> Result<NotificationId, DispatchError> {
        if send_at <= now_ms() {
            return self.publish(topic, notification).await;
        }
        let id = NotificationId::generate();
        let request = Request::Publish(PublishRequest {
            topic: topic.as_str().to_owned(),
            notification: Some(notification),
            send_at: 0,
        });
        self.schedule(id, send_at, request).await?;
        Ok(id)
    }

    /// Broadcast now, or keep it for `send_at` (unix ms) when that is ahead.
    ///
    /// # Errors
    /// `Backend` when the bus or the due-queue refuses it.
    pub async fn broadcast_at(
        &self,
        notification: Notification,
        send_at: i64,
    ) -> Result<NotificationId, DispatchError> {
        if send_at <= now_ms() {
            return self.broadcast(notification).await;
        }
        let id = NotificationId::generate();
        let request = Request::Broadcast(BroadcastRequest {
            notification: Some(notification),
            send_at: 0,
        });
        self.schedule(id, send_at, request).await?;
        Ok(id)
    }

    async fn schedule(
        &self,
        id: NotificationId,
        at: i64,
        request: Request,
    ) -> Result<(), BackendError> {
        super::record_id(id);
        let item = DueItem {
            kind: Some(Kind::Scheduled(ScheduledRequest {
                id: id.to_string(),
                request: Some(request),
            })),
        };
        self.backends
            .due
            .schedule(&scheduled_item(id), at, Bytes::from(item.encode_to_vec()))
            .await?;
        self.alarm.scheduled(at);
        debug!(%id, send_at = at, "scheduled");
        Ok(())
    }

    /// Cancel a scheduled request that has not been sent.
    ///
    /// # Errors
    /// `NotFound` when no request with this id waits: unknown, sent, being sent or
    /// cancelled before; `Backend` when the due-queue fails.
    pub async fn cancel_scheduled(&self, id: NotificationId) -> Result<(), DispatchError> {
        match self
            .backends
            .due
            .cancel(&scheduled_item(id), now_ms())
            .await?
        {
            Cancel::Cancelled => {
                debug!(%id, "scheduled notification cancelled");
                Ok(())
            }
            Cancel::NotFound => Err(DispatchError::NotFound(
                "no scheduled notification with this id: unknown, cancelled or already sent",
            )),
            Cancel::Leased => Err(DispatchError::NotFound(
                "the scheduled notification is being sent",
            )),
        }
    }

    /// Run a scheduled request that came due, under its id.
    pub(super) async fn run_scheduled(&self, s: ScheduledRequest) -> Result<(), DispatchError> {
        let id = NotificationId::parse(&s.id)
            .map_err(|_| BackendError::corrupt("due", "scheduled item with a bad id"))?;
        match s.request {
            Some(Request::Send(req)) => {
                let cmd = send_command(req);
                if cmd.users.is_empty() {
                    warn!(%id, "scheduled send without valid recipients; dropped");
                    return Ok(());
                }
                self.deliver(id, cmd, None).await.map(drop)
            }
            Some(Request::Publish(req)) => {
                let topic = Topic::parse(&req.topic).map_err(|_| {
                    BackendError::corrupt("due", "scheduled publish with a bad topic")
                })?;
                let subject = self.backends.namespace.topic_subject(&topic);
                let notification = req.notification.unwrap_or_default();
                self.live_as(id, subject, topic.as_str(), notification)
                    .await
                    .map(drop)
            }
            Some(Request::Broadcast(req)) => {
                let subject = self.backends.namespace.broadcast_subject();
                let notification = req.notification.unwrap_or_default();
                self.live_as(id, subject, "", notification).await.map(drop)
            }
            None => Err(BackendError::corrupt("due", "scheduled item without a request").into()),
        }
    }
}

/// A stored request back into the command it was validated as.
fn send_command(req: SendRequest) -> SendCommand {
    SendCommand {
        users: req
            .user_ids
            .iter()
            .filter_map(|u| UserId::parse(u).ok())
            .collect(),
        notification: req.notification.unwrap_or_default(),
        ttl_seconds: req.ttl_seconds,
        idempotency_key: None,
        fallback: req.fallback.map(|f| FallbackPolicy {
            channels: f
                .channels
                .iter()
                .filter_map(|c| Platform::try_from(*c).ok())
                .collect(),
            after_ms: f.after_ms,
        }),
        send_at: 0,
    }
}
