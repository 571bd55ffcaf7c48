//! The process-wide Prometheus recorder and the process collector
//! (`process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`, …).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// A histogram's bucket bounds, by full metric name.
#[derive(Debug, Clone, Copy)]
pub struct Buckets {
    pub metric: &'static str,
    pub bounds: &'static [f64],
}

/// The recorder could not be installed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("metrics recorder: {0}")]
pub struct RecorderError(String);

/// Install the global recorder on the first call, with these histograms' buckets (every
/// other histogram is a summary). Later calls, such as tests starting several servers in
/// one process, get the same handle and their buckets are ignored.
///
/// # Errors
/// Bucket bounds are empty, or another recorder was installed first.
pub fn install(histograms: &[Buckets]) -> Result<PrometheusHandle, RecorderError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, RecorderError>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for h in histograms {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(h.metric.into()), h.bounds)
                    .map_err(|e| RecorderError(e.to_string()))?;
            }
            builder
                .install_recorder()
                .map_err(|e| RecorderError(e.to_string()))
        })
        .clone()
}

/// The process collector, created once; `collect()` it before each render.
pub fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(|| {
        let c = metrics_process::Collector::default();
        c.describe();
        c
    })
}

/// The exposition body: process metrics refreshed, then every series.
#[must_use]
pub fn render(handle: &PrometheusHandle) -> String {
    process_collector().collect();
    handle.render()
}
