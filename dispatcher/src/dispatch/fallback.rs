//! `Send.fallback`: reach the recipients who did not ack through their devices' push
//! services, then report the ones who never ack.
//!
//! A `Send` with a fallback leaves one due item, `f:<id>`: parked at the expiry before
//! the inbox append (so a `Send` whose check cannot be stored fails with nothing
//! stored), then armed, due at `created_at + after_ms`, once the append is done (so the
//! check never looks at the inbox before the notification is in it). A dispatcher that
//! dies between the two leaves the check parked: no push, only the `EXPIRED` step. When
//! it comes due:
//! 1. *Push.* The recipients whose inbox still holds the notification unexpired (an ack
//!    removes it: nothing is pushed to a user who acked on any device) are looked up;
//!    with `after_ms = 0` only those without a live connection remain. Each of their
//!    devices on the chosen platforms gets one push: `PUSHED` or `PUSH_FAILED` (with the
//!    provider's reason) per device. A device whose service answers "gone" is removed.
//!    The item then moves to the notification's expiry.
//! 2. *Expiry.* The recipients whose inbox still holds it, unacked, get `EXPIRED`.
//!
//! The item is leased while it runs, so one dispatcher does each step; a dispatcher
//! killed mid-step leaves it to another after the lease, which may push again to the
//! devices the first had reached (at least once; exactly once otherwise).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::{stream, StreamExt};
use kurir_backends::{BackendError, NotificationId, UserId};
use kurir_proto::internal::v1::due_item::Kind;
use kurir_proto::internal::v1::{DueItem, FallbackCheck};
use kurir_proto::v1::{Notification, Platform, Priority, Receipt, ReceiptStatus};
use kurir_push::{Outcome, PushMessage};
use kurir_runtime::now_ms;
use metrics::counter;
use prost::Message;
use tracing::{debug, info};

use super::devices::{decode, push_target};
use super::report::receipt;
use super::{Dispatch, FallbackPolicy};
use crate::error::DispatchError;
use crate::telemetry;

/// Recipients pushed to at once by one due item (each with up to the registry's cap of
/// devices).
const USER_CONCURRENCY: usize = 32;

/// The due-queue id of a fallback check.
pub(super) fn fallback_item(id: NotificationId) -> String {
    format!("f:{id}")
}

/// What a fallback step leaves to do.
pub(super) enum Next {
    Done,
    /// The same item again at this time (unix ms), as this check.
    At(i64, Box<FallbackCheck>),
}

impl Dispatch {
    pub(super) fn fallback_check(
        &self,
        id: NotificationId,
        users: &[UserId],
        notification: &Notification,
        expires_at: i64,
        policy: &FallbackPolicy,
    ) -> FallbackCheck {
        FallbackCheck {
            id: id.to_string(),
            user_ids: users.iter().map(|u| u.as_str().to_owned()).collect(),
            notification: Some(notification.clone()),
            channels: policy.channels.iter().map(|p| *p as i32).collect(),
            expires_at,
            only_offline: policy.after_ms == 0,
            pushed: false,
        }
    }

    /// Store the check of `id`, due at `due_at` (replacing it if there).
    pub(super) async fn schedule_fallback(
        &self,
        id: NotificationId,
        due_at: i64,
        check: &FallbackCheck,
    ) -> Result<(), BackendError> {
        let item = DueItem {
            kind: Some(Kind::Fallback(check.clone())),
        };
        self.backends
            .due
            .schedule(
                &fallback_item(id),
                due_at,
                Bytes::from(item.encode_to_vec()),
            )
            .await?;
        self.alarm.scheduled(due_at);
        Ok(())
    }

    /// Move the parked check of a stored notification to its wait. The notification is
    /// stored, so a failure does not fail the call: it is logged and counted, and the
    /// check stays parked (no push; `EXPIRED` still reported).
    pub(super) async fn arm_fallback(
        &self,
        id: NotificationId,
        due_at: i64,
        check: &FallbackCheck,
    ) {
        if let Err(e) = self.schedule_fallback(id, due_at, check).await {
            tracing::warn!(%id, error = %e, "fallback not armed; nothing will be pushed");
            counter!(telemetry::DUE_ITEMS, "kind" => "fallback", "outcome" => "dropped")
                .increment(1);
        }
    }

    /// Remove the parked check of a `Send` that failed (best effort: a check left over
    /// finds nothing in the inbox at the expiry).
    pub(super) async fn drop_fallback(&self, id: NotificationId) {
        let _ = self.backends.due.cancel(&fallback_item(id), now_ms()).await;
    }

    /// Run one step of a fallback check; see the module docs.
    ///
    /// # Errors
    /// A backend failure before anything was pushed (the step is tried again).
    pub(super) async fn run_fallback(
        &self,
        mut check: FallbackCheck,
    ) -> Result<Next, DispatchError> {
        let id = NotificationId::parse(&check.id)
            .map_err(|_| BackendError::corrupt("due", "fallback item with a bad id"))?;
        let users: Vec<UserId> = check
            .user_ids
            .iter()
            .filter_map(|u| UserId::parse(u).ok())
            .collect();
        let held = self.backends.inbox.holds(&users, id).await?;
        let now = now_ms();
        if check.pushed {
            let expired: Vec<Receipt> = users
                .iter()
                .zip(&held)
                .filter(|(_, h)| h.is_some())
                .map(|(u, _)| receipt(id, u, ReceiptStatus::Expired, "", ""))
                .collect();
            debug!(%id, expired = expired.len(), "fallback expiry checked");
            self.publish_receipts(expired).await;
            return Ok(Next::Done);
        }
        let mut targets: Vec<UserId> = users
            .into_iter()
            .zip(held)
            .filter(|(_, h)| h.is_some_and(|expires_at| expires_at > now))
            .map(|(u, _)| u)
            .collect();
        if check.only_offline && !targets.is_empty() {
            targets = self
                .router
                .lookup(&targets)
                .await?
                .into_iter()
                .filter(|p| !p.online())
                .map(|p| p.user)
                .collect();
        }
        let channels: Vec<Platform> = check
            .channels
            .iter()
            .filter_map(|c| Platform::try_from(*c).ok())
            .collect();
        let message = push_message(id, check.notification.as_ref(), check.expires_at - now);
        let receipts: Vec<Receipt> = stream::iter(targets)
            .map(|user| self.push_user(id, user, &message, &channels))
            .buffer_unordered(USER_CONCURRENCY)
            .flat_map(stream::iter)
            .collect()
            .await;
        debug!(%id, receipts = receipts.len(), "fallback pushed");
        self.publish_receipts(receipts).await;
        check.pushed = true;
        Ok(Next::At(check.expires_at, Box::new(check)))
    }

    /// Push to every device of `user` on `channels` (all when empty); one receipt each.
    async fn push_user(
        &self,
        id: NotificationId,
        user: UserId,
        message: &PushMessage,
        channels: &[Platform],
    ) -> Vec<Receipt> {
        let devices = match self.backends.devices.list(&user).await {
            Ok(devices) => devices,
            Err(e) => {
                tracing::warn!(%id, error = %e, "devices not read; nothing pushed to this user");
                return vec![receipt(
                    id,
                    &user,
                    ReceiptStatus::PushFailed,
                    "",
                    "devices unavailable",
                )];
            }
        };
        let chosen: Vec<_> = devices
            .iter()
            .filter_map(decode)
            .filter(|d| {
                channels.is_empty()
                    || Platform::try_from(d.platform).is_ok_and(|p| channels.contains(&p))
            })
            .collect();
        let outcomes = futures::future::join_all(chosen.iter().map(|device| async move {
            let outcome = match push_target(device) {
                Some(target) => self.pusher.send(&target, message).await,
                None => Outcome::Failed(kurir_push::Failure::permanent(
                    kurir_push::FailureReason::InvalidDevice("unknown platform".into()),
                )),
            };
            (device, outcome)
        }))
        .await;
        let mut receipts = Vec::with_capacity(outcomes.len());
        let mut sent = Vec::new();
        for (device, outcome) in outcomes {
            let device_id = device.id.as_str();
            let parsed = kurir_backends::devices::DeviceId::parse(device_id).ok();
            let (status, reason) = match outcome {
                Outcome::Sent { .. } => {
                    sent.extend(parsed);
                    (ReceiptStatus::Pushed, String::new())
                }
                Outcome::Gone { reason } => {
                    info!(%id, device = device_id, "push service says the device is gone; removed");
                    if let Some(d) = parsed {
                        if let Err(e) = self.backends.devices.unregister(&user, &d).await {
                            tracing::warn!(device = device_id, error = %e, "gone device not removed");
                        }
                    }
                    (ReceiptStatus::PushFailed, format!("gone: {reason}"))
                }
                Outcome::Failed(failure) => {
                    let reason = failure.reason.to_string();
                    debug!(%id, device = device_id, %reason, "push failed");
                    (ReceiptStatus::PushFailed, reason)
                }
            };
            receipts.push(receipt(id, &user, status, device_id, &reason));
        }
        if !sent.is_empty() {
            // Devices in use stay registered.
            if let Err(e) = self.backends.devices.touch(&user, &sent).await {
                debug!(error = %e, "devices not touched");
            }
        }
        receipts
    }
}

/// The push of a notification, kept by the provider for what is left of its TTL.
fn push_message(id: NotificationId, n: Option<&Notification>, ttl_ms: i64) -> PushMessage {
    let n = n.cloned().unwrap_or_default();
    let mut message = PushMessage::new(id.to_string(), n.title, n.body);
    message.data = n.data.into_iter().collect::<BTreeMap<_, _>>();
    message.collapse_key = Some(n.collapse_key).filter(|k| !k.is_empty());
    message.priority = if n.priority == Priority::High as i32 {
        kurir_push::Priority::High
    } else {
        kurir_push::Priority::Normal
    };
    message.ttl = Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0));
    message
}
