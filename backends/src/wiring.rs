//! Building the three seams, either on NATS + Redis or in memory.

use std::sync::Arc;
use std::time::Duration;

use crate::bus::{Bus, MemoryBus, NatsBus};
use crate::error::BackendError;
use crate::inbox::{Inbox, MemoryInbox, RedisInbox, DEFAULT_CAPACITY};
use crate::namespace::Namespace;
use crate::presence::{MemoryPresence, PresenceStore, RedisPresence};
use crate::secret::ServerUrl;
use crate::tls::BackboneSecurity;

/// Default lifetime of a presence entry that its node stops refreshing.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(3600);
/// Default timeout of one Redis command (and of a NATS flush).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
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
            inbox_capacity: DEFAULT_CAPACITY,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            subscription_capacity: DEFAULT_SUBSCRIPTION_CAPACITY,
        }
    }
}

/// The seams a process runs on. Cheap to clone.
#[derive(Clone)]
pub struct Backends {
    pub namespace: Namespace,
    pub bus: Arc<dyn Bus>,
    pub presence: Arc<dyn PresenceStore>,
    pub inbox: Arc<dyn Inbox>,
}

impl Backends {
    /// NATS and Redis. Returns once both clients exist; neither server has to be up yet:
    /// both clients reconnect by themselves, and calls fail with `Unavailable` meanwhile.
    ///
    /// # Errors
    /// A malformed URL or option, or a credentials or TLS file that cannot be used.
    pub async fn connect(opts: &ConnectOptions) -> Result<Self, BackendError> {
        crate::telemetry::describe();
        let bus = NatsBus::connect(opts).await?;
        let redis = crate::redis_client::connect(opts).await?;
        Ok(Self {
            namespace: opts.namespace.clone(),
            bus: Arc::new(bus),
            presence: Arc::new(RedisPresence::new(
                redis.clone(),
                opts.namespace.clone(),
                opts.presence_ttl,
            )),
            inbox: Arc::new(RedisInbox::new(
                redis,
                opts.namespace.clone(),
                opts.inbox_capacity,
            )),
        })
    }

    /// Everything in this process (`--standalone`, fast tests).
    pub fn memory(namespace: Namespace) -> Self {
        crate::telemetry::describe();
        Self {
            namespace,
            bus: Arc::new(MemoryBus::new(DEFAULT_SUBSCRIPTION_CAPACITY)),
            presence: Arc::new(MemoryPresence::new(DEFAULT_PRESENCE_TTL)),
            inbox: Arc::new(MemoryInbox::new(DEFAULT_CAPACITY)),
        }
    }
}
