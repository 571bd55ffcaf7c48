//! Web Push end to end: a browser's keys, a fake push service that checks VAPID and the
//! headers and decrypts the body as the browser would.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::Aes128Gcm;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::{b64, decoding_key, now_s, p256_key, policy, serve, unb64};
use hkdf::Hkdf;
use jsonwebtoken::{Algorithm, Validation};
use kurir_push::ssrf::OriginAllowlist;
use kurir_push::webpush::vapid::VapidKey;
use kurir_push::webpush::{headers, WebPushClient};
use kurir_push::{
    Device, FailureReason, Outcome, Priority, PushMessage, Pusher, WebPushSubscription,
};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use serde::Deserialize;
use sha2::Sha256;

/// The browser's side of a subscription.
struct Browser {
    key: SecretKey,
    auth: [u8; 16],
}

impl Browser {
    fn new() -> Self {
        Self {
            key: p256_key(),
            auth: rand::random(),
        }
    }

    fn subscription(&self, endpoint: String) -> WebPushSubscription {
        WebPushSubscription {
            endpoint,
            p256dh: b64(self.key.public_key().to_encoded_point(false).as_bytes()),
            auth: b64(&self.auth),
        }
    }

    /// RFC 8291 §3.4 and RFC 8188 from the receiving end.
    fn decrypt(&self, body: &[u8]) -> Vec<u8> {
        let (salt, rest) = body.split_at(16);
        assert_eq!(
            u32::from_be_bytes(rest[..4].try_into().unwrap()),
            4096,
            "record size"
        );
        assert_eq!(rest[4], 65, "key id length");
        let sender = PublicKey::from_sec1_bytes(&rest[5..70]).expect("sender key");
        let ciphertext = &rest[70..];
        let shared = p256::ecdh::diffie_hellman(self.key.to_nonzero_scalar(), sender.as_affine());
        let mut info = b"WebPush: info\0".to_vec();
        info.extend_from_slice(self.key.public_key().to_encoded_point(false).as_bytes());
        info.extend_from_slice(&rest[5..70]);
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&self.auth), &shared.raw_secret_bytes()[..])
            .expand(&info, &mut ikm)
            .unwrap();
        let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
        prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
            .unwrap();
        prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
            .unwrap();
        let mut record = Aes128Gcm::new(&cek.into())
            .decrypt(&nonce.into(), ciphertext)
            .expect("authentic");
        while record.last() == Some(&0) {
            record.pop();
        }
        assert_eq!(record.pop(), Some(2), "last-record delimiter");
        record
    }
}

#[derive(Debug, Deserialize)]
struct VapidClaims {
    aud: String,
    exp: u64,
    sub: String,
}

type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A push service that records each request and answers `status`.
async fn push_service(status: StatusCode) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let router = Router::new().route(
        "/push/{id}",
        post(move |headers: HeaderMap, body: Bytes| async move {
            log.lock().unwrap().push((headers, body));
            status
        }),
    );
    let addr = serve(router).await;
    (format!("http://{addr}"), seen)
}

fn pusher(origin: &str, vapid: VapidKey) -> Pusher {
    let allowlist: OriginAllowlist = origin.parse().expect("allowlist");
    let client = WebPushClient::new(vapid, allowlist, Duration::from_secs(5)).expect("client");
    Pusher::new(policy(3, 5)).with_webpush(client)
}

fn vapid() -> (VapidKey, SecretKey) {
    let key = p256_key();
    (
        VapidKey::from_secret(&key, "mailto:ops@kurir.example").expect("vapid"),
        key,
    )
}

#[tokio::test]
async fn a_browser_decrypts_what_kurir_sends_and_the_service_checks_vapid() {
    let (origin, seen) = push_service(StatusCode::CREATED).await;
    let (vapid, vapid_key) = vapid();
    let pusher = pusher(&origin, vapid);
    let browser = Browser::new();
    let device = Device::WebPush(browser.subscription(format!("{origin}/push/abc123")));
    let mut message = PushMessage::new("n-1", "Hello", "You have mail");
    message.data.insert("thread".into(), "42".into());
    message.collapse_key = Some("inbox of user 42".into());
    message.priority = Priority::High;
    message.ttl = Duration::from_secs(60);

    assert_eq!(
        pusher.send(&device, &message).await,
        Outcome::Sent { id: None }
    );

    let (headers, body) = seen.lock().unwrap().pop().expect("one request");
    let header = |name: &str| headers.get(name).expect(name).to_str().unwrap().to_owned();
    assert_eq!(header("ttl"), "60");
    assert_eq!(header("urgency"), "high");
    assert_eq!(header("content-encoding"), "aes128gcm");
    let topic = header("topic");
    assert_eq!(topic, headers::topic("inbox of user 42"));
    assert!(
        topic.len() <= 32
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );

    let authorization = header("authorization");
    let (t, k) = authorization
        .strip_prefix("vapid t=")
        .and_then(|rest| rest.split_once(", k="))
        .expect("vapid t=…, k=…");
    assert_eq!(k, pusher.vapid_public_key().unwrap());
    assert_eq!(
        unb64(k),
        vapid_key.public_key().to_encoded_point(false).as_bytes()
    );
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[origin.as_str()]);
    let claims =
        jsonwebtoken::decode::<VapidClaims>(t, &decoding_key(&vapid_key.public_key()), &validation)
            .expect("a VAPID token signed by the server's key")
            .claims;
    assert_eq!(claims.aud, origin);
    assert_eq!(claims.sub, "mailto:ops@kurir.example");
    assert!(
        claims.exp > now_s() && claims.exp <= now_s() + 24 * 3600,
        "exp within 24 h"
    );

    let plaintext = browser.decrypt(&body);
    let received: serde_json::Value = serde_json::from_slice(&plaintext).expect("JSON payload");
    assert_eq!(received, serde_json::to_value(&message).unwrap());
    assert_eq!(received["id"], "n-1");
    assert_eq!(received["data"]["thread"], "42");
}

#[tokio::test]
async fn a_short_collapse_key_is_the_topic_itself() {
    assert_eq!(headers::topic("chat-42_x"), "chat-42_x");
    let long = headers::topic(&"k".repeat(33));
    assert_eq!(long.len(), 32);
    assert_eq!(long, headers::topic(&"k".repeat(33)), "stable");
}

#[tokio::test]
async fn expired_subscriptions_are_gone() {
    for status in [StatusCode::NOT_FOUND, StatusCode::GONE] {
        let (origin, seen) = push_service(status).await;
        let pusher = pusher(&origin, vapid().0);
        let device = Device::WebPush(Browser::new().subscription(format!("{origin}/push/old")));
        let outcome = pusher.send(&device, &PushMessage::new("n", "t", "b")).await;
        assert!(
            matches!(outcome, Outcome::Gone { .. }),
            "{status}: {outcome:?}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1, "no retry of a gone device");
    }
}

#[tokio::test]
async fn endpoints_off_the_allowlist_are_refused_before_any_request() {
    let (origin, seen) = push_service(StatusCode::CREATED).await;
    let pusher = pusher(&origin, vapid().0);
    let browser = Browser::new();
    for endpoint in [
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "http://127.0.0.1:1/push/x".to_owned(),
        "https://evil.example/push".to_owned(),
        format!("{}/push/x", origin.replace("127.0.0.1", "localhost")),
    ] {
        let outcome = pusher
            .send(
                &Device::WebPush(browser.subscription(endpoint.clone())),
                &PushMessage::new("n", "t", "b"),
            )
            .await;
        let Outcome::Failed(failure) = outcome else {
            panic!("{endpoint}: {outcome:?}")
        };
        assert!(
            matches!(failure.reason, FailureReason::Refused(_)),
            "{endpoint}: {failure:?}"
        );
        assert!(!failure.retryable);
    }
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_device_debug_output_hides_the_endpoint() {
    let device = Device::WebPush(
        Browser::new().subscription("https://fcm.googleapis.com/fcm/send/secret-token".into()),
    );
    assert!(!format!("{device:?}").contains("secret-token"));
}
