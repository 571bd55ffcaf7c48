//! RFC 8292 VAPID: the application server's identity towards push services, an ES256
//! JWT per push-service origin signed with a long-lived P-256 key. A token is signed
//! once per origin and reused for [`TOKEN_REUSE`] (of its 12-hour life): a signature per
//! push would cost more than the push's own encryption.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use p256::SecretKey;
use serde::Serialize;
use thiserror::Error;

/// How long a VAPID token is valid; RFC 8292 §2 caps it at 24 hours.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long a signed token is reused for its origin (it then has 11 hours left).
pub const TOKEN_REUSE: Duration = Duration::from_secs(3600);
/// Origins whose token is kept; push services are few, and past this many the cache
/// starts over rather than grow.
const CACHED_ORIGINS: usize = 256;

/// A VAPID key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VapidError {
    #[error("KURIR_VAPID_PRIVATE_KEY is not base64url of a 32-byte P-256 private key")]
    BadKey,
    #[error("KURIR_VAPID_SUBJECT must be a mailto: or https: URI")]
    BadSubject,
    #[error("signing the VAPID token failed")]
    Signing,
}

/// A fresh VAPID key pair, `(private, public)`: base64url of the raw 32-byte P-256
/// scalar (what `KURIR_VAPID_PRIVATE_KEY` takes) and of the uncompressed public point
/// (the browsers' `applicationServerKey`).
#[must_use]
pub fn generate_key_pair() -> (String, String) {
    // Every 32-byte string below the curve order is a key; others are drawn again.
    let secret = loop {
        if let Ok(key) = SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
            break key;
        }
    };
    let public = secret.public_key().to_encoded_point(false);
    (
        URL_SAFE_NO_PAD.encode(secret.to_bytes()),
        URL_SAFE_NO_PAD.encode(public.as_bytes()),
    )
}

/// The public key (the browsers' `applicationServerKey`, base64url of the uncompressed
/// point) of a base64url raw private key: what a gateway hands to pages without needing
/// the subject.
///
/// # Errors
/// A malformed key.
pub fn public_key_of(private_key_b64: &str) -> Result<String, VapidError> {
    let raw = URL_SAFE_NO_PAD
        .decode(private_key_b64.trim().trim_end_matches('='))
        .map_err(|_| VapidError::BadKey)?;
    let secret = SecretKey::from_slice(&raw).map_err(|_| VapidError::BadKey)?;
    Ok(URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes()))
}

/// The server's VAPID key and contact.
#[derive(Clone)]
pub struct VapidKey {
    signing: EncodingKey,
    public: String,
    subject: String,
    /// Origin → (signed at, unix s; the `Authorization` value).
    signed: Arc<Mutex<HashMap<String, (u64, String)>>>,
}

impl fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapidKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: u64,
    sub: &'a str,
}

impl VapidKey {
    /// From the base64url raw private key (what `web-push generate-vapid-keys` prints)
    /// and the subject.
    ///
    /// # Errors
    /// A malformed key or subject.
    pub fn new(private_key_b64: &str, subject: &str) -> Result<Self, VapidError> {
        let raw = URL_SAFE_NO_PAD
            .decode(private_key_b64.trim().trim_end_matches('='))
            .map_err(|_| VapidError::BadKey)?;
        if raw.len() != 32 {
            return Err(VapidError::BadKey);
        }
        let secret = SecretKey::from_slice(&raw).map_err(|_| VapidError::BadKey)?;
        Self::from_secret(&secret, subject)
    }

    /// From a P-256 secret key.
    ///
    /// # Errors
    /// A malformed subject.
    pub fn from_secret(secret: &SecretKey, subject: &str) -> Result<Self, VapidError> {
        if !(subject.starts_with("mailto:") || subject.starts_with("https://")) {
            return Err(VapidError::BadSubject);
        }
        let der = secret.to_pkcs8_der().map_err(|_| VapidError::BadKey)?;
        let public = URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes());
        Ok(Self {
            signing: EncodingKey::from_ec_der(der.as_bytes()),
            public,
            subject: subject.to_owned(),
            signed: Arc::default(),
        })
    }

    /// The public key as the browser's `applicationServerKey`: base64url of the
    /// uncompressed point.
    #[must_use]
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The `Authorization` header value for a push service `origin`
    /// (`vapid t=<jwt>, k=<public key>`), valid for at least
    /// [`TOKEN_LIFETIME`] − [`TOKEN_REUSE`] from `now_s`.
    ///
    /// # Errors
    /// Signing failed.
    pub fn authorization(&self, origin: &str, now_s: u64) -> Result<String, VapidError> {
        let mut signed = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, value)) = signed.get(origin) {
            if *at <= now_s && now_s - at < TOKEN_REUSE.as_secs() {
                return Ok(value.clone());
            }
        }
        let value = self.sign(origin, now_s)?;
        if signed.len() >= CACHED_ORIGINS {
            signed.clear();
        }
        signed.insert(origin.to_owned(), (now_s, value.clone()));
        Ok(value)
    }

    fn sign(&self, origin: &str, now_s: u64) -> Result<String, VapidError> {
        let claims = Claims {
            aud: origin,
            exp: now_s + TOKEN_LIFETIME.as_secs(),
            sub: &self.subject,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("JWT".into());
        let token = jsonwebtoken::encode(&header, &claims, &self.signing)
            .map_err(|_| VapidError::Signing)?;
        Ok(format!("vapid t={token}, k={}", self.public))
    }
}

#[cfg(test)]
mod key_pair_tests {
    use super::*;

    #[test]
    fn a_token_is_signed_once_per_origin_and_renewed_after_an_hour() {
        let key = VapidKey::new(&generate_key_pair().0, "mailto:ops@kurir.example").unwrap();
        let a = key
            .authorization("https://fcm.googleapis.com", 1_000)
            .unwrap();
        assert_eq!(
            key.authorization("https://fcm.googleapis.com", 1_000 + 3_599)
                .unwrap(),
            a
        );
        let other = key
            .authorization("https://updates.push.services.mozilla.com", 1_000)
            .unwrap();
        assert_ne!(other, a);
        let renewed = key
            .authorization("https://fcm.googleapis.com", 1_000 + 3_600)
            .unwrap();
        assert_ne!(renewed, a);
        // A clock that went back is not served a token from its future.
        assert_ne!(
            key.authorization("https://fcm.googleapis.com", 10).unwrap(),
            renewed
        );
    }

    #[test]
    fn a_generated_pair_is_a_usable_key_and_its_public_half() {
        let (private, public) = generate_key_pair();
        assert_eq!(URL_SAFE_NO_PAD.decode(&private).unwrap().len(), 32);
        let key = VapidKey::new(&private, "mailto:ops@kurir.example").unwrap();
        assert_eq!(key.public_key(), public);
        assert_eq!(URL_SAFE_NO_PAD.decode(&public).unwrap()[0], 0x04);
        assert_ne!(generate_key_pair().0, private);
    }
}
