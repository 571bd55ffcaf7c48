//! Cross-origin access to the SSE transport: a page on another origin (the usual case:
//! the app on one host, the gateway on another) may open `/sse` and call `/v1/*` when
//! its Origin passes the same check as a WebSocket's (`KURIR_ALLOWED_ORIGINS`). The
//! answer names that one origin, never `*`; no cookies are involved (the token travels
//! in the URL or the `Authorization` header).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::admission;
use crate::state::AppState;

/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// Answer preflights, and let allowed origins read the answers.
pub async fn layer(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed = origin.is_some() && admission::check_origin(&state, req.headers()).is_ok();
    if req.method() == Method::OPTIONS {
        let mut response = StatusCode::NO_CONTENT.into_response();
        if allowed {
            let h = response.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type, last-event-id"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(PREFLIGHT_MAX_AGE),
            );
        }
        return with_origin(response, origin.filter(|_| allowed));
    }
    let response = next.run(req).await;
    with_origin(response, origin.filter(|_| allowed))
}

fn with_origin(mut response: Response, origin: Option<HeaderValue>) -> Response {
    let h = response.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    response
}
