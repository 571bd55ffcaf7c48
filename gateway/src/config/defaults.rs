//! The default of every setting, one constant each: the clap attributes and
//! [`super::Config::for_test`] both read them, so they cannot disagree.

/// Largest `KURIR_MAX_FRAME_BYTES` accepted (16 MiB).
pub const MAX_FRAME_BYTES_CEILING: usize = 16 * 1024 * 1024;

/// Default of `KURIR_LISTEN`.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default of `KURIR_METRICS_LISTEN`.
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9100";
/// Default of `KURIR_JWT_JWKS_REFRESH_SECONDS`.
pub const DEFAULT_JWT_JWKS_REFRESH_SECONDS: u64 = 300;
/// Default of `KURIR_JWT_JWKS_MIN_REFRESH_SECONDS`.
pub const DEFAULT_JWT_JWKS_MIN_REFRESH_SECONDS: u64 = 10;
/// Default of `KURIR_JWT_LEEWAY_SECONDS`.
pub const DEFAULT_JWT_LEEWAY_SECONDS: u64 = 30;
/// Default of `KURIR_DRAIN_SECONDS`.
pub const DEFAULT_DRAIN_SECONDS: u64 = 10;
/// Default of `KURIR_OUTBOUND_QUEUE`.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 256;
/// Default of `KURIR_MAX_FRAME_BYTES`: client messages are small JSON (under 1 KiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024;
/// Default of `KURIR_PARTIAL_MESSAGE_TIMEOUT_MS`.
pub const DEFAULT_PARTIAL_MESSAGE_TIMEOUT_MS: u64 = 10_000;
/// Default of `KURIR_PARTIAL_MESSAGE_BUDGET_BYTES` (64 MiB).
pub const DEFAULT_PARTIAL_MESSAGE_BUDGET_BYTES: usize = 64 << 20;
/// Default of `KURIR_MAX_CONNECTIONS`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Default of `KURIR_MAX_CONNECTIONS_PER_USER`.
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 16;
/// Default of `KURIR_WRITE_STALL_TIMEOUT_MS`.
pub const DEFAULT_WRITE_STALL_TIMEOUT_MS: u64 = 10_000;
/// Default of `KURIR_CLIENT_FRAMES_PER_SECOND`.
pub const DEFAULT_CLIENT_FRAMES_PER_SECOND: u32 = 20;
/// Default of `KURIR_CLIENT_FRAMES_BURST`.
pub const DEFAULT_CLIENT_FRAMES_BURST: u32 = 100;
/// Default of `KURIR_MAX_TOPICS_PER_NODE`.
pub const DEFAULT_MAX_TOPICS_PER_NODE: usize = 10_000;
/// Default of `KURIR_ACCEPT_BACKLOG`.
pub const DEFAULT_ACCEPT_BACKLOG: u32 = 4096;
/// Default of `KURIR_MAX_SUBSCRIPTIONS`.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 64;
/// Default of `KURIR_HEARTBEAT_MS`.
pub const DEFAULT_HEARTBEAT_MS: u64 = 25_000;
/// Default of `KURIR_IDLE_TIMEOUT_MS`.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Default of `KURIR_LIVENESS_TTL_MS`.
pub const DEFAULT_LIVENESS_TTL_MS: u64 = 15_000;
/// Default of `KURIR_PROBE_INTERVAL_MS`.
pub const DEFAULT_PROBE_INTERVAL_MS: u64 = 2_000;
/// Default of `KURIR_PROBE_TIMEOUT_MS`.
pub const DEFAULT_PROBE_TIMEOUT_MS: u64 = 5_000;
/// Default of `KURIR_PRESENCE_TTL_SECONDS`.
pub const DEFAULT_PRESENCE_TTL_SECONDS: u64 = 3600;
/// Default of `KURIR_REPLAY_PAGE`.
pub const DEFAULT_REPLAY_PAGE: usize = 100;
/// Default of `KURIR_RECEIPT_QUEUE`.
pub const DEFAULT_RECEIPT_QUEUE: usize = 8192;
/// Default of `KURIR_RECEIPT_LINGER_MS`.
pub const DEFAULT_RECEIPT_LINGER_MS: u64 = 5;
/// Default of `KURIR_WORKER_THREADS`: one per CPU this process may use.
pub const DEFAULT_WORKER_THREADS: usize = 0;
/// Default of `KURIR_TLS_RELOAD_INTERVAL_MS`.
pub const DEFAULT_TLS_RELOAD_INTERVAL_MS: u64 = 5_000;
/// Default of `KURIR_MAX_PENDING_HANDSHAKES`.
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 1024;
/// Default of `KURIR_HANDSHAKE_TIMEOUT_MS`.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// The HS256 secret [`super::Config::for_test`] sets: tests mint their tokens with it.
pub const TEST_JWT_SECRET: &str = "gateway-test-secret-0123456789abcdef";
