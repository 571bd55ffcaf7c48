//! The token check itself: a JWT's header picks the keys to try, the signature and
//! the [`Policy`] decide, and the claims become an [`Identity`].

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use kurir_backends::UserId;
use serde::{Deserialize, Serialize};

use super::keys::{self, KeyError, VerifyKey};
use super::{check_settings, jwks, now_secs, AuthError, Identity, Policy, Settings};
use crate::readiness::Readiness;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    topics: Option<Vec<String>>,
}

/// A refusal, or the one case worth a JWKS fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Auth(AuthError),
    /// The token names a `kid` the JWKS cache does not hold (and no other key took it).
    UnknownKid,
}

impl From<Refusal> for AuthError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Auth(e) => e,
            Refusal::UnknownKid => Self::Invalid,
        }
    }
}

/// Verifies client tokens.
pub struct Verifier {
    /// From `KURIR_JWT_SECRET` and `KURIR_JWT_PUBLIC_KEY_FILE`.
    fixed: Vec<VerifyKey>,
    jwks: Option<Arc<jwks::Jwks>>,
    policy: Policy,
    /// One per entry of [`keys::ALGORITHMS`].
    validations: [Validation; 4],
    /// The first HS256 secret: lets `--standalone` mint development tokens.
    signer: Option<EncodingKey>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("fixed", &self.fixed)
            .field("jwks", &self.jwks)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    fn with_keys(fixed: Vec<VerifyKey>, jwks: Option<Arc<jwks::Jwks>>, policy: Policy) -> Self {
        let validations = keys::ALGORITHMS.map(|alg| policy.validation(alg));
        Self {
            fixed,
            jwks,
            policy,
            validations,
            signer: None,
        }
    }

    /// HS256 with one secret, no `iss`/`aud` required (tests and development tokens).
    /// The length rule is enforced on configuration, not here.
    pub fn hs256(secret: &[u8]) -> Self {
        let mut v = Self::with_keys(
            vec![VerifyKey {
                kid: None,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
            }],
            None,
            Policy {
                leeway_seconds: 0,
                ..Policy::default()
            },
        );
        v.signer = Some(EncodingKey::from_secret(secret));
        v
    }

    /// Every key the settings name. With a JWKS URL, the set is fetched once here; if
    /// that fails the gateway starts anyway, unready and refusing every token until a
    /// retry succeeds.
    ///
    /// # Errors
    /// A short secret, an unreadable or unsupported public key file, a bad JWKS URL.
    pub async fn from_settings(
        settings: &Settings,
        readiness: &Readiness,
    ) -> Result<Self, KeyError> {
        check_settings(settings)?;
        let mut fixed = Vec::new();
        let mut signer = None;
        if let Some(secret) = settings.secret() {
            let secrets = keys::secrets(secret)?;
            signer = secrets
                .first()
                .map(|s| EncodingKey::from_secret(s.as_bytes()));
            fixed.extend(keys::hs256_keys(secret)?);
        }
        if let Some(path) = &settings.public_key_file {
            fixed.extend(keys::public_key_file(path)?);
        }
        let jwks = match settings.jwks_url() {
            Some(url) => Some(
                jwks::Jwks::start(
                    jwks::JwksOptions {
                        url: url.to_owned(),
                        refresh: settings.jwks_refresh.max(Duration::from_secs(1)),
                        min_refresh: settings.jwks_min_refresh,
                    },
                    readiness.clone(),
                )
                .await?,
            ),
            None => None,
        };
        let mut v = Self::with_keys(fixed, jwks, settings.policy.clone());
        v.signer = signer;
        Ok(v)
    }

    /// Verify with the keys held now: no I/O, for the hot path. A token naming an
    /// unknown JWKS `kid` is refused here and asks the JWKS task for a refresh; use
    /// [`Verifier::verify_fresh`] where the caller can wait for it.
    ///
    /// # Errors
    /// Why the token is refused.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.check(token).map_err(|r| {
            if r == Refusal::UnknownKid {
                if let Some(j) = &self.jwks {
                    j.nudge();
                }
            }
            r.into()
        })
    }

    /// Like [`Verifier::verify`], but a token naming a `kid` the JWKS cache does not
    /// hold waits (a few seconds at most) for one fetch of the set, unless a fetch ran
    /// within `KURIR_JWT_JWKS_MIN_REFRESH_SECONDS`: a key published and used at once
    /// is accepted on first sight.
    ///
    /// # Errors
    /// Why the token is refused.
    pub async fn verify_fresh(&self, token: &str) -> Result<Identity, AuthError> {
        match (self.check(token), &self.jwks) {
            (Err(Refusal::UnknownKid), Some(jwks)) => {
                if jwks.refresh_for_unknown_kid().await {
                    self.check(token).map_err(AuthError::from)
                } else {
                    Err(AuthError::Invalid)
                }
            }
            (result, _) => result.map_err(AuthError::from),
        }
    }

    fn validation(&self, alg: Algorithm) -> Option<&Validation> {
        keys::ALGORITHMS
            .iter()
            .position(|a| *a == alg)
            .map(|i| &self.validations[i])
    }

    fn check(&self, token: &str) -> Result<Identity, Refusal> {
        if token.is_empty() {
            return Err(Refusal::Auth(AuthError::Missing));
        }
        let invalid = Refusal::Auth(AuthError::Invalid);
        let header = decode_header(token).map_err(|_| invalid)?;
        // Only the four algorithms Kurir knows; `none` does not even parse as a header.
        let validation = self.validation(header.alg).ok_or(invalid)?;
        let kid = header.kid.as_deref();
        let held = self.jwks.as_ref().map(|j| j.keys());
        let fixed = self.fixed.iter().filter(|k| k.alg == header.alg);
        // A token with a `kid` goes to the JWKS key of that id; without one, to each
        // key of its algorithm. Fixed keys carry no id and are always tried.
        let from_jwks = held
            .iter()
            .flat_map(|keys| keys.iter())
            .filter(|k| k.alg == header.alg && (kid.is_none() || k.kid.as_deref() == kid));
        let mut tried_jwks = false;
        for key in fixed.chain(from_jwks) {
            tried_jwks |= key.kid.is_some();
            match decode::<Claims>(token, &key.key, validation) {
                Ok(data) => return self.identity(data.claims).map_err(Refusal::Auth),
                // The signature matched: the claims decide, no other key would differ.
                Err(e) => match e.kind() {
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidAlgorithm
                    | ErrorKind::InvalidKeyFormat
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidEddsaKey => {}
                    ErrorKind::ExpiredSignature => return Err(Refusal::Auth(AuthError::Expired)),
                    _ => return Err(invalid),
                },
            }
        }
        match (kid, held) {
            (Some(_), Some(_)) if !tried_jwks => Err(Refusal::UnknownKid),
            _ => Err(invalid),
        }
    }

    fn identity(&self, claims: Claims) -> Result<Identity, AuthError> {
        let user = UserId::parse(&claims.sub).map_err(|_| AuthError::Invalid)?;
        Ok(Identity {
            user,
            topics: claims.topics.unwrap_or_default(),
            expires_at: claims.exp.saturating_add(self.policy.leeway_seconds),
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

#[cfg(test)]
mod tests {
    use super::*;
    use kurir_backends::Topic;
    use serde_json::json;

    const SECRET: &[u8] = b"unit-test-secret-0123456789abcdef";

    fn token(secret: &[u8], claims: &serde_json::Value) -> String {
        sign(Algorithm::HS256, &EncodingKey::from_secret(secret), claims)
    }

    fn sign(alg: Algorithm, key: &EncodingKey, claims: &serde_json::Value) -> String {
        encode(&Header::new(alg), claims, key).unwrap()
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn config() -> Settings {
        Settings {
            secret: Some(std::str::from_utf8(SECRET).unwrap().into()),
            policy: Policy {
                leeway_seconds: 30,
                ..Policy::default()
            },
            ..Settings::default()
        }
    }

    async fn verifier(c: &Settings) -> Verifier {
        Verifier::from_settings(c, &Readiness::default())
            .await
            .unwrap()
    }

    fn alice_in(exp_in: i64) -> serde_json::Value {
        json!({"sub": "alice", "exp": now_secs() as i64 + exp_in})
    }

    #[test]
    fn accepts_valid_and_refuses_bad_tokens() {
        let v = Verifier::hs256(SECRET);
        let exp = now_secs() + 60;
        let ok = token(
            SECRET,
            &json!({"sub":"alice","exp":exp,"topics":["news.*"]}),
        );
        let id = v.verify(&ok).unwrap();
        assert_eq!(id.user.as_str(), "alice");
        assert!(id.may_subscribe(&Topic::parse("news.eu").unwrap()));
        assert!(!id.may_subscribe(&Topic::parse("sports").unwrap()));

        let bad_sig = token(b"other-secret-0123456789abcdef0123", &alice_in(60));
        assert_eq!(v.verify(&bad_sig), Err(AuthError::Invalid));
        let expired = token(SECRET, &alice_in(-1));
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        let no_exp = token(SECRET, &json!({"sub":"alice"}));
        assert_eq!(v.verify(&no_exp), Err(AuthError::Invalid));
        let no_sub = token(SECRET, &json!({"exp":exp}));
        assert_eq!(v.verify(&no_sub), Err(AuthError::Invalid));
        assert_eq!(v.verify(""), Err(AuthError::Missing));
    }

    #[test]
    fn refuses_alg_none_and_algorithms_it_does_not_know() {
        let v = Verifier::hs256(SECRET);
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let exp = now_secs() + 60;
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"sub":"alice","exp":{exp}}}"#))
        );
        assert_eq!(v.verify(&none), Err(AuthError::Invalid));
        // Same secret, another HMAC: not one of the four algorithms.
        let hs512 = sign(
            Algorithm::HS512,
            &EncodingKey::from_secret(SECRET),
            &alice_in(60),
        );
        assert_eq!(v.verify(&hs512), Err(AuthError::Invalid));
    }

    #[test]
    fn mints_tokens_it_accepts() {
        let v = Verifier::hs256(SECRET);
        let (t, _) = v
            .mint(&UserId::parse("bob").unwrap(), &["demo".into()], 60)
            .unwrap();
        assert_eq!(v.verify(&t).unwrap().topics, vec!["demo".to_string()]);
    }

    #[tokio::test]
    async fn issuer_is_required_when_configured() {
        let mut c = config();
        c.policy.issuer = Some("https://idp.example".into());
        let v = verifier(&c).await;
        let exp = now_secs() + 60;
        let with = |iss: serde_json::Value| {
            token(SECRET, &json!({"sub": "alice", "exp": exp, "iss": iss}))
        };
        assert!(v.verify(&with(json!("https://idp.example"))).is_ok());
        assert_eq!(
            v.verify(&with(json!("https://evil.example"))),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            v.verify(&token(SECRET, &alice_in(60))),
            Err(AuthError::Invalid)
        );
        // Not configured: not checked.
        let v = verifier(&config()).await;
        assert!(v.verify(&with(json!("https://anyone.example"))).is_ok());
    }

    #[tokio::test]
    async fn audience_is_required_when_configured_as_string_or_array() {
        let mut c = config();
        c.policy.audience = Some("kurir".into());
        let v = verifier(&c).await;
        let exp = now_secs() + 60;
        let with = |aud: serde_json::Value| {
            token(SECRET, &json!({"sub": "alice", "exp": exp, "aud": aud}))
        };
        assert!(v.verify(&with(json!("kurir"))).is_ok());
        assert!(v.verify(&with(json!(["billing", "kurir"]))).is_ok());
        assert_eq!(v.verify(&with(json!("billing"))), Err(AuthError::Invalid));
        assert_eq!(v.verify(&with(json!(["billing"]))), Err(AuthError::Invalid));
        assert_eq!(
            v.verify(&token(SECRET, &alice_in(60))),
            Err(AuthError::Invalid)
        );
        // Not configured: a token for some audience is still ours to accept.
        let v = verifier(&config()).await;
        assert!(v.verify(&with(json!("billing"))).is_ok());
    }

    #[tokio::test]
    async fn nbf_and_exp_allow_the_configured_leeway_and_no_more() {
        let v = verifier(&config()).await; // 30 s leeway
        let now = now_secs() as i64;
        let nbf = |at: i64| {
            token(
                SECRET,
                &json!({"sub": "alice", "exp": now + 600, "nbf": at}),
            )
        };
        assert!(v.verify(&nbf(now + 10)).is_ok(), "within the leeway");
        assert_eq!(
            v.verify(&nbf(now + 120)),
            Err(AuthError::Invalid),
            "not yet valid"
        );
        let late = v.verify(&token(SECRET, &alice_in(-10))).unwrap();
        // The session lives as long as the token is accepted at connect, no longer.
        assert!(!late.expired());
        assert_eq!(late.expires_at, (now - 10 + 30) as u64);
        assert_eq!(
            v.verify(&token(SECRET, &alice_in(-40))),
            Err(AuthError::Expired)
        );
        let mut c = config();
        c.policy.leeway_seconds = 0;
        let strict = verifier(&c).await;
        assert_eq!(
            strict.verify(&token(SECRET, &alice_in(-10))),
            Err(AuthError::Expired)
        );
        assert_eq!(strict.verify(&nbf(now + 10)), Err(AuthError::Invalid));
    }

    #[tokio::test]
    async fn short_secrets_are_refused_at_start() {
        let mut c = config();
        c.secret = Some("only-thirty-one-bytes-long-0123".into());
        let err = Verifier::from_settings(&c, &Readiness::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("KURIR_JWT_SECRET") && err.contains("32 bytes"),
            "{err}"
        );
        assert!(
            !err.contains("only-thirty-one"),
            "secret in the error: {err}"
        );
        let err = check_settings(&c).unwrap_err();
        assert_eq!(err.setting(), "KURIR_JWT_SECRET", "{err}");
        c.secret = Some("exactly-thirty-two-bytes-long-01".into());
        assert!(check_settings(&c).is_ok());
    }

    #[tokio::test]
    async fn any_of_several_secrets_verifies() {
        let (old, new, other) = (
            "rotation-old-secret-0123456789abcdef",
            "rotation-new-secret-0123456789abcdef",
            "rotation-other-secret-0123456789abcd",
        );
        let mut c = config();
        c.secret = Some(format!("{new}, {old}").into());
        let v = verifier(&c).await;
        assert!(v.verify(&token(old.as_bytes(), &alice_in(60))).is_ok());
        assert!(v.verify(&token(new.as_bytes(), &alice_in(60))).is_ok());
        assert_eq!(
            v.verify(&token(other.as_bytes(), &alice_in(60))),
            Err(AuthError::Invalid)
        );
        // Development tokens are signed with the first.
        let (t, _) = v.mint(&UserId::parse("bob").unwrap(), &[], 60).unwrap();
        assert!(Verifier::hs256(new.as_bytes()).verify(&t).is_ok());
    }

    /// A PEM bundle of an RSA, a P-256 and an Ed25519 key: each signs its own algorithm
    /// and nothing else; an HS256 token keyed with a public key's bytes is refused even
    /// when a secret is configured too.
    #[tokio::test]
    async fn pem_bundle_keys_verify_their_own_algorithm_only() {
        let dir = std::env::temp_dir().join(format!("kurir-auth-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let bundle = dir.join("bundle.pem");
        let mut pems = String::new();
        for name in ["rs256-public.pem", "es256-public.pem", "ed25519-public.pem"] {
            pems.push_str(&std::fs::read_to_string(fixture(name)).unwrap());
        }
        std::fs::write(&bundle, &pems).unwrap();
        let mut c = config();
        c.public_key_file = Some(bundle);
        let v = verifier(&c).await;
        let private = |n: &str| std::fs::read(fixture(n)).unwrap();
        let rsa = EncodingKey::from_rsa_pem(&private("rs256-private.pem")).unwrap();
        let ec = EncodingKey::from_ec_pem(&private("es256-private.pem")).unwrap();
        let ed = EncodingKey::from_ed_pem(&private("ed25519-private.pem")).unwrap();
        for (alg, key) in [
            (Algorithm::RS256, &rsa),
            (Algorithm::ES256, &ec),
            (Algorithm::EdDSA, &ed),
        ] {
            assert!(v.verify(&sign(alg, key, &alice_in(60))).is_ok(), "{alg:?}");
        }
        // The same keys under another algorithm of their family.
        let rs512 = sign(Algorithm::RS512, &rsa, &alice_in(60));
        assert_eq!(v.verify(&rs512), Err(AuthError::Invalid));
        let ps256 = sign(Algorithm::PS256, &rsa, &alice_in(60));
        assert_eq!(v.verify(&ps256), Err(AuthError::Invalid));
        // RS/HS confusion: the public PEM used as an HMAC secret.
        for name in ["rs256-public.pem", "es256-public.pem", "ed25519-public.pem"] {
            let public = private(name);
            let forged = token(&public, &alice_in(60));
            assert_eq!(v.verify(&forged), Err(AuthError::Invalid), "{name}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn unusable_public_key_files_are_refused_at_start() {
        let mut c = config();
        c.public_key_file = Some(fixture("rs256-private.pem"));
        let err = Verifier::from_settings(&c, &Readiness::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("KURIR_JWT_PUBLIC_KEY_FILE"), "{err}");
        c.public_key_file = Some(fixture("README.md"));
        assert!(Verifier::from_settings(&c, &Readiness::default())
            .await
            .is_err());
    }
}
