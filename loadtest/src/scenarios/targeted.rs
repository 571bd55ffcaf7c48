//! `targeted`: single-recipient `Send`s to random connected users at a rate (or as fast
//! as the in-flight bound allows), payload of `--payload` body bytes; end-to-end delay,
//! response time, loss and duplicates, CPU per delivery.

use anyhow::Result;
use clap::Args;

use super::{
    client_section, connect_section, cpu_section, delivery_section, merge, pick, Bench, Common,
};
use crate::procs;
use crate::protocol::Protocol;
use crate::report::Report;
use crate::sender::{drive, Job, To};

#[derive(Debug, Clone, Args)]
pub struct TargetedArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sends per second; 0 = as fast as `--inflight` allows.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Most sends (the run also ends at `--duration`).
    #[arg(long, default_value_t = 1_000_000)]
    pub count: u64,
    /// Body bytes per notification.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// `ttl_seconds` of each Send (0 = live only; > 0 stores in the inbox first).
    #[arg(long, default_value_t = 0)]
    pub ttl: u32,
    /// Calls in flight at most.
    #[arg(long, default_value_t = 256)]
    pub inflight: usize,
    /// gRPC connections to the dispatcher.
    #[arg(long, default_value_t = 4)]
    pub channels: usize,
}

pub async fn run(args: &TargetedArgs, protocol: Protocol) -> Result<(Report, bool)> {
    let c = &args.common;
    let mut bench = Bench::start(c, protocol, 0).await?;
    let mut r = Report::new("targeted");
    c.describe(
        &mut r,
        protocol,
        bench.targets.gateways.len(),
        bench.fleet.len(),
    );
    r.param("rate", args.rate);
    r.param("payload_bytes", args.payload as u64);
    r.param("ttl_s", args.ttl);
    r.param("duration_s", c.duration);
    let summary = bench.connect(&[]).await?;
    connect_section(&mut r, &summary);
    let sender = bench.sender(args.payload, args.ttl, args.channels).await?;
    let n = c.clients;
    let seed = c.seed;
    let before = bench.snapshot();
    let stats = drive(
        sender.clone(),
        bench.plan(args.rate, args.count, args.inflight),
        bench.fleet.len(),
        bench.worker_of(),
        n,
        |i| Job {
            seq: i as u32,
            to: To::Users {
                first: pick(seed, i, n),
                len: 1,
            },
        },
    )
    .await;
    let expected = stats.expected_per_worker.iter().sum();
    bench.wait_receipts(expected).await?;
    let after = bench.snapshot();
    bench.targets.check_alive()?;
    let reports = bench.finish().await?;
    let got = merge(&reports);
    let bad = delivery_section(&mut r, &stats, &got);
    cpu_section(
        &mut r,
        &procs::deltas(&before, &after),
        got.receipts,
        stats.ok,
    );
    client_section(&mut r, &got);
    Ok((r, bad == 0 && summary.failed == 0))
}
