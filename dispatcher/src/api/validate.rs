//! Requests in, validated domain values out. Every rule of the API lives here; each
//! refusal names the field (`user_ids[3]: must not be empty`), and nothing is stored or
//! published for a refused request because the flow only accepts these values.

use std::collections::HashSet;

use kurir_backends::{NotificationId, Topic, UserId};
use kurir_proto::v1::{
    BroadcastRequest, DisconnectRequest, GetPresenceRequest, Notification, Priority,
    PublishRequest, SendRequest, WatchReceiptsRequest,
};
use prost::Message;

use crate::dispatch::{DisconnectCommand, ReceiptFilter, SendCommand};
use crate::error::DispatchError;
/// The limits these checks enforce, where the rules are.
pub use crate::limits::{
    MAX_IDEMPOTENCY_KEY_BYTES, MAX_NOTIFICATION_BYTES, MAX_NOTIFICATION_IDS, MAX_REASON_BYTES,
    MAX_SCHEDULE_AHEAD_MS, MAX_SEND_REQUEST_BYTES, MAX_TTL_SECONDS, MAX_USERS,
};

/// `RegisterDevice`, `UnregisterDevice`, `ListDevices`, `CancelScheduled`, and the
/// `fallback` and `send_at` fields.
pub mod offline;

pub fn send(req: SendRequest) -> Result<SendCommand, DispatchError> {
    let users = user_ids("user_ids", &req.user_ids, true)?;
    let notification = notification(req.notification)?;
    if req.ttl_seconds > MAX_TTL_SECONDS {
        return Err(DispatchError::invalid(
            "ttl_seconds",
            format!("must be at most {MAX_TTL_SECONDS} (30 days)"),
        ));
    }
    let idempotency_key = idempotency_key(req.idempotency_key)?;
    let fallback = offline::fallback(req.fallback, req.ttl_seconds)?;
    let send_at = offline::send_at("send_at", req.send_at)?;
    Ok(SendCommand {
        users,
        notification,
        ttl_seconds: req.ttl_seconds,
        idempotency_key,
        fallback,
        send_at,
    })
}

pub fn publish(req: PublishRequest) -> Result<(Topic, Notification), DispatchError> {
    let topic = Topic::parse(&req.topic).map_err(|e| DispatchError::invalid("topic", e.reason))?;
    Ok((topic, notification(req.notification)?))
}

pub fn broadcast(req: BroadcastRequest) -> Result<Notification, DispatchError> {
    notification(req.notification)
}

pub fn get_presence(req: GetPresenceRequest) -> Result<Vec<UserId>, DispatchError> {
    user_ids("user_ids", &req.user_ids, true)
}

pub fn disconnect(req: DisconnectRequest) -> Result<DisconnectCommand, DispatchError> {
    let user =
        UserId::parse(&req.user_id).map_err(|e| DispatchError::invalid("user_id", e.reason))?;
    let mut reason = req.reason;
    truncate_at_char_boundary(&mut reason, MAX_REASON_BYTES);
    Ok(DisconnectCommand { user, reason })
}

pub fn watch_receipts(req: WatchReceiptsRequest) -> Result<ReceiptFilter, DispatchError> {
    let users = user_ids("user_ids", &req.user_ids, false)?
        .into_iter()
        .map(|u| u.as_str().to_owned())
        .collect();
    if req.notification_ids.len() > MAX_NOTIFICATION_IDS {
        return Err(DispatchError::invalid(
            "notification_ids",
            format!(
                "must contain at most {MAX_NOTIFICATION_IDS} ids, got {}",
                req.notification_ids.len()
            ),
        ));
    }
    let ids = req
        .notification_ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            NotificationId::parse(id)
                .map_err(|e| DispatchError::invalid(format!("notification_ids[{i}]"), e.reason))
        })
        .collect::<Result<HashSet<_>, _>>()?;
    Ok(ReceiptFilter { users, ids })
}

/// `1..=MAX_USERS` valid ids (or `0..` when `!required`), deduplicated in first-seen order.
pub(crate) fn user_ids(
    field: &str,
    raw: &[String],
    required: bool,
) -> Result<Vec<UserId>, DispatchError> {
    if required && raw.is_empty() {
        return Err(DispatchError::invalid(
            field,
            format!("must contain 1 to {MAX_USERS} user ids"),
        ));
    }
    if raw.len() > MAX_USERS {
        return Err(DispatchError::invalid(
            field,
            format!(
                "must contain at most {MAX_USERS} user ids, got {}",
                raw.len()
            ),
        ));
    }
    let mut seen = HashSet::with_capacity(raw.len());
    let mut users = Vec::with_capacity(raw.len());
    for (i, id) in raw.iter().enumerate() {
        let user = UserId::parse(id)
            .map_err(|e| DispatchError::invalid(format!("{field}[{i}]"), e.reason))?;
        if seen.insert(user.clone()) {
            users.push(user);
        }
    }
    Ok(users)
}

fn notification(n: Option<Notification>) -> Result<Notification, DispatchError> {
    let n = n.ok_or_else(|| DispatchError::invalid("notification", "required"))?;
    let size = n.encoded_len();
    if size > MAX_NOTIFICATION_BYTES {
        return Err(DispatchError::invalid(
            "notification",
            format!("encoded size {size} bytes exceeds {MAX_NOTIFICATION_BYTES}"),
        ));
    }
    if n.title.is_empty() && n.body.is_empty() {
        return Err(DispatchError::invalid(
            "notification",
            "title or body must be set",
        ));
    }
    if Priority::try_from(n.priority).is_err() {
        return Err(DispatchError::invalid(
            "notification.priority",
            format!("unknown value {}", n.priority),
        ));
    }
    Ok(n)
}

/// Empty = none. Printable ASCII only: the key ends up in a Redis key name and in logs.
fn idempotency_key(key: String) -> Result<Option<String>, DispatchError> {
    if key.is_empty() {
        return Ok(None);
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(DispatchError::invalid(
            "idempotency_key",
            format!(
                "must be at most {MAX_IDEMPOTENCY_KEY_BYTES} bytes, got {}",
                key.len()
            ),
        ));
    }
    if !key.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(DispatchError::invalid(
            "idempotency_key",
            "must be printable ASCII",
        ));
    }
    Ok(Some(key))
}

fn truncate_at_char_boundary(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_largest_valid_send_fits_its_computed_size() {
        let id = |i: usize| format!("{i:0>128}");
        let req = SendRequest {
            user_ids: (0..MAX_USERS).map(id).collect(),
            notification: Some(Notification {
                title: "x".repeat(MAX_NOTIFICATION_BYTES - 3),
                ..Default::default()
            }),
            ttl_seconds: MAX_TTL_SECONDS,
            idempotency_key: "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES),
            fallback: Some(kurir_proto::v1::Fallback {
                channels: vec![1, 2, 3],
                after_ms: MAX_TTL_SECONDS * 1000 - 1,
            }),
            send_at: -1,
        };
        let size = req.encoded_len();
        send(req).expect("valid");
        assert!(size <= MAX_SEND_REQUEST_BYTES, "{size}");
        assert!(size + 8 >= MAX_SEND_REQUEST_BYTES, "{size}");
        assert_eq!(MAX_SEND_REQUEST_BYTES, 1_314_259);
        const { assert!(MAX_SEND_REQUEST_BYTES < crate::config::DEFAULT_GRPC_MAX_MESSAGE_BYTES / 3) };
    }

    use super::*;

    fn note(title: &str) -> Option<Notification> {
        Some(Notification {
            title: title.into(),
            ..Default::default()
        })
    }

    fn send_req(users: &[&str]) -> SendRequest {
        SendRequest {
            user_ids: users.iter().map(|u| u.to_string()).collect(),
            notification: note("hi"),
            ..Default::default()
        }
    }

    fn message(err: DispatchError) -> String {
        err.to_string()
    }

    #[test]
    fn a_good_send_is_deduplicated_in_order() {
        let cmd = send(send_req(&["bob", "alice", "bob"])).unwrap();
        let users: Vec<&str> = cmd.users.iter().map(UserId::as_str).collect();
        assert_eq!(users, ["bob", "alice"]);
        assert_eq!(cmd.idempotency_key, None);
    }

    #[test]
    fn user_id_counts_are_bounded() {
        let err = send(send_req(&[])).unwrap_err();
        assert_eq!(message(err), "user_ids: must contain 1 to 10000 user ids");
        let many: Vec<String> = (0..=MAX_USERS).map(|i| format!("u{i}")).collect();
        let req = SendRequest {
            user_ids: many,
            notification: note("hi"),
            ..Default::default()
        };
        assert_eq!(
            message(send(req).unwrap_err()),
            "user_ids: must contain at most 10000 user ids, got 10001"
        );
        let max: Vec<String> = (0..MAX_USERS).map(|i| format!("u{i}")).collect();
        let req = SendRequest {
            user_ids: max,
            notification: note("hi"),
            ..Default::default()
        };
        assert_eq!(send(req).unwrap().users.len(), MAX_USERS);
    }

    #[test]
    fn bad_user_ids_name_their_index() {
        let err = send(send_req(&["a", "b", "c", ""])).unwrap_err();
        assert_eq!(message(err), "user_ids[3]: must not be empty");
        let err = send(send_req(&["a b"])).unwrap_err();
        assert!(message(err).starts_with("user_ids[0]: must not contain"));
    }

    #[test]
    fn notification_rules() {
        let mut req = send_req(&["a"]);
        req.notification = None;
        assert_eq!(message(send(req).unwrap_err()), "notification: required");

        let mut req = send_req(&["a"]);
        req.notification = note("");
        assert_eq!(
            message(send(req).unwrap_err()),
            "notification: title or body must be set"
        );

        let mut req = send_req(&["a"]);
        req.notification = Some(Notification {
            body: "x".repeat(100 * 1024),
            ..Default::default()
        });
        let size = req.notification.as_ref().unwrap().encoded_len();
        assert_eq!(
            message(send(req).unwrap_err()),
            format!("notification: encoded size {size} bytes exceeds 4096")
        );

        let mut req = send_req(&["a"]);
        req.notification = Some(Notification {
            title: "t".into(),
            priority: 9,
            ..Default::default()
        });
        assert_eq!(
            message(send(req).unwrap_err()),
            "notification.priority: unknown value 9"
        );
    }

    #[test]
    fn the_size_limit_is_inclusive() {
        // Field 2 (body): 1 tag byte + 2 length bytes + payload.
        let mut req = send_req(&["a"]);
        req.notification = Some(Notification {
            body: "x".repeat(MAX_NOTIFICATION_BYTES - 3),
            ..Default::default()
        });
        assert_eq!(
            req.notification.as_ref().unwrap().encoded_len(),
            MAX_NOTIFICATION_BYTES
        );
        assert!(send(req).is_ok());
    }

    #[test]
    fn ttl_and_idempotency_key_rules() {
        let mut req = send_req(&["a"]);
        req.ttl_seconds = MAX_TTL_SECONDS;
        assert!(send(req).is_ok());
        let mut req = send_req(&["a"]);
        req.ttl_seconds = MAX_TTL_SECONDS + 1;
        assert!(message(send(req).unwrap_err()).starts_with("ttl_seconds: "));

        let mut req = send_req(&["a"]);
        req.idempotency_key = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES);
        assert!(send(req).unwrap().idempotency_key.is_some());
        let mut req = send_req(&["a"]);
        req.idempotency_key = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES + 1);
        assert!(message(send(req).unwrap_err()).starts_with("idempotency_key: must be at most"));
        let mut req = send_req(&["a"]);
        req.idempotency_key = "tab\there".into();
        assert_eq!(
            message(send(req).unwrap_err()),
            "idempotency_key: must be printable ASCII"
        );
    }

    #[test]
    fn topics() {
        let ok = publish(PublishRequest {
            topic: "orders.eu".into(),
            notification: note("t"),
            ..Default::default()
        });
        assert_eq!(ok.unwrap().0.as_str(), "orders.eu");
        for bad in ["", "a..b", "a b", "a.*", &"x".repeat(129)] {
            let err = publish(PublishRequest {
                topic: bad.into(),
                notification: note("t"),
                ..Default::default()
            })
            .unwrap_err();
            assert!(message(err).starts_with("topic: "), "{bad}");
        }
    }

    #[test]
    fn presence_needs_ids() {
        let err = get_presence(GetPresenceRequest { user_ids: vec![] }).unwrap_err();
        assert!(message(err).starts_with("user_ids: "));
        let users = get_presence(GetPresenceRequest {
            user_ids: vec!["a".into(), "a".into()],
        })
        .unwrap();
        assert_eq!(users.len(), 1);
    }

    #[test]
    fn disconnect_reason_is_truncated_at_a_char_boundary() {
        let cmd = disconnect(DisconnectRequest {
            user_id: "alice".into(),
            reason: "é".repeat(100), // 200 bytes
        })
        .unwrap();
        assert_eq!(cmd.reason.len(), 120);
        let cmd = disconnect(DisconnectRequest {
            user_id: "alice".into(),
            reason: format!("x{}", "é".repeat(100)), // the 120th byte splits an 'é'
        })
        .unwrap();
        assert_eq!(cmd.reason.len(), 119);
        assert!(cmd.reason.is_char_boundary(cmd.reason.len()));
        let err = disconnect(DisconnectRequest {
            user_id: String::new(),
            reason: String::new(),
        })
        .unwrap_err();
        assert_eq!(message(err), "user_id: must not be empty");
    }

    #[test]
    fn receipt_filters() {
        let f = watch_receipts(WatchReceiptsRequest::default()).unwrap();
        assert!(f.users.is_empty() && f.ids.is_empty());
        let err = watch_receipts(WatchReceiptsRequest {
            user_ids: vec![],
            notification_ids: vec![NotificationId::generate().to_string(), "nope".into()],
        })
        .unwrap_err();
        assert_eq!(message(err), "notification_ids[1]: must be a UUID");
        let err = watch_receipts(WatchReceiptsRequest {
            user_ids: vec!["ok".into(), "{x}".into()],
            notification_ids: vec![],
        })
        .unwrap_err();
        assert!(message(err).starts_with("user_ids[1]: "));
    }
}
