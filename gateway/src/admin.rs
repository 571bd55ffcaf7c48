//! The development token endpoint (`/dev/token`, `--standalone` with a generated secret
//! only). `/healthz`, `/readyz` and `/metrics` are `kurir_runtime::admin`'s, answering
//! from [`crate::readiness::Readiness`].

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kurir_backends::UserId;
use serde::Deserialize;

use crate::state::AppState;

#[derive(Deserialize)]
pub struct DevTokenParams {
    user: String,
    #[serde(default)]
    topics: String,
}

/// `GET /dev/token?user=…&topics=a,b.*` (standalone only): a one-hour HS256 token.
pub async fn dev_token(
    State(state): State<std::sync::Arc<AppState>>,
    Query(p): Query<DevTokenParams>,
) -> Response {
    let Ok(user) = UserId::parse(&p.user) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "bad_user", "message": "user: invalid user id"})),
        )
            .into_response();
    };
    let topics: Vec<String> = p
        .topics
        .split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    match state.verifier.mint(&user, &topics, 3600) {
        Some((token, exp)) => Json(serde_json::json!({
            "token": token, "user": user.as_str(), "expires_at": exp
        }))
        .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
