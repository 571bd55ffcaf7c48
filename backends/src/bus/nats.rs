//! The bus on NATS core (at-most-once; JetStream is not used: stored notifications
//! live in the inbox, the bus only carries them live).
//!
//! The client connects in the background and reconnects forever; async-nats
//! re-subscribes every live [`Subscription`] after a reconnect, and
//! [`Bus::reconnected`] counts those reconnects, and slow-consumer drops, so subscribers
//! can resynchronise.
//! While disconnected, `publish` fails with `Unavailable` at once instead of queueing:
//! a dispatcher must answer `UNAVAILABLE`, not pile messages up for later.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Event, ServerAddr};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{Bus, Subscription};
use crate::error::BackendError;
use crate::telemetry;
use crate::wiring::ConnectOptions;

const BACKEND: &str = "nats";
/// Budget of one connection attempt (TCP, TLS and handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the client pings the server; a dead connection is noticed within about
/// two of these.
const PING_INTERVAL: Duration = Duration::from_secs(10);

pub struct NatsBus {
    client: async_nats::Client,
    reconnected: watch::Sender<u64>,
    command_timeout: Duration,
}

/// What the event callback updates.
struct Events {
    connected_once: AtomicBool,
    /// How the latest connection attempt ended: `None` before any ended.
    attempt: watch::Sender<Option<bool>>,
    reconnected: watch::Sender<u64>,
}

impl Events {
    fn on(&self, event: Event) {
        match event {
            Event::Connected => {
                if self.connected_once.swap(true, Ordering::AcqRel) {
                    self.reconnected.send_modify(|n| *n += 1);
                    info!("nats reconnected");
                }
                self.attempt.send_replace(Some(true));
            }
            Event::Disconnected | Event::Closed => warn!(%event, "nats connection lost"),
            Event::SlowConsumer(_) => {
                // Messages were dropped: subscribers must resynchronise as after an outage.
                telemetry::backend_error(BACKEND, "slow_consumer");
                self.reconnected.send_modify(|n| *n += 1);
            }
            Event::LameDuckMode | Event::Draining => info!(%event, "nats"),
            Event::ClientError(_) => {
                // Among others, every failed connection attempt.
                self.attempt.send_replace(Some(false));
                warn!(%event, "nats");
            }
            Event::ServerError(_) => warn!(%event, "nats"),
        }
    }
}

/// `nats://a:4222,nats://b:4222` → addresses.
fn servers(url: &str) -> Result<Vec<ServerAddr>, BackendError> {
    let servers: Vec<ServerAddr> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ServerAddr>()
                .map_err(|e| BackendError::invalid(BACKEND, format!("nats url {s:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    if servers.is_empty() {
        return Err(BackendError::invalid(BACKEND, "nats url is empty"));
    }
    Ok(servers)
}

impl NatsBus {
    /// Start connecting to `opts.nats_url` in the background. Waits at most
    /// `opts.command_timeout` for the first connection; NATS being down is not an error.
    ///
    /// # Errors
    /// `Invalid` for a malformed URL.
    pub async fn connect(opts: &ConnectOptions) -> Result<Self, BackendError> {
        let servers = servers(opts.nats_url.as_str())?;
        let (reconnected, _) = watch::channel(0);
        let (attempt, mut attempt_rx) = watch::channel(None);
        let events = Arc::new(Events {
            connected_once: AtomicBool::new(false),
            attempt,
            reconnected: reconnected.clone(),
        });
        let client = async_nats::ConnectOptions::new()
            .name(&opts.client_name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(CONNECT_TIMEOUT)
            .ping_interval(PING_INTERVAL)
            // Messages one subscription buffers; when full, the client drops new ones and
            // reports a slow consumer (counted above).
            .subscription_capacity(opts.subscription_capacity.max(1))
            .event_callback(move |event| {
                let events = events.clone();
                async move { events.on(event) }
            })
            .connect(servers)
            .await
            .map_err(|e| BackendError::invalid(BACKEND, e.to_string()))?;
        // Wait for the first attempt to end, so that a healthy process's first publishes
        // do not race the handshake.
        let first =
            tokio::time::timeout(opts.command_timeout, attempt_rx.wait_for(Option::is_some));
        if !matches!(first.await, Ok(Ok(outcome)) if *outcome == Some(true)) {
            warn!("nats not reachable yet; connecting in the background");
        }
        Ok(Self {
            client,
            reconnected,
            command_timeout: opts.command_timeout,
        })
    }

    fn unavailable(
        op: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> BackendError {
        telemetry::backend_error(BACKEND, op);
        BackendError::unavailable(BACKEND, source)
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, subject: String, payload: Bytes) -> Result<(), BackendError> {
        if !self.is_connected() {
            return Err(Self::unavailable("publish", "not connected"));
        }
        match tokio::time::timeout(self.command_timeout, self.client.publish(subject, payload))
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => match e.kind() {
                async_nats::client::PublishErrorKind::Send => Err(Self::unavailable("publish", e)),
                _ => {
                    telemetry::backend_error(BACKEND, "publish");
                    Err(BackendError::invalid(BACKEND, e.to_string()))
                }
            },
            Err(_) => Err(Self::unavailable("publish", "publish timed out")),
        }
    }

    async fn subscribe(&self, subject: String) -> Result<Subscription, BackendError> {
        // Allowed while disconnected: the client sends the subscription once connected.
        let subscriber = match tokio::time::timeout(
            self.command_timeout,
            self.client.subscribe(subject),
        )
        .await
        {
            Ok(Ok(subscriber)) => subscriber,
            Ok(Err(e)) => match e.kind() {
                async_nats::client::SubscribeErrorKind::Other => {
                    return Err(Self::unavailable("subscribe", e))
                }
                _ => {
                    telemetry::backend_error(BACKEND, "subscribe");
                    return Err(BackendError::invalid(BACKEND, e.to_string()));
                }
            },
            Err(_) => return Err(Self::unavailable("subscribe", "subscribe timed out")),
        };
        // Dropping the `Subscriber` unsubscribes.
        Ok(Subscription::new(
            subscriber.map(|message| message.payload).boxed(),
        ))
    }

    async fn flush(&self) -> Result<(), BackendError> {
        if !self.is_connected() {
            return Err(Self::unavailable("flush", "not connected"));
        }
        match tokio::time::timeout(self.command_timeout, self.client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Self::unavailable("flush", e)),
            Err(_) => Err(Self::unavailable("flush", "flush timed out")),
        }
    }

    fn reconnected(&self) -> watch::Receiver<u64> {
        self.reconnected.subscribe()
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists() {
        assert_eq!(servers("nats://a:4222, nats://b:4223").unwrap().len(), 2);
        assert!(servers("").is_err());
        assert!(servers("http://[::1").is_err());
    }
}
