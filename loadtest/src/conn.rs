//! One load client's connection, whatever carries it: a WebSocket ([`crate::ws`]), an
//! SSE stream ([`crate::sse`]) or an MQTT session ([`crate::mqtt`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::mqtt::MqttConn;
use crate::sse::SseConn;
use crate::ws::{ConnectError, Event, WsConn};

pub enum Conn {
    Ws(WsConn),
    Sse(SseConn),
    Mqtt(MqttConn),
}

impl Conn {
    /// Open a WebSocket (`sse: false`) or an SSE stream at `path`.
    pub async fn connect(
        sse: bool,
        addr: SocketAddr,
        source: Option<IpAddr>,
        host: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        Ok(if sse {
            Self::Sse(SseConn::connect(addr, source, host, path, timeout).await?)
        } else {
            Self::Ws(WsConn::connect(addr, source, host, path, timeout).await?)
        })
    }

    pub async fn next(&mut self) -> std::io::Result<Option<Event<'_>>> {
        match self {
            Self::Ws(c) => c.next().await,
            Self::Sse(c) => c.next().await,
            Self::Mqtt(c) => c.next().await,
        }
    }

    /// A client message. Over SSE there is no upstream: what the scenarios send
    /// (subscriptions) went in the stream's URL, so this is refused.
    pub async fn send_text(&mut self, payload: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Ws(c) => c.send_text(payload).await,
            Self::Sse(_) | Self::Mqtt(_) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "SSE and MQTT load clients send no JSON frames upstream",
            )),
        }
    }

    pub async fn close(&mut self, code: u16) -> std::io::Result<()> {
        match self {
            Self::Ws(c) => c.close(code).await,
            Self::Sse(c) => c.close().await,
            Self::Mqtt(c) => c.close().await,
        }
    }
}
