//! Firebase Cloud Messaging, HTTP v1 API.

pub mod account;
pub mod message;

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::message::PushMessage;
use crate::outcome::{Failure, Outcome};
use crate::response;
use account::{ServiceAccount, TokenSource};

/// Default of `KURIR_FCM_ENDPOINT`.
pub const DEFAULT_ENDPOINT: &str = "https://fcm.googleapis.com";

/// The FCM client of one Firebase project.
#[derive(Debug)]
pub struct FcmClient {
    http: reqwest::Client,
    tokens: TokenSource,
    send_url: String,
}

#[derive(Deserialize)]
struct Sent {
    name: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorStatus,
}

#[derive(Deserialize)]
struct ErrorStatus {
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<Value>,
}

impl FcmClient {
    /// `endpoint` is the API root (no trailing path); `token_uri` overrides the
    /// account's.
    ///
    /// # Errors
    /// The HTTP client could not be built.
    pub fn new(
        mut account: ServiceAccount,
        endpoint: &str,
        token_uri: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        if let Some(uri) = token_uri {
            uri.clone_into(&mut account.token_uri);
        }
        let send_url = format!(
            "{}/v1/projects/{}/messages:send",
            endpoint.trim_end_matches('/'),
            account.project_id
        );
        Ok(Self {
            tokens: TokenSource::new(http.clone(), account),
            http,
            send_url,
        })
    }

    /// One send attempt to a registration token.
    pub async fn send(&self, token: &str, message: &PushMessage, now_s: u64) -> Outcome {
        let access = match self.tokens.token(now_s).await {
            Ok(access) => access,
            Err(failure) => return Outcome::Failed(failure),
        };
        let body = message::send_body(token, message);
        let response = match self
            .http
            .post(&self.send_url)
            .bearer_auth(&access)
            .json(&body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(error) => return Outcome::Failed(response::transport(&error)),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            let id = serde_json::from_str::<Sent>(&text)
                .ok()
                .and_then(|s| s.name);
            return Outcome::Sent { id };
        }
        let code = error_code(&text).unwrap_or_else(|| response::short_reason(status, &text));
        if code == "UNREGISTERED" {
            return Outcome::Gone { reason: code };
        }
        if status == StatusCode::UNAUTHORIZED {
            // The token was revoked or expired early: fetch a new one on the retry.
            self.tokens.invalidate(&access).await;
            return Outcome::Failed(Failure::transient(
                crate::outcome::FailureReason::Rejected {
                    status: status.as_u16(),
                    reason: code,
                },
                None,
            ));
        }
        Outcome::Failed(response::rejected(status, code, &headers))
    }
}

/// FCM's own error code (`FcmError.errorCode`), else the Google RPC status.
fn error_code(body: &str) -> Option<String> {
    let parsed: ErrorBody = serde_json::from_str(body).ok()?;
    let fcm = parsed.error.details.iter().find_map(|d| {
        let is_fcm = d
            .get("@type")?
            .as_str()?
            .ends_with("google.firebase.fcm.v1.FcmError");
        is_fcm
            .then(|| d.get("errorCode")?.as_str().map(str::to_owned))
            .flatten()
    });
    fcm.or_else(|| (!parsed.error.status.is_empty()).then_some(parsed.error.status))
}
