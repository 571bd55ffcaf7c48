//! The entry point: one [`Pusher`] holds the configured providers, each behind its own
//! [`Guard`], and sends a message to a device through the right one.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::apns::token::{ApnsKeyError, ProviderToken};
use crate::apns::ApnsClient;
use crate::device::Device;
use crate::fcm::account::{AccountError, ServiceAccount};
use crate::fcm::FcmClient;
use crate::guard::{Guard, GuardPolicy};
use crate::message::PushMessage;
use crate::outcome::{Failure, FailureReason, Outcome, Provider};
use crate::settings::{PushSettings, SettingsError};
use crate::webpush::vapid::{VapidError, VapidKey};
use crate::webpush::WebPushClient;

/// Why the providers could not be set up from the settings.
#[derive(Debug, Error)]
pub enum PusherError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Vapid(#[from] VapidError),
    #[error("KURIR_FCM_SERVICE_ACCOUNT: {0}")]
    Account(#[from] AccountError),
    #[error("KURIR_APNS_KEY_FILE: {0}")]
    ApnsKey(#[from] ApnsKeyError),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The configured push providers.
#[derive(Debug)]
pub struct Pusher {
    policy: GuardPolicy,
    webpush: Option<(WebPushClient, Guard)>,
    fcm: Option<(FcmClient, Guard)>,
    apns: Option<(ApnsClient, Guard)>,
}

impl Pusher {
    /// No provider yet; add them with the `with_*` methods.
    #[must_use]
    pub fn new(policy: GuardPolicy) -> Self {
        Self {
            policy,
            webpush: None,
            fcm: None,
            apns: None,
        }
    }

    /// Every provider the settings configure (reads the key files).
    ///
    /// # Errors
    /// Invalid settings, unreadable or malformed keys.
    pub fn from_settings(settings: &PushSettings) -> Result<Self, PusherError> {
        settings.validate()?;
        let mut pusher = Self::new(settings.guard_policy());
        if let (Some(key), Some(subject)) = (&settings.vapid_private_key, &settings.vapid_subject) {
            let vapid = VapidKey::new(key.expose(), subject)?;
            pusher = pusher.with_webpush(WebPushClient::new(
                vapid,
                settings.allowed_origins()?,
                settings.timeout(),
            )?);
        }
        if let Some(path) = &settings.fcm_service_account {
            let account = ServiceAccount::from_json(&read(path)?)?;
            let client = FcmClient::new(
                account,
                &settings.fcm_endpoint,
                settings.fcm_token_uri.as_deref(),
                settings.timeout(),
            )?;
            pusher = pusher.with_fcm(client);
        }
        if let (Some(path), Some(key_id), Some(team_id), Some(topic)) = (
            &settings.apns_key_file,
            &settings.apns_key_id,
            &settings.apns_team_id,
            &settings.apns_topic,
        ) {
            let token = ProviderToken::new(&read(path)?, key_id, team_id)?;
            pusher = pusher.with_apns(ApnsClient::new(
                token,
                &settings.apns_endpoint,
                topic,
                settings.timeout(),
            )?);
        }
        Ok(pusher)
    }

    #[must_use]
    pub fn with_webpush(mut self, client: WebPushClient) -> Self {
        self.webpush = Some((client, Guard::new(Provider::WebPush, self.policy)));
        self
    }

    #[must_use]
    pub fn with_fcm(mut self, client: FcmClient) -> Self {
        self.fcm = Some((client, Guard::new(Provider::Fcm, self.policy)));
        self
    }

    #[must_use]
    pub fn with_apns(mut self, client: ApnsClient) -> Self {
        self.apns = Some((client, Guard::new(Provider::Apns, self.policy)));
        self
    }

    /// The VAPID public key browsers subscribe with, when Web Push is configured.
    #[must_use]
    pub fn vapid_public_key(&self) -> Option<&str> {
        self.webpush.as_ref().map(|(client, _)| client.public_key())
    }

    /// The guard of a provider, when configured (its breaker state).
    #[must_use]
    pub fn guard(&self, provider: Provider) -> Option<&Guard> {
        match provider {
            Provider::WebPush => self.webpush.as_ref().map(|(_, g)| g),
            Provider::Fcm => self.fcm.as_ref().map(|(_, g)| g),
            Provider::Apns => self.apns.as_ref().map(|(_, g)| g),
        }
    }

    /// Pushes `message` to `device`, retrying as the policy allows.
    pub async fn send(&self, device: &Device, message: &PushMessage) -> Outcome {
        let not_configured =
            |p| Outcome::Failed(Failure::permanent(FailureReason::NotConfigured(p)));
        match device {
            Device::WebPush(subscription) => {
                let Some((client, guard)) = &self.webpush else {
                    return not_configured(Provider::WebPush);
                };
                let push = match client.prepare(subscription, message, now_s()) {
                    Ok(push) => push,
                    Err(failure) => return Outcome::Failed(failure),
                };
                guard.run(|| client.send(&push)).await
            }
            Device::Fcm { token } => {
                let Some((client, guard)) = &self.fcm else {
                    return not_configured(Provider::Fcm);
                };
                guard.run(|| client.send(token, message, now_s())).await
            }
            Device::Apns { token, topic } => {
                let Some((client, guard)) = &self.apns else {
                    return not_configured(Provider::Apns);
                };
                guard
                    .run(|| client.send(token, topic.as_deref(), message, now_s()))
                    .await
            }
        }
    }
}

fn read(path: &Path) -> Result<String, PusherError> {
    std::fs::read_to_string(path).map_err(|source| PusherError::Read {
        path: path.to_owned(),
        source,
    })
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
