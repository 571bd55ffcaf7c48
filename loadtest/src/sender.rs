//! The sending side: `Send`/`Publish`/`Broadcast` over many gRPC channels (HTTP/2
//! connections) with a bound on calls in flight, or lines to the Socket.IO peer's
//! emitter process. `drive` paces sends open-loop at a rate, bounded by count and time.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use kurir_proto::v1::dispatcher_client::DispatcherClient;
use kurir_proto::v1::send_stream_reply::Result as Reply;
use kurir_proto::v1::{
    BroadcastRequest, Notification, PublishRequest, SendReply, SendRequest, SendStreamRequest,
};
use kurir_testkit::Bearer;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::mqtt::MqttPublisher;
use crate::report::Hist;
use crate::worker::now_us;

/// Who one send goes to.
#[derive(Debug, Clone)]
pub enum To {
    /// Users `first .. first + len` (mod the user count), by id.
    Users {
        first: u64,
        len: u64,
    },
    Topic(String),
    Broadcast,
}

/// One send.
#[derive(Debug, Clone)]
pub struct Job {
    pub seq: u32,
    pub to: To,
}

/// What the senders need to build requests.
#[derive(Clone)]
pub struct Content {
    pub user_prefix: String,
    pub total_users: u64,
    pub body: Arc<str>,
    pub ttl_seconds: u32,
}

impl Content {
    fn users(&self, first: u64, len: u64) -> Vec<String> {
        (0..len)
            .map(|k| {
                format!(
                    "{}{}",
                    self.user_prefix,
                    (first + k) % self.total_users.max(1)
                )
            })
            .collect()
    }

    fn data(&self, job: &Job) -> HashMap<String, String> {
        let mut data = HashMap::with_capacity(4);
        data.insert("s".into(), job.seq.to_string());
        data.insert("t".into(), now_us().to_string());
        if let To::Users { first, len } = job.to {
            data.insert("a".into(), (first % self.total_users.max(1)).to_string());
            data.insert("n".into(), len.to_string());
        }
        data
    }

    fn notification(&self, job: &Job) -> Notification {
        Notification {
            title: "lt".into(),
            body: self.body.to_string(),
            data: self.data(job),
            ..Default::default()
        }
    }
}

pub type Api = DispatcherClient<InterceptedService<Channel, Bearer>>;

/// `channels` (at least one) HTTP/2 connections to the dispatcher at `url`, each
/// carrying `api_key`.
pub async fn connect_apis(url: &str, api_key: &str, channels: usize) -> Result<Vec<Api>> {
    let key = Bearer::new(api_key)?;
    let mut clients = Vec::new();
    for _ in 0..channels.max(1) {
        let ch = Endpoint::from_shared(url.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect to dispatcher {url}"))?;
        clients.push(
            DispatcherClient::with_interceptor(ch, key.clone()).max_decoding_message_size(16 << 20),
        );
    }
    Ok(clients)
}

/// The outcome of one send.
pub enum Outcome {
    /// Accepted; `online` recipients as the dispatcher saw them (the emitter: `None`).
    Ok {
        online: Option<u32>,
    },
    Err(String),
}

pub enum Sender {
    Grpc {
        clients: Vec<Api>,
        /// One `SendStream` per connection, for Sends to users (`--send-stream`).
        streams: Option<Vec<Lane>>,
        content: Content,
    },
    Emitter {
        lines: mpsc::Sender<Vec<u8>>,
        content: Content,
    },
    /// MQTT publishers to a plain broker (Mosquitto), one PUBLISH per recipient.
    Mqtt {
        publishers: Vec<MqttPublisher>,
        content: Content,
    },
}

impl Sender {
    /// `channels` HTTP/2 connections to the dispatcher, used round-robin.
    pub async fn grpc(url: &str, api_key: &str, channels: usize, content: Content) -> Result<Self> {
        Ok(Self::Grpc {
            clients: connect_apis(url, api_key, channels).await?,
            streams: None,
            content,
        })
    }

    /// Like [`Self::grpc`], with Sends to users over one `SendStream` per connection.
    pub async fn grpc_streams(
        url: &str,
        api_key: &str,
        channels: usize,
        content: Content,
    ) -> Result<Self> {
        let clients = connect_apis(url, api_key, channels).await?;
        let mut lanes = Vec::with_capacity(clients.len());
        for api in &clients {
            lanes.push(Lane::open(api.clone()).await?);
        }
        Ok(Self::Grpc {
            clients,
            streams: Some(lanes),
            content,
        })
    }

    /// `channels` MQTT connections to the broker at `addr`, used round-robin.
    pub async fn mqtt(addr: SocketAddr, channels: usize, content: Content) -> Result<Self> {
        let mut publishers = Vec::new();
        for i in 0..channels.max(1) {
            publishers.push(
                MqttPublisher::connect(
                    addr,
                    &format!("lt-sender-{i}-{:08x}", rand::random::<u32>()),
                )
                .await
                .with_context(|| format!("connect to the broker at {addr}"))?,
            );
        }
        Ok(Self::Mqtt {
            publishers,
            content,
        })
    }

    /// Lines to the emitter's stdin, written by one task that flushes when idle.
    pub fn emitter(mut stdin: tokio::process::ChildStdin, content: Content) -> Self {
        // Full → senders wait (the emitter is the bottleneck; the pacing shows it).
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4096);
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if stdin.write_all(&line).await.is_err() {
                    break;
                }
                while let Ok(more) = rx.try_recv() {
                    if stdin.write_all(&more).await.is_err() {
                        return;
                    }
                }
                if stdin.flush().await.is_err() {
                    break;
                }
            }
        });
        Self::Emitter { lines: tx, content }
    }

    pub async fn send(&self, i: u64, job: Job) -> Outcome {
        match self {
            Self::Grpc {
                clients,
                streams,
                content,
            } => {
                let mut api = clients[(i % clients.len() as u64) as usize].clone();
                let notification = Some(content.notification(&job));
                let res = match job.to {
                    To::Users { first, len } if streams.is_some() => {
                        let lanes = streams.as_ref().expect("checked");
                        let request = SendRequest {
                            user_ids: content.users(first, len),
                            notification,
                            ttl_seconds: content.ttl_seconds,
                            ..Default::default()
                        };
                        return match lanes[(i % lanes.len() as u64) as usize]
                            .send(i, request)
                            .await
                        {
                            Ok(reply) => Outcome::Ok {
                                online: Some(reply.online_users),
                            },
                            Err(e) => Outcome::Err(e),
                        };
                    }
                    To::Users { first, len } => api
                        .send(SendRequest {
                            user_ids: content.users(first, len),
                            notification,
                            ttl_seconds: content.ttl_seconds,
                            idempotency_key: String::new(),
                            ..Default::default()
                        })
                        .await
                        .map(|r| Some(r.into_inner().online_users)),
                    To::Topic(topic) => api
                        .publish(PublishRequest {
                            topic,
                            notification,
                            ..Default::default()
                        })
                        .await
                        .map(|_| None),
                    To::Broadcast => api
                        .broadcast(BroadcastRequest {
                            notification,
                            ..Default::default()
                        })
                        .await
                        .map(|_| None),
                };
                match res {
                    Ok(online) => Outcome::Ok { online },
                    Err(s) => Outcome::Err(format!("{:?}", s.code())),
                }
            }
            Self::Mqtt {
                publishers,
                content,
            } => {
                let To::Users { first, len } = job.to else {
                    return Outcome::Err("topics_and_broadcast_not_measured".into());
                };
                let n = content.notification(&job);
                let frame = serde_json::json!({
                    "type": "notification",
                    "title": n.title,
                    "body": n.body,
                    "data": n.data,
                    "created_at": now_us() / 1000,
                });
                let payload = bytes::Bytes::from(frame.to_string());
                let publisher = &publishers[(i % publishers.len() as u64) as usize];
                for user in content.users(first, len) {
                    if let Err(e) = publisher
                        .publish(&crate::protocol::mosquitto_topic(&user), payload.clone())
                        .await
                    {
                        return Outcome::Err(format!("{:?}", e.kind()));
                    }
                }
                Outcome::Ok { online: None }
            }
            Self::Emitter { lines, content } => {
                let rooms: Vec<String> = match &job.to {
                    To::Users { first, len } => content
                        .users(*first, *len)
                        .into_iter()
                        .map(|u| format!("u:{u}"))
                        .collect(),
                    To::Topic(t) => vec![format!("t:{t}")],
                    To::Broadcast => Vec::new(),
                };
                let n = content.notification(&job);
                let line = serde_json::json!({
                    "rooms": rooms,
                    "n": {"title": n.title, "body": n.body, "data": n.data},
                });
                let mut bytes = line.to_string().into_bytes();
                bytes.push(b'\n');
                match lines.send(bytes).await {
                    Ok(()) => Outcome::Ok { online: None },
                    Err(_) => Outcome::Err("emitter_gone".into()),
                }
            }
        }
    }
}

/// One `SendStream`: requests go out in order, and replies come back in the same
/// order, each to the caller waiting for it.
pub struct Lane(Arc<Mutex<LaneQueue>>);

/// The waiting callers, oldest first, and the request stream, under one lock so the
/// two stay in the same order.
struct LaneQueue {
    waiting: VecDeque<oneshot::Sender<Result<SendReply, String>>>,
    requests: mpsc::Sender<SendStreamRequest>,
}

impl Lane {
    /// Requests queued towards the dispatcher at most (the in-flight bound keeps it far
    /// below).
    const QUEUE: usize = 8192;

    async fn open(mut api: Api) -> Result<Self> {
        let (requests, rx) = mpsc::channel(Self::QUEUE);
        let mut replies = api
            .send_stream(ReceiverStream::new(rx))
            .await
            .context("open a SendStream")?
            .into_inner();
        let queue = Arc::new(Mutex::new(LaneQueue {
            waiting: VecDeque::new(),
            requests,
        }));
        let reader = Arc::clone(&queue);
        tokio::spawn(async move {
            loop {
                let next = replies.message().await;
                let ended = !matches!(next, Ok(Some(_)));
                let result = match next {
                    Ok(Some(reply)) => match reply.result {
                        Some(Reply::Reply(r)) => Ok(r),
                        Some(Reply::Error(e)) => Err(format!("{:?}", tonic::Code::from(e.code))),
                        None => Err("empty_reply".into()),
                    },
                    Ok(None) => Err("stream_ended".into()),
                    Err(s) => Err(format!("{:?}", s.code())),
                };
                let mut q = reader.lock().expect("lane");
                if ended {
                    for waiter in q.waiting.drain(..) {
                        let _ = waiter.send(result.clone());
                    }
                    break;
                }
                if let Some(waiter) = q.waiting.pop_front() {
                    let _ = waiter.send(result);
                }
            }
        });
        Ok(Self(queue))
    }

    async fn send(&self, reference: u64, send: SendRequest) -> Result<SendReply, String> {
        let (tx, rx) = oneshot::channel();
        {
            let mut q = self.0.lock().expect("lane");
            q.requests
                .try_send(SendStreamRequest {
                    r#ref: reference,
                    send: Some(send),
                })
                .map_err(|_| "stream_full_or_gone".to_owned())?;
            q.waiting.push_back(tx);
        }
        rx.await.unwrap_or_else(|_| Err("stream_gone".into()))
    }
}

/// How many sends, how fast, for how long.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Sends per second; 0 = as fast as `inflight` allows.
    pub rate: f64,
    pub count: u64,
    pub duration: Duration,
    pub inflight: usize,
}

/// What the sender saw.
#[derive(Debug, Default)]
pub struct SendStats {
    pub attempted: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// Sends answered with `online_users` below the recipients asked for.
    pub offline: u64,
    pub rpc: Hist,
    /// Time spent issuing sends (the achieved rate is `attempted / elapsed`).
    pub elapsed: Duration,
    /// Recipients of accepted sends to users, per worker (for loss accounting).
    pub expected_per_worker: Vec<u64>,
    /// Accepted sends that were topic/broadcast.
    pub fanout_ok: u64,
}

#[derive(Default)]
struct Tally {
    stats: SendStats,
}

/// Send `plan.count` jobs (fewer if `plan.duration` runs out) made by `job(i)`;
/// `worker_of` maps a user index to the worker that holds it.
pub async fn drive(
    sender: Arc<Sender>,
    plan: Plan,
    workers: usize,
    worker_of: Arc<dyn Fn(u64) -> usize + Send + Sync>,
    total_users: u64,
    job: impl Fn(u64) -> Job,
) -> SendStats {
    let tally = Arc::new(Mutex::new(Tally::default()));
    tally
        .lock()
        .map(|mut t| t.stats.expected_per_worker = vec![0; workers.max(1)])
        .ok();
    let sem = Arc::new(Semaphore::new(plan.inflight.max(1)));
    let started = Instant::now();
    let deadline = started + plan.duration;
    let mut attempted = 0;
    while attempted < plan.count && Instant::now() < deadline {
        if plan.rate > 0.0 {
            let at = started + Duration::from_secs_f64(attempted as f64 / plan.rate);
            if at > Instant::now() {
                tokio::time::sleep_until(at.min(deadline)).await;
                continue;
            }
        }
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let j = job(attempted);
        let (sender, tally, worker_of) = (sender.clone(), tally.clone(), worker_of.clone());
        let i = attempted;
        tokio::spawn(async move {
            let t0 = Instant::now();
            let outcome = sender.send(i, j.clone()).await;
            let us = t0.elapsed().as_micros() as u64;
            // The permit goes back after the tally: `drive` waits for all permits
            // before reading it.
            let _permit = permit;
            let Ok(mut t) = tally.lock() else { return };
            let s = &mut t.stats;
            s.rpc.record(us);
            match outcome {
                Outcome::Ok { online } => {
                    s.ok += 1;
                    match j.to {
                        To::Users { first, len } => {
                            if online.is_some_and(|o| u64::from(o) < len) {
                                s.offline += 1;
                            }
                            for k in 0..len {
                                let w = worker_of((first + k) % total_users.max(1));
                                s.expected_per_worker[w] += 1;
                            }
                        }
                        To::Topic(_) | To::Broadcast => s.fanout_ok += 1,
                    }
                }
                Outcome::Err(code) => *s.errors.entry(code).or_default() += 1,
            }
        });
        attempted += 1;
    }
    let sending = started.elapsed();
    // Wait for the calls in flight (bounded by the RPC timeout).
    let _ = tokio::time::timeout(
        Duration::from_secs(35),
        sem.acquire_many(plan.inflight.max(1) as u32),
    )
    .await;
    let mut t = match tally.lock() {
        Ok(mut t) => std::mem::take(&mut t.stats),
        Err(_) => SendStats::default(),
    };
    t.attempted = attempted;
    t.elapsed = sending;
    t
}
