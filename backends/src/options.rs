//! How to reach NATS and Redis: the options every seam's constructor takes. A leaf:
//! the seams and the wiring use it, it uses none of them.

use std::time::Duration;

use crate::namespace::Namespace;
use crate::secret::ServerUrl;
use crate::tls::BackboneSecurity;

/// Default number of entries a user's inbox keeps (`KURIR_INBOX_CAPACITY`).
pub const DEFAULT_INBOX_CAPACITY: usize = 1000;
/// Default lifetime of a presence entry that its node stops refreshing.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(3600);
/// Default timeout of one Redis command (and of a NATS flush).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Default number of devices a user keeps.
pub const DEFAULT_MAX_DEVICES: usize = 20;
/// Default lifetime of a user's devices without a registration or a push (60 days).
pub const DEFAULT_DEVICE_TTL: Duration = Duration::from_secs(60 * 24 * 3600);
/// Default number of messages a bus subscription buffers before it drops (slow consumer).
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 65_536;

/// How to reach NATS and Redis.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub namespace: Namespace,
    /// `nats://host:port` or `tls://host:port`, comma-separated for several servers;
    /// `user:password@` or `token@` before the host authenticates.
    pub nats_url: ServerUrl,
    /// `redis://…`, `rediss://…` (TLS), or `redis-cluster://host:port?node=host:port`
    /// (`rediss-cluster://` with TLS); `user:password@` before the host authenticates.
    pub redis_url: ServerUrl,
    /// Credentials file and TLS files of both connections.
    pub security: BackboneSecurity,
    /// Client name shown by `CLIENT LIST` / NATS monitoring, e.g. `kurir-gateway gw-1`.
    pub client_name: String,
    pub presence_ttl: Duration,
    pub inbox_capacity: usize,
    /// Devices a user keeps (the least recent are dropped past it).
    pub device_capacity: usize,
    /// Lifetime of a user's devices without a registration or a push.
    pub device_ttl: Duration,
    pub command_timeout: Duration,
    pub subscription_capacity: usize,
}

impl ConnectOptions {
    pub fn new(namespace: Namespace, nats_url: &str, redis_url: &str) -> Self {
        Self {
            namespace,
            nats_url: nats_url.into(),
            redis_url: redis_url.into(),
            security: BackboneSecurity::default(),
            client_name: "kurir".to_owned(),
            presence_ttl: DEFAULT_PRESENCE_TTL,
            inbox_capacity: DEFAULT_INBOX_CAPACITY,
            device_capacity: DEFAULT_MAX_DEVICES,
            device_ttl: DEFAULT_DEVICE_TTL,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            subscription_capacity: DEFAULT_SUBSCRIPTION_CAPACITY,
        }
    }
}
