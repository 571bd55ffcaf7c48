//! Fixtures for end-to-end tests: the real `kurir-dispatcher` and `kurir-gateway`
//! binaries as separate processes on loopback ports, against the Redis and NATS named by
//! `KURIR_REDIS_URL` / `KURIR_NATS_URL`, each cluster in its own random namespace.
//! Processes are killed by PID when their handle drops.
//!
//! The pieces: `gateway`, `dispatcher` and `cluster` start processes (through
//! `kurir-testkit`'s harness, which also finds any workspace binary with [`bin`]);
//! `api` calls the dispatcher; `ws_client` is one WebSocket user, `sse_client` one SSE
//! user, `mqtt_client` one MQTT device, `fleet` many that reconnect (over any of them);
//! `steady` a stream of sends through a fault and the check after it; `metrics` reads
//! `/metrics`; `tokens` makes users and their tokens; `redis_keys` inspects and deletes a
//! namespace's keys; `offline` starts dispatchers that push to a fake Web Push service.
//! Faults (private NATS and Redis,
//! `redis-cli`) and polling come from `kurir-testkit` and are re-exported here.
#![forbid(unsafe_code)]

mod api;
mod cluster;
mod dispatcher;
mod fleet;
mod gateway;
mod metrics;
mod mqtt_client;
mod offline;
mod redis_keys;
mod sse_client;
pub mod steady;
mod tokens;
mod ws_client;

pub use api::{api_client, note, send, Api};
pub use cluster::Cluster;
pub use dispatcher::DispatcherProc;
pub use fleet::{Fleet, Reconnect, SessionEnd, Transport, DROPPED};
pub use gateway::{GatewayOpts, GatewayProc};
pub use metrics::{metric, parse_metrics, series_value};
pub use mqtt_client::{closes_counted, mqtt_all_gone, mqtt_device, MqttClient, Received};
pub use offline::{register_browser, send_with_fallback, OfflineCluster, DUE_LEASE_MS};
pub use redis_keys::{cleanup_namespace, inbox_entries};
pub use sse_client::SseClient;
pub use tokens::{token, token_with_secret, user};
pub use ws_client::{Client, Ended};

pub use kurir_testkit::faults::redis_cli::{redis_cli, redis_cli_batch, redis_quote};
pub use kurir_testkit::faults::{NatsCluster, OwnNats, OwnRedis, RedisCluster};
pub use kurir_testkit::poll::poll;
pub use kurir_testkit::process::Signal;
pub use kurir_testkit::{
    bin, eventually, free_port, nats_url, random_namespace, redis_url, Process as Proc,
};

pub const JWT_SECRET: &str = "e2e-jwt-secret-0123456789abcdef-0123456789";
pub const API_KEY: &str = "e2e-api-key-0123456789abcdef-0123456789";
