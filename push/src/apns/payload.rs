//! The APNs JSON payload and the headers derived from a message.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::message::{Priority, PushMessage};

/// APNs refuses an `apns-collapse-id` over 64 bytes.
const MAX_COLLAPSE_ID: usize = 64;

/// The `apns-collapse-id` for a collapse key: the key when it fits, otherwise a stable
/// digest of it (43 characters), so equal keys still collapse.
#[must_use]
pub fn collapse_id(collapse_key: &str) -> String {
    if collapse_key.len() <= MAX_COLLAPSE_ID {
        collapse_key.to_owned()
    } else {
        URL_SAFE_NO_PAD.encode(Sha256::digest(collapse_key.as_bytes()))
    }
}

/// `apns-priority`: 10 delivers now, 5 as power allows.
#[must_use]
pub fn priority(priority: Priority) -> &'static str {
    match priority {
        Priority::High => "10",
        Priority::Normal => "5",
    }
}

/// `apns-expiration`: the UNIX time after which APNs stops trying; 0 means deliver
/// once or drop.
#[must_use]
pub fn expiration(message: &PushMessage, now_s: u64) -> u64 {
    match message.ttl.as_secs() {
        0 => 0,
        ttl => now_s + ttl,
    }
}

/// The payload: the alert in `aps`, the Kurir id and the message data beside it.
#[must_use]
pub fn body(message: &PushMessage) -> Value {
    json!({
        "aps": { "alert": { "title": message.title, "body": message.body } },
        "kurir_id": message.id,
        "data": message.data,
    })
}
