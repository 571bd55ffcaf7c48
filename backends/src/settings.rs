//! The backend settings both server binaries take, as one clap struct they flatten:
//! namespace, NATS, Redis (with credentials and TLS), the inbox and the command timeout.
//! Declared once, so the gateway and the dispatcher cannot drift apart.

use std::time::Duration;

use clap::Args;
use thiserror::Error;

use crate::namespace::Namespace;
use crate::options::{ConnectOptions, DEFAULT_COMMAND_TIMEOUT, DEFAULT_INBOX_CAPACITY};
use crate::secret::ServerUrl;
use crate::tls::BackboneSecurity;

/// Default of `KURIR_NAMESPACE`.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Default of `KURIR_NATS_URL`.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Default of `KURIR_REDIS_URL`.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Default of `KURIR_BACKEND_TIMEOUT_MS`.
#[allow(clippy::cast_possible_truncation)]
pub const DEFAULT_BACKEND_TIMEOUT_MS: u64 = DEFAULT_COMMAND_TIMEOUT.as_millis() as u64;

/// Where the shared state lives and how to talk to it.
#[derive(Debug, Clone, Args)]
pub struct BackendSettings {
    /// Prefix of every Redis key and NATS subject (tenancy, test isolation).
    #[arg(long, env = "KURIR_NAMESPACE", default_value = DEFAULT_NAMESPACE, value_parser = parse_namespace)]
    pub namespace: Namespace,

    /// NATS server(s), comma-separated.
    #[arg(long, env = "KURIR_NATS_URL", default_value = DEFAULT_NATS_URL)]
    pub nats_url: ServerUrl,

    /// Redis URL (`redis://`, `rediss://` or `redis-cluster://h:p,h:p`).
    #[arg(long, env = "KURIR_REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis_url: ServerUrl,

    /// Credentials and TLS files of the NATS and Redis connections.
    #[command(flatten)]
    pub backbone: BackboneSecurity,

    /// Entries each user's inbox keeps (oldest trimmed first). Every gateway and
    /// dispatcher of a namespace must agree; the first to start records it in Redis and
    /// a process with another value refuses to start.
    #[arg(long, env = "KURIR_INBOX_CAPACITY", default_value_t = DEFAULT_INBOX_CAPACITY)]
    pub inbox_capacity: usize,

    /// Timeout of one Redis command or NATS flush, in milliseconds.
    #[arg(long, env = "KURIR_BACKEND_TIMEOUT_MS", default_value_t = DEFAULT_BACKEND_TIMEOUT_MS)]
    pub backend_timeout_ms: u64,
}

/// A setting a server refuses to start with, named by its variable or flag: the backend
/// settings here, and every other setting of the gateway and the dispatcher.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{setting}: {reason}")]
pub struct SettingsError {
    /// The variable (or variables) at fault, e.g. `KURIR_HEARTBEAT_MS`.
    pub setting: &'static str,
    pub reason: String,
}

impl SettingsError {
    pub fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
        }
    }
}

impl BackendSettings {
    /// The defaults with this namespace, for tests: reads no environment.
    #[must_use]
    pub fn for_test(namespace: Namespace) -> Self {
        Self {
            namespace,
            nats_url: DEFAULT_NATS_URL.into(),
            redis_url: DEFAULT_REDIS_URL.into(),
            backbone: BackboneSecurity::default(),
            inbox_capacity: DEFAULT_INBOX_CAPACITY,
            backend_timeout_ms: DEFAULT_BACKEND_TIMEOUT_MS,
        }
    }

    /// # Errors
    /// A zero capacity or timeout, or credentials/TLS files that cannot be used.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.inbox_capacity == 0 {
            return Err(SettingsError {
                setting: "KURIR_INBOX_CAPACITY",
                reason: "must be at least 1".into(),
            });
        }
        if self.backend_timeout_ms == 0 {
            return Err(SettingsError {
                setting: "KURIR_BACKEND_TIMEOUT_MS",
                reason: "must be at least 1".into(),
            });
        }
        self.backbone.validate().map_err(|e| SettingsError {
            setting: e.setting,
            reason: e.reason,
        })
    }

    #[must_use]
    pub fn backend_timeout(&self) -> Duration {
        Duration::from_millis(self.backend_timeout_ms)
    }

    /// The options to connect with; `client_name` shows in `CLIENT LIST` and NATS
    /// monitoring (`kurir-gateway gw-1`).
    #[must_use]
    pub fn connect_options(&self, client_name: impl Into<String>) -> ConnectOptions {
        let mut opts = ConnectOptions::new(
            self.namespace.clone(),
            self.nats_url.as_str(),
            self.redis_url.as_str(),
        );
        opts.client_name = client_name.into();
        opts.security = self.backbone.clone();
        opts.inbox_capacity = self.inbox_capacity;
        opts.command_timeout = self.backend_timeout();
        opts
    }
}

fn parse_namespace(s: &str) -> Result<Namespace, String> {
    Namespace::parse(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: BackendSettings,
    }

    #[test]
    fn flags_parse_and_test_settings_read_no_environment() {
        let cli = Cli::try_parse_from([
            "x",
            "--namespace",
            "t1",
            "--inbox-capacity",
            "5",
            "--backend-timeout-ms",
            "250",
        ])
        .unwrap();
        assert_eq!(cli.settings.namespace.as_str(), "t1");
        let opts = cli.settings.connect_options("kurir-test");
        assert_eq!(opts.inbox_capacity, 5);
        assert_eq!(opts.command_timeout, Duration::from_millis(250));
        assert_eq!(opts.client_name, "kurir-test");
        let test = BackendSettings::for_test(Namespace::parse("t2").unwrap());
        assert_eq!(test.redis_url.as_str(), DEFAULT_REDIS_URL);
        assert_eq!(test.validate(), Ok(()));
    }

    #[test]
    fn zero_capacity_and_timeout_are_refused() {
        let mut s = BackendSettings::for_test(Namespace::parse("t").unwrap());
        s.inbox_capacity = 0;
        assert_eq!(s.validate().unwrap_err().setting, "KURIR_INBOX_CAPACITY");
        s.inbox_capacity = 1;
        s.backend_timeout_ms = 0;
        assert_eq!(
            s.validate().unwrap_err().setting,
            "KURIR_BACKEND_TIMEOUT_MS"
        );
    }
}
