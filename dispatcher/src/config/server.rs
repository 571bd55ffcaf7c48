//! The server's settings: every flag and `KURIR_*` variable of `kurir-dispatcher`, their
//! defaults, and the values derived from them. [`super::check`] says which combinations
//! it refuses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use kurir_backends::{BackendSettings, ConnectOptions, Namespace, Secret};
use kurir_runtime::LogFormat;

pub use kurir_backends::settings::DEFAULT_BACKEND_TIMEOUT_MS;
/// Default of `KURIR_INBOX_CAPACITY`.
pub use kurir_backends::DEFAULT_INBOX_CAPACITY;

/// The API key [`Config::for_test`] accepts.
pub const TEST_API_KEY: &str = "test-api-key-0123456789abcdef0123456789";

/// How the dispatcher names itself to NATS and Redis (`CLIENT LIST`, NATS monitoring).
const CLIENT_NAME: &str = "kurir-dispatcher";

/// Default of `KURIR_MAX_IN_FLIGHT`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default of `KURIR_REQUEST_TIMEOUT_MS`.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Default of `KURIR_MAX_WATCHERS`.
pub const DEFAULT_MAX_WATCHERS: usize = 64;
/// Default of `KURIR_WATCH_BUFFER`.
pub const DEFAULT_WATCH_BUFFER: usize = 1024;
/// Default of `KURIR_READINESS_INTERVAL_MS`.
pub const DEFAULT_READINESS_INTERVAL_MS: u64 = 2_000;
/// Default of `KURIR_SHUTDOWN_GRACE_MS`.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;

/// Default of `KURIR_GRPC_MAX_CONCURRENT_STREAMS`.
pub const DEFAULT_GRPC_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Default of `KURIR_GRPC_KEEPALIVE_MS`.
pub const DEFAULT_GRPC_KEEPALIVE_MS: u64 = 30_000;
/// Default of `KURIR_GRPC_KEEPALIVE_TIMEOUT_MS`.
pub const DEFAULT_GRPC_KEEPALIVE_TIMEOUT_MS: u64 = 10_000;
/// Default of `KURIR_GRPC_TCP_KEEPALIVE_MS`.
pub const DEFAULT_GRPC_TCP_KEEPALIVE_MS: u64 = 60_000;
/// Default of `KURIR_GRPC_MAX_MESSAGE_BYTES`: 4 MiB, three times the largest valid `Send`
/// ([`MAX_SEND_REQUEST_BYTES`](crate::limits::MAX_SEND_REQUEST_BYTES)).
pub const DEFAULT_GRPC_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Default of `KURIR_GRPC_MAX_CONNECTION_AGE_GRACE_MS`.
pub const DEFAULT_GRPC_MAX_CONNECTION_AGE_GRACE_MS: u64 = 60_000;
/// Shortest API key accepted: 32 bytes, as for HS256 secrets.
pub const MIN_API_KEY_BYTES: usize = 32;
/// Default of `KURIR_DUE_POLL_MS`.
pub const DEFAULT_DUE_POLL_MS: u64 = 200;
/// Default of `KURIR_DUE_LEASE_MS`: longer than one item's pushes with their retries.
pub const DEFAULT_DUE_LEASE_MS: u64 = 90_000;
/// Default of `KURIR_DUE_BATCH`.
pub const DEFAULT_DUE_BATCH: usize = 64;
/// Default of `KURIR_TLS_RELOAD_INTERVAL_MS`.
pub const DEFAULT_TLS_RELOAD_INTERVAL_MS: u64 = 5_000;

/// Where the dispatcher listens, what it connects to and its limits.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Namespace, NATS, Redis (with credentials and TLS), the inbox capacity and the
    /// backend command timeout: the settings every Kurir server shares.
    #[command(flatten)]
    pub backends: BackendSettings,

    /// The gRPC API (`kurir.v1.Dispatcher`, `grpc.health.v1.Health`, reflection).
    #[arg(long, env = "KURIR_GRPC_LISTEN", default_value = "0.0.0.0:50051")]
    pub grpc_listen: SocketAddr,

    /// `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "KURIR_METRICS_LISTEN", default_value = "0.0.0.0:9101")]
    pub metrics_listen: SocketAddr,

    /// API keys accepted as `authorization: Bearer <key>` gRPC metadata, comma-separated;
    /// each at least 32 bytes of visible ASCII (e.g. `openssl rand -hex 32`).
    #[arg(
        long,
        env = "KURIR_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<Secret>,

    /// Accept calls without an API key (they share one idempotency scope). Refused
    /// together with KURIR_API_KEYS; without
    /// either the dispatcher does not start.
    #[arg(long, env = "KURIR_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// Unary calls served at once; beyond that calls fail fast with RESOURCE_EXHAUSTED
    /// (load shedding) instead of queueing.
    #[arg(long, env = "KURIR_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,

    /// Longest a unary call may take before it fails with DEADLINE_EXCEEDED.
    #[arg(long, env = "KURIR_REQUEST_TIMEOUT_MS", default_value_t = DEFAULT_REQUEST_TIMEOUT_MS)]
    pub request_timeout_ms: u64,

    /// WatchReceipts streams open at once; beyond that they fail with RESOURCE_EXHAUSTED.
    #[arg(long, env = "KURIR_MAX_WATCHERS", default_value_t = DEFAULT_MAX_WATCHERS)]
    pub max_watchers: usize,

    /// Receipts buffered per WatchReceipts stream; a watcher that lets it fill is ended
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, env = "KURIR_WATCH_BUFFER", default_value_t = DEFAULT_WATCH_BUFFER)]
    pub watch_buffer: usize,

    /// How often `/readyz` probes Redis (a presence lookup); it turns unready after three
    /// intervals without a success.
    #[arg(long, env = "KURIR_READINESS_INTERVAL_MS", default_value_t = DEFAULT_READINESS_INTERVAL_MS)]
    pub readiness_interval_ms: u64,

    /// On SIGTERM, how long in-flight calls may take to finish before the process exits.
    #[arg(long, env = "KURIR_SHUTDOWN_GRACE_MS", default_value_t = DEFAULT_SHUTDOWN_GRACE_MS)]
    pub shutdown_grace_ms: u64,

    /// Concurrent calls (HTTP/2 streams) one gRPC connection may have open; a client
    /// opening more waits for one to end. Bounds what one connection can hold.
    #[arg(long, env = "KURIR_GRPC_MAX_CONCURRENT_STREAMS", default_value_t = DEFAULT_GRPC_MAX_CONCURRENT_STREAMS)]
    pub grpc_max_concurrent_streams: u32,

    /// How long a gRPC connection may stay silent before the server pings it (HTTP/2
    /// PING); 0 = never. Finds peers that vanished without closing.
    #[arg(long, env = "KURIR_GRPC_KEEPALIVE_MS", default_value_t = DEFAULT_GRPC_KEEPALIVE_MS)]
    pub grpc_keepalive_ms: u64,

    /// How long a keepalive ping may go unanswered before the connection is closed.
    #[arg(long, env = "KURIR_GRPC_KEEPALIVE_TIMEOUT_MS", default_value_t = DEFAULT_GRPC_KEEPALIVE_TIMEOUT_MS)]
    pub grpc_keepalive_timeout_ms: u64,

    /// TCP keepalive idle time on accepted gRPC connections; 0 = off.
    #[arg(long, env = "KURIR_GRPC_TCP_KEEPALIVE_MS", default_value_t = DEFAULT_GRPC_TCP_KEEPALIVE_MS)]
    pub grpc_tcp_keepalive_ms: u64,

    /// Largest request message decoded; larger ones fail with OUT_OF_RANGE before they
    /// are buffered. At least the largest valid Send (10000 user ids of 128 bytes).
    #[arg(long, env = "KURIR_GRPC_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_GRPC_MAX_MESSAGE_BYTES)]
    pub grpc_max_message_bytes: usize,

    /// Age after which a gRPC connection is asked to go away (GOAWAY), so clients
    /// spread over new replicas; 0 = never. Calls in flight may finish within the grace.
    #[arg(long, env = "KURIR_GRPC_MAX_CONNECTION_AGE_MS", default_value_t = 0)]
    pub grpc_max_connection_age_ms: u64,

    /// After KURIR_GRPC_MAX_CONNECTION_AGE_MS, how long calls still open (e.g. a
    /// WatchReceipts stream) may take before the connection is closed.
    #[arg(long, env = "KURIR_GRPC_MAX_CONNECTION_AGE_GRACE_MS", default_value_t = DEFAULT_GRPC_MAX_CONNECTION_AGE_GRACE_MS)]
    pub grpc_max_connection_age_grace_ms: u64,

    /// Serve gRPC reflection (`grpcurl` without the .proto files); `false` leaves the
    /// reflection service unregistered. Health is served either way.
    #[arg(
        long,
        env = "KURIR_GRPC_REFLECTION",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub grpc_reflection: bool,

    /// Log format on stderr; `RUST_LOG` filters (default `info`).
    #[arg(long, env = "KURIR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Runtime worker threads; 0 = one per CPU this process may use (cgroup quota and
    /// affinity included). Where the process gets about one CPU, 1 saves the cost of
    /// waking a second thread for every request.
    #[arg(long, env = "KURIR_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,

    /// Development mode: everything in this one process, with in-memory backends (no
    /// Redis or NATS), an embedded gateway on `KURIR_LISTEN` (default 0.0.0.0:8080) with
    /// the demo page and `GET /dev/token`, and printed development credentials. Not for
    /// production: nothing survives a restart.
    #[arg(long, env = "KURIR_STANDALONE")]
    pub standalone: bool,

    /// In the development node (`kurir`): publish the server time to topic `demo` this
    /// often (`5s`).
    #[arg(long, env = "KURIR_DEMO_INTERVAL", value_parser = humantime::parse_duration)]
    pub demo_interval: Option<Duration>,

    /// PEM certificate chain (leaf first): with `KURIR_TLS_KEY`, gRPC is served over TLS
    /// (ALPN h2). Reloaded when the file changes or on SIGHUP.
    #[arg(long, env = "KURIR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `KURIR_TLS_CERT` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "KURIR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): clients must present a certificate signed by one (mTLS),
    /// and a call over such a connection needs no API key.
    #[arg(long, env = "KURIR_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// How often the TLS files are checked for changes, in milliseconds.
    #[arg(long, env = "KURIR_TLS_RELOAD_INTERVAL_MS", default_value_t = DEFAULT_TLS_RELOAD_INTERVAL_MS)]
    pub tls_reload_interval_ms: u64,

    /// The push services (Web Push, FCM, APNs) that `Send.fallback` pushes through.
    #[command(flatten)]
    pub push: kurir_push::PushSettings,

    /// How often the due-queue (scheduled sends, push fallbacks) is polled when nothing
    /// is due sooner, in milliseconds: the worst lateness of a due item.
    #[arg(long, env = "KURIR_DUE_POLL_MS", default_value_t = DEFAULT_DUE_POLL_MS)]
    pub due_poll_ms: u64,

    /// How long a dispatcher holds a due item it claimed, in milliseconds; if it dies
    /// meanwhile, another takes the item over after this.
    #[arg(long, env = "KURIR_DUE_LEASE_MS", default_value_t = DEFAULT_DUE_LEASE_MS)]
    pub due_lease_ms: u64,

    /// Due items a dispatcher claims and works on at once.
    #[arg(long, env = "KURIR_DUE_BATCH", default_value_t = DEFAULT_DUE_BATCH)]
    pub due_batch: usize,
}

impl Config {
    /// A config for in-process tests: both listeners on `127.0.0.1:0`, [`TEST_API_KEY`],
    /// local NATS and Redis URLs, every limit at its default. Reads no environment.
    pub fn for_test(namespace: Namespace) -> Self {
        Self {
            backends: BackendSettings::for_test(namespace),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_keys: vec![Secret::from(TEST_API_KEY)],
            insecure_no_auth: false,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            max_watchers: DEFAULT_MAX_WATCHERS,
            watch_buffer: DEFAULT_WATCH_BUFFER,
            readiness_interval_ms: DEFAULT_READINESS_INTERVAL_MS,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            grpc_max_concurrent_streams: DEFAULT_GRPC_MAX_CONCURRENT_STREAMS,
            grpc_keepalive_ms: DEFAULT_GRPC_KEEPALIVE_MS,
            grpc_keepalive_timeout_ms: DEFAULT_GRPC_KEEPALIVE_TIMEOUT_MS,
            grpc_tcp_keepalive_ms: DEFAULT_GRPC_TCP_KEEPALIVE_MS,
            grpc_max_message_bytes: DEFAULT_GRPC_MAX_MESSAGE_BYTES,
            grpc_max_connection_age_ms: 0,
            grpc_max_connection_age_grace_ms: DEFAULT_GRPC_MAX_CONNECTION_AGE_GRACE_MS,
            grpc_reflection: true,
            log_format: LogFormat::Text,
            worker_threads: 0,
            standalone: false,
            demo_interval: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_reload_interval_ms: DEFAULT_TLS_RELOAD_INTERVAL_MS,
            push: kurir_push::PushSettings::for_test(),
            due_poll_ms: DEFAULT_DUE_POLL_MS,
            due_lease_ms: DEFAULT_DUE_LEASE_MS,
            due_batch: DEFAULT_DUE_BATCH,
        }
    }

    /// The TLS files, when gRPC is served over TLS (after `validate`).
    pub fn tls_files(&self) -> Option<kurir_tls::TlsFiles> {
        Some(kurir_tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    pub fn tls_reload_interval(&self) -> Duration {
        Duration::from_millis(self.tls_reload_interval_ms)
    }

    /// How [`kurir_backends::Backends::connect`] reaches NATS and Redis.
    pub fn connect_options(&self) -> ConnectOptions {
        self.backends.connect_options(CLIENT_NAME)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn backend_timeout(&self) -> Duration {
        self.backends.backend_timeout()
    }

    pub fn readiness_interval(&self) -> Duration {
        Duration::from_millis(self.readiness_interval_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// `None` for 0 (off).
    fn optional_ms(ms: u64) -> Option<Duration> {
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    pub fn grpc_keepalive(&self) -> Option<Duration> {
        Self::optional_ms(self.grpc_keepalive_ms)
    }

    pub fn grpc_keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.grpc_keepalive_timeout_ms)
    }

    pub fn grpc_tcp_keepalive(&self) -> Option<Duration> {
        Self::optional_ms(self.grpc_tcp_keepalive_ms)
    }

    pub fn grpc_max_connection_age(&self) -> Option<Duration> {
        Self::optional_ms(self.grpc_max_connection_age_ms)
    }

    pub fn due_poll(&self) -> Duration {
        Duration::from_millis(self.due_poll_ms)
    }

    pub fn due_lease(&self) -> Duration {
        Duration::from_millis(self.due_lease_ms)
    }

    pub fn grpc_max_connection_age_grace(&self) -> Duration {
        Duration::from_millis(self.grpc_max_connection_age_grace_ms)
    }
}
