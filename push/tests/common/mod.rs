//! Scaffolding of the push tests: fake services on 127.0.0.1, fast policies, keys.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use kurir_push::breaker::BreakerPolicy;
use kurir_push::guard::GuardPolicy;
use kurir_push::retry::RetryPolicy;
use p256::SecretKey;

/// Serves `router` on an ephemeral loopback port (HTTP/1.1 and h2c) until the test ends.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    addr
}

/// Quick retries and a breaker that needs `failures` in a row.
pub fn policy(max_attempts: u32, failures: u32) -> GuardPolicy {
    GuardPolicy {
        concurrency: 8,
        timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_attempts,
            base: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            budget: Duration::from_secs(5),
        },
        breaker: BreakerPolicy {
            failure_threshold: failures,
            open_for: Duration::from_secs(60),
        },
    }
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).expect("base64url")
}

/// A fresh P-256 key, as a browser or a developer console makes one.
pub fn p256_key() -> SecretKey {
    loop {
        if let Ok(key) = SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
            return key;
        }
    }
}

/// The JWT verification key of a P-256 public key.
pub fn decoding_key(key: &p256::PublicKey) -> jsonwebtoken::DecodingKey {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let point = key.to_encoded_point(false);
    jsonwebtoken::DecodingKey::from_ec_components(
        &b64(point.x().unwrap()),
        &b64(point.y().unwrap()),
    )
    .expect("EC components")
}

pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A Web Push client allowed to reach `origin` (a fake on loopback).
pub fn webpush_client(origin: &str) -> kurir_push::webpush::WebPushClient {
    let key = p256_key();
    let vapid = kurir_push::webpush::vapid::VapidKey::from_secret(&key, "mailto:ops@kurir.example")
        .expect("vapid");
    kurir_push::webpush::WebPushClient::new(
        vapid,
        origin.parse().expect("allowlist"),
        Duration::from_secs(5),
    )
    .expect("client")
}

/// A browser subscription at `endpoint` with fresh keys.
pub fn webpush_device(endpoint: String) -> kurir_push::Device {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    kurir_push::Device::WebPush(kurir_push::WebPushSubscription {
        endpoint,
        p256dh: b64(p256_key().public_key().to_encoded_point(false).as_bytes()),
        auth: b64(&rand::random::<[u8; 16]>()),
    })
}
