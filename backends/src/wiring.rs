//! Building the seams, either on NATS + Redis or in memory.

use std::sync::Arc;

use crate::bus::{Bus, MemoryBus, NatsBus};
use crate::devices::{
    DeviceStore, MemoryDevices, RedisDevices, DEFAULT_DEVICE_TTL, DEFAULT_MAX_DEVICES,
};
use crate::due::{DueQueue, MemoryDueQueue, RedisDueQueue};
use crate::error::BackendError;
use crate::inbox::{Inbox, MemoryInbox, RedisInbox};
use crate::namespace::Namespace;
use crate::options::{
    ConnectOptions, DEFAULT_INBOX_CAPACITY, DEFAULT_PRESENCE_TTL, DEFAULT_SUBSCRIPTION_CAPACITY,
};
use crate::presence::{MemoryPresence, PresenceStore, RedisPresence};

/// The seams a process runs on. Cheap to clone.
#[derive(Clone)]
pub struct Backends {
    pub namespace: Namespace,
    pub bus: Arc<dyn Bus>,
    pub presence: Arc<dyn PresenceStore>,
    pub inbox: Arc<dyn Inbox>,
    pub devices: Arc<dyn DeviceStore>,
    pub due: Arc<dyn DueQueue>,
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
        agree_on_inbox_capacity(&redis, opts).await?;
        Ok(Self {
            namespace: opts.namespace.clone(),
            bus: Arc::new(bus),
            presence: Arc::new(RedisPresence::new(
                redis.clone(),
                opts.namespace.clone(),
                opts.presence_ttl,
            )),
            inbox: Arc::new(RedisInbox::new(
                redis.clone(),
                opts.namespace.clone(),
                opts.inbox_capacity,
            )),
            devices: Arc::new(RedisDevices::new(
                redis.clone(),
                opts.namespace.clone(),
                opts.device_capacity,
                opts.device_ttl,
            )),
            due: Arc::new(RedisDueQueue::new(redis, opts.namespace.clone())),
        })
    }

    /// Everything in this process (`--standalone`, fast tests).
    pub fn memory(namespace: Namespace) -> Self {
        crate::telemetry::describe();
        Self {
            namespace,
            bus: Arc::new(MemoryBus::new(DEFAULT_SUBSCRIPTION_CAPACITY)),
            presence: Arc::new(MemoryPresence::new(DEFAULT_PRESENCE_TTL)),
            inbox: Arc::new(MemoryInbox::new(DEFAULT_INBOX_CAPACITY)),
            devices: Arc::new(MemoryDevices::new(DEFAULT_MAX_DEVICES, DEFAULT_DEVICE_TTL)),
            due: Arc::new(MemoryDueQueue::new()),
        }
    }
}

/// Every process of a namespace must trim inboxes at the same length, or an inbox's length
/// would depend on which process appended last. The first process to start stores its
/// `KURIR_INBOX_CAPACITY` in `kurir:<ns>:settings`; a later one with another value refuses
/// to start. With Redis not reachable yet, the check is skipped with a warning (the
/// clients reconnect by themselves, and refusing to start would make the outage worse).
async fn agree_on_inbox_capacity(
    redis: &fred::prelude::Client,
    opts: &ConnectOptions,
) -> Result<(), BackendError> {
    const FIELD: &str = "inbox_capacity";
    let key = opts.namespace.settings_key();
    let ours = opts.inbox_capacity.to_string();
    match crate::redis_client::agree(redis, &key, FIELD, &ours).await {
        Ok(stored) if stored == ours => Ok(()),
        Ok(stored) => Err(BackendError::invalid(
            "redis",
            format!(
                "KURIR_INBOX_CAPACITY is {ours} here but {stored} for namespace {ns:?} \
                 (stored in {key} by the first process to start); give every gateway and \
                 dispatcher the same value, or, to change it, stop them all and delete \
                 that field (HDEL {key} {FIELD})",
                ns = opts.namespace.as_str(),
            ),
        )),
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, "KURIR_INBOX_CAPACITY not checked against the cluster: Redis is not reachable yet");
            Ok(())
        }
        Err(e) => Err(e),
    }
}
