//! Finished TLS connections as a stream, for servers that take one (tonic's
//! `serve_with_incoming`): the accept loop only accepts; each handshake runs in its own
//! task under a deadline, and at most `max_pending` run at once, so a client that opens
//! a connection and never completes its handshake holds a permit for at most `timeout`
//! and can never stall the accept loop or other clients.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::ServerCerts;

/// `kurir_tls_handshake_failures_total{server, reason}`: connections dropped before their
/// TLS handshake finished: `limit` (too many in progress), `timeout`, `error` (no common
/// protocol, a refused client certificate, not TLS at all…).
pub const HANDSHAKE_FAILURES: &str = "kurir_tls_handshake_failures_total";

/// Default of the handshakes in progress at once.
pub const DEFAULT_MAX_PENDING: usize = 1024;
/// Default time a client has to complete its handshake.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after an accept error other than a vanished peer (e.g. out of file
/// descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Bounds on handshakes in progress.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeLimits {
    /// Handshakes in progress at once; a connection beyond is closed at once.
    pub max_pending: usize,
    /// A connection whose handshake is not done within this is closed.
    pub timeout: Duration,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            max_pending: DEFAULT_MAX_PENDING,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

fn failed(server: &'static str, reason: &'static str) {
    metrics::counter!(HANDSHAKE_FAILURES, "server" => server, "reason" => reason).increment(1);
}

/// Accept on `listener` until `stop`, and yield each connection once its TLS handshake
/// (with the config current at accept) is done. Failed handshakes are logged at debug
/// level and counted, never yielded. The stream ends after `stop`.
pub fn tls_incoming(
    listener: TcpListener,
    certs: Arc<ServerCerts>,
    limits: HandshakeLimits,
    server: &'static str,
    stop: CancellationToken,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    metrics::describe_counter!(
        HANDSHAKE_FAILURES,
        "Connections dropped before their TLS handshake finished, by reason"
    );
    for reason in ["limit", "timeout", "error"] {
        metrics::counter!(HANDSHAKE_FAILURES, "server" => server, "reason" => reason).increment(0);
    }
    // Finished connections wait here for the server to take them; a handshake task that
    // finds it full waits (holding its permit), which slows accepting, not memory.
    let (tx, rx) = mpsc::channel(64);
    let pending = Arc::new(Semaphore::new(limits.max_pending));
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) if is_per_connection(&e) => continue,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&pending).try_acquire_owned() else {
                debug!(%peer, "too many TLS handshakes in progress; connection closed");
                failed(server, "limit");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = certs.acceptor();
            let (tx, stop) = (tx.clone(), stop.clone());
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(limits.timeout, acceptor.accept(tcp));
                let tls = tokio::select! {
                    () = stop.cancelled() => return,
                    done = handshake => match done {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            debug!(%peer, error = %e, "TLS handshake failed");
                            failed(server, "error");
                            return;
                        }
                        Err(_) => {
                            debug!(%peer, "TLS handshake timed out");
                            failed(server, "timeout");
                            return;
                        }
                    },
                };
                let _ = tx.send(Ok(tls)).await;
                drop(permit);
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Errors that concern one connection only (it went away before we accepted it).
pub fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
