//! A `kurir-gateway` process on loopback ports, ready when its `/readyz` says so.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use kurir_testkit::{http, Process};

use crate::metrics::{metric, series_value};
use crate::JWT_SECRET;

/// Three free loopback addresses, all different: bound at once, then released (ports
/// picked one after another, each released before the next, can repeat).
fn distinct_addrs() -> [SocketAddr; 3] {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let held = [bind(), bind(), bind()];
    held.map(|l| l.local_addr().expect("bound listener has an address"))
}

/// A running gateway process.
pub struct GatewayProc {
    pub proc: Process,
    pub node: String,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    /// The MQTT listener (`KURIR_MQTT_LISTEN`).
    pub mqtt: SocketAddr,
}

/// Options for a gateway process.
#[derive(Clone)]
pub struct GatewayOpts {
    pub namespace: String,
    pub nats_url: String,
    pub redis_url: String,
    pub extra: Vec<(&'static str, String)>,
}

impl GatewayProc {
    /// Start gateway `node` (short drain, liveness and probe intervals so faults show
    /// within seconds) and wait until it is ready.
    pub async fn start(node: &str, opts: &GatewayOpts) -> Result<Self> {
        let [addr, metrics, mqtt] = distinct_addrs();
        let mut env = vec![
            ("KURIR_NAMESPACE", opts.namespace.clone()),
            ("KURIR_NATS_URL", opts.nats_url.clone()),
            ("KURIR_REDIS_URL", opts.redis_url.clone()),
            ("KURIR_NODE_ID", node.to_string()),
            ("KURIR_LISTEN", addr.to_string()),
            ("KURIR_METRICS_LISTEN", metrics.to_string()),
            ("KURIR_MQTT_LISTEN", mqtt.to_string()),
            ("KURIR_JWT_SECRET", JWT_SECRET.to_string()),
            ("KURIR_DRAIN_SECONDS", "1".to_string()),
            ("KURIR_LIVENESS_TTL_MS", "3000".to_string()),
            ("KURIR_PROBE_INTERVAL_MS", "500".to_string()),
            ("KURIR_PROBE_TIMEOUT_MS", "2000".to_string()),
        ];
        env.extend(opts.extra.iter().cloned());
        let mut proc = Process::spawn(node, "kurir-gateway", &env)?;
        proc.wait_http_ok(addr, "/readyz", Duration::from_secs(20))
            .await?;
        Ok(Self {
            proc,
            node: node.into(),
            addr,
            metrics,
            mqtt,
        })
    }

    pub async fn ready(&self) -> bool {
        matches!(http::status(self.addr, "/readyz").await, Ok(200))
    }

    pub async fn wait_ready(&self, within: Duration) -> Result<()> {
        kurir_testkit::poll::poll(within, &format!("{} ready", self.node), || async {
            self.ready().await.then_some(())
        })
        .await?;
        Ok(())
    }

    /// Current value of a metric series, e.g. `kurir_gateway_deliveries_total`; an error
    /// when the gateway does not export it (see [`metric`]).
    pub async fn metric(&self, series: &str) -> Result<f64> {
        metric(self.metrics, series).await
    }

    /// Current value of a metric series, `None` when the gateway does not export it.
    pub async fn series(&self, series: &str) -> Result<Option<f64>> {
        series_value(self.metrics, series).await
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={token}", self.addr)
    }
}
