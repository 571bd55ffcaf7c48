//! Prometheus series read from a process's `/metrics` endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use kurir_testkit::http;

/// Read one series from a `/metrics` endpoint; an error when it is absent. Every series
/// Kurir names is registered at start-up (counters at zero), so a missing one is a bug
/// or a typo in the test, never a zero.
pub async fn metric(addr: SocketAddr, series: &str) -> Result<f64> {
    series_value(addr, series)
        .await?
        .ok_or_else(|| anyhow!("{addr}/metrics does not export {series}"))
}

/// Read one series from a `/metrics` endpoint; `None` when it is absent.
pub async fn series_value(addr: SocketAddr, series: &str) -> Result<Option<f64>> {
    let http::Reply { status, body } = http::get(addr, "/metrics", Duration::from_secs(5)).await?;
    if status != 200 {
        bail!("{addr}/metrics answered {status}");
    }
    Ok(parse_metrics(&body).get(series).copied())
}

pub fn parse_metrics(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}
