//! ① The Server-Sent Events transport, for browsers and networks where a WebSocket cannot
//! open. `GET /sse?token=…` is an `EventSource` stream on the same hub, inbox and
//! presence as a WebSocket: admitted by the same checks ([`crate::admission`]), it
//! replays the inbox after its resume cursor (`Last-Event-ID`, or `?cursor=`), then
//! streams live notifications. Each stored notification's `id:` is its cursor, so the
//! browser's own reconnect resumes where it stopped. What a WebSocket client sends as
//! frames, an SSE client sends as HTTP requests ([`actions`]: `POST /v1/ack`,
//! `/v1/subscribe`, `/v1/unsubscribe`, `/v1/ping`, with the same token; and the
//! browser's Web Push subscription, `/v1/push/*`, whatever its transport).
//!
//! [`event`] is the text format, [`stream`] one stream's life, [`cors`] cross-origin
//! access; `/v1/subscribe` finds its stream in [`crate::hub::streams`].

pub mod actions;
pub mod cors;
pub mod event;
pub mod stream;

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Router};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::admission::{self, Admitted, Denied};
use crate::state::AppState;
use crate::ws::accept::Hangup;

/// Chunks between a stream's writer and hyper. Small: the stall timeout measures how
/// long the client takes to read, not how long a buffer takes to fill.
const CHUNKS_IN_FLIGHT: usize = 4;

/// The largest request body `/v1/*` reads.
const MAX_BODY: usize = 4096;

/// `/sse` and `/v1/*`, with cross-origin access for allowed origins.
pub fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/sse", get(open).options(StatusCode::NO_CONTENT))
        .route(
            "/v1/ack",
            post(actions::ack).options(StatusCode::NO_CONTENT),
        )
        .route(
            "/v1/subscribe",
            post(actions::subscribe).options(StatusCode::NO_CONTENT),
        )
        .route(
            "/v1/unsubscribe",
            post(actions::unsubscribe).options(StatusCode::NO_CONTENT),
        )
        .route(
            "/v1/ping",
            post(actions::ping).options(StatusCode::NO_CONTENT),
        )
        .route(
            "/v1/push/subscribe",
            post(actions::push_subscribe).options(StatusCode::NO_CONTENT),
        )
        .route(
            "/v1/push/unsubscribe",
            post(actions::push_unsubscribe).options(StatusCode::NO_CONTENT),
        )
        .route(
            "/v1/push/key",
            get(actions::push_key).options(StatusCode::NO_CONTENT),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state, cors::layer))
}

#[derive(Debug, Deserialize)]
pub struct OpenParams {
    token: Option<String>,
    cursor: Option<String>,
    /// Topics to subscribe at once, comma-separated (a reconnecting client names its
    /// topics here rather than asking again).
    topics: Option<String>,
}

/// `GET /sse`: admit, then answer `200 text/event-stream` with a body the stream's task
/// writes.
pub async fn open(
    State(state): State<Arc<AppState>>,
    Query(params): Query<OpenParams>,
    mut req: Request,
) -> Response {
    // The browser's reconnect names the last id it saw; an explicit cursor wins.
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let cursor = params.cursor.or(last_event_id);
    let admitted =
        match admission::admit(&state, req.headers(), params.token, cursor.as_deref()).await {
            Ok(a) => a,
            Err(denied) => return denied.into_response(),
        };
    let topics: Vec<String> = params
        .topics
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if topics.len() > state.config.max_subscriptions {
        return Denied::new(
            StatusCode::BAD_REQUEST,
            "too_many_subscriptions",
            format!(
                "at most {} topics per connection",
                state.config.max_subscriptions
            ),
        )
        .into_response();
    }
    let hangup = req.extensions_mut().remove::<Hangup>().unwrap_or_default();
    let (tx, rx) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let Admitted {
        identity,
        cursor,
        registration,
    } = admitted;
    let tracker = state.tracker.clone();
    tracker.spawn(stream::run(
        state,
        stream::Opened {
            identity,
            cursor,
            registration,
            topics,
        },
        tx,
        hangup,
    ));
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies that buffer responses (nginx) must pass each event at once.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
