//! Fixtures for end-to-end tests: the real `kurir-dispatcher` and `kurir-gateway`
//! binaries as separate processes on loopback ports, against the Redis and NATS named by
//! `KURIR_REDIS_URL` / `KURIR_NATS_URL`, each cluster in its own random namespace.
//! Processes are killed by PID when their handle drops.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::{SinkExt, StreamExt};
use kurir_proto::v1::dispatcher_client::DispatcherClient;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const JWT_SECRET: &str = "e2e-jwt-secret-0123456789abcdef-0123456789";
pub const API_KEY: &str = "e2e-api-key-0123456789abcdef-0123456789";

pub fn redis_url() -> String {
    std::env::var("KURIR_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn nats_url() -> String {
    std::env::var("KURIR_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

pub fn random_namespace() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

/// A free loopback port (bound then released; good enough on a test machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Directory holding the workspace's binaries (next to this test executable's `deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run the suite with `cargo nextest run --workspace` (it builds the binaries)",
        path.display()
    );
    path
}

/// A child process killed (SIGKILL) on drop unless it already exited.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &str, binary: &str, env: &[(&str, String)]) -> Result<Self> {
        let log_dir = std::env::temp_dir().join("kurir-e2e-logs");
        std::fs::create_dir_all(&log_dir)?;
        let log =
            std::fs::File::create(log_dir.join(format!("{name}-{}.log", std::process::id())))?;
        let mut cmd = Command::new(bin(binary));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("KURIR_E2E_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("spawn {binary}"))?;
        Ok(Self {
            name: name.into(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait for exit after a signal, bounded.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within {within:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// Poll `check` until it returns `Some` or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP reply"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A running gateway process.
pub struct GatewayProc {
    pub proc: Proc,
    pub node: String,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
}

/// Options for a gateway process.
#[derive(Clone)]
pub struct GatewayOpts {
    pub namespace: String,
    pub nats_url: String,
    pub redis_url: String,
    pub extra: Vec<(&'static str, String)>,
}

impl GatewayProc {
    pub async fn start(node: &str, opts: &GatewayOpts) -> Result<Self> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut env = vec![
            ("KURIR_NAMESPACE", opts.namespace.clone()),
            ("KURIR_NATS_URL", opts.nats_url.clone()),
            ("KURIR_REDIS_URL", opts.redis_url.clone()),
            ("KURIR_NODE_ID", node.to_string()),
            ("KURIR_LISTEN", addr.to_string()),
            ("KURIR_METRICS_LISTEN", metrics.to_string()),
            ("KURIR_JWT_SECRET", JWT_SECRET.to_string()),
            ("KURIR_DRAIN_SECONDS", "1".to_string()),
            ("KURIR_LIVENESS_TTL_MS", "3000".to_string()),
            ("KURIR_PROBE_INTERVAL_MS", "500".to_string()),
            ("KURIR_PROBE_TIMEOUT_MS", "2000".to_string()),
        ];
        env.extend(opts.extra.iter().cloned());
        let proc = Proc::spawn(node, "kurir-gateway", &env)?;
        let gw = Self {
            proc,
            node: node.into(),
            addr,
            metrics,
        };
        gw.wait_ready(Duration::from_secs(20)).await?;
        Ok(gw)
    }

    pub async fn ready(&self) -> bool {
        matches!(http_get(self.addr, "/readyz").await, Ok((200, _)))
    }

    pub async fn wait_ready(&self, within: Duration) -> Result<()> {
        eventually(within, &format!("{} ready", self.node), || async {
            self.ready().await.then_some(())
        })
        .await
    }

    /// Current value of a metric series, e.g. `kurir_gateway_deliveries_total`; an error
    /// when the gateway does not export it (see [`metric`]).
    pub async fn metric(&self, series: &str) -> Result<f64> {
        metric(self.metrics, series).await
    }

    /// Current value of a metric series, `None` when the gateway does not export it.
    pub async fn series(&self, series: &str) -> Result<Option<f64>> {
        series_value(self.metrics, series).await
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={token}", self.addr)
    }
}

/// Read one series from a `/metrics` endpoint; an error when it is absent. Every series
/// Kurir names is registered at start-up (counters at zero), so a missing one is a bug
/// or a typo in the test, never a zero.
pub async fn metric(addr: SocketAddr, series: &str) -> Result<f64> {
    series_value(addr, series)
        .await?
        .ok_or_else(|| anyhow!("{addr}/metrics does not export {series}"))
}

/// Read one series from a `/metrics` endpoint; `None` when it is absent.
pub async fn series_value(addr: SocketAddr, series: &str) -> Result<Option<f64>> {
    let (status, body) = http_get(addr, "/metrics").await?;
    if status != 200 {
        bail!("{addr}/metrics answered {status}");
    }
    Ok(parse_metrics(&body).get(series).copied())
}

pub fn parse_metrics(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// A running dispatcher process.
pub struct DispatcherProc {
    pub proc: Proc,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
}

impl DispatcherProc {
    pub async fn start(namespace: &str, nats_url: &str, redis_url: &str) -> Result<Self> {
        Self::start_with(namespace, nats_url, redis_url, &[]).await
    }

    /// Like [`Self::start`] with extra environment.
    pub async fn start_with(
        namespace: &str,
        nats_url: &str,
        redis_url: &str,
        extra: &[(&'static str, String)],
    ) -> Result<Self> {
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let env = vec![
            ("KURIR_NAMESPACE", namespace.to_string()),
            ("KURIR_NATS_URL", nats_url.to_string()),
            ("KURIR_REDIS_URL", redis_url.to_string()),
            ("KURIR_GRPC_LISTEN", grpc.to_string()),
            ("KURIR_METRICS_LISTEN", metrics.to_string()),
            ("KURIR_API_KEYS", API_KEY.to_string()),
        ];
        let env: Vec<_> = env.into_iter().chain(extra.iter().cloned()).collect();
        let proc = Proc::spawn("dispatcher", "kurir-dispatcher", &env)?;
        let d = Self {
            proc,
            grpc,
            metrics,
        };
        eventually(Duration::from_secs(20), "dispatcher gRPC port", || async {
            tokio::net::TcpStream::connect(d.grpc)
                .await
                .ok()
                .map(|_| ())
        })
        .await?;
        Ok(d)
    }

    pub async fn client(&self) -> Result<Api> {
        api_client(self.grpc, Some(API_KEY)).await
    }

    /// Current value of a metric series; an error when the dispatcher does not export it.
    pub async fn metric(&self, series: &str) -> Result<f64> {
        metric(self.metrics, series).await
    }
}

pub type Api = DispatcherClient<InterceptedService<Channel, ApiKey>>;

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct ApiKey(Option<String>);

impl tonic::service::Interceptor for ApiKey {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(k) = &self.0 {
            let v = format!("Bearer {k}")
                .parse()
                .map_err(|_| tonic::Status::internal("key"))?;
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

pub async fn api_client(addr: SocketAddr, key: Option<&str>) -> Result<Api> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .connect()
        .await?;
    Ok(DispatcherClient::with_interceptor(
        channel,
        ApiKey(key.map(str::to_owned)),
    ))
}

/// 1 dispatcher + N gateways in a fresh namespace.
pub struct Cluster {
    pub namespace: String,
    pub dispatcher: DispatcherProc,
    pub gateways: Vec<GatewayProc>,
}

impl Cluster {
    pub async fn start(gateways: usize) -> Result<Self> {
        Self::start_on(gateways, &nats_url(), &redis_url()).await
    }

    /// A cluster on the given NATS and Redis.
    pub async fn start_on(gateways: usize, nats: &str, redis: &str) -> Result<Self> {
        let namespace = random_namespace();
        let opts = GatewayOpts {
            namespace: namespace.clone(),
            nats_url: nats.to_string(),
            redis_url: redis.to_string(),
            extra: vec![],
        };
        let dispatcher = DispatcherProc::start(&namespace, nats, redis).await?;
        let mut gws = Vec::new();
        for i in 0..gateways {
            let node = format!("gw{i}-{}", &namespace[5..13]);
            gws.push(GatewayProc::start(&node, &opts).await?);
        }
        Ok(Self {
            namespace,
            dispatcher,
            gateways: gws,
        })
    }

    /// Start one more gateway like the others (e.g. a restart with the same node id).
    pub async fn start_gateway(&self, node: &str, nats: &str, redis: &str) -> Result<GatewayProc> {
        GatewayProc::start(
            node,
            &GatewayOpts {
                namespace: self.namespace.clone(),
                nats_url: nats.to_string(),
                redis_url: redis.to_string(),
                extra: vec![],
            },
        )
        .await
    }
}

/// An HS256 client token.
pub fn token(user: &str, topics: &[&str], ttl_secs: i64) -> String {
    token_with_secret(user, topics, ttl_secs, JWT_SECRET)
}

pub fn token_with_secret(user: &str, topics: &[&str], ttl_secs: i64, secret: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({"sub": user, "exp": now + ttl_secs, "topics": topics});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode token")
}

/// A test WebSocket client speaking protocol v1.
pub struct Client {
    ws: tokio_tungstenite::WebSocketStream<
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

/// A notification request body.
pub fn note(title: &str) -> kurir_proto::v1::Notification {
    kurir_proto::v1::Notification {
        title: title.into(),
        body: format!("body of {title}"),
        ..Default::default()
    }
}

/// Send to users; returns the reply.
pub async fn send(
    api: &mut Api,
    users: &[&str],
    title: &str,
    ttl: u32,
) -> Result<kurir_proto::v1::SendReply> {
    let reply = api
        .send(kurir_proto::v1::SendRequest {
            user_ids: users.iter().map(|u| u.to_string()).collect(),
            notification: Some(note(title)),
            ttl_seconds: ttl,
            idempotency_key: String::new(),
        })
        .await?;
    Ok(reply.into_inner())
}

/// A user id unique to this test run.
pub fn user(name: &str) -> String {
    format!("{name}-{:08x}", rand::random::<u32>())
}

/// A NATS server this test owns, on a free port (stop/restart at will).
pub struct OwnNats {
    pub port: u16,
    proc: Option<Proc>,
}

impl OwnNats {
    pub async fn start() -> Result<Self> {
        let mut n = Self {
            port: free_port(),
            proc: None,
        };
        n.restart().await?;
        Ok(n)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub async fn restart(&mut self) -> Result<()> {
        let mut cmd = Command::new("nats-server");
        if !which("nats-server") {
            cmd = Command::new("/usr/sbin/nats-server");
        }
        let child = cmd
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start nats-server")?;
        self.proc = Some(Proc {
            name: "nats".into(),
            child,
        });
        let port = self.port;
        eventually(Duration::from_secs(10), "own nats-server", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

fn which(cmd: &str) -> bool {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .any(|d| std::path::Path::new(d).join(cmd).exists())
}

/// Run `redis-cli` against `url`; its stdout.
pub fn redis_cli(url: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("redis-cli")
        .arg("-u")
        .arg(url)
        .args(args)
        .output()
        .context("redis-cli")?;
    if !out.status.success() {
        bail!(
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Run one command per line of `commands` in a single `redis-cli` (quote arguments
/// with [`redis_quote`]); one output line per command.
pub fn redis_cli_batch(url: &str, commands: &[String]) -> Result<Vec<String>> {
    use std::io::Write;
    if commands.is_empty() {
        return Ok(Vec::new());
    }
    let mut child = Command::new("redis-cli")
        .arg("-u")
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("redis-cli")?;
    let mut stdin = child.stdin.take().context("redis-cli stdin")?;
    let input = commands.join("\n") + "\n";
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow!("redis-cli writer panicked"))??;
    if !out.status.success() {
        bail!("redis-cli batch: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// `arg` as one redis-cli argument, whatever it contains.
pub fn redis_quote(arg: &str) -> String {
    let mut out = String::from("\"");
    for c in arg.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

fn namespace_keys(url: &str, pattern: &str) -> Result<Vec<String>> {
    Ok(redis_cli(url, &["--scan", "--pattern", pattern])?
        .lines()
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect())
}

/// Entries left in every inbox of a namespace.
pub fn inbox_entries(url: &str, namespace: &str) -> Result<usize> {
    let keys = namespace_keys(url, &format!("kurir:{namespace}:inbox:*"))?;
    let commands: Vec<String> = keys
        .iter()
        .map(|k| format!("XLEN {}", redis_quote(k)))
        .collect();
    let lens = redis_cli_batch(url, &commands)?;
    if lens.len() != keys.len() {
        bail!("XLEN of {} keys gave {} answers", keys.len(), lens.len());
    }
    Ok(lens.iter().map(|l| l.parse::<usize>().unwrap_or(0)).sum())
}

/// Delete this namespace's keys (never anything else).
pub fn cleanup_namespace(url: &str, namespace: &str) {
    if let Ok(keys) = namespace_keys(url, &format!("kurir:{namespace}:*")) {
        let commands: Vec<String> = keys
            .iter()
            .map(|k| format!("DEL {}", redis_quote(k)))
            .collect();
        let _ = redis_cli_batch(url, &commands);
    }
}

/// A Redis server this test owns: a free port, AOF on, its own directory.
pub struct OwnRedis {
    pub port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl OwnRedis {
    pub async fn start() -> Result<Self> {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("kurir-e2e-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut r = Self {
            port,
            dir,
            proc: None,
        };
        r.restart().await?;
        Ok(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn restart(&mut self) -> Result<()> {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start redis-server")?;
        self.proc = Some(Proc {
            name: "redis".into(),
            child,
        });
        let url = self.url();
        eventually(Duration::from_secs(10), "own redis-server", || {
            let url = url.clone();
            async move { (redis_cli(&url, &["PING"]).ok()? == "PONG").then_some(()) }
        })
        .await
    }

    /// SIGKILL and delete its data: the next start is an empty Redis.
    pub fn kill_and_wipe(&mut self) -> Result<()> {
        self.kill();
        std::fs::remove_dir_all(&self.dir)?;
        std::fs::create_dir_all(&self.dir)?;
        Ok(())
    }

    /// SIGKILL: only what AOF already holds survives.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How a session of the [`Fleet`] ended on the server's side.
#[derive(Clone, Debug)]
pub struct SessionEnd {
    pub user: String,
    /// Node of the session (from its `welcome`).
    pub node: String,
    /// Close code the server sent; 1006 when the socket ended without a close frame.
    pub code: u16,
    pub at: Instant,
}

/// A session that ended on the server's side and the user's next `welcome`.
#[derive(Clone, Debug)]
pub struct Reconnect {
    pub end: SessionEnd,
    /// Node of the next session.
    pub to: String,
    /// From the end of the old session to the `welcome` of the next one.
    pub gap: Duration,
}

/// Close code recorded for a socket that ended without a close frame.
pub const DROPPED: u16 = 1006;

/// What the fleet's tasks share.
#[derive(Default)]
struct FleetShared {
    urls: Mutex<Vec<String>>,
    secret: String,
    stop: AtomicBool,
    /// User → node of its open session.
    connected: Mutex<HashMap<String, String>>,
    ends: Mutex<Vec<SessionEnd>>,
    reconnects: Mutex<Vec<Reconnect>>,
    /// Users whose session should be closed by the client (then reconnect).
    bounce: Mutex<HashSet<String>>,
    connect_failures: AtomicUsize,
    error_frames: AtomicUsize,
}

/// Self-reconnecting clients that ack what they get, one task per user. Records every
/// (user, id) received, ids seen twice on one connection, how sessions ended (close
/// codes) and how long each user took to come back.
pub struct Fleet {
    pub received: Arc<Mutex<HashMap<String, HashSet<String>>>>,
    pub duplicates: Arc<AtomicUsize>,
    shared: Arc<FleetShared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// One task per user, connecting round-robin to `addrs` (`host:port`), with tokens
    /// signed by [`JWT_SECRET`].
    pub fn start(users: &[String], addrs: &[String]) -> Self {
        Self::start_with_secret(users, addrs, JWT_SECRET)
    }

    /// Like [`Fleet::start`], with tokens signed by `secret`.
    pub fn start_with_secret(users: &[String], addrs: &[String], secret: &str) -> Self {
        let shared = Arc::new(FleetShared {
            urls: Mutex::new(addrs.to_vec()),
            secret: secret.to_string(),
            ..Default::default()
        });
        let received: Arc<Mutex<HashMap<String, HashSet<String>>>> = Arc::default();
        let duplicates: Arc<AtomicUsize> = Arc::default();
        let tasks = users
            .iter()
            .enumerate()
            .map(|(i, u)| {
                tokio::spawn(fleet_user(
                    i,
                    u.clone(),
                    shared.clone(),
                    received.clone(),
                    duplicates.clone(),
                ))
            })
            .collect();
        Self {
            received,
            duplicates,
            shared,
            tasks,
        }
    }

    pub fn set_gateways(&self, addrs: &[String]) {
        *self.shared.urls.lock().unwrap() = addrs.to_vec();
    }

    /// How many expected (user, id) pairs no client has received yet.
    pub fn missing(&self, expected: &[(String, String)]) -> usize {
        let r = self.received.lock().unwrap();
        expected
            .iter()
            .filter(|(u, id)| !r.get(u).is_some_and(|s| s.contains(id)))
            .count()
    }

    /// User → node, for every user with an open session (after its `welcome`).
    pub fn connected(&self) -> HashMap<String, String> {
        self.shared.connected.lock().unwrap().clone()
    }

    /// Open sessions per node.
    pub fn connected_per_node(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for node in self.shared.connected.lock().unwrap().values() {
            *out.entry(node.clone()).or_default() += 1;
        }
        out
    }

    /// Every session the server ended so far, in order.
    pub fn ends(&self) -> Vec<SessionEnd> {
        self.shared.ends.lock().unwrap().clone()
    }

    /// Close code → how many sessions the server ended with it ([`DROPPED`] for none).
    pub fn close_codes(&self) -> HashMap<u16, usize> {
        let mut out = HashMap::new();
        for e in self.shared.ends.lock().unwrap().iter() {
            *out.entry(e.code).or_default() += 1;
        }
        out
    }

    /// Every session the server ended that was followed by a new `welcome`, in order.
    pub fn reconnects(&self) -> Vec<Reconnect> {
        self.shared.reconnects.lock().unwrap().clone()
    }

    /// Connection attempts that failed (refused, HTTP error, timeout, no `welcome`).
    pub fn connect_failures(&self) -> usize {
        self.shared.connect_failures.load(Ordering::Relaxed)
    }

    /// `error` frames received (each makes the client reconnect).
    pub fn error_frames(&self) -> usize {
        self.shared.error_frames.load(Ordering::Relaxed)
    }

    /// Close these users' sessions from the client side (code 1000); they reconnect
    /// at once, so the load balancer places them again.
    pub fn bounce(&self, users: &[String]) {
        self.shared
            .bounce
            .lock()
            .unwrap()
            .extend(users.iter().cloned());
    }

    pub async fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for Fleet {
    /// A fleet dropped without [`Fleet::stop`] (a failed test) stops reconnecting.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// One user of a [`Fleet`]: connect, ack everything, reconnect after any end.
async fn fleet_user(
    i: usize,
    u: String,
    shared: Arc<FleetShared>,
    received: Arc<Mutex<HashMap<String, HashSet<String>>>>,
    dups: Arc<AtomicUsize>,
) {
    let mut pick = i;
    let mut last_end: Option<SessionEnd> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let addr = {
            let urls = shared.urls.lock().unwrap();
            pick += 1;
            urls[pick % urls.len()].clone()
        };
        let url = format!(
            "ws://{addr}/ws?token={}",
            token_with_secret(&u, &[], 600, &shared.secret)
        );
        let Ok(mut c) = Client::connect(&url).await else {
            shared.connect_failures.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let node = c.welcome["node"].as_str().unwrap_or_default().to_string();
        shared
            .connected
            .lock()
            .unwrap()
            .insert(u.clone(), node.clone());
        if let Some(end) = last_end.take() {
            let gap = end.at.elapsed();
            shared.reconnects.lock().unwrap().push(Reconnect {
                end,
                to: node.clone(),
                gap,
            });
        }
        let mut here = HashSet::new();
        let server_end = loop {
            if shared.stop.load(Ordering::Relaxed) {
                break None;
            }
            if shared.bounce.lock().unwrap().remove(&u) {
                let _ = c.ws.close(None).await;
                break None;
            }
            let msg = match tokio::time::timeout(Duration::from_millis(200), c.ws.next()).await {
                Err(_) => continue,
                Ok(m) => m,
            };
            let f: Value = match msg {
                Some(Ok(Message::Text(t))) => match serde_json::from_str(&t) {
                    Ok(v) => v,
                    Err(_) => continue,
                },
                Some(Ok(Message::Close(f))) => {
                    break Some(f.map_or(CloseCode::Status.into(), |f| u16::from(f.code)))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break Some(DROPPED),
            };
            if f["type"] == "notification" {
                let id = f["id"].as_str().unwrap_or_default().to_string();
                if !here.insert(id.clone()) {
                    dups.fetch_add(1, Ordering::Relaxed);
                }
                received
                    .lock()
                    .unwrap()
                    .entry(u.clone())
                    .or_default()
                    .insert(id.clone());
                if c.ack(&id).await.is_err() {
                    break Some(DROPPED);
                }
            } else if f["type"] == "error" {
                // An ack the server could not record: reconnect, the inbox replays
                // what is still unacked.
                shared.error_frames.fetch_add(1, Ordering::Relaxed);
                break None;
            }
        };
        shared.connected.lock().unwrap().remove(&u);
        if let Some(code) = server_end {
            let end = SessionEnd {
                user: u.clone(),
                node,
                code,
                at: Instant::now(),
            };
            shared.ends.lock().unwrap().push(end.clone());
            last_end = Some(end);
        }
        tokio::time::sleep(Duration::from_millis(50 + (pick as u64 % 100))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_namespace_deletes_odd_keys_and_only_its_own() -> Result<()> {
        let (url, ns, other) = (redis_url(), random_namespace(), random_namespace());
        // Split naively on the space, the first key would name the neighbour.
        let neighbour = format!("kurir:{other}:presence:{{b}}");
        let odd = [
            format!("kurir:{ns}:presence:{{a {neighbour}"),
            format!("kurir:{ns}:inbox:{{q\"uo\\te}}"),
            format!("kurir:{ns}:idem:\u{e9}\tx"),
        ];
        for k in odd.iter().chain([&neighbour]) {
            redis_cli(&url, &["SET", k, "1"]).context("set up keys (is Redis running?)")?;
        }
        cleanup_namespace(&url, &ns);
        for k in &odd {
            assert_eq!(redis_cli(&url, &["EXISTS", k])?, "0", "{k:?} left behind");
        }
        assert_eq!(
            redis_cli(&url, &["EXISTS", &neighbour])?,
            "1",
            "neighbour deleted"
        );
        cleanup_namespace(&url, &other);
        Ok(())
    }
}
