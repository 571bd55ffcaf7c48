//! Client authentication: a JWT checked before the WebSocket upgrade.
//!
//! Exactly one algorithm is accepted, chosen by configuration (HS256 with a secret, or
//! RS256/ES256 by the kind of the public key); `none` and every other algorithm are
//! refused, as are tokens without `sub` or `exp`.

use std::path::Path;

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use kurir_backends::{Topic, UserId};
use serde::{Deserialize, Serialize};

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    /// Topic names or `prefix.*` patterns this user may subscribe to.
    pub topics: Vec<String>,
    /// Unix seconds.
    pub expires_at: u64,
}

impl Identity {
    /// Whether the token's `exp` has passed.
    pub fn expired(&self) -> bool {
        self.expires_at != 0 && now_secs() >= self.expires_at
    }

    pub fn may_subscribe(&self, topic: &Topic) -> bool {
        self.topics.iter().any(|p| topic.allowed_by(p))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    topics: Option<Vec<String>>,
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

/// Verifies client tokens.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// Present with an HS256 secret: lets `--standalone` mint development tokens.
    signer: Option<EncodingKey>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            key: DecodingKey::from_secret(secret),
            validation: validation(Algorithm::HS256),
            signer: Some(EncodingKey::from_secret(secret)),
        }
    }

    /// RS256 for an RSA key, ES256 for a P-256 key.
    ///
    /// # Errors
    /// The file cannot be read or holds neither kind of PEM public key.
    pub fn from_public_key_file(path: &Path) -> Result<Self, String> {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (key, alg) = match DecodingKey::from_rsa_pem(&pem) {
            Ok(k) => (k, Algorithm::RS256),
            Err(_) => DecodingKey::from_ec_pem(&pem)
                .map(|k| (k, Algorithm::ES256))
                .map_err(|_| format!("{}: not an RSA or EC public key in PEM", path.display()))?,
        };
        Ok(Self {
            key,
            validation: validation(alg),
            signer: None,
        })
    }

    /// # Errors
    /// Why the token is refused.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let data =
            decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        let user = UserId::parse(&data.claims.sub).map_err(|_| AuthError::Invalid)?;
        Ok(Identity {
            user,
            topics: data.claims.topics.unwrap_or_default(),
            expires_at: data.claims.exp,
        })
    }

    /// Mint an HS256 token (development only). `None` without a secret.
    pub fn mint(
        &self,
        user: &UserId,
        topics: &[String],
        ttl_seconds: u64,
    ) -> Option<(String, u64)> {
        let signer = self.signer.as_ref()?;
        let exp = now_secs() + ttl_seconds;
        let claims = Claims {
            sub: user.as_str().to_owned(),
            exp,
            topics: (!topics.is_empty()).then(|| topics.to_vec()),
        };
        encode(&Header::new(Algorithm::HS256), &claims, signer)
            .ok()
            .map(|t| (t, exp))
    }
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.set_required_spec_claims(&["exp", "sub"]);
    // Tokens are refused the second they expire; issuers own clock skew.
    v.leeway = 0;
    v.validate_aud = false;
    v
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(secret: &[u8], claims: &serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn accepts_valid_and_refuses_bad_tokens() {
        let v = Verifier::hs256(b"secret");
        let exp = now_secs() + 60;
        let ok = token(
            b"secret",
            &serde_json::json!({"sub":"alice","exp":exp,"topics":["news.*"]}),
        );
        let id = v.verify(&ok).unwrap();
        assert_eq!(id.user.as_str(), "alice");
        assert!(id.may_subscribe(&Topic::parse("news.eu").unwrap()));
        assert!(!id.may_subscribe(&Topic::parse("sports").unwrap()));

        let bad_sig = token(b"other", &serde_json::json!({"sub":"alice","exp":exp}));
        assert_eq!(v.verify(&bad_sig), Err(AuthError::Invalid));
        let expired = token(
            b"secret",
            &serde_json::json!({"sub":"alice","exp":now_secs() - 1}),
        );
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        let no_exp = token(b"secret", &serde_json::json!({"sub":"alice"}));
        assert_eq!(v.verify(&no_exp), Err(AuthError::Invalid));
        let no_sub = token(b"secret", &serde_json::json!({"exp":exp}));
        assert_eq!(v.verify(&no_sub), Err(AuthError::Invalid));
        assert_eq!(v.verify(""), Err(AuthError::Missing));
    }

    #[test]
    fn refuses_alg_none() {
        let v = Verifier::hs256(b"secret");
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let exp = now_secs() + 60;
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"sub":"alice","exp":{exp}}}"#))
        );
        assert_eq!(v.verify(&none), Err(AuthError::Invalid));
    }

    #[test]
    fn mints_tokens_it_accepts() {
        let v = Verifier::hs256(b"secret");
        let (t, _) = v
            .mint(&UserId::parse("bob").unwrap(), &["demo".into()], 60)
            .unwrap();
        assert_eq!(v.verify(&t).unwrap().topics, vec!["demo".to_string()]);
    }
}
