//! Outages a test stages without touching the shared servers: private NATS and Redis
//! servers it can stop, pause, kill and restart; a private NATS cluster and Redis
//! Cluster; a TCP proxy it
//! can cut; and `redis-cli` to inspect or bend what a server holds.

mod nats;
mod nats_cluster;
mod proxy;
mod redis;
pub mod redis_cli;
mod redis_cluster;

pub use nats::OwnNats;
pub use nats_cluster::NatsCluster;
pub use proxy::Proxy;
pub use redis::OwnRedis;
pub use redis_cluster::{RedisCluster, Roles};

use std::path::PathBuf;

use crate::poll::TimedOut;
use crate::process::ProcessError;

/// A private server that could not be started or set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    TimedOut(#[from] TimedOut),
    #[error(transparent)]
    RedisCli(#[from] redis_cli::RedisCliError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Where private servers write their logs.
fn log_dir() -> PathBuf {
    std::env::temp_dir().join("kurir-test-servers")
}

/// A scratch directory of its own for a private server.
fn scratch(what: &str) -> Result<PathBuf, ServerError> {
    let dir = std::env::temp_dir().join(format!("kurir-{what}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).map_err(|source| ServerError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    Ok(dir)
}

/// `name` from `PATH`, or the first of `fallbacks` that exists.
pub fn find_program(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| p.exists())
}
