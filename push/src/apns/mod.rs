//! Apple Push Notification service over HTTP/2 with token-based authentication.

pub mod payload;
pub mod token;

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

use crate::message::PushMessage;
use crate::outcome::{Failure, FailureReason, Outcome};
use crate::response;
pub use payload::collapse_id;
use token::ProviderToken;

/// Default of `KURIR_APNS_ENDPOINT`.
pub const DEFAULT_ENDPOINT: &str = "https://api.push.apple.com";

/// The APNs client of one app (`apns-topic`).
#[derive(Debug)]
pub struct ApnsClient {
    http: reqwest::Client,
    token: ProviderToken,
    endpoint: String,
    topic: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    reason: String,
}

impl ApnsClient {
    /// APNs speaks only HTTP/2: negotiated by ALPN over TLS, or with prior knowledge on
    /// a plain `http://` endpoint (local fakes).
    ///
    /// # Errors
    /// The HTTP client could not be built.
    pub fn new(
        token: ProviderToken,
        endpoint: &str,
        topic: &str,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if endpoint.starts_with("http://") {
            builder = builder.http2_prior_knowledge();
        }
        Ok(Self {
            http: builder.build()?,
            token,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            topic: topic.to_owned(),
        })
    }

    /// One send attempt to a device token, for `topic` (default: the configured one).
    pub async fn send(
        &self,
        device_token: &str,
        topic: Option<&str>,
        message: &PushMessage,
        now_s: u64,
    ) -> Outcome {
        if device_token.is_empty() || !device_token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Outcome::Failed(Failure::permanent(FailureReason::InvalidDevice(
                "APNs device token is not hex".into(),
            )));
        }
        let bearer = match self.token.get(now_s) {
            Ok(bearer) => bearer,
            Err(e) => {
                return Outcome::Failed(Failure::permanent(FailureReason::Credentials(
                    e.to_string(),
                )))
            }
        };
        let mut request = self
            .http
            .post(format!("{}/3/device/{device_token}", self.endpoint))
            .bearer_auth(&bearer)
            .header("apns-topic", topic.unwrap_or(&self.topic))
            .header("apns-push-type", "alert")
            .header("apns-priority", payload::priority(message.priority))
            .header(
                "apns-expiration",
                payload::expiration(message, now_s).to_string(),
            )
            .json(&payload::body(message));
        if let Some(key) = &message.collapse_key {
            request = request.header("apns-collapse-id", collapse_id(key));
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Outcome::Failed(response::transport(&error)),
        };
        let status = response.status();
        let headers = response.headers().clone();
        if status.is_success() {
            let id = headers
                .get("apns-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            return Outcome::Sent { id };
        }
        let text = response.text().await.unwrap_or_default();
        let reason = serde_json::from_str::<ErrorBody>(&text)
            .map_or_else(|_| response::short_reason(status, &text), |e| e.reason);
        if status == StatusCode::GONE {
            return Outcome::Gone { reason };
        }
        if status == StatusCode::FORBIDDEN && reason == "ExpiredProviderToken" {
            self.token.invalidate(&bearer);
            return Outcome::Failed(Failure::transient(
                FailureReason::Rejected {
                    status: status.as_u16(),
                    reason,
                },
                None,
            ));
        }
        Outcome::Failed(response::rejected(status, reason, &headers))
    }
}
