//! `kurir-gateway`: parse config, install telemetry, connect the backends, serve until
//! SIGTERM/SIGINT, drain.

use clap::Parser;
use kurir_backends::{Backends, ConnectOptions};
use kurir_gateway::{telemetry, Config, Gateway};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("kurir-gateway: {e}");
        std::process::exit(64);
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    runtime.enable_all().build()?.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    telemetry::init_tracing(&config.log_format);
    let metrics = telemetry::install_recorder().map_err(anyhow::Error::msg)?;
    let mut opts = ConnectOptions::new(
        config.namespace.clone(),
        config.nats_url.as_str(),
        config.redis_url.as_str(),
    );
    opts.presence_ttl = config.presence_ttl();
    opts.inbox_capacity = config.inbox_capacity;
    opts.client_name = "kurir-gateway".into();
    opts.security = config.backbone.clone();
    let backends = Backends::connect(&opts).await?;
    tracing::info!(config = ?config, "starting");
    let gateway = match Gateway::bind(config, backends, Some(metrics)).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("kurir-gateway: {e}");
            std::process::exit(64);
        }
    };
    gateway.serve(shutdown_signal()).await?;
    Ok(())
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown signal received");
}
