//! ① The socket edge: `GET /ws` checks Origin and the token *before* upgrading (refusals
//! are plain HTTP with a JSON body), then hands the socket to a [`session::Session`] on
//! the node's task tracker so that shutdown can drain it.

pub mod auth;
pub mod close;
pub mod frame;
pub mod session;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kurir_backends::inbox::Cursor;
use serde::Deserialize;
use std::sync::Arc;

use crate::state::AppState;
use crate::telemetry;
use auth::AuthError;

#[derive(Debug, Deserialize)]
pub struct ConnectParams {
    token: Option<String>,
    cursor: Option<String>,
}

fn refuse(status: StatusCode, error: &'static str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": error, "message": message })),
    )
        .into_response()
}

pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    Query(params): Query<ConnectParams>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let cfg = &state.config;
    if !cfg.allowed_origins.iter().all(String::is_empty) {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        if let Some(origin) = origin {
            if !cfg.allowed_origins.iter().any(|o| o == origin) {
                telemetry::auth_failure("origin");
                return refuse(
                    StatusCode::FORBIDDEN,
                    "origin_not_allowed",
                    "origin not allowed",
                );
            }
        }
    }
    let token = params.token.or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned())
    });
    let identity = match state.verifier.verify(token.as_deref().unwrap_or_default()) {
        Ok(id) => id,
        Err(e) => {
            telemetry::auth_failure(e.label());
            let code = match e {
                AuthError::Missing => "missing_token",
                AuthError::Invalid => "invalid_token",
                AuthError::Expired => "token_expired",
            };
            return refuse(StatusCode::UNAUTHORIZED, code, &e.to_string());
        }
    };
    let cursor = match params.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match Cursor::parse(c) {
            Some(c) => Some(c),
            None => return refuse(StatusCode::BAD_REQUEST, "bad_cursor", "malformed cursor"),
        },
    };
    if state.readiness.is_draining() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "node is draining",
        );
    }
    if state.hub.len() >= cfg.max_connections {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "at_capacity",
            "node at connection limit",
        );
    }
    let tracker = state.tracker.clone();
    // axum keeps the callback in the connection's task for its whole life: capture one
    // pointer, not the session's parts.
    let parts = Box::new((state.clone(), identity, cursor));
    ws.max_message_size(cfg.max_frame_bytes)
        .max_frame_size(cfg.max_frame_bytes)
        .read_buffer_size(crate::state::READ_BUFFER)
        .write_buffer_size(crate::state::WRITE_BUFFER)
        .on_upgrade(move |socket| {
            let (state, identity, cursor) = *parts;
            tracker.track_future(session::run(socket, state, identity, cursor))
        })
}
