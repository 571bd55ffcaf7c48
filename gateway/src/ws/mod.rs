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
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

use crate::admission::{self, Admitted, Denied};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct ConnectParams {
    token: Option<String>,
    cursor: Option<String>,
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
        return Denied::new(
            StatusCode::UPGRADE_REQUIRED,
            "not_upgradable",
            "this connection cannot be upgraded (HTTP/1.1 required)",
        )
        .into_response();
    };
    let admitted = match admission::admit(
        &state,
        req.headers(),
        params.token,
        params.cursor.as_deref(),
    )
    .await
    {
        Ok(a) => a,
        Err(denied) => return denied.into_response(),
    };
    let Admitted {
        identity,
        cursor,
        registration,
    } = admitted;
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
