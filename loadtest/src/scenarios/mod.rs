//! Scenarios, one file each, on a shared [`Bench`]: targets (spawned or given), workers
//! holding the clients, a sender, and the /proc samples that turn into CPU and memory
//! figures. Every scenario is bounded by `--duration` and by its own counts.

pub mod batch;
pub mod churn;
pub mod connect;
pub mod due;
pub mod fanout;
pub mod floor;
mod sections;
pub mod targeted;

pub use sections::{
    client_section, connect_section, cpu_section, delivery_section, frames_section, merge, Received,
};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use tokio::time::Instant;

use crate::cluster::{self, SpawnOptions, Targets};
use crate::fleet::Fleet;
use crate::procs::{self, Role, Snapshot, Watched};
use crate::protocol::Protocol;
use crate::report::{ratio, Report};
use crate::sender::{Content, Plan, Sender};
use crate::worker::{ClientSpec, ConnectSummary, WorkerReport};

/// Options every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Start 1 dispatcher + `--gateways` gateways (random namespace, loopback ports).
    #[arg(long)]
    pub spawn_cluster: bool,
    /// Gateways to start with `--spawn-cluster`.
    #[arg(long, default_value_t = 1)]
    pub gateways: usize,
    /// Where kurir-gateway and kurir-dispatcher are (default: next to this binary, else
    /// target/release).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Extra KEY=VALUE environment for spawned gateways (repeatable).
    #[arg(long = "gateway-env")]
    pub gateway_env: Vec<String>,
    /// Extra KEY=VALUE environment for the spawned dispatcher (repeatable).
    #[arg(long = "dispatcher-env")]
    pub dispatcher_env: Vec<String>,
    /// An existing gateway, `ws://127.0.0.1:PORT/ws` (repeatable).
    #[arg(long = "gateway")]
    pub gateway_urls: Vec<String>,
    /// An existing dispatcher, `http://127.0.0.1:PORT`.
    #[arg(long)]
    pub dispatcher: Option<String>,
    #[arg(long, env = "KURIR_LOADTEST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[arg(long, env = "KURIR_LOADTEST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// A server process to measure, `name=PID` (names starting with `gateway` or
    /// `dispatcher` count for those roles; repeatable).
    #[arg(long = "pid", value_parser = procs::parse_pid_arg)]
    pub pids: Vec<Watched>,
    /// Sends to users over `SendStream` (one stream per `--channels` connection)
    /// instead of one unary call each.
    #[arg(long)]
    pub send_stream: bool,
    /// Run against Kurir or against the Socket.IO peer stack.
    #[arg(long, value_enum, default_value = "kurir")]
    pub peer: Protocol,
    /// Run the scenario against Kurir, then the same against the Socket.IO peer, and
    /// print Kurir/peer ratios.
    #[arg(long)]
    pub compare_socketio: bool,
    /// Run the scenario against Kurir, then the same against a Mosquitto broker of its
    /// own (clients subscribe to their user's topic at QoS 0), and print Kurir/peer
    /// ratios.
    #[arg(long, conflicts_with = "compare_socketio")]
    pub compare_mqtt: bool,
    /// The Socket.IO peer's directory (with node_modules installed).
    #[arg(long, default_value = "loadtest/peers/socketio")]
    pub peer_dir: PathBuf,
    /// Worker processes holding the clients; 0 = inside this process. Default: one per
    /// 15,000 clients (0 below 2,000).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Upper bound of the measured phase, seconds.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Seed of every random choice (recipients, churn holds).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Clients (one per user) held during the scenario.
    #[arg(long, default_value_t = 1000)]
    pub clients: u64,
    /// Connects per second while opening clients (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Handshakes in flight per worker.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Connect and handshake timeout, ms.
    #[arg(long, default_value_t = 15_000)]
    pub timeout_ms: u64,
    /// After the last send, wait at most this long for missing deliveries, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    #[arg(
        long,
        env = "KURIR_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    #[arg(long, env = "KURIR_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Where spawned servers write their logs.
    #[arg(long, default_value = "/tmp/kurir-loadtest")]
    pub log_dir: PathBuf,
}

impl Common {
    pub fn workers_for(&self, clients: u64) -> usize {
        self.workers.unwrap_or(if clients < 2000 {
            0
        } else {
            clients.div_ceil(15_000) as usize
        })
    }

    fn bin_dir(&self) -> PathBuf {
        if let Some(d) = &self.bin_dir {
            return d.clone();
        }
        let here = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(PathBuf::from));
        match here {
            Some(d) if d.join("kurir-gateway").exists() => d,
            _ => PathBuf::from("target/release"),
        }
    }

    /// Parameters common to every report.
    pub fn describe(&self, r: &mut Report, protocol: Protocol, gateways: usize, workers: usize) {
        r.param("peer", format!("{protocol:?}").to_lowercase());
        r.param("clients", self.clients);
        r.param("gateways", gateways);
        r.param("workers", workers);
        r.param("seed", self.seed);
    }
}

/// A prepared run: targets up, workers set up (clients not yet connected).
pub struct Bench {
    pub common: Common,
    pub protocol: Protocol,
    pub targets: Targets,
    pub fleet: Fleet,
    pub user_prefix: String,
    pub total_users: u64,
    emitter: Option<std::process::ChildStdin>,
    pub started: Instant,
}

impl Bench {
    /// Bring targets up and start the workers for `total_users` clients plus `extra`
    /// (churners) in the worker count.
    pub async fn start(common: &Common, protocol: Protocol, extra: u64) -> Result<Self> {
        procs::raise_nofile()?;
        let (targets, emitter) = match protocol {
            Protocol::Socketio => {
                let (t, stdin) = crate::peer::spawn_socketio(
                    &common.peer_dir,
                    &common.redis_url,
                    &common.log_dir,
                )
                .await?;
                (t, Some(stdin))
            }
            Protocol::Mosquitto => (crate::peer::spawn_mosquitto(&common.log_dir).await?, None),
            Protocol::Kurir | Protocol::KurirSse | Protocol::KurirMqtt if common.spawn_cluster => {
                let opts = SpawnOptions {
                    gateways: common.gateways.max(1),
                    bin_dir: common.bin_dir(),
                    nats_url: common.nats_url.clone(),
                    redis_url: common.redis_url.clone(),
                    log_dir: common.log_dir.clone(),
                    gateway_env: key_values(&common.gateway_env),
                    dispatcher_env: key_values(&common.dispatcher_env),
                };
                (cluster::spawn_kurir(&opts).await?, None)
            }
            Protocol::KurirMqtt => bail!("--peer kurir-mqtt needs --spawn-cluster (it turns the gateways' MQTT listeners on)"),
            Protocol::Kurir | Protocol::KurirSse => {
                if common.gateway_urls.is_empty() {
                    bail!("give --spawn-cluster, or --gateway (and --dispatcher, --api-key, --jwt-secret)");
                }
                let mut t = Targets::default();
                for g in &common.gateway_urls {
                    t.gateways.push(cluster::parse_gateway_url(g)?);
                }
                t.dispatcher.clone_from(&common.dispatcher);
                t.api_key = common.api_key.clone().unwrap_or_default();
                t.jwt_secret = common
                    .jwt_secret
                    .clone()
                    .context("--jwt-secret is needed to sign client tokens")?;
                (t, None)
            }
        };
        let mut targets = targets;
        targets.watched.extend(common.pids.iter().cloned());
        // The load generator itself (sender, and the clients when `--workers 0`), so the
        // report shows where the box's CPU went.
        targets.watched.push(Watched {
            name: "loadtest".into(),
            pid: std::process::id(),
            role: Role::Other,
        });
        let workers = common.workers_for(common.clients + extra);
        let exe = std::env::current_exe()?;
        let max_seconds = (common.duration + common.drain) as u64 + 600;
        let mut fleet = Fleet::start(workers, common.clients, &exe, max_seconds).await?;
        let user_prefix = format!("lt{:x}-", rand::random::<u32>());
        fleet
            .setup(&ClientSpec {
                protocol,
                // MQTT devices connect to the gateways' MQTT listeners.
                gateways: if protocol.is_mqtt() {
                    targets.mqtt.clone()
                } else {
                    targets.gateways.clone()
                },
                user_prefix: user_prefix.clone(),
                jwt_secret: targets.jwt_secret.clone(),
                total_users: common.clients,
                source_ips: Vec::new(),
                timeout_ms: common.timeout_ms,
                ack: false,
            })
            .await?;
        Ok(Self {
            common: common.clone(),
            protocol,
            targets,
            fleet,
            user_prefix,
            total_users: common.clients,
            emitter,
            started: Instant::now(),
        })
    }

    pub async fn connect(&mut self, topics: &[String]) -> Result<ConnectSummary> {
        let s = self
            .fleet
            .connect(
                topics,
                self.common.connect_rate,
                self.common.connect_concurrency,
            )
            .await?;
        self.targets.check_alive()?;
        Ok(s)
    }

    pub async fn sender(
        &mut self,
        body_bytes: usize,
        ttl_seconds: u32,
        channels: usize,
    ) -> Result<Arc<Sender>> {
        let content = Content {
            user_prefix: self.user_prefix.clone(),
            total_users: self.total_users,
            body: "x".repeat(body_bytes).into(),
            ttl_seconds,
        };
        Ok(Arc::new(match self.protocol {
            Protocol::Socketio => {
                let stdin = self.emitter.take().context("emitter already taken")?;
                Sender::emitter(tokio::process::ChildStdin::from_std(stdin)?, content)
            }
            Protocol::Mosquitto => {
                let broker = *self.targets.mqtt.first().context("no broker")?;
                Sender::mqtt(broker, channels, content).await?
            }
            Protocol::Kurir | Protocol::KurirSse | Protocol::KurirMqtt => {
                let url = self
                    .targets
                    .dispatcher
                    .clone()
                    .context("--dispatcher is needed for sends")?;
                if self.common.send_stream {
                    Sender::grpc_streams(&url, &self.targets.api_key, channels, content).await?
                } else {
                    Sender::grpc(&url, &self.targets.api_key, channels, content).await?
                }
            }
        }))
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot::take(&self.targets.watched)
    }

    pub fn worker_of(&self) -> Arc<dyn Fn(u64) -> usize + Send + Sync> {
        let ranges = self.fleet.ranges.clone();
        Arc::new(move |i| {
            ranges
                .iter()
                .position(|&(a, n)| i >= a && i < a + n)
                .unwrap_or(0)
        })
    }

    /// Wait until the workers hold `expected` receipts, or no new one arrived for
    /// `--drain` seconds (bounded at 60 s).
    pub async fn wait_receipts(&mut self, expected: u64) -> Result<u64> {
        let stall = Duration::from_secs_f64(self.common.drain);
        let hard = Instant::now() + Duration::from_secs(60);
        let mut last = 0;
        let mut last_change = Instant::now();
        loop {
            let got: u64 = self.fleet.poll().await?.iter().map(|p| p.receipts).sum();
            if got >= expected {
                return Ok(got);
            }
            if got != last {
                last = got;
                last_change = Instant::now();
            }
            if last_change.elapsed() > stall || Instant::now() > hard {
                return Ok(got);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop the clients, then the servers we started.
    pub async fn finish(mut self) -> Result<Vec<WorkerReport>> {
        let reports = self.fleet.finish().await;
        self.targets.shutdown();
        reports
    }

    pub fn plan(&self, rate: f64, count: u64, inflight: usize) -> Plan {
        Plan {
            rate,
            count,
            duration: Duration::from_secs_f64(self.common.duration),
            inflight,
        }
    }
}

/// splitmix64: a stateless, seeded choice per send.
/// `KEY=VALUE` arguments as pairs (others are ignored).
fn key_values(args: &[String]) -> Vec<(String, String)> {
    args.iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub fn pick(seed: u64, i: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % n.max(1)
}

/// Run `scenario` against Kurir; with `--compare-socketio` or `--compare-mqtt`, also
/// against that peer, then print ratios. Returns the text or JSON to print and whether
/// the run was correct.
pub async fn run_compared<F, Fut>(common: &Common, scenario: F) -> Result<(String, bool)>
where
    F: Fn(Common, Protocol) -> Fut,
    Fut: std::future::Future<Output = Result<(Report, bool)>>,
{
    let (kurir, ok) = scenario(common.clone(), common.peer).await?;
    let peer_protocol = if common.compare_socketio {
        Protocol::Socketio
    } else {
        Protocol::Mosquitto
    };
    if !(common.compare_socketio || common.compare_mqtt) || common.peer.is_peer() {
        let text = if common.json {
            serde_json::to_string_pretty(&kurir.to_json())?
        } else {
            kurir.human()
        };
        return Ok((text, ok));
    }
    let (peer, peer_ok) = scenario(common.clone(), peer_protocol).await?;
    let peer_name = if peer_protocol == Protocol::Socketio {
        "socketio"
    } else {
        "mosquitto"
    };
    let mut cmp = Report::new(&format!("kurir / {peer_name}"));
    for (key, label, higher_is_better) in [
        (
            "deliveries_per_gateway_cpu_second",
            "deliveries per front-end CPU-second",
            true,
        ),
        (
            "deliveries_per_server_cpu_second",
            "deliveries per server CPU-second (all)",
            true,
        ),
        (
            "sends_per_dispatcher_cpu_second",
            "sends per back-end CPU-second",
            true,
        ),
        (
            "bytes_per_connection",
            "memory per connection (peer / kurir)",
            false,
        ),
        ("connect_rate", "connect rate", true),
    ] {
        let (Some(k), Some(p)) = (num(&kurir, key), num(&peer, key)) else {
            continue;
        };
        let v = if higher_is_better {
            ratio(k, p)
        } else {
            ratio(p, k)
        };
        cmp.num(key, label, v, "×");
    }
    for key in ["delay", "response_time"] {
        let get = |r: &Report, q: &str| {
            r.metric(key)
                .and_then(|v| v.get(q))
                .and_then(serde_json::Value::as_f64)
        };
        for q in ["p50_us", "p99_us"] {
            if let (Some(k), Some(p)) = (get(&kurir, q), get(&peer, q)) {
                cmp.num(
                    &format!("{key}_{q}"),
                    &format!("{key} {q} (peer / kurir)"),
                    ratio(p, k),
                    "×",
                );
            }
        }
    }
    let text = if common.json {
        serde_json::to_string_pretty(&serde_json::json!({
            "kurir": kurir.to_json(),
            peer_name: peer.to_json(),
            "ratios": cmp.to_json()["metrics"],
        }))?
    } else {
        format!("{}\n{}\n{}", kurir.human(), peer.human(), cmp.human())
    };
    Ok((text, ok && peer_ok))
}

fn num(r: &Report, key: &str) -> Option<f64> {
    r.metric(key).and_then(serde_json::Value::as_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_are_seeded_and_spread() {
        assert_eq!(pick(1, 5, 100), pick(1, 5, 100));
        assert_ne!(
            (0..10).map(|i| pick(1, i, 1000)).collect::<Vec<_>>(),
            (0..10).map(|i| pick(2, i, 1000)).collect::<Vec<_>>()
        );
        let mut hits = [0u32; 10];
        for i in 0..10_000 {
            hits[pick(7, i, 10) as usize] += 1;
        }
        assert!(hits.iter().all(|&h| (800..1200).contains(&h)), "{hits:?}");
    }
}
