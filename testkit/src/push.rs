//! A fake Web Push service on loopback, and the keys a browser and a server hold: what
//! the offline-reach tests push to. It records every request per endpoint and answers
//! each endpoint from a script (`410`, `429` with `Retry-After`…), then `201 Created`.
//! It checks nothing of the payload: the push crate's own tests decrypt it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::SecretKey;

/// One scripted answer: a status, optionally `Retry-After` in seconds, and how long the
/// service holds the request before answering.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: u16,
    pub retry_after_s: Option<u64>,
    pub hold: Duration,
}

impl Answer {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after_s: None,
            hold: Duration::ZERO,
        }
    }

    pub fn retry_after(status: u16, seconds: u64) -> Self {
        Self {
            retry_after_s: Some(seconds),
            ..Self::status(status)
        }
    }

    /// Take the request and answer nothing for a minute (a pusher caught mid-request).
    pub fn stall() -> Self {
        Self {
            hold: Duration::from_secs(60),
            ..Self::status(201)
        }
    }
}

#[derive(Default)]
struct Log {
    requests: HashMap<String, Vec<(Instant, HeaderMap)>>,
    scripts: HashMap<String, VecDeque<Answer>>,
}

/// The fake push service; it stops when the test's runtime does.
#[derive(Clone)]
pub struct FakePushService {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl FakePushService {
    /// Serve on an ephemeral loopback port.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start() -> Self {
        let log = Arc::new(Mutex::new(Log::default()));
        let router = Router::new()
            .route("/push/{name}", post(receive))
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake push service");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, log }
    }

    /// `http://127.0.0.1:<port>`: what `KURIR_WEBPUSH_ALLOWED_ORIGINS` must allow.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The endpoint of subscription `name`.
    pub fn endpoint(&self, name: &str) -> String {
        format!("{}/push/{name}", self.origin())
    }

    /// Answer the next requests to `name` with `answers`, in order.
    pub fn script(&self, name: &str, answers: impl IntoIterator<Item = Answer>) {
        let mut log = self.log.lock().expect("log");
        log.scripts
            .entry(name.to_owned())
            .or_default()
            .extend(answers);
    }

    /// When each request to `name` arrived.
    pub fn arrivals(&self, name: &str) -> Vec<Instant> {
        let log = self.log.lock().expect("log");
        log.requests
            .get(name)
            .map(|r| r.iter().map(|(at, _)| *at).collect())
            .unwrap_or_default()
    }

    /// The headers of each request to `name`.
    pub fn headers(&self, name: &str) -> Vec<HeaderMap> {
        let log = self.log.lock().expect("log");
        log.requests
            .get(name)
            .map(|r| r.iter().map(|(_, h)| h.clone()).collect())
            .unwrap_or_default()
    }

    /// Requests to every endpoint.
    pub fn total(&self) -> usize {
        let log = self.log.lock().expect("log");
        log.requests.values().map(Vec::len).sum()
    }
}

async fn receive(
    State(log): State<Arc<Mutex<Log>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let answer = {
        let mut log = log.lock().expect("log");
        log.requests
            .entry(name.clone())
            .or_default()
            .push((Instant::now(), headers));
        log.scripts
            .get_mut(&name)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Answer::status(201))
    };
    if !answer.hold.is_zero() {
        tokio::time::sleep(answer.hold).await;
    }
    let mut out = HeaderMap::new();
    if let Some(s) = answer.retry_after_s {
        out.insert("retry-after", HeaderValue::from(s));
    }
    (
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        out,
    )
}

/// A browser's subscription keys: base64url `p256dh` (a fresh P-256 public key) and
/// `auth` (16 random bytes).
pub fn browser_keys() -> (String, String) {
    let point = secret_key().public_key().to_encoded_point(false);
    (
        URL_SAFE_NO_PAD.encode(point.as_bytes()),
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()),
    )
}

/// A fresh VAPID private key as `KURIR_VAPID_PRIVATE_KEY` takes it.
pub fn vapid_private_key() -> String {
    URL_SAFE_NO_PAD.encode(secret_key().to_bytes())
}

fn secret_key() -> SecretKey {
    loop {
        if let Ok(key) = SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
            return key;
        }
    }
}
