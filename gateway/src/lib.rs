//! Kurir gateway: holds users' connections (WebSocket, SSE, MQTT) and writes
//! notifications to them.
//!
//! The data path, in order: [`ws`], [`sse`] and [`mqtt`] (① the transports, one
//! [`ws::session`], [`sse::stream`] or [`mqtt::session`] per connection; [`admission`]
//! lets a client in, [`client`] is what it does whatever carries it) ↔ [`hub`] (② user →
//! connections, topic → connections, bounded per-connection queues) ↔ [`relay`] (③ bus
//! subscriptions → hub) ; [`liveness`] (④ presence, node liveness, readiness probe),
//! [`receipts`], [`drain`] (SIGTERM). Below them all,
//! [`protocol`] (the client frames and close codes), [`auth`], [`readiness`] and
//! [`telemetry`]; [`state`] holds the handles the tasks share.
//! [`Gateway::bind`] + [`Gateway::serve`] is what `main`, tests and `--standalone` run.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod auth;
pub mod client;
pub mod config;
pub mod drain;
pub mod hub;
pub mod liveness;
pub mod mqtt;
pub mod protocol;
pub mod readiness;
pub mod receipts;
pub mod relay;
pub mod sse;
pub mod state;
pub mod telemetry;
pub mod webpush;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use kurir_backends::{Backends, NodeId};
use kurir_tls::ServerCerts;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use auth::Verifier;
pub use config::{Config, ConfigError};
use state::AppState;

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A listening socket with an explicit accept backlog: after a drain, a whole node's
/// clients reconnect within seconds.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// A gateway whose listeners are bound.
pub struct Gateway {
    state: AppState,
    listener: TcpListener,
    /// The MQTT listener, when `KURIR_MQTT_LISTEN` is set.
    mqtt: Option<TcpListener>,
    metrics: Option<(TcpListener, PrometheusHandle)>,
    /// The main listener's TLS, when `KURIR_TLS_CERT`/`KURIR_TLS_KEY` are set.
    tls: Option<Arc<ServerCerts>>,
    topics_rx: tokio::sync::mpsc::Receiver<relay::TopicCommand>,
    receipts_rx: tokio::sync::mpsc::Receiver<kurir_proto::v1::Receipt>,
}

impl Gateway {
    /// Validate `config` and bind the listeners. With `metrics = None` no metrics
    /// listener is bound (the embedding process serves `/metrics` itself).
    ///
    /// # Errors
    /// Bad configuration or a port that cannot be bound.
    pub async fn bind(
        config: Config,
        backends: Backends,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let readiness = readiness::Readiness::default();
        let verifier = Verifier::from_settings(&config.jwt_settings(), &readiness)
            .await
            .map_err(ConfigError::from)?;
        let tls = match config.tls_files() {
            Some(files) => Some(
                ServerCerts::load(files, &[kurir_tls::ALPN_HTTP1], "gateway").map_err(|e| {
                    ConfigError {
                        setting: "KURIR_TLS_CERT/KURIR_TLS_KEY",
                        reason: e.to_string(),
                    }
                })?,
            ),
            None => None,
        };
        telemetry::describe(&protocol::CloseReason::LABELS);
        telemetry::describe_handshakes();
        let node = config.node_id.clone().unwrap_or_else(NodeId::generate);
        let backlog = config.accept_backlog;
        let bind = |addr: SocketAddr| async move {
            listen(addr, backlog).map_err(|source| StartError::Bind { addr, source })
        };
        let listener = bind(config.listen).await?;
        let mqtt = match config.mqtt_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let metrics = match metrics {
            Some(h) => Some((bind(config.metrics_listen).await?, h)),
            None => None,
        };
        let (topics, topics_rx) = relay::Topics::channel();
        let (receipts, receipts_rx) = receipts::Receipts::channel(config.receipt_queue);
        let read_limits = Arc::new(config.read_limits());
        let webpush = Arc::new(webpush::WebPushEdge::from_config(&config)?);
        let state = AppState {
            read_limits,
            config: Arc::new(config),
            lease: liveness::CurrentLease::new(node.clone()),
            node,
            backends,
            hub: hub::Hub::new(),
            topics,
            receipts,
            metrics: telemetry::Hot::resolve(),
            verifier: Arc::new(verifier),
            readiness,
            tracker: TaskTracker::new(),
            streams: Default::default(),
            webpush,
        };
        Ok(Self {
            state,
            listener,
            mqtt,
            metrics,
            tls,
            topics_rx,
            receipts_rx,
        })
    }

    pub fn node_id(&self) -> &NodeId {
        &self.state.node
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The MQTT listener's address, when `KURIR_MQTT_LISTEN` is set.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Whether the main listener speaks TLS (`wss://`, HTTPS).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The routes of the public listener (`/ws`, `/sse`, `/mqtt` when MQTT is on,
    /// health, demo page).
    fn router(state: Arc<AppState>, mqtt: Option<mqtt::websocket::Edge>) -> Router {
        let mut router = Router::new()
            .route("/ws", get(ws::upgrade))
            .merge(sse::routes(state.clone()))
            .merge(kurir_runtime::admin::health_routes(state.readiness.clone()))
            .merge(demo::routes());
        if let Some(edge) = mqtt {
            router = router.route(
                "/mqtt",
                get(move |state, req| mqtt::websocket::upgrade(state, edge, req)),
            );
        }
        if state.config.dev_tokens {
            router = router.route("/dev/token", get(admin::dev_token));
        }
        router.with_state(state)
    }

    /// Serve until `shutdown` completes, then drain.
    ///
    /// # Errors
    /// The listener failed.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            state,
            listener,
            mqtt,
            metrics,
            tls,
            topics_rx,
            receipts_rx,
        } = self;
        let stop = CancellationToken::new();
        let background = TaskTracker::new();
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let relay = relay::Relay {
            node: state.node.clone(),
            backends: state.backends.clone(),
            hub: state.hub.clone(),
            readiness: state.readiness.clone(),
            max_topics: state.config.max_topics_per_node,
            barriers: Default::default(),
        };
        background.spawn(relay::run(relay, topics_rx, stop.clone(), subscribed_tx));
        let (first_beat_tx, first_beat) = tokio::sync::oneshot::channel();
        let liveness = liveness::Liveness {
            node: state.node.clone(),
            lease: state.lease.clone(),
            backends: state.backends.clone(),
            hub: state.hub.clone(),
            readiness: state.readiness.clone(),
            timers: liveness::Timers {
                liveness_ttl: state.config.liveness_ttl(),
                probe_interval: state.config.probe_interval(),
                probe_timeout: state.config.probe_timeout(),
                presence_ttl: state.config.presence_ttl(),
            },
        };
        background.spawn(liveness::run(liveness, stop.clone(), first_beat_tx));
        background.spawn(ws::heartbeat::run(
            state.hub.clone(),
            state.config.heartbeat(),
            stop.clone(),
        ));
        let receipts_stop = CancellationToken::new();
        let receipts = tokio::spawn(receipts::run(
            state.backends.clone(),
            state.node.clone(),
            receipts_rx,
            state.config.receipt_linger(),
            receipts_stop.clone(),
        ));
        if let Some(certs) = &tls {
            // Installs the SIGHUP handler before the listener serves.
            background.spawn(certs.watch(state.config.tls_reload_interval(), stop.clone())?);
        }
        if let Some((l, handle)) = metrics {
            background.spawn(kurir_runtime::admin::upkeep(handle.clone(), stop.clone()));
            let router = kurir_runtime::admin::router(handle, state.readiness.clone());
            background.spawn(kurir_runtime::admin::serve(l, router, stop.clone()));
        }
        // Accept sockets once deliveries can reach them and this node's liveness mark
        // is set (entries of a node without one may be pruned). With a backend down,
        // accept after the probe timeout anyway: /readyz says unready meanwhile.
        let ready = async {
            let _ = tokio::join!(subscribed, first_beat);
        };
        if tokio::time::timeout(state.config.probe_timeout(), ready)
            .await
            .is_err()
        {
            warn!(
                "bus subscriptions or liveness mark not in place yet; accepting connections anyway"
            );
        }
        info!(node = %state.node, addr = %listener.local_addr()?, tls = tls.is_some(), "gateway listening");

        let draining = CancellationToken::new();
        // Persistent MQTT sessions, shared by the MQTT listener and `/mqtt`.
        let sessions = Arc::new(mqtt::persist::Sessions::default());
        let app = Self::router(
            Arc::new(state.clone()),
            mqtt.is_some().then(|| mqtt::websocket::Edge {
                sessions: sessions.clone(),
                stop: draining.clone(),
            }),
        );
        let mqtt = mqtt.map(|l| {
            info!(addr = ?l.local_addr().ok(), "mqtt listening");
            tokio::spawn(mqtt::serve(
                l,
                Arc::new(state.clone()),
                tls.clone(),
                sessions,
                draining.clone(),
            ))
        });
        let edge = ws::accept::Edge {
            tls,
            max_pending: state.config.max_pending_handshakes,
            handshake_timeout: state.config.handshake_timeout(),
        };
        let server = tokio::spawn(ws::accept::serve(listener, app, edge, draining.clone()));
        shutdown.await;
        draining.cancel();
        drain::run(&state, &state.tracker).await;
        stop.cancel();
        receipts_stop.cancel();
        let _ = receipts.await;
        background.close();
        background.wait().await;
        let _ = server.await;
        if let Some(mqtt) = mqtt {
            let _ = mqtt.await;
        }
        info!(node = %state.node, "gateway stopped");
        Ok(())
    }
}

mod demo {
    //! The demo page and the browser SDK, embedded so the binary serves them alone.
    use axum::http::header;
    use axum::routing::get;
    use axum::Router;

    pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
        Router::new()
            .route(
                "/",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                        include_str!("../../clients/js/demo.html"),
                    )
                }),
            )
            .route(
                "/kurir.js",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                        include_str!("../../clients/js/kurir.js"),
                    )
                }),
            )
            .route(
                "/kurir-sw.js",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                        include_str!("../../clients/js/kurir-sw.js"),
                    )
                }),
            )
            .route(
                "/kurir.d.ts",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                        include_str!("../../clients/js/kurir.d.ts"),
                    )
                }),
            )
    }
}
