//! Minted tokens checked by the gateway's own verifier.

use super::*;
use kurir_backends::Namespace;
use kurir_gateway::auth::{AuthError, Verifier};
use kurir_gateway::readiness::Readiness;

const SECRET: &str = "token-test-secret-0123456789abcdef";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn args(user: &str) -> TokenArgs {
    TokenArgs {
        user: user.into(),
        topics: Vec::new(),
        ttl: DEFAULT_TTL_SECONDS,
        jwt_secret: Some(Secret::from(SECRET)),
        private_key_file: None,
        kid: None,
        issuer: None,
        audience: None,
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../gateway/tests/fixtures")
        .join(name)
}

/// A gateway configuration trusting `public` (a fixture) and, when given, requiring
/// an issuer and an audience.
async fn gateway_verifier(public: &str, iss_aud: Option<(&str, &str)>) -> Verifier {
    let mut c = kurir_gateway::Config::for_test(Namespace::random_for_test());
    c.jwt_secret = Some(Secret::from(SECRET));
    c.jwt_public_key_file = Some(fixture(public));
    if let Some((iss, aud)) = iss_aud {
        c.jwt_issuer = Some(iss.into());
        c.jwt_audience = Some(aud.into());
    }
    Verifier::from_settings(&c.jwt_settings(), &Readiness::default())
        .await
        .unwrap()
}

#[test]
fn an_hs256_token_is_accepted_with_its_user_topics_and_expiry() {
    let mut a = args("alice");
    a.topics = vec!["news.*".into(), "orders".into()];
    a.ttl = 600;
    let issued = now();
    let token = mint(&a, issued).unwrap();
    assert!(!token.contains('\n'));
    let id = Verifier::hs256(SECRET.as_bytes()).verify(&token).unwrap();
    assert_eq!(id.user.as_str(), "alice");
    assert_eq!(id.topics, ["news.*", "orders"]);
    assert_eq!(id.expires_at, issued + 600);
    assert!(id.may_subscribe(&Topic::parse("news.eu").unwrap()));
    assert!(!id.may_subscribe(&Topic::parse("sports").unwrap()));
}

#[test]
fn the_first_of_several_secrets_signs() {
    let old = "rotation-old-secret-0123456789abcdef";
    let mut a = args("alice");
    a.jwt_secret = Some(Secret::from(format!("{SECRET}, {old}")));
    let token = mint(&a, now()).unwrap();
    assert!(Verifier::hs256(SECRET.as_bytes()).verify(&token).is_ok());
    assert_eq!(
        Verifier::hs256(old.as_bytes()).verify(&token),
        Err(AuthError::Invalid)
    );
}

#[test]
fn bad_users_topics_ttls_and_secrets_are_refused_without_showing_secrets() {
    let err = |a: TokenArgs| mint(&a, now()).unwrap_err();
    assert!(matches!(err(args("a b")), TokenError::User(_)));
    assert!(matches!(err(args("")), TokenError::User(_)));
    for bad in ["bad topic", "news.", ".*", "news.*.x"] {
        let mut a = args("alice");
        a.topics = vec![bad.into()];
        assert!(matches!(err(a), TokenError::Topic { .. }), "{bad}");
    }
    let mut a = args("alice");
    a.topics = vec!["*".into(), "news.*".into(), "a.b-c_d".into()];
    assert!(mint(&a, now()).is_ok());
    let mut a = args("alice");
    a.ttl = 0;
    assert!(matches!(err(a), TokenError::Ttl));
    let mut a = args("alice");
    a.jwt_secret = None;
    assert!(matches!(err(a), TokenError::NoKey));
    let mut a = args("alice");
    a.jwt_secret = Some(Secret::from("short-secret"));
    let message = err(a).to_string();
    assert!(message.contains("KURIR_JWT_SECRET"), "{message}");
    assert!(!message.contains("short-secret"), "{message}");
}

#[test]
fn an_expired_token_is_refused_as_expired() {
    let mut a = args("alice");
    a.ttl = 60;
    let token = mint(&a, now() - 120).unwrap();
    assert_eq!(
        Verifier::hs256(SECRET.as_bytes()).verify(&token),
        Err(AuthError::Expired)
    );
}

#[tokio::test]
async fn private_keys_sign_with_the_algorithm_of_their_kind() {
    for (private, public, alg) in [
        ("rs256-private.pem", "rs256-public.pem", Algorithm::RS256),
        ("es256-private.pem", "es256-public.pem", Algorithm::ES256),
        (
            "ed25519-private.pem",
            "ed25519-public.pem",
            Algorithm::EdDSA,
        ),
    ] {
        let mut a = args("bob");
        a.private_key_file = Some(fixture(private));
        a.kid = Some("key-1".into());
        a.issuer = Some("https://idp.example".into());
        a.audience = Some("kurir".into());
        let token = mint(&a, now()).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, alg);
        assert_eq!(header.kid.as_deref(), Some("key-1"));
        let v = gateway_verifier(public, Some(("https://idp.example", "kurir"))).await;
        assert_eq!(v.verify(&token).unwrap().user.as_str(), "bob", "{alg:?}");
        // Without the issuer and audience the gateway requires, it is refused.
        a.issuer = None;
        a.audience = None;
        let bare = mint(&a, now()).unwrap();
        assert_eq!(v.verify(&bare), Err(AuthError::Invalid), "{alg:?}");
    }
}

#[test]
fn a_public_key_or_a_missing_file_is_no_signing_key() {
    for file in [fixture("rs256-public.pem"), fixture("no-such-key.pem")] {
        let mut a = args("alice");
        a.private_key_file = Some(file.clone());
        let message = mint(&a, now()).unwrap_err().to_string();
        assert!(message.starts_with("--private-key-file"), "{message}");
    }
}
