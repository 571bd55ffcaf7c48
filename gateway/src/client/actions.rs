//! What a client asks of the node, whatever its transport: ack a stored notification,
//! subscribe to a topic, unsubscribe, register or drop its browser's Web Push
//! subscription. A refusal is a [`FrameError`] (a code and a
//! message), which each transport reports its own way; the connection goes on.

use kurir_backends::devices::DeviceId;
use kurir_backends::{NotificationId, Topic, UserId};
use kurir_proto::v1::{Device, Platform, ReceiptStatus, WebPushSubscription};
use kurir_runtime::now_ms;
use prost::Message as _;

use super::Client;
use crate::protocol::frame::{FrameError, PushSubscriptionJson};
use crate::relay::TopicError;
use crate::state::AppState;
use crate::telemetry;

impl Client {
    /// Ack a stored notification: its inbox entry goes, and `ACKED` is emitted once.
    ///
    /// # Errors
    /// A malformed id, or the inbox could not record it.
    pub async fn ack(&self, id: &str) -> Result<NotificationId, FrameError> {
        ack(&self.state, &self.identity.user, id).await
    }

    /// Subscribe this connection to a topic its token allows.
    ///
    /// # Errors
    /// A malformed or forbidden topic, a limit, or the bus refused.
    pub async fn subscribe(&mut self, name: &str) -> Result<Topic, FrameError> {
        let topic = Topic::parse(name)
            .map_err(|e| FrameError::new("bad_request", format!("topic: {e}")))?;
        if !self.identity.may_subscribe(&topic) {
            return Err(FrameError::new(
                "forbidden",
                format!("token does not allow topic {topic}"),
            ));
        }
        if self.topics.contains(&topic) {
            return Ok(topic);
        }
        let max = self.state.config.max_subscriptions;
        if self.topics.len() >= max {
            return Err(FrameError::new(
                "too_many_subscriptions",
                format!("at most {max} topics per connection"),
            ));
        }
        // In the hub first, then the bus subscription: the topic owner never drops a
        // subscription a connection is about to rely on (see `relay::Topics::ensure`).
        let conn = self.conn().clone();
        self.state.hub.subscribe(&topic, conn.clone());
        if let Err(e) = self.state.topics.ensure(&topic).await {
            // The topic owner finds the topic unused, if it is, on its next sweep.
            self.state.hub.unsubscribe(&topic, conn.id);
            return Err(match e {
                TopicError::TooMany => FrameError::new(
                    "too_many_topics",
                    "this node holds its limit of topics; retry later",
                ),
                TopicError::Unavailable => {
                    FrameError::new("unavailable", "subscription failed; retry later")
                }
            });
        }
        self.topics.push(topic.clone());
        Ok(topic)
    }

    /// Leave a topic (no error when not subscribed).
    ///
    /// # Errors
    /// A malformed topic name.
    pub fn unsubscribe(&mut self, name: &str) -> Result<Topic, FrameError> {
        let topic = Topic::parse(name)
            .map_err(|e| FrameError::new("bad_request", format!("topic: {e}")))?;
        if let Some(i) = self.topics.iter().position(|t| *t == topic) {
            self.topics.swap_remove(i);
            // The bus subscription goes a little later, when the topic owner finds the
            // topic without local subscribers.
            self.state.hub.unsubscribe(&topic, self.conn().id);
        }
        Ok(topic)
    }

    /// Whether this connection is subscribed to `topic`.
    pub fn subscribed(&self, topic: &Topic) -> bool {
        self.topics.contains(topic)
    }
}

/// Ack `id` for `user`: the one ack path, for connected clients and for HTTP acks that
/// need no connection.
///
/// # Errors
/// A malformed id, or the inbox could not record it.
pub async fn ack(state: &AppState, user: &UserId, id: &str) -> Result<NotificationId, FrameError> {
    let id = NotificationId::parse(id)
        .map_err(|e| FrameError::new("bad_request", format!("id: {e}")))?;
    let removed = state
        .backends
        .inbox
        .ack(user, id)
        .await
        .map_err(|_| FrameError::new("unavailable", "ack not recorded; retry later"))?;
    metrics::counter!(telemetry::ACKS).increment(1);
    if removed {
        state.receipts.emit(id, user, ReceiptStatus::Acked);
    }
    Ok(id)
}

/// Store `user`'s browser subscription as one of their devices (Web Push), checked as
/// the API checks one; returns the device id (the same as `RegisterDevice` gives it).
///
/// # Errors
/// A subscription elsewhere than an allowed push service, malformed keys, or the
/// registry could not record it.
pub async fn push_subscribe(
    state: &AppState,
    user: &UserId,
    sub: &PushSubscriptionJson,
) -> Result<String, FrameError> {
    let checked = kurir_push::WebPushSubscription {
        endpoint: sub.endpoint.clone(),
        p256dh: sub.keys.p256dh.clone(),
        auth: sub.keys.auth.clone(),
    };
    kurir_push::device::check_subscription(&checked, &state.webpush.allowlist)
        .map_err(|e| FrameError::new("bad_request", format!("subscription.{e}")))?;
    let key = web_push_key(&checked.endpoint)?;
    let device = Device {
        id: key.to_string(),
        user_id: user.as_str().to_owned(),
        platform: Platform::WebPush as i32,
        subscription: Some(WebPushSubscription {
            endpoint: checked.endpoint,
            p256dh: checked.p256dh,
            auth: checked.auth,
        }),
        registered_at: now_ms(),
        ..Default::default()
    };
    state
        .backends
        .devices
        .register(user, &key, device.encode_to_vec().into())
        .await
        .map_err(|_| FrameError::new("unavailable", "subscription not recorded; retry later"))?;
    Ok(key.to_string())
}

/// Forget `user`'s browser subscription at `endpoint` (no error when unknown).
///
/// # Errors
/// The registry could not record it.
pub async fn push_unsubscribe(
    state: &AppState,
    user: &UserId,
    endpoint: &str,
) -> Result<(), FrameError> {
    let key = web_push_key(endpoint)?;
    state
        .backends
        .devices
        .unregister(user, &key)
        .await
        .map_err(|_| FrameError::new("unavailable", "not recorded; retry later"))?;
    Ok(())
}

fn web_push_key(endpoint: &str) -> Result<DeviceId, FrameError> {
    let key = kurir_push::device::device_key(Platform::WebPush.as_str_name(), endpoint);
    DeviceId::parse(&key).map_err(|e| FrameError::new("bad_request", e.reason))
}
