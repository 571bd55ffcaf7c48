//! Client authentication: a JWT checked before the WebSocket upgrade (and by every
//! other transport that takes the same token).
//!
//! Keys come from `KURIR_JWT_SECRET` (HS256), `KURIR_JWT_PUBLIC_KEY_FILE` (RS256, ES256,
//! EdDSA) and `KURIR_JWT_JWKS_URL` ([`jwks`]); any combination may be set, and each may
//! hold several keys so that keys rotate without a restart or a refused client. A token
//! is tried only against keys of its header's `alg` ([`keys`]), against the key named by
//! its `kid` when it has one; `none` and every other algorithm are refused, as are
//! tokens without `sub` or `exp`, before `nbf`, after `exp` (both with
//! `KURIR_JWT_LEEWAY_SECONDS` of clock skew), or with another `iss` / `aud` than
//! configured.
//!
//! [`Settings`] are what the configuration says; [`verifier`] checks tokens against
//! them; [`keys`] reads fixed keys and [`jwks`] keeps an identity provider's.

pub mod jwks;
pub mod keys;
pub mod policy;
pub mod verifier;

use std::path::PathBuf;
use std::time::Duration;

use kurir_backends::{Secret, Topic, UserId};

pub use keys::KeyError;
pub use policy::Policy;
pub use verifier::Verifier;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    /// Topic names or `prefix.*` patterns this user may subscribe to.
    pub topics: Vec<String>,
    /// Unix seconds after which the session ends: the token's `exp` plus the leeway
    /// (the same instant the token stops being accepted at connect). 0 = never.
    pub expires_at: u64,
}

impl Identity {
    /// Whether the token has expired (leeway included).
    pub fn expired(&self) -> bool {
        self.expires_at != 0 && now_secs() > self.expires_at
    }

    pub fn may_subscribe(&self, topic: &Topic) -> bool {
        self.topics.iter().any(|p| topic.allowed_by(p))
    }
}

/// Why a token was refused (the `reason` label of `kurir_gateway_auth_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("invalid token")]
    Invalid,
    #[error("token expired")]
    Expired,
}

impl AuthError {
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
        }
    }
}

/// The `KURIR_JWT_*` settings: where keys come from and what tokens must carry.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `KURIR_JWT_SECRET`: HS256 secrets, comma-separated.
    pub secret: Option<Secret>,
    /// `KURIR_JWT_PUBLIC_KEY_FILE`.
    pub public_key_file: Option<PathBuf>,
    /// `KURIR_JWT_JWKS_URL`.
    pub jwks_url: Option<String>,
    /// `KURIR_JWT_JWKS_REFRESH_SECONDS`.
    pub jwks_refresh: Duration,
    /// `KURIR_JWT_JWKS_MIN_REFRESH_SECONDS`.
    pub jwks_min_refresh: Duration,
    pub policy: Policy,
}

impl Settings {
    /// The secret setting, unless empty.
    fn secret(&self) -> Option<&str> {
        self.secret
            .as_ref()
            .map(Secret::expose)
            .filter(|s| !s.is_empty())
    }

    /// The JWKS URL, unless empty.
    fn jwks_url(&self) -> Option<&str> {
        self.jwks_url.as_deref().filter(|u| !u.is_empty())
    }
}

/// Check the JWT settings that need no I/O (secret lengths, JWKS URL form).
///
/// # Errors
/// The first bad setting, named.
pub fn check_settings(settings: &Settings) -> Result<(), KeyError> {
    if let Some(secret) = settings.secret() {
        keys::secrets(secret)?;
    }
    if let Some(url) = settings.jwks_url() {
        jwks::check_url(url)?;
    }
    Ok(())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
