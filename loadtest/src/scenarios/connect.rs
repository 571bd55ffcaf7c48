//! `connect`: open N idle clients over the gateways, hold them, and measure the connect
//! rate and each gateway's resident memory per connection (RSS after − RSS before, over
//! the connections it holds).

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::{client_section, connect_section, merge, Bench, Common};
use crate::procs::{self, Role};
use crate::protocol::Protocol;
use crate::report::{ratio, Report};

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: Common,
    /// Seconds to hold the connections before the second memory sample.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
}

pub async fn run(args: &ConnectArgs, protocol: Protocol) -> Result<(Report, bool)> {
    let c = &args.common;
    let mut bench = Bench::start(c, protocol, 0).await?;
    let mut r = Report::new("connect");
    c.describe(
        &mut r,
        protocol,
        bench.targets.gateways.len(),
        bench.fleet.len(),
    );
    r.param("hold_s", args.hold);
    // Let the servers settle after start-up before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = bench.snapshot();
    let summary = bench.connect(&[]).await?;
    tokio::time::sleep(Duration::from_secs_f64(args.hold.min(c.duration))).await;
    let after = bench.snapshot();
    let live: u64 = bench.fleet.poll().await?.iter().map(|p| p.live).sum();
    connect_section(&mut r, &summary);
    r.num("held", "connections held after the hold", live as f64, "");

    r.section("server memory");
    let gws = bench.targets.gateways.len() as u64;
    let deltas = procs::deltas(&before, &after);
    let mut per_conn = Vec::new();
    let front: Vec<_> = deltas
        .iter()
        .filter(|d| matches!(d.role, Role::Gateway | Role::PeerServer))
        .collect();
    for (g, d) in front.iter().enumerate() {
        // Clients go to gateway `i % gateways`; failures are spread evenly.
        let assigned = (c.clients + gws - 1 - g as u64) / gws;
        let held = assigned as f64 * ratio(live as f64, c.clients as f64);
        let grown = d.rss_after as f64 - d.rss_before as f64;
        let b = ratio(grown, held);
        per_conn.push(b);
        r.num(
            &format!("rss_before_mib.{}", d.name),
            &format!("{} rss before", d.name),
            d.rss_before as f64 / 1048576.0,
            "MiB",
        );
        r.num(
            &format!("rss_after_mib.{}", d.name),
            &format!("{} rss after", d.name),
            d.rss_after as f64 / 1048576.0,
            "MiB",
        );
        r.num(
            &format!("connections.{}", d.name),
            &format!("{} connections", d.name),
            held.round(),
            "",
        );
        r.num(
            &format!("bytes_per_connection.{}", d.name),
            &format!("{} bytes per connection", d.name),
            b.round(),
            "B",
        );
        r.num(
            &format!("cpu_seconds.{}", d.name),
            &format!("{} cpu while connecting", d.name),
            d.cpu_seconds,
            "s",
        );
    }
    if !per_conn.is_empty() {
        let mean = per_conn.iter().sum::<f64>() / per_conn.len() as f64;
        r.num(
            "bytes_per_connection",
            "bytes per connection (mean over front-ends)",
            mean.round(),
            "B",
        );
    }
    let front_cpu: f64 = front.iter().map(|d| d.cpu_seconds).sum();
    if front_cpu > 0.0 {
        r.num(
            "connects_per_gateway_cpu_second",
            "connects per front-end CPU-second",
            ratio(summary.ok as f64, front_cpu),
            "",
        );
    }
    let reports = bench.finish().await?;
    let got = merge(&reports);
    super::frames_section(&mut r, &got);
    client_section(&mut r, &got);
    let ok = summary.failed == 0 && live == summary.ok;
    Ok((r, ok))
}
