//! `kurir-loadtest`: parse the command line, run the scenario, print the report. Exits
//! 1 when the run saw loss, duplicates or errors.

use std::io::Write;

use clap::Parser;
use kurir_loadtest::{run, Cli, Cmd};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = match cli.command {
        // A worker is one of several processes sharing few cores: one thread each.
        Cmd::Worker { .. } | Cmd::FloorReader { .. } => {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
        }
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    let (text, ok) = runtime.block_on(run(cli.command))?;
    if !text.is_empty() {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")?;
    }
    // Client tasks may still be closing; do not wait for them.
    runtime.shutdown_background();
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
