//! `kurir`: the one command people type. `kurir` alone runs a development node (see
//! [`dev`]); `kurir send | presence | receipts | disconnect` talk to a dispatcher
//! ([`client`]); `kurir token` prints a client JWT ([`token`]); `kurir vapid` a Web Push
//! key pair ([`vapid`]).
//!
//! Exit codes: 0 done, 64 bad flags or configuration, 69 a port could not be bound,
//! 1 anything else; errors are one line `kurir: …` on stderr.
#![forbid(unsafe_code)]

mod cli;
mod client;
mod dev;
mod token;
mod vapid;

use std::process::ExitCode;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::error::ErrorKind;
use kurir_runtime::cli::{one_line, EX_UNAVAILABLE, EX_USAGE};
use kurir_runtime::metrics::Buckets;

use crate::cli::{Command, DevArgs};
use crate::dev::DevNode;

/// Histograms of a development node, which records the dispatcher's and the embedded
/// gateway's metrics through one recorder.
const HISTOGRAMS: [Buckets; 3] = [
    Buckets {
        metric: kurir_dispatcher::telemetry::REQUEST_DURATION,
        bounds: kurir_dispatcher::telemetry::DURATION_BUCKETS,
    },
    Buckets {
        metric: kurir_push::telemetry::DURATION_SECONDS,
        bounds: kurir_push::telemetry::DURATION_BUCKETS,
    },
    Buckets {
        metric: kurir_gateway::telemetry::DELIVERY_LATENCY,
        bounds: kurir_gateway::telemetry::LATENCY_BUCKETS,
    },
];

fn main() -> ExitCode {
    let command = match cli::parse_from(std::env::args_os()) {
        Ok(cli) => cli.into_command(),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => return fail(EX_USAGE, one_line(&e)),
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::Dev(dev) = &command {
        if dev.config.worker_threads > 0 {
            runtime.worker_threads(dev.config.worker_threads);
        }
    }
    match runtime.enable_all().build() {
        Ok(rt) => rt.block_on(run(command)),
        Err(e) => fail(1, format!("runtime: {e}")),
    }
}

async fn run(command: Command) -> ExitCode {
    let done = match command {
        Command::Dev(args) => return dev(*args).await,
        Command::Send(args) => client::send(args).await,
        Command::Presence(args) => client::presence(args).await,
        Command::Receipts(args) => client::receipts(args).await,
        Command::Disconnect(args) => client::disconnect(args).await,
        Command::Vapid(args) => {
            return match vapid::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(1, e),
            }
        }
        Command::Token(args) => {
            return match token::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.is_usage() => fail(EX_USAGE, e),
                Err(e) => fail(1, e),
            }
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

/// The development node: validated, logged, metered, bound, served until a signal.
async fn dev(args: DevArgs) -> ExitCode {
    let mut config = args.config;
    config.standalone = true;
    if let Err(e) = config.validate() {
        return fail(EX_USAGE, e);
    }
    kurir_runtime::logging::init(config.log_format);
    let metrics = match kurir_runtime::metrics::install(&HISTOGRAMS) {
        Ok(handle) => handle,
        Err(e) => return fail(1, e),
    };
    let node = match DevNode::bind(config, metrics).await {
        Ok(n) => n,
        Err(e) if e.is_bind() => return fail(EX_UNAVAILABLE, e),
        Err(e) => return fail(EX_USAGE, e),
    };
    match node.serve(kurir_runtime::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

/// One line on stderr, then the exit code.
fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("kurir: {message}");
    ExitCode::from(code)
}
