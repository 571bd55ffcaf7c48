//! Keys from an identity provider's JWKS (`KURIR_JWT_JWKS_URL`), cached in memory.
//!
//! Verification reads the cache only (a read lock and an `Arc` clone): no HTTP on the
//! hot path. One task owns the fetching: it refreshes every
//! `KURIR_JWT_JWKS_REFRESH_SECONDS` (sooner when `Cache-Control: max-age` says so), and
//! when a token names a `kid` the cache does not hold, at most once per
//! `KURIR_JWT_JWKS_MIN_REFRESH_SECONDS`, so a flood of made-up `kid`s costs the identity
//! provider one request per interval. A failed fetch keeps the keys already held; an
//! answer with no usable key is treated as a failure, so a broken endpoint can neither
//! add nor remove keys. Before the first successful fetch no token is accepted and the
//! node reports itself unready.
//!
//! Usable keys: `RSA` (RS256), `EC` on P-256 (ES256) and `OKP` Ed25519 (EdDSA), with
//! `use` absent or `sig` and `alg` absent or matching the key type. Symmetric (`oct`)
//! keys and everything else are skipped: a key set served over HTTP is public.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{watch, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use super::keys::{KeyError, VerifyKey};
use crate::readiness::Readiness;
use crate::telemetry;

/// Largest JWKS body read; identity providers publish a few keys, a few KiB.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Time allowed for one fetch, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// How often and how eagerly the key set is fetched.
#[derive(Debug, Clone)]
pub struct JwksOptions {
    pub url: String,
    /// Background refresh interval (upper bound for `Cache-Control: max-age`).
    pub refresh: Duration,
    /// Fewest time between two fetches triggered by unknown `kid`s, and between retries
    /// after a failure.
    pub min_refresh: Duration,
}

/// The cached key set and the handle to its refresh task.
pub struct Jwks {
    keys: RwLock<Arc<Vec<VerifyKey>>>,
    /// Bumped after every refresh attempt (and every nudge answered without one), so
    /// that a connection waiting for a `kid` knows when to look again.
    generation: watch::Sender<u64>,
    /// Asks the refresh task for a fetch (unknown `kid`).
    nudge: Arc<Notify>,
    /// Start of the last fetch, for the rate limit.
    last_fetch: Mutex<Option<Instant>>,
    options: JwksOptions,
    /// Ends the refresh task when the verifier is dropped.
    _stop: DropGuard,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.options.url)
            .field("keys", &self.keys.read().len())
            .finish_non_exhaustive()
    }
}

/// Why a fetch brought no keys (logged; the URL is configuration, not a secret).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Http(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("body over {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("not a JWKS document: {0}")]
    Malformed(String),
    #[error("no usable signing key (RS256, ES256 or EdDSA) in the set")]
    NoUsableKey,
}

/// Check the URL's form.
///
/// # Errors
/// Not `https://`, or `http://` to something else than a loopback address.
pub fn check_url(url: &str) -> Result<(), KeyError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| KeyError::JwksUrl(format!("{e}")))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = parsed.host_str().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(KeyError::JwksUrl(
                    "must be https:// (plain http:// only to a loopback address): keys fetched in the clear could be replaced on the way".into(),
                ))
            }
        }
        other => Err(KeyError::JwksUrl(format!(
            "unsupported scheme {other}: use https://"
        ))),
    }
}

impl Jwks {
    /// Fetch the key set once (a failure is logged, not fatal: the task retries and the
    /// node stays unready meanwhile), then start the refresh task.
    ///
    /// # Errors
    /// A malformed URL or an HTTP client that cannot be built.
    pub async fn start(options: JwksOptions, readiness: Readiness) -> Result<Arc<Self>, KeyError> {
        check_url(&options.url)?;
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            // A redirect could lead to plain HTTP; identity providers serve the set
            // where they say they do.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| KeyError::HttpClient(e.to_string()))?;
        let stop = CancellationToken::new();
        let jwks = Arc::new(Self {
            keys: RwLock::new(Arc::new(Vec::new())),
            generation: watch::Sender::new(0),
            nudge: Arc::new(Notify::new()),
            last_fetch: Mutex::new(None),
            options,
            _stop: stop.clone().drop_guard(),
        });
        let next = jwks.refresh(&client, &readiness).await;
        tokio::spawn(refresh_task(
            Arc::downgrade(&jwks),
            jwks.nudge.clone(),
            client,
            readiness,
            next,
            stop,
        ));
        Ok(jwks)
    }

    /// The keys held now (hot path: no I/O).
    pub fn keys(&self) -> Arc<Vec<VerifyKey>> {
        self.keys.read().clone()
    }

    /// Whether a fetch for an unknown `kid` may run now.
    fn may_fetch(&self) -> bool {
        self.last_fetch
            .lock()
            .is_none_or(|t| t.elapsed() >= self.options.min_refresh)
    }

    /// Ask for a fetch without waiting (a token named an unknown `kid`).
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Fetch now, if the rate limit allows, and wait for it (bounded). Whether the key
    /// set may have changed since the caller looked.
    pub async fn refresh_for_unknown_kid(&self) -> bool {
        if !self.may_fetch() {
            debug!("unknown kid while JWKS fetches are rate-limited");
            return false;
        }
        let mut changed = self.generation.subscribe();
        self.nudge.notify_one();
        matches!(
            tokio::time::timeout(FETCH_TIMEOUT + Duration::from_secs(1), changed.changed()).await,
            Ok(Ok(()))
        )
    }

    /// One fetch; on success the cache is replaced. The delay until the next
    /// background refresh.
    async fn refresh(&self, client: &reqwest::Client, readiness: &Readiness) -> Duration {
        *self.last_fetch.lock() = Some(Instant::now());
        let outcome = fetch(client, &self.options.url).await;
        let next = match outcome {
            Ok((keys, max_age)) => {
                let kids = |ks: &[VerifyKey]| -> Vec<Option<String>> {
                    ks.iter().map(|k| k.kid.clone()).collect()
                };
                let (new, old) = (kids(&keys), kids(&self.keys.read()));
                if new == old {
                    debug!(keys = keys.len(), "JWKS unchanged");
                } else {
                    // Which keys came and went: the trail of a rotation.
                    info!(keys = keys.len(), kids = ?new, "JWKS loaded");
                }
                telemetry::jwks_refresh(true, keys.len());
                *self.keys.write() = Arc::new(keys);
                readiness.set_keys_loaded(true);
                max_age.map_or(self.options.refresh, |a| {
                    a.clamp(self.options.min_refresh, self.options.refresh)
                })
            }
            Err(e) => {
                let held = self.keys.read().len();
                warn!(error = %e, url = %self.options.url, keys_kept = held, "JWKS fetch failed");
                telemetry::jwks_refresh(false, held);
                if held == 0 {
                    readiness.set_keys_loaded(false);
                }
                self.options.min_refresh
            }
        };
        self.generation.send_modify(|g| *g += 1);
        next
    }
}

/// Refresh on schedule or when nudged; ends with the verifier (it holds no strong
/// reference while it waits).
async fn refresh_task(
    jwks: std::sync::Weak<Jwks>,
    nudge: Arc<Notify>,
    client: reqwest::Client,
    readiness: Readiness,
    next: Duration,
    stop: CancellationToken,
) {
    // A deadline, not a sleep per turn: nudges must not postpone the schedule.
    let mut due = tokio::time::Instant::now() + next;
    loop {
        let nudged = tokio::select! {
            () = stop.cancelled() => return,
            () = nudge.notified() => true,
            () = tokio::time::sleep_until(due) => false,
        };
        let Some(j) = jwks.upgrade() else { return };
        if nudged && !j.may_fetch() {
            // Answer the waiters (the set may have been fetched just before they
            // looked) and keep the schedule.
            j.generation.send_modify(|g| *g += 1);
            continue;
        }
        let next = j.refresh(&client, &readiness).await;
        due = tokio::time::Instant::now() + next;
    }
}

/// GET the set; its usable keys and `Cache-Control: max-age`.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
) -> Result<(Vec<VerifyKey>, Option<Duration>), FetchError> {
    let mut resp = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| FetchError::Http(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(FetchError::Status(resp.status().as_u16()));
    }
    let max_age = resp
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(max_age);
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| FetchError::Http(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let keys = parse(&body)?;
    Ok((keys, max_age))
}

/// `max-age=N` of a `Cache-Control` value.
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|d| {
        let (k, v) = d.trim().split_once('=')?;
        k.eq_ignore_ascii_case("max-age")
            .then(|| v.trim().parse().ok().map(Duration::from_secs))?
    })
}

/// The usable keys of a JWKS document; one odd key does not spoil the others.
///
/// # Errors
/// Not a `{"keys":[…]}` document, or no usable key in it.
pub fn parse(body: &[u8]) -> Result<Vec<VerifyKey>, FetchError> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set =
        serde_json::from_slice(body).map_err(|e| FetchError::Malformed(e.to_string()))?;
    let keys: Vec<VerifyKey> = set
        .keys
        .into_iter()
        .filter_map(|v| {
            let jwk: Jwk = serde_json::from_value(v).ok()?;
            let key = usable(&jwk);
            if key.is_none() {
                debug!(kid = ?jwk.common.key_id, "JWKS key skipped (not a supported signing key)");
            }
            key
        })
        .collect();
    if keys.is_empty() {
        return Err(FetchError::NoUsableKey);
    }
    Ok(keys)
}

/// A JWK as a verification key, if it is a public signing key of a supported kind.
fn usable(jwk: &Jwk) -> Option<VerifyKey> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        // `oct` (a shared secret must never come from a URL) and other curves.
        _ => return None,
    };
    let declared = jwk.common.key_algorithm;
    let matches = match declared {
        None => true,
        Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => alg == Algorithm::EdDSA,
        Some(_) => false,
    };
    if !matches {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_max_age() {
        assert_eq!(
            max_age("public, max-age=600, must-revalidate"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-store"), None);
    }

    #[test]
    fn only_loopback_may_use_plain_http() {
        assert!(check_url("https://idp.example.com/.well-known/jwks.json").is_ok());
        assert!(check_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_url("http://localhost/jwks").is_ok());
        assert!(check_url("http://[::1]:9/jwks").is_ok());
        assert!(check_url("http://idp.internal/jwks").is_err());
        assert!(check_url("ftp://idp/jwks").is_err());
        assert!(check_url("not a url").is_err());
    }

    #[test]
    fn symmetric_and_unknown_keys_are_skipped() {
        let set = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "EC", "crv": "P-384", "kid": "p384",
             "x": "AAAA", "y": "AAAA"},
            {"kty": "weird", "kid": "w"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "use": "sig",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "mislabelled", "alg": "RS256",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        ]});
        let keys = parse(set.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref().unwrap()).collect();
        assert_eq!(kids, ["ed"]);
        assert_eq!(keys[0].alg, Algorithm::EdDSA);
        assert!(matches!(
            parse(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#),
            Err(FetchError::NoUsableKey)
        ));
        assert!(matches!(parse(b"<html>"), Err(FetchError::Malformed(_))));
    }
}
