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
use crate::options::ConnectOptions;
use crate::secret::{mask_credentials, split_credentials, Secret, ServerUrl};
use crate::telemetry;
use crate::tls::NatsCredentials;

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
    events: Arc<Events>,
}

/// What the event callback updates.
struct Events {
    connected_once: AtomicBool,
    /// How the latest connection attempt ended: `None` before any ended.
    attempt: watch::Sender<Option<bool>>,
    reconnected: watch::Sender<u64>,
    /// Why the latest connection attempt failed (authorization violation, TLS error…),
    /// so `Unavailable` errors say it; async-nats' messages carry no credentials.
    last_failure: parking_lot::Mutex<Option<String>>,
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
            Event::ClientError(ref e) => {
                // Among others, every failed connection attempt.
                *self.last_failure.lock() = Some(e.to_string());
                self.attempt.send_replace(Some(false));
                warn!(%event, "nats");
            }
            Event::ServerError(_) => warn!(%event, "nats"),
        }
    }
}

/// How the server list authenticates, when its URLs carry credentials.
#[derive(Debug, PartialEq, Eq)]
enum UrlAuth {
    UserPassword(String, Secret),
    Token(Secret),
}

/// `nats://a:4222,tls://u:p@b:4222` → addresses without their credentials (async-nats
/// ignores credentials in URLs, and its logs show the addresses), and the credentials.
fn servers(url: &ServerUrl) -> Result<(Vec<ServerAddr>, Option<UrlAuth>), BackendError> {
    let mut servers = Vec::new();
    let mut auth: Option<UrlAuth> = None;
    for entry in url
        .as_str()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let entry = if entry.contains("://") {
            entry.to_owned()
        } else {
            format!("nats://{entry}")
        };
        let (clean, credentials) = split_credentials(&entry);
        let addr = clean.parse::<ServerAddr>().map_err(|e| {
            let reason = format!("nats url {:?}: {e}", mask_credentials(&entry));
            BackendError::invalid(BACKEND, url.redact(&reason))
        })?;
        if let Some(c) = credentials {
            let this = match c.password {
                Some(password) => UrlAuth::UserPassword(c.user, password),
                None => UrlAuth::Token(Secret::from(c.user)),
            };
            match &auth {
                None => auth = Some(this),
                Some(first) if *first == this => {}
                Some(_) => {
                    return Err(BackendError::invalid(
                        BACKEND,
                        "the servers in the nats url carry different credentials; one client authenticates one way",
                    ))
                }
            }
        }
        servers.push(addr);
    }
    if servers.is_empty() {
        return Err(BackendError::invalid(BACKEND, "nats url is empty"));
    }
    Ok((servers, auth))
}

/// Credentials (from the URL or KURIR_NATS_CREDS, not both) and TLS (KURIR_NATS_CA and
/// client certificate; setting either requires TLS whatever the URL scheme).
fn secure(
    mut options: async_nats::ConnectOptions,
    url_auth: Option<UrlAuth>,
    security: &crate::tls::BackboneSecurity,
) -> Result<async_nats::ConnectOptions, BackendError> {
    let invalid = |e: crate::tls::SecurityError| BackendError::invalid(BACKEND, e.to_string());
    let file = security.nats_credentials().map_err(invalid)?;
    options = match (url_auth, file) {
        (Some(_), Some(_)) => {
            return Err(BackendError::invalid(
                BACKEND,
                "the nats url carries credentials and KURIR_NATS_CREDS is set: use one",
            ))
        }
        (Some(UrlAuth::UserPassword(user, password)), None) => {
            options.user_and_password(user, password.expose().to_owned())
        }
        (Some(UrlAuth::Token(token)), None) => options.token(token.expose().to_owned()),
        (None, Some(NatsCredentials::Creds(text))) => options.credentials(&text).map_err(|e| {
            BackendError::invalid(
                BACKEND,
                format!("KURIR_NATS_CREDS: unusable credentials file: {e}"),
            )
        })?,
        (None, Some(NatsCredentials::Seed(seed))) => options.nkey(seed),
        (None, None) => options,
    };
    if let Some(tls) = security.nats_tls().map_err(invalid)? {
        options = options.tls_client_config(tls).require_tls(true);
    }
    Ok(options)
}

impl NatsBus {
    /// Start connecting to `opts.nats_url` in the background. Waits at most
    /// `opts.command_timeout` for the first connection; NATS being down is not an error.
    ///
    /// # Errors
    /// `Invalid` for a malformed URL.
    pub async fn connect(opts: &ConnectOptions) -> Result<Self, BackendError> {
        let (servers, url_auth) = servers(&opts.nats_url)?;
        let (reconnected, _) = watch::channel(0);
        let (attempt, mut attempt_rx) = watch::channel(None);
        let events = Arc::new(Events {
            connected_once: AtomicBool::new(false),
            attempt,
            reconnected: reconnected.clone(),
            last_failure: parking_lot::Mutex::new(None),
        });
        let client = secure(async_nats::ConnectOptions::new(), url_auth, &opts.security)?
            .name(&opts.client_name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(CONNECT_TIMEOUT)
            .ping_interval(PING_INTERVAL)
            // Messages one subscription buffers; when full, the client drops new ones and
            // reports a slow consumer (counted above).
            .subscription_capacity(opts.subscription_capacity.max(1))
            .event_callback({
                let events = events.clone();
                move |event| {
                    let events = events.clone();
                    async move { events.on(event) }
                }
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
            events,
        })
    }

    /// `not connected`, with the latest connection failure when there was one.
    fn not_connected(&self, op: &'static str) -> BackendError {
        let reason = match self.events.last_failure.lock().as_deref() {
            Some(failure) => format!("not connected (last attempt: {failure})"),
            None => "not connected".to_owned(),
        };
        Self::unavailable(op, reason)
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
            return Err(self.not_connected("publish"));
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
            return Err(self.not_connected("flush"));
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

    fn parse(url: &str) -> Result<(Vec<ServerAddr>, Option<UrlAuth>), BackendError> {
        servers(&ServerUrl::from(url))
    }

    #[test]
    fn server_lists() {
        assert_eq!(parse("nats://a:4222, nats://b:4223").unwrap().0.len(), 2);
        assert_eq!(parse("a:4222").unwrap().0[0].port(), 4222);
        assert!(parse("").is_err());
        assert!(parse("http://[::1").is_err());
    }

    /// async-nats ignores credentials in URLs: they are taken out, decoded, and the
    /// addresses it sees (and logs) carry none.
    #[test]
    fn credentials_are_taken_out_of_the_urls() {
        let (addrs, auth) = parse("nats://app:p%2Fw@n1:4222,nats://app:p%2Fw@n2:4222").unwrap();
        assert_eq!(
            auth,
            Some(UrlAuth::UserPassword("app".into(), Secret::from("p/w")))
        );
        assert!(addrs
            .iter()
            .all(|a| a.username().is_none() && a.password().is_none()));
        let (addrs, auth) = parse("tls://s3cr3t@n1:4222").unwrap();
        assert_eq!(auth, Some(UrlAuth::Token(Secret::from("s3cr3t"))));
        assert!(addrs[0].tls_required());
        // Raw reserved characters in a password are read as the password.
        let (_, auth) = parse("nats://app:a/b@c:d@n1:4222").unwrap();
        assert_eq!(
            auth,
            Some(UrlAuth::UserPassword("app".into(), Secret::from("a/b@c:d")))
        );
        let e = parse("nats://a:x@n1,nats://a:y@n2")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("different credentials") && !e.contains('x'),
            "{e}"
        );
    }

    /// A malformed URL's error names what is wrong, never the password, whatever
    /// characters the password holds.
    #[test]
    fn malformed_url_errors_carry_no_credentials() {
        for url in [
            "nats://app:hun/ter2@n1:notaport",
            "nats://app:hun@ter2@[::1",
            "http://app:hun:ter2@n1:4222",
            "nats://app:hunter2@n1:99999",
        ] {
            let e = parse(url).unwrap_err().to_string();
            assert!(!e.contains("ter2"), "{url}: {e}");
            assert!(e.contains("nats url"), "{url}: {e}");
        }
    }

    #[test]
    fn url_credentials_and_a_creds_file_conflict() {
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        let path = std::env::temp_dir().join(format!("kurir-seed-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, &seed).unwrap();
        let security = crate::tls::BackboneSecurity {
            nats_creds: Some(path.clone()),
            ..Default::default()
        };
        let (_, auth) = parse("nats://app:pw@n1").unwrap();
        let e = secure(async_nats::ConnectOptions::new(), auth, &security)
            .err()
            .unwrap();
        assert!(e.to_string().contains("use one"), "{e}");
        assert!(secure(async_nats::ConnectOptions::new(), None, &security).is_ok());
        // A .creds file as nsc writes it is read whole.
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        );
        std::fs::write(&path, creds).unwrap();
        assert!(matches!(
            security.nats_credentials().unwrap(),
            Some(NatsCredentials::Creds(_))
        ));
        assert!(secure(async_nats::ConnectOptions::new(), None, &security).is_ok());
        std::fs::remove_file(path).unwrap();
    }
}
