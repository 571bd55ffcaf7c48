//! The RFC 6455 opening handshake: which requests may upgrade, the `101` answer, and
//! taking the connection's stream (TCP, or TLS over it) back from hyper once it has sent
//! that answer, so the session owns the bare stream (no HTTP-layer buffers or boxes stay
//! behind per connection).

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use kurir_wire::{ReadLimits, WsSocket};
use tracing::warn;

pub use kurir_wire::handshake::accept_key;

use super::accept::EdgeStream;
use crate::admission::Denied;

/// A request that is not a WebSocket opening handshake we can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not an upgrade to `websocket` (400).
    NotWebSocket,
    /// A version other than 13 (426, with the version we speak).
    Version,
    /// `Sec-WebSocket-Key` missing or not 16 bytes of base64 (400).
    Key,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, error, message) = match self {
            Self::NotWebSocket => (
                StatusCode::BAD_REQUEST,
                "not_websocket",
                "expected a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
            ),
            Self::Version => (
                StatusCode::UPGRADE_REQUIRED,
                "unsupported_version",
                "Sec-WebSocket-Version must be 13",
            ),
            Self::Key => (
                StatusCode::BAD_REQUEST,
                "bad_key",
                "Sec-WebSocket-Key must be 16 bytes in base64",
            ),
        };
        let mut response = Denied::new(status, error, message).into_response();
        if self == Self::Version {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Check an upgrade request; the `Sec-WebSocket-Accept` value to answer with.
///
/// # Errors
/// What makes it not a WebSocket handshake of version 13.
pub fn check(headers: &HeaderMap) -> Result<String, Refusal> {
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(Refusal::NotWebSocket);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Refusal::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().trim_ascii())
        .ok_or(Refusal::Key)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| Refusal::Key)?;
    if decoded.len() != 16 {
        return Err(Refusal::Key);
    }
    Ok(accept_key(key))
}

/// The `101 Switching Protocols` answer. No extension or subprotocol is agreed to.
pub fn switching_protocols(accept: &str) -> Response {
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    response
}

/// Wait for hyper to hand the connection over (after it wrote the `101`), and take the
/// stream out of it. `None` when the client went away first.
pub async fn take_stream(
    on_upgrade: OnUpgrade,
    limits: Arc<ReadLimits>,
) -> Option<WsSocket<EdgeStream>> {
    let upgraded = on_upgrade.await.ok()?;
    match upgraded.downcast::<TokioIo<EdgeStream>>() {
        Ok(parts) => Some(WsSocket::new(
            parts.io.into_inner(),
            &parts.read_buf,
            limits,
        )),
        Err(_) => {
            // Only `accept::serve` upgrades, and it serves EdgeStreams.
            warn!("upgraded connection is not an accepted stream; dropped");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    const GOOD: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn the_rfc_example_key() {
        // RFC 6455 §1.3.
        assert_eq!(
            check(&headers(&GOOD)).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn refusals() {
        let without = |name: &str| {
            let kept: Vec<_> = GOOD.iter().copied().filter(|(k, _)| *k != name).collect();
            check(&headers(&kept))
        };
        assert_eq!(without("upgrade"), Err(Refusal::NotWebSocket));
        assert_eq!(without("connection"), Err(Refusal::NotWebSocket));
        assert_eq!(without("sec-websocket-version"), Err(Refusal::Version));
        assert_eq!(without("sec-websocket-key"), Err(Refusal::Key));
        let mut short_key = GOOD;
        short_key[3].1 = "c2hvcnQ=";
        assert_eq!(check(&headers(&short_key)), Err(Refusal::Key));
        let mut v8 = GOOD;
        v8[2].1 = "8";
        assert_eq!(check(&headers(&v8)), Err(Refusal::Version));
        let r = Refusal::Version.into_response();
        assert_eq!(r.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(r.headers()[header::SEC_WEBSOCKET_VERSION], "13");
    }
}
