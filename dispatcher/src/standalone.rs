//! `--standalone`: Kurir in one process for development and demos. In-memory backends
//! (no Redis or NATS), the dispatcher's gRPC API, an embedded gateway with the demo page,
//! and optionally a ticker that publishes the server time to topic `demo` (like the
//! classic Node `ws` demo that pushes the time every 5 seconds).
//!
//! It is built so that it cannot leak into production: every listener binds 127.0.0.1
//! unless its `KURIR_*LISTEN` variable names another address, and the development JWT
//! secret, the sample token and `GET /dev/token` exist only when no JWT setting at all is
//! configured. With a configured secret, public key file or JWKS URL, tokens signed with
//! it are accepted, nothing is minted and the configured secret is never printed.

use std::future::Future;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
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

/// Random bytes in a generated secret or API key (hex-encoded: twice as many characters,
/// well over the 32-byte minimum both checks ask for).
const GENERATED_SECRET_BYTES: usize = 32;

/// `addr`, or the same port on 127.0.0.1 when `addr` is the any-address and `var` is
/// not set: a development node is reachable from this machine only, unless asked.
fn loopback_unless_set(addr: SocketAddr, var: &str) -> SocketAddr {
    if addr.ip().is_unspecified() && std::env::var_os(var).is_none() {
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

/// Where client tokens' keys come from, as the banner tells it.
enum JwtKeys {
    /// Generated at start: printed, with a sample token and `GET /dev/token`.
    Generated(String),
    /// Configured by the operator: used, never printed, nothing minted.
    Configured,
}

impl Standalone {
    /// Bind the gRPC, WebSocket and metrics listeners (127.0.0.1 unless `KURIR_LISTEN`,
    /// `KURIR_GRPC_LISTEN`, `KURIR_METRICS_LISTEN` say otherwise). Credentials come from
    /// the usual variables (`KURIR_API_KEYS`; `KURIR_JWT_SECRET`,
    /// `KURIR_JWT_PUBLIC_KEY_FILE` or `KURIR_JWT_JWKS_URL`) or are generated.
    ///
    /// # Errors
    /// Bad configuration or a port that cannot be bound.
    pub async fn bind(mut config: Config, metrics: PrometheusHandle) -> Result<Self, StartError> {
        let backends = Backends::memory(config.namespace.clone());
        config.grpc_listen = loopback_unless_set(config.grpc_listen, "KURIR_GRPC_LISTEN");
        config.metrics_listen = loopback_unless_set(config.metrics_listen, "KURIR_METRICS_LISTEN");
        // Only a generated key is printed: a configured one stays where it was put.
        let mut api_key = None;
        if config.api_keys.is_empty() && !config.insecure_no_auth {
            let key = format!("kurir-dev-{}", random_hex(GENERATED_SECRET_BYTES));
            config.api_keys = vec![Secret::from(key.as_str())];
            api_key = Some(key);
        }
        // The gateway half reads its own KURIR_* variables (KURIR_LISTEN, KURIR_JWT_*…).
        let mut gw =
            kurir_gateway::Config::try_parse_from(["kurir-gateway"]).map_err(|e| ConfigError {
                setting: "gateway",
                reason: crate::config::one_line(&e),
            })?;
        gw.namespace = config.namespace.clone();
        gw.inbox_capacity = config.inbox_capacity;
        gw.listen = loopback_unless_set(gw.listen, "KURIR_LISTEN");
        let jwt = if gw.has_jwt_keys() {
            JwtKeys::Configured
        } else {
            let secret = random_hex(GENERATED_SECRET_BYTES);
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
        let dispatcher = Dispatcher::bind(config.clone(), backends.clone(), metrics).await?;
        let banner = banner(&dispatcher, &gateway, &api_key, &jwt);
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

fn banner(d: &Dispatcher, g: &Gateway, key: &str, jwt: &JwtKeys) -> String {
    let grpc = d.grpc_addr();
    let ws = g.local_addr();
    let metrics = d.metrics_addr();
    let host = |a: SocketAddr| {
        if a.ip().is_unspecified() {
            format!("localhost:{}", a.port())
        } else {
            a.to_string()
        }
    };
    let (secret, token) = match jwt {
        JwtKeys::Generated(secret) => {
            let token = UserId::parse("alice")
                .ok()
                .and_then(|alice| {
                    kurir_gateway::auth::Verifier::hs256(secret.as_bytes()).mint(
                        &alice,
                        &["*".to_owned()],
                        SAMPLE_TOKEN_SECONDS,
                    )
                })
                .map_or_else(String::new, |(t, _)| t);
            (
                secret.as_str(),
                format!("{token}\n\x20             (user alice, all topics, 24 h)"),
            )
        }
        JwtKeys::Configured => (
            "(configured key in use: KURIR_JWT_SECRET, KURIR_JWT_PUBLIC_KEY_FILE or KURIR_JWT_JWKS_URL)",
            "(sign tokens with the configured key; no /dev/token)".to_owned(),
        ),
    };
    // A placeholder where the key is not shown (configured) or not needed.
    let try_key = if key.starts_with('(') { "<key>" } else { key };
    format!(
        "\n  Kurir standalone (in-memory, development only)\n\n\
         \x20 demo page   http://{ws}/\n\
         \x20 WebSocket   ws://{ws}/ws?token=<JWT>\n\
         \x20 gRPC        {grpc}\n\
         \x20 metrics     http://{metrics}/metrics\n\n\
         \x20 API key     {key}\n\
         \x20 JWT secret  {secret}\n\
         \x20 token       {token}\n\n\
         \x20 try:  kurir-dispatcher send --endpoint http://{grpc} --api-key {try_key} \\\n\
         \x20         --user alice --title \"Registration approved\" --body \"Welcome aboard\" --ttl 3600\n",
        ws = host(ws),
        grpc = host(grpc),
        metrics = host(metrics),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_any_address_narrows_to_loopback_unless_its_variable_is_set() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let unset = "KURIR_TEST_VARIABLE_NOBODY_SETS";
        assert_eq!(
            loopback_unless_set(any, unset),
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        // An address the operator chose stays as it is.
        let chosen: SocketAddr = "192.0.2.1:8080".parse().unwrap();
        assert_eq!(loopback_unless_set(chosen, unset), chosen);
        // A variable that is set (PATH always is) keeps the any-address.
        assert_eq!(loopback_unless_set(any, "PATH"), any);
    }

    #[test]
    fn generated_credentials_are_long_enough() {
        assert!(random_hex(GENERATED_SECRET_BYTES).len() >= 32);
    }
}
