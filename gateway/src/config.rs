//! Gateway configuration: flags and `KURIR_*` environment variables, validated before
//! any port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kurir_backends::{BackboneSecurity, Namespace, NodeId, Secret, ServerUrl};

/// Largest `KURIR_MAX_FRAME_BYTES` accepted (16 MiB).
pub const MAX_FRAME_BYTES_CEILING: usize = 16 * 1024 * 1024;

/// Where `kurir-gateway` listens, what it connects to and its limits.
#[derive(Debug, Clone, Parser)]
#[command(name = "kurir-gateway", version, about = "Kurir WebSocket gateway")]
pub struct Config {
    /// Prefix of every Redis key and NATS subject.
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

    /// Node id, subject-safe. Default: hostname plus a short random suffix.
    #[arg(long, env = "KURIR_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<NodeId>,

    /// `/ws`, `/healthz`, `/readyz` and the demo page.
    #[arg(long, env = "KURIR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// `/metrics` (and `/healthz`, `/readyz`).
    #[arg(long, env = "KURIR_METRICS_LISTEN", default_value = "0.0.0.0:9100")]
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
    #[arg(long, env = "KURIR_JWT_JWKS_REFRESH_SECONDS", default_value_t = 300)]
    pub jwt_jwks_refresh_seconds: u64,

    /// Fewest seconds between two JWKS fetches triggered by tokens naming an unknown
    /// `kid` (and between retries after a failed fetch).
    #[arg(long, env = "KURIR_JWT_JWKS_MIN_REFRESH_SECONDS", default_value_t = 10)]
    pub jwt_jwks_min_refresh_seconds: u64,

    /// Required `iss` of client tokens (unset: not checked).
    #[arg(long, env = "KURIR_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of client tokens, a string or one entry of an array (unset: not
    /// checked).
    #[arg(long, env = "KURIR_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[arg(long, env = "KURIR_JWT_LEEWAY_SECONDS", default_value_t = 30)]
    pub jwt_leeway_seconds: u64,

    /// Browser Origins allowed to connect, comma-separated; empty allows any.
    #[arg(
        long,
        env = "KURIR_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub allowed_origins: Vec<String>,

    /// Seconds over which sockets are closed (1012) on shutdown.
    #[arg(long, env = "KURIR_DRAIN_SECONDS", default_value_t = 10)]
    pub drain_seconds: u64,

    /// Frames queued per connection before it is closed with 1013 (slow consumer).
    #[arg(long, env = "KURIR_OUTBOUND_QUEUE", default_value_t = 256)]
    pub outbound_queue: usize,

    /// Largest client message accepted (one frame, or all its fragments); larger closes
    /// the socket with 1009. Client messages are small JSON (under 1 KiB).
    #[arg(long, env = "KURIR_MAX_FRAME_BYTES", default_value_t = 4 * 1024)]
    pub max_frame_bytes: usize,

    /// How long a client message may stay unfinished (an incomplete frame, or fragments
    /// still to come), in milliseconds; pings in between do not extend it. Past it the
    /// socket is closed with 1008 "message too slow".
    #[arg(
        long,
        env = "KURIR_PARTIAL_MESSAGE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub partial_message_timeout_ms: u64,

    /// Bytes of unfinished client messages the node holds across all its sockets; a
    /// socket that would pass it is closed with 1013 (try again later).
    #[arg(long, env = "KURIR_PARTIAL_MESSAGE_BUDGET_BYTES", default_value_t = 64 << 20)]
    pub partial_message_budget_bytes: usize,

    /// Connections this node accepts; beyond, upgrades are answered 503.
    #[arg(long, env = "KURIR_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Connections one user may hold on this node (per node, not cluster-wide); beyond,
    /// upgrades are answered 429.
    #[arg(long, env = "KURIR_MAX_CONNECTIONS_PER_USER", default_value_t = 16)]
    pub max_connections_per_user: usize,

    /// A socket write that makes no progress for this long closes the connection with
    /// 1013 (the client does not read), in milliseconds.
    #[arg(long, env = "KURIR_WRITE_STALL_TIMEOUT_MS", default_value_t = 10_000)]
    pub write_stall_timeout_ms: u64,

    /// Frames a client may send per second, on average (control frames included);
    /// beyond the burst, the connection is closed with 1008. Acks of notifications sent
    /// on the connection are free.
    #[arg(long, env = "KURIR_CLIENT_FRAMES_PER_SECOND", default_value_t = 20)]
    pub client_frames_per_second: u32,

    /// Frames a client may send at once before the per-second rate applies.
    #[arg(long, env = "KURIR_CLIENT_FRAMES_BURST", default_value_t = 100)]
    pub client_frames_burst: u32,

    /// Distinct topics this node holds bus subscriptions for; a subscribe beyond gets
    /// an `error` frame `too_many_topics`.
    #[arg(long, env = "KURIR_MAX_TOPICS_PER_NODE", default_value_t = 10_000)]
    pub max_topics_per_node: usize,

    /// Pending connections the kernel queues before accept (capped by `net.core.somaxconn`).
    #[arg(long, env = "KURIR_ACCEPT_BACKLOG", default_value_t = 4096)]
    pub accept_backlog: u32,

    /// Topics one connection may subscribe to.
    #[arg(long, env = "KURIR_MAX_SUBSCRIPTIONS", default_value_t = 64)]
    pub max_subscriptions: usize,

    /// Interval of WebSocket pings, in milliseconds (announced in `welcome`).
    #[arg(long, env = "KURIR_HEARTBEAT_MS", default_value_t = 25_000)]
    pub heartbeat_ms: u64,

    /// A connection that sends nothing (not even a pong) for this long is closed.
    #[arg(long, env = "KURIR_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,

    /// Node liveness TTL: a SIGKILLed node's users read offline within this.
    #[arg(long, env = "KURIR_LIVENESS_TTL_MS", default_value_t = 15_000)]
    pub liveness_ttl_ms: u64,

    /// Interval of the readiness probe through the bus.
    #[arg(long, env = "KURIR_PROBE_INTERVAL_MS", default_value_t = 2_000)]
    pub probe_interval_ms: u64,

    /// A probe not back within this turns the node unready.
    #[arg(long, env = "KURIR_PROBE_TIMEOUT_MS", default_value_t = 5_000)]
    pub probe_timeout_ms: u64,

    /// Lifetime of a presence entry its node stops refreshing, in seconds.
    #[arg(long, env = "KURIR_PRESENCE_TTL_SECONDS", default_value_t = 3600)]
    pub presence_ttl_seconds: u64,

    /// Stored notifications read per inbox page during replay.
    #[arg(long, env = "KURIR_REPLAY_PAGE", default_value_t = 100)]
    pub replay_page: usize,

    /// Most stored notifications kept per user (must match the dispatchers').
    #[arg(long, env = "KURIR_INBOX_CAPACITY", default_value_t = 1000)]
    pub inbox_capacity: usize,

    /// Receipts queued for the bus before new ones are dropped (and counted).
    #[arg(long, env = "KURIR_RECEIPT_QUEUE", default_value_t = 8192)]
    pub receipt_queue: usize,

    /// How long receipts collect before they are published as one batch, in
    /// milliseconds (0 publishes each drain of the queue at once).
    #[arg(long, env = "KURIR_RECEIPT_LINGER_MS", default_value_t = 5)]
    pub receipt_linger_ms: u64,

    /// Log format: `text` or `json`.
    #[arg(long, env = "KURIR_LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    /// Runtime worker threads; 0 = one per CPU this process may use (cgroup quota and
    /// affinity included). Where the process gets about one CPU, 1 saves the cost of
    /// waking a second thread for deliveries.
    #[arg(long, env = "KURIR_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,

    /// PEM certificate chain (leaf first): with `KURIR_TLS_KEY`, the main listener serves
    /// `wss://` and HTTPS. Reloaded when the file changes or on SIGHUP.
    #[arg(long, env = "KURIR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `KURIR_TLS_CERT` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "KURIR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// How often the TLS files are checked for changes, in milliseconds.
    #[arg(long, env = "KURIR_TLS_RELOAD_INTERVAL_MS", default_value_t = 5_000)]
    pub tls_reload_interval_ms: u64,

    /// Connections in their handshake (TLS and the HTTP request head) at once; beyond,
    /// new TCP connections are closed at once.
    #[arg(long, env = "KURIR_MAX_PENDING_HANDSHAKES", default_value_t = 1024)]
    pub max_pending_handshakes: usize,

    /// Time a new connection has to complete its TLS handshake and send its first
    /// request head; then it is closed.
    #[arg(long, env = "KURIR_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,

    /// Serve `GET /dev/token` (development only; set by `--standalone`).
    #[arg(skip)]
    pub dev_tokens: bool,
}

fn parse_namespace(s: &str) -> Result<Namespace, String> {
    Namespace::parse(s).map_err(|e| e.to_string())
}

fn parse_node_id(s: &str) -> Result<NodeId, String> {
    NodeId::parse(s).map_err(|e| e.to_string())
}

impl Config {
    /// Defaults for tests: loopback ports chosen by the OS, HS256 `secret`, short timers.
    pub fn for_test(namespace: Namespace, jwt_secret: &str) -> Self {
        let mut c = Self::parse_from(["kurir-gateway"]);
        c.namespace = namespace;
        c.listen = "127.0.0.1:0".parse().expect("loopback");
        c.metrics_listen = "127.0.0.1:0".parse().expect("loopback");
        c.jwt_secret = Some(Secret::from(jwt_secret));
        c.jwt_public_key_file = None;
        c.jwt_jwks_url = None;
        c.jwt_issuer = None;
        c.jwt_audience = None;
        // Timing tests see a token end exactly at its `exp`.
        c.jwt_leeway_seconds = 0;
        c.drain_seconds = 1;
        c.liveness_ttl_ms = 3_000;
        c.probe_interval_ms = 500;
        c.probe_timeout_ms = 2_000;
        c
    }

    /// Check what clap cannot.
    ///
    /// # Errors
    /// A one-line description of the first bad setting.
    pub fn validate(&self) -> Result<(), String> {
        if !self.has_jwt_keys() {
            return Err("set KURIR_JWT_SECRET, KURIR_JWT_PUBLIC_KEY_FILE or KURIR_JWT_JWKS_URL: refusing to accept unauthenticated clients".into());
        }
        crate::auth::check_settings(self).map_err(|e| e.to_string())?;
        if self.outbound_queue == 0
            || self.max_connections == 0
            || self.replay_page == 0
            || self.inbox_capacity == 0
            || self.receipt_queue == 0
        {
            return Err(
                "queue sizes, max connections, replay page and inbox capacity must be > 0".into(),
            );
        }
        if self.max_connections_per_user == 0 || self.max_topics_per_node == 0 {
            return Err(
                "KURIR_MAX_CONNECTIONS_PER_USER and KURIR_MAX_TOPICS_PER_NODE must be > 0".into(),
            );
        }
        if self.write_stall_timeout_ms < 100 {
            return Err("KURIR_WRITE_STALL_TIMEOUT_MS must be at least 100".into());
        }
        if self.client_frames_per_second == 0 || self.client_frames_burst == 0 {
            return Err(
                "KURIR_CLIENT_FRAMES_PER_SECOND and KURIR_CLIENT_FRAMES_BURST must be > 0".into(),
            );
        }
        // Above 16 MiB a client message is no notification client's; the bound also keeps
        // every length arithmetic on frame headers far from overflow.
        if !(256..=MAX_FRAME_BYTES_CEILING).contains(&self.max_frame_bytes) {
            return Err(format!(
                "KURIR_MAX_FRAME_BYTES must be between 256 and {MAX_FRAME_BYTES_CEILING}"
            ));
        }
        if self.partial_message_timeout_ms == 0
            || self.partial_message_budget_bytes < self.max_frame_bytes
        {
            return Err("KURIR_PARTIAL_MESSAGE_TIMEOUT_MS must be > 0 and KURIR_PARTIAL_MESSAGE_BUDGET_BYTES at least KURIR_MAX_FRAME_BYTES".into());
        }
        if self.heartbeat_ms == 0 || self.idle_timeout_ms <= self.heartbeat_ms {
            return Err("KURIR_IDLE_TIMEOUT_MS must be greater than KURIR_HEARTBEAT_MS > 0".into());
        }
        if self.probe_interval_ms == 0 || self.probe_timeout_ms <= self.probe_interval_ms {
            return Err(
                "KURIR_PROBE_TIMEOUT_MS must be greater than KURIR_PROBE_INTERVAL_MS > 0".into(),
            );
        }
        if self.liveness_ttl_ms < 1_000 {
            return Err("KURIR_LIVENESS_TTL_MS must be at least 1000".into());
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err("KURIR_TLS_CERT and KURIR_TLS_KEY must be set together".into())
            }
            _ => {}
        }
        if self.tls_reload_interval_ms == 0
            || self.max_pending_handshakes == 0
            || self.handshake_timeout_ms == 0
        {
            return Err("KURIR_TLS_RELOAD_INTERVAL_MS, KURIR_MAX_PENDING_HANDSHAKES and KURIR_HANDSHAKE_TIMEOUT_MS must be > 0".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err("KURIR_LOG_FORMAT must be text or json".into());
        }
        self.backbone.validate().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Whether any JWT key setting is given (secret, public key file or JWKS URL).
    pub fn has_jwt_keys(&self) -> bool {
        self.jwt_secret
            .as_ref()
            .is_some_and(|s| !s.expose().trim().is_empty())
            || self.jwt_public_key_file.is_some()
            || self.jwt_jwks_url.as_deref().is_some_and(|u| !u.is_empty())
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

    const TEST_SECRET: &str = "config-test-secret-0123456789abcdef";

    #[test]
    fn refuses_to_start_without_jwt_settings() {
        let mut c = Config::for_test(Namespace::random_for_test(), TEST_SECRET);
        assert!(c.validate().is_ok());
        c.jwt_secret = None;
        assert!(c.validate().unwrap_err().contains("KURIR_JWT_SECRET"));
    }

    #[test]
    fn read_limits_are_checked() {
        let mut c = Config::for_test(Namespace::random_for_test(), TEST_SECRET);
        assert_eq!(c.max_frame_bytes, 4096, "sized for client JSON frames");
        c.partial_message_timeout_ms = 0;
        assert!(c.validate().is_err());
        c.partial_message_timeout_ms = 10_000;
        c.partial_message_budget_bytes = c.max_frame_bytes - 1;
        assert!(c.validate().is_err());
        c.partial_message_budget_bytes = c.max_frame_bytes;
        assert!(c.validate().is_ok());
        c.max_frame_bytes = usize::MAX;
        c.partial_message_budget_bytes = usize::MAX;
        assert!(c.validate().unwrap_err().contains("KURIR_MAX_FRAME_BYTES"));
    }

    #[test]
    fn tls_cert_and_key_come_together() {
        let mut c = Config::for_test(Namespace::random_for_test(), TEST_SECRET);
        c.tls_cert = Some("cert.pem".into());
        assert!(c.validate().unwrap_err().contains("KURIR_TLS_KEY"));
        c.tls_key = Some("key.pem".into());
        assert!(c.validate().is_ok());
        c.tls_cert = None;
        assert!(c.validate().unwrap_err().contains("KURIR_TLS_CERT"));
        c.tls_key = None;
        c.max_pending_handshakes = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn unusable_backbone_files_are_refused_before_start() {
        let mut c = Config::for_test(Namespace::random_for_test(), TEST_SECRET);
        c.backbone.nats_ca = Some("/nonexistent/ca.pem".into());
        assert!(c.validate().unwrap_err().starts_with("KURIR_NATS_CA"));
    }

    #[test]
    fn secrets_and_credentials_stay_out_of_debug() {
        let mut c = Config::for_test(
            Namespace::random_for_test(),
            "hunter2-hunter2-hunter2-hunter2-hunter2",
        );
        c.redis_url = "redis://:hunter3@redis:6379".into();
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("hunter3"),
            "{printed}"
        );
    }
}
