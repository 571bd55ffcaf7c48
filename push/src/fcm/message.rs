//! The FCM HTTP v1 message for a Kurir notification, with the Android, APNs and Web Push
//! sections FCM forwards to each platform.

use serde_json::{json, Map, Value};

use crate::message::{Priority, PushMessage};
use crate::webpush::headers;

/// The data key that carries the notification's Kurir id.
pub const ID_KEY: &str = "kurir_id";

/// The body of `messages:send` for `token`.
#[must_use]
pub fn send_body(token: &str, message: &PushMessage) -> Value {
    let mut data: Map<String, Value> = message
        .data
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    data.insert(ID_KEY.to_owned(), Value::String(message.id.clone()));
    let ttl = message.ttl.as_secs();

    let mut android = json!({
        "priority": match message.priority { Priority::High => "HIGH", Priority::Normal => "NORMAL" },
        "ttl": format!("{ttl}s"),
    });
    let mut apns_headers = json!({
        "apns-priority": match message.priority { Priority::High => "10", Priority::Normal => "5" },
    });
    let mut webpush_headers = json!({
        "TTL": ttl.to_string(),
        "Urgency": headers::urgency(message.priority),
    });
    if let Some(key) = &message.collapse_key {
        android["collapse_key"] = json!(key);
        apns_headers["apns-collapse-id"] = json!(crate::apns::collapse_id(key));
        webpush_headers["Topic"] = json!(headers::topic(key));
    }
    json!({
        "message": {
            "token": token,
            "notification": { "title": message.title, "body": message.body },
            "data": data,
            "android": android,
            "apns": { "headers": apns_headers },
            "webpush": { "headers": webpush_headers },
        }
    })
}
