//! The signal that stops a server: SIGTERM (Kubernetes, systemd) or SIGINT (a terminal).

/// Resolves on the first SIGTERM or SIGINT. If the SIGTERM handler cannot be installed
/// (no signal support in this environment), it says so in the log and waits for SIGINT
/// alone instead of panicking.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; only SIGINT stops this process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown signal received");
}
