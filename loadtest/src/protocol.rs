//! What a load client says over its connection: Kurir's protocol v1 (over WebSocket or
//! SSE), or Socket.IO v5 over Engine.IO v4 (the peer). All carry the same notification
//! object, so the worker measures them with one code path.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::conn::Conn;
use crate::ws::{ConnectError, Event};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Kurir WebSocket protocol v1 (`/ws?token=`).
    Kurir,
    /// Kurir protocol v1 over Server-Sent Events (`/sse?token=`).
    KurirSse,
    /// Kurir over MQTT 3.1.1 (`kurir/user`, the token as password).
    KurirMqtt,
    /// Socket.IO 4 (Engine.IO v4 over WebSocket, `/socket.io/?EIO=4&transport=websocket`).
    Socketio,
    /// Mosquitto, the MQTT broker: each client subscribes to `u/<user>` at QoS 0, and the
    /// sender publishes there the same notification frame a Kurir client receives.
    Mosquitto,
}

/// The notification fields the harness reads. `data` is what the sender put in.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Notif {
    pub seq: u32,
    /// Sender's clock at the send call, unix µs.
    pub sent_us: u64,
    /// Recipient window `[first, first + len)` over user indexes (mod the user count);
    /// `None` for topic and broadcast deliveries.
    pub window: Option<(u64, u64)>,
    /// Dispatcher's (or emitter's) stamp, unix ms.
    pub created_at: i64,
    /// Notification id, when the frame carries a cursor (stored: may be acked).
    pub ack_id: Option<String>,
}

/// One server message, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Notification(Notif),
    /// Kurir `welcome` / Socket.IO namespace connect (`40`).
    Welcome,
    Subscribed,
    /// Engine.IO ping: answer with a pong.
    EioPing,
    /// An `error` frame (or Socket.IO `connect_error`), by code.
    Error(String),
    Other,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<Data<'a>>,
    #[serde(default)]
    created_at: i64,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    cursor: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow, default)]
    s: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    t: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    a: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    n: Option<Cow<'a, str>>,
}

fn num(s: &Option<Cow<'_, str>>) -> Option<u64> {
    s.as_deref().and_then(|v| v.parse().ok())
}

fn classify_frame(f: Frame<'_>) -> Incoming {
    match f.ty.as_ref() {
        "notification" => {
            let Some(d) = f.data else {
                return Incoming::Error("no_data".into());
            };
            let (Some(seq), Some(sent_us)) = (num(&d.s), num(&d.t)) else {
                return Incoming::Error("no_seq".into());
            };
            let window = num(&d.a).map(|a| (a, num(&d.n).unwrap_or(1)));
            Incoming::Notification(Notif {
                seq: seq as u32,
                sent_us,
                window,
                created_at: f.created_at,
                ack_id: f.cursor.and(f.id).map(Cow::into_owned),
            })
        }
        "welcome" => Incoming::Welcome,
        "subscribed" => Incoming::Subscribed,
        "error" => Incoming::Error(f.code.map_or_else(|| "unknown".into(), Cow::into_owned)),
        _ => Incoming::Other,
    }
}

/// The Mosquitto topic of `user`'s notifications.
pub fn mosquitto_topic(user: &str) -> String {
    format!("u/{user}")
}

impl Protocol {
    /// Request path for `user` (Kurir needs the signed token).
    pub fn path(self, user: &str, token: &str) -> String {
        match self {
            Self::Kurir => format!("/ws?token={token}"),
            Self::KurirSse => format!("/sse?token={token}"),
            Self::KurirMqtt | Self::Mosquitto => String::new(),
            Self::Socketio => format!("/socket.io/?EIO=4&transport=websocket&user={user}"),
        }
    }

    pub fn classify(self, text: &[u8]) -> Incoming {
        match self {
            Self::Kurir | Self::KurirSse | Self::KurirMqtt | Self::Mosquitto => {
                match serde_json::from_slice::<Frame<'_>>(text) {
                    Ok(f) => classify_frame(f),
                    Err(_) => Incoming::Error("bad_json".into()),
                }
            }
            Self::Socketio => classify_sio(text),
        }
    }

    /// Client frame subscribing to `topic`.
    pub fn subscribe_frame(self, topic: &str) -> Vec<u8> {
        match self {
            Self::Kurir | Self::KurirSse | Self::KurirMqtt | Self::Mosquitto => {
                serde_json::json!({"type": "subscribe", "topic": topic}).to_string()
            }
            Self::Socketio => format!("42{}", serde_json::json!(["subscribe", topic])),
        }
        .into_bytes()
    }

    pub fn ack_frame(self, id: &str) -> Vec<u8> {
        match self {
            Self::Kurir | Self::KurirSse | Self::KurirMqtt | Self::Mosquitto => {
                serde_json::json!({"type": "ack", "id": id}).to_string()
            }
            Self::Socketio => format!("42{}", serde_json::json!(["ack", id])),
        }
        .into_bytes()
    }

    /// Whether the client is an SSE stream (no upstream messages).
    pub fn is_sse(self) -> bool {
        self == Self::KurirSse
    }

    /// Whether the client is an MQTT device (connects to the MQTT listener).
    pub fn is_mqtt(self) -> bool {
        matches!(self, Self::KurirMqtt | Self::Mosquitto)
    }

    /// Whether this is one of the peers Kurir is compared with.
    pub fn is_peer(self) -> bool {
        matches!(self, Self::Socketio | Self::Mosquitto)
    }

    /// After the upgrade: wait for the greeting (answering Engine.IO's handshake).
    pub async fn handshake(self, ws: &mut Conn, within: Duration) -> Result<(), ConnectError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ev = tokio::time::timeout_at(deadline, ws.next())
                .await
                .map_err(|_| ConnectError::Timeout)?
                .map_err(|e| ConnectError::Tcp(e.kind()))?;
            let reply: Option<&[u8]> = match ev {
                None | Some(Event::Close(_)) => return Err(ConnectError::Handshake),
                Some(Event::Text(t)) => match self {
                    // Engine.IO open packet: join the default namespace.
                    Self::Socketio if t.first() == Some(&b'0') => Some(b"40"),
                    _ => match self.classify(t) {
                        Incoming::Welcome => return Ok(()),
                        Incoming::EioPing => Some(b"3"),
                        Incoming::Error(_) => return Err(ConnectError::Handshake),
                        _ => None,
                    },
                },
            };
            if let Some(r) = reply {
                ws.send_text(r)
                    .await
                    .map_err(|e| ConnectError::Tcp(e.kind()))?;
            }
        }
    }
}

/// Engine.IO packet type is the first byte; `4` carries a Socket.IO packet.
fn classify_sio(text: &[u8]) -> Incoming {
    match text {
        [b'2', ..] => Incoming::EioPing,
        [b'4', b'0', ..] => Incoming::Welcome,
        [b'4', b'4', ..] => Incoming::Error("connect_error".into()),
        [b'4', b'2', rest @ ..] => {
            match serde_json::from_slice::<(Cow<'_, str>, Option<serde_json::Value>)>(rest) {
                Ok((name, _)) if name == "subscribed" => Incoming::Subscribed,
                Ok((name, _)) if name != "notification" => Incoming::Other,
                _ => match serde_json::from_slice::<(Cow<'_, str>, Frame<'_>)>(rest) {
                    Ok((_, f)) => classify_frame(f),
                    Err(_) => Incoming::Error("bad_json".into()),
                },
            }
        }
        _ => Incoming::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KURIR: &str = r#"{"type":"notification","id":"0190","title":"t","body":"xx","data":{"a":"7","n":"1","s":"42","t":"1700000000000000"},"topic":null,"priority":"normal","collapse_key":null,"created_at":1700000000001,"replayed":false}"#;

    #[test]
    fn reads_kurir_notifications() {
        let Incoming::Notification(n) = Protocol::Kurir.classify(KURIR.as_bytes()) else {
            panic!("not a notification");
        };
        assert_eq!(n.seq, 42);
        assert_eq!(n.sent_us, 1_700_000_000_000_000);
        assert_eq!(n.window, Some((7, 1)));
        assert_eq!(n.created_at, 1_700_000_000_001);
        assert_eq!(n.ack_id, None);
        let stored = KURIR.replace(
            "\"replayed\":false",
            "\"replayed\":false,\"cursor\":\"1-0\"",
        );
        let Incoming::Notification(n) = Protocol::Kurir.classify(stored.as_bytes()) else {
            panic!()
        };
        assert_eq!(n.ack_id.as_deref(), Some("0190"));
    }

    #[test]
    fn reads_kurir_control_frames() {
        let p = Protocol::Kurir;
        assert_eq!(
            p.classify(
                br#"{"type":"welcome","connection_id":"1","node":"n","user":"u","heartbeat_ms":1}"#
            ),
            Incoming::Welcome
        );
        assert_eq!(
            p.classify(br#"{"type":"subscribed","topic":"lt.x"}"#),
            Incoming::Subscribed
        );
        assert_eq!(
            p.classify(br#"{"type":"error","code":"forbidden","message":"m"}"#),
            Incoming::Error("forbidden".into())
        );
        assert_eq!(p.classify(br#"{"type":"pong"}"#), Incoming::Other);
    }

    #[test]
    fn reads_socketio_packets() {
        let p = Protocol::Socketio;
        assert_eq!(p.classify(b"2"), Incoming::EioPing);
        assert_eq!(p.classify(br#"40{"sid":"x"}"#), Incoming::Welcome);
        assert_eq!(
            p.classify(br#"42["subscribed","lt.x"]"#),
            Incoming::Subscribed
        );
        let frame = format!("42[\"notification\",{KURIR}]");
        let Incoming::Notification(n) = p.classify(frame.as_bytes()) else {
            panic!()
        };
        assert_eq!(n.seq, 42);
        let fanout =
            r#"42["notification",{"type":"notification","data":{"s":"3","t":"5"},"created_at":1}]"#;
        let Incoming::Notification(n) = p.classify(fanout.as_bytes()) else {
            panic!()
        };
        assert_eq!(n.window, None);
    }

    #[test]
    fn client_frames() {
        assert_eq!(
            Protocol::Socketio.subscribe_frame("lt.a"),
            br#"42["subscribe","lt.a"]"#
        );
        let v: serde_json::Value = serde_json::from_slice(&Protocol::Kurir.ack_frame("i")).unwrap();
        assert_eq!(v["type"], "ack");
    }
}
