//! A minimal MQTT 3.1.1 device for load (`rumqttc`'s codec): CONNECT with the client
//! token as the password, SUBSCRIBE `kurir/user` (and `kurir/topic/<name>` for topics),
//! then every PUBLISH's payload as one event; QoS 1 publishes are acked with PUBACK as
//! they arrive (the notification's ack). Against Mosquitto ([`MqttConn::connect_plain`])
//! it connects anonymously and subscribes to its user's topic at QoS 0. [`MqttPublisher`]
//! is the sending side of that comparison.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    Connect, ConnectReturnCode, Packet, PubAck, Subscribe, SubscribeFilter,
};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ws::{ConnectError, Event};

/// Largest packet accepted from the server.
const MAX_PACKET: usize = 1 << 20;
/// Bytes read at once.
const READ_CHUNK: usize = 4096;

/// An MQTT connection after CONNACK and SUBACK.
pub struct MqttConn {
    stream: TcpStream,
    buf: BytesMut,
    /// The payload returned last.
    payload: Bytes,
}

impl MqttConn {
    /// Connect as `client_id`, subscribe to the user's notifications and `topics`.
    pub async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        client_id: &str,
        token: &str,
        topics: &[String],
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let mut filters = vec![SubscribeFilter::new("kurir/user".into(), QoS::AtLeastOnce)];
        filters.extend(
            topics
                .iter()
                .map(|t| SubscribeFilter::new(format!("kurir/topic/{t}"), QoS::AtMostOnce)),
        );
        Self::open(addr, source, client_id, Some(token), filters, timeout).await
    }

    /// Connect anonymously as `client_id` and subscribe to `topic` at QoS 0 (a plain
    /// broker).
    pub async fn connect_plain(
        addr: SocketAddr,
        source: Option<IpAddr>,
        client_id: &str,
        topic: String,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let filters = vec![SubscribeFilter::new(topic, QoS::AtMostOnce)];
        Self::open(addr, source, client_id, None, filters, timeout).await
    }

    /// CONNECT (with the token as password, if any) and SUBSCRIBE `filters`, within
    /// `timeout`.
    async fn open(
        addr: SocketAddr,
        source: Option<IpAddr>,
        client_id: &str,
        token: Option<&str>,
        filters: Vec<SubscribeFilter>,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        tokio::time::timeout(
            timeout,
            Self::open_now(addr, source, client_id, token, filters),
        )
        .await
        .map_err(|_| ConnectError::Timeout)?
    }

    async fn open_now(
        addr: SocketAddr,
        source: Option<IpAddr>,
        client_id: &str,
        token: Option<&str>,
        filters: Vec<SubscribeFilter>,
    ) -> Result<Self, ConnectError> {
        let tcp = |e: std::io::Error| ConnectError::Tcp(e.kind());
        let stream = crate::ws::tcp_connect(addr, source).await.map_err(tcp)?;
        let mut c = Self {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            payload: Bytes::new(),
        };
        // No keepalive: the run is shorter than any, and the server's pings are not needed.
        let mut connect = Connect::new(client_id);
        connect.keep_alive = 0;
        if let Some(token) = token {
            connect.set_login("device", token);
        }
        c.write(Packet::Connect(connect)).await.map_err(tcp)?;
        match c.read().await.map_err(tcp)? {
            Some(Packet::ConnAck(a)) if a.code == ConnectReturnCode::Success => {}
            Some(Packet::ConnAck(_)) => return Err(ConnectError::Status(401)),
            _ => return Err(ConnectError::Handshake),
        }
        let mut subscribe = Subscribe::new_many(filters);
        subscribe.pkid = 1;
        c.write(Packet::Subscribe(subscribe)).await.map_err(tcp)?;
        loop {
            match c.read().await.map_err(tcp)? {
                Some(Packet::SubAck(_)) => return Ok(c),
                Some(_) => continue,
                None => return Err(ConnectError::Handshake),
            }
        }
    }

    async fn write(&mut self, packet: Packet) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        let written = match packet {
            Packet::Connect(p) => p.write(&mut out),
            Packet::Subscribe(p) => p.write(&mut out),
            Packet::PubAck(p) => p.write(&mut out),
            Packet::Disconnect => rumqttc::mqttbytes::v4::Disconnect.write(&mut out),
            _ => Ok(0),
        };
        written.map_err(|e| invalid(e.to_string()))?;
        self.stream.write_all(&out).await
    }

    /// The next packet; `None` when the server closed the connection.
    async fn read(&mut self) -> std::io::Result<Option<Packet>> {
        loop {
            match Packet::read(&mut self.buf, MAX_PACKET) {
                Ok(p) => return Ok(Some(p)),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(e) => return Err(invalid(e.to_string())),
            }
            if self.buf.capacity() - self.buf.len() < 512 {
                self.buf.reserve(READ_CHUNK);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// The next notification's payload (a JSON frame); QoS 1 ones are acked first.
    /// `None` when the server closed the connection (MQTT 3.1.1 has no close code).
    pub async fn next(&mut self) -> std::io::Result<Option<Event<'_>>> {
        loop {
            match self.read().await? {
                Some(Packet::Publish(p)) => {
                    if p.qos == QoS::AtLeastOnce {
                        self.write(Packet::PubAck(PubAck::new(p.pkid))).await?;
                    }
                    self.payload = p.payload;
                    return Ok(Some(Event::Text(&self.payload)));
                }
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }

    /// DISCONNECT, then close.
    pub async fn close(&mut self) -> std::io::Result<()> {
        self.write(Packet::Disconnect).await?;
        self.stream.shutdown().await
    }
}

/// One MQTT connection that publishes at QoS 0 (no reply to wait for), several
/// publishes coalesced into one write when they queue up.
pub struct MqttPublisher {
    stream: tokio::sync::Mutex<TcpStream>,
}

impl MqttPublisher {
    /// Connect anonymously as `client_id`.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> std::io::Result<Self> {
        let mut stream = crate::ws::tcp_connect(addr, None).await?;
        let mut connect = Connect::new(client_id);
        connect.keep_alive = 0;
        let mut out = BytesMut::new();
        connect
            .write(&mut out)
            .map_err(|e| invalid(e.to_string()))?;
        stream.write_all(&out).await?;
        let mut buf = BytesMut::with_capacity(64);
        loop {
            match Packet::read(&mut buf, MAX_PACKET) {
                Ok(Packet::ConnAck(a)) if a.code == ConnectReturnCode::Success => break,
                Ok(other) => return Err(invalid(format!("CONNECT answered {other:?}"))),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(e) => return Err(invalid(e.to_string())),
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(invalid("closed before CONNACK".into()));
            }
        }
        Ok(Self {
            stream: tokio::sync::Mutex::new(stream),
        })
    }

    /// PUBLISH `payload` to `topic` at QoS 0.
    pub async fn publish(&self, topic: &str, payload: Bytes) -> std::io::Result<()> {
        let mut out = BytesMut::with_capacity(payload.len() + topic.len() + 8);
        rumqttc::mqttbytes::v4::Publish::from_bytes(topic, QoS::AtMostOnce, payload)
            .write(&mut out)
            .map_err(|e| invalid(e.to_string()))?;
        self.stream.lock().await.write_all(&out).await
    }
}

fn invalid(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why)
}
