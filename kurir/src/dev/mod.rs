//! `kurir` / `kurir dev`: Kurir in one process for development and demos. In-memory
//! backends (no Redis or NATS), the dispatcher's gRPC API, an embedded gateway with the
//! demo page, and optionally a ticker that publishes the server time to topic `demo`.
//!
//! It is built so that it cannot leak into production: every listener binds 127.0.0.1
//! unless its `KURIR_*LISTEN` variable names another address, and the development JWT
//! secret, the sample token and `GET /dev/token` exist only when no JWT setting at all is
//! configured. With a configured secret, public key file or JWKS URL, tokens signed with
//! it are accepted, nothing is minted and the configured secret is never printed.

pub mod banner;
pub mod credentials;
pub mod demo;

use std::future::Future;
use std::io::Write as _;
use std::time::Duration;

use clap::Parser as _;
use kurir_backends::{Backends, Secret};
use kurir_dispatcher::dispatch::Dispatch;
use kurir_dispatcher::{Config, Dispatcher, ServeError};
use kurir_gateway::Gateway;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use self::banner::Addresses;
use self::credentials::{generated_api_key, loopback_unless_set, random_hex, JwtKeys};

/// Why a development node could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The gateway half's `KURIR_*` variables do not parse.
    #[error("gateway configuration: {0}")]
    GatewayConfig(String),
    #[error(transparent)]
    Dispatcher(#[from] kurir_dispatcher::StartError),
    #[error("embedded gateway: {0}")]
    Gateway(#[from] kurir_gateway::StartError),
}

impl DevError {
    /// Whether a port could not be bound (`EX_UNAVAILABLE`) rather than a setting being
    /// wrong.
    pub fn is_bind(&self) -> bool {
        matches!(
            self,
            Self::Dispatcher(kurir_dispatcher::StartError::Bind { .. })
                | Self::Gateway(kurir_gateway::StartError::Bind { .. })
        )
    }
}

/// A bound development node: dispatcher and gateway over shared in-memory backends.
pub struct DevNode {
    dispatcher: Dispatcher,
    gateway: Gateway,
    backends: Backends,
    demo_interval: Option<Duration>,
    banner: String,
}

impl DevNode {
    /// Bind the gRPC, WebSocket and metrics listeners (127.0.0.1 unless `KURIR_LISTEN`,
    /// `KURIR_GRPC_LISTEN`, `KURIR_METRICS_LISTEN` say otherwise). Credentials come from
    /// the usual variables (`KURIR_API_KEYS`; `KURIR_JWT_SECRET`,
    /// `KURIR_JWT_PUBLIC_KEY_FILE` or `KURIR_JWT_JWKS_URL`) or are generated.
    ///
    /// # Errors
    /// Bad configuration or a port that cannot be bound.
    pub async fn bind(mut config: Config, metrics: PrometheusHandle) -> Result<Self, DevError> {
        config.standalone = true;
        let backends = Backends::memory(config.backends.namespace.clone());
        config.grpc_listen = loopback_unless_set(config.grpc_listen, "KURIR_GRPC_LISTEN");
        config.metrics_listen = loopback_unless_set(config.metrics_listen, "KURIR_METRICS_LISTEN");
        // Only a generated key is printed: a configured one stays where it was put.
        let mut api_key = None;
        if config.api_keys.is_empty() && !config.insecure_no_auth {
            let key = generated_api_key();
            config.api_keys = vec![Secret::from(key.as_str())];
            api_key = Some(key);
        }
        // The gateway half reads its own KURIR_* variables (KURIR_LISTEN, KURIR_JWT_*…).
        let mut gw = kurir_gateway::Config::try_parse_from(["kurir-gateway"])
            .map_err(|e| DevError::GatewayConfig(kurir_runtime::cli::one_line(&e)))?;
        gw.backends = config.backends.clone();
        gw.listen = loopback_unless_set(gw.listen, "KURIR_LISTEN");
        let jwt = if gw.has_jwt_keys() {
            JwtKeys::Configured
        } else {
            let secret = random_hex(credentials::GENERATED_SECRET_BYTES);
            gw.jwt_secret = Some(Secret::from(secret.as_str()));
            JwtKeys::Generated(secret)
        };
        // Minting is for generated secrets only: a token signed with a configured key
        // would be a real credential handed to whoever asks.
        gw.dev_tokens = matches!(jwt, JwtKeys::Generated(_));
        let gateway = Gateway::bind(gw, backends.clone(), None).await?;
        let api_key = match (api_key, config.insecure_no_auth) {
            (Some(generated), _) => generated,
            (None, true) => "(none: --insecure-no-auth)".to_owned(),
            (None, false) => "(configured in KURIR_API_KEYS)".to_owned(),
        };
        let demo_interval = config.demo_interval;
        let dispatcher = Dispatcher::bind(config, backends.clone(), metrics).await?;
        let at = Addresses {
            ws: gateway.local_addr(),
            grpc: dispatcher.grpc_addr(),
            metrics: dispatcher.metrics_addr(),
        };
        Ok(Self {
            banner: banner::render(&at, &api_key, &jwt),
            dispatcher,
            gateway,
            backends,
            demo_interval,
        })
    }

    /// Print the banner, serve until `shutdown`, then drain the gateway and the
    /// dispatcher.
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
            tokio::spawn(demo::ticker(dispatch, every, stop.clone()));
        }
        let gateway = tokio::spawn(self.gateway.serve(stop.clone().cancelled_owned()));
        let served = self.dispatcher.serve(stop.clone().cancelled_owned());
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
