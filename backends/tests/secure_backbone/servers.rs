//! The private servers of the secured-backbone tests and the options that reach them:
//! `nats-server` and `redis-server` requiring TLS with client certificates and
//! passwords, the test PKI, and a contract factory over the secured connections.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kurir_backends::bus::Bus;
use kurir_backends::contract::Factory;
use kurir_backends::devices::DeviceStore;
use kurir_backends::due::DueQueue;
use kurir_backends::inbox::Inbox;
use kurir_backends::presence::PresenceStore;
use kurir_backends::{BackboneSecurity, Backends, ConnectOptions, Namespace};
use kurir_testkit::certs::{tempdir, BackbonePki, TempDir};
use kurir_testkit::faults::find_program;
use kurir_testkit::{eventually, free_port, Process};

use super::{KURIR_REDIS_ACL, PASSWORD, PASSWORD_ENCODED};

pub fn nats_server() -> Option<PathBuf> {
    find_program(
        "nats-server",
        &[
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ],
    )
}

fn have(binary: &str) -> bool {
    Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Whether the servers and tools are installed; when not, the test says so and skips.
pub fn servers_installed() -> bool {
    let missing: Vec<&str> = [
        ("nats-server", nats_server().is_some()),
        ("redis-server", have("redis-server")),
    ]
    .into_iter()
    .filter_map(|(name, ok)| (!ok).then_some(name))
    .collect();
    if missing.is_empty() {
        return true;
    }
    eprintln!(
        "SKIPPED: {} not installed (apt-get install nats-server redis-server)",
        missing.join(", ")
    );
    false
}

/// A test PKI (see [`BackbonePki`]) in a scratch directory removed on drop.
pub struct Pki {
    _dir: TempDir,
    files: BackbonePki,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempdir().expect("scratch directory");
        Self {
            files: BackbonePki::write(dir.path()),
            _dir: dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.files.path(name)
    }
}

/// A server process, killed by PID on drop (before its directory goes).
pub struct Server {
    _proc: Process,
    pub port: u16,
    _dir: TempDir,
}

impl Server {
    /// Start `cmd` with its log in `dir` and wait until it listens on `port`.
    async fn start(what: &str, cmd: Command, dir: TempDir, port: u16) -> Self {
        let mut proc = Process::launch(what, cmd, dir.path()).expect(what);
        proc.wait_listening(([127, 0, 0, 1], port).into(), Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            _proc: proc,
            port,
            _dir: dir,
        }
    }
}

/// nats-server with `conf` (the `listen` line is added), its logs on stderr.
pub async fn start_nats(conf: &str) -> Server {
    let dir = tempdir().expect("scratch directory");
    let port = free_port();
    let path = dir.path().join("nats.conf");
    std::fs::write(&path, format!("listen: \"127.0.0.1:{port}\"\n{conf}")).unwrap();
    let mut cmd = Command::new(nats_server().unwrap());
    cmd.arg("-c").arg(&path);
    Server::start("nats-server", cmd, dir, port).await
}

/// NATS that requires TLS with a client certificate and a user with [`PASSWORD`].
pub async fn start_secure_nats(pki: &Pki) -> Server {
    start_nats(&format!(
        r#"
tls {{
  cert_file: "{}"
  key_file: "{}"
  ca_file: "{}"
  verify: true
  timeout: 2
}}
authorization {{
  users = [ {{ user: "kurir", password: "{PASSWORD}" }} ]
}}
"#,
        pki.path("server.pem").display(),
        pki.path("server.key").display(),
        pki.path("ca.pem").display(),
    ))
    .await
}

/// Redis on TLS only (`--port 0`), client certificates required, the default user off
/// and user `kurir` with [`PASSWORD`] and [`KURIR_REDIS_ACL`].
pub async fn start_secure_redis(pki: &Pki) -> Server {
    let dir = tempdir().expect("scratch directory");
    let port = free_port();
    let mut user = vec!["kurir", "on"];
    let password = format!(">{PASSWORD}");
    user.push(&password);
    user.extend(KURIR_REDIS_ACL.split(' '));
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .arg("--tls-cert-file")
    .arg(pki.path("server.pem"))
    .arg("--tls-key-file")
    .arg(pki.path("server.key"))
    .arg("--tls-ca-cert-file")
    .arg(pki.path("ca.pem"))
    .args(["--tls-auth-clients", "yes"])
    .args(["--save", "", "--appendonly", "no"])
    .args(["--user", "default", "off"])
    .arg("--user")
    .args(&user)
    .current_dir(dir.path());
    Server::start("redis-server (built with TLS?)", cmd, dir, port).await
}

/// Client certificate and CA of `pki` for both hops.
pub fn security(pki: &Pki, ca: &str) -> BackboneSecurity {
    BackboneSecurity {
        nats_creds: None,
        nats_ca: Some(pki.path(ca)),
        nats_client_cert: Some(pki.path("client.pem")),
        nats_client_key: Some(pki.path("client.key")),
        redis_ca: Some(pki.path(ca)),
        redis_client_cert: Some(pki.path("client.pem")),
        redis_client_key: Some(pki.path("client.key")),
    }
}

/// Secure options on `nats`/`redis`: the NATS URL with the password raw (read up to the
/// last `@`), the Redis URL with it percent-encoded.
pub fn secure_options(ns: Namespace, pki: &Pki, nats: &Server, redis: &Server) -> ConnectOptions {
    let mut opts = ConnectOptions::new(
        ns,
        &format!("tls://kurir:{PASSWORD}@127.0.0.1:{}", nats.port),
        &format!("rediss://kurir:{PASSWORD_ENCODED}@127.0.0.1:{}", redis.port),
    );
    opts.client_name = "kurir-secure-test".into();
    opts.security = security(pki, "ca.pem");
    opts
}

/// Contract factory over the secured servers.
pub struct SecureFactory {
    pub ns: Namespace,
    pub opts: ConnectOptions,
}

impl SecureFactory {
    async fn connect(&self, opts: &ConnectOptions) -> Backends {
        Backends::connect(opts)
            .await
            .expect("secure options refused")
    }
}

#[async_trait]
impl Factory for SecureFactory {
    fn namespace(&self) -> &Namespace {
        &self.ns
    }

    async fn bus(&self) -> Arc<dyn Bus> {
        let bus = self.connect(&self.opts).await.bus;
        eventually(
            Duration::from_secs(10),
            "the secured NATS connection",
            || {
                let up = bus.is_connected();
                async move { up.then_some(()) }
            },
        )
        .await;
        bus
    }

    async fn presence(&self, entry_ttl: Duration) -> Arc<dyn PresenceStore> {
        let mut opts = self.opts.clone();
        opts.presence_ttl = entry_ttl;
        self.connect(&opts).await.presence
    }

    async fn inbox(&self, capacity: usize) -> Arc<dyn Inbox> {
        let mut opts = self.opts.clone();
        opts.inbox_capacity = capacity;
        self.connect(&opts).await.inbox
    }
    async fn devices(&self, capacity: usize, ttl: Duration) -> Arc<dyn DeviceStore> {
        let mut opts = self.opts.clone();
        opts.device_capacity = capacity;
        opts.device_ttl = ttl;
        self.connect(&opts).await.devices
    }

    async fn due(&self) -> Arc<dyn DueQueue> {
        self.connect(&self.opts).await.due
    }
}
