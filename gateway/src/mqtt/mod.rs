//! ① The MQTT transport, for devices: an MQTT 3.1.1 listener (`KURIR_MQTT_LISTEN`, off by
//! default) on the same hub, inbox and presence as a WebSocket.
//!
//! A connection goes [`connect`] (the CONNECT packet within the handshake timeout; the
//! password is the client token; a CONNACK) → [`session`] (subscriptions, replay, live
//! publishes, PUBACK as the ack). [`topics`] names what a device may subscribe to,
//! [`inflight`] the QoS 1 publishes awaiting their PUBACK, [`persist`] the subscriptions
//! a persistent session keeps, [`websocket`] MQTT over WebSocket (`GET /mqtt`). Packets
//! are `rumqttc`'s codec (`mqttbytes::v4`).
//!
//! Handshakes are bounded like the WebSocket listener's: at most
//! `KURIR_MAX_PENDING_HANDSHAKES` connections wait for their CONNECT at once, beyond
//! that a new connection is closed at once.

pub mod connect;
pub mod inflight;
pub mod persist;
pub mod session;
pub mod topics;
pub mod websocket;

use std::sync::Arc;

use kurir_tls::ServerCerts;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::admission;
use crate::state::AppState;
use crate::telemetry;

/// Largest packet a client may send (its remaining length); larger closes the
/// connection. Devices send small control packets.
pub const MAX_PACKET_BYTES: usize = 64 * 1024;

/// Accept MQTT connections until `stop`. Each runs on the node's task tracker, so the
/// drain waits for it.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<Arc<ServerCerts>>,
    sessions: Arc<persist::Sessions>,
    stop: CancellationToken,
) {
    let pending = Arc::new(Semaphore::new(state.config.max_pending_handshakes));
    while let Some((stream, permit)) = admission::accept(&listener, &pending, &stop).await {
        let (state, sessions, stop) = (state.clone(), sessions.clone(), stop.clone());
        let acceptor = tls.as_ref().map(|certs| certs.acceptor());
        let tracker = state.tracker.clone();
        tracker.spawn(async move {
            let deadline = tokio::time::Instant::now() + state.config.handshake_timeout();
            let handshake = connect::Handshake {
                state,
                sessions,
                permit: Some(permit),
                deadline,
                stop,
            };
            match acceptor {
                None => handshake.run(stream).await,
                Some(acceptor) => {
                    let accepted = tokio::select! {
                        r = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => r,
                        () = handshake.stop.cancelled() => return,
                    };
                    match accepted {
                        Ok(Ok(tls)) => handshake.run(tls).await,
                        Ok(Err(e)) => {
                            debug!(error = %e, "mqtt TLS handshake failed");
                            telemetry::handshake_refused("tls_error");
                        }
                        Err(_) => telemetry::handshake_refused("timeout"),
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod idle_footprint {
    #[tokio::test]
    async fn an_idle_mqtt_session_stays_small() {
        let (state, _channels) = crate::state::for_test();
        let identity = crate::auth::Identity {
            user: kurir_backends::UserId::parse("a").unwrap(),
            topics: vec![],
            expires_at: 0,
        };
        let conn = crate::hub::ConnHandle::new(kurir_backends::ConnId(1), identity.user.clone(), 8);
        let registration = state.hub.admit(conn, 10, 10).unwrap();
        let (io, _client) = tokio::io::duplex(64);
        let opened = super::session::Opened {
            identity,
            registration,
            keep_alive: 60,
            named: None,
            connack: bytes::Bytes::new(),
            leftover: bytes::BytesMut::new(),
        };
        let fut = super::session::run(io, state, opened);
        // What every idle MQTT connection's task carries (a TCP stream in production;
        // a duplex pipe is a little larger): sends, replay and packet handling are
        // boxed to stay out of it. Larger than a WebSocket session's (its wait holds
        // the keep-alive timer): 1,152 bytes in this debug build.
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 1280, "mqtt session future grew to {size} bytes");
        eprintln!("mqtt session future: {size} bytes");
    }
}
