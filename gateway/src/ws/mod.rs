//! ① The socket edge: `GET /ws` checks the WebSocket handshake, the Origin and the token
//! *before* upgrading (refusals are plain HTTP with a JSON body), admits the connection
//! under the node's and the user's connection caps (503 / 429), then takes the TCP
//! stream back from the HTTP layer and hands it, as a [`kurir_wire::WsSocket`], to a
//! [`session`] on the node's task tracker so that shutdown can drain it.
//!
//! `accept` serves the listener (HTTP/1.1, upgrades allowed), `handshake` is the RFC 6455
//! opening handshake, `session` one connection's life, `stall` its writes' stall
//! timeout, `heartbeat` the node's one keepalive timer. The framing is `kurir_wire`'s
//! and the JSON protocol on top [`crate::protocol`]'s.

pub mod accept;
pub mod handshake;
pub mod heartbeat;
pub mod session;
pub mod stall;

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kurir_backends::inbox::Cursor;
use serde::Deserialize;
use std::sync::Arc;

use crate::auth::AuthError;
use crate::hub::{ConnHandle, Refused};
use crate::state::AppState;
use crate::telemetry;
use kurir_backends::ConnId;

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
        // No Origin: not a browser, let through. An Origin that is not visible ASCII
        // is no browser's either: refused like one not on the list, never let through
        // as if absent.
        if let Some(origin) = headers.get(header::ORIGIN) {
            let allowed = origin
                .to_str()
                .is_ok_and(|origin| cfg.allowed_origins.iter().any(|o| o == origin));
            if !allowed {
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
    // Admitted now, before the 101: the connection counts against both caps from
    // here, and its registration is released if the upgrade never completes.
    let conn = ConnHandle::new(
        ConnId::generate(),
        identity.user.clone(),
        cfg.outbound_queue,
    );
    let registration =
        match state
            .hub
            .admit(conn, cfg.max_connections, cfg.max_connections_per_user)
        {
            Ok(r) => r,
            Err(Refused::NodeFull) => {
                telemetry::admission_refused("node_full");
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "at_capacity",
                    "node at connection limit",
                );
            }
            Err(Refused::UserFull) => {
                telemetry::admission_refused("user_full");
                return refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_connections",
                    &format!(
                        "at most {} connections per user on this node",
                        cfg.max_connections_per_user
                    ),
                );
            }
        };
    let tracker = state.tracker.clone();
    // The task lives as long as the connection: capture one pointer, not the parts.
    let parts = Box::new((state.clone(), identity, cursor, registration));
    tracker.spawn(async move {
        let (state, identity, cursor, registration) = *parts;
        let Some(socket) = handshake::take_stream(on_upgrade, state.read_limits.clone()).await
        else {
            return;
        };
        session::run(socket, state, identity, cursor, registration).await;
    });
    handshake::switching_protocols(&accept)
}
