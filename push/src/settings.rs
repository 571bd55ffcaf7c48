//! The push settings, as one clap struct the dispatcher flattens. A provider whose
//! settings are absent is simply not configured; a half-configured one is an error.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use thiserror::Error;

use crate::breaker::BreakerPolicy;
use crate::guard::GuardPolicy;
use crate::retry::RetryPolicy;
use crate::secret::Secret;
use crate::ssrf::{OriginAllowlist, SsrfError, DEFAULT_ALLOWED_ORIGINS};
use crate::{apns, fcm};

/// Default of `KURIR_FCM_ENDPOINT`.
pub const DEFAULT_FCM_ENDPOINT: &str = fcm::DEFAULT_ENDPOINT;
/// Default of `KURIR_APNS_ENDPOINT`.
pub const DEFAULT_APNS_ENDPOINT: &str = apns::DEFAULT_ENDPOINT;
/// Default of `KURIR_WEBPUSH_ALLOWED_ORIGINS`.
pub const DEFAULT_WEBPUSH_ALLOWED_ORIGINS: &str = DEFAULT_ALLOWED_ORIGINS;
/// Default of `KURIR_PUSH_CONCURRENCY`.
pub const DEFAULT_PUSH_CONCURRENCY: usize = 64;
/// Default of `KURIR_PUSH_TIMEOUT_MS`.
pub const DEFAULT_PUSH_TIMEOUT_MS: u64 = 10_000;
/// Default of `KURIR_PUSH_MAX_ATTEMPTS`.
pub const DEFAULT_PUSH_MAX_ATTEMPTS: u32 = 3;
/// Default of `KURIR_PUSH_RETRY_BASE_MS`.
pub const DEFAULT_PUSH_RETRY_BASE_MS: u64 = 500;
/// Default of `KURIR_PUSH_RETRY_MAX_MS`.
pub const DEFAULT_PUSH_RETRY_MAX_MS: u64 = 30_000;
/// Default of `KURIR_PUSH_RETRY_BUDGET_MS`.
pub const DEFAULT_PUSH_RETRY_BUDGET_MS: u64 = 60_000;
/// Default of `KURIR_PUSH_BREAKER_FAILURES`.
pub const DEFAULT_PUSH_BREAKER_FAILURES: u32 = 5;
/// Default of `KURIR_PUSH_BREAKER_OPEN_MS`.
pub const DEFAULT_PUSH_BREAKER_OPEN_MS: u64 = 30_000;

/// How Kurir reaches the push services.
#[derive(Debug, Clone, Args)]
pub struct PushSettings {
    /// VAPID private key: base64url of the raw 32-byte P-256 key. Enables Web Push.
    #[arg(long, env = "KURIR_VAPID_PRIVATE_KEY", hide_env_values = true)]
    pub vapid_private_key: Option<Secret>,

    /// VAPID contact, `mailto:` or `https:` (required with the key).
    #[arg(long, env = "KURIR_VAPID_SUBJECT")]
    pub vapid_subject: Option<String>,

    /// Origins Web Push endpoints may point at, comma-separated; `*.` allows subdomains.
    #[arg(long, env = "KURIR_WEBPUSH_ALLOWED_ORIGINS", default_value = DEFAULT_WEBPUSH_ALLOWED_ORIGINS)]
    pub webpush_allowed_origins: String,

    /// Google service-account JSON file of the Firebase project. Enables FCM.
    #[arg(long, env = "KURIR_FCM_SERVICE_ACCOUNT")]
    pub fcm_service_account: Option<PathBuf>,

    /// FCM API root.
    #[arg(long, env = "KURIR_FCM_ENDPOINT", default_value = DEFAULT_FCM_ENDPOINT)]
    pub fcm_endpoint: String,

    /// OAuth2 token endpoint, instead of the service account's `token_uri`.
    #[arg(long, env = "KURIR_FCM_TOKEN_URI")]
    pub fcm_token_uri: Option<String>,

    /// APNs signing key (`AuthKey_XXXX.p8`). Enables APNs with the key id, team id and topic.
    #[arg(long, env = "KURIR_APNS_KEY_FILE")]
    pub apns_key_file: Option<PathBuf>,

    /// Key id of the APNs signing key.
    #[arg(long, env = "KURIR_APNS_KEY_ID")]
    pub apns_key_id: Option<String>,

    /// Apple developer team id.
    #[arg(long, env = "KURIR_APNS_TEAM_ID")]
    pub apns_team_id: Option<String>,

    /// The app's bundle id (`apns-topic`).
    #[arg(long, env = "KURIR_APNS_TOPIC")]
    pub apns_topic: Option<String>,

    /// APNs API root (https://api.sandbox.push.apple.com for development builds).
    #[arg(long, env = "KURIR_APNS_ENDPOINT", default_value = DEFAULT_APNS_ENDPOINT)]
    pub apns_endpoint: String,

    /// Requests in flight to each provider at once.
    #[arg(long, env = "KURIR_PUSH_CONCURRENCY", default_value_t = DEFAULT_PUSH_CONCURRENCY)]
    pub push_concurrency: usize,

    /// Timeout of one request to a provider, in milliseconds.
    #[arg(long, env = "KURIR_PUSH_TIMEOUT_MS", default_value_t = DEFAULT_PUSH_TIMEOUT_MS)]
    pub push_timeout_ms: u64,

    /// Attempts per push, the first included.
    #[arg(long, env = "KURIR_PUSH_MAX_ATTEMPTS", default_value_t = DEFAULT_PUSH_MAX_ATTEMPTS)]
    pub push_max_attempts: u32,

    /// First retry backoff in milliseconds; doubles, with jitter.
    #[arg(long, env = "KURIR_PUSH_RETRY_BASE_MS", default_value_t = DEFAULT_PUSH_RETRY_BASE_MS)]
    pub push_retry_base_ms: u64,

    /// Ceiling of one backoff in milliseconds (a longer `Retry-After` is still honoured).
    #[arg(long, env = "KURIR_PUSH_RETRY_MAX_MS", default_value_t = DEFAULT_PUSH_RETRY_MAX_MS)]
    pub push_retry_max_ms: u64,

    /// Time one push may spend retrying, in milliseconds; past it the failure is returned.
    #[arg(long, env = "KURIR_PUSH_RETRY_BUDGET_MS", default_value_t = DEFAULT_PUSH_RETRY_BUDGET_MS)]
    pub push_retry_budget_ms: u64,

    /// Consecutive failures that open a provider's circuit.
    #[arg(long, env = "KURIR_PUSH_BREAKER_FAILURES", default_value_t = DEFAULT_PUSH_BREAKER_FAILURES)]
    pub push_breaker_failures: u32,

    /// How long an open circuit refuses pushes, in milliseconds.
    #[arg(long, env = "KURIR_PUSH_BREAKER_OPEN_MS", default_value_t = DEFAULT_PUSH_BREAKER_OPEN_MS)]
    pub push_breaker_open_ms: u64,
}

/// A push setting the servers refuse to start with.
#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("{missing} is required with {given}")]
    Incomplete {
        given: &'static str,
        missing: &'static str,
    },
    #[error("KURIR_WEBPUSH_ALLOWED_ORIGINS: {0}")]
    Origins(#[from] SsrfError),
    #[error("{setting}: {reason}")]
    Endpoint {
        setting: &'static str,
        reason: &'static str,
    },
}

impl PushSettings {
    /// The defaults with no provider configured: reads no environment.
    #[must_use]
    pub fn for_test() -> Self {
        Self {
            vapid_private_key: None,
            vapid_subject: None,
            webpush_allowed_origins: DEFAULT_WEBPUSH_ALLOWED_ORIGINS.to_owned(),
            fcm_service_account: None,
            fcm_endpoint: DEFAULT_FCM_ENDPOINT.to_owned(),
            fcm_token_uri: None,
            apns_key_file: None,
            apns_key_id: None,
            apns_team_id: None,
            apns_topic: None,
            apns_endpoint: DEFAULT_APNS_ENDPOINT.to_owned(),
            push_concurrency: DEFAULT_PUSH_CONCURRENCY,
            push_timeout_ms: DEFAULT_PUSH_TIMEOUT_MS,
            push_max_attempts: DEFAULT_PUSH_MAX_ATTEMPTS,
            push_retry_base_ms: DEFAULT_PUSH_RETRY_BASE_MS,
            push_retry_max_ms: DEFAULT_PUSH_RETRY_MAX_MS,
            push_retry_budget_ms: DEFAULT_PUSH_RETRY_BUDGET_MS,
            push_breaker_failures: DEFAULT_PUSH_BREAKER_FAILURES,
            push_breaker_open_ms: DEFAULT_PUSH_BREAKER_OPEN_MS,
        }
    }

    /// # Errors
    /// A zero limit, a provider configured by halves, a malformed allowlist or endpoint.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (name, value) in [
            ("KURIR_PUSH_CONCURRENCY", self.push_concurrency as u64),
            ("KURIR_PUSH_TIMEOUT_MS", self.push_timeout_ms),
            ("KURIR_PUSH_MAX_ATTEMPTS", u64::from(self.push_max_attempts)),
            (
                "KURIR_PUSH_BREAKER_FAILURES",
                u64::from(self.push_breaker_failures),
            ),
        ] {
            if value == 0 {
                return Err(SettingsError::Zero(name));
            }
        }
        if self.vapid_private_key.is_some() && self.vapid_subject.is_none() {
            return Err(SettingsError::Incomplete {
                given: "KURIR_VAPID_PRIVATE_KEY",
                missing: "KURIR_VAPID_SUBJECT",
            });
        }
        self.allowed_origins()?;
        if self.apns_key_file.is_some() {
            for (missing, value) in [
                ("KURIR_APNS_KEY_ID", &self.apns_key_id),
                ("KURIR_APNS_TEAM_ID", &self.apns_team_id),
                ("KURIR_APNS_TOPIC", &self.apns_topic),
            ] {
                if value.is_none() {
                    return Err(SettingsError::Incomplete {
                        given: "KURIR_APNS_KEY_FILE",
                        missing,
                    });
                }
            }
        }
        for (setting, value) in [
            ("KURIR_FCM_ENDPOINT", &self.fcm_endpoint),
            ("KURIR_APNS_ENDPOINT", &self.apns_endpoint),
        ] {
            if !(value.starts_with("https://") || value.starts_with("http://")) {
                return Err(SettingsError::Endpoint {
                    setting,
                    reason: "not an http(s) URL",
                });
            }
        }
        Ok(())
    }

    /// The parsed `KURIR_WEBPUSH_ALLOWED_ORIGINS`.
    ///
    /// # Errors
    /// A malformed origin.
    pub fn allowed_origins(&self) -> Result<OriginAllowlist, SettingsError> {
        Ok(self.webpush_allowed_origins.parse()?)
    }

    /// The limits every provider runs under.
    #[must_use]
    pub fn guard_policy(&self) -> GuardPolicy {
        GuardPolicy {
            concurrency: self.push_concurrency,
            timeout: self.timeout(),
            retry: RetryPolicy {
                max_attempts: self.push_max_attempts,
                base: Duration::from_millis(self.push_retry_base_ms),
                max_backoff: Duration::from_millis(self.push_retry_max_ms),
                budget: Duration::from_millis(self.push_retry_budget_ms),
            },
            breaker: BreakerPolicy {
                failure_threshold: self.push_breaker_failures,
                open_for: Duration::from_millis(self.push_breaker_open_ms),
            },
        }
    }

    /// Timeout of one provider request.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.push_timeout_ms)
    }
}
