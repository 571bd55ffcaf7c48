//! A `kurir-dispatcher` process on loopback ports, ready when its gRPC port accepts.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use kurir_testkit::ports::free_addr;
use kurir_testkit::Process;

use crate::api::{api_client, Api};
use crate::metrics::metric;
use crate::API_KEY;

/// A running dispatcher process.
pub struct DispatcherProc {
    pub proc: Process,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
}

impl DispatcherProc {
    pub async fn start(namespace: &str, nats_url: &str, redis_url: &str) -> Result<Self> {
        Self::start_with(namespace, nats_url, redis_url, &[]).await
    }

    /// Like [`Self::start`] with extra environment.
    pub async fn start_with(
        namespace: &str,
        nats_url: &str,
        redis_url: &str,
        extra: &[(&'static str, String)],
    ) -> Result<Self> {
        let (grpc, metrics) = (free_addr(), free_addr());
        let env = vec![
            ("KURIR_NAMESPACE", namespace.to_string()),
            ("KURIR_NATS_URL", nats_url.to_string()),
            ("KURIR_REDIS_URL", redis_url.to_string()),
            ("KURIR_GRPC_LISTEN", grpc.to_string()),
            ("KURIR_METRICS_LISTEN", metrics.to_string()),
            ("KURIR_API_KEYS", API_KEY.to_string()),
        ];
        let env: Vec<_> = env.into_iter().chain(extra.iter().cloned()).collect();
        let mut proc = Process::spawn("dispatcher", "kurir-dispatcher", &env)?;
        proc.wait_listening(grpc, Duration::from_secs(20)).await?;
        Ok(Self {
            proc,
            grpc,
            metrics,
        })
    }

    pub async fn client(&self) -> Result<Api> {
        api_client(self.grpc, Some(API_KEY)).await
    }

    /// Current value of a metric series; an error when the dispatcher does not export it.
    pub async fn metric(&self, series: &str) -> Result<f64> {
        metric(self.metrics, series).await
    }
}
