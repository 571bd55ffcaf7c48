//! An SSE client the way a browser's `EventSource` is one: `GET /sse` with the token,
//! events parsed from the stream (`id:` remembered for `Last-Event-ID`), and the client
//! actions as `POST /v1/…` with the same token.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

/// A test SSE client. `welcome` is the stream's first event; `last_id` the id of the
/// last event that had one (what a browser sends as `Last-Event-ID` when it reconnects).
pub struct SseClient {
    http: reqwest::Client,
    base: String,
    token: String,
    stream: reqwest::Response,
    buf: Vec<u8>,
    pub welcome: Value,
    pub last_id: Option<String>,
    /// The `retry:` the server asked for last, in ms.
    pub retry_ms: Option<u64>,
}

impl SseClient {
    /// Open `http://{addr}/sse` with `token` (and `Last-Event-ID` when given), read
    /// `welcome`.
    pub async fn connect(addr: &str, token: &str, last_event_id: Option<&str>) -> Result<Self> {
        Self::connect_with(addr, token, last_event_id, "").await
    }

    /// Like [`SseClient::connect`], with more query parameters (`&topics=a,b`).
    pub async fn connect_with(
        addr: &str,
        token: &str,
        last_event_id: Option<&str>,
        query: &str,
    ) -> Result<Self> {
        let http = reqwest::Client::new();
        let base = format!("http://{addr}");
        let mut req = http.get(format!("{base}/sse?token={token}{query}"));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let stream = tokio::time::timeout(Duration::from_secs(10), req.send())
            .await
            .context("connect timed out")??;
        if !stream.status().is_success() {
            let status = stream.status();
            let body = stream.text().await.unwrap_or_default();
            bail!("refused: {status} {body}");
        }
        let mut c = Self {
            http,
            base,
            token: token.to_string(),
            stream,
            buf: Vec::new(),
            welcome: Value::Null,
            last_id: last_event_id.map(str::to_owned),
            retry_ms: None,
        };
        let w = c.next_frame(Duration::from_secs(5)).await?;
        if w["type"] != "welcome" {
            bail!("expected welcome, got {w}");
        }
        c.welcome = w;
        Ok(c)
    }

    /// HTTP status and JSON body of a refused stream.
    pub async fn refused(addr: &str, query: &str) -> Result<(u16, Value)> {
        let r = reqwest::get(format!("http://{addr}/sse?{query}")).await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// The next event's data as JSON (heartbeat comments skipped); error on timeout or
    /// when the stream ends.
    pub async fn next_frame(&mut self, within: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(frame) = self.take_event()? {
                return Ok(frame);
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.chunk())
                .await
                .map_err(|_| anyhow!("no frame within {within:?}"))?
                .context("stream broke")?;
            match chunk {
                Some(c) => self.buf.extend_from_slice(&c),
                None => bail!("stream ended"),
            }
        }
    }

    /// One complete event from the buffer, if there is one with data.
    fn take_event(&mut self) -> Result<Option<Value>> {
        loop {
            let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") else {
                return Ok(None);
            };
            let block: Vec<u8> = self.buf.drain(..end + 2).collect();
            let text = std::str::from_utf8(&block)?;
            let mut data = None;
            for line in text.lines() {
                if let Some(id) = line.strip_prefix("id: ") {
                    self.last_id = Some(id.to_string());
                } else if let Some(ms) = line.strip_prefix("retry: ") {
                    self.retry_ms = ms.parse().ok();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(d)?);
                }
            }
            if data.is_some() {
                return Ok(data);
            }
        }
    }

    /// The next `notification` (skipping other frames).
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

    /// Assert no event arrives for `for_`.
    pub async fn expect_silence(&mut self, for_: Duration) -> Result<()> {
        match self.next_frame(for_).await {
            Ok(f) => bail!("unexpected frame {f}"),
            Err(e) if e.to_string().starts_with("no frame") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// `POST /v1/ack`; error unless 200.
    pub async fn ack(&self, id: &str) -> Result<()> {
        let (status, body) = self.post("/v1/ack", json!({ "id": id })).await?;
        anyhow::ensure!(status == 200, "ack refused: {status} {body}");
        Ok(())
    }

    /// `POST /v1/subscribe` for this stream: the status and JSON answer.
    pub async fn subscribe(&self, topic: &str) -> Result<(u16, Value)> {
        self.topic_request("/v1/subscribe", topic).await
    }

    /// `POST /v1/unsubscribe` for this stream.
    pub async fn unsubscribe(&self, topic: &str) -> Result<(u16, Value)> {
        self.topic_request("/v1/unsubscribe", topic).await
    }

    /// `POST /v1/ping` for this stream: its status (a `pong` event follows on the stream).
    pub async fn ping(&self) -> Result<u16> {
        let conn = self.welcome["connection_id"].clone();
        Ok(self
            .post("/v1/ping", json!({ "connection_id": conn }))
            .await?
            .0)
    }

    async fn topic_request(&self, path: &str, topic: &str) -> Result<(u16, Value)> {
        let conn = self.welcome["connection_id"].clone();
        self.post(path, json!({ "connection_id": conn, "topic": topic }))
            .await
    }
}
