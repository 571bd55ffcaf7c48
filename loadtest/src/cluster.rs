//! What the load goes to: a Kurir cluster this tool starts (`--spawn-cluster`: one
//! dispatcher and N gateways from a binary directory, a random namespace, loopback
//! ports), an existing one (`--gateway`, `--dispatcher`), or the Socket.IO peer
//! (`peer.rs`). Processes we start are stopped by PID at the end: SIGTERM (gateways
//! drain and remove their presence), then SIGKILL after a grace period.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kurir_testkit::ports::free_addr;
use kurir_testkit::process::clean_command;
use kurir_testkit::Process;

use crate::procs::{Role, Watched};

/// Long enough for a drain (KURIR_DRAIN_SECONDS=1) even under a profiler.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// A process this tool started, with the role its CPU and memory are summed under;
/// stopped by PID on drop (SIGTERM, SIGKILL after [`STOP_GRACE`]).
pub struct Spawned {
    pub role: Role,
    pub process: Process,
}

impl Spawned {
    /// Start `cmd` with stdin closed, stderr to `log_dir/<name>.log`.
    pub fn spawn(name: &str, role: Role, cmd: Command, log_dir: &Path) -> Result<Self> {
        Ok(Self {
            role,
            process: Process::launch(name, cmd, log_dir)?.terminate_on_drop(STOP_GRACE),
        })
    }

    /// Like `spawn`, keeping whatever stdin `cmd` was given (e.g. a pipe).
    pub fn spawn_piped(name: &str, role: Role, cmd: Command, log_dir: &Path) -> Result<Self> {
        Ok(Self {
            role,
            process: Process::launch_keeping_stdin(name, cmd, log_dir)?
                .terminate_on_drop(STOP_GRACE),
        })
    }

    pub fn name(&self) -> &str {
        self.process.name()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn watched(&self) -> Watched {
        Watched {
            name: self.name().to_owned(),
            pid: self.pid(),
            role: self.role,
        }
    }

    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.process.take_stdin()
    }
}

/// Where the load goes.
#[derive(Default)]
pub struct Targets {
    /// WebSocket endpoints (host:port).
    pub gateways: Vec<SocketAddr>,
    /// The gateways' MQTT listeners (spawned clusters only), in the same order.
    pub mqtt: Vec<SocketAddr>,
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
            s.process.check_alive()?;
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
    let level = std::env::var("KURIR_LOADTEST_SERVER_LOG").unwrap_or_else(|_| "warn".into());
    let command = |binary: PathBuf| {
        let mut cmd = clean_command(binary, &level);
        cmd.env("KURIR_NAMESPACE", &namespace)
            .env("KURIR_NATS_URL", &opts.nats_url)
            .env("KURIR_REDIS_URL", &opts.redis_url);
        cmd
    };
    let grpc = free_addr();
    let mut cmd = command(bin("kurir-dispatcher")?);
    cmd.env("KURIR_GRPC_LISTEN", grpc.to_string())
        .env("KURIR_METRICS_LISTEN", free_addr().to_string())
        .env("KURIR_API_KEYS", &api_key)
        .envs(opts.dispatcher_env.iter().map(|(k, v)| (k, v)));
    t.spawned.push(Spawned::spawn(
        "dispatcher",
        Role::Dispatcher,
        cmd,
        &log_dir,
    )?);
    let mut gateway_addrs = Vec::new();
    for i in 0..opts.gateways {
        let listen = free_addr();
        let mqtt = free_addr();
        let mut cmd = command(bin("kurir-gateway")?);
        cmd.env("KURIR_NODE_ID", format!("{namespace}-gw{i}"))
            .env("KURIR_LISTEN", listen.to_string())
            .env("KURIR_MQTT_LISTEN", mqtt.to_string())
            .env("KURIR_METRICS_LISTEN", free_addr().to_string())
            .env("KURIR_JWT_SECRET", &jwt_secret)
            .env("KURIR_MAX_CONNECTIONS", "1000000")
            .env("KURIR_DRAIN_SECONDS", "1")
            .envs(opts.gateway_env.iter().map(|(k, v)| (k, v)));
        t.spawned.push(Spawned::spawn(
            &format!("gateway-{i}"),
            Role::Gateway,
            cmd,
            &log_dir,
        )?);
        gateway_addrs.push(listen);
        t.mqtt.push(mqtt);
    }
    let ready = Duration::from_secs(30);
    t.spawned[0].process.wait_listening(grpc, ready).await?;
    for (s, addr) in t.spawned[1..].iter_mut().zip(&gateway_addrs) {
        s.process.wait_http_ok(*addr, "/readyz", ready).await?;
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
