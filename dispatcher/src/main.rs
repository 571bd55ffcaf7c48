//! `kurir-dispatcher`: parse the command line, install telemetry, connect the backends
//! and serve until SIGTERM/SIGINT. (`--standalone` hands over to the `kurir` command.)

use std::process::ExitCode;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::error::ErrorKind;
use clap::Parser;
use kurir_backends::Backends;
use kurir_dispatcher::{standalone, telemetry, Config, Dispatcher, StartError};
use kurir_runtime::cli::{one_line, EX_UNAVAILABLE, EX_USAGE};

/// The server's command line: flags and `KURIR_*` variables.
#[derive(Debug, Parser)]
#[command(
    name = "kurir-dispatcher",
    version,
    about = "Kurir gRPC dispatcher: validates, stores and routes notifications to gateways"
)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

fn main() -> ExitCode {
    let config = match Cli::try_parse() {
        Ok(cli) => cli.config,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => return fail(EX_USAGE, one_line(&e)),
    };
    if config.standalone {
        // Returns only when `kurir` could not be run.
        return fail(EX_UNAVAILABLE, standalone::exec_kurir());
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    match runtime.enable_all().build() {
        Ok(rt) => rt.block_on(serve(config)),
        Err(e) => fail(1, format!("runtime: {e}")),
    }
}

async fn serve(config: Config) -> ExitCode {
    if let Err(e) = config.validate() {
        return fail(EX_USAGE, e);
    }
    kurir_runtime::logging::init(config.log_format);
    let metrics = match telemetry::install_recorder() {
        Ok(handle) => handle,
        Err(e) => return fail(1, format!("metrics recorder: {e}")),
    };
    let backends = match Backends::connect(&config.connect_options()).await {
        Ok(b) => b,
        Err(e) => return fail(EX_USAGE, format!("backends: {e}")),
    };
    tracing::info!(config = ?config, "starting");
    let dispatcher = match Dispatcher::bind(config, backends, metrics).await {
        Ok(d) => d,
        Err(e @ (StartError::Config(_) | StartError::Push(_))) => return fail(EX_USAGE, e),
        Err(e @ StartError::Bind { .. }) => return fail(EX_UNAVAILABLE, e),
    };
    match dispatcher.serve(kurir_runtime::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

/// One line on stderr, then the exit code.
fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("kurir-dispatcher: {message}");
    ExitCode::from(code)
}
