//! Where a push goes: a device's registration with one of the three services.

use std::fmt;

use crate::outcome::Provider;

/// A browser's `PushSubscription` (the JSON `endpoint` and `keys.{p256dh,auth}`).
#[derive(Clone, PartialEq, Eq)]
pub struct WebPushSubscription {
    /// The push service URL; a capability, so it is never logged.
    pub endpoint: String,
    /// The browser's P-256 public key, base64url of the uncompressed point.
    pub p256dh: String,
    /// The 16-byte authentication secret, base64url.
    pub auth: String,
}

impl fmt::Debug for WebPushSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebPushSubscription")
            .finish_non_exhaustive()
    }
}

/// A registered device.
#[derive(Clone, PartialEq, Eq)]
pub enum Device {
    WebPush(WebPushSubscription),
    /// An FCM registration token.
    Fcm {
        token: String,
    },
    /// An APNs device token (hex), and the app's `apns-topic` (its bundle id) when it is
    /// not the configured one.
    Apns {
        token: String,
        topic: Option<String>,
    },
}

impl Device {
    /// The provider that carries pushes to this device.
    #[must_use]
    pub fn provider(&self) -> Provider {
        match self {
            Self::WebPush(_) => Provider::WebPush,
            Self::Fcm { .. } => Provider::Fcm,
            Self::Apns { .. } => Provider::Apns,
        }
    }
}

/// Tokens are credentials for pushing to a user, so only the provider is shown.
impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Device({})", self.provider())
    }
}

/// The stable id of a device: the first 16 bytes of SHA-256 over the platform's name
/// (`WEB_PUSH`, `FCM`, `APNS`), a zero byte, and its token (or Web Push endpoint), in
/// hex. Registering the same device again, through the API or from the browser, lands
/// on the same id.
#[must_use]
pub fn device_key(platform: &str, token_or_endpoint: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(platform.as_bytes());
    h.update([0]);
    h.update(token_or_endpoint.as_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a browser subscription was refused: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SubscriptionError {
    pub field: &'static str,
    pub reason: String,
}

/// The longest Web Push endpoint accepted.
pub const MAX_ENDPOINT_BYTES: usize = 4096;

/// Check a browser's subscription before it is stored: the endpoint is a push service
/// on `allowlist` (the SSRF guard), `p256dh` an uncompressed P-256 point and `auth` 16
/// bytes, both base64url.
///
/// # Errors
/// The first field that is wrong.
pub fn check_subscription(
    sub: &WebPushSubscription,
    allowlist: &crate::ssrf::OriginAllowlist,
) -> Result<(), SubscriptionError> {
    let refuse = |field, reason: &str| SubscriptionError {
        field,
        reason: reason.to_owned(),
    };
    if sub.endpoint.len() > MAX_ENDPOINT_BYTES {
        return Err(refuse(
            "endpoint",
            &format!("must be at most {MAX_ENDPOINT_BYTES} bytes"),
        ));
    }
    // The push service is whatever the browser says: only known ones are reached.
    allowlist
        .check(&sub.endpoint)
        .map_err(|e| refuse("endpoint", &e.to_string()))?;
    let p256dh = base64url(&sub.p256dh).ok_or_else(|| refuse("p256dh", "must be base64url"))?;
    if p256dh.len() != 65 || p256dh[0] != 0x04 {
        return Err(refuse(
            "p256dh",
            "must be base64url of an uncompressed P-256 point (65 bytes)",
        ));
    }
    let auth = base64url(&sub.auth).ok_or_else(|| refuse("auth", "must be base64url"))?;
    if auth.len() != 16 {
        return Err(refuse("auth", "must be base64url of 16 bytes"));
    }
    Ok(())
}

fn base64url(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}
