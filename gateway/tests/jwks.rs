//! Keys from a JWKS URL: a local identity provider (axum on 127.0.0.1:0) whose key set
//! the tests change while a verifier or a whole gateway runs. RS256, ES256 and EdDSA
//! keys are generated per run with the `openssl` CLI.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kurir_backends::{Backends, Namespace};
use kurir_gateway::auth::{AuthError, Verifier};
use kurir_gateway::readiness::Readiness;
use kurir_gateway::{Config, Gateway};
use parking_lot::Mutex;
use serde_json::{json, Value};

/// A signing key and its public JWK.
struct Key {
    kid: &'static str,
    alg: Algorithm,
    private: EncodingKey,
    jwk: Value,
}

impl Key {
    fn generate(alg: Algorithm, kid: &'static str) -> Self {
        let args: &[&str] = match alg {
            Algorithm::RS256 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            Algorithm::ES256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            Algorithm::EdDSA => &["-algorithm", "ED25519"],
            other => panic!("no key kind for {other:?}"),
        };
        let out = std::process::Command::new("openssl")
            .arg("genpkey")
            .args(args)
            .output()
            .expect("the openssl CLI generates the test keys");
        assert!(out.status.success(), "openssl genpkey failed");
        let private = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&out.stdout),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&out.stdout),
            _ => EncodingKey::from_ed_pem(&out.stdout),
        }
        .unwrap();
        let mut jwk = Jwk::from_encoding_key(&private, alg).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        Self {
            kid,
            alg,
            private,
            jwk: serde_json::to_value(&jwk).unwrap(),
        }
    }

    fn token(&self, user: &str) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.to_owned());
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        jsonwebtoken::encode(&header, &json!({"sub": user, "exp": exp}), &self.private).unwrap()
    }
}

/// The identity provider's JWKS endpoint.
#[derive(Clone, Default)]
struct Idp {
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    max_age: Arc<Mutex<Option<u64>>>,
}

impl Idp {
    async fn start() -> (Self, String) {
        let idp = Self::default();
        let served = idp.clone();
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let idp = served.clone();
                async move {
                    idp.fetches.fetch_add(1, Ordering::SeqCst);
                    if idp.failing.load(Ordering::SeqCst) {
                        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                    }
                    let body = json!({"keys": *idp.keys.lock()}).to_string();
                    let cache = idp
                        .max_age
                        .lock()
                        .map_or("no-cache".to_owned(), |s| format!("public, max-age={s}"));
                    (
                        [
                            (header::CONTENT_TYPE, "application/json".to_owned()),
                            (header::CACHE_CONTROL, cache),
                        ],
                        body,
                    )
                        .into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (idp, url)
    }

    fn publish(&self, keys: &[&Key]) {
        *self.keys.lock() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// Gateway settings with only the JWKS (min refresh 1 s, background refresh 300 s).
fn config(url: &str) -> Config {
    let mut c = Config::for_test(Namespace::random_for_test());
    c.jwt_secret = None;
    c.jwt_secret = None;
    c.jwt_jwks_url = Some(url.to_owned());
    c.jwt_jwks_min_refresh_seconds = 1;
    c.jwt_jwks_refresh_seconds = 300;
    c
}

/// Let the one-second rate limit on fetches for unknown `kid`s pass.
async fn past_rate_limit() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rotation with both keys published: the old key keeps verifying, a new `kid` is
/// fetched on first sight (once per rate-limit interval), for each key type.
#[tokio::test]
async fn new_kids_are_picked_up_on_first_sight_and_old_ones_keep_working() {
    let (idp, url) = Idp::start().await;
    let rsa = Key::generate(Algorithm::RS256, "rsa-2026-01");
    let ec = Key::generate(Algorithm::ES256, "ec-2026-02");
    let ed = Key::generate(Algorithm::EdDSA, "ed-2026-03");
    idp.publish(&[&rsa]);
    let readiness = Readiness::default();
    let v = Verifier::from_settings(&config(&url).jwt_settings(), &readiness)
        .await
        .unwrap();
    assert_eq!(idp.fetches(), 1, "fetched once at start");
    assert!(readiness.report().keys);
    assert!(v.verify(&rsa.token("alice")).is_ok());

    // Overlap: the new key is published next to the old one and used at once.
    idp.publish(&[&rsa, &ec]);
    past_rate_limit().await;
    let id = v.verify_fresh(&ec.token("bob")).await.unwrap();
    assert_eq!(id.user.as_str(), "bob");
    assert_eq!(idp.fetches(), 2, "one fetch for the new kid");
    assert!(v.verify(&rsa.token("alice")).is_ok(), "old key still valid");
    assert!(v.verify(&ec.token("bob")).is_ok(), "new key now cached");

    // A second unknown kid within the interval: refused, no fetch.
    idp.publish(&[&rsa, &ec, &ed]);
    assert_eq!(
        v.verify_fresh(&ed.token("carol")).await,
        Err(AuthError::Invalid)
    );
    assert_eq!(idp.fetches(), 2, "rate-limited: no fetch");
    past_rate_limit().await;
    assert!(v.verify_fresh(&ed.token("carol")).await.is_ok(), "EdDSA");
    assert_eq!(idp.fetches(), 3);

    // Many tokens naming made-up kids cost one fetch per interval, not one each.
    past_rate_limit().await;
    let forged = {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("made-up".into());
        jsonwebtoken::encode(
            &h,
            &json!({"sub": "mallory", "exp": u32::MAX}),
            &rsa.private,
        )
        .unwrap()
    };
    for _ in 0..20 {
        assert_eq!(v.verify_fresh(&forged).await, Err(AuthError::Invalid));
    }
    assert_eq!(idp.fetches(), 4);
}

/// A key removed from the set stops verifying once the set is refreshed (here on the
/// provider's `Cache-Control: max-age=1`), without a restart.
#[tokio::test]
async fn removed_keys_stop_verifying_after_a_refresh() {
    let (idp, url) = Idp::start().await;
    let old = Key::generate(Algorithm::ES256, "old");
    let new = Key::generate(Algorithm::ES256, "new");
    *idp.max_age.lock() = Some(1);
    idp.publish(&[&old, &new]);
    let v = Verifier::from_settings(&config(&url).jwt_settings(), &Readiness::default())
        .await
        .unwrap();
    assert!(v.verify(&old.token("alice")).is_ok());
    idp.publish(&[&new]);
    eventually("the old key dropped", || {
        v.verify(&old.token("alice")) == Err(AuthError::Invalid)
    })
    .await;
    assert!(v.verify(&new.token("alice")).is_ok());
    // A failing provider keeps the keys held.
    idp.failing.store(true, Ordering::SeqCst);
    let before = idp.fetches();
    eventually("a failed refresh", || idp.fetches() > before + 1).await;
    assert!(
        v.verify(&new.token("alice")).is_ok(),
        "keys kept on failure"
    );
}

/// A provider that cannot be reached at start: the gateway starts unready and accepts
/// nothing, then becomes ready as soon as a retry succeeds.
#[tokio::test]
async fn an_unreachable_jwks_at_start_means_unready_and_no_tokens_until_it_answers() {
    let (idp, url) = Idp::start().await;
    let key = Key::generate(Algorithm::RS256, "k1");
    idp.publish(&[&key]);
    idp.failing.store(true, Ordering::SeqCst);
    let readiness = Readiness::default();
    let v = Verifier::from_settings(&config(&url).jwt_settings(), &readiness)
        .await
        .unwrap();
    assert!(!readiness.report().keys);
    assert!(!readiness.is_ready());
    assert_eq!(v.verify(&key.token("alice")), Err(AuthError::Invalid));
    idp.failing.store(false, Ordering::SeqCst);
    eventually("keys loaded by a retry", || readiness.report().keys).await;
    assert!(v.verify(&key.token("alice")).is_ok());
}

async fn status(addr: std::net::SocketAddr, token: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}")).await {
        Ok(_) => (101, String::new()),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => (
            r.status().as_u16(),
            String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(e) => panic!("{e}"),
    }
}

/// The rotation as clients see it: during the overlap, a client holding a token from the
/// new key connects on its first try, and clients with the old key still do.
#[tokio::test]
async fn a_gateway_accepts_the_new_key_during_the_overlap_with_no_failed_connection() {
    let (idp, url) = Idp::start().await;
    let old = Key::generate(Algorithm::RS256, "2026-old");
    let new = Key::generate(Algorithm::RS256, "2026-new");
    let stranger = Key::generate(Algorithm::RS256, "stranger");
    idp.publish(&[&old]);
    let c = config(&url);
    let ns = c.backends.namespace.clone();
    let gw = Gateway::bind(c, Backends::memory(ns), None).await.unwrap();
    let addr = gw.local_addr();
    tokio::spawn(gw.serve(std::future::pending()));
    assert_eq!(status(addr, &old.token("alice")).await.0, 101);

    idp.publish(&[&old, &new]);
    past_rate_limit().await;
    assert_eq!(status(addr, &new.token("bob")).await.0, 101, "first try");
    for _ in 0..5 {
        assert_eq!(status(addr, &new.token("bob")).await.0, 101);
        assert_eq!(status(addr, &old.token("alice")).await.0, 101);
    }
    // A kid the provider does not publish: 401 with a JSON reason.
    let (code, body) = status(addr, &stranger.token("eve")).await;
    assert_eq!(code, 401);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "invalid_token");
}
