//! Health, readiness and metrics endpoints, plus the development token endpoint.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kurir_backends::UserId;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;

use crate::liveness::Readiness;
use crate::state::AppState;
use crate::telemetry;

/// `/healthz` and `/readyz`, for any router.
pub fn health_routes<S: Clone + Send + Sync + 'static>(readiness: Readiness) -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let report = readiness.report();
                async move {
                    let status = if report.ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, Json(report))
                }
            }),
        )
}

/// The metrics listener: `/metrics`, `/healthz`, `/readyz`.
pub fn metrics_router(handle: PrometheusHandle, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                telemetry::process_collector().collect();
                let body = handle.render();
                async move { body }
            }),
        )
        .merge(health_routes(readiness))
}

/// How often histogram samples are folded into buckets when nobody scrapes: without it
/// they pile up in memory between scrapes.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Fold histogram samples into buckets regularly, scraped or not.
pub async fn upkeep(handle: PrometheusHandle, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            () = stop.cancelled() => break,
        }
    }
}

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
