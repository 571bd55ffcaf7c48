//! Fixtures of the backends' integration tests: contract factories for memory and for
//! the real services, and access to the real Redis for checks and clean-up.
//!
//! The real services come from `KURIR_REDIS_URL` / `KURIR_NATS_URL` (defaults: the
//! local ones). Unreachable means a failing test with a clear message, never a skip.
#![allow(dead_code)] // each test binary uses a part

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{Builder, Client, ClientLike, Config, KeysInterface};
use futures::TryStreamExt;
use kurir_backends::bus::{Bus, MemoryBus};
use kurir_backends::contract::Factory;
use kurir_backends::inbox::{Inbox, MemoryInbox};
use kurir_backends::presence::{MemoryPresence, PresenceStore};
use kurir_backends::{Backends, ConnectOptions, Namespace, DEFAULT_SUBSCRIPTION_CAPACITY};
use parking_lot::Mutex;

pub fn redis_url() -> String {
    std::env::var("KURIR_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn nats_url() -> String {
    std::env::var("KURIR_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// In-process implementations; one instance per distinct argument, shared by calls.
pub struct MemoryFactory {
    ns: Namespace,
    bus: Arc<MemoryBus>,
    presence: Mutex<HashMap<Duration, Arc<MemoryPresence>>>,
    inbox: Mutex<HashMap<usize, Arc<MemoryInbox>>>,
}

impl MemoryFactory {
    pub async fn new() -> Self {
        Self {
            ns: Namespace::random_for_test(),
            bus: Arc::new(MemoryBus::new(DEFAULT_SUBSCRIPTION_CAPACITY)),
            presence: Mutex::default(),
            inbox: Mutex::default(),
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
}

/// NATS and Redis, each seam through its own [`Backends::connect`], all in one fresh
/// namespace whose keys [`ServicesFactory::cleanup`] deletes.
pub struct ServicesFactory {
    ns: Namespace,
    redis: Client,
}

impl ServicesFactory {
    pub async fn new() -> Self {
        Self {
            ns: Namespace::random_for_test(),
            redis: admin_client().await,
        }
    }

    pub fn options(&self) -> ConnectOptions {
        let mut opts = ConnectOptions::new(self.ns.clone(), &nats_url(), &redis_url());
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
}

/// A plain fred client on the test Redis, for checks and clean-up; panics with a clear
/// message when Redis is unreachable.
pub async fn admin_client() -> Client {
    let url = redis_url();
    let config = Config::from_url(&url).expect("KURIR_REDIS_URL");
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

/// A TCP proxy on `127.0.0.1:0` in front of `upstream`, which a test can cut (closing
/// every connection and refusing new ones) and restore, to stage an outage of a shared
/// server without touching it.
pub struct Proxy {
    pub port: u16,
    up: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Proxy {
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(tokio::sync::watch::Sender::new(true));
        let state = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !*state.borrow() {
                    drop(client);
                    continue;
                }
                let mut down = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { port, up }
    }

    /// Close every proxied connection and refuse new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Accept connections again.
    pub fn restore(&self) {
        self.up.send_replace(true);
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

/// A local port nothing listens on.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
