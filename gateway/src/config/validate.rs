//! What clap cannot check: settings that depend on each other, bounds, key material
//! and files. Each refusal names its setting.

use super::{Config, MAX_FRAME_BYTES_CEILING};
use crate::auth;

/// A setting the gateway refuses to start with (the servers share one error shape).
pub use kurir_backends::SettingsError as ConfigError;

fn config_error(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(setting, reason)
}

impl From<auth::KeyError> for ConfigError {
    fn from(e: auth::KeyError) -> Self {
        config_error(e.setting(), e.reason())
    }
}

/// `value` must be at least 1.
fn positive<T: PartialOrd + From<u8>>(setting: &'static str, value: T) -> Result<(), ConfigError> {
    if value < T::from(1) {
        return Err(config_error(setting, "must be greater than 0"));
    }
    Ok(())
}

impl Config {
    /// Check what clap cannot.
    ///
    /// # Errors
    /// The first bad setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.has_jwt_keys() {
            return Err(config_error(
                "KURIR_JWT_SECRET, KURIR_JWT_PUBLIC_KEY_FILE or KURIR_JWT_JWKS_URL",
                "set one: refusing to accept unauthenticated clients",
            ));
        }
        auth::check_settings(&self.jwt_settings())?;
        positive("KURIR_OUTBOUND_QUEUE", self.outbound_queue)?;
        positive("KURIR_MAX_CONNECTIONS", self.max_connections)?;
        positive("KURIR_REPLAY_PAGE", self.replay_page)?;
        positive("KURIR_RECEIPT_QUEUE", self.receipt_queue)?;
        positive(
            "KURIR_MAX_CONNECTIONS_PER_USER",
            self.max_connections_per_user,
        )?;
        positive("KURIR_MAX_TOPICS_PER_NODE", self.max_topics_per_node)?;
        if self.write_stall_timeout_ms < 100 {
            return Err(config_error(
                "KURIR_WRITE_STALL_TIMEOUT_MS",
                "must be at least 100",
            ));
        }
        positive(
            "KURIR_CLIENT_FRAMES_PER_SECOND",
            self.client_frames_per_second,
        )?;
        positive("KURIR_CLIENT_FRAMES_BURST", self.client_frames_burst)?;
        // Above 16 MiB a client message is no notification client's; the bound also keeps
        // every length arithmetic on frame headers far from overflow.
        if !(256..=MAX_FRAME_BYTES_CEILING).contains(&self.max_frame_bytes) {
            return Err(config_error(
                "KURIR_MAX_FRAME_BYTES",
                format!("must be between 256 and {MAX_FRAME_BYTES_CEILING}"),
            ));
        }
        positive(
            "KURIR_PARTIAL_MESSAGE_TIMEOUT_MS",
            self.partial_message_timeout_ms,
        )?;
        if self.partial_message_budget_bytes < self.max_frame_bytes {
            return Err(config_error(
                "KURIR_PARTIAL_MESSAGE_BUDGET_BYTES",
                "must be at least KURIR_MAX_FRAME_BYTES",
            ));
        }
        positive("KURIR_HEARTBEAT_MS", self.heartbeat_ms)?;
        if self.idle_timeout_ms <= self.heartbeat_ms {
            return Err(config_error(
                "KURIR_IDLE_TIMEOUT_MS",
                "must be greater than KURIR_HEARTBEAT_MS",
            ));
        }
        positive("KURIR_PROBE_INTERVAL_MS", self.probe_interval_ms)?;
        if self.probe_timeout_ms <= self.probe_interval_ms {
            return Err(config_error(
                "KURIR_PROBE_TIMEOUT_MS",
                "must be greater than KURIR_PROBE_INTERVAL_MS",
            ));
        }
        if self.liveness_ttl_ms < 1_000 {
            return Err(config_error(
                "KURIR_LIVENESS_TTL_MS",
                "must be at least 1000",
            ));
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
            _ => {}
        }
        positive("KURIR_TLS_RELOAD_INTERVAL_MS", self.tls_reload_interval_ms)?;
        positive("KURIR_MAX_PENDING_HANDSHAKES", self.max_pending_handshakes)?;
        positive("KURIR_HANDSHAKE_TIMEOUT_MS", self.handshake_timeout_ms)?;
        self.backends.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurir_backends::Namespace;

    #[test]
    fn refuses_to_start_without_jwt_settings() {
        let mut c = Config::for_test(Namespace::random_for_test());
        assert!(c.validate().is_ok());
        c.jwt_secret = None;
        assert!(c
            .validate()
            .unwrap_err()
            .setting
            .contains("KURIR_JWT_SECRET"));
        c.jwt_secret = Some("only-thirty-one-bytes-long-0123".into());
        let err = c.validate().unwrap_err();
        assert_eq!(err.setting, "KURIR_JWT_SECRET", "{err}");
        assert!(!err.to_string().contains("only-thirty-one"), "{err}");
        c.jwt_secret = Some("exactly-thirty-two-bytes-long-01".into());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn read_limits_are_checked() {
        let mut c = Config::for_test(Namespace::random_for_test());
        assert_eq!(c.max_frame_bytes, 4096, "sized for client JSON frames");
        c.partial_message_timeout_ms = 0;
        assert!(c.validate().is_err());
        c.partial_message_timeout_ms = 10_000;
        c.partial_message_budget_bytes = c.max_frame_bytes - 1;
        assert!(c.validate().is_err());
        c.partial_message_budget_bytes = c.max_frame_bytes;
        assert!(c.validate().is_ok());
        c.max_frame_bytes = usize::MAX;
        c.partial_message_budget_bytes = usize::MAX;
        assert_eq!(c.validate().unwrap_err().setting, "KURIR_MAX_FRAME_BYTES");
    }

    #[test]
    fn tls_cert_and_key_come_together() {
        let mut c = Config::for_test(Namespace::random_for_test());
        c.tls_cert = Some("cert.pem".into());
        assert_eq!(c.validate().unwrap_err().setting, "KURIR_TLS_KEY");
        c.tls_key = Some("key.pem".into());
        assert!(c.validate().is_ok());
        c.tls_cert = None;
        assert_eq!(c.validate().unwrap_err().setting, "KURIR_TLS_CERT");
        c.tls_key = None;
        c.max_pending_handshakes = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn unusable_backbone_files_are_refused_before_start() {
        let mut c = Config::for_test(Namespace::random_for_test());
        c.backends.backbone.nats_ca = Some("/nonexistent/ca.pem".into());
        assert_eq!(c.validate().unwrap_err().setting, "KURIR_NATS_CA");
    }
}
