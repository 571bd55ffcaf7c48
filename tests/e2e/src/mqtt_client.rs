//! An MQTT 3.1.1 device over plain TCP, packet by packet (`rumqttc`'s codec): the test
//! decides when to PUBACK, what to subscribe to, and can send what a well-behaved client
//! would not (an oversized packet, a PUBLISH).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeFilter,
    SubscribeReasonCode,
};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::gateway::GatewayProc;
use crate::tokens::token;

/// Largest packet the test client reads.
const MAX_READ: usize = 1 << 20;

/// A connected MQTT client (after a successful CONNACK).
pub struct MqttClient {
    stream: TcpStream,
    buf: BytesMut,
    next_pkid: u16,
    pub session_present: bool,
}

/// A notification received as a PUBLISH.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub qos: QoS,
    pub pkid: u16,
    pub json: Value,
}

impl MqttClient {
    /// Connect with `token` as the password; `Err` carries a refusal's return code.
    pub async fn connect(addr: &str, token: &str, client_id: &str, clean: bool) -> Result<Self> {
        match Self::try_connect(addr, token, client_id, clean, 30).await? {
            Ok(c) => Ok(c),
            Err(code) => bail!("CONNACK refused: {code:?}"),
        }
    }

    /// Connect with a keep-alive of `keep_alive` seconds and say how the CONNACK
    /// answered.
    pub async fn try_connect(
        addr: &str,
        token: &str,
        client_id: &str,
        clean: bool,
        keep_alive: u16,
    ) -> Result<std::result::Result<Self, ConnectReturnCode>> {
        let stream = TcpStream::connect(addr).await?;
        let mut c = Self {
            stream,
            buf: BytesMut::new(),
            next_pkid: 0,
            session_present: false,
        };
        let mut connect = Connect::new(client_id);
        connect.clean_session = clean;
        connect.keep_alive = keep_alive;
        if !token.is_empty() {
            connect.set_login("device", token);
        }
        c.send(Packet::Connect(connect)).await?;
        match c.recv(Duration::from_secs(5)).await? {
            Packet::ConnAck(ConnAck {
                code: ConnectReturnCode::Success,
                session_present,
            }) => {
                c.session_present = session_present;
                Ok(Ok(c))
            }
            Packet::ConnAck(ConnAck { code, .. }) => Ok(Err(code)),
            other => bail!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: Packet) -> Result<()> {
        let mut out = BytesMut::new();
        packet
            .write(&mut out, usize::MAX)
            .map_err(|e| anyhow!("encode: {e}"))?;
        self.send_raw(&out).await
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// The next packet within `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Result<Packet> {
        tokio::time::timeout(wait, async {
            loop {
                match Packet::read(&mut self.buf, MAX_READ) {
                    Ok(p) => return Ok(p),
                    Err(CodecError::InsufficientBytes(_)) => {}
                    Err(e) => bail!("decode: {e}"),
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    bail!("closed by the server");
                }
            }
        })
        .await
        .context("no packet in time")?
    }

    /// Subscribe and return the SUBACK's codes, one per filter.
    pub async fn subscribe(&mut self, filters: &[(&str, QoS)]) -> Result<Vec<SubscribeReasonCode>> {
        self.next_pkid += 1;
        let pkid = self.next_pkid;
        let filters = filters
            .iter()
            .map(|(f, q)| SubscribeFilter::new((*f).to_string(), *q))
            .collect();
        self.send(Packet::Subscribe(Subscribe { pkid, filters }))
            .await?;
        match self.recv(Duration::from_secs(5)).await? {
            Packet::SubAck(s) if s.pkid == pkid => Ok(s.return_codes),
            other => bail!("expected SUBACK, got {other:?}"),
        }
    }

    /// The next PUBLISH within `wait` (not acked).
    pub async fn next_publish(&mut self, wait: Duration) -> Result<Received> {
        loop {
            match self.recv(wait).await? {
                Packet::Publish(p) => return received(p),
                Packet::PingResp => {}
                other => bail!("expected PUBLISH, got {other:?}"),
            }
        }
    }

    /// Acknowledge a QoS 1 PUBLISH.
    pub async fn puback(&mut self, pkid: u16) -> Result<()> {
        self.send(Packet::PubAck(PubAck::new(pkid))).await
    }

    /// The next PUBLISH, acked when it is QoS 1.
    pub async fn next_acked(&mut self, wait: Duration) -> Result<Received> {
        let r = self.next_publish(wait).await?;
        if r.qos == QoS::AtLeastOnce {
            self.puback(r.pkid).await?;
        }
        Ok(r)
    }

    /// Nothing published for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) -> Result<()> {
        match self.recv(wait).await {
            Err(e) if e.to_string().contains("no packet in time") => Ok(()),
            Err(e) => Err(e),
            Ok(p) => bail!("expected silence, got {p:?}"),
        }
    }

    /// Whether the server closed the connection within `wait` (EOF or reset).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let mut sink = vec![0u8; 64 * 1024];
        tokio::time::timeout(wait, async {
            loop {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    /// A PUBLISH from the device (refused by the gateway).
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<()> {
        self.send(Packet::Publish(Publish::new(
            topic,
            QoS::AtMostOnce,
            payload.to_vec(),
        )))
        .await
    }

    /// Say goodbye (DISCONNECT) and close.
    pub async fn disconnect(mut self) {
        let _ = self.send(Packet::Disconnect).await;
        let _ = self.stream.shutdown().await;
    }
}

fn received(p: Publish) -> Result<Received> {
    Ok(Received {
        json: serde_json::from_slice(&p.payload).context("payload is not JSON")?,
        topic: p.topic,
        qos: p.qos,
        pkid: p.pkid,
    })
}

/// What the MQTT tests wait for at most.
const WAIT: Duration = Duration::from_secs(5);

/// A device of `user` on `gw`'s MQTT listener: no client id, clean session, a token
/// allowing `topics`.
pub async fn mqtt_device(gw: &GatewayProc, user: &str, topics: &[&str]) -> Result<MqttClient> {
    MqttClient::connect(&gw.mqtt.to_string(), &token(user, topics, 60), "", true).await
}

/// Wait until `gw` counted `n` connections closed for `reason` (counted after the socket
/// closed).
pub async fn closes_counted(gw: &GatewayProc, reason: &str, n: f64) {
    let series = format!("kurir_gateway_connections_closed_total{{reason=\"{reason}\"}}");
    kurir_testkit::eventually(WAIT, &format!("{n} closed as {reason}"), || async {
        (gw.metric(&series).await.ok()? == n).then_some(())
    })
    .await;
}

/// Wait until `gw` holds no MQTT connection (a closed one is then fully gone, its
/// persistent session kept).
pub async fn mqtt_all_gone(gw: &GatewayProc) {
    kurir_testkit::eventually(WAIT, "MQTT connections gone", || async {
        (gw.metric("kurir_gateway_transport_connections{transport=\"mqtt\"}")
            .await
            .ok()?
            == 0.0)
            .then_some(())
    })
    .await;
}
