//! What the load goes to: a Kurir cluster this tool starts (`--spawn-cluster`: one
//! dispatcher and N gateways from a binary directory, a random namespace, loopback
//! ports), an existing one (`--gateway`, `--dispatcher`), or the Socket.IO peer
//! (`peer.rs`). Processes we start are stopped by PID at the end: SIGTERM (gateways
//! drain and remove their presence), then SIGKILL after a grace period.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::procs::{Role, Watched};

/// A process this tool started; stopped (by PID) on drop.
pub struct Spawned {
    pub name: String,
    pub role: Role,
    child: Child,
}

impl Spawned {
    pub fn spawn(name: &str, role: Role, mut cmd: Command, log_dir: &Path) -> Result<Self> {
        cmd.stdin(Stdio::null());
        Self::spawn_piped(name, role, cmd, log_dir)
    }

    /// Like `spawn`, keeping whatever stdin `cmd` was given (e.g. a pipe).
    pub fn spawn_piped(name: &str, role: Role, mut cmd: Command, log_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(log_dir)?;
        let log = std::fs::File::create(log_dir.join(format!("{name}.log")))?;
        cmd.stdout(Stdio::null()).stderr(log);
        let child = cmd.spawn().with_context(|| format!("spawn {name}"))?;
        Ok(Self {
            name: name.into(),
            role,
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn watched(&self) -> Watched {
        Watched {
            name: self.name.clone(),
            pid: self.pid(),
            role: self.role,
        }
    }

    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(s)) => Some(s.to_string()),
            Err(e) => Some(e.to_string()),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Long enough for a drain (KURIR_DRAIN_SECONDS=1) even under a profiler.
        let _ = crate::procs::terminate(&mut self.child, Duration::from_secs(15));
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Poll until a TCP connect to `addr` succeeds.
pub async fn wait_port(addr: SocketAddr, within: Duration, what: &str) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} not listening on {addr} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET path` → status code.
pub async fn http_status(addr: SocketAddr, path: &str) -> Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await??;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("bad HTTP reply")
}

/// Where the load goes.
#[derive(Default)]
pub struct Targets {
    /// WebSocket endpoints (host:port).
    pub gateways: Vec<SocketAddr>,
    /// gRPC endpoint of the dispatcher (`http://…`), Kurir only.
    pub dispatcher: Option<String>,
    pub api_key: String,
    pub jwt_secret: String,
    pub namespace: String,
    /// Processes whose CPU and RSS are measured.
    pub watched: Vec<Watched>,
    /// Processes we started (stopped on drop, gateways first).
    pub spawned: Vec<Spawned>,
}

impl Targets {
    /// Stop what we started: gateways and servers first (they drain), then the rest.
    pub fn shutdown(&mut self) {
        let (first, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.spawned)
            .into_iter()
            .partition(|s| matches!(s.role, Role::Gateway | Role::PeerServer));
        drop(first);
        drop(rest);
    }

    /// Fail fast if a spawned server died (the emitter ends with its sender).
    pub fn check_alive(&mut self) -> Result<()> {
        for s in self
            .spawned
            .iter_mut()
            .filter(|s| s.role != Role::PeerEmitter)
        {
            if let Some(status) = s.exited() {
                bail!(
                    "{} (pid {}) exited ({status}); see its log",
                    s.name,
                    s.pid()
                );
            }
        }
        Ok(())
    }
}

/// Options for `--spawn-cluster`.
pub struct SpawnOptions {
    pub gateways: usize,
    pub bin_dir: PathBuf,
    pub nats_url: String,
    pub redis_url: String,
    pub log_dir: PathBuf,
    /// Extra environment for every gateway (e.g. `KURIR_OUTBOUND_QUEUE`).
    pub gateway_env: Vec<(String, String)>,
    /// Extra environment for the dispatcher.
    pub dispatcher_env: Vec<(String, String)>,
}

/// Start 1 dispatcher + N gateways in a random namespace.
pub async fn spawn_kurir(opts: &SpawnOptions) -> Result<Targets> {
    let namespace = format!("lt-{:016x}", rand::random::<u64>());
    let api_key = format!("lt-key-{:032x}", rand::random::<u128>());
    let jwt_secret = format!("lt-secret-{:032x}", rand::random::<u128>());
    // One log directory per run: later runs never overwrite an earlier run's logs.
    let log_dir = opts.log_dir.join(&namespace);
    let mut t = Targets {
        namespace: namespace.clone(),
        api_key: api_key.clone(),
        jwt_secret: jwt_secret.clone(),
        ..Targets::default()
    };
    let bin = |name: &str| -> Result<PathBuf> {
        let p = opts.bin_dir.join(name);
        if !p.exists() {
            bail!("{} not found; build it (cargo build --release -p kurir-gateway -p kurir-dispatcher) or pass --bin-dir", p.display());
        }
        Ok(p)
    };
    let common = |cmd: &mut Command| {
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("KURIR_LOADTEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("KURIR_NAMESPACE", &namespace)
            .env("KURIR_NATS_URL", &opts.nats_url)
            .env("KURIR_REDIS_URL", &opts.redis_url);
    };
    let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mut cmd = Command::new(bin("kurir-dispatcher")?);
    common(&mut cmd);
    cmd.env("KURIR_GRPC_LISTEN", grpc.to_string())
        .env(
            "KURIR_METRICS_LISTEN",
            format!("127.0.0.1:{}", free_port()?),
        )
        .env("KURIR_API_KEYS", &api_key);
    for (k, v) in &opts.dispatcher_env {
        cmd.env(k, v);
    }
    t.spawned.push(Spawned::spawn(
        "dispatcher",
        Role::Dispatcher,
        cmd,
        &log_dir,
    )?);
    let mut gateway_addrs = Vec::new();
    for i in 0..opts.gateways {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut cmd = Command::new(bin("kurir-gateway")?);
        common(&mut cmd);
        cmd.env("KURIR_NODE_ID", format!("{namespace}-gw{i}"))
            .env("KURIR_LISTEN", listen.to_string())
            .env(
                "KURIR_METRICS_LISTEN",
                format!("127.0.0.1:{}", free_port()?),
            )
            .env("KURIR_JWT_SECRET", &jwt_secret)
            .env("KURIR_MAX_CONNECTIONS", "1000000")
            .env("KURIR_DRAIN_SECONDS", "1");
        for (k, v) in &opts.gateway_env {
            cmd.env(k, v);
        }
        t.spawned.push(Spawned::spawn(
            &format!("gateway-{i}"),
            Role::Gateway,
            cmd,
            &log_dir,
        )?);
        gateway_addrs.push(listen);
    }
    wait_port(grpc, Duration::from_secs(30), "dispatcher").await?;
    for (i, addr) in gateway_addrs.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if matches!(http_status(*addr, "/readyz").await, Ok(200)) {
                break;
            }
            t.check_alive()?;
            if Instant::now() > deadline {
                bail!("gateway-{i} at {addr} not ready within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    t.gateways = gateway_addrs;
    t.dispatcher = Some(format!("http://{grpc}"));
    t.watched = t.spawned.iter().map(Spawned::watched).collect();
    Ok(t)
}

/// `ws://127.0.0.1:8080/ws` (or `127.0.0.1:8080`) → the socket address.
pub fn parse_gateway_url(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport
        .parse()
        .with_context(|| format!("gateway {url:?}: expected ws://IP:PORT/ws on loopback"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls() {
        assert_eq!(
            parse_gateway_url("ws://127.0.0.1:8080/ws").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            parse_gateway_url("localhost:9").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert!(parse_gateway_url("ws://example.com/ws").is_err());
    }
}
