//! The JSON frames a client sends after the upgrade, against a model built on a generic
//! JSON parse: a frame is accepted exactly when it is an object whose `type` is known and
//! whose other fields are that type's, and a refusal names one of two codes.
//!
//! Input: the text of one frame (invalid UTF-8 replaced, as only valid text reaches it).

use serde_json::Value;

use crate::under_test::{self, ClientFrame};

/// The longest refusal message for an unknown `type`: the fixed words and the type,
/// truncated to 64 bytes and quoted (escapes may double its bytes).
const MAX_UNKNOWN_TYPE_MESSAGE: usize = 32 + 2 * 4 * 64;

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let got = under_test::parse_client_frame(&text);
    let value = serde_json::from_str::<Value>(&text);
    match got {
        Ok(frame) => {
            let value = value.expect("an accepted frame is JSON");
            let object = value.as_object().expect("an accepted frame is an object");
            let field = |k: &str| object.get(k).and_then(Value::as_str);
            let (kind, fields): (&str, &[&str]) = match &frame {
                ClientFrame::Ack { id } => {
                    assert_eq!(field("id"), Some(id.as_str()));
                    ("ack", &["type", "id"])
                }
                ClientFrame::Subscribe { topic } => {
                    assert_eq!(field("topic"), Some(topic.as_str()));
                    ("subscribe", &["type", "topic"])
                }
                ClientFrame::Unsubscribe { topic } => {
                    assert_eq!(field("topic"), Some(topic.as_str()));
                    ("unsubscribe", &["type", "topic"])
                }
                ClientFrame::Ping => ("ping", &["type"]),
                ClientFrame::PushSubscribe { endpoint } => {
                    let sub = object.get("subscription").expect("a subscription");
                    assert_eq!(
                        sub.get("endpoint").and_then(Value::as_str),
                        Some(endpoint.as_str())
                    );
                    let keys = sub.get("keys").expect("its keys");
                    assert!(keys.get("p256dh").is_some_and(Value::is_string));
                    assert!(keys.get("auth").is_some_and(Value::is_string));
                    ("push_subscribe", &["type", "subscription"])
                }
                ClientFrame::PushUnsubscribe { endpoint } => {
                    assert_eq!(field("endpoint"), Some(endpoint.as_str()));
                    ("push_unsubscribe", &["type", "endpoint"])
                }
            };
            assert_eq!(field("type"), Some(kind));
            // serde's `deny_unknown_fields` does not reach a tagged enum's unit variant:
            // a ping with extra fields is answered like any ping.
            assert!(
                frame == ClientFrame::Ping || object.keys().all(|k| fields.contains(&k.as_str())),
                "unknown fields accepted in {text:?}"
            );
        }
        Err(refusal) => match refusal.code {
            "unknown_type" => {
                let kind = value
                    .ok()
                    .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned));
                assert!(kind.is_some(), "unknown_type without a type: {text:?}");
                assert!(refusal.message.len() <= MAX_UNKNOWN_TYPE_MESSAGE);
            }
            "bad_frame" => {}
            other => panic!("refusal code {other:?}"),
        },
    }
}
