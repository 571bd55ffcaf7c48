//! `fanout`: topic publishes or broadcasts to N subscribed clients; per publish, the
//! time from the call to its last receipt; deliveries per second and per gateway
//! CPU-second.

use anyhow::Result;
use clap::{Args, ValueEnum};

use super::{client_section, connect_section, cpu_section, frames_section, merge, Bench, Common};
use crate::procs;
use crate::protocol::Protocol;
use crate::report::{ratio, Hist, Report};
use crate::sender::{drive, Job, To};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Topic,
    Broadcast,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, value_enum, default_value = "topic")]
    pub mode: Mode,
    /// Publishes in total.
    #[arg(long, default_value_t = 20)]
    pub publishes: u64,
    /// Publishes per second; 0 = back to back (bounded by `--inflight`).
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    #[arg(long, default_value_t = 4)]
    pub inflight: usize,
}

pub const TOPIC: &str = "lt.fan";

pub async fn run(args: &FanoutArgs, protocol: Protocol) -> Result<(Report, bool)> {
    let c = &args.common;
    let mut bench = Bench::start(c, protocol, 0).await?;
    let mut r = Report::new("fanout");
    c.describe(
        &mut r,
        protocol,
        bench.targets.gateways.len(),
        bench.fleet.len(),
    );
    r.param("mode", format!("{:?}", args.mode).to_lowercase());
    r.param("publishes", args.publishes);
    r.param("rate", args.rate);
    r.param("payload_bytes", args.payload as u64);
    let topics = match args.mode {
        Mode::Topic => vec![TOPIC.to_string()],
        Mode::Broadcast => Vec::new(),
    };
    let summary = bench.connect(&topics).await?;
    connect_section(&mut r, &summary);
    let sender = bench.sender(args.payload, 0, 1).await?;
    let mode = args.mode;
    let before = bench.snapshot();
    let t0 = crate::worker::now_us();
    let stats = drive(
        sender.clone(),
        bench.plan(args.rate, args.publishes, args.inflight),
        bench.fleet.len(),
        bench.worker_of(),
        c.clients,
        |i| Job {
            seq: i as u32,
            to: match mode {
                Mode::Topic => To::Topic(TOPIC.into()),
                Mode::Broadcast => To::Broadcast,
            },
        },
    )
    .await;
    let expected = stats.fanout_ok * summary.ok;
    bench.wait_receipts(expected).await?;
    let after = bench.snapshot();
    bench.targets.check_alive()?;
    let reports = bench.finish().await?;
    let got = merge(&reports);

    // Per publish: receipts over all workers and its last receipt.
    let mut per: std::collections::HashMap<u32, (u64, u64, u64)> = Default::default();
    for w in &reports {
        for &(seq, n, last, sent) in &w.fanout {
            let e = per.entry(seq).or_default();
            e.0 += n;
            e.1 = e.1.max(last);
            e.2 = sent;
        }
    }
    let mut to_last = Hist::default();
    let mut last_any = t0;
    for &(_, last, sent) in per.values() {
        to_last.record(last.saturating_sub(sent));
        last_any = last_any.max(last);
    }
    r.section("fan-out");
    r.num(
        "publishes_ok",
        "publishes accepted",
        stats.fanout_ok as f64,
        "",
    );
    let errors: u64 = stats.errors.values().sum();
    r.num("publish_errors", "publish errors", errors as f64, "");
    r.num("expected", "deliveries expected", expected as f64, "");
    r.num("received", "deliveries received", got.receipts as f64, "");
    let distinct: u64 = got.distinct_per_worker.iter().sum();
    let lost = expected.saturating_sub(distinct);
    r.num("lost", "lost", lost as f64, "");
    r.num("duplicates", "duplicates", got.duplicates as f64, "");
    frames_section(&mut r, &got);
    r.percentiles(
        "time_to_last_receipt",
        "time to last receipt (per publish)",
        &to_last.percentiles(),
    );
    r.percentiles(
        "delay",
        "delay (publish call → each receipt)",
        &got.delay.percentiles(),
    );
    r.percentiles(
        "response_time",
        "response time (call → reply)",
        &stats.rpc.percentiles(),
    );
    let span = (last_any.saturating_sub(t0)) as f64 / 1e6;
    r.num(
        "deliveries_per_second",
        "deliveries per second (first call → last receipt)",
        ratio(got.receipts as f64, span),
        "/s",
    );
    cpu_section(
        &mut r,
        &procs::deltas(&before, &after),
        got.receipts,
        stats.ok,
    );
    client_section(&mut r, &got);
    Ok((
        r,
        lost == 0 && got.duplicates == 0 && errors == 0 && summary.failed == 0,
    ))
}
