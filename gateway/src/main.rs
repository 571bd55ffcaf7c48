//! `kurir-gateway`: parse the configuration, install logs and metrics, connect the
//! backends, serve until SIGTERM/SIGINT, drain.
//!
//! Exit codes: 0 after a drain (and for `--help`, `--version`); 64 (`EX_USAGE`) for bad
//! flags, environment or configuration; 69 (`EX_UNAVAILABLE`) when a port cannot be
//! bound; 1 for anything else. A failure is one line on stderr, `kurir-gateway: …`.

use std::fmt::Display;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use kurir_backends::Backends;
use kurir_gateway::{telemetry, Config, Gateway, StartError};
use kurir_runtime::cli::{one_line, EX_UNAVAILABLE, EX_USAGE};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => return fail(EX_USAGE, one_line(&e)),
    };
    if let Err(e) = config.validate() {
        return fail(EX_USAGE, e);
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    match runtime.enable_all().build() {
        Ok(rt) => rt.block_on(run(config)),
        Err(e) => fail(1, format!("runtime: {e}")),
    }
}

async fn run(config: Config) -> ExitCode {
    kurir_runtime::logging::init(config.log_format);
    let metrics = match kurir_runtime::metrics::install(telemetry::HISTOGRAMS) {
        Ok(handle) => handle,
        Err(e) => return fail(1, e),
    };
    let backends = match Backends::connect(&config.connect_options()).await {
        Ok(b) => b,
        Err(e) => return fail(EX_USAGE, format!("backends: {e}")),
    };
    tracing::info!(config = ?config, "starting");
    let gateway = match Gateway::bind(config, backends, Some(metrics)).await {
        Ok(g) => g,
        Err(e @ StartError::Bind { .. }) => return fail(EX_UNAVAILABLE, e),
        Err(e @ StartError::Config(_)) => return fail(EX_USAGE, e),
    };
    match gateway.serve(kurir_runtime::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

/// One line on stderr, then the exit code.
fn fail(code: u8, message: impl Display) -> ExitCode {
    eprintln!("kurir-gateway: {message}");
    ExitCode::from(code)
}
