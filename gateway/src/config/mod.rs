//! Gateway configuration: flags and `KURIR_*` environment variables, validated before
//! any port is bound. The backend settings (namespace, NATS, Redis, inbox, timeouts) are
//! the ones every server shares, flattened in from `kurir_backends`.

mod defaults;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kurir_backends::{BackendSettings, ConnectOptions, Namespace, NodeId, Secret};
use kurir_runtime::LogFormat;

use crate::auth;
pub use defaults::*;
pub use validate::ConfigError;

/// Where `kurir-gateway` listens, what it connects to and its limits.
#[derive(Debug, Clone, Parser)]
#[command(name = "kurir-gateway", version, about = "Kurir WebSocket gateway")]
pub struct Config {
    /// Namespace, NATS, Redis, inbox capacity and backend timeout.
    #[command(flatten)]
    pub backends: BackendSettings,

    /// Node id, subject-safe. Default: hostname plus a short random suffix.
    #[arg(long, env = "KURIR_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<NodeId>,

    /// `/ws`, `/healthz`, `/readyz` and the demo page.
    #[arg(long, env = "KURIR_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// MQTT 3.1.1 listener for devices (TCP; TLS with `KURIR_TLS_CERT`). Unset: no MQTT.
    #[arg(long, env = "KURIR_MQTT_LISTEN")]
    pub mqtt_listen: Option<SocketAddr>,

    /// `/metrics` (and `/healthz`, `/readyz`).
    #[arg(long, env = "KURIR_METRICS_LISTEN", default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,

    /// HS256 secret(s) for client tokens, comma-separated (several during a rotation),
    /// each at least 32 bytes.
    #[arg(long, env = "KURIR_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// PEM file of one or more public keys (RSA → RS256, P-256 → ES256, Ed25519 →
    /// EdDSA); several during a rotation.
    #[arg(long, env = "KURIR_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// JWKS URL of an identity provider (`https://`; `http://` only on loopback): keys
    /// chosen by `kid`, cached and refreshed in the background.
    #[arg(long, env = "KURIR_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,

    /// Seconds between background JWKS refreshes (sooner when the response's
    /// `Cache-Control: max-age` says so).
    #[arg(long, env = "KURIR_JWT_JWKS_REFRESH_SECONDS", default_value_t = DEFAULT_JWT_JWKS_REFRESH_SECONDS)]
    pub jwt_jwks_refresh_seconds: u64,

    /// Fewest seconds between two JWKS fetches triggered by tokens naming an unknown
    /// `kid` (and between retries after a failed fetch).
    #[arg(long, env = "KURIR_JWT_JWKS_MIN_REFRESH_SECONDS", default_value_t = DEFAULT_JWT_JWKS_MIN_REFRESH_SECONDS)]
    pub jwt_jwks_min_refresh_seconds: u64,

    /// Required `iss` of client tokens (unset: not checked).
    #[arg(long, env = "KURIR_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of client tokens, a string or one entry of an array (unset: not
    /// checked).
    #[arg(long, env = "KURIR_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[arg(long, env = "KURIR_JWT_LEEWAY_SECONDS", default_value_t = DEFAULT_JWT_LEEWAY_SECONDS)]
    pub jwt_leeway_seconds: u64,

    /// Push services a browser's Web Push subscription may point at (origins,
    /// comma-separated; default: the known browser push services). A subscription
    /// elsewhere is refused.
    #[arg(
        long,
        env = "KURIR_WEBPUSH_ALLOWED_ORIGINS",
        default_value = kurir_push::settings::DEFAULT_WEBPUSH_ALLOWED_ORIGINS
    )]
    pub webpush_allowed_origins: String,

    /// The VAPID private key (the dispatcher's), from which the gateway derives the
    /// public key it serves at `/v1/push/key`. Or give `KURIR_VAPID_PUBLIC_KEY` alone.
    #[arg(long, env = "KURIR_VAPID_PRIVATE_KEY", hide_env_values = true)]
    pub vapid_private_key: Option<Secret>,

    /// The VAPID public key to serve at `/v1/push/key` (base64url of the uncompressed
    /// point, as `kurir vapid` prints it); wins over deriving it.
    #[arg(long, env = "KURIR_VAPID_PUBLIC_KEY")]
    pub vapid_public_key: Option<String>,

    /// Browser Origins allowed to connect, comma-separated; empty allows any.
    #[arg(
        long,
        env = "KURIR_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub allowed_origins: Vec<String>,

    /// Seconds over which sockets are closed (1012) on shutdown.
    #[arg(long, env = "KURIR_DRAIN_SECONDS", default_value_t = DEFAULT_DRAIN_SECONDS)]
    pub drain_seconds: u64,

    /// Frames queued per connection before it is closed with 1013 (slow consumer).
    #[arg(long, env = "KURIR_OUTBOUND_QUEUE", default_value_t = DEFAULT_OUTBOUND_QUEUE)]
    pub outbound_queue: usize,

    /// Largest client message accepted (one frame, or all its fragments); larger closes
    /// the socket with 1009. Client messages are small JSON (under 1 KiB).
    #[arg(long, env = "KURIR_MAX_FRAME_BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,

    /// How long a client message may stay unfinished (an incomplete frame, or fragments
    /// still to come), in milliseconds; pings in between do not extend it. Past it the
    /// socket is closed with 1008 "message too slow".
    #[arg(
        long,
        env = "KURIR_PARTIAL_MESSAGE_TIMEOUT_MS",
        default_value_t = DEFAULT_PARTIAL_MESSAGE_TIMEOUT_MS
    )]
    pub partial_message_timeout_ms: u64,

    /// Bytes of unfinished client messages the node holds across all its sockets; a
    /// socket that would pass it is closed with 1013 (try again later).
    #[arg(long, env = "KURIR_PARTIAL_MESSAGE_BUDGET_BYTES", default_value_t = DEFAULT_PARTIAL_MESSAGE_BUDGET_BYTES)]
    pub partial_message_budget_bytes: usize,

    /// Connections this node accepts; beyond, upgrades are answered 503.
    #[arg(long, env = "KURIR_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Connections one user may hold on this node (per node, not cluster-wide); beyond,
    /// upgrades are answered 429.
    #[arg(long, env = "KURIR_MAX_CONNECTIONS_PER_USER", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_USER)]
    pub max_connections_per_user: usize,

    /// A socket write that makes no progress for this long closes the connection with
    /// 1013 (the client does not read), in milliseconds.
    #[arg(long, env = "KURIR_WRITE_STALL_TIMEOUT_MS", default_value_t = DEFAULT_WRITE_STALL_TIMEOUT_MS)]
    pub write_stall_timeout_ms: u64,

    /// Frames a client may send per second, on average (control frames included);
    /// beyond the burst, the connection is closed with 1008. Acks of notifications sent
    /// on the connection are free.
    #[arg(long, env = "KURIR_CLIENT_FRAMES_PER_SECOND", default_value_t = DEFAULT_CLIENT_FRAMES_PER_SECOND)]
    pub client_frames_per_second: u32,

    /// Frames a client may send at once before the per-second rate applies.
    #[arg(long, env = "KURIR_CLIENT_FRAMES_BURST", default_value_t = DEFAULT_CLIENT_FRAMES_BURST)]
    pub client_frames_burst: u32,

    /// Distinct topics this node holds bus subscriptions for; a subscribe beyond gets
    /// an `error` frame `too_many_topics`.
    #[arg(long, env = "KURIR_MAX_TOPICS_PER_NODE", default_value_t = DEFAULT_MAX_TOPICS_PER_NODE)]
    pub max_topics_per_node: usize,

    /// Pending connections the kernel queues before accept (capped by `net.core.somaxconn`).
    #[arg(long, env = "KURIR_ACCEPT_BACKLOG", default_value_t = DEFAULT_ACCEPT_BACKLOG)]
    pub accept_backlog: u32,

    /// Topics one connection may subscribe to.
    #[arg(long, env = "KURIR_MAX_SUBSCRIPTIONS", default_value_t = DEFAULT_MAX_SUBSCRIPTIONS)]
    pub max_subscriptions: usize,

    /// Interval of WebSocket pings, in milliseconds (announced in `welcome`).
    #[arg(long, env = "KURIR_HEARTBEAT_MS", default_value_t = DEFAULT_HEARTBEAT_MS)]
    pub heartbeat_ms: u64,

    /// A connection that sends nothing (not even a pong) for this long is closed.
    #[arg(long, env = "KURIR_IDLE_TIMEOUT_MS", default_value_t = DEFAULT_IDLE_TIMEOUT_MS)]
    pub idle_timeout_ms: u64,

    /// Node liveness TTL: a SIGKILLed node's users read offline within this.
    #[arg(long, env = "KURIR_LIVENESS_TTL_MS", default_value_t = DEFAULT_LIVENESS_TTL_MS)]
    pub liveness_ttl_ms: u64,

    /// Interval of the readiness probe through the bus.
    #[arg(long, env = "KURIR_PROBE_INTERVAL_MS", default_value_t = DEFAULT_PROBE_INTERVAL_MS)]
    pub probe_interval_ms: u64,

    /// A probe not back within this turns the node unready.
    #[arg(long, env = "KURIR_PROBE_TIMEOUT_MS", default_value_t = DEFAULT_PROBE_TIMEOUT_MS)]
    pub probe_timeout_ms: u64,

    /// Lifetime of a presence entry its node stops refreshing, in seconds.
    #[arg(long, env = "KURIR_PRESENCE_TTL_SECONDS", default_value_t = DEFAULT_PRESENCE_TTL_SECONDS)]
    pub presence_ttl_seconds: u64,

    /// Stored notifications read per inbox page during replay.
    #[arg(long, env = "KURIR_REPLAY_PAGE", default_value_t = DEFAULT_REPLAY_PAGE)]
    pub replay_page: usize,

    /// Receipts queued for the bus before new ones are dropped (and counted).
    #[arg(long, env = "KURIR_RECEIPT_QUEUE", default_value_t = DEFAULT_RECEIPT_QUEUE)]
    pub receipt_queue: usize,

    /// How long receipts collect before they are published as one batch, in
    /// milliseconds (0 publishes each drain of the queue at once).
    #[arg(long, env = "KURIR_RECEIPT_LINGER_MS", default_value_t = DEFAULT_RECEIPT_LINGER_MS)]
    pub receipt_linger_ms: u64,

    /// Log format: `text` or `json`.
    #[arg(long, env = "KURIR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Runtime worker threads; 0 = one per CPU this process may use (cgroup quota and
    /// affinity included). Where the process gets about one CPU, 1 saves the cost of
    /// waking a second thread for deliveries.
    #[arg(long, env = "KURIR_WORKER_THREADS", default_value_t = DEFAULT_WORKER_THREADS)]
    pub worker_threads: usize,

    /// PEM certificate chain (leaf first): with `KURIR_TLS_KEY`, the main listener serves
    /// `wss://` and HTTPS. Reloaded when the file changes or on SIGHUP.
    #[arg(long, env = "KURIR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `KURIR_TLS_CERT` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "KURIR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// How often the TLS files are checked for changes, in milliseconds.
    #[arg(long, env = "KURIR_TLS_RELOAD_INTERVAL_MS", default_value_t = DEFAULT_TLS_RELOAD_INTERVAL_MS)]
    pub tls_reload_interval_ms: u64,

    /// Connections in their handshake (TLS and the HTTP request head) at once; beyond,
    /// new TCP connections are closed at once.
    #[arg(long, env = "KURIR_MAX_PENDING_HANDSHAKES", default_value_t = DEFAULT_MAX_PENDING_HANDSHAKES)]
    pub max_pending_handshakes: usize,

    /// Time a new connection has to complete its TLS handshake and send its first
    /// request head; then it is closed.
    #[arg(long, env = "KURIR_HANDSHAKE_TIMEOUT_MS", default_value_t = DEFAULT_HANDSHAKE_TIMEOUT_MS)]
    pub handshake_timeout_ms: u64,

    /// Serve `GET /dev/token` (development only; set by `--standalone`).
    #[arg(skip)]
    pub dev_tokens: bool,
}

fn parse_node_id(s: &str) -> Result<NodeId, String> {
    NodeId::parse(s).map_err(|e| e.to_string())
}

impl Config {
    /// Every default, with this namespace, loopback listeners on ports the OS picks,
    /// [`TEST_JWT_SECRET`] and short timers (drain, liveness, probes, no token leeway).
    /// Reads no environment.
    pub fn for_test(namespace: Namespace) -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            backends: BackendSettings::for_test(namespace),
            node_id: None,
            listen: loopback,
            mqtt_listen: None,
            webpush_allowed_origins: kurir_push::settings::DEFAULT_WEBPUSH_ALLOWED_ORIGINS.into(),
            vapid_private_key: None,
            vapid_public_key: None,
            metrics_listen: loopback,
            jwt_secret: Some(Secret::from(TEST_JWT_SECRET)),
            jwt_public_key_file: None,
            jwt_jwks_url: None,
            jwt_jwks_refresh_seconds: DEFAULT_JWT_JWKS_REFRESH_SECONDS,
            jwt_jwks_min_refresh_seconds: DEFAULT_JWT_JWKS_MIN_REFRESH_SECONDS,
            jwt_issuer: None,
            jwt_audience: None,
            // Timing tests see a token end exactly at its `exp`.
            jwt_leeway_seconds: 0,
            allowed_origins: Vec::new(),
            drain_seconds: 1,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            partial_message_timeout_ms: DEFAULT_PARTIAL_MESSAGE_TIMEOUT_MS,
            partial_message_budget_bytes: DEFAULT_PARTIAL_MESSAGE_BUDGET_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
            write_stall_timeout_ms: DEFAULT_WRITE_STALL_TIMEOUT_MS,
            client_frames_per_second: DEFAULT_CLIENT_FRAMES_PER_SECOND,
            client_frames_burst: DEFAULT_CLIENT_FRAMES_BURST,
            max_topics_per_node: DEFAULT_MAX_TOPICS_PER_NODE,
            accept_backlog: DEFAULT_ACCEPT_BACKLOG,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            liveness_ttl_ms: 3_000,
            probe_interval_ms: 500,
            probe_timeout_ms: 2_000,
            presence_ttl_seconds: DEFAULT_PRESENCE_TTL_SECONDS,
            replay_page: DEFAULT_REPLAY_PAGE,
            receipt_queue: DEFAULT_RECEIPT_QUEUE,
            receipt_linger_ms: DEFAULT_RECEIPT_LINGER_MS,
            log_format: LogFormat::Text,
            worker_threads: DEFAULT_WORKER_THREADS,
            tls_cert: None,
            tls_key: None,
            tls_reload_interval_ms: DEFAULT_TLS_RELOAD_INTERVAL_MS,
            max_pending_handshakes: DEFAULT_MAX_PENDING_HANDSHAKES,
            handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
            dev_tokens: false,
        }
    }

    /// Whether any JWT key setting is given (secret, public key file or JWKS URL).
    pub fn has_jwt_keys(&self) -> bool {
        self.jwt_secret
            .as_ref()
            .is_some_and(|s| !s.expose().trim().is_empty())
            || self.jwt_public_key_file.is_some()
            || self.jwt_jwks_url.as_deref().is_some_and(|u| !u.is_empty())
    }

    /// The `KURIR_JWT_*` settings, for the token verifier.
    pub fn jwt_settings(&self) -> auth::Settings {
        auth::Settings {
            secret: self.jwt_secret.clone(),
            public_key_file: self.jwt_public_key_file.clone(),
            jwks_url: self.jwt_jwks_url.clone(),
            jwks_refresh: self.jwks_refresh(),
            jwks_min_refresh: Duration::from_secs(self.jwt_jwks_min_refresh_seconds),
            policy: auth::Policy {
                issuer: self.jwt_issuer.clone().filter(|s| !s.is_empty()),
                audience: self.jwt_audience.clone().filter(|s| !s.is_empty()),
                leeway_seconds: self.jwt_leeway_seconds,
            },
        }
    }

    /// How the gateway connects to NATS and Redis: the shared backend settings, with
    /// this gateway's presence TTL.
    pub fn connect_options(&self) -> ConnectOptions {
        let mut opts = self.backends.connect_options("kurir-gateway");
        opts.presence_ttl = self.presence_ttl();
        opts
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    pub fn liveness_ttl(&self) -> Duration {
        Duration::from_millis(self.liveness_ttl_ms)
    }
    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.probe_interval_ms)
    }
    pub fn probe_timeout(&self) -> Duration {
        Duration::from_millis(self.probe_timeout_ms)
    }
    pub fn presence_ttl(&self) -> Duration {
        Duration::from_secs(self.presence_ttl_seconds)
    }
    pub fn jwks_refresh(&self) -> Duration {
        Duration::from_secs(self.jwt_jwks_refresh_seconds)
    }
    pub fn receipt_linger(&self) -> Duration {
        Duration::from_millis(self.receipt_linger_ms)
    }
    pub fn write_stall_timeout(&self) -> Duration {
        Duration::from_millis(self.write_stall_timeout_ms)
    }
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_seconds)
    }
    /// The read limits of this node's sockets, with a fresh budget.
    pub fn read_limits(&self) -> kurir_wire::ReadLimits {
        kurir_wire::ReadLimits::new(
            self.max_frame_bytes,
            Duration::from_millis(self.partial_message_timeout_ms),
            self.partial_message_budget_bytes,
        )
    }
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    pub fn tls_reload_interval(&self) -> Duration {
        Duration::from_millis(self.tls_reload_interval_ms)
    }
    /// The TLS files, when TLS is configured (after `validate`).
    pub fn tls_files(&self) -> Option<kurir_tls::TlsFiles> {
        Some(kurir_tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_credentials_stay_out_of_debug() {
        let mut c = Config::for_test(Namespace::random_for_test());
        c.jwt_secret = Some("hunter2-hunter2-hunter2-hunter2-hunter2".into());
        c.backends.redis_url = "redis://:hunter3@redis:6379".into();
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("hunter3"),
            "{printed}"
        );
    }

    /// `for_test` is the parsed defaults with its documented test settings, and reads
    /// no environment: a `KURIR_*` variable set around the tests changes nothing.
    #[test]
    fn test_config_is_the_defaults_without_the_environment() {
        let parsed = Config::try_parse_from([
            "kurir-gateway",
            "--jwt-secret",
            TEST_JWT_SECRET,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--jwt-leeway-seconds",
            "0",
            "--drain-seconds",
            "1",
            "--liveness-ttl-ms",
            "3000",
            "--probe-interval-ms",
            "500",
            "--probe-timeout-ms",
            "2000",
        ]);
        let test = Config::for_test(Namespace::parse("default").unwrap());
        // Only when no KURIR_* variable is set can the parsed defaults be compared.
        if std::env::vars().all(|(k, _)| !k.starts_with("KURIR_")) {
            let mut parsed = parsed.unwrap();
            parsed.allowed_origins.retain(|o| !o.is_empty());
            assert_eq!(format!("{parsed:?}"), format!("{test:?}"));
        }
        assert!(test.validate().is_ok());
        assert_eq!(test.connect_options().presence_ttl, test.presence_ttl());
    }
}
