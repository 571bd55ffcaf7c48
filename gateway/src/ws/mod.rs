//! ① The socket edge: `GET /ws` checks the WebSocket handshake, the Origin and the token
//! *before* upgrading (refusals are plain HTTP with a JSON body), then takes the TCP
//! stream back from the HTTP layer and hands it, as a [`socket::WsSocket`], to a
//! [`session`] on the node's task tracker so that shutdown can drain it.
//!
//! `accept` serves the listener (HTTP/1.1, upgrades allowed), `handshake` is the RFC 6455
//! opening handshake, `wire` the framing, `socket` one connection's frame stream,
//! `session` its life, `heartbeat` the node's one keepalive timer, `frame` the JSON
//! protocol on top, `close` the close codes.

pub mod accept;
/// The token checks every transport shares, under their former path.
pub use crate::auth;
pub mod close;
pub mod frame;
pub mod handshake;
pub mod heartbeat;
pub mod session;
pub mod socket;
pub mod wire;

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
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
    mut req: Request,
) -> Response {
    let accept = match handshake::check(req.headers()) {
        Ok(accept) => accept,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return refuse(
            StatusCode::UPGRADE_REQUIRED,
            "not_upgradable",
            "this connection cannot be upgraded (HTTP/1.1 required)",
        );
    };
    let headers = req.headers();
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
    let identity = match state
        .verifier
        .verify_fresh(token.as_deref().unwrap_or_default())
        .await
    {
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
    // The task lives as long as the connection: capture one pointer, not the parts.
    let parts = Box::new((state.clone(), identity, cursor));
    tracker.spawn(async move {
        let (state, identity, cursor) = *parts;
        let Some(socket) = handshake::take_stream(on_upgrade, state.read_limits.clone()).await
        else {
            return;
        };
        session::run(socket, state, identity, cursor).await;
    });
    handshake::switching_protocols(&accept)
}
