//! Kurir dispatcher: the gRPC API backend services call to notify users.
//!
//! The data path, in order: [`api`] (① the gRPC edge: [`api::auth`] checks the API key,
//! [`api::validate`] turns requests into domain values within [`limits`],
//! [`api::status`] turns errors into `Status`) → [`dispatch`] (② idempotency → id →
//! inbox → [`route`]: presence lookup → group by node → one publish per node;
//! [`route::reroute`] tries again, in the background, what a stored `Send` could not
//! route). Around it: [`admin`] (readiness for `/readyz`), [`config`], [`error`],
//! [`method`] and [`telemetry`] (metrics). The clients and the development node live in
//! the `kurir` command; [`standalone`] is the deprecated `--standalone` alias of it.
//!
//! [`Dispatcher::bind`] + [`Dispatcher::serve`] is what `main` and the tests run.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod limits;
pub mod method;
pub mod route;
pub mod standalone;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use kurir_backends::Backends;
use kurir_proto::v1::dispatcher_server::{DispatcherServer, SERVICE_NAME};
use kurir_tls::incoming::{tls_incoming, HandshakeLimits};
use kurir_tls::ServerCerts;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::admin::Readiness;
use crate::api::auth::{ApiKeys, RequireApiKey};
use crate::api::DispatcherApi;
pub use crate::config::Config;
use crate::config::ConfigError;
use crate::dispatch::Dispatch;
pub use crate::error::DispatchError;

/// Why a dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("push providers: {0}")]
    Push(#[from] kurir_push::PusherError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why a running dispatcher stopped other than by its shutdown signal.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The push settings turned invalid between `bind` and `serve` (never: `bind`
    /// checked them).
    #[error("push settings: {0}")]
    Push(String),
    /// The SIGHUP handler for certificate reloads could not be installed.
    #[error("TLS reload signal: {0}")]
    Signal(#[source] std::io::Error),
}

/// A dispatcher whose listeners are bound.
pub struct Dispatcher {
    config: Config,
    backends: Backends,
    metrics: PrometheusHandle,
    grpc: TcpListener,
    admin: TcpListener,
    /// gRPC over TLS, when `KURIR_TLS_CERT`/`KURIR_TLS_KEY` are set.
    tls: Option<Arc<ServerCerts>>,
    /// The push providers `Send.fallback` reaches devices through.
    pusher: Arc<kurir_push::Pusher>,
}

impl Dispatcher {
    /// Validate `config` and bind the gRPC and admin listeners (port 0 picks a free
    /// port; see [`Self::grpc_addr`]). `metrics` is the installed recorder's handle
    /// ([`telemetry::install_recorder`]).
    ///
    /// # Errors
    /// Bad configuration, or a port that cannot be bound.
    pub async fn bind(
        config: Config,
        backends: Backends,
        metrics: PrometheusHandle,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let tls = match config.tls_files() {
            Some(files) => Some(
                ServerCerts::load(files, &[kurir_tls::ALPN_H2], "dispatcher").map_err(|e| {
                    ConfigError {
                        setting: "KURIR_TLS_CERT",
                        reason: e.to_string(),
                    }
                })?,
            ),
            None => None,
        };
        let pusher = Arc::new(kurir_push::Pusher::from_settings(&config.push)?);
        telemetry::describe();
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let grpc = bind(config.grpc_listen).await?;
        let admin = bind(config.metrics_listen).await?;
        Ok(Self {
            config,
            backends,
            metrics,
            grpc,
            admin,
            tls,
            pusher,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.config.grpc_listen)
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .unwrap_or(self.config.metrics_listen)
    }

    /// Serve until `shutdown` completes, then drain: health `NOT_SERVING` and `/readyz`
    /// 503, receipt streams ended, in-flight calls finished (within
    /// `KURIR_SHUTDOWN_GRACE_MS`), and the bus flushed, since a publish that returned
    /// `Ok` is only queued.
    ///
    /// # Errors
    /// The gRPC server failed; the dispatcher still drains before returning.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let Self {
            config,
            backends,
            metrics,
            grpc,
            admin,
            tls,
            pusher,
        } = self;
        let grpc_addr = grpc.local_addr().ok();

        let background = TaskTracker::new();
        let stop_background = CancellationToken::new();
        let readiness = Readiness::new(backends.clone(), config.readiness_interval());
        background.spawn(admin::probe(readiness.clone(), stop_background.clone()));
        background.spawn(kurir_runtime::admin::upkeep(
            metrics.clone(),
            stop_background.clone(),
        ));
        // The admin listener outlives the gRPC one, so the last scrape sees the drain.
        let stop_admin = CancellationToken::new();
        let admin_server = tokio::spawn(kurir_runtime::admin::serve(
            admin,
            kurir_runtime::admin::router(metrics, readiness.clone()),
            stop_admin.clone(),
        ));

        let allowlist = config
            .push
            .allowed_origins()
            .map_err(|e| ServeError::Push(e.to_string()))?;
        let dispatch = Dispatch::new(backends.clone(), config.max_watchers, config.watch_buffer)
            .with_push(pusher, allowlist);
        dispatch.start_due_worker(dispatch::DueSettings {
            poll: config.due_poll(),
            lease: config.due_lease(),
            batch: config.due_batch,
        });
        let api = DispatcherApi::new(
            dispatch.clone(),
            config.max_in_flight,
            config.request_timeout(),
        );
        let keys = if config.insecure_no_auth {
            warn!("--insecure-no-auth: every caller is accepted");
            ApiKeys::disabled()
        } else {
            ApiKeys::new(&config.api_keys)
        };
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status(SERVICE_NAME, ServingStatus::Serving)
            .await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(kurir_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        // KURIR_GRPC_REFLECTION=false: not registered, so reflection calls are UNIMPLEMENTED.
        let (reflection_v1, reflection_v1alpha) = if config.grpc_reflection {
            (
                Some(reflection().build_v1()?),
                Some(reflection().build_v1alpha()?),
            )
        } else {
            (None, None)
        };
        let dispatcher =
            DispatcherServer::new(api).max_decoding_message_size(config.grpc_max_message_bytes);

        let stop_grpc = CancellationToken::new();
        // With a client CA, a call over a connection whose client certificate the TLS
        // layer verified needs no API key.
        let client_certs = tls.as_ref().is_some_and(|t| t.requires_client_certs());
        let router = grpc_server(&config)
            .add_service(health_service)
            .add_optional_service(reflection_v1)
            .add_optional_service(reflection_v1alpha)
            .add_service(
                RequireApiKey::new(dispatcher, keys).accepting_client_certificates(client_certs),
            );
        let stopped = stop_grpc.clone().cancelled_owned();
        let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
            match &tls {
                None => Box::pin(
                    router.serve_with_incoming_shutdown(grpc_incoming(grpc, &config), stopped),
                ),
                Some(certs) => {
                    background.spawn(
                        certs
                            .watch(config.tls_reload_interval(), stop_background.clone())
                            .map_err(ServeError::Signal)?,
                    );
                    // Handshakes run in their own tasks, bounded in number and time.
                    let incoming = tls_incoming(
                        grpc,
                        Arc::clone(certs),
                        HandshakeLimits::default(),
                        "dispatcher",
                        stop_grpc.clone(),
                    );
                    Box::pin(router.serve_with_incoming_shutdown(incoming, stopped))
                }
            };
        let mut server = std::pin::pin!(server);
        info!(grpc = ?grpc_addr, namespace = %backends.namespace, tls = tls.is_some(), mtls = client_certs, "dispatcher listening");

        let mut result = tokio::select! {
            r = &mut server => Some(r),
            () = shutdown => None,
        };
        info!("dispatcher draining");
        readiness.set_draining();
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health
            .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
            .await;
        // Receipt streams would otherwise hold the graceful shutdown open forever.
        dispatch.stop_watchers().await;
        stop_grpc.cancel();
        if result.is_none() {
            match tokio::time::timeout(config.shutdown_grace(), &mut server).await {
                Ok(r) => result = Some(r),
                Err(_) => warn!(
                    grace_ms = config.shutdown_grace_ms,
                    "calls still running after the grace period; exiting anyway"
                ),
            }
        }
        // Before the flush, so that what the reroute task published goes out with it.
        dispatch.shutdown().await;
        if let Err(e) = backends.bus.flush().await {
            warn!(error = %e, "bus flush failed; recently published envelopes may be lost");
        }
        stop_background.cancel();
        background.close();
        background.wait().await;
        stop_admin.cancel();
        let _ = admin_server.await;
        info!("dispatcher stopped");
        match result {
            Some(Err(e)) => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// The gRPC server with the connection limits of `config`: concurrent streams per
/// connection, HTTP/2 keepalive, connection age. The request timeout and the in-flight
/// limit are enforced per call by [`DispatcherApi`]; the message size limit by the
/// service itself.
pub fn grpc_server(config: &Config) -> Server {
    let server = Server::builder()
        .max_concurrent_streams(config.grpc_max_concurrent_streams)
        .http2_keepalive_interval(config.grpc_keepalive())
        .http2_keepalive_timeout(Some(config.grpc_keepalive_timeout()));
    match config.grpc_max_connection_age() {
        Some(age) => server
            .max_connection_age(age)
            .max_connection_age_grace(config.grpc_max_connection_age_grace()),
        None => server,
    }
}

/// Accepted gRPC connections: `TCP_NODELAY`, and TCP keepalive per
/// `KURIR_GRPC_TCP_KEEPALIVE_MS` (the server's own TCP settings do not apply to an
/// incoming stream).
pub fn grpc_incoming(listener: TcpListener, config: &Config) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(config.grpc_tcp_keepalive())
}
