//! Fixtures of the backends' integration tests: contract factories for memory and for
//! the real services, and access to the real Redis for checks and clean-up.
//!
//! The real services come from `KURIR_REDIS_URL` / `KURIR_NATS_URL` (defaults: the
//! local ones). Unreachable means a failing test with a clear message, never a skip.
#![allow(dead_code, unused_macros, unused_imports)] // each test binary uses a part

/// The contract cases of each suite, listed once: `bus_cases!(m!(args))` expands to
/// `m!(args [case, case, …])`.
macro_rules! bus_cases {
    ($m:ident!($($args:tt)*)) => {
        $m!($($args)* [
            publish_then_subscribe_delivers,
            delivers_across_clients,
            order_is_kept_per_publisher,
            nothing_is_kept_without_subscribers,
            every_subscription_receives,
            subjects_are_isolated,
            dropping_a_subscription_unsubscribes_only_it,
            flush_and_connected_on_a_healthy_bus,
        ]);
    };
}

macro_rules! presence_cases {
    ($m:ident!($($args:tt)*)) => {
        $m!($($args)* [
            add_then_lookup,
            add_is_idempotent,
            remove_forgets_one_connection,
            connections_on_several_nodes,
            entries_of_a_node_without_liveness_do_not_count,
            dead_node_stops_counting_after_its_ttl,
            beating_keeps_a_node_alive,
            remove_node_drops_its_entries_and_liveness,
            remove_node_keeps_a_newer_incarnations_mark,
            a_beat_reports_kept_or_lapsed,
            a_new_epoch_hides_the_old_incarnation,
            entries_re_added_after_a_lapse_count_again,
            entries_expire_without_refresh,
            refresh_extends_entries,
            lookup_of_unknown_users,
            lookup_keeps_the_order_asked,
            lookup_of_many_users,
        ]);
    };
}

macro_rules! inbox_cases {
    ($m:ident!($($args:tt)*)) => {
        $m!($($args)* [
            append_returns_increasing_cursors,
            pending_returns_entries_oldest_first,
            payloads_are_binary_safe,
            pending_after_a_cursor_is_exclusive,
            pending_respects_the_limit,
            users_have_separate_inboxes,
            ack_removes_the_entry,
            ack_is_idempotent,
            expired_entries_are_never_returned,
            entries_appended_expired_are_never_returned,
            capacity_trims_the_oldest,
            append_names_the_entries_the_cap_dropped,
            a_collapse_key_replaces_the_older_entry,
            collapse_keys_survive_trimming,
            append_is_idempotent_per_notification,
            append_to_many_users,
            claim_first_wins,
            claim_is_pending_until_settled,
            settle_changes_only_a_claim_of_its_id,
            release_frees_only_the_holders_key,
            release_frees_only_a_pending_claim,
            a_pending_claim_expires_at_its_ttl,
            claims_expire_after_their_ttl,
            retried_claim_with_the_same_id_is_new,
            concurrent_claims_have_one_winner,
            a_claim_for_another_request_is_refused,
            scopes_keep_keys_apart,
        ]);
    };
}

macro_rules! devices_cases {
    ($m:ident!($($args:tt)*)) => {
        $m!($($args)* [
            register_then_list_most_recent_first,
            registering_again_replaces_and_refreshes,
            the_cap_drops_the_least_recent,
            unregister_removes_one,
            devices_expire_unless_used,
        ]);
    };
}

macro_rules! due_cases {
    ($m:ident!($($args:tt)*)) => {
        $m!($($args)* [
            items_are_claimed_when_due_earliest_first,
            a_lease_hides_an_item_until_it_ends,
            complete_removes_the_item,
            reschedule_moves_a_claimed_item,
            cancel_removes_only_waiting_items,
            racing_claimers_never_share_an_item,
        ]);
    };
}

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{Builder, Client, ClientLike, Config, KeysInterface};
use futures::TryStreamExt;
use kurir_backends::bus::{Bus, MemoryBus};
use kurir_backends::contract::Factory;
use kurir_backends::devices::{DeviceStore, MemoryDevices};
use kurir_backends::due::{DueQueue, MemoryDueQueue};
use kurir_backends::inbox::{Inbox, MemoryInbox};
use kurir_backends::presence::{MemoryPresence, PresenceStore};
use kurir_backends::{Backends, ConnectOptions, Namespace, DEFAULT_SUBSCRIPTION_CAPACITY};
use parking_lot::Mutex;

pub use kurir_testkit::faults::{Proxy, RedisCluster};
pub use kurir_testkit::ports::free_port as closed_port;
pub use kurir_testkit::{nats_url, redis_url};

/// In-process implementations; one instance per distinct argument, shared by calls.
pub struct MemoryFactory {
    ns: Namespace,
    bus: Arc<MemoryBus>,
    presence: Mutex<HashMap<Duration, Arc<MemoryPresence>>>,
    inbox: Mutex<HashMap<usize, Arc<MemoryInbox>>>,
    devices: Mutex<HashMap<(usize, Duration), Arc<MemoryDevices>>>,
    due: Arc<MemoryDueQueue>,
}

impl MemoryFactory {
    pub async fn new() -> Self {
        Self {
            ns: Namespace::random_for_test(),
            bus: Arc::new(MemoryBus::new(DEFAULT_SUBSCRIPTION_CAPACITY)),
            presence: Mutex::default(),
            inbox: Mutex::default(),
            devices: Mutex::default(),
            due: Arc::new(MemoryDueQueue::new()),
        }
    }

    pub async fn cleanup(&self) {}
}

#[async_trait]
impl Factory for MemoryFactory {
    fn namespace(&self) -> &Namespace {
        &self.ns
    }

    async fn bus(&self) -> Arc<dyn Bus> {
        self.bus.clone()
    }

    async fn presence(&self, entry_ttl: Duration) -> Arc<dyn PresenceStore> {
        self.presence
            .lock()
            .entry(entry_ttl)
            .or_insert_with(|| Arc::new(MemoryPresence::new(entry_ttl)))
            .clone()
    }

    async fn inbox(&self, capacity: usize) -> Arc<dyn Inbox> {
        self.inbox
            .lock()
            .entry(capacity)
            .or_insert_with(|| Arc::new(MemoryInbox::new(capacity)))
            .clone()
    }

    async fn devices(&self, capacity: usize, ttl: Duration) -> Arc<dyn DeviceStore> {
        self.devices
            .lock()
            .entry((capacity, ttl))
            .or_insert_with(|| Arc::new(MemoryDevices::new(capacity, ttl)))
            .clone()
    }

    async fn due(&self) -> Arc<dyn DueQueue> {
        self.due.clone()
    }
}

/// NATS and Redis, each seam through its own [`Backends::connect`], all in one fresh
/// namespace whose keys [`ServicesFactory::cleanup`] deletes.
pub struct ServicesFactory {
    ns: Namespace,
    redis_url: String,
    redis: Client,
}

impl ServicesFactory {
    pub async fn new() -> Self {
        Self::with_redis(&redis_url()).await
    }

    /// On another Redis than `KURIR_REDIS_URL` (a private cluster).
    pub async fn with_redis(url: &str) -> Self {
        Self {
            ns: Namespace::random_for_test(),
            redis_url: url.to_owned(),
            redis: admin_client(url).await,
        }
    }

    pub fn options(&self) -> ConnectOptions {
        let mut opts = ConnectOptions::new(self.ns.clone(), &nats_url(), &self.redis_url);
        opts.client_name = "kurir-backends-test".into();
        opts
    }

    pub fn redis(&self) -> &Client {
        &self.redis
    }

    async fn connect(&self, opts: &ConnectOptions) -> Backends {
        Backends::connect(opts)
            .await
            .expect("Backends::connect refused the test options")
    }

    /// Delete every key of this namespace (and nothing else).
    pub async fn cleanup(&self) {
        delete_namespace(&self.redis, &self.ns).await;
    }
}

#[async_trait]
impl Factory for ServicesFactory {
    fn namespace(&self) -> &Namespace {
        &self.ns
    }

    async fn bus(&self) -> Arc<dyn Bus> {
        let bus = self.connect(&self.options()).await.bus;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !bus.is_connected() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "NATS at {} is unreachable: start nats-server or set KURIR_NATS_URL",
                nats_url()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bus
    }

    async fn presence(&self, entry_ttl: Duration) -> Arc<dyn PresenceStore> {
        let mut opts = self.options();
        opts.presence_ttl = entry_ttl;
        self.connect(&opts).await.presence
    }

    async fn inbox(&self, capacity: usize) -> Arc<dyn Inbox> {
        let mut opts = self.options();
        opts.inbox_capacity = capacity;
        self.connect(&opts).await.inbox
    }
    async fn devices(&self, capacity: usize, ttl: Duration) -> Arc<dyn DeviceStore> {
        let mut opts = self.options();
        opts.device_capacity = capacity;
        opts.device_ttl = ttl;
        self.connect(&opts).await.devices
    }

    async fn due(&self) -> Arc<dyn DueQueue> {
        self.connect(&self.options()).await.due
    }
}

/// A plain fred client on the test Redis, for checks and clean-up; panics with a clear
/// message when Redis is unreachable.
pub async fn admin_client(url: &str) -> Client {
    let config = Config::from_url(url).expect("KURIR_REDIS_URL");
    let client = Builder::from_config(config)
        .build()
        .expect("redis client for tests");
    match tokio::time::timeout(Duration::from_secs(5), client.init()).await {
        Ok(Ok(_)) => client,
        Ok(Err(e)) => {
            panic!("Redis at {url} is unreachable ({e}): start redis-server or set KURIR_REDIS_URL")
        }
        Err(_) => panic!("Redis at {url} did not answer within 5 s: set KURIR_REDIS_URL"),
    }
}

/// Delete the keys matching `ns.key_pattern()`, one `DEL` per key (cluster-safe).
pub async fn delete_namespace(redis: &Client, ns: &Namespace) {
    let pattern = ns.key_pattern();
    let keys: Vec<fred::types::Key> = if redis.is_clustered() {
        redis
            .scan_cluster_buffered(pattern, Some(1000), None)
            .try_collect()
            .await
    } else {
        redis
            .scan_buffered(pattern, Some(1000), None)
            .try_collect()
            .await
    }
    .expect("scanning the test namespace");
    for key in keys {
        let _: () = redis.del(key).await.expect("deleting a test key");
    }
}

/// `host:port` of a `scheme://host:port` URL, resolved.
pub async fn socket_addr(url: &str) -> std::net::SocketAddr {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let hostport = rest.split('/').next().unwrap().rsplit('@').next().unwrap();
    tokio::net::lookup_host(hostport)
        .await
        .unwrap_or_else(|e| panic!("resolving {hostport}: {e}"))
        .next()
        .unwrap()
}
