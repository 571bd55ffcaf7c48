//! `Send`: the idempotency claim, the inbox append of a stored notification, and the
//! hand-over to the router; the failure rules are in the [module docs](super).

use bytes::Bytes;
use kurir_backends::inbox::NewEntry;
use kurir_backends::{BackendError, NotificationId, UserId};
use kurir_proto::internal::v1::Delivery;
use kurir_runtime::now_ms;
use prost::Message;
use tracing::debug;

use super::idempotency::{self, Admission, ClaimGuard, Scope};
use super::{record_id, Dispatch, SendCommand, SendOutcome};
use crate::error::DispatchError;
use crate::route::Recipient;

impl Dispatch {
    /// Notify users; see the module docs for the order of steps and the failure rules.
    /// `scope` is the caller's: its idempotency keys are its own.
    ///
    /// # Errors
    /// `Backend` when the claim or the append fails, or, for a live notification, when
    /// the lookup or a publish fails; `SendInProgress` when another call holds the
    /// idempotency key pending for longer than [`IN_PROGRESS_WAIT`](super::IN_PROGRESS_WAIT);
    /// `IdempotencyKeyReused` when the key was used for a different request.
    pub async fn send(
        &self,
        cmd: SendCommand,
        scope: &Scope,
    ) -> Result<SendOutcome, DispatchError> {
        let id = NotificationId::generate();
        record_id(id);
        let claim = match idempotency::admit(&self.backends.inbox, scope, &cmd, id).await? {
            Admission::Send(claim) => claim,
            Admission::Repeat(first) => {
                record_id(first);
                return Ok(SendOutcome {
                    id: first,
                    online_users: 0,
                    stored_users: 0,
                });
            }
        };
        if cmd.send_at > now_ms() {
            return self.schedule_send(id, cmd, claim).await;
        }
        self.deliver(id, cmd, claim).await
    }

    /// Everything after the idempotency claim: fallback check, inbox, routing. Also what
    /// a scheduled `Send` runs when it comes due (with no claim: that was settled when
    /// it was scheduled).
    pub(super) async fn deliver(
        &self,
        id: NotificationId,
        cmd: SendCommand,
        mut claim: Option<ClaimGuard>,
    ) -> Result<SendOutcome, DispatchError> {
        let created_at = now_ms();
        let stored = cmd.ttl_seconds > 0;
        let delivery = Delivery {
            id: id.to_string(),
            notification: Some(cmd.notification),
            topic: String::new(),
            created_at,
            expires_at: if stored {
                created_at + i64::from(cmd.ttl_seconds) * 1000
            } else {
                0
            },
            recipients: Vec::new(),
        };
        // The fallback check is parked before the append, due only at the expiry, so a
        // check that cannot be stored fails the call while nothing is stored yet; it is
        // armed (moved to its wait) once the inbox holds the notification, so it never
        // runs before the append. See the fallback module docs for the failure cases.
        let fallback = match (&cmd.fallback, &delivery.notification) {
            (Some(policy), Some(notification)) => {
                let check =
                    self.fallback_check(id, &cmd.users, notification, delivery.expires_at, policy);
                if let Err(e) = self
                    .schedule_fallback(id, delivery.expires_at, &check)
                    .await
                {
                    if let Some(claim) = claim.take() {
                        claim.release().await;
                    }
                    return Err(e.into());
                }
                Some((created_at + i64::from(policy.after_ms), check))
            }
            _ => None,
        };
        let result = if stored {
            self.store_and_route(id, delivery, cmd.users, claim).await
        } else {
            self.route_live(id, delivery, cmd.users, claim).await
        };
        if let Some((due_at, check)) = fallback {
            if result.is_ok() {
                self.arm_fallback(id, due_at, &check).await;
            } else {
                self.drop_fallback(id).await;
            }
        }
        match &result {
            Ok(out) => debug!(%id, online = out.online_users, stored = out.stored_users, "sent"),
            Err(e) => debug!(%id, error = %e, "send failed"),
        }
        result
    }

    /// A stored notification: appended to every inbox, its key settled, then routed.
    /// Routing cannot fail the call any more; the router retries it.
    async fn store_and_route(
        &self,
        id: NotificationId,
        delivery: Delivery,
        users: Vec<UserId>,
        mut claim: Option<ClaimGuard>,
    ) -> Result<SendOutcome, DispatchError> {
        let entry = NewEntry {
            id,
            expires_at: delivery.expires_at,
            payload: Bytes::from(delivery.encode_to_vec()),
            collapse_key: delivery
                .notification
                .as_ref()
                .map(|n| n.collapse_key.clone()),
        };
        let appended = match self.backends.inbox.append(&users, &entry).await {
            Ok(c) if c.len() == users.len() => c,
            Ok(c) => {
                // A contract violation: the claim guard, dropped here, gives the key up.
                let what = format!(
                    "append returned {} cursors for {} users",
                    c.len(),
                    users.len()
                );
                return Err(BackendError::corrupt("inbox", what).into());
            }
            Err(e) => {
                if let Some(claim) = claim.take() {
                    claim.release().await;
                }
                return Err(e.into());
            }
        };
        let stored_users = users.len() as u32;
        self.stored.increment(users.len() as u64);
        // Stored: from here on the notification reaches its users whatever happens.
        if let Some(claim) = claim.take() {
            claim.settle().await;
        }
        self.report_dropped(&users, &appended).await;
        // The inbox answers with one cursor per user, in their order.
        let recipients = users
            .into_iter()
            .zip(appended)
            .map(|(user, a)| Recipient {
                user,
                cursor: Some(a.cursor),
            })
            .collect();
        let online_users = self.router.route_stored(delivery, recipients).await;
        Ok(SendOutcome {
            id,
            online_users,
            stored_users,
        })
    }

    /// A live notification: it exists only in flight, so a routing failure fails the
    /// call and gives its key up.
    async fn route_live(
        &self,
        id: NotificationId,
        delivery: Delivery,
        users: Vec<UserId>,
        claim: Option<ClaimGuard>,
    ) -> Result<SendOutcome, DispatchError> {
        let recipients: Vec<Recipient> = users.into_iter().map(Recipient::live).collect();
        match self.router.route_live(delivery, &recipients).await {
            Ok(online_users) => {
                if let Some(claim) = claim {
                    claim.settle().await;
                }
                Ok(SendOutcome {
                    id,
                    online_users,
                    stored_users: 0,
                })
            }
            Err(e) => {
                if let Some(claim) = claim {
                    claim.release().await;
                }
                Err(e.error.into())
            }
        }
    }
}
