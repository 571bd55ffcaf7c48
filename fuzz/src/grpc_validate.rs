//! The dispatcher's request validation, the gate between an API caller's bytes and the
//! dispatch flow. Requests come from the wire encoding (what tonic decodes from a call's
//! body) or are built field by field from the input's choices, to reach the limits
//! without the fuzzer having to spell ten thousand user ids.
//!
//! Input: a byte choosing the request kind (low 3 bits) and how it is built (bit 3: built
//! from choices, else decoded), then the bytes. Whatever a validator accepts keeps every
//! rule; whatever it refuses gets `INVALID_ARGUMENT` naming a field.

use std::collections::{HashMap, HashSet};

use arbitrary::Unstructured;
use kurir_proto::v1::{
    BroadcastRequest, DisconnectRequest, GetPresenceRequest, Notification, Priority,
    PublishRequest, SendRequest, WatchReceiptsRequest,
};
use prost::Message;
use tonic::Code;

use crate::under_test::{
    self, Refused, MAX_IDEMPOTENCY_KEY_BYTES, MAX_NOTIFICATION_BYTES, MAX_NOTIFICATION_IDS,
    MAX_REASON_BYTES, MAX_TTL_SECONDS, MAX_USERS,
};

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let built = mode & 0x08 != 0;
    let mut u = Unstructured::new(rest);
    // A request that cannot be decoded never reaches validation (tonic answers it), and
    // running out of choices builds a smaller request: nothing to check either way.
    let _ = match mode & 0x07 {
        0 => request(built, rest, &mut u, arb_send).map(check_send),
        1 => request(built, rest, &mut u, arb_publish).map(check_publish),
        2 => request(built, rest, &mut u, |u| {
            Ok(BroadcastRequest {
                notification: arb_notification(u)?,
                ..Default::default()
            })
        })
        .map(check_broadcast),
        3 => request(built, rest, &mut u, |u| {
            Ok(GetPresenceRequest {
                user_ids: arb_ids(u, MAX_USERS)?,
            })
        })
        .map(check_presence),
        4 => request(built, rest, &mut u, |u| {
            Ok(DisconnectRequest {
                user_id: arb_id(u)?,
                reason: arb_text(u)?,
            })
        })
        .map(check_disconnect),
        _ => request(built, rest, &mut u, |u| {
            Ok(WatchReceiptsRequest {
                user_ids: arb_ids(u, MAX_USERS)?,
                notification_ids: arb_ids(u, MAX_NOTIFICATION_IDS)?,
            })
        })
        .map(check_watch),
    };
}

/// A request decoded from `bytes`, or built by `build` from `u`'s choices.
fn request<M: Message + Default>(
    built: bool,
    bytes: &[u8],
    u: &mut Unstructured<'_>,
    build: impl FnOnce(&mut Unstructured<'_>) -> arbitrary::Result<M>,
) -> Option<M> {
    if built {
        build(u).ok()
    } else {
        M::decode(bytes).ok()
    }
}

fn refused(status: &Refused) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let (field, reason) = status
        .message()
        .split_once(": ")
        .unwrap_or_else(|| panic!("a refusal names its field: {:?}", status.message()));
    assert!(!field.is_empty() && !reason.is_empty());
}

fn valid_notification(n: &Notification) {
    assert!(n.encoded_len() <= MAX_NOTIFICATION_BYTES);
    assert!(!(n.title.is_empty() && n.body.is_empty()));
    assert!(Priority::try_from(n.priority).is_ok());
}

fn valid_users(users: &[String], raw: &[String]) {
    assert!(users.len() <= MAX_USERS);
    assert!(users.iter().all(|u| under_test::is_user_id(u)));
    let distinct: HashSet<&String> = users.iter().collect();
    assert_eq!(distinct.len(), users.len(), "duplicates kept");
    // First-seen order, every distinct raw id kept.
    let mut seen = HashSet::new();
    let expected: Vec<&String> = raw.iter().filter(|u| seen.insert(*u)).collect();
    assert_eq!(users.iter().collect::<Vec<_>>(), expected);
}

fn check_send(req: SendRequest) {
    let raw = req.user_ids.clone();
    let (ttl, key) = (req.ttl_seconds, req.idempotency_key.clone());
    match under_test::validate_send(req) {
        Ok(cmd) => {
            assert!(!cmd.users.is_empty());
            valid_users(&cmd.users, &raw);
            valid_notification(&cmd.notification);
            assert!(cmd.ttl_seconds <= MAX_TTL_SECONDS && cmd.ttl_seconds == ttl);
            match cmd.idempotency_key {
                None => assert!(key.is_empty()),
                Some(k) => {
                    assert_eq!(k, key);
                    assert!(k.len() <= MAX_IDEMPOTENCY_KEY_BYTES);
                    assert!(k.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
                }
            }
        }
        Err(status) => refused(&status),
    }
}

fn check_publish(req: PublishRequest) {
    let topic = req.topic.clone();
    match under_test::validate_publish(req) {
        Ok((t, n)) => {
            assert_eq!(t, topic);
            assert!(under_test::is_topic(&t));
            valid_notification(&n);
        }
        Err(status) => refused(&status),
    }
}

fn check_broadcast(req: BroadcastRequest) {
    match under_test::validate_broadcast(req) {
        Ok(n) => valid_notification(&n),
        Err(status) => refused(&status),
    }
}

fn check_presence(req: GetPresenceRequest) {
    let raw = req.user_ids.clone();
    match under_test::validate_get_presence(req) {
        Ok(users) => {
            assert!(!users.is_empty());
            valid_users(&users, &raw);
        }
        Err(status) => refused(&status),
    }
}

fn check_disconnect(req: DisconnectRequest) {
    let (user, reason) = (req.user_id.clone(), req.reason.clone());
    match under_test::validate_disconnect(req) {
        Ok((u, r)) => {
            assert_eq!(u, user);
            assert!(r.len() <= MAX_REASON_BYTES && reason.starts_with(&r));
            // Cut only as much as needed: at most one character short of the limit.
            let full = reason.len().min(MAX_REASON_BYTES);
            assert!(
                full - r.len() < 4,
                "{} of {} bytes kept",
                r.len(),
                reason.len()
            );
        }
        Err(status) => refused(&status),
    }
}

fn check_watch(req: WatchReceiptsRequest) {
    let raw = req.user_ids.clone();
    let id_count = req.notification_ids.len();
    match under_test::validate_watch_receipts(req) {
        Ok(filter) => {
            assert!(filter.users.len() <= MAX_USERS && filter.users.len() <= raw.len());
            assert!(filter.users.iter().all(|u| under_test::is_user_id(u)));
            assert!(filter.ids.len() <= id_count.min(MAX_NOTIFICATION_IDS));
        }
        Err(status) => refused(&status),
    }
}

// ---- Requests built from choices -------------------------------------------------------

// Fields the request gains later keep their defaults until a rule names them.
#[allow(clippy::needless_update)]
fn arb_send(u: &mut Unstructured<'_>) -> arbitrary::Result<SendRequest> {
    Ok(SendRequest {
        user_ids: arb_ids(u, MAX_USERS)?,
        notification: arb_notification(u)?,
        ttl_seconds: *u.choose(&[0, 1, 60, MAX_TTL_SECONDS, MAX_TTL_SECONDS + 1, u32::MAX])?,
        idempotency_key: match u.int_in_range(0..=3)? {
            0 => String::new(),
            1 => "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES + usize::from(u.arbitrary::<bool>()?)),
            _ => arb_text(u)?,
        },
        ..Default::default()
    })
}

fn arb_publish(u: &mut Unstructured<'_>) -> arbitrary::Result<PublishRequest> {
    Ok(PublishRequest {
        topic: match u.int_in_range(0..=2)? {
            0 => (*u.choose(&["orders.eu", "a", "a..b", "a.*", ".a", "a.", "x-y_z.9"])?).into(),
            1 => "t".repeat(*u.choose(&[128, 129])?),
            _ => arb_text(u)?,
        },
        notification: arb_notification(u)?,
        ..Default::default()
    })
}

fn arb_notification(u: &mut Unstructured<'_>) -> arbitrary::Result<Option<Notification>> {
    if u.ratio(1, 16)? {
        return Ok(None);
    }
    let mut data = HashMap::new();
    for _ in 0..u.int_in_range(0..=4)? {
        data.insert(arb_text(u)?, arb_text(u)?);
    }
    Ok(Some(Notification {
        title: arb_text(u)?,
        body: match u.int_in_range(0..=7)? {
            // Around the size limit: 3 bytes of field 2's tag and length, plus the rest.
            0 => "b".repeat(MAX_NOTIFICATION_BYTES - u.int_in_range(0..=8)?),
            _ => arb_text(u)?,
        },
        data,
        priority: *u.choose(&[0, 1, 2, -1, 3, i32::MAX, i32::MIN])?,
        collapse_key: arb_text(u)?,
    }))
}

/// A list of ids: a few chosen ones, or many, around the `max` limit.
fn arb_ids(u: &mut Unstructured<'_>, max: usize) -> arbitrary::Result<Vec<String>> {
    Ok(match u.int_in_range(0..=15)? {
        0 => {
            let n = *u.choose(&[max, max + 1])?;
            (0..n).map(|i| format!("u{i}")).collect()
        }
        1 => vec!["dup".to_string(); *u.choose(&[max, max + 1])?],
        _ => {
            let mut ids = Vec::new();
            for _ in 0..u.int_in_range(0..=6)? {
                ids.push(arb_id(u)?);
            }
            ids
        }
    })
}

fn arb_id(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    Ok(match u.int_in_range(0..=3)? {
        0 => (*u.choose(&[
            "alice",
            "bob",
            "",
            "a b",
            "{x}",
            "0190b2f5-8c3e-7d4a-9b1c-2d3e4f5a6b7c",
            "0190B2F5-8C3E-7D4A-9B1C-2D3E4F5A6B7C",
            "not-a-uuid",
        ])?)
        .into(),
        1 => "u".repeat(*u.choose(&[128, 129])?),
        _ => arb_text(u)?,
    })
}

/// Any string, mostly short.
fn arb_text(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    u.arbitrary()
}
