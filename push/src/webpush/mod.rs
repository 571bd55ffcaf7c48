//! Web Push (RFC 8030 delivery, RFC 8291 encryption, RFC 8292 VAPID) to a browser's
//! push service.

pub mod encrypt;
pub mod headers;
pub mod vapid;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::{StatusCode, Url};

use crate::device::WebPushSubscription;
use crate::message::PushMessage;
use crate::outcome::{Failure, FailureReason, Outcome};
use crate::response;
use crate::ssrf::{GuardedResolver, OriginAllowlist};
use encrypt::{EncryptError, ReceiverKeys};
use vapid::VapidKey;

/// A push made ready once and sent on every attempt: the encrypted body, the endpoint
/// that passed the guard, and the headers.
#[derive(Debug)]
pub struct PreparedPush {
    endpoint: Url,
    body: Vec<u8>,
    authorization: String,
    ttl: Duration,
    urgency: &'static str,
    topic: Option<String>,
}

/// The Web Push client.
#[derive(Debug, Clone)]
pub struct WebPushClient {
    http: reqwest::Client,
    vapid: VapidKey,
    allowlist: Arc<OriginAllowlist>,
}

impl WebPushClient {
    /// A client that resolves names through the SSRF guard, follows no redirect and uses
    /// no proxy (either would reach an address the guard did not check).
    ///
    /// # Errors
    /// The HTTP client could not be built (TLS roots).
    pub fn new(
        vapid: VapidKey,
        allowlist: OriginAllowlist,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let allowlist = Arc::new(allowlist);
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver::new(Arc::clone(&allowlist))))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .build()?;
        Ok(Self {
            http,
            vapid,
            allowlist,
        })
    }

    /// The VAPID public key for the browser's `applicationServerKey`.
    #[must_use]
    pub fn public_key(&self) -> &str {
        self.vapid.public_key()
    }

    /// Checks the endpoint, encrypts the message and signs the VAPID token.
    ///
    /// # Errors
    /// A refused endpoint, malformed keys or a payload too large: none would succeed
    /// on a retry.
    pub fn prepare(
        &self,
        subscription: &WebPushSubscription,
        message: &PushMessage,
        now_s: u64,
    ) -> Result<PreparedPush, Failure> {
        let endpoint = self
            .allowlist
            .check(&subscription.endpoint)
            .map_err(|e| Failure::permanent(e.into()))?;
        let invalid =
            |what: &str| Failure::permanent(FailureReason::InvalidDevice(what.to_owned()));
        let p256dh = URL_SAFE_NO_PAD
            .decode(subscription.p256dh.trim_end_matches('='))
            .map_err(|_| invalid("p256dh is not base64url"))?;
        let auth = URL_SAFE_NO_PAD
            .decode(subscription.auth.trim_end_matches('='))
            .map_err(|_| invalid("auth is not base64url"))?;
        let keys = ReceiverKeys::new(&p256dh, &auth).map_err(|e| invalid(&e.to_string()))?;
        let plaintext = serde_json::to_vec(message).expect("a message serializes");
        let body = encrypt::encrypt(&plaintext, &keys).map_err(|e| match e {
            EncryptError::TooLarge(n) => Failure::permanent(FailureReason::PayloadTooLarge(n)),
            other => invalid(&other.to_string()),
        })?;
        let origin = endpoint.origin().ascii_serialization();
        let authorization = self
            .vapid
            .authorization(&origin, now_s)
            .map_err(|e| Failure::permanent(FailureReason::Credentials(e.to_string())))?;
        Ok(PreparedPush {
            endpoint,
            body,
            authorization,
            ttl: message.ttl,
            urgency: headers::urgency(message.priority),
            topic: message.collapse_key.as_deref().map(headers::topic),
        })
    }

    /// One delivery attempt.
    pub async fn send(&self, push: &PreparedPush) -> Outcome {
        let mut request = self
            .http
            .post(push.endpoint.clone())
            .header("TTL", push.ttl.as_secs().to_string())
            .header("Urgency", push.urgency)
            .header("Content-Encoding", "aes128gcm")
            .header("Content-Type", "application/octet-stream")
            .header("Authorization", &push.authorization)
            .body(push.body.clone());
        if let Some(topic) = &push.topic {
            request = request.header("Topic", topic);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Outcome::Failed(refused_or_transport(&error)),
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Sent { id: None };
        }
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Outcome::Gone {
                reason: status.to_string(),
            };
        }
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        Outcome::Failed(response::rejected(
            status,
            response::short_reason(status, &text),
            &headers,
        ))
    }
}

/// A connection refused by the guarded resolver is a permanent refusal, not a
/// transport hiccup.
fn refused_or_transport(error: &reqwest::Error) -> Failure {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<crate::ssrf::SsrfError>() {
            return Failure::permanent(refused.clone().into());
        }
        source = cause.source();
    }
    response::transport(error)
}
