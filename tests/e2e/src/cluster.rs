//! A whole cluster for one test: one dispatcher and N gateways in a fresh namespace.

use anyhow::Result;
use kurir_testkit::{nats_url, random_namespace, redis_url};

use crate::dispatcher::DispatcherProc;
use crate::gateway::{GatewayOpts, GatewayProc};

/// 1 dispatcher + N gateways in a fresh namespace.
pub struct Cluster {
    pub namespace: String,
    pub dispatcher: DispatcherProc,
    pub gateways: Vec<GatewayProc>,
}

impl Cluster {
    pub async fn start(gateways: usize) -> Result<Self> {
        Self::start_on(gateways, &nats_url(), &redis_url()).await
    }

    /// A cluster whose gateways also get `env`.
    pub async fn start_with_env(gateways: usize, env: &[(&'static str, String)]) -> Result<Self> {
        Self::start_full(gateways, &nats_url(), &redis_url(), env).await
    }

    /// A cluster on the given NATS and Redis.
    pub async fn start_on(gateways: usize, nats: &str, redis: &str) -> Result<Self> {
        Self::start_full(gateways, nats, redis, &[]).await
    }

    /// A cluster whose processes use different NATS URLs (nodes of one NATS cluster):
    /// the dispatcher `dispatcher_nats`, gateway `i` `gateway_nats[i]`.
    pub async fn start_spread(
        dispatcher_nats: &str,
        gateway_nats: &[String],
        redis: &str,
    ) -> Result<Self> {
        Self::start_each(dispatcher_nats, gateway_nats, redis, &[]).await
    }

    async fn start_full(
        gateways: usize,
        nats: &str,
        redis: &str,
        env: &[(&'static str, String)],
    ) -> Result<Self> {
        let each = vec![nats.to_string(); gateways];
        Self::start_each(nats, &each, redis, env).await
    }

    async fn start_each(
        dispatcher_nats: &str,
        gateway_nats: &[String],
        redis: &str,
        env: &[(&'static str, String)],
    ) -> Result<Self> {
        let namespace = random_namespace();
        let dispatcher = DispatcherProc::start(&namespace, dispatcher_nats, redis).await?;
        let mut gws = Vec::new();
        for (i, nats) in gateway_nats.iter().enumerate() {
            let opts = GatewayOpts {
                namespace: namespace.clone(),
                nats_url: nats.clone(),
                redis_url: redis.to_string(),
                extra: env.to_vec(),
            };
            let node = format!("gw{i}-{}", &namespace[5..13]);
            gws.push(GatewayProc::start(&node, &opts).await?);
        }
        Ok(Self {
            namespace,
            dispatcher,
            gateways: gws,
        })
    }

    /// Start one more gateway like the others (e.g. a restart with the same node id).
    pub async fn start_gateway(&self, node: &str, nats: &str, redis: &str) -> Result<GatewayProc> {
        GatewayProc::start(
            node,
            &GatewayOpts {
                namespace: self.namespace.clone(),
                nats_url: nats.to_string(),
                redis_url: redis.to_string(),
                extra: vec![],
            },
        )
        .await
    }
}
