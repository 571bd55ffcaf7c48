//! What an SSE client asks of the node, as HTTP requests with the stream's token
//! (`Authorization: Bearer …`, or `?token=`): `POST /v1/ack {"id"}`, and
//! `POST /v1/subscribe` / `/v1/unsubscribe {"connection_id", "topic"}`. An ack needs no
//! stream (it is the user's inbox); a subscription is the named stream's, which must be
//! on this node and the token's user's (behind a load balancer, route these requests
//! with the stream, or name the topics when opening it).
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
use tokio::sync::oneshot;

use crate::admission::{self, Denied};
use crate::auth::Identity;
use crate::client::actions;
use crate::hub::streams::Request;
use crate::protocol::frame::FrameError;
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
    let identity = match caller(&state, &headers, q).await {
        Ok(id) => id,
        Err(denied) => return denied.into_response(),
    };
    let body: AckBody = match parse(&body) {
        Ok(b) => b,
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

type Reply = oneshot::Sender<Result<kurir_backends::Topic, FrameError>>;

async fn on_topic(
    state: Arc<AppState>,
    q: TokenParam,
    headers: HeaderMap,
    body: Bytes,
    request: fn(String, Reply) -> Request,
    done: &'static str,
) -> Response {
    let identity = match caller(&state, &headers, q).await {
        Ok(id) => id,
        Err(denied) => return denied.into_response(),
    };
    let body: TopicBody = match parse(&body) {
        Ok(b) => b,
        Err(denied) => return denied.into_response(),
    };
    let stream = u64::from_str_radix(&body.connection_id, 16)
        .ok()
        .and_then(|id| state.streams.find(ConnId(id), &identity.user));
    let Some(stream) = stream else {
        return Denied::new(
            StatusCode::NOT_FOUND,
            "unknown_connection",
            "no stream of yours with this connection_id on this node",
        )
        .into_response();
    };
    let (tx, rx) = oneshot::channel();
    if stream.try_send(request(body.topic, tx)).is_err() {
        return Denied::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            "this stream has requests in flight; retry",
        )
        .into_response();
    }
    match rx.await {
        Ok(Ok(topic)) => Json(serde_json::json!({ done: topic.as_str() })).into_response(),
        Ok(Err(e)) => refused(&e).into_response(),
        // The stream ended meanwhile.
        Err(_) => Denied::new(
            StatusCode::NOT_FOUND,
            "unknown_connection",
            "the stream ended",
        )
        .into_response(),
    }
}

async fn caller(state: &AppState, headers: &HeaderMap, q: TokenParam) -> Result<Identity, Denied> {
    admission::check_origin(state, headers)?;
    admission::authenticate(state, admission::bearer(headers).or(q.token)).await
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
