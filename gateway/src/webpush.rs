//! Web Push registration from the browser: which push services a page's subscription
//! may point at (the SSRF guard, `KURIR_WEBPUSH_ALLOWED_ORIGINS`), and the VAPID public
//! key pages subscribe with (`GET /v1/push/key`). The subscription itself is stored as
//! one of the user's devices (see [`crate::client::actions`]); the dispatchers push to
//! it when a notification is not acked in time.

use kurir_push::ssrf::OriginAllowlist;

use crate::config::{Config, ConfigError};

/// What the gateway needs of Web Push.
#[derive(Debug, Default)]
pub struct WebPushEdge {
    pub allowlist: OriginAllowlist,
    /// `None`: no VAPID key configured, pages cannot subscribe through this gateway.
    pub public_key: Option<String>,
}

impl WebPushEdge {
    /// From the gateway's settings.
    ///
    /// # Errors
    /// A malformed allowlist or VAPID key.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let allowlist = config
            .webpush_allowed_origins
            .parse::<OriginAllowlist>()
            .map_err(|e| ConfigError::new("KURIR_WEBPUSH_ALLOWED_ORIGINS", e.to_string()))?;
        let public_key = match (&config.vapid_public_key, &config.vapid_private_key) {
            (Some(public), _) => Some(public.trim().to_owned()),
            (None, Some(private)) => Some(
                kurir_push::webpush::vapid::public_key_of(private.expose()).map_err(|_| {
                    ConfigError::new(
                        "KURIR_VAPID_PRIVATE_KEY",
                        "must be base64url of a raw 32-byte P-256 key (kurir vapid prints one)",
                    )
                })?,
            ),
            (None, None) => None,
        };
        Ok(Self {
            allowlist,
            public_key,
        })
    }
}
