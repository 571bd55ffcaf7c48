//! The settings the dispatcher refuses to start with, each named by its variable or
//! flag, checked before any port is bound.

use std::time::Duration;

use super::server::{Config, MIN_API_KEY_BYTES};
use crate::limits::{MAX_REQUEST_TIMEOUT, MAX_SEND_REQUEST_BYTES};

/// A configuration the dispatcher refuses to start with (the servers share one error
/// shape).
pub use kurir_backends::SettingsError as ConfigError;

/// A [`ConfigError`] for `setting`.
fn config_error(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(setting, reason)
}

impl Config {
    /// Everything `bind` and `serve` rely on, checked before a port is bound.
    ///
    /// # Errors
    /// The first setting that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.demo_interval {
            Some(_) if !self.standalone => {
                return Err(config_error("--demo-interval", "needs --standalone"))
            }
            Some(d) if d < Duration::from_millis(100) => {
                return Err(config_error("--demo-interval", "must be at least 100ms"))
            }
            _ => {}
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(config_error(
                    "KURIR_TLS_KEY",
                    "must be set with KURIR_TLS_CERT",
                ))
            }
            (None, Some(_)) => {
                return Err(config_error(
                    "KURIR_TLS_CERT",
                    "must be set with KURIR_TLS_KEY",
                ))
            }
            (None, None) if self.tls_client_ca.is_some() => return Err(config_error(
                "KURIR_TLS_CLIENT_CA",
                "needs KURIR_TLS_CERT and KURIR_TLS_KEY (client certificates are a TLS feature)",
            )),
            _ => {}
        }
        for (setting, value) in [
            ("KURIR_DUE_POLL_MS", self.due_poll_ms),
            ("KURIR_DUE_LEASE_MS", self.due_lease_ms),
            ("KURIR_DUE_BATCH", self.due_batch as u64),
        ] {
            if value == 0 {
                return Err(config_error(setting, "must be greater than 0"));
            }
        }
        if let Err(e) = self.push.validate() {
            return Err(config_error("push settings", e.to_string()));
        }
        if self.tls_reload_interval_ms == 0 {
            return Err(config_error(
                "KURIR_TLS_RELOAD_INTERVAL_MS",
                "must be greater than 0",
            ));
        }
        match (self.api_keys.is_empty(), self.insecure_no_auth) {
            // `--standalone` generates a development key when none is given; with a client
            // CA, client certificates authenticate callers.
            (true, false) if !self.standalone && self.tls_client_ca.is_none() => {
                return Err(config_error(
                    "KURIR_API_KEYS",
                    "no API key configured; set KURIR_API_KEYS or pass --insecure-no-auth",
                ))
            }
            (false, true) => {
                return Err(config_error(
                    "--insecure-no-auth",
                    "conflicts with KURIR_API_KEYS; use one or the other",
                ))
            }
            _ => {}
        }
        for key in &self.api_keys {
            let key = key.expose();
            if key.is_empty() {
                return Err(config_error(
                    "KURIR_API_KEYS",
                    "empty key (check for stray commas)",
                ));
            }
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(config_error(
                    "KURIR_API_KEYS",
                    "keys must be visible ASCII without spaces",
                ));
            }
        }
        // Checked apart so the message can say which key, by position, never by value.
        if let Some((i, key)) = self
            .api_keys
            .iter()
            .enumerate()
            .find(|(_, k)| k.expose().len() < MIN_API_KEY_BYTES)
        {
            return Err(config_error(
                "KURIR_API_KEYS",
                format!(
                    "key {} is {} bytes; keys must be at least {MIN_API_KEY_BYTES} bytes \
                     (e.g. `openssl rand -hex 32`)",
                    i + 1,
                    key.expose().len()
                ),
            ));
        }
        let positive = [
            ("KURIR_MAX_IN_FLIGHT", self.max_in_flight as u64),
            ("KURIR_REQUEST_TIMEOUT_MS", self.request_timeout_ms),
            ("KURIR_MAX_WATCHERS", self.max_watchers as u64),
            ("KURIR_WATCH_BUFFER", self.watch_buffer as u64),
            ("KURIR_READINESS_INTERVAL_MS", self.readiness_interval_ms),
            (
                "KURIR_GRPC_MAX_CONCURRENT_STREAMS",
                u64::from(self.grpc_max_concurrent_streams),
            ),
        ];
        for (setting, value) in positive {
            if value == 0 {
                return Err(config_error(setting, "must be greater than 0"));
            }
        }
        if self.request_timeout() > MAX_REQUEST_TIMEOUT {
            return Err(config_error(
                "KURIR_REQUEST_TIMEOUT_MS",
                "must stay below 29000 (idempotency keys are held pending for 30 s)",
            ));
        }
        // The semaphores behind both limits cap permits at `usize::MAX >> 3`.
        if self.max_in_flight > 1 << 20 || self.max_watchers > 1 << 20 {
            return Err(config_error(
                "KURIR_MAX_IN_FLIGHT",
                "limits must be at most 1048576",
            ));
        }
        if self.grpc_keepalive_ms > 0 && self.grpc_keepalive_timeout_ms == 0 {
            return Err(config_error(
                "KURIR_GRPC_KEEPALIVE_TIMEOUT_MS",
                "must be greater than 0 while KURIR_GRPC_KEEPALIVE_MS is set",
            ));
        }
        let largest_send = MAX_SEND_REQUEST_BYTES;
        if self.grpc_max_message_bytes < largest_send {
            return Err(config_error(
                "KURIR_GRPC_MAX_MESSAGE_BYTES",
                format!("must be at least {largest_send}, the largest valid Send"),
            ));
        }
        if self.backends.nats_url.as_str().trim().is_empty() {
            return Err(config_error("KURIR_NATS_URL", "must not be empty"));
        }
        if self.backends.redis_url.as_str().trim().is_empty() {
            return Err(config_error("KURIR_REDIS_URL", "must not be empty"));
        }
        self.backends
            .validate()
            .map_err(|e| config_error(e.setting, e.reason))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use kurir_backends::{Namespace, Secret};

    use super::*;
    use crate::config::TEST_API_KEY;

    /// The server's flags alone, as `kurir-dispatcher` parses them.
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Flags::try_parse_from(std::iter::once("kurir-dispatcher").chain(args.iter().copied()))
            .map(|f| f.config)
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.api_keys = vec![Secret::from("hunter2-hunter2-hunter2-hunter2-hunter2")];
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("***"));
    }

    #[test]
    fn credentials_in_urls_do_not_leak_through_debug() {
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.backends.redis_url = "redis://:hunter2@redis:6379".into();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn backbone_files_are_read_from_the_environment_names_and_checked() {
        let cli = parse(&[
            "--insecure-no-auth",
            "--nats-creds",
            "/nonexistent/kurir.creds",
        ])
        .unwrap();
        let err = cli.validate().unwrap_err();
        assert_eq!(err.setting, "KURIR_NATS_CREDS");
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.backends.backbone.redis_client_cert = Some("/some/cert.pem".into());
        assert_eq!(
            config.validate().unwrap_err().setting,
            "KURIR_REDIS_CLIENT_KEY"
        );
        assert_eq!(
            config.connect_options().security,
            config.backends.backbone,
            "connect_options passes the files on"
        );
    }

    #[test]
    fn auth_is_required_unless_explicitly_disabled() {
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.api_keys.clear();
        let err = config.validate().unwrap_err();
        assert_eq!(err.setting, "KURIR_API_KEYS");
        config.insecure_no_auth = true;
        config.validate().unwrap();
        config.api_keys = vec![Secret::from(TEST_API_KEY)];
        assert_eq!(config.validate().unwrap_err().setting, "--insecure-no-auth");
    }

    #[test]
    fn tls_settings_come_together_and_a_client_ca_replaces_api_keys() {
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.tls_cert = Some("cert.pem".into());
        assert_eq!(config.validate().unwrap_err().setting, "KURIR_TLS_KEY");
        config.tls_cert = None;
        config.tls_client_ca = Some("ca.pem".into());
        assert_eq!(
            config.validate().unwrap_err().setting,
            "KURIR_TLS_CLIENT_CA"
        );
        config.tls_cert = Some("cert.pem".into());
        config.tls_key = Some("key.pem".into());
        config.api_keys.clear();
        config.validate().unwrap();
        config.tls_client_ca = None;
        assert_eq!(config.validate().unwrap_err().setting, "KURIR_API_KEYS");
    }

    #[test]
    fn the_request_timeout_stays_below_the_pending_claim() {
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.request_timeout_ms = 28_999;
        config.validate().unwrap();
        config.request_timeout_ms = 29_000;
        assert_eq!(
            config.validate().unwrap_err().setting,
            "KURIR_REQUEST_TIMEOUT_MS"
        );
    }

    #[test]
    fn bad_keys_and_zero_limits_are_refused() {
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.api_keys = vec![Secret::from("a"), Secret::from("")];
        assert!(config.validate().is_err());
        config.api_keys = vec![Secret::from("a b")];
        assert!(config.validate().is_err());
        config.api_keys = vec![Secret::from(TEST_API_KEY)];
        config.max_in_flight = 0;
        assert_eq!(
            config.validate().unwrap_err().setting,
            "KURIR_MAX_IN_FLIGHT"
        );
    }

    #[test]
    fn api_keys_shorter_than_32_bytes_are_refused_without_showing_them() {
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        let short = "s3cr3t-but-only-31-bytes-long!!";
        assert_eq!(short.len(), 31);
        config.api_keys = vec![Secret::from(TEST_API_KEY), Secret::from(short)];
        let err = config.validate().unwrap_err();
        assert_eq!(err.setting, "KURIR_API_KEYS");
        let line = err.to_string();
        assert!(line.contains("key 2 is 31 bytes"), "{line}");
        assert!(line.contains("at least 32"), "{line}");
        assert!(!line.contains(short), "{line}");
        config.api_keys = vec![
            Secret::from(TEST_API_KEY),
            Secret::from(format!("{short}!")),
        ];
        config.validate().unwrap();
        // Unauthenticated mode needs no key at all.
        config.api_keys.clear();
        config.insecure_no_auth = true;
        config.validate().unwrap();
    }

    #[test]
    fn grpc_limits_have_defaults_and_are_checked() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.grpc_max_concurrent_streams, 256);
        assert_eq!(c.grpc_keepalive(), Some(Duration::from_secs(30)));
        assert_eq!(c.grpc_keepalive_timeout(), Duration::from_secs(10));
        assert_eq!(c.grpc_tcp_keepalive(), Some(Duration::from_secs(60)));
        assert_eq!(c.grpc_max_message_bytes, 4 * 1024 * 1024);
        assert_eq!(c.grpc_max_connection_age(), None);
        assert!(c.grpc_reflection);
        let c = parse(&["--grpc-reflection", "false", "--grpc-keepalive-ms", "0"]).unwrap();
        assert!(!c.grpc_reflection);
        assert_eq!(c.grpc_keepalive(), None);

        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.grpc_max_concurrent_streams = 0;
        assert_eq!(
            config.validate().unwrap_err().setting,
            "KURIR_GRPC_MAX_CONCURRENT_STREAMS"
        );
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.grpc_keepalive_timeout_ms = 0;
        assert_eq!(
            config.validate().unwrap_err().setting,
            "KURIR_GRPC_KEEPALIVE_TIMEOUT_MS"
        );
        config.grpc_keepalive_ms = 0;
        config.validate().unwrap();
        let mut config = Config::for_test(Namespace::parse("t").unwrap());
        config.grpc_max_message_bytes = MAX_SEND_REQUEST_BYTES - 1;
        assert_eq!(
            config.validate().unwrap_err().setting,
            "KURIR_GRPC_MAX_MESSAGE_BYTES"
        );
        config.grpc_max_message_bytes += 1;
        config.validate().unwrap();
    }
}
