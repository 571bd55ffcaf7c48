//! The client side: a worker holds a share of the load clients (one task and one socket
//! each), records what they receive, and answers the coordinator's commands. It runs in
//! the coordinator's process (`--workers 0`) or as a `kurir-loadtest worker` child that
//! speaks JSON lines on stdin/stdout, so that clients can exceed one process's open-file
//! limit.
//!
//! Accounting: every notification carries `data.s` (sequence), `data.t` (sender's clock,
//! µs) and, when sent to users by id, `data.a`/`data.n` (the recipient window over user
//! indexes). A client checks it is inside the window (else `misrouted`), keeps the
//! sequences it received, and at the end counts distinct ones and duplicates. The
//! coordinator compares distinct receipts with what it expects per worker.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use kurir_testkit::ClientToken;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::conn::Conn;
use crate::protocol::{Incoming, Protocol};
use crate::report::{Hist, HistDump};
use crate::ws::{ConnectError, Event};

/// Unix time in µs (the clock the sender stamps `data.t` with).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Who the clients are and where they connect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientSpec {
    pub protocol: Protocol,
    pub gateways: Vec<SocketAddr>,
    pub user_prefix: String,
    pub jwt_secret: String,
    /// Users in the whole run (window arithmetic is modulo this).
    pub total_users: u64,
    /// Source addresses to spread this worker's sockets over.
    pub source_ips: Vec<IpAddr>,
    pub timeout_ms: u64,
    /// Ack stored notifications (those carrying a cursor).
    pub ack: bool,
}

/// Connect users `first .. first + count`; user `i` goes to gateway `i % gateways`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectSpec {
    pub first: u64,
    pub count: u64,
    /// Topics every client subscribes to after `welcome`.
    pub topics: Vec<String>,
    /// Connects per second for this worker; 0 = as fast as `concurrency` allows.
    pub rate: f64,
    /// Handshakes in flight at once.
    pub concurrency: usize,
}

/// Clients that connect, hold for about `hold_ms`, disconnect, and start over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChurnSpec {
    pub first: u64,
    pub churners: u64,
    pub hold_ms: u64,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    Setup(ClientSpec),
    Connect(ConnectSpec),
    Churn(ChurnSpec),
    Poll,
    Finish,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Ok,
    Connected(ConnectSummary),
    Progress(Progress),
    Report(Box<WorkerReport>),
    Failed { message: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectSummary {
    pub ok: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub elapsed_ms: u64,
    /// Time from the TCP connect to `welcome` (and `subscribed`), µs.
    pub handshake: HistDump,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Progress {
    pub receipts: u64,
    pub live: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChurnStats {
    pub connects: u64,
    pub disconnects: u64,
    pub errors: BTreeMap<String, u64>,
    pub handshake: HistDump,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    pub receipts: u64,
    pub distinct: u64,
    pub duplicates: u64,
    pub misrouted: u64,
    /// `error` frames and undecodable notifications, by code.
    pub bad_frames: BTreeMap<String, u64>,
    /// Connections the server closed (or reset) before the end, by close code.
    pub closes: BTreeMap<String, u64>,
    /// Receipt time − `data.t` (sender clock), µs.
    pub delay: HistDump,
    /// Receipt time − `created_at` (ms resolution), µs.
    pub created_delay: HistDump,
    /// Topic/broadcast: per sequence, receipts, the latest receipt time and the send
    /// time (unix µs).
    pub fanout: Vec<(u32, u64, u64, u64)>,
    pub churn: ChurnStats,
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

#[derive(Default)]
struct Measures {
    delay: Hist,
    created_delay: Hist,
    misrouted: u64,
    bad_frames: BTreeMap<String, u64>,
    closes: BTreeMap<String, u64>,
    fanout: HashMap<u32, (u64, u64, u64)>,
    churn_handshake: Hist,
    churn_errors: BTreeMap<String, u64>,
}

struct Shared {
    spec: ClientSpec,
    stop: CancellationToken,
    receipts: AtomicU64,
    live: AtomicU64,
    churn_connects: AtomicU64,
    churn_disconnects: AtomicU64,
    m: Mutex<Measures>,
}

impl Shared {
    fn measures(&self) -> std::sync::MutexGuard<'_, Measures> {
        self.m
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn token(&self, user: &str) -> String {
        ClientToken::new(user)
            .expires_in(24 * 3600)
            .topics(&["lt.*"])
            .sign(&self.spec.jwt_secret)
    }

    fn gateway(&self, user_index: u64) -> SocketAddr {
        let g = &self.spec.gateways;
        g[(user_index % g.len() as u64) as usize]
    }

    fn source(&self, k: u64) -> Option<IpAddr> {
        let ips = &self.spec.source_ips;
        (!ips.is_empty()).then(|| ips[(k % ips.len() as u64) as usize])
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.spec.timeout_ms)
    }

    /// Open, greet and subscribe one client.
    async fn open(
        &self,
        user_index: u64,
        user: &str,
        k: u64,
        topics: &[String],
    ) -> Result<Conn, ConnectError> {
        let addr = self.gateway(user_index);
        let token = self.token(user);
        let protocol = self.spec.protocol;
        let mut path = protocol.path(user, &token);
        if protocol.is_sse() && !topics.is_empty() {
            // An SSE stream subscribes at connect; the `subscribed` events follow.
            path.push_str(&format!("&topics={}", topics.join(",")));
        }
        if protocol == Protocol::Mosquitto {
            return crate::mqtt::MqttConn::connect_plain(
                addr,
                self.source(k),
                user,
                crate::protocol::mosquitto_topic(user),
                self.timeout(),
            )
            .await
            .map(Conn::Mqtt);
        }
        if protocol.is_mqtt() {
            // CONNECT, CONNACK, SUBSCRIBE and SUBACK: the whole handshake.
            return crate::mqtt::MqttConn::connect(
                addr,
                self.source(k),
                user,
                &token,
                topics,
                self.timeout(),
            )
            .await
            .map(Conn::Mqtt);
        }
        let host = addr.to_string();
        let mut ws = Conn::connect(
            protocol.is_sse(),
            addr,
            self.source(k),
            &host,
            &path,
            self.timeout(),
        )
        .await?;
        self.spec
            .protocol
            .handshake(&mut ws, self.timeout())
            .await?;
        for topic in topics {
            let io = |e: std::io::Error| ConnectError::Tcp(e.kind());
            if !protocol.is_sse() {
                ws.send_text(&protocol.subscribe_frame(topic))
                    .await
                    .map_err(io)?;
            }
            let deadline = Instant::now() + self.timeout();
            loop {
                let ev = tokio::time::timeout_at(deadline, ws.next())
                    .await
                    .map_err(|_| ConnectError::Timeout)?
                    .map_err(io)?;
                let reply: Option<&[u8]> = match ev {
                    None | Some(Event::Close(_)) => return Err(ConnectError::Handshake),
                    Some(Event::Text(t)) => match self.spec.protocol.classify(t) {
                        Incoming::Subscribed => break,
                        Incoming::Error(_) => return Err(ConnectError::Handshake),
                        Incoming::EioPing => Some(b"3"),
                        _ => None,
                    },
                };
                if let Some(r) = reply {
                    ws.send_text(r).await.map_err(io)?;
                }
            }
        }
        Ok(ws)
    }

    /// Receive until told to stop or the server closes; returns the sequences seen.
    async fn listen(&self, mut ws: Conn, me: u64) -> Vec<u32> {
        let mut seqs = Vec::new();
        let protocol = self.spec.protocol;
        loop {
            let ev = tokio::select! {
                biased;
                () = self.stop.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(1000)).await;
                    break;
                }
                ev = ws.next() => ev,
            };
            let reply = match ev {
                Err(_) | Ok(None) => {
                    *self.measures().closes.entry("reset".into()).or_default() += 1;
                    break;
                }
                Ok(Some(Event::Close(code))) => {
                    *self.measures().closes.entry(code.to_string()).or_default() += 1;
                    break;
                }
                Ok(Some(Event::Text(t))) => {
                    let now = now_us();
                    match protocol.classify(t) {
                        Incoming::Notification(n) => {
                            self.receipts.fetch_add(1, Ordering::Relaxed);
                            seqs.push(n.seq);
                            let mut m = self.measures();
                            m.delay.record(now.saturating_sub(n.sent_us));
                            m.created_delay
                                .record(now.saturating_sub((n.created_at.max(0) as u64) * 1000));
                            match n.window {
                                Some((first, len)) => {
                                    let total = self.spec.total_users.max(1);
                                    if (me + total - first % total) % total >= len {
                                        m.misrouted += 1;
                                    }
                                }
                                None => {
                                    let e = m.fanout.entry(n.seq).or_default();
                                    e.0 += 1;
                                    e.1 = e.1.max(now);
                                    e.2 = n.sent_us;
                                }
                            }
                            drop(m);
                            n.ack_id
                                .filter(|_| self.spec.ack)
                                .map(|id| protocol.ack_frame(&id))
                        }
                        Incoming::EioPing => Some(b"3".to_vec()),
                        Incoming::Error(code) => {
                            *self.measures().bad_frames.entry(code).or_default() += 1;
                            None
                        }
                        _ => None,
                    }
                }
            };
            if let Some(r) = reply {
                if ws.send_text(&r).await.is_err() {
                    *self.measures().closes.entry("reset".into()).or_default() += 1;
                    break;
                }
            }
        }
        seqs
    }
}

/// One worker's clients and measurements.
#[derive(Default)]
pub struct Worker {
    shared: Option<Arc<Shared>>,
    clients: Vec<JoinHandle<Vec<u32>>>,
    churners: Vec<JoinHandle<()>>,
}

impl Worker {
    pub async fn handle(&mut self, cmd: Command) -> Reply {
        match self.try_handle(cmd).await {
            Ok(r) => r,
            Err(e) => Reply::Failed {
                message: format!("{e:#}"),
            },
        }
    }

    async fn try_handle(&mut self, cmd: Command) -> Result<Reply> {
        match cmd {
            Command::Setup(spec) => {
                self.shared = Some(Arc::new(Shared {
                    spec,
                    stop: CancellationToken::new(),
                    receipts: AtomicU64::new(0),
                    live: AtomicU64::new(0),
                    churn_connects: AtomicU64::new(0),
                    churn_disconnects: AtomicU64::new(0),
                    m: Mutex::default(),
                }));
                Ok(Reply::Ok)
            }
            Command::Connect(spec) => Ok(Reply::Connected(self.connect(spec).await?)),
            Command::Churn(spec) => {
                self.churn(spec)?;
                Ok(Reply::Ok)
            }
            Command::Poll => {
                let s = self.shared()?;
                Ok(Reply::Progress(Progress {
                    receipts: s.receipts.load(Ordering::Relaxed),
                    live: s.live.load(Ordering::Relaxed),
                }))
            }
            Command::Finish => Ok(Reply::Report(Box::new(self.finish().await?))),
        }
    }

    fn shared(&self) -> Result<Arc<Shared>> {
        self.shared.clone().context("worker not set up")
    }

    async fn connect(&mut self, spec: ConnectSpec) -> Result<ConnectSummary> {
        let shared = self.shared()?;
        let started = Instant::now();
        let sem = Arc::new(Semaphore::new(spec.concurrency.max(1)));
        // Sized for the whole batch: every client reports exactly once.
        let (tx, mut rx) =
            mpsc::channel::<Result<u64, String>>(spec.count.clamp(1, 65_536) as usize);
        let topics = Arc::new(spec.topics.clone());
        let base = self.clients.len() as u64;
        let pacer = {
            let shared = shared.clone();
            let (sem, tx, topics) = (sem.clone(), tx.clone(), topics.clone());
            tokio::spawn(async move {
                let mut handles = Vec::with_capacity(spec.count as usize);
                for k in 0..spec.count {
                    if spec.rate > 0.0 {
                        let at = started + Duration::from_secs_f64(k as f64 / spec.rate);
                        tokio::time::sleep_until(at).await;
                    }
                    let Ok(permit) = sem.clone().acquire_owned().await else {
                        break;
                    };
                    if shared.stop.is_cancelled() {
                        break;
                    }
                    let (shared, tx, topics) = (shared.clone(), tx.clone(), topics.clone());
                    let index = spec.first + k;
                    handles.push(tokio::spawn(async move {
                        let user = format!("{}{index}", shared.spec.user_prefix);
                        let t0 = Instant::now();
                        let opened = shared.open(index, &user, base + k, &topics).await;
                        drop(permit);
                        match opened {
                            Ok(ws) => {
                                let _ = tx.send(Ok(t0.elapsed().as_micros() as u64)).await;
                                shared.live.fetch_add(1, Ordering::Relaxed);
                                let seqs = shared.listen(ws, index).await;
                                shared.live.fetch_sub(1, Ordering::Relaxed);
                                seqs
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e.label())).await;
                                Vec::new()
                            }
                        }
                    }));
                }
                handles
            })
        };
        drop(tx);
        let mut summary = ConnectSummary::default();
        let mut hist = Hist::default();
        let budget = Duration::from_millis(shared.spec.timeout_ms)
            + Duration::from_secs_f64(if spec.rate > 0.0 {
                spec.count as f64 / spec.rate
            } else {
                0.0
            })
            + Duration::from_secs(spec.count / 200 + 5);
        let deadline = started + budget;
        while summary.ok + summary.failed < spec.count {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(Ok(us)) => { summary.ok += 1; hist.record(us); }
                    Some(Err(label)) => { summary.failed += 1; *summary.errors.entry(label).or_default() += 1; }
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => {
                    let missing = spec.count - summary.ok - summary.failed;
                    summary.failed += missing;
                    *summary.errors.entry("deadline".into()).or_default() += missing;
                    break;
                }
            }
        }
        // Every client has reported (or the deadline passed): the pacer is done or
        // close to it.
        match tokio::time::timeout(shared.timeout() + Duration::from_secs(5), pacer).await {
            Ok(Ok(handles)) => self.clients.extend(handles),
            _ => anyhow::bail!("connect pacer did not finish"),
        }
        summary.elapsed_ms = started.elapsed().as_millis() as u64;
        summary.handshake = hist.dump();
        Ok(summary)
    }

    fn churn(&mut self, spec: ChurnSpec) -> Result<()> {
        let shared = self.shared()?;
        for j in 0..spec.churners {
            let shared = shared.clone();
            let index = spec.first + j;
            let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed ^ index);
            self.churners.push(tokio::spawn(async move {
                let user = format!("{}c{index}", shared.spec.user_prefix);
                let mut k = index * 7919;
                while !shared.stop.is_cancelled() {
                    k += 1;
                    let t0 = Instant::now();
                    match shared.open(index, &user, k, &[]).await {
                        Ok(mut ws) => {
                            shared.churn_connects.fetch_add(1, Ordering::Relaxed);
                            shared
                                .measures()
                                .churn_handshake
                                .record(t0.elapsed().as_micros() as u64);
                            let hold = rng.random_range(spec.hold_ms / 2..=spec.hold_ms * 3 / 2);
                            // Drain whatever arrives (pings) while holding.
                            let held = tokio::time::sleep(Duration::from_millis(hold));
                            tokio::pin!(held);
                            loop {
                                tokio::select! {
                                    () = &mut held => break,
                                    () = shared.stop.cancelled() => break,
                                    ev = ws.next() => match ev { Ok(Some(Event::Text(_))) => {}, _ => break },
                                }
                            }
                            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(1000)).await;
                            shared.churn_disconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            *shared.measures().churn_errors.entry(e.label()).or_default() += 1;
                            tokio::select! {
                                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                                () = shared.stop.cancelled() => {}
                            }
                        }
                    }
                }
            }));
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<WorkerReport> {
        let shared = self.shared()?;
        shared.stop.cancel();
        let mut report = WorkerReport::default();
        let deadline = Instant::now() + Duration::from_secs(15);
        for h in std::mem::take(&mut self.churners) {
            let _ = tokio::time::timeout_at(deadline, h).await;
        }
        for h in std::mem::take(&mut self.clients) {
            let Ok(Ok(mut seqs)) = tokio::time::timeout_at(deadline, h).await else {
                continue;
            };
            report.receipts += seqs.len() as u64;
            seqs.sort_unstable();
            let before = seqs.len();
            seqs.dedup();
            report.distinct += seqs.len() as u64;
            report.duplicates += (before - seqs.len()) as u64;
        }
        let m = shared.measures();
        report.misrouted = m.misrouted;
        report.bad_frames = m.bad_frames.clone();
        report.closes = m.closes.clone();
        report.delay = m.delay.dump();
        report.created_delay = m.created_delay.dump();
        report.fanout = m
            .fanout
            .iter()
            .map(|(&s, &(n, t, sent))| (s, n, t, sent))
            .collect();
        report.churn = ChurnStats {
            connects: shared.churn_connects.load(Ordering::Relaxed),
            disconnects: shared.churn_disconnects.load(Ordering::Relaxed),
            errors: m.churn_errors.clone(),
            handshake: m.churn_handshake.dump(),
        };
        if let Ok(s) = crate::procs::sample(std::process::id()) {
            report.rss_bytes = s.rss_bytes;
            report.cpu_seconds = s.cpu_seconds;
        }
        Ok(report)
    }
}

/// `kurir-loadtest worker`: serve commands from stdin, one JSON line each, replying on
/// stdout; exit on `finish`, on EOF (the coordinator died) or after `max_seconds`.
pub async fn serve_stdio(max_seconds: u64) -> Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let mut worker = Worker::default();
    let deadline = Instant::now() + Duration::from_secs(max_seconds);
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l?,
            () = tokio::time::sleep_until(deadline) => None,
        };
        let Some(line) = line else {
            if let Some(s) = &worker.shared {
                s.stop.cancel();
            }
            return Ok(());
        };
        let cmd: Command = serde_json::from_str(&line).context("bad command")?;
        let last = matches!(cmd, Command::Finish);
        let reply = worker.handle(cmd).await;
        let mut text = serde_json::to_vec(&reply)?;
        text.push(b'\n');
        out.write_all(&text).await?;
        out.flush().await?;
        if last {
            return Ok(());
        }
    }
}
