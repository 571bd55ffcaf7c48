//! Gateway configuration: flags and `KURIR_*` environment variables, validated before
//! any port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kurir_backends::{Namespace, NodeId, Secret, ServerUrl};

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

    /// Node id, subject-safe. Default: hostname plus a short random suffix.
    #[arg(long, env = "KURIR_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<NodeId>,

    /// `/ws`, `/healthz`, `/readyz` and the demo page.
    #[arg(long, env = "KURIR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// `/metrics` (and `/healthz`, `/readyz`).
    #[arg(long, env = "KURIR_METRICS_LISTEN", default_value = "0.0.0.0:9100")]
    pub metrics_listen: SocketAddr,

    /// HS256 secret for client tokens.
    #[arg(long, env = "KURIR_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// PEM public key for RS256 or ES256 client tokens.
    #[arg(long, env = "KURIR_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

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

    /// Largest client frame accepted; larger closes the socket with 1009.
    #[arg(long, env = "KURIR_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,

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
        if self
            .jwt_secret
            .as_ref()
            .is_none_or(|s| s.expose().is_empty())
            && self.jwt_public_key_file.is_none()
        {
            return Err("set KURIR_JWT_SECRET or KURIR_JWT_PUBLIC_KEY_FILE: refusing to accept unauthenticated clients".into());
        }
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
        if self.max_frame_bytes < 256 {
            return Err("KURIR_MAX_FRAME_BYTES must be at least 256".into());
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
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err("KURIR_LOG_FORMAT must be text or json".into());
        }
        Ok(())
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_start_without_jwt_settings() {
        let mut c = Config::for_test(Namespace::random_for_test(), "s");
        assert!(c.validate().is_ok());
        c.jwt_secret = None;
        assert!(c.validate().unwrap_err().contains("KURIR_JWT_SECRET"));
    }

    #[test]
    fn secrets_and_credentials_stay_out_of_debug() {
        let mut c = Config::for_test(Namespace::random_for_test(), "hunter2");
        c.redis_url = "redis://:hunter3@redis:6379".into();
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("hunter3"),
            "{printed}"
        );
    }
}
