//! What an SSE client asks of the node, as HTTP requests with the stream's token
//! (`Authorization: Bearer …`, or `?token=`): `POST /v1/ack {"id"}`,
//! `POST /v1/subscribe` / `/v1/unsubscribe {"connection_id", "topic"}` and
//! `POST /v1/ping {"connection_id"}` (a `pong` event follows on the stream), and the
//! browser's Web Push subscription: `POST /v1/push/subscribe {"subscription"}`,
//! `/v1/push/unsubscribe {"endpoint"}`, `GET /v1/push/key`. Acks and push subscriptions
//! need no stream (they act on the user's inbox and devices); the others are the named
//! stream's, which must be on this node and the token's user's (behind a load balancer,
//! route them with the stream, or name the topics when opening it).
//!
//! Answers are JSON: `200` with what was done, or an error body with the same codes as
//! a WebSocket `error` frame.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use kurir_backends::ConnId;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::admission::{self, Denied};
use crate::auth::Identity;
use crate::client::actions;
use crate::hub::streams::Request;
use crate::protocol::frame::{FrameError, PushSubscriptionJson};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct TokenParam {
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PingBody {
    connection_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicBody {
    connection_id: String,
    topic: String,
}

/// `POST /v1/ack`.
pub async fn ack(
    State(state): State<Arc<AppState>>,
    Query(q): Query<TokenParam>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (identity, body): (_, AckBody) = match read_request(&state, &headers, q, &body).await {
        Ok(r) => r,
        Err(denied) => return denied.into_response(),
    };
    match actions::ack(&state, &identity.user, &body.id).await {
        Ok(id) => Json(serde_json::json!({ "acked": id.to_string() })).into_response(),
        Err(e) => refused(&e).into_response(),
    }
}

/// `POST /v1/subscribe`.
pub async fn subscribe(
    State(state): State<Arc<AppState>>,
    Query(q): Query<TokenParam>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    on_topic(state, q, headers, body, Request::Subscribe, "subscribed").await
}

/// `POST /v1/unsubscribe`.
pub async fn unsubscribe(
    State(state): State<Arc<AppState>>,
    Query(q): Query<TokenParam>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    on_topic(
        state,
        q,
        headers,
        body,
        Request::Unsubscribe,
        "unsubscribed",
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushSubscribeBody {
    subscription: PushSubscriptionJson,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushUnsubscribeBody {
    endpoint: String,
}

/// `POST /v1/push/subscribe`: the caller's browser subscription becomes one of their
/// devices; `200 {"device_id"}`.
pub async fn push_subscribe(
    State(state): State<Arc<AppState>>,
    Query(q): Query<TokenParam>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (identity, body): (_, PushSubscribeBody) =
        match read_request(&state, &headers, q, &body).await {
            Ok(r) => r,
            Err(denied) => return denied.into_response(),
        };
    match actions::push_subscribe(&state, &identity.user, &body.subscription).await {
        Ok(id) => Json(serde_json::json!({ "device_id": id })).into_response(),
        Err(e) => refused(&e).into_response(),
    }
}

/// `POST /v1/push/unsubscribe`: `200`.
pub async fn push_unsubscribe(
    State(state): State<Arc<AppState>>,
    Query(q): Query<TokenParam>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (identity, body): (_, PushUnsubscribeBody) =
        match read_request(&state, &headers, q, &body).await {
            Ok(r) => r,
            Err(denied) => return denied.into_response(),
        };
    match actions::push_unsubscribe(&state, &identity.user, &body.endpoint).await {
        Ok(()) => Json(serde_json::json!({ "unsubscribed": true })).into_response(),
        Err(e) => refused(&e).into_response(),
    }
}

/// `GET /v1/push/key`: the VAPID public key pages subscribe with; 404 when this gateway
/// has none.
pub async fn push_key(State(state): State<Arc<AppState>>) -> Response {
    match &state.webpush.public_key {
        Some(key) => Json(serde_json::json!({ "vapid_public_key": key })).into_response(),
        None => Denied::new(
            StatusCode::NOT_FOUND,
            "push_not_configured",
            "this gateway has no VAPID key (KURIR_VAPID_PRIVATE_KEY or KURIR_VAPID_PUBLIC_KEY)",
        )
        .into_response(),
    }
}

/// `POST /v1/ping`: `202`, and a `pong` event on the stream.
pub async fn ping(
    State(state): State<Arc<AppState>>,
    Query(q): Query<TokenParam>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (identity, body): (_, PingBody) = match read_request(&state, &headers, q, &body).await {
        Ok(r) => r,
        Err(denied) => return denied.into_response(),
    };
    let stream = match find(&state, &body.connection_id, &identity) {
        Ok(s) => s,
        Err(denied) => return denied.into_response(),
    };
    let (tx, rx) = oneshot::channel();
    if let Err(denied) = queue(&stream, Request::Ping(tx)) {
        return denied.into_response();
    }
    match rx.await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(_) => gone().into_response(),
    }
}

type Reply = oneshot::Sender<Result<kurir_backends::Topic, FrameError>>;

async fn on_topic(
    state: Arc<AppState>,
    q: TokenParam,
    headers: HeaderMap,
    body: Bytes,
    request: fn(String, Reply) -> Request,
    done: &'static str,
) -> Response {
    let (identity, body): (_, TopicBody) = match read_request(&state, &headers, q, &body).await {
        Ok(r) => r,
        Err(denied) => return denied.into_response(),
    };
    let stream = match find(&state, &body.connection_id, &identity) {
        Ok(s) => s,
        Err(denied) => return denied.into_response(),
    };
    let (tx, rx) = oneshot::channel();
    if let Err(denied) = queue(&stream, request(body.topic, tx)) {
        return denied.into_response();
    }
    match rx.await {
        Ok(Ok(topic)) => Json(serde_json::json!({ done: topic.as_str() })).into_response(),
        Ok(Err(e)) => refused(&e).into_response(),
        Err(_) => gone().into_response(),
    }
}

/// The caller's stream named by `connection_id` (hex, as in `welcome`), on this node.
fn find(
    state: &AppState,
    connection_id: &str,
    identity: &Identity,
) -> Result<mpsc::Sender<Request>, Denied> {
    u64::from_str_radix(connection_id, 16)
        .ok()
        .and_then(|id| state.streams.find(ConnId(id), &identity.user))
        .ok_or_else(|| {
            Denied::new(
                StatusCode::NOT_FOUND,
                "unknown_connection",
                "no stream of yours with this connection_id on this node",
            )
        })
}

/// Queue a request without waiting: a stream answers a few at a time.
fn queue(stream: &mpsc::Sender<Request>, request: Request) -> Result<(), Denied> {
    stream.try_send(request).map_err(|_| {
        Denied::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            "this stream has requests in flight; retry",
        )
    })
}

/// The stream ended while a request waited.
fn gone() -> Denied {
    Denied::new(
        StatusCode::NOT_FOUND,
        "unknown_connection",
        "the stream ended",
    )
}

/// Who asks (Origin, then token) and what (the JSON body): every request's first step.
async fn read_request<T: DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    q: TokenParam,
    body: &[u8],
) -> Result<(Identity, T), Denied> {
    admission::check_origin(state, headers)?;
    let identity = admission::authenticate(state, admission::bearer(headers).or(q.token)).await?;
    Ok((identity, parse(body)?))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Denied> {
    serde_json::from_slice(body)
        .map_err(|e| Denied::new(StatusCode::BAD_REQUEST, "bad_request", format!("body: {e}")))
}

/// A refused action, with the HTTP status of its code.
fn refused(e: &FrameError) -> Denied {
    let status = match e.code {
        "forbidden" => StatusCode::FORBIDDEN,
        "too_many_subscriptions" => StatusCode::CONFLICT,
        "unavailable" | "too_many_topics" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    Denied::new(status, e.code, e.message.clone())
}
