//! `kurir-loadtest`: load generator and benchmark harness for Kurir (and, for
//! comparison, a Socket.IO 4 + Redis adapter stack).
//!
//! In path order: `cluster`/`peer` start or name the servers → `sender` calls the
//! dispatcher (or the peer's emitter) → the servers deliver → `fleet` workers hold the
//! clients (`conn` over `ws`, `sse` or `mqtt`, speaking `protocol`) and record receipts → `procs` samples server CPU and
//! memory → `report` prints percentiles and figures. `scenarios/` holds one file per
//! scenario; `floor` measures the machine itself (CPU per socket write).
#![forbid(unsafe_code)]

pub mod cluster;
pub mod conn;
pub mod fleet;
pub mod mqtt;
pub mod peer;
pub mod procs;
pub mod protocol;
pub mod report;
pub mod scenarios;
pub mod sender;
pub mod sse;
pub mod worker;
pub mod ws;

use anyhow::Result;
use clap::{Parser, Subcommand};

use scenarios::{batch, churn, connect, due, fanout, floor, run_compared, targeted};

#[derive(Debug, Parser)]
#[command(
    name = "kurir-loadtest",
    version,
    about = "Kurir load generator and benchmark harness"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// N idle clients: connect rate, memory per connection of each gateway.
    Connect(connect::ConnectArgs),
    /// Single-recipient Sends at a rate: delay, response time, loss, CPU per delivery.
    Targeted(targeted::TargetedArgs),
    /// Topic publish or broadcast to N clients: time to last receipt, deliveries/s.
    Fanout(fanout::FanoutArgs),
    /// Connects/disconnects per second under a background targeted load.
    Churn(churn::ChurnArgs),
    /// Multi-recipient Sends.
    Batch(batch::BatchArgs),
    /// The due-queue: fallback pushes coming due at a rate (offline users, a fake push
    /// service in this process): delay from due time to the push, items per CPU-second.
    Due(due::DueArgs),
    /// The physical floor: CPU per socket write on this machine, no server involved.
    Floor(floor::FloorArgs),
    /// (internal) The reading end of `floor`.
    #[command(hide = true)]
    FloorReader {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        sockets: usize,
    },
    /// (internal) Hold clients for a coordinator, JSON lines on stdin/stdout.
    #[command(hide = true)]
    Worker {
        /// Exit after this many seconds whatever happens.
        #[arg(long, default_value_t = 3600)]
        max_seconds: u64,
    },
}

/// Run a scenario; returns what to print and whether it was correct (no loss, no
/// duplicates, no errors).
pub async fn run(cmd: Cmd) -> Result<(String, bool)> {
    match cmd {
        Cmd::Connect(a) => {
            run_compared(&a.common.clone(), |c, p| {
                let a = connect::ConnectArgs {
                    common: c,
                    ..a.clone()
                };
                async move { connect::run(&a, p).await }
            })
            .await
        }
        Cmd::Targeted(a) => {
            run_compared(&a.common.clone(), |c, p| {
                let a = targeted::TargetedArgs {
                    common: c,
                    ..a.clone()
                };
                async move { targeted::run(&a, p).await }
            })
            .await
        }
        Cmd::Fanout(a) => {
            run_compared(&a.common.clone(), |c, p| {
                let a = fanout::FanoutArgs {
                    common: c,
                    ..a.clone()
                };
                async move { fanout::run(&a, p).await }
            })
            .await
        }
        Cmd::Churn(a) => {
            run_compared(&a.common.clone(), |c, p| {
                let a = churn::ChurnArgs {
                    common: c,
                    ..a.clone()
                };
                async move { churn::run(&a, p).await }
            })
            .await
        }
        Cmd::Batch(a) => {
            run_compared(&a.common.clone(), |c, p| {
                let a = batch::BatchArgs {
                    common: c,
                    ..a.clone()
                };
                async move { batch::run(&a, p).await }
            })
            .await
        }
        Cmd::Due(a) => {
            let (r, ok) = due::run(&a).await?;
            let text = if a.common.json {
                r.to_json().to_string()
            } else {
                r.human()
            };
            Ok((text, ok))
        }
        Cmd::Floor(a) => {
            let (r, ok) = floor::run(&a).await?;
            let text = if a.json {
                r.to_json().to_string()
            } else {
                r.human()
            };
            Ok((text, ok))
        }
        Cmd::FloorReader { addr, sockets } => {
            floor::reader(&addr, sockets).await?;
            Ok((String::new(), true))
        }
        Cmd::Worker { max_seconds } => {
            worker::serve_stdio(max_seconds).await?;
            Ok((String::new(), true))
        }
    }
}
