//! Who may connect, whatever the transport: a place among the handshakes in progress
//! ([`accept`]), the Origin (browsers), the token, the resume cursor, the node not
//! draining, and a place in the hub under the node's and the user's connection caps.
//! Each refusal is a [`Denied`]: an HTTP status with a JSON body for WebSocket and SSE, a
//! CONNACK code for MQTT.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kurir_backends::inbox::Cursor;
use kurir_backends::ConnId;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::auth::{AuthError, Identity};
use crate::hub::{ConnHandle, Refused, Registration};
use crate::state::AppState;
use crate::telemetry;

/// Pause after an accept that failed for the listener itself (out of file descriptors…),
/// so a persistent error does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The next connection on `listener` that gets one of the `pending` handshake places,
/// with Nagle off (frames go out as soon as a session writes them; it batches what is
/// queued). Connections beyond the places are closed at once and counted as
/// `at_capacity`. `None` once `stop` fires.
pub async fn accept(
    listener: &TcpListener,
    pending: &Arc<Semaphore>,
    stop: &CancellationToken,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = stop.cancelled() => return None,
        };
        let Ok(permit) = Arc::clone(pending).try_acquire_owned() else {
            telemetry::handshake_refused("at_capacity");
            continue;
        };
        let _ = stream.set_nodelay(true);
        return Some((stream, permit));
    }
}

/// An accept error that concerns one connection only (it went away before it was
/// accepted), not the listener.
fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// A client let in: who it is, where it resumes, its place in the hub.
pub struct Admitted {
    pub identity: Identity,
    pub cursor: Option<Cursor>,
    pub registration: Registration,
}

/// Why a client was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub status: StatusCode,
    /// Machine-readable, stable (`invalid_token`, `too_many_connections`, …).
    pub error: &'static str,
    pub message: String,
}

impl Denied {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: message.into(),
        }
    }
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.error, "message": self.message })),
        )
            .into_response()
    }
}

/// The whole check for an HTTP client (WebSocket upgrade, SSE stream).
///
/// # Errors
/// The first check that failed.
pub async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    token: Option<String>,
    cursor: Option<&str>,
) -> Result<Admitted, Denied> {
    check_origin(state, headers)?;
    let identity = authenticate(state, token.or_else(|| bearer(headers))).await?;
    let cursor = parse_cursor(cursor)?;
    let registration = register(state, &identity)?;
    Ok(Admitted {
        identity,
        cursor,
        registration,
    })
}

/// A browser's Origin must be on `KURIR_ALLOWED_ORIGINS` when that is set. No Origin: not
/// a browser, let through. An Origin that is not visible ASCII is no browser's either:
/// refused like one not on the list, never let through as if absent.
///
/// # Errors
/// The Origin is not allowed.
pub fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), Denied> {
    let allowed = &state.config.allowed_origins;
    if allowed.iter().all(String::is_empty) {
        return Ok(());
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    if origin
        .to_str()
        .is_ok_and(|origin| allowed.iter().any(|o| o == origin))
    {
        return Ok(());
    }
    telemetry::auth_failure("origin");
    Err(Denied::new(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        "origin not allowed",
    ))
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
}

/// Verify a client token (signature, expiry, issuer, audience).
///
/// # Errors
/// Missing, invalid or expired: 401.
pub async fn authenticate(state: &AppState, token: Option<String>) -> Result<Identity, Denied> {
    state
        .verifier
        .verify_fresh(token.as_deref().unwrap_or_default())
        .await
        .map_err(|e| {
            telemetry::auth_failure(e.label());
            let code = match e {
                AuthError::Missing => "missing_token",
                AuthError::Invalid => "invalid_token",
                AuthError::Expired => "token_expired",
            };
            Denied::new(StatusCode::UNAUTHORIZED, code, e.to_string())
        })
}

fn parse_cursor(cursor: Option<&str>) -> Result<Option<Cursor>, Denied> {
    match cursor.filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(c) => Cursor::parse(c)
            .map(Some)
            .ok_or_else(|| Denied::new(StatusCode::BAD_REQUEST, "bad_cursor", "malformed cursor")),
    }
}

/// A place in the hub: the connection counts against both caps from here, and is
/// released when the registration drops.
///
/// # Errors
/// The node drains (503), or is full (503), or the user holds their cap (429).
pub fn register(state: &AppState, identity: &Identity) -> Result<Registration, Denied> {
    if state.readiness.is_draining() {
        return Err(Denied::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "node is draining",
        ));
    }
    let cfg = &state.config;
    let conn = ConnHandle::new(
        ConnId::generate(),
        identity.user.clone(),
        cfg.outbound_queue,
    );
    state
        .hub
        .admit(conn, cfg.max_connections, cfg.max_connections_per_user)
        .map_err(|refused| match refused {
            Refused::NodeFull => {
                telemetry::admission_refused("node_full");
                Denied::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "at_capacity",
                    "node at connection limit",
                )
            }
            Refused::UserFull => {
                telemetry::admission_refused("user_full");
                Denied::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_connections",
                    format!(
                        "at most {} connections per user on this node",
                        cfg.max_connections_per_user
                    ),
                )
            }
        })
}
