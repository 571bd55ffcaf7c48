//! A connection's handshake: its CONNECT packet, by the deadline, then who it is (the
//! password is the client token; the user name is ignored), its place under the node's
//! and the user's caps, and its persistent session, answered with a CONNACK.
//!
//! Refusals are CONNACK return codes, after which the connection closes: a missing
//! token is "bad user name or password", an invalid or expired one "not authorized",
//! a draining or full node "server unavailable", MQTT 5 "unacceptable protocol version"
//! (this listener speaks 3.1.1).

use std::sync::Arc;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet};
use rumqttc::mqttbytes::{Error as CodecError, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::persist::{Sessions, MAX_CLIENT_ID};
use super::session;
use super::MAX_PACKET_BYTES;
use crate::admission::{self, Denied};
use crate::state::AppState;
use crate::telemetry;

/// How long a refused client is given to take its CONNACK.
const REFUSAL_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// One connection before its CONNACK.
pub struct Handshake {
    pub state: Arc<AppState>,
    pub sessions: Arc<Sessions>,
    /// Its place among the pending handshakes, given back once CONNECT is in (`None`
    /// over WebSocket: the HTTP listener bounded the handshake up to the upgrade).
    pub permit: Option<OwnedSemaphorePermit>,
    pub deadline: Instant,
    pub stop: CancellationToken,
}

impl Handshake {
    pub async fn run<S>(self, mut io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut buf = BytesMut::with_capacity(512);
        let read = tokio::select! {
            r = tokio::time::timeout_at(self.deadline, read_connect(&mut io, &mut buf)) => r,
            () = self.stop.cancelled() => return,
        };
        drop(self.permit);
        let connect = match read {
            Err(_) => {
                telemetry::handshake_refused("timeout");
                return;
            }
            Ok(Err(e)) => {
                debug!(error = %e, "mqtt connection closed before a valid CONNECT");
                telemetry::handshake_refused("bad_request");
                return;
            }
            Ok(Ok(connect)) => connect,
        };
        let state = self.state;
        if connect.protocol != Protocol::V4 {
            return refuse(io, ConnectReturnCode::RefusedProtocolVersion).await;
        }
        // A persistent session needs an id to be found by; over-long ones are refused
        // rather than kept.
        if connect.client_id.len() > MAX_CLIENT_ID
            || (connect.client_id.is_empty() && !connect.clean_session)
        {
            return refuse(io, ConnectReturnCode::BadClientId).await;
        }
        let token = connect
            .login
            .as_ref()
            .map(|l| l.password.clone())
            .filter(|p| !p.is_empty());
        let identity = match admission::authenticate(&state, token).await {
            Ok(identity) => identity,
            Err(denied) => return refuse(io, refused_token(&denied)).await,
        };
        let registration = match admission::register(&state, &identity) {
            Ok(r) => r,
            Err(_) => return refuse(io, ConnectReturnCode::ServiceUnavailable).await,
        };
        let (named, session_present) = if connect.client_id.is_empty() {
            (None, false)
        } else {
            let (named, present) = self
                .sessions
                .claim(
                    &identity.user,
                    &connect.client_id,
                    registration.conn(),
                    !connect.clean_session,
                )
                .await;
            (Some(named), present)
        };
        let mut ack = BytesMut::with_capacity(4);
        let _ = ConnAck::new(ConnectReturnCode::Success, session_present).write(&mut ack);
        let opened = session::Opened {
            identity,
            registration,
            keep_alive: connect.keep_alive,
            named,
            connack: ack.freeze(),
            leftover: buf,
        };
        session::run(io, state, opened).await;
    }
}

/// The CONNACK code of a refused token.
fn refused_token(denied: &Denied) -> ConnectReturnCode {
    match denied.error {
        "missing_token" => ConnectReturnCode::BadUserNamePassword,
        _ => ConnectReturnCode::NotAuthorized,
    }
}

/// Answer with `code` and close.
async fn refuse<S: AsyncWrite + Unpin>(mut io: S, code: ConnectReturnCode) {
    // Token and cap refusals are counted where they are decided.
    if matches!(
        code,
        ConnectReturnCode::RefusedProtocolVersion | ConnectReturnCode::BadClientId
    ) {
        telemetry::handshake_refused("bad_request");
    }
    let mut buf = BytesMut::with_capacity(4);
    let _ = ConnAck::new(code, false).write(&mut buf);
    let _ = tokio::time::timeout(REFUSAL_WAIT, async {
        io.write_all(&buf).await?;
        io.shutdown().await
    })
    .await;
}

/// Why no CONNECT could be read.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("closed")]
    Closed,
    #[error("first packet is not CONNECT")]
    NotConnect,
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// The first packet, which must be CONNECT. Bytes behind it stay in `buf`.
async fn read_connect<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
) -> Result<Connect, ConnectError> {
    loop {
        match Packet::read(buf, MAX_PACKET_BYTES) {
            Ok(Packet::Connect(c)) => return Ok(c),
            Ok(_) => return Err(ConnectError::NotConnect),
            Err(CodecError::InsufficientBytes(_)) => {}
            Err(e) => return Err(e.into()),
        }
        buf.reserve(512);
        if io.read_buf(buf).await? == 0 {
            return Err(ConnectError::Closed);
        }
    }
}
