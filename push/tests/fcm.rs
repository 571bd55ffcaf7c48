//! FCM HTTP v1 against a fake OAuth2 token endpoint and a fake send endpoint.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Form, Json, Router};
use common::{now_s, policy};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kurir_push::fcm::account::{ServiceAccount, GRANT_TYPE, SCOPE};
use kurir_push::fcm::FcmClient;
use kurir_push::{Device, Outcome, Priority, PushMessage, Pusher};
use serde::Deserialize;
use serde_json::{json, Value};

const PRIVATE_KEY: &str = include_str!("fixtures/test-service-account.key.pem");
const PUBLIC_KEY: &str = include_str!("fixtures/test-service-account.pub.pem");
const EMAIL: &str = "kurir-push@kurir-test.iam.gserviceaccount.com";
const ACCESS_TOKEN: &str = "ya29.fake-access-token";

#[derive(Debug, Deserialize)]
struct Assertion {
    iss: String,
    scope: String,
    aud: String,
    iat: u64,
    exp: u64,
}

#[derive(Default)]
struct Fake {
    token_requests: AtomicUsize,
    messages: Mutex<Vec<Value>>,
}

async fn fake_google() -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let token_uri = format!("{base}/token");
    let (on_token, on_send) = (Arc::clone(&fake), Arc::clone(&fake));
    let router = Router::new()
        .route(
            "/token",
            post(move |Form(form): Form<HashMap<String, String>>| async move {
                assert_eq!(form["grant_type"], GRANT_TYPE);
                let mut validation = Validation::new(Algorithm::RS256);
                validation.set_audience(&[token_uri.as_str()]);
                validation.set_issuer(&[EMAIL]);
                let key = DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
                let claims = jsonwebtoken::decode::<Assertion>(&form["assertion"], &key, &validation)
                    .expect("an assertion signed with the service account's key")
                    .claims;
                assert_eq!((claims.iss.as_str(), claims.scope.as_str(), claims.aud.as_str()), (EMAIL, SCOPE, token_uri.as_str()));
                assert!(claims.iat <= now_s() + 1 && claims.exp <= claims.iat + 3600 && claims.exp > now_s());
                on_token.token_requests.fetch_add(1, Ordering::SeqCst);
                // Slow enough that concurrent sends overlap the fetch.
                tokio::time::sleep(Duration::from_millis(100)).await;
                Json(json!({ "access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer" }))
            }),
        )
        .route(
            "/v1/projects/kurir-test/messages:send",
            post(move |headers: HeaderMap, Json(body): Json<Value>| async move {
                let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
                if bearer != Some(&format!("Bearer {ACCESS_TOKEN}")) {
                    return (StatusCode::UNAUTHORIZED, Json(json!({"error": {"code": 401, "status": "UNAUTHENTICATED"}}))).into_response();
                }
                let token = body["message"]["token"].as_str().unwrap_or_default().to_owned();
                on_send.messages.lock().unwrap().push(body);
                if token == "stale-token" {
                    let error = json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
                        "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}});
                    return (StatusCode::NOT_FOUND, Json(error)).into_response();
                }
                Json(json!({ "name": format!("projects/kurir-test/messages/{token}") })).into_response()
            }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (base, fake)
}

fn account(token_uri: &str) -> ServiceAccount {
    let json = json!({
        "type": "service_account",
        "project_id": "kurir-test",
        "private_key_id": "0123",
        "private_key": PRIVATE_KEY,
        "client_email": EMAIL,
        "token_uri": token_uri,
    });
    ServiceAccount::from_json(&json.to_string()).expect("service account")
}

async fn pusher() -> (Arc<Pusher>, Arc<Fake>) {
    let (base, fake) = fake_google().await;
    let client = FcmClient::new(
        account(&format!("{base}/token")),
        &base,
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    (Arc::new(Pusher::new(policy(3, 5)).with_fcm(client)), fake)
}

#[tokio::test]
async fn one_access_token_serves_many_concurrent_sends() {
    let (pusher, fake) = pusher().await;
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..12 {
        let pusher = Arc::clone(&pusher);
        sends.spawn(async move {
            let device = Device::Fcm {
                token: format!("device-{i}"),
            };
            pusher
                .send(&device, &PushMessage::new(format!("n-{i}"), "t", "b"))
                .await
        });
    }
    while let Some(outcome) = sends.join_next().await {
        assert!(
            matches!(outcome.unwrap(), Outcome::Sent { id: Some(id) } if id.starts_with("projects/kurir-test/messages/"))
        );
    }
    assert_eq!(fake.token_requests.load(Ordering::SeqCst), 1);
    assert_eq!(fake.messages.lock().unwrap().len(), 12);
}

#[tokio::test]
async fn the_message_carries_notification_data_and_platform_sections() {
    let (pusher, fake) = pusher().await;
    let mut message = PushMessage::new("n-7", "Title", "Body");
    message.data.insert("room".into(), "r1".into());
    message.collapse_key = Some("room-r1".into());
    message.priority = Priority::High;
    message.ttl = Duration::from_secs(300);
    let outcome = pusher
        .send(
            &Device::Fcm {
                token: "device-a".into(),
            },
            &message,
        )
        .await;
    assert!(matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
    let sent = fake.messages.lock().unwrap().pop().unwrap();
    let m = &sent["message"];
    assert_eq!(m["token"], "device-a");
    assert_eq!(m["notification"], json!({"title": "Title", "body": "Body"}));
    assert_eq!(m["data"], json!({"room": "r1", "kurir_id": "n-7"}));
    assert_eq!(
        m["android"],
        json!({"priority": "HIGH", "ttl": "300s", "collapse_key": "room-r1"})
    );
    assert_eq!(m["apns"]["headers"]["apns-priority"], "10");
    assert_eq!(m["apns"]["headers"]["apns-collapse-id"], "room-r1");
    assert_eq!(m["webpush"]["headers"]["Urgency"], "high");
}

#[tokio::test]
async fn an_unregistered_token_is_gone() {
    let (pusher, fake) = pusher().await;
    let outcome = pusher
        .send(
            &Device::Fcm {
                token: "stale-token".into(),
            },
            &PushMessage::new("n", "t", "b"),
        )
        .await;
    assert_eq!(
        outcome,
        Outcome::Gone {
            reason: "UNREGISTERED".into()
        }
    );
    assert_eq!(
        fake.messages.lock().unwrap().len(),
        1,
        "no retry of a gone device"
    );
}
