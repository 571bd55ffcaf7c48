//! `kurir-dispatcher`: parse the command line; either run a client subcommand, or install
//! telemetry, connect the backends and serve until SIGTERM/SIGINT.

use std::process::ExitCode;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::error::ErrorKind;
use clap::Parser;
use kurir_backends::Backends;
use kurir_dispatcher::config::{one_line, Cli};
use kurir_dispatcher::standalone::Standalone;
use kurir_dispatcher::{client, telemetry, Config, Dispatcher, StartError};

/// `EX_USAGE`: bad flags, environment or configuration.
const EX_USAGE: u8 = 64;
/// `EX_UNAVAILABLE`: a port could not be bound.
const EX_UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => return fail(EX_USAGE, one_line(&e)),
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if cli.config.worker_threads > 0 {
        runtime.worker_threads(cli.config.worker_threads);
    }
    match runtime.enable_all().build() {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => fail(1, format!("runtime: {e}")),
    }
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Some(command) => match client::run(command).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, e),
        },
        None => serve(cli.config).await,
    }
}

async fn serve(config: Config) -> ExitCode {
    if let Err(e) = config.validate() {
        return fail(EX_USAGE, e);
    }
    telemetry::init_tracing(config.log_format);
    let metrics = match telemetry::install_recorder() {
        Ok(handle) => handle,
        Err(e) => return fail(1, format!("metrics recorder: {e}")),
    };
    if config.standalone {
        return standalone(config, metrics).await;
    }
    let backends = match Backends::connect(&config.connect_options()).await {
        Ok(b) => b,
        Err(e) => return fail(EX_USAGE, format!("backends: {e}")),
    };
    tracing::info!(config = ?config, "starting");
    let dispatcher = match Dispatcher::bind(config, backends, metrics).await {
        Ok(d) => d,
        Err(e @ StartError::Config(_)) => return fail(EX_USAGE, e),
        Err(e @ StartError::Bind { .. }) => return fail(EX_UNAVAILABLE, e),
        Err(e) => return fail(EX_USAGE, e),
    };
    match dispatcher.serve(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

/// `--standalone`: in-memory backends and an embedded gateway in this process.
async fn standalone(
    config: Config,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> ExitCode {
    let node = match Standalone::bind(config, metrics).await {
        Ok(n) => n,
        Err(e @ StartError::Bind { .. }) => return fail(EX_UNAVAILABLE, e),
        Err(e) => return fail(EX_USAGE, e),
    };
    match node.serve(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

/// One line on stderr, then the exit code.
fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("kurir-dispatcher: {message}");
    ExitCode::from(code)
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; only SIGINT stops the dispatcher");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown signal received");
}
