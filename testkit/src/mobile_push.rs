//! Fake FCM and APNs on one loopback port (HTTP/1.1 and h2c), with the credentials a
//! dispatcher needs to reach them: a Google service-account file whose OAuth2 token
//! endpoint is the fake's `/token`, and an APNs `.p8` signing key. The fake checks every
//! credential as Google and Apple do (the JWT-bearer grant's RS256 assertion, the access
//! token on each send, the ES256 provider token) and records each push with the result.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Form, Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use p256::SecretKey;
use serde_json::{json, Value};

const RSA_PRIVATE_KEY: &str =
    include_str!("../../push/tests/fixtures/test-service-account.key.pem");
const RSA_PUBLIC_KEY: &str = include_str!("../../push/tests/fixtures/test-service-account.pub.pem");
const CLIENT_EMAIL: &str = "kurir-e2e@kurir-e2e.iam.gserviceaccount.com";
/// The Firebase project of the service account.
pub const FCM_PROJECT: &str = "kurir-e2e";
/// The APNs key id and team id of the signing key.
pub const APNS_KEY_ID: &str = "E2EKEY0001";
pub const APNS_TEAM_ID: &str = "E2ETEAM001";

/// One push the fake received.
#[derive(Debug, Clone)]
pub struct MobilePush {
    /// `fcm` or `apns`.
    pub provider: &'static str,
    /// The FCM registration token or the APNs device token.
    pub device: String,
    pub headers: HeaderMap,
    pub body: Value,
    /// Whether its credential checked out (the access token the fake issued; a provider
    /// token signed by the configured key, for its key id and team).
    pub authorized: bool,
}

struct Shared {
    access_token: String,
    token_uri: String,
    apns_key: DecodingKey,
    grants: Mutex<Vec<bool>>,
    pushes: Mutex<Vec<MobilePush>>,
}

/// The fake; it stops when the test's runtime does. Key files are removed on drop.
pub struct FakeMobilePush {
    addr: SocketAddr,
    shared: Arc<Shared>,
    service_account: PathBuf,
    apns_key: PathBuf,
}

impl FakeMobilePush {
    /// # Panics
    /// When no loopback port can be bound or the key files cannot be written.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake push providers");
        let addr = listener.local_addr().expect("its address");
        let token_uri = format!("http://{addr}/token");
        let secret = loop {
            if let Ok(key) = SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                break key;
            }
        };
        let apns_key = decoding_key(&secret.public_key());
        let shared = Arc::new(Shared {
            access_token: format!("ya29.e2e-{:032x}", rand::random::<u128>()),
            token_uri: token_uri.clone(),
            apns_key,
            grants: Mutex::default(),
            pushes: Mutex::default(),
        });
        let dir = std::env::temp_dir();
        let tag = format!("{:016x}", rand::random::<u64>());
        let service_account = dir.join(format!("kurir-e2e-fcm-{tag}.json"));
        let account = json!({
            "type": "service_account",
            "project_id": FCM_PROJECT,
            "private_key_id": "e2e",
            "private_key": RSA_PRIVATE_KEY,
            "client_email": CLIENT_EMAIL,
            "token_uri": token_uri,
        });
        std::fs::write(&service_account, account.to_string()).expect("write the service account");
        let apns_key_file = dir.join(format!("kurir-e2e-apns-{tag}.p8"));
        let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8");
        std::fs::write(&apns_key_file, pem.as_bytes()).expect("write the .p8 key");
        let router = Router::new()
            .route("/token", post(grant))
            .route("/v1/projects/{project}/messages:send", post(fcm_send))
            .route("/3/device/{token}", post(apns_send))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            addr,
            shared,
            service_account,
            apns_key: apns_key_file,
        }
    }

    /// The dispatcher's settings that point FCM and APNs (topic `apns_topic`) here.
    pub fn dispatcher_env(&self, apns_topic: &str) -> Vec<(&'static str, String)> {
        let base = format!("http://{}", self.addr);
        vec![
            (
                "KURIR_FCM_SERVICE_ACCOUNT",
                self.service_account.display().to_string(),
            ),
            ("KURIR_FCM_ENDPOINT", base.clone()),
            ("KURIR_FCM_TOKEN_URI", self.shared.token_uri.clone()),
            ("KURIR_APNS_KEY_FILE", self.apns_key.display().to_string()),
            ("KURIR_APNS_KEY_ID", APNS_KEY_ID.to_owned()),
            ("KURIR_APNS_TEAM_ID", APNS_TEAM_ID.to_owned()),
            ("KURIR_APNS_TOPIC", apns_topic.to_owned()),
            ("KURIR_APNS_ENDPOINT", base),
        ]
    }

    /// Every push received so far.
    pub fn pushes(&self) -> Vec<MobilePush> {
        self.shared.pushes.lock().expect("pushes").clone()
    }

    /// Token grants asked for, each with whether its assertion checked out.
    pub fn grants(&self) -> Vec<bool> {
        self.shared.grants.lock().expect("grants").clone()
    }
}

impl Drop for FakeMobilePush {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.service_account);
        let _ = std::fs::remove_file(&self.apns_key);
    }
}

fn decoding_key(key: &p256::PublicKey) -> DecodingKey {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let point = key.to_encoded_point(false);
    DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(point.x().expect("x")),
        &URL_SAFE_NO_PAD.encode(point.y().expect("y")),
    )
    .expect("EC components")
}

/// The OAuth2 JWT-bearer grant: an RS256 assertion by the service account, for this
/// endpoint.
async fn grant(
    State(shared): State<Arc<Shared>>,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[shared.token_uri.as_str()]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    let ok = form.get("grant_type").map(String::as_str)
        == Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
        && DecodingKey::from_rsa_pem(RSA_PUBLIC_KEY.as_bytes())
            .ok()
            .zip(form.get("assertion"))
            .is_some_and(|(key, assertion)| {
                jsonwebtoken::decode::<Value>(assertion, &key, &validation).is_ok()
            });
    shared.grants.lock().expect("grants").push(ok);
    if !ok {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        );
    }
    (
        StatusCode::OK,
        Json(json!({
            "access_token": shared.access_token,
            "expires_in": 3599,
            "token_type": "Bearer",
        })),
    )
}

async fn fcm_send(
    State(shared): State<Arc<Shared>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
    let authorized =
        project == FCM_PROJECT && bearer == Some(&format!("Bearer {}", shared.access_token));
    let device = body["message"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    shared.pushes.lock().expect("pushes").push(MobilePush {
        provider: "fcm",
        device: device.clone(),
        headers,
        body,
        authorized,
    });
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": 401, "status": "UNAUTHENTICATED"}})),
        );
    }
    (
        StatusCode::OK,
        Json(json!({"name": format!("projects/{FCM_PROJECT}/messages/{device}")})),
    )
}

async fn apns_send(
    State(shared): State<Arc<Shared>>,
    Path(device): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, HeaderMap) {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("bearer ")
                .or_else(|| v.strip_prefix("Bearer "))
        })
        .is_some_and(|token| provider_token_ok(token, &shared.apns_key));
    shared.pushes.lock().expect("pushes").push(MobilePush {
        provider: "apns",
        device,
        headers,
        body,
        authorized,
    });
    let mut out = HeaderMap::new();
    if !authorized {
        return (StatusCode::FORBIDDEN, out);
    }
    out.insert(
        "apns-id",
        "6E3A7B2C-0000-4000-8000-0000000000E2"
            .parse()
            .expect("header value"),
    );
    (StatusCode::OK, out)
}

/// An ES256 provider token of the configured key id and team, issued within the hour.
fn provider_token_ok(token: &str, key: &DecodingKey) -> bool {
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return false;
    };
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims = ["iss", "iat"].iter().map(|c| (*c).to_owned()).collect();
    validation.validate_exp = false;
    validation.set_issuer(&[APNS_TEAM_ID]);
    let Ok(data) = jsonwebtoken::decode::<Value>(token, key, &validation) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    header.kid.as_deref() == Some(APNS_KEY_ID)
        && data.claims["iat"]
            .as_u64()
            .is_some_and(|iat| iat <= now + 60 && now < iat + 3600)
}
