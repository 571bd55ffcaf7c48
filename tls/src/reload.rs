//! The current server config, and the task that replaces it when the PEM files change.
//!
//! Connections read the config once, at accept ([`ServerCerts::acceptor`]): a reload
//! reaches new connections only, and open ones keep the keys they agreed on. A reload
//! that fails (a half-written file, a key that does not match the new certificate) is
//! logged and counted, and the old config stays in force; the next change of the files,
//! or the next SIGHUP, tries again.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::ServerConfig;
use tokio::signal::unix::{signal, SignalKind};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{pem, TlsError, TlsFiles};

/// `kurir_tls_reloads_total{server, outcome}`: reloads by outcome (`ok`, `error`).
pub const RELOADS: &str = "kurir_tls_reloads_total";

/// Default interval at which the files' modification times are compared.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Describe the TLS metrics (once per process is enough; more is harmless).
pub fn describe() {
    metrics::describe_counter!(
        RELOADS,
        "Certificate reloads by outcome (error: the old certificate stays in use)"
    );
}

/// What identifies one version of a file: a rewrite in place changes the mtime or the
/// size, an atomic rename (or a Kubernetes secret update) changes the inode too.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// A server's TLS config, reloadable. Cheap to share behind an `Arc`.
pub struct ServerCerts {
    files: TlsFiles,
    alpn: Vec<&'static [u8]>,
    /// `gateway` or `dispatcher`: the `server` label of the metrics.
    server: &'static str,
    current: ArcSwap<ServerConfig>,
    /// The files' stamps at the last load attempt, good or bad.
    seen: Mutex<Vec<Stamp>>,
}

impl std::fmt::Debug for ServerCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCerts")
            .field("files", &self.files)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl ServerCerts {
    /// Load the files once; the server refuses to start if this fails.
    ///
    /// # Errors
    /// See [`pem::server_config`].
    pub fn load(
        files: TlsFiles,
        alpn: &[&'static [u8]],
        server: &'static str,
    ) -> Result<Arc<Self>, TlsError> {
        let seen = Self::stamps(&files);
        let config = pem::server_config(&files, alpn)?;
        describe();
        for outcome in ["ok", "error"] {
            metrics::counter!(RELOADS, "server" => server, "outcome" => outcome).increment(0);
        }
        Ok(Arc::new(Self {
            files,
            alpn: alpn.to_vec(),
            server,
            current: ArcSwap::from_pointee(config),
            seen: Mutex::new(seen),
        }))
    }

    fn stamps(files: &TlsFiles) -> Vec<Stamp> {
        [
            Some(&files.cert),
            Some(&files.key),
            files.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|p| stamp(p))
        .collect()
    }

    /// The config new connections use now.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// An acceptor for one new connection, with the current config.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config())
    }

    /// Whether client certificates are required (a client CA is configured).
    pub fn requires_client_certs(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Read the files again and, if they make a good config, use it for new connections.
    ///
    /// # Errors
    /// The new files are bad; the config in use is unchanged.
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.seen.lock() = Self::stamps(&self.files);
        let outcome = pem::server_config(&self.files, &self.alpn);
        let label = if outcome.is_ok() { "ok" } else { "error" };
        metrics::counter!(RELOADS, "server" => self.server, "outcome" => label).increment(1);
        match outcome {
            Ok(config) => {
                self.current.store(Arc::new(config));
                info!(server = self.server, cert = %self.files.cert.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                warn!(server = self.server, error = %e, "TLS certificate reload failed; the previous certificate stays in use");
                Err(e)
            }
        }
    }

    /// Reload if any file changed since the last attempt.
    fn reload_if_changed(&self) {
        if *self.seen.lock() != Self::stamps(&self.files) {
            let _ = self.reload();
        }
    }

    /// The reload task: compares the files' stamps every `every`, and reloads at once on
    /// SIGHUP. The signal handler is installed before this returns, so a SIGHUP sent
    /// after it cannot kill the process. Runs until `stop`.
    ///
    /// # Errors
    /// The SIGHUP handler cannot be installed.
    pub fn watch(
        self: &Arc<Self>,
        every: Duration,
        stop: CancellationToken,
    ) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
        let mut hangup = signal(SignalKind::hangup())?;
        let this = Arc::clone(self);
        Ok(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.reset();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => this.reload_if_changed(),
                    Some(()) = hangup.recv() => {
                        info!(server = this.server, "SIGHUP: reloading the TLS certificate");
                        let _ = this.reload();
                    }
                }
            }
        })
    }
}
