//! FCM credentials: a Google service account and the OAuth2 JWT-bearer grant
//! (RFC 7523) that trades an RS256 assertion for an access token. The token is cached
//! until shortly before it expires and shared by concurrent sends: the first caller
//! fetches it while the others wait for the same result.

use std::fmt;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::Mutex;

use crate::outcome::{Failure, FailureReason};
use crate::response;

/// The OAuth2 scope of FCM sends.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The grant type of a JWT assertion.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// A token is renewed this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(120);
/// Lifetime asked of an assertion (Google accepts at most one hour).
const ASSERTION_LIFETIME: u64 = 3600;

/// A service-account file that cannot be used.
#[derive(Debug, Error)]
pub enum AccountError {
    #[error("service account JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("service account private_key is not an RSA PEM key")]
    Key,
}

#[derive(Deserialize)]
struct AccountFile {
    project_id: String,
    client_email: String,
    private_key: String,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".to_owned()
}

/// A parsed service account.
#[derive(Clone)]
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    pub token_uri: String,
    key: EncodingKey,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// From the JSON file Google issues.
    ///
    /// # Errors
    /// Malformed JSON or key.
    pub fn from_json(json: &str) -> Result<Self, AccountError> {
        let file: AccountFile = serde_json::from_str(json)?;
        let key = EncodingKey::from_rsa_pem(file.private_key.as_bytes())
            .map_err(|_| AccountError::Key)?;
        Ok(Self {
            project_id: file.project_id,
            client_email: file.client_email,
            token_uri: file.token_uri,
            key,
        })
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

struct Cached {
    token: String,
    refresh_at: Instant,
}

/// Access tokens for one service account.
pub struct TokenSource {
    http: reqwest::Client,
    account: ServiceAccount,
    cached: Mutex<Option<Cached>>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    #[must_use]
    pub fn new(http: reqwest::Client, account: ServiceAccount) -> Self {
        Self {
            http,
            account,
            cached: Mutex::new(None),
        }
    }

    #[must_use]
    pub fn account(&self) -> &ServiceAccount {
        &self.account
    }

    /// A valid access token, fetched if none is cached or it is about to expire.
    ///
    /// # Errors
    /// The token endpoint refused the grant or could not be reached.
    pub async fn token(&self, now_s: u64) -> Result<String, Failure> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(token.token.clone());
        }
        let fresh = self.fetch(now_s).await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Drops `token` if it is the cached one (the send endpoint refused it).
    pub async fn invalidate(&self, token: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| c.token == token) {
            *cached = None;
        }
    }

    async fn fetch(&self, now_s: u64) -> Result<Cached, Failure> {
        let claims = AssertionClaims {
            iss: &self.account.client_email,
            scope: SCOPE,
            aud: &self.account.token_uri,
            iat: now_s,
            exp: now_s + ASSERTION_LIFETIME,
        };
        let assertion =
            jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.account.key)
                .map_err(|_| {
                    Failure::permanent(FailureReason::Credentials(
                        "signing the assertion failed".into(),
                    ))
                })?;
        let response = self
            .http
            .post(&self.account.token_uri)
            .form(&[
                ("grant_type", GRANT_TYPE),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| credentials(response::transport(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let text = response.text().await.unwrap_or_default();
            let reason =
                oauth_error(&text).unwrap_or_else(|| response::short_reason(status, &text));
            return Err(credentials(response::rejected(status, reason, &headers)));
        }
        let body: TokenResponse = response
            .json()
            .await
            .map_err(|e| credentials(response::transport(&e)))?;
        let lifetime = Duration::from_secs(body.expires_in);
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        tracing::debug!(expires_in_s = body.expires_in, "fcm access token fetched");
        Ok(Cached {
            token: body.access_token,
            refresh_at: Instant::now() + lifetime - margin,
        })
    }
}

/// Keeps the retry decision of `failure` but files it under credentials.
fn credentials(failure: Failure) -> Failure {
    Failure {
        reason: FailureReason::Credentials(failure.reason.to_string()),
        ..failure
    }
}

/// The `error` code of an OAuth2 error body (RFC 6749 §5.2).
fn oauth_error(body: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct OauthError {
        error: String,
    }
    serde_json::from_str::<OauthError>(body)
        .ok()
        .map(|e| e.error)
}
