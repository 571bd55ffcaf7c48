//! `churn`: clients that connect, hold briefly and disconnect, over and over, while a
//! background targeted load goes to a stable set of clients; connects and disconnects
//! per second, handshake times, errors, and the background load's loss and delay.

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::{
    client_section, connect_section, cpu_section, delivery_section, merge, pick, Bench, Common,
};
use crate::procs;
use crate::protocol::Protocol;
use crate::report::{ratio, Hist, Report};
use crate::sender::{drive, Job, To};

#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub common: Common,
    /// Churning clients in total (spread over the workers).
    #[arg(long, default_value_t = 200)]
    pub churners: u64,
    /// Mean hold time of a churning connection, ms.
    #[arg(long, default_value_t = 500)]
    pub hold_ms: u64,
    /// Background targeted sends per second to the stable clients.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    #[arg(long, default_value_t = 128)]
    pub inflight: usize,
}

pub async fn run(args: &ChurnArgs, protocol: Protocol) -> Result<(Report, bool)> {
    let c = &args.common;
    let mut bench = Bench::start(c, protocol, args.churners).await?;
    let mut r = Report::new("churn");
    c.describe(
        &mut r,
        protocol,
        bench.targets.gateways.len(),
        bench.fleet.len(),
    );
    r.param("churners", args.churners);
    r.param("hold_ms", args.hold_ms);
    r.param("rate", args.rate);
    r.param("duration_s", c.duration);
    let summary = bench.connect(&[]).await?;
    connect_section(&mut r, &summary);
    let sender = bench.sender(args.payload, 0, 2).await?;
    let per_worker = args.churners.div_ceil(bench.fleet.len() as u64);
    let before = bench.snapshot();
    bench
        .fleet
        .churn(per_worker, args.hold_ms.max(2), c.seed)
        .await?;
    let (n, seed) = (c.clients, c.seed);
    let started = std::time::Instant::now();
    let stats = drive(
        sender.clone(),
        bench.plan(args.rate, u64::MAX, args.inflight),
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
    // The churn phase lasts `--duration` even if sending ended early.
    let left = Duration::from_secs_f64(c.duration).saturating_sub(started.elapsed());
    tokio::time::sleep(left).await;
    let expected = stats.expected_per_worker.iter().sum();
    bench.wait_receipts(expected).await?;
    let churn_secs = started.elapsed().as_secs_f64();
    let after = bench.snapshot();
    bench.targets.check_alive()?;
    let reports = bench.finish().await?;
    let got = merge(&reports);
    r.section("churn");
    let mut connects = 0;
    let mut disconnects = 0;
    let mut errors = std::collections::BTreeMap::<String, u64>::new();
    let mut hs = Hist::default();
    for w in &reports {
        connects += w.churn.connects;
        disconnects += w.churn.disconnects;
        for (k, v) in &w.churn.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
        hs.merge(&Hist::load(&w.churn.handshake));
    }
    r.num("churn_connects", "churn connects", connects as f64, "");
    r.num(
        "churn_connects_per_second",
        "connects per second",
        ratio(connects as f64, churn_secs),
        "/s",
    );
    r.num(
        "churn_disconnects_per_second",
        "disconnects per second",
        ratio(disconnects as f64, churn_secs),
        "/s",
    );
    let errs: u64 = errors.values().sum();
    r.num("churn_errors", "churn connect errors", errs as f64, "");
    if !errors.is_empty() {
        r.value(
            "churn_error_codes",
            "churn error codes",
            serde_json::to_value(&errors).unwrap_or_default(),
        );
    }
    r.percentiles(
        "churn_handshake",
        "churn handshake (TCP → welcome)",
        &hs.percentiles(),
    );
    let bad = delivery_section(&mut r, &stats, &got);
    cpu_section(
        &mut r,
        &procs::deltas(&before, &after),
        got.receipts,
        stats.ok,
    );
    client_section(&mut r, &got);
    Ok((r, bad == 0 && errs == 0 && summary.failed == 0))
}
