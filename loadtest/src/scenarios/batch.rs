//! `batch`: multi-recipient `Send`s, each to a window of `--batch` consecutive users
//! starting at a random one; delay, loss, duplicates and CPU per delivery.

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
pub struct BatchArgs {
    #[command(flatten)]
    pub common: Common,
    /// Recipients per Send (1..=10000, at most `--clients`).
    #[arg(long, default_value_t = 100)]
    pub batch: u64,
    /// Sends per second; 0 = as fast as `--inflight` allows.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    #[arg(long, default_value_t = 0)]
    pub ttl: u32,
    #[arg(long, default_value_t = 32)]
    pub inflight: usize,
    #[arg(long, default_value_t = 2)]
    pub channels: usize,
}

pub async fn run(args: &BatchArgs, protocol: Protocol) -> Result<(Report, bool)> {
    let c = &args.common;
    let batch = args.batch.clamp(1, c.clients.clamp(1, 10_000));
    let mut bench = Bench::start(c, protocol, 0).await?;
    let mut r = Report::new("batch");
    c.describe(
        &mut r,
        protocol,
        bench.targets.gateways.len(),
        bench.fleet.len(),
    );
    r.param("batch", batch);
    r.param("rate", args.rate);
    r.param("payload_bytes", args.payload as u64);
    r.param("ttl_s", args.ttl);
    let summary = bench.connect(&[]).await?;
    connect_section(&mut r, &summary);
    let sender = bench.sender(args.payload, args.ttl, args.channels).await?;
    let (n, seed) = (c.clients, c.seed);
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
                len: batch,
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
    r.num(
        "deliveries_per_second",
        "deliveries per second",
        crate::report::ratio(got.receipts as f64, stats.elapsed.as_secs_f64()),
        "/s",
    );
    cpu_section(
        &mut r,
        &procs::deltas(&before, &after),
        got.receipts,
        stats.ok,
    );
    client_section(&mut r, &got);
    Ok((r, bad == 0 && summary.failed == 0))
}
