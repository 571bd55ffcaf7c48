//! A WebSocket client speaking protocol v1 the way a browser or app would: connect
//! with a token, read `welcome`, then frames as JSON.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// A test WebSocket client speaking protocol v1.
pub struct Client {
    pub(crate) ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    pub welcome: Value,
}

/// How a connection attempt or a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Closed(u16),
    Dropped,
}

impl Client {
    /// Connect and read `welcome`.
    pub async fn connect(url: &str) -> Result<Self> {
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .context("connect timed out")??;
        let mut c = Self {
            ws,
            welcome: Value::Null,
        };
        let w = c.next_frame(Duration::from_secs(5)).await?;
        if w["type"] != "welcome" {
            bail!("expected welcome, got {w}");
        }
        c.welcome = w;
        Ok(c)
    }

    /// HTTP status of a refused upgrade (None when it was accepted).
    pub async fn refused_status(url: &str) -> Option<u16> {
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Some(resp.status().as_u16()),
            _ => None,
        }
    }

    pub async fn send_json(&mut self, v: Value) -> Result<()> {
        self.ws.send(Message::text(v.to_string())).await?;
        Ok(())
    }

    pub async fn send_raw(&mut self, m: Message) -> Result<()> {
        self.ws.send(m).await?;
        Ok(())
    }

    /// The next text frame as JSON; error on timeout or close.
    pub async fn next_frame(&mut self, within: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| anyhow!("no frame within {within:?}"))?;
            match msg {
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t)?),
                Some(Ok(Message::Close(f))) => bail!("closed: {f:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("socket error: {e}"),
                None => bail!("socket ended"),
            }
        }
    }

    /// The next `notification` frame (skipping others).
    pub async fn next_notification(&mut self, within: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let f = self.next_frame(left).await?;
            if f["type"] == "notification" {
                return Ok(f);
            }
        }
    }

    /// Assert nothing arrives for `for_`.
    pub async fn expect_silence(&mut self, for_: Duration) -> Result<()> {
        match self.next_frame(for_).await {
            Ok(f) => bail!("unexpected frame {f}"),
            Err(e) if e.to_string().starts_with("no frame") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Wait for the server to close; the close code.
    pub async fn closed(&mut self, within: Duration) -> Result<Ended> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => bail!("not closed within {within:?}"),
                Ok(Some(Ok(Message::Close(Some(f))))) => {
                    return Ok(Ended::Closed(u16::from(f.code)))
                }
                Ok(Some(Ok(Message::Close(None)))) => {
                    return Ok(Ended::Closed(CloseCode::Status.into()))
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) | Ok(None) => return Ok(Ended::Dropped),
            }
        }
    }

    pub async fn ack(&mut self, id: &str) -> Result<()> {
        self.send_json(serde_json::json!({"type": "ack", "id": id}))
            .await
    }

    pub async fn subscribe(&mut self, topic: &str) -> Result<Value> {
        self.send_json(serde_json::json!({"type": "subscribe", "topic": topic}))
            .await?;
        self.next_frame(Duration::from_secs(5)).await
    }
}
