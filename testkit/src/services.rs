//! The Redis and NATS a test runs against: `KURIR_REDIS_URL` / `KURIR_NATS_URL`, or the
//! local servers. Tests share them and keep apart by namespace.

/// `KURIR_REDIS_URL`, else the local Redis.
pub fn redis_url() -> String {
    std::env::var("KURIR_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `KURIR_NATS_URL`, else the local NATS.
pub fn nats_url() -> String {
    std::env::var("KURIR_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A namespace no other test uses (`test-` and 32 hex digits).
pub fn random_namespace() -> String {
    format!("test-{:032x}", rand::random::<u128>())
}
