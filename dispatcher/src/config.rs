//! The server's [`Config`]: flags and `KURIR_*` environment variables, validated before
//! any port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use kurir_backends::{BackboneSecurity, ConnectOptions, Namespace};
use thiserror::Error;

/// Default of `KURIR_INBOX_CAPACITY`.
pub const DEFAULT_INBOX_CAPACITY: usize = 1000;
/// Default of `KURIR_MAX_IN_FLIGHT`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default of `KURIR_REQUEST_TIMEOUT_MS`.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Default of `KURIR_BACKEND_TIMEOUT_MS`.
pub const DEFAULT_BACKEND_TIMEOUT_MS: u64 = 2_000;
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
/// ([`crate::api::validate::MAX_SEND_REQUEST_BYTES`]).
pub const DEFAULT_GRPC_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Default of `KURIR_GRPC_MAX_CONNECTION_AGE_GRACE_MS`.
pub const DEFAULT_GRPC_MAX_CONNECTION_AGE_GRACE_MS: u64 = 60_000;
/// Shortest API key accepted: 32 bytes, as for HS256 secrets.
pub const MIN_API_KEY_BYTES: usize = 32;
/// Default of `KURIR_TLS_RELOAD_INTERVAL_MS`.
pub const DEFAULT_TLS_RELOAD_INTERVAL_MS: u64 = 5_000;

/// The API key [`Config::for_test`] accepts.
pub const TEST_API_KEY: &str = "test-api-key-0123456789abcdef0123456789";

pub use kurir_backends::{Secret, ServerUrl};

/// Where the dispatcher listens, what it connects to and its limits.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Prefix of every Redis key and NATS subject (tenancy, test isolation).
    #[arg(long, env = "KURIR_NAMESPACE", default_value = "default", value_parser = parse_namespace)]
    pub namespace: Namespace,

    /// NATS server(s), comma-separated.
    #[arg(long, env = "KURIR_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: ServerUrl,

    /// Redis URL (`redis://`, `rediss://` or `redis-cluster://h:p,h:p`).
    #[arg(
        long,
        env = "KURIR_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: ServerUrl,

    /// Credentials and TLS files of the NATS and Redis connections.
    #[command(flatten)]
    pub backbone: BackboneSecurity,

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

    /// Entries each user's inbox keeps (oldest trimmed first).
    #[arg(long, env = "KURIR_INBOX_CAPACITY", default_value_t = DEFAULT_INBOX_CAPACITY)]
    pub inbox_capacity: usize,

    /// Unary calls served at once; beyond that calls fail fast with RESOURCE_EXHAUSTED
    /// (load shedding) instead of queueing.
    #[arg(long, env = "KURIR_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,

    /// Longest a unary call may take before it fails with DEADLINE_EXCEEDED.
    #[arg(long, env = "KURIR_REQUEST_TIMEOUT_MS", default_value_t = DEFAULT_REQUEST_TIMEOUT_MS)]
    pub request_timeout_ms: u64,

    /// Timeout of one Redis command (and of the NATS flush at shutdown).
    #[arg(long, env = "KURIR_BACKEND_TIMEOUT_MS", default_value_t = DEFAULT_BACKEND_TIMEOUT_MS)]
    pub backend_timeout_ms: u64,

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

    /// Deprecated alias of the `kurir` command (a development node in one process):
    /// prints a note and runs the `kurir` binary found beside this one, with the same
    /// arguments and environment. Kept for one release.
    #[arg(long, env = "KURIR_STANDALONE")]
    pub standalone: bool,

    /// Development node only (`kurir`): publish the server time to topic `demo` this
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A configuration the dispatcher refuses to start with.
#[derive(Debug, Error)]
#[error("{setting}: {reason}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub reason: String,
}

fn config_error(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        reason: reason.into(),
    }
}

impl Config {
    /// Everything `bind` and `serve` rely on, checked before a port is bound.
    ///
    /// # Errors
    /// The first setting that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.demo_interval {
            Some(_) if !self.standalone => {
                return Err(config_error("--demo-interval", "needs --standalone"))
            }
            Some(d) if d < Duration::from_millis(100) => {
                return Err(config_error("--demo-interval", "must be at least 100ms"))
            }
            _ => {}
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(config_error(
                    "KURIR_TLS_KEY",
                    "must be set with KURIR_TLS_CERT",
                ))
            }
            (None, Some(_)) => {
                return Err(config_error(
                    "KURIR_TLS_CERT",
                    "must be set with KURIR_TLS_KEY",
                ))
            }
            (None, None) if self.tls_client_ca.is_some() => return Err(config_error(
                "KURIR_TLS_CLIENT_CA",
                "needs KURIR_TLS_CERT and KURIR_TLS_KEY (client certificates are a TLS feature)",
            )),
            _ => {}
        }
        if self.tls_reload_interval_ms == 0 {
            return Err(config_error(
                "KURIR_TLS_RELOAD_INTERVAL_MS",
                "must be greater than 0",
            ));
        }
        match (self.api_keys.is_empty(), self.insecure_no_auth) {
            // `--standalone` generates a development key when none is given; with a client
            // CA, client certificates authenticate callers.
            (true, false) if !self.standalone && self.tls_client_ca.is_none() => {
                return Err(config_error(
                    "KURIR_API_KEYS",
                    "no API key configured; set KURIR_API_KEYS or pass --insecure-no-auth",
                ))
            }
            (false, true) => {
                return Err(config_error(
                    "--insecure-no-auth",
                    "conflicts with KURIR_API_KEYS; use one or the other",
                ))
            }
            _ => {}
        }
        for key in &self.api_keys {
            let key = key.expose();
            if key.is_empty() {
                return Err(config_error(
                    "KURIR_API_KEYS",
                    "empty key (check for stray commas)",
                ));
            }
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(config_error(
                    "KURIR_API_KEYS",
                    "keys must be visible ASCII without spaces",
                ));
            }
        }
        // Checked apart so the message can say which key, by position, never by value.
        if let Some((i, key)) = self
            .api_keys
            .iter()
            .enumerate()
            .find(|(_, k)| k.expose().len() < MIN_API_KEY_BYTES)
        {
            return Err(config_error(
                "KURIR_API_KEYS",
                format!(
                    "key {} is {} bytes; keys must be at least {MIN_API_KEY_BYTES} bytes \
                     (e.g. `openssl rand -hex 32`)",
                    i + 1,
                    key.expose().len()
                ),
            ));
        }
        let positive = [
            ("KURIR_INBOX_CAPACITY", self.inbox_capacity as u64),
            ("KURIR_MAX_IN_FLIGHT", self.max_in_flight as u64),
            ("KURIR_REQUEST_TIMEOUT_MS", self.request_timeout_ms),
            ("KURIR_BACKEND_TIMEOUT_MS", self.backend_timeout_ms),
            ("KURIR_MAX_WATCHERS", self.max_watchers as u64),
            ("KURIR_WATCH_BUFFER", self.watch_buffer as u64),
            ("KURIR_READINESS_INTERVAL_MS", self.readiness_interval_ms),
            (
                "KURIR_GRPC_MAX_CONCURRENT_STREAMS",
                u64::from(self.grpc_max_concurrent_streams),
            ),
        ];
        for (setting, value) in positive {
            if value == 0 {
                return Err(config_error(setting, "must be greater than 0"));
            }
        }
        // A keyed Send holds its idempotency key pending for a fixed time: a call that
        // may run longer could outlive the claim and let a retry send twice.
        if self.request_timeout() + Duration::from_secs(1) >= crate::dispatch::PENDING_CLAIM_TTL {
            return Err(config_error(
                "KURIR_REQUEST_TIMEOUT_MS",
                "must stay below 29000 (idempotency keys are held pending for 30 s)",
            ));
        }
        // The semaphores behind both limits cap permits at `usize::MAX >> 3`.
        if self.max_in_flight > 1 << 20 || self.max_watchers > 1 << 20 {
            return Err(config_error(
                "KURIR_MAX_IN_FLIGHT",
                "limits must be at most 1048576",
            ));
        }
        if self.grpc_keepalive_ms > 0 && self.grpc_keepalive_timeout_ms == 0 {
            return Err(config_error(
                "KURIR_GRPC_KEEPALIVE_TIMEOUT_MS",
                "must be greater than 0 while KURIR_GRPC_KEEPALIVE_MS is set",
            ));
        }
        let largest_send = crate::api::validate::MAX_SEND_REQUEST_BYTES;
        if self.grpc_max_message_bytes < largest_send {
            return Err(config_error(
                "KURIR_GRPC_MAX_MESSAGE_BYTES",
                format!("must be at least {largest_send}, the largest valid Send"),
            ));
        }
        if self.nats_url.as_str().trim().is_empty() {
            return Err(config_error("KURIR_NATS_URL", "must not be empty"));
        }
        if self.redis_url.as_str().trim().is_empty() {
            return Err(config_error("KURIR_REDIS_URL", "must not be empty"));
        }
        self.backbone
            .validate()
            .map_err(|e| config_error(e.setting, e.reason))?;
        Ok(())
    }

    /// A config for in-process tests: both listeners on `127.0.0.1:0`, [`TEST_API_KEY`],
    /// local NATS and Redis URLs, every limit at its default. Reads no environment.
    pub fn for_test(namespace: Namespace) -> Self {
        Self {
            namespace,
            nats_url: "nats://127.0.0.1:4222".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            backbone: BackboneSecurity::default(),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_keys: vec![Secret::from(TEST_API_KEY)],
            insecure_no_auth: false,
            inbox_capacity: DEFAULT_INBOX_CAPACITY,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            backend_timeout_ms: DEFAULT_BACKEND_TIMEOUT_MS,
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
        let mut opts = ConnectOptions::new(
            self.namespace.clone(),
            self.nats_url.as_str(),
            self.redis_url.as_str(),
        );
        opts.client_name = "kurir-dispatcher".into();
        opts.security = self.backbone.clone();
        opts.inbox_capacity = self.inbox_capacity;
        opts.command_timeout = self.backend_timeout();
        opts
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn backend_timeout(&self) -> Duration {
        Duration::from_millis(self.backend_timeout_ms)
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

    pub fn grpc_max_connection_age_grace(&self) -> Duration {
        Duration::from_millis(self.grpc_max_connection_age_grace_ms)
    }
}

fn parse_namespace(s: &str) -> Result<Namespace, String> {
    Namespace::parse(s).map_err(|e| e.to_string())
}

/// A clap error as the one line `main` prints before exiting with `EX_USAGE`: the
/// message and its details (e.g. which arguments are missing), without the usage text.
pub fn one_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let line = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect::<Vec<_>>()
        .join(" ");
    match line.strip_prefix("error: ") {
        Some(rest) => rest.to_owned(),
        None if line.is_empty() => "invalid arguments".to_owned(),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// The server's command line, as `main` parses it.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kurir-dispatcher").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.api_keys = vec![Secret::from("hunter2-hunter2-hunter2-hunter2-hunter2")];
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("***"));
    }

    #[test]
    fn credentials_in_urls_do_not_leak_through_debug() {
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.redis_url = "redis://:hunter2@redis:6379".into();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn backbone_files_are_read_from_the_environment_names_and_checked() {
        let cli = parse(&[
            "--insecure-no-auth",
            "--nats-creds",
            "/nonexistent/kurir.creds",
        ])
        .unwrap();
        let err = cli.config.validate().unwrap_err();
        assert_eq!(err.setting, "KURIR_NATS_CREDS");
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.backbone.redis_client_cert = Some("/some/cert.pem".into());
        assert_eq!(
            config.validate().unwrap_err().setting,
            "KURIR_REDIS_CLIENT_KEY"
        );
        assert_eq!(
            config.connect_options().security,
            config.backbone,
            "connect_options passes the files on"
        );
    }

    #[test]
    fn auth_is_required_unless_explicitly_disabled() {
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.api_keys.clear();
        let err = config.validate().unwrap_err();
        assert_eq!(err.setting, "KURIR_API_KEYS");
        config.insecure_no_auth = true;
        config.validate().unwrap();
        config.api_keys = vec![Secret::from(TEST_API_KEY)];
        assert_eq!(config.validate().unwrap_err().setting, "--insecure-no-auth");
    }

    #[test]
    fn tls_settings_come_together_and_a_client_ca_replaces_api_keys() {
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.tls_cert = Some("cert.pem".into());
        assert_eq!(config.validate().unwrap_err().setting, "KURIR_TLS_KEY");
        config.tls_cert = None;
        config.tls_client_ca = Some("ca.pem".into());
        assert_eq!(
            config.validate().unwrap_err().setting,
            "KURIR_TLS_CLIENT_CA"
        );
        config.tls_cert = Some("cert.pem".into());
        config.tls_key = Some("key.pem".into());
        config.api_keys.clear();
        config.validate().unwrap();
        config.tls_client_ca = None;
        assert_eq!(config.validate().unwrap_err().setting, "KURIR_API_KEYS");
    }

    #[test]
    fn bad_keys_and_zero_limits_are_refused() {
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.api_keys = vec![Secret::from("a"), Secret::from("")];
        assert!(config.validate().is_err());
        config.api_keys = vec![Secret::from("a b")];
        assert!(config.validate().is_err());
        config.api_keys = vec![Secret::from(TEST_API_KEY)];
        config.max_in_flight = 0;
        assert_eq!(
            config.validate().unwrap_err().setting,
            "KURIR_MAX_IN_FLIGHT"
        );
    }

    #[test]
    fn api_keys_shorter_than_32_bytes_are_refused_without_showing_them() {
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        let short = "s3cr3t-but-only-31-bytes-long!!";
        assert_eq!(short.len(), 31);
        config.api_keys = vec![Secret::from(TEST_API_KEY), Secret::from(short)];
        let err = config.validate().unwrap_err();
        assert_eq!(err.setting, "KURIR_API_KEYS");
        let line = err.to_string();
        assert!(line.contains("key 2 is 31 bytes"), "{line}");
        assert!(line.contains("at least 32"), "{line}");
        assert!(!line.contains(short), "{line}");
        config.api_keys = vec![
            Secret::from(TEST_API_KEY),
            Secret::from(format!("{short}!")),
        ];
        config.validate().unwrap();
        // Unauthenticated mode needs no key at all.
        config.api_keys.clear();
        config.insecure_no_auth = true;
        config.validate().unwrap();
    }

    #[test]
    fn grpc_limits_have_defaults_and_are_checked() {
        let cli = parse(&[]).unwrap();
        let c = cli.config;
        assert_eq!(c.grpc_max_concurrent_streams, 256);
        assert_eq!(c.grpc_keepalive(), Some(Duration::from_secs(30)));
        assert_eq!(c.grpc_keepalive_timeout(), Duration::from_secs(10));
        assert_eq!(c.grpc_tcp_keepalive(), Some(Duration::from_secs(60)));
        assert_eq!(c.grpc_max_message_bytes, 4 * 1024 * 1024);
        assert_eq!(c.grpc_max_connection_age(), None);
        assert!(c.grpc_reflection);
        let c = parse(&["--grpc-reflection", "false", "--grpc-keepalive-ms", "0"])
            .unwrap()
            .config;
        assert!(!c.grpc_reflection);
        assert_eq!(c.grpc_keepalive(), None);

        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.grpc_max_concurrent_streams = 0;
        assert_eq!(
            config.validate().unwrap_err().setting,
            "KURIR_GRPC_MAX_CONCURRENT_STREAMS"
        );
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.grpc_keepalive_timeout_ms = 0;
        assert_eq!(
            config.validate().unwrap_err().setting,
            "KURIR_GRPC_KEEPALIVE_TIMEOUT_MS"
        );
        config.grpc_keepalive_ms = 0;
        config.validate().unwrap();
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.grpc_max_message_bytes = crate::api::validate::MAX_SEND_REQUEST_BYTES - 1;
        assert_eq!(
            config.validate().unwrap_err().setting,
            "KURIR_GRPC_MAX_MESSAGE_BYTES"
        );
        config.grpc_max_message_bytes += 1;
        config.validate().unwrap();
    }

    #[test]
    fn bad_values_become_one_line() {
        let err = parse(&["--grpc-listen", "nope"]).unwrap_err();
        let line = one_line(&err);
        assert!(!line.contains('\n'));
        assert!(line.contains("grpc-listen"), "{line}");
        assert!(!line.contains("Usage"), "{line}");
    }
}
