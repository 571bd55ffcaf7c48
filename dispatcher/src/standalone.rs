//! `--standalone`: Kurir in one process for development and demos. In-memory backends
//! (no Redis or NATS), the dispatcher's gRPC API, an embedded gateway with the demo page
//! and `GET /dev/token`, development credentials printed at start, and optionally a
//! ticker that publishes the server time to topic `demo` (like the classic Node `ws`
//! demo that pushes the time every 5 seconds).

use std::future::Future;
use std::io::Write as _;
use std::time::Duration;

use kurir_backends::{Backends, Topic, UserId};
use kurir_gateway::Gateway;
use kurir_proto::v1::Notification;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{ConfigError, Secret};
use clap::Parser as _;

use crate::dispatch::Dispatch;
use crate::{Config, Dispatcher, ServeError, StartError};

/// Lifetime of the sample token printed at start.
const SAMPLE_TOKEN_SECONDS: u64 = 24 * 3600;

/// A bound standalone node: dispatcher and gateway over shared in-memory backends.
pub struct Standalone {
    dispatcher: Dispatcher,
    gateway: Gateway,
    backends: Backends,
    demo_interval: Option<Duration>,
    banner: String,
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl Standalone {
    /// Bind the gRPC, WebSocket and metrics listeners. Credentials come from the usual
    /// variables (`KURIR_API_KEYS`, `KURIR_JWT_SECRET`) or are generated.
    ///
    /// # Errors
    /// Bad configuration or a port that cannot be bound.
    pub async fn bind(mut config: Config, metrics: PrometheusHandle) -> Result<Self, StartError> {
        let backends = Backends::memory(config.namespace.clone());
        if config.api_keys.is_empty() && !config.insecure_no_auth {
            config.api_keys = vec![Secret::from(format!("kurir-dev-{}", random_hex(16)))];
        }
        // The gateway half reads its own KURIR_* variables (KURIR_LISTEN, KURIR_JWT_SECRET…).
        let mut gw =
            kurir_gateway::Config::try_parse_from(["kurir-gateway"]).map_err(|e| ConfigError {
                setting: "gateway",
                reason: crate::config::one_line(&e),
            })?;
        gw.namespace = config.namespace.clone();
        gw.dev_tokens = true;
        gw.inbox_capacity = config.inbox_capacity;
        if gw.jwt_secret.is_none() && gw.jwt_public_key_file.is_none() {
            gw.jwt_secret = Some(Secret::from(random_hex(24)));
        }
        let jwt_secret = gw.jwt_secret.clone();
        let gateway = Gateway::bind(gw, backends.clone(), None).await?;
        let api_key = config.api_keys.first().map(|k| k.expose().to_owned());
        let dispatcher = Dispatcher::bind(config.clone(), backends.clone(), metrics).await?;
        let banner = banner(
            &dispatcher,
            &gateway,
            api_key.as_deref(),
            jwt_secret.as_ref().map(Secret::expose),
        );
        Ok(Self {
            dispatcher,
            gateway,
            backends,
            demo_interval: config.demo_interval,
            banner,
        })
    }

    pub fn grpc_addr(&self) -> std::net::SocketAddr {
        self.dispatcher.grpc_addr()
    }

    pub fn gateway_addr(&self) -> std::net::SocketAddr {
        self.gateway.local_addr()
    }

    /// Development credentials and how to use them, as printed at start.
    pub fn banner(&self) -> &str {
        &self.banner
    }

    /// Serve until `shutdown`, then drain the gateway and the dispatcher.
    ///
    /// # Errors
    /// The gRPC server failed.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let _ = writeln!(std::io::stdout().lock(), "{}", self.banner);
        let stop = CancellationToken::new();
        if let Some(every) = self.demo_interval {
            let dispatch = Dispatch::new(self.backends.clone(), 1, 1);
            tokio::spawn(demo_ticker(dispatch, every, stop.clone()));
        }
        let gateway = tokio::spawn(self.gateway.serve(stop.clone().cancelled_owned()));
        let dispatcher_stop = stop.clone();
        let served = self.dispatcher.serve(dispatcher_stop.cancelled_owned());
        let trigger = async move {
            shutdown.await;
            stop.cancel();
        };
        let (served, ()) = tokio::join!(served, trigger);
        if let Ok(Err(e)) = gateway.await {
            warn!(error = %e, "gateway stopped with an error");
        }
        served
    }
}

fn banner(d: &Dispatcher, g: &Gateway, api_key: Option<&str>, secret: Option<&str>) -> String {
    let grpc = d.grpc_addr();
    let ws = g.local_addr();
    let metrics = d.metrics_addr();
    let host = |a: std::net::SocketAddr| {
        if a.ip().is_unspecified() {
            format!("localhost:{}", a.port())
        } else {
            a.to_string()
        }
    };
    let token = secret
        .and_then(|s| {
            let v = kurir_gateway::ws::auth::Verifier::hs256(s.as_bytes());
            v.mint(
                &UserId::parse("alice").ok()?,
                &["*".to_owned()],
                SAMPLE_TOKEN_SECONDS,
            )
        })
        .map_or_else(
            || "(RS256/ES256 configured: bring your own)".to_owned(),
            |(t, _)| t,
        );
    let key = api_key.unwrap_or("(none: --insecure-no-auth)");
    format!(
        "\n  Kurir standalone (in-memory, development only)\n\n\
         \x20 demo page   http://{ws}/\n\
         \x20 WebSocket   ws://{ws}/ws?token=<JWT>\n\
         \x20 gRPC        {grpc}\n\
         \x20 metrics     http://{metrics}/metrics\n\n\
         \x20 API key     {key}\n\
         \x20 JWT secret  {secret}\n\
         \x20 token       {token}\n\
         \x20             (user alice, all topics, 24 h)\n\n\
         \x20 try:  kurir-dispatcher send --endpoint http://{grpc} --api-key {key} \\\n\
         \x20         --user alice --title \"Registration approved\" --body \"Welcome aboard\" --ttl 3600\n",
        ws = host(ws),
        grpc = host(grpc),
        metrics = host(metrics),
        secret = secret.unwrap_or("(public key file configured)"),
    )
}

/// Publish `Server time: HH:MM:SS` to topic `demo` every `every`.
async fn demo_ticker(dispatch: Dispatch, every: Duration, stop: CancellationToken) {
    let Ok(topic) = Topic::parse("demo") else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    info!(every = ?every, "demo ticker publishing to topic demo");
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (h, m, s) = ((now / 3600) % 24, (now / 60) % 60, now % 60);
        let n = Notification {
            title: "New notification!".into(),
            body: format!("Server time: {h:02}:{m:02}:{s:02} UTC"),
            ..Default::default()
        };
        if let Err(e) = dispatch.publish(topic.clone(), n).await {
            warn!(error = %e, "demo publish failed");
        }
    }
}
