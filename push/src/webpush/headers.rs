//! The RFC 8030 request headers derived from a message: `TTL`, `Urgency`, `Topic`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::message::Priority;

/// RFC 8030 §5.4: a topic is at most 32 characters of the base64url alphabet.
const MAX_TOPIC: usize = 32;

/// The `Topic` for a collapse key: the key itself when it already fits the header's
/// rules, otherwise the first 32 characters of base64url(SHA-256(key)), which is stable
/// so pushes with the same key still replace each other.
#[must_use]
pub fn topic(collapse_key: &str) -> String {
    let fits = !collapse_key.is_empty()
        && collapse_key.len() <= MAX_TOPIC
        && collapse_key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fits {
        return collapse_key.to_owned();
    }
    let mut hashed = URL_SAFE_NO_PAD.encode(Sha256::digest(collapse_key.as_bytes()));
    hashed.truncate(MAX_TOPIC);
    hashed
}

/// The `Urgency` for a priority.
#[must_use]
pub fn urgency(priority: Priority) -> &'static str {
    match priority {
        Priority::High => "high",
        Priority::Normal => "normal",
    }
}
