//! The APNs provider token: an ES256 JWT signed with the team's `.p8` key. Apple refuses
//! tokens older than an hour and throttles ones renewed more often than every twenty
//! minutes, so one token is reused and renewed after [`REFRESH_AFTER`].

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use thiserror::Error;

/// Age after which a new provider token is signed.
pub const REFRESH_AFTER: Duration = Duration::from_secs(50 * 60);

/// An APNs key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApnsKeyError {
    #[error("the APNs key is not a PKCS#8 P-256 PEM (.p8)")]
    Key,
    #[error("signing the provider token failed")]
    Signing,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

struct Issued {
    token: String,
    at: Instant,
}

/// Signs and caches provider tokens.
pub struct ProviderToken {
    key: EncodingKey,
    key_id: String,
    team_id: String,
    current: Mutex<Option<Issued>>,
}

impl fmt::Debug for ProviderToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderToken")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .finish_non_exhaustive()
    }
}

impl ProviderToken {
    /// From the `.p8` file's PEM text, its key id and the team id.
    ///
    /// # Errors
    /// A key that is not a P-256 PKCS#8 PEM.
    pub fn new(p8_pem: &str, key_id: &str, team_id: &str) -> Result<Self, ApnsKeyError> {
        let key = EncodingKey::from_ec_pem(p8_pem.as_bytes()).map_err(|_| ApnsKeyError::Key)?;
        Ok(Self {
            key,
            key_id: key_id.to_owned(),
            team_id: team_id.to_owned(),
            current: Mutex::new(None),
        })
    }

    /// The current token, signed anew when older than [`REFRESH_AFTER`].
    ///
    /// # Errors
    /// Signing failed.
    pub fn get(&self, now_s: u64) -> Result<String, ApnsKeyError> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(issued) = current.as_ref().filter(|i| i.at.elapsed() < REFRESH_AFTER) {
            return Ok(issued.token.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = Claims {
            iss: &self.team_id,
            iat: now_s,
        };
        let token =
            jsonwebtoken::encode(&header, &claims, &self.key).map_err(|_| ApnsKeyError::Signing)?;
        *current = Some(Issued {
            token: token.clone(),
            at: Instant::now(),
        });
        Ok(token)
    }

    /// Forgets `token` after APNs called it expired.
    pub fn invalidate(&self, token: &str) {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.as_ref().is_some_and(|i| i.token == token) {
            *current = None;
        }
    }
}
