//! APNs against a fake HTTP/2 (h2c) server that checks the provider token and headers.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Request};
use axum::http::{StatusCode, Version};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use common::{decoding_key, now_s, p256_key, policy, serve};
use jsonwebtoken::{Algorithm, Validation};
use kurir_push::apns::token::ProviderToken;
use kurir_push::apns::ApnsClient;
use kurir_push::{Device, Outcome, Priority, PushMessage, Pusher};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde::Deserialize;
use serde_json::{json, Value};

const GONE_DEVICE: &str = "dead00";

#[derive(Debug, Deserialize)]
struct ProviderClaims {
    iss: String,
    iat: u64,
}

struct Seen {
    headers: axum::http::HeaderMap,
    device: String,
    body: Value,
}

async fn fake_apns(public: p256::PublicKey) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = Arc::clone(&seen);
    let router = Router::new().route(
        "/3/device/{device}",
        post(
            move |Path(device): Path<String>, request: Request| async move {
                assert_eq!(
                    request.version(),
                    Version::HTTP_2,
                    "APNs speaks HTTP/2 only"
                );
                let headers = request.headers().clone();
                let bearer = headers["authorization"]
                    .to_str()
                    .unwrap()
                    .strip_prefix("bearer ")
                    .or_else(|| {
                        headers["authorization"]
                            .to_str()
                            .unwrap()
                            .strip_prefix("Bearer ")
                    });
                let token = bearer.expect("a bearer provider token");
                let mut validation = Validation::new(Algorithm::ES256);
                validation.required_spec_claims.clear();
                validation.validate_exp = false;
                let decoded = jsonwebtoken::decode::<ProviderClaims>(
                    token,
                    &decoding_key(&public),
                    &validation,
                )
                .expect("an ES256 token signed with the team's key");
                assert_eq!(decoded.header.kid.as_deref(), Some("KEY1234567"));
                assert_eq!(decoded.claims.iss, "TEAM123456");
                assert!(decoded.claims.iat.abs_diff(now_s()) < 60);
                let bytes = axum::body::to_bytes(request.into_body(), 4096)
                    .await
                    .unwrap();
                let body: Value = serde_json::from_slice(&bytes).unwrap();
                let gone = device == GONE_DEVICE;
                log.lock().unwrap().push(Seen {
                    headers,
                    device,
                    body,
                });
                if gone {
                    return (
                        StatusCode::GONE,
                        Json(json!({"reason": "Unregistered", "timestamp": 1_700_000_000_000_u64})),
                    )
                        .into_response();
                }
                (
                    StatusCode::OK,
                    [("apns-id", "6E3A7B2C-0000-4000-8000-000000000001")],
                )
                    .into_response()
            },
        ),
    );
    let addr = serve(router).await;
    (format!("http://{addr}"), seen)
}

async fn pusher() -> (Pusher, Arc<Mutex<Vec<Seen>>>) {
    let key = p256_key();
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let (endpoint, seen) = fake_apns(key.public_key()).await;
    let token = ProviderToken::new(&pem, "KEY1234567", "TEAM123456").expect("p8 key");
    let client = ApnsClient::new(
        token,
        &endpoint,
        "com.example.kurir",
        Duration::from_secs(5),
    )
    .unwrap();
    (Pusher::new(policy(3, 5)).with_apns(client), seen)
}

#[tokio::test]
async fn a_push_goes_over_http2_with_the_provider_token_and_headers() {
    let (pusher, seen) = pusher().await;
    let mut message = PushMessage::new("n-9", "Hi", "There");
    message.priority = Priority::High;
    message.ttl = Duration::from_secs(600);
    message.collapse_key = Some("c".repeat(80));
    let outcome = pusher
        .send(
            &Device::Apns {
                token: "a1b2c3".into(),
                topic: None,
            },
            &message,
        )
        .await;
    assert_eq!(
        outcome,
        Outcome::Sent {
            id: Some("6E3A7B2C-0000-4000-8000-000000000001".into())
        }
    );

    let seen = seen.lock().unwrap();
    let request = &seen[0];
    let header = |name: &str| request.headers[name].to_str().unwrap().to_owned();
    assert_eq!(request.device, "a1b2c3");
    assert_eq!(header("apns-topic"), "com.example.kurir");
    assert_eq!(header("apns-push-type"), "alert");
    assert_eq!(header("apns-priority"), "10");
    let expiration: u64 = header("apns-expiration").parse().unwrap();
    assert!(expiration.abs_diff(now_s() + 600) < 60);
    let collapse = header("apns-collapse-id");
    assert!(collapse.len() <= 64);
    assert_eq!(collapse, kurir_push::apns::collapse_id(&"c".repeat(80)));
    assert_eq!(
        request.body["aps"]["alert"],
        json!({"title": "Hi", "body": "There"})
    );
    assert_eq!(request.body["kurir_id"], "n-9");
}

#[tokio::test]
async fn the_provider_token_is_reused() {
    let (pusher, seen) = pusher().await;
    for _ in 0..3 {
        let outcome = pusher
            .send(
                &Device::Apns {
                    token: "abcdef".into(),
                    topic: None,
                },
                &PushMessage::new("n", "t", "b"),
            )
            .await;
        assert!(matches!(outcome, Outcome::Sent { .. }));
    }
    let seen = seen.lock().unwrap();
    let tokens: Vec<_> = seen
        .iter()
        .map(|s| s.headers["authorization"].clone())
        .collect();
    assert!(tokens.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(seen[0].headers["apns-priority"], "5");
}

#[tokio::test]
async fn an_unregistered_device_is_gone() {
    let (pusher, seen) = pusher().await;
    let outcome = pusher
        .send(
            &Device::Apns {
                token: GONE_DEVICE.into(),
                topic: None,
            },
            &PushMessage::new("n", "t", "b"),
        )
        .await;
    assert_eq!(
        outcome,
        Outcome::Gone {
            reason: "Unregistered".into()
        }
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_token_that_is_not_hex_is_refused_locally() {
    let (pusher, seen) = pusher().await;
    let outcome = pusher
        .send(
            &Device::Apns {
                token: "../../x".into(),
                topic: None,
            },
            &PushMessage::new("n", "t", "b"),
        )
        .await;
    assert!(matches!(outcome, Outcome::Failed(f) if !f.retryable));
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_device_of_another_app_of_the_team_is_pushed_under_its_own_topic() {
    let (pusher, seen) = pusher().await;
    let outcome = pusher
        .send(
            &Device::Apns {
                token: "abcdef".into(),
                topic: Some("com.example.other".into()),
            },
            &PushMessage::new("n", "t", "b"),
        )
        .await;
    assert!(matches!(outcome, Outcome::Sent { .. }));
    assert_eq!(
        seen.lock().unwrap()[0].headers["apns-topic"],
        "com.example.other"
    );
}
