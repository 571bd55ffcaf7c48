//! Many users at once, as a fleet of self-reconnecting clients over WebSocket, SSE or
//! MQTT:
//! what a rolling restart or a fault looks like from the outside (who received what, how
//! sessions ended, how long users took to come back).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::mqtt_client::MqttClient;
use crate::sse_client::SseClient;
use crate::tokens::token_with_secret;
use crate::ws_client::Client;
use crate::JWT_SECRET;

/// What the fleet's clients connect over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    #[default]
    WebSocket,
    /// `GET /sse`, acks as `POST /v1/ack`, reconnecting with `Last-Event-ID` as a
    /// browser's `EventSource` does.
    Sse,
    /// MQTT 3.1.1 on the gateways' MQTT listeners (the fleet's addresses are those):
    /// `kurir/user` at QoS 1, acks as PUBACKs.
    Mqtt,
}

/// How a session of the [`Fleet`] ended on the server's side.
#[derive(Clone, Debug)]
pub struct SessionEnd {
    pub user: String,
    /// Node of the session (from its `welcome`).
    pub node: String,
    /// Close code the server sent; 1006 when the socket ended without a close frame.
    pub code: u16,
    pub at: Instant,
}

/// A session that ended on the server's side and the user's next `welcome`.
#[derive(Clone, Debug)]
pub struct Reconnect {
    pub end: SessionEnd,
    /// Node of the next session.
    pub to: String,
    /// From the end of the old session to the `welcome` of the next one.
    pub gap: Duration,
}

/// Close code recorded for a socket that ended without a close frame.
pub const DROPPED: u16 = 1006;

/// What the fleet's tasks share.
#[derive(Default)]
struct FleetShared {
    urls: Mutex<Vec<String>>,
    secret: String,
    transport: Transport,
    stop: AtomicBool,
    /// User → node of its open session.
    connected: Mutex<HashMap<String, String>>,
    ends: Mutex<Vec<SessionEnd>>,
    reconnects: Mutex<Vec<Reconnect>>,
    /// Users whose session should be closed by the client (then reconnect).
    bounce: Mutex<HashSet<String>>,
    connect_failures: AtomicUsize,
    error_frames: AtomicUsize,
}

/// Self-reconnecting clients that ack what they get, one task per user. Records every
/// (user, id) received, ids seen twice on one connection, how sessions ended (close
/// codes) and how long each user took to come back.
pub struct Fleet {
    pub received: Arc<Mutex<HashMap<String, HashSet<String>>>>,
    pub duplicates: Arc<AtomicUsize>,
    shared: Arc<FleetShared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// One task per user, connecting round-robin to `addrs` (`host:port`), with tokens
    /// signed by [`JWT_SECRET`].
    pub fn start(users: &[String], addrs: &[String]) -> Self {
        Self::start_with_secret(users, addrs, JWT_SECRET)
    }

    /// Like [`Fleet::start`], with tokens signed by `secret`.
    pub fn start_with_secret(users: &[String], addrs: &[String], secret: &str) -> Self {
        Self::start_over(Transport::WebSocket, users, addrs, secret)
    }

    /// Like [`Fleet::start_with_secret`], over `transport`.
    pub fn start_over(
        transport: Transport,
        users: &[String],
        addrs: &[String],
        secret: &str,
    ) -> Self {
        let shared = Arc::new(FleetShared {
            urls: Mutex::new(addrs.to_vec()),
            secret: secret.to_string(),
            transport,
            ..Default::default()
        });
        let received: Arc<Mutex<HashMap<String, HashSet<String>>>> = Arc::default();
        let duplicates: Arc<AtomicUsize> = Arc::default();
        let tasks = users
            .iter()
            .enumerate()
            .map(|(i, u)| {
                tokio::spawn(fleet_user(
                    i,
                    u.clone(),
                    shared.clone(),
                    received.clone(),
                    duplicates.clone(),
                ))
            })
            .collect();
        Self {
            received,
            duplicates,
            shared,
            tasks,
        }
    }

    pub fn set_gateways(&self, addrs: &[String]) {
        *self.shared.urls.lock().unwrap() = addrs.to_vec();
    }

    /// How many expected (user, id) pairs no client has received yet.
    pub fn missing(&self, expected: &[(String, String)]) -> usize {
        let r = self.received.lock().unwrap();
        expected
            .iter()
            .filter(|(u, id)| !r.get(u).is_some_and(|s| s.contains(id)))
            .count()
    }

    /// User → node, for every user with an open session (after its `welcome`).
    pub fn connected(&self) -> HashMap<String, String> {
        self.shared.connected.lock().unwrap().clone()
    }

    /// Open sessions per node.
    pub fn connected_per_node(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for node in self.shared.connected.lock().unwrap().values() {
            *out.entry(node.clone()).or_default() += 1;
        }
        out
    }

    /// Every session the server ended so far, in order.
    pub fn ends(&self) -> Vec<SessionEnd> {
        self.shared.ends.lock().unwrap().clone()
    }

    /// Close code → how many sessions the server ended with it ([`DROPPED`] for none).
    pub fn close_codes(&self) -> HashMap<u16, usize> {
        let mut out = HashMap::new();
        for e in self.shared.ends.lock().unwrap().iter() {
            *out.entry(e.code).or_default() += 1;
        }
        out
    }

    /// Every session the server ended that was followed by a new `welcome`, in order.
    pub fn reconnects(&self) -> Vec<Reconnect> {
        self.shared.reconnects.lock().unwrap().clone()
    }

    /// Connection attempts that failed (refused, HTTP error, timeout, no `welcome`).
    pub fn connect_failures(&self) -> usize {
        self.shared.connect_failures.load(Ordering::Relaxed)
    }

    /// `error` frames received (each makes the client reconnect).
    pub fn error_frames(&self) -> usize {
        self.shared.error_frames.load(Ordering::Relaxed)
    }

    /// Close these users' sessions from the client side (code 1000); they reconnect
    /// at once, so the load balancer places them again.
    pub fn bounce(&self, users: &[String]) {
        self.shared
            .bounce
            .lock()
            .unwrap()
            .extend(users.iter().cloned());
    }

    pub async fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for Fleet {
    /// A fleet dropped without [`Fleet::stop`] (a failed test) stops reconnecting.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// One connection of a fleet user.
enum Conn {
    Ws(Box<Client>),
    Sse(Box<SseClient>),
    Mqtt(Box<MqttConn>),
}

/// An MQTT device of the fleet: MQTT has no `welcome`, so its node is named by the
/// address it connected to; the packet id of each notification is kept for its ack.
struct MqttConn {
    client: MqttClient,
    welcome: Value,
    pkids: HashMap<String, u16>,
}

impl MqttConn {
    async fn open(addr: &str, token: &str) -> anyhow::Result<Self> {
        use rumqttc::mqttbytes::QoS;
        let mut client = MqttClient::connect(addr, token, "", true).await?;
        client
            .subscribe(&[("kurir/user", QoS::AtLeastOnce)])
            .await?;
        Ok(Self {
            client,
            welcome: serde_json::json!({ "node": addr }),
            pkids: HashMap::new(),
        })
    }
}

/// What a connection gave next.
enum Next {
    Frame(Value),
    Nothing,
    /// The server ended it: its close code, [`DROPPED`] for none.
    Ended(u16),
}

impl Conn {
    async fn open(t: Transport, addr: &str, token: &str, last_id: Option<&str>) -> Option<Self> {
        match t {
            Transport::WebSocket => Client::connect(&format!("ws://{addr}/ws?token={token}"))
                .await
                .ok()
                .map(|c| Self::Ws(Box::new(c))),
            Transport::Sse => SseClient::connect(addr, token, last_id)
                .await
                .ok()
                .map(|c| Self::Sse(Box::new(c))),
            Transport::Mqtt => MqttConn::open(addr, token)
                .await
                .ok()
                .map(|c| Self::Mqtt(Box::new(c))),
        }
    }

    fn welcome(&self) -> &Value {
        match self {
            Self::Ws(c) => &c.welcome,
            Self::Sse(c) => &c.welcome,
            Self::Mqtt(c) => &c.welcome,
        }
    }

    fn last_id(&self) -> Option<String> {
        match self {
            Self::Ws(_) | Self::Mqtt(_) => None,
            Self::Sse(c) => c.last_id.clone(),
        }
    }

    async fn next(&mut self, wait: Duration) -> Next {
        match self {
            Self::Ws(c) => match tokio::time::timeout(wait, c.ws.next()).await {
                Err(_) => Next::Nothing,
                Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str(&t)
                    .map(Next::Frame)
                    .unwrap_or(Next::Nothing),
                Ok(Some(Ok(Message::Close(f)))) => {
                    Next::Ended(f.map_or(CloseCode::Status.into(), |f| u16::from(f.code)))
                }
                Ok(Some(Ok(_))) => Next::Nothing,
                Ok(Some(Err(_)) | None) => Next::Ended(DROPPED),
            },
            Self::Sse(c) => match c.next_frame(wait).await {
                Ok(f) if f["type"] == "close" => {
                    Next::Ended(f["code"].as_u64().map_or(DROPPED, |c| c as u16))
                }
                Ok(f) => Next::Frame(f),
                Err(e) if e.to_string().starts_with("no frame") => Next::Nothing,
                Err(_) => Next::Ended(DROPPED),
            },
            Self::Mqtt(c) => match c.client.next_publish(wait).await {
                Ok(r) => {
                    if let Some(id) = r.json["id"].as_str() {
                        c.pkids.insert(id.to_string(), r.pkid);
                    }
                    Next::Frame(r.json)
                }
                Err(e) if e.to_string().contains("no packet in time") => Next::Nothing,
                // MQTT 3.1.1 has no server DISCONNECT: a close is a dropped socket.
                Err(_) => Next::Ended(DROPPED),
            },
        }
    }

    async fn ack(&mut self, id: &str) -> anyhow::Result<()> {
        match self {
            Self::Ws(c) => c.ack(id).await,
            Self::Sse(c) => c.ack(id).await,
            Self::Mqtt(c) => match c.pkids.remove(id) {
                // QoS 0 (not stored): nothing to ack.
                Some(0) | None => Ok(()),
                Some(pkid) => c.client.puback(pkid).await,
            },
        }
    }

    async fn close(self) {
        match self {
            Self::Ws(mut c) => {
                let _ = c.ws.close(None).await;
            }
            Self::Mqtt(c) => c.client.disconnect().await,
            Self::Sse(_) => {}
        }
    }
}

/// One user of a [`Fleet`]: connect, ack everything, reconnect after any end.
async fn fleet_user(
    i: usize,
    u: String,
    shared: Arc<FleetShared>,
    received: Arc<Mutex<HashMap<String, HashSet<String>>>>,
    dups: Arc<AtomicUsize>,
) {
    let mut pick = i;
    let mut last_end: Option<SessionEnd> = None;
    let mut last_id: Option<String> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let addr = {
            let urls = shared.urls.lock().unwrap();
            pick += 1;
            urls[pick % urls.len()].clone()
        };
        let token = token_with_secret(&u, &[], 600, &shared.secret);
        let Some(mut c) = Conn::open(shared.transport, &addr, &token, last_id.as_deref()).await
        else {
            shared.connect_failures.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let node = c.welcome()["node"].as_str().unwrap_or_default().to_string();
        shared
            .connected
            .lock()
            .unwrap()
            .insert(u.clone(), node.clone());
        if let Some(end) = last_end.take() {
            let gap = end.at.elapsed();
            shared.reconnects.lock().unwrap().push(Reconnect {
                end,
                to: node.clone(),
                gap,
            });
        }
        let mut here = HashSet::new();
        // Over SSE the stream resumes after `Last-Event-ID`: after an ack that did not
        // go through (its gateway died), resume from before that notification, so it is
        // replayed and acked again rather than left in the inbox.
        let mut acked_upto = last_id.clone();
        let mut ack_failed = false;
        let server_end = loop {
            if shared.stop.load(Ordering::Relaxed) {
                break None;
            }
            if shared.bounce.lock().unwrap().remove(&u) {
                break None;
            }
            let f = match c.next(Duration::from_millis(200)).await {
                Next::Frame(f) => f,
                Next::Nothing => continue,
                Next::Ended(code) => break Some(code),
            };
            if f["type"] == "notification" {
                let id = f["id"].as_str().unwrap_or_default().to_string();
                if !here.insert(id.clone()) {
                    dups.fetch_add(1, Ordering::Relaxed);
                }
                received
                    .lock()
                    .unwrap()
                    .entry(u.clone())
                    .or_default()
                    .insert(id.clone());
                if c.ack(&id).await.is_err() {
                    ack_failed = true;
                    break Some(DROPPED);
                }
                acked_upto = c.last_id();
            } else if f["type"] == "error" {
                // An ack the server could not record: reconnect, the inbox replays
                // what is still unacked.
                shared.error_frames.fetch_add(1, Ordering::Relaxed);
                break None;
            }
        };
        last_id = if ack_failed { acked_upto } else { c.last_id() };
        c.close().await;
        shared.connected.lock().unwrap().remove(&u);
        if let Some(code) = server_end {
            let end = SessionEnd {
                user: u.clone(),
                node,
                code,
                at: Instant::now(),
            };
            shared.ends.lock().unwrap().push(end.clone());
            last_end = Some(end);
        }
        tokio::time::sleep(Duration::from_millis(50 + (pick as u64 % 100))).await;
    }
}
