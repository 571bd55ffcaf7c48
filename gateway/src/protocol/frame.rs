//! Protocol v1 frames (JSON text). Client frames are parsed here; server frames are
//! encoded here, already framed for the wire (`kurir_wire::frame`): a notification once per
//! envelope into [`PreparedNotification`], whose bytes every recipient shares.

use bytes::Bytes;
use kurir_proto::internal::v1::Delivery;
use kurir_proto::v1::{Notification, Priority};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::LazyLock;

use kurir_wire::frame::{self as wire, FrameBuf};

/// What a client may send.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    Ack {
        id: String,
    },
    Subscribe {
        topic: String,
    },
    Unsubscribe {
        topic: String,
    },
    Ping,
    /// The browser's Web Push subscription (`PushSubscription.toJSON()`), to be pushed
    /// to when the page is closed.
    PushSubscribe {
        subscription: PushSubscriptionJson,
    },
    PushUnsubscribe {
        endpoint: String,
    },
}

/// A `PushSubscription` as browsers serialize it (`expirationTime` and other fields are
/// ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PushSubscriptionJson {
    pub endpoint: String,
    pub keys: PushKeys,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PushKeys {
    pub p256dh: String,
    pub auth: String,
}

/// Why a client frame was refused; becomes an `error` frame, the session goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: &'static str,
    pub message: String,
}

impl FrameError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

const KNOWN_TYPES: [&str; 6] = [
    "ack",
    "subscribe",
    "unsubscribe",
    "ping",
    "push_subscribe",
    "push_unsubscribe",
];

/// Parse one text frame.
pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
    // serde also reads a tagged enum from an array (`["ack","<id>"]`); frames are objects.
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err(FrameError::new(
            "bad_frame",
            "malformed frame: expected a JSON object",
        ));
    }
    serde_json::from_str(text).map_err(|e| {
        let kind = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned));
        match kind {
            Some(t) if !KNOWN_TYPES.contains(&t.as_str()) => FrameError::new(
                "unknown_type",
                format!("unknown frame type {:?}", truncate_for_error(&t)),
            ),
            _ => FrameError::new("bad_frame", format!("malformed frame: {e}")),
        }
    })
}

fn truncate_for_error(s: &str) -> &str {
    wire::truncate(s, 64)
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame<'a> {
    Welcome {
        connection_id: String,
        node: &'a str,
        user: &'a str,
        heartbeat_ms: u64,
    },
    Subscribed {
        topic: &'a str,
    },
    Unsubscribed {
        topic: &'a str,
    },
    Pong,
    Error {
        code: &'a str,
        message: &'a str,
    },
    PushSubscribed {
        device_id: &'a str,
    },
    PushUnsubscribed,
}

/// A server frame, framed for the wire.
fn encode(frame: &ServerFrame<'_>) -> Bytes {
    let mut buf = FrameBuf::with_capacity(128);
    // Serializing these plain structs cannot fail.
    let _ = serde_json::to_writer(buf.payload(), frame);
    buf.finish(wire::OP_TEXT)
}

pub fn welcome(connection_id: String, node: &str, user: &str, heartbeat_ms: u64) -> Bytes {
    encode(&ServerFrame::Welcome {
        connection_id,
        node,
        user,
        heartbeat_ms,
    })
}

pub fn subscribed(topic: &str) -> Bytes {
    encode(&ServerFrame::Subscribed { topic })
}

pub fn unsubscribed(topic: &str) -> Bytes {
    encode(&ServerFrame::Unsubscribed { topic })
}

pub fn pong() -> Bytes {
    encode(&ServerFrame::Pong)
}

pub fn push_subscribed(device_id: &str) -> Bytes {
    encode(&ServerFrame::PushSubscribed { device_id })
}

pub fn push_unsubscribed() -> Bytes {
    encode(&ServerFrame::PushUnsubscribed)
}

pub fn error(e: &FrameError) -> Bytes {
    encode(&ServerFrame::Error {
        code: e.code,
        message: &e.message,
    })
}

#[derive(Serialize)]
struct NotificationBody<'a> {
    r#type: &'static str,
    id: &'a str,
    title: &'a str,
    body: &'a str,
    data: &'a HashMap<String, String>,
    topic: Option<&'a str>,
    priority: &'static str,
    collapse_key: Option<&'a str>,
    created_at: i64,
}

/// A notification frame serialized once, missing only its tail (`replayed`, `cursor`),
/// which differs per recipient.
#[derive(Debug, Clone)]
pub struct PreparedNotification {
    /// The JSON object without its closing brace, after room for the frame header.
    head: FrameBuf,
}

/// Bytes reserved after the head: the longest tail (`replayed` and a cursor).
const TAIL: usize = 64;

static NO_NOTIFICATION: LazyLock<Notification> = LazyLock::new(Notification::default);

impl PreparedNotification {
    pub fn new(d: &Delivery) -> Self {
        let n = d.notification.as_ref().unwrap_or(&NO_NOTIFICATION);
        let body = NotificationBody {
            r#type: "notification",
            id: &d.id,
            title: &n.title,
            body: &n.body,
            data: &n.data,
            topic: (!d.topic.is_empty()).then_some(d.topic.as_str()),
            priority: if n.priority == Priority::High as i32 {
                "high"
            } else {
                "normal"
            },
            collapse_key: (!n.collapse_key.is_empty()).then_some(n.collapse_key.as_str()),
            created_at: d.created_at,
        };
        let mut head = FrameBuf::with_capacity(256 + n.title.len() + n.body.len() + TAIL);
        // Serializing borrowed strings and a string map cannot fail.
        let _ = serde_json::to_writer(head.payload(), &body);
        head.payload().pop(); // the closing '}'
        Self { head }
    }

    /// The live frame (not replayed, no cursor), without copying: one allocation per
    /// envelope, whose bytes every recipient writes.
    pub fn into_frame(mut self) -> Bytes {
        Self::tail(self.head.payload(), false, None);
        self.head.finish(wire::OP_TEXT)
    }

    /// The frame for one recipient; stored notifications carry their cursor.
    pub fn frame(&self, replayed: bool, cursor: Option<&str>) -> Bytes {
        let mut buf = FrameBuf::with_capacity(self.head.payload_len() + TAIL);
        buf.payload().extend_from_slice(self.head.payload_bytes());
        Self::tail(buf.payload(), replayed, cursor);
        buf.finish(wire::OP_TEXT)
    }

    fn tail(buf: &mut Vec<u8>, replayed: bool, cursor: Option<&str>) {
        buf.extend_from_slice(if replayed {
            b",\"replayed\":true"
        } else {
            b",\"replayed\":false"
        });
        if let Some(c) = cursor {
            // A cursor comes from the bus or the store: escaped like any string, so
            // whatever it holds stays one JSON string.
            buf.extend_from_slice(b",\"cursor\":");
            // Serializing a string cannot fail.
            let _ = serde_json::to_writer(&mut *buf, c);
        }
        buf.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurir_wire::frame::payload_of;

    #[test]
    fn parses_client_frames() {
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientFrame::Ping));
        assert_eq!(
            parse(r#"{"type":"ack","id":"x"}"#),
            Ok(ClientFrame::Ack { id: "x".into() })
        );
        assert_eq!(parse("{nope").unwrap_err().code, "bad_frame");
        assert_eq!(parse(r#"{"type":"ack"}"#).unwrap_err().code, "bad_frame");
        assert_eq!(
            parse(r#"{"type":"dance"}"#).unwrap_err().code,
            "unknown_type"
        );
        assert_eq!(parse(r#"[1,2]"#).unwrap_err().code, "bad_frame");
    }

    #[test]
    fn a_cursor_is_escaped() {
        let p = PreparedNotification::new(&Delivery::default());
        let evil = "1-2\",\"type\":\"welcome\\";
        let v: serde_json::Value =
            serde_json::from_slice(payload_of(&p.frame(false, Some(evil)))).unwrap();
        assert_eq!(v["cursor"], evil);
        assert_eq!(v["type"], "notification");
    }

    #[test]
    fn notification_frame_is_valid_json() {
        let d = Delivery {
            id: "0190-x".into(),
            notification: Some(Notification {
                title: "Hi \"there\"".into(),
                body: "b".into(),
                data: [("k".to_string(), "v".to_string())].into(),
                ..Default::default()
            }),
            created_at: 42,
            ..Default::default()
        };
        let p = PreparedNotification::new(&d);
        let v: serde_json::Value =
            serde_json::from_slice(payload_of(&p.frame(true, Some("1-2")))).unwrap();
        assert_eq!(v["type"], "notification");
        assert_eq!(v["title"], "Hi \"there\"");
        assert_eq!(v["data"]["k"], "v");
        assert_eq!(v["topic"], serde_json::Value::Null);
        assert_eq!(v["replayed"], true);
        assert_eq!(v["cursor"], "1-2");
        assert_eq!(v["created_at"], 42);
        let live: serde_json::Value =
            serde_json::from_slice(payload_of(&p.frame(false, None))).unwrap();
        assert!(live.get("cursor").is_none());
        assert_eq!(p.clone().into_frame(), p.frame(false, None));
        let bare = PreparedNotification::new(&Delivery::default()).into_frame();
        let bare: serde_json::Value = serde_json::from_slice(payload_of(&bare)).unwrap();
        assert_eq!(
            (
                bare["title"].as_str(),
                bare["data"].as_object().map(|m| m.len())
            ),
            (Some(""), Some(0))
        );
    }

    #[test]
    fn frames_are_objects_not_arrays() {
        // Found by fuzzing: serde accepted these as a ping and an ack.
        for text in [
            r#"["ping"]"#,
            r#" ["ack","0190-x"]"#,
            r#"["subscribe","news"]"#,
        ] {
            assert_eq!(parse(text).unwrap_err().code, "bad_frame", "{text}");
        }
        assert_eq!(parse(" \n{\"type\":\"ping\"}"), Ok(ClientFrame::Ping));
    }
}
