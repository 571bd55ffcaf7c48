//! Client tokens as a gateway accepts them: HS256 JWTs with `sub`, `exp` and, when
//! given, `topics`.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// The claims of one client token; [`ClientToken::sign`] makes the JWT.
#[derive(Clone, Debug)]
pub struct ClientToken {
    user: String,
    expires_in: i64,
    topics: Option<Vec<String>>,
}

impl ClientToken {
    /// A token for `user`, valid for ten minutes, without a `topics` claim.
    pub fn new(user: &str) -> Self {
        Self {
            user: user.to_owned(),
            expires_in: 600,
            topics: None,
        }
    }

    /// Expires `secs` from now (negative: already expired).
    pub fn expires_in(mut self, secs: i64) -> Self {
        self.expires_in = secs;
        self
    }

    /// The topics the client may subscribe to (`["*"]` for any).
    pub fn topics(mut self, topics: &[&str]) -> Self {
        self.topics = Some(topics.iter().map(|t| (*t).to_owned()).collect());
        self
    }

    /// The claims as JSON.
    pub fn claims(&self) -> Value {
        let mut claims = json!({"sub": self.user, "exp": unix_now() + self.expires_in});
        if let Some(topics) = &self.topics {
            claims["topics"] = json!(topics);
        }
        claims
    }

    /// The JWT, signed HS256 with `secret`.
    pub fn sign(&self, secret: &str) -> String {
        hs256(secret.as_bytes(), &self.claims())
    }
}

/// Any claims signed HS256 with `secret` (for tokens a test shapes by hand).
pub fn hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_carry_user_expiry_and_topics() {
        let c = ClientToken::new("alice")
            .expires_in(60)
            .topics(&["*"])
            .claims();
        assert_eq!(c["sub"], "alice");
        assert_eq!(c["topics"], json!(["*"]));
        let exp = c["exp"].as_i64().unwrap();
        assert!((exp - unix_now() - 60).abs() <= 1);
        assert!(ClientToken::new("bob").claims().get("topics").is_none());
        assert_eq!(ClientToken::new("bob").sign("s").split('.').count(), 3);
    }
}
