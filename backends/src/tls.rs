//! TLS and credentials of the two backbone hops (process → NATS, process → Redis): the
//! files named by `KURIR_NATS_*` / `KURIR_REDIS_*`, read and checked once at start-up so
//! a missing or malformed file stops the process with a clear message instead of
//! failing every reconnect attempt later.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use thiserror::Error;

/// Credentials and TLS files of the NATS and Redis connections; the URLs carry the rest
/// (`tls://`, `rediss://`, `user:password@`). Both binaries flatten this into their
/// command line, so the names and their meaning are the same everywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct BackboneSecurity {
    /// NATS credentials file: a `.creds` file (user JWT + nkey seed, as `nsc` writes it),
    /// or a file holding only an nkey seed (`SU…`) for servers with nkey users.
    #[cfg_attr(feature = "clap", arg(long, env = "KURIR_NATS_CREDS"))]
    pub nats_creds: Option<PathBuf>,

    /// PEM CA bundle that signs the NATS servers' certificates (instead of the system
    /// roots). Setting it requires TLS to NATS whatever the URL scheme.
    #[cfg_attr(feature = "clap", arg(long, env = "KURIR_NATS_CA"))]
    pub nats_ca: Option<PathBuf>,

    /// PEM client certificate for NATS (mutual TLS); needs KURIR_NATS_CLIENT_KEY.
    #[cfg_attr(feature = "clap", arg(long, env = "KURIR_NATS_CLIENT_CERT"))]
    pub nats_client_cert: Option<PathBuf>,

    /// PEM private key of KURIR_NATS_CLIENT_CERT.
    #[cfg_attr(feature = "clap", arg(long, env = "KURIR_NATS_CLIENT_KEY"))]
    pub nats_client_key: Option<PathBuf>,

    /// PEM CA bundle that signs the Redis servers' certificates (instead of the system
    /// roots); KURIR_REDIS_URL must then be `rediss://` or `rediss-cluster://`.
    #[cfg_attr(feature = "clap", arg(long, env = "KURIR_REDIS_CA"))]
    pub redis_ca: Option<PathBuf>,

    /// PEM client certificate for Redis (`tls-auth-clients yes`); needs
    /// KURIR_REDIS_CLIENT_KEY.
    #[cfg_attr(feature = "clap", arg(long, env = "KURIR_REDIS_CLIENT_CERT"))]
    pub redis_client_cert: Option<PathBuf>,

    /// PEM private key of KURIR_REDIS_CLIENT_CERT.
    #[cfg_attr(feature = "clap", arg(long, env = "KURIR_REDIS_CLIENT_KEY"))]
    pub redis_client_key: Option<PathBuf>,
}

/// A setting of [`BackboneSecurity`] that cannot work. Names the setting and the file,
/// never a file's content.
#[derive(Debug, Error)]
#[error("{setting}: {reason}")]
pub struct SecurityError {
    pub setting: &'static str,
    pub reason: String,
}

fn bad(setting: &'static str, reason: impl Into<String>) -> SecurityError {
    SecurityError {
        setting,
        reason: reason.into(),
    }
}

/// What a NATS credentials file holds.
#[derive(Clone)]
pub(crate) enum NatsCredentials {
    /// The whole `.creds` text, for `ConnectOptions::credentials`.
    Creds(String),
    /// An nkey user seed.
    Seed(String),
}

impl BackboneSecurity {
    /// Read and check every file named, as [`crate::Backends::connect`] will.
    ///
    /// # Errors
    /// The first setting whose file is missing, unreadable or malformed, or a
    /// certificate without its key.
    pub fn validate(&self) -> Result<(), SecurityError> {
        self.nats_credentials()?;
        self.nats_tls()?;
        self.redis_tls()?;
        Ok(())
    }

    pub(crate) fn nats_credentials(&self) -> Result<Option<NatsCredentials>, SecurityError> {
        let Some(path) = &self.nats_creds else {
            return Ok(None);
        };
        const SETTING: &str = "KURIR_NATS_CREDS";
        let text = read(SETTING, path)?;
        if text.contains("-----BEGIN NATS USER JWT-----") {
            if !text.contains("-----BEGIN USER NKEY SEED-----") {
                return Err(bad(
                    SETTING,
                    format!("{} has a user JWT but no nkey seed", path.display()),
                ));
            }
            return Ok(Some(NatsCredentials::Creds(text)));
        }
        let seed = text.trim();
        if seed.starts_with("SU") && nkeys::KeyPair::from_seed(seed).is_ok() {
            return Ok(Some(NatsCredentials::Seed(seed.to_owned())));
        }
        Err(bad(
            SETTING,
            format!(
                "{} is neither a .creds file nor an nkey user seed (SU…)",
                path.display()
            ),
        ))
    }

    /// The rustls config for NATS, when a CA or client certificate is set.
    pub(crate) fn nats_tls(&self) -> Result<Option<ClientConfig>, SecurityError> {
        client_config(
            ("KURIR_NATS_CA", self.nats_ca.as_deref()),
            (
                "KURIR_NATS_CLIENT_CERT",
                self.nats_client_cert.as_deref(),
                "KURIR_NATS_CLIENT_KEY",
                self.nats_client_key.as_deref(),
            ),
        )
    }

    /// The rustls config for Redis, when a CA or client certificate is set.
    pub(crate) fn redis_tls(&self) -> Result<Option<ClientConfig>, SecurityError> {
        client_config(
            ("KURIR_REDIS_CA", self.redis_ca.as_deref()),
            (
                "KURIR_REDIS_CLIENT_CERT",
                self.redis_client_cert.as_deref(),
                "KURIR_REDIS_CLIENT_KEY",
                self.redis_client_key.as_deref(),
            ),
        )
    }
}

fn read(setting: &'static str, path: &Path) -> Result<String, SecurityError> {
    std::fs::read_to_string(path)
        .map_err(|e| bad(setting, format!("cannot read {}: {e}", path.display())))
}

/// Roots: the CA file if given (it replaces the system roots: a private CA should not
/// widen trust to every public one), else the system roots. Client certificate: both
/// files or neither.
fn client_config(
    (ca_setting, ca): (&'static str, Option<&Path>),
    (cert_setting, cert, key_setting, key): (
        &'static str,
        Option<&Path>,
        &'static str,
        Option<&Path>,
    ),
) -> Result<Option<ClientConfig>, SecurityError> {
    if ca.is_none() && cert.is_none() && key.is_none() {
        return Ok(None);
    }
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = certificates(ca_setting, path)?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad(
                    ca_setting,
                    format!("{} holds no usable CA certificate", path.display()),
                ));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(ca_setting, e.to_string()))?
            .with_root_certificates(roots);
    let config = match (cert, key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err(bad(key_setting, format!("needed with {cert_setting}"))),
        (None, Some(_)) => return Err(bad(cert_setting, format!("needed with {key_setting}"))),
        (Some(cert), Some(key_path)) => {
            let chain = certificates(cert_setting, cert)?;
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
                bad(
                    key_setting,
                    format!("no PEM private key in {}: {e}", key_path.display()),
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad(cert_setting, format!("certificate and key do not fit: {e}")))?
        }
    };
    Ok(Some(config))
}

fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            bad(
                setting,
                format!("cannot read PEM certificates from {}: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(bad(
            setting,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(content)
    }

    /// A minimal temporary file, removed on drop.
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn with(content: &str) -> Self {
                let path = std::env::temp_dir()
                    .join(format!("kurir-tls-test-{}", uuid::Uuid::new_v4().simple()));
                std::fs::write(&path, content).unwrap();
                Self(path)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn nothing_set_is_valid_and_builds_nothing() {
        let s = BackboneSecurity::default();
        s.validate().unwrap();
        assert!(s.nats_tls().unwrap().is_none());
        assert!(s.redis_tls().unwrap().is_none());
        assert!(s.nats_credentials().unwrap().is_none());
    }

    #[test]
    fn missing_and_malformed_files_name_the_setting() {
        let s = BackboneSecurity {
            nats_ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = s.validate().unwrap_err();
        assert_eq!(e.setting, "KURIR_NATS_CA");
        let junk = file("not a certificate");
        let s = BackboneSecurity {
            redis_ca: Some(junk.0.clone()),
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().setting, "KURIR_REDIS_CA");
        let s = BackboneSecurity {
            nats_creds: Some(junk.0.clone()),
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().setting, "KURIR_NATS_CREDS");
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let s = BackboneSecurity {
            redis_client_cert: Some("/some/cert.pem".into()),
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().setting, "KURIR_REDIS_CLIENT_KEY");
        let s = BackboneSecurity {
            nats_client_key: Some("/some/key.pem".into()),
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().setting, "KURIR_NATS_CLIENT_CERT");
    }

    #[test]
    fn an_nkey_seed_file_is_accepted_and_its_content_never_shown() {
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        let f = file(&format!("{seed}\n"));
        let s = BackboneSecurity {
            nats_creds: Some(f.0.clone()),
            ..Default::default()
        };
        assert!(matches!(
            s.nats_credentials().unwrap(),
            Some(NatsCredentials::Seed(got)) if got == seed
        ));
        // A creds file that lost its seed: the message names the file, not the JWT.
        let f = file("-----BEGIN NATS USER JWT-----\neyJsecret\n------END NATS USER JWT------\n");
        let s = BackboneSecurity {
            nats_creds: Some(f.0.clone()),
            ..Default::default()
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.contains("no nkey seed") && !e.contains("eyJsecret"),
            "{e}"
        );
    }
}
