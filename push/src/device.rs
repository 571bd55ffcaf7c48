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
    /// An APNs device token (hex).
    Apns {
        token: String,
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
