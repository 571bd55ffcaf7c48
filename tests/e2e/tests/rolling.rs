//! Issue 6, end to end through the real nginx load balancer of `deploy/local-cluster.sh`:
//! 1,000 clients; `restart-gateway 1` (SIGTERM → drain → start again) while stored
//! notifications are sent at a steady rate, then `rolling-restart` of both gateways.
//! Each time: every client of the draining gateway gets 1012 and is back, through nginx,
//! on the other gateway within the drain window plus a small margin; every send that
//! answered OK is received; no id twice on one connection; at the end every inbox is
//! empty. The cluster is stopped with `down` on drop, whatever happens.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use kurir_e2e::*;

const CLIENTS: usize = 1000;
const GATEWAYS: usize = 2;
/// `KURIR_DRAIN_SECONDS` of the gateways.
const DRAIN: Duration = Duration::from_secs(3);
/// How long after its drain window every client of a drained gateway may take to be
/// connected again, and the longest any client may take from its 1012 to its next
/// welcome: reconnect pause, nginx retry, upgrade, replay. Typically well under 1 s;
/// on a loaded 2-core machine a dropped SYN costs 1 s more, and one retransmitted twice
/// hits nginx's 2 s connect timeout and a retry.
const MARGIN: Duration = Duration::from_secs(4);
/// One stored send every 5 ms (200/s), to a random user.
const SEND_EVERY: Duration = Duration::from_millis(5);
const SENDS_IN_FLIGHT: usize = 32;
/// Bound of any one script command (restart-gateway ≈ drain + exit + start + ready).
const SCRIPT_LIMIT: Duration = Duration::from_secs(60);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local-cluster.sh")
}

/// `n` consecutive free loopback ports below the ephemeral range (32768+): a
/// gateway's port is free while it restarts, and the thousands of client and proxy
/// sockets of this test must not be able to take it meanwhile.
fn free_ports(n: u16) -> u16 {
    for _ in 0..1000 {
        let base = 20_000 + rand::random::<u16>() % (32_000 - 20_000 - n);
        let held: Vec<TcpListener> = (0..n)
            .map_while(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == n as usize {
            return base;
        }
    }
    panic!("no {n} consecutive free ports in 20000..32000");
}

/// A local cluster run by the script in a private state directory; `down` on drop.
struct LocalCluster {
    state: PathBuf,
    env: Vec<(String, String)>,
    /// From `env`: KURIR_JWT_SECRET, KURIR_API_KEY, KURIR_LB_URL, …
    vars: HashMap<String, String>,
    namespace: String,
    keep_state: bool,
}

impl LocalCluster {
    fn up(gateways: usize) -> Result<Self> {
        let state = std::env::temp_dir().join(format!(
            "kurir-e2e-rolling-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let namespace = random_namespace();
        let bins = bin("kurir-gateway")
            .parent()
            .context("bin dir")?
            .to_path_buf();
        let _ = bin("kurir-dispatcher");
        let port = |p: u16| p.to_string();
        // All ports from one block: separate picks could hand out the same port twice.
        let gw = gateways as u16;
        let base = free_ports(3 + 2 * gw);
        let env = vec![
            ("KURIR_LOCAL_STATE", state.display().to_string()),
            ("KURIR_BIN_DIR", bins.display().to_string()),
            ("KURIR_NAMESPACE", namespace.clone()),
            ("KURIR_REDIS_URL", redis_url()),
            ("KURIR_NATS_URL", nats_url()),
            ("KURIR_DRAIN_SECONDS", DRAIN.as_secs().to_string()),
            ("KURIR_READY_TIMEOUT", "30".to_string()),
            ("KURIR_LB_PORT", port(base)),
            ("KURIR_DISPATCHER_GRPC_PORT", port(base + 1)),
            ("KURIR_DISPATCHER_METRICS_PORT", port(base + 2)),
            ("KURIR_GATEWAY_PORT_BASE", port(base + 3)),
            ("KURIR_GATEWAY_METRICS_PORT_BASE", port(base + 3 + gw)),
            ("KURIR_JWT_SECRET", String::new()),
            ("KURIR_API_KEYS", String::new()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut cluster = Self {
            state,
            env,
            vars: HashMap::new(),
            namespace,
            keep_state: true,
        };
        // Generated secrets: the empty values above are dropped by `command`.
        cluster.run(&["up", "--no-build", "--gateways", &gateways.to_string()])?;
        let out = cluster.run(&["env"])?;
        cluster.vars = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.strip_prefix("export ")?.split_once('=')?;
                Some((k.to_string(), v.trim_matches('\'').to_string()))
            })
            .collect();
        Ok(cluster)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(script()).args(args);
        for (k, v) in &self.env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        cmd.stdin(std::process::Stdio::null());
        cmd
    }

    /// Run a script command to completion; error with its output when it fails.
    fn run(&self, args: &[&str]) -> Result<Output> {
        let out = self
            .command(args)
            .output()
            .context("run local-cluster.sh")?;
        ensure!(
            out.status.success(),
            "local-cluster.sh {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        Ok(out)
    }

    /// Start a script command in the background (killed if the test ends first).
    fn spawn(&self, args: &[&str]) -> Result<tokio::process::Child> {
        let mut cmd = tokio::process::Command::from(self.command(args));
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        Ok(cmd.spawn()?)
    }

    fn var(&self, name: &str) -> Result<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("`local-cluster.sh env` has no {name}"))
    }

    fn lb_addr(&self) -> Result<String> {
        let url = self.var("KURIR_LB_URL")?;
        let rest = url.strip_prefix("ws://").context("LB URL")?;
        Ok(rest.split('/').next().unwrap_or_default().to_string())
    }

    fn gateway_metrics(&self) -> Result<Vec<SocketAddr>> {
        self.var("KURIR_GATEWAY_METRICS_URLS")?
            .split_whitespace()
            .map(|u| {
                let hostport = u
                    .strip_prefix("http://")
                    .and_then(|r| r.split('/').next())
                    .context("metrics URL")?;
                Ok(hostport.parse()?)
            })
            .collect()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = self.command(&["down"]).output();
        cleanup_namespace(&redis_url(), &self.namespace);
        if self.keep_state {
            eprintln!(
                "local cluster state and logs kept in {}",
                self.state.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.state);
        }
    }
}

/// Wait for a background script command, bounded; its stderr (the script's log).
async fn finish(mut child: tokio::process::Child, what: &str) -> Result<String> {
    use tokio::io::AsyncReadExt;
    let status = tokio::time::timeout(SCRIPT_LIMIT, child.wait())
        .await
        .map_err(|_| anyhow!("{what} did not finish within {SCRIPT_LIMIT:?}"))??;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err).await?;
    }
    ensure!(status.success(), "{what} failed ({status}):\n{err}");
    Ok(err)
}

/// Sum of `kurir_gateway_connections` over the gateways that answer.
async fn gateway_connections(metrics: &[SocketAddr]) -> (usize, Vec<usize>) {
    let mut each = Vec::new();
    for m in metrics {
        let v = metric(*m, "kurir_gateway_connections").await.unwrap_or(0.0);
        each.push(v as usize);
    }
    (each.iter().sum(), each)
}

/// Stored sends to random users at a steady rate until stopped.
struct Sender {
    ok: Arc<Mutex<Vec<(String, String)>>>,
    failed: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sender {
    fn start(api: Api, users: Vec<String>) -> Self {
        let ok: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let failed: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop: Arc<AtomicBool> = Arc::default();
        let (ok2, failed2, stop2) = (ok.clone(), failed.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(SENDS_IN_FLIGHT));
            let mut tick = tokio::time::interval(SEND_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut inflight = tokio::task::JoinSet::new();
            let mut seq = 0usize;
            while !stop2.load(Ordering::Relaxed) {
                tick.tick().await;
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let u = users[rand::random::<u32>() as usize % users.len()].clone();
                let (mut api, ok, failed) = (api.clone(), ok2.clone(), failed2.clone());
                seq += 1;
                inflight.spawn(async move {
                    match send(&mut api, &[&u], &format!("r{seq}"), 600).await {
                        Ok(r) => ok.lock().unwrap().push((u, r.id)),
                        Err(e) => failed.lock().unwrap().push(format!("send r{seq}: {e}")),
                    }
                    drop(permit);
                });
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        });
        Self {
            ok,
            failed,
            stop,
            task,
        }
    }

    fn sent(&self) -> usize {
        self.ok.lock().unwrap().len()
    }

    /// The (user, id) of every send that answered OK so far, and the failures.
    fn results(&self) -> (Vec<(String, String)>, Vec<String>) {
        (
            self.ok.lock().unwrap().clone(),
            self.failed.lock().unwrap().clone(),
        )
    }

    /// Stop and wait for the sends in flight; the final results.
    async fn stop(self) -> Result<(Vec<(String, String)>, Vec<String>)> {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(30), &mut { self.task })
            .await
            .map_err(|_| anyhow!("sender did not stop"))??;
        Ok((
            std::mem::take(&mut *self.ok.lock().unwrap()),
            std::mem::take(&mut *self.failed.lock().unwrap()),
        ))
    }
}

/// Every send that answered OK is received, and none failed; how many.
async fn all_delivered(
    fleet: &Fleet,
    (expected, failures): (Vec<(String, String)>, Vec<String>),
    what: &str,
) -> Result<usize> {
    ensure!(failures.is_empty(), "{what}: sends failed: {failures:?}");
    poll(Duration::from_secs(20), what, || async {
        (fleet.missing(&expected) == 0).then_some(())
    })
    .await
    .map_err(|e| {
        anyhow!(
            "{e}: {} of {} missing",
            fleet.missing(&expected),
            expected.len()
        )
    })?;
    Ok(expected.len())
}

/// What one drain of one gateway looked like from the clients' side.
struct DrainReport {
    node: String,
    /// Sessions the node held when it started draining.
    clients: usize,
    /// From the start of the drain (the script command, or the node's first 1012) until
    /// every client was connected again, none on `node`.
    all_back: Duration,
    /// Longest gap from a 1012 of `node` to the client's next welcome.
    max_gap: Duration,
    /// Stored sends that answered OK while the node was draining.
    sends_during: usize,
    /// Length of [`Fleet::ends`] once this drain was over.
    ends_seen: usize,
}

impl std::fmt::Display for DrainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} clients of {} got 1012, all back in {:.2?} after the drain began \
             (slowest 1012 → welcome {:.2?}), {} stored sends answered meanwhile",
            self.clients, self.node, self.all_back, self.max_gap, self.sends_during
        )
    }
}

/// Wait until `node` closed all its `clients` with 1012 (counting only ends after
/// `ends_before`) and every user is connected again elsewhere. `start` is when the drain
/// began, if known; otherwise the node's first 1012 counts as the start.
async fn drained(
    fleet: &Fleet,
    sender: &Sender,
    node: &str,
    clients: usize,
    ends_before: usize,
    start: Option<Instant>,
) -> Result<DrainReport> {
    let sent_before = sender.sent();
    let first_close = || {
        fleet.ends()[ends_before..]
            .iter()
            .find(|e| e.node == node)
            .map(|e| e.at)
    };
    let start = match start {
        Some(s) => s,
        None => {
            eventually(
                Duration::from_secs(30),
                &format!("{node} starts draining"),
                || async { first_close() },
            )
            .await
        }
    };
    let limit = DRAIN + MARGIN;
    let what = format!("{clients} clients of {node} closed with 1012 and back on another gateway");
    let done = poll(limit + Duration::from_secs(20), &what, || async {
        let closed = fleet.ends()[ends_before..]
            .iter()
            .filter(|e| e.node == node && e.code == 1012)
            .count();
        let conn = fleet.connected();
        (closed >= clients && conn.len() == CLIENTS && conn.values().all(|n| n != node))
            .then(Instant::now)
    })
    .await
    .map_err(|e| anyhow!("{e}: {:?} connected per node", fleet.connected_per_node()))?;
    let all_back = done.duration_since(start);
    // Ends up to `done` (the next gateway of a rolling restart may start right after).
    let ends: Vec<SessionEnd> = fleet.ends()[ends_before..]
        .iter()
        .filter(|e| e.at <= done)
        .cloned()
        .collect();
    let other: Vec<_> = ends
        .iter()
        .filter(|e| e.node != node || e.code != 1012)
        .collect();
    ensure!(
        other.is_empty(),
        "only {node}'s clients are closed, and only with 1012: {other:?}"
    );
    let from_node = ends.iter().filter(|e| e.node == node).count();
    ensure!(
        from_node == clients,
        "{node} held {clients} clients but closed {from_node}"
    );
    let back: Vec<Reconnect> = fleet
        .reconnects()
        .into_iter()
        .filter(|r| r.end.node == node && r.end.at >= start)
        .collect();
    ensure!(
        back.len() == clients,
        "{} of {clients} came back",
        back.len()
    );
    ensure!(
        back.iter().all(|r| r.to != node),
        "a client of the draining {node} was placed on it again"
    );
    let max_gap = back.iter().map(|r| r.gap).max().unwrap_or_default();
    ensure!(
        all_back <= limit,
        "clients of {node} back after {all_back:?}: more than drain {DRAIN:?} + {MARGIN:?}"
    );
    ensure!(
        max_gap <= MARGIN,
        "a client of {node} took {max_gap:?} from 1012 to its next welcome"
    );
    Ok(DrainReport {
        node: node.to_string(),
        clients,
        all_back,
        max_gap,
        sends_during: sender.sent() - sent_before,
        ends_seen: ends_before + ends.len(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_and_rolling_restart_through_nginx_lose_nothing() -> Result<()> {
    let t_test = Instant::now();
    let mut cluster = LocalCluster::up(GATEWAYS)?;
    let t_up = t_test.elapsed();
    let metrics = cluster.gateway_metrics()?;
    ensure!(metrics.len() == GATEWAYS, "metrics URLs: {metrics:?}");
    let grpc: SocketAddr = cluster.var("KURIR_DISPATCHER_ADDR")?.parse()?;
    let api = api_client(grpc, Some(cluster.var("KURIR_API_KEY")?)).await?;

    // 1,000 distinct users through nginx.
    let users: Vec<String> = (0..CLIENTS).map(|i| user(&format!("r{i}"))).collect();
    let fleet = Fleet::start_with_secret(
        &users,
        &[cluster.lb_addr()?],
        cluster.var("KURIR_JWT_SECRET")?,
    );
    let t0 = Instant::now();
    poll(
        Duration::from_secs(30),
        "1,000 clients connected (gateway metrics)",
        || async {
            let (sum, _) = gateway_connections(&metrics).await;
            (sum == CLIENTS && fleet.connected().len() == CLIENTS).then_some(())
        },
    )
    .await
    .map_err(|e| anyhow!("{e}: fleet sees {:?}", fleet.connected_per_node()))?;
    let t_connect = t0.elapsed();
    let spread = fleet.connected_per_node();
    ensure!(
        spread.len() == GATEWAYS,
        "least_conn spreads clients over both gateways: {spread:?}"
    );
    ensure!(fleet.ends().is_empty(), "closes before any restart");

    let sender = Sender::start(api, users.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // (a) SIGTERM gateway 1 through the script: drain, exit, start again, ready.
    let on_gw1 = fleet.connected_per_node()["local-gw-1"];
    ensure!(
        (CLIENTS * 2 / 5..=CLIENTS * 3 / 5).contains(&on_gw1),
        "least_conn gives each gateway about half: {on_gw1} on gateway 1"
    );
    let ends_before = fleet.ends().len();
    let t_a = Instant::now();
    let restart = cluster.spawn(&["restart-gateway", "1"])?;
    let a = drained(
        &fleet,
        &sender,
        "local-gw-1",
        on_gw1,
        ends_before,
        Some(t_a),
    )
    .await?;
    let log_a = finish(restart, "restart-gateway 1").await?;
    let t_restart = t_a.elapsed();
    all_delivered(
        &fleet,
        sender.results(),
        "every stored send of (a) received",
    )
    .await?;
    let (sum, each) = gateway_connections(&metrics).await;
    ensure!(
        sum == CLIENTS && each[0] == 0,
        "after (a) all clients are on gateway 2: {each:?}"
    );

    // Clients stay where they are, so gateway 1 is now empty. Move half of them back
    // (least_conn places them on gateway 1) so the rolling restart drains two busy
    // gateways.
    let half: Vec<String> = users[..CLIENTS / 2].to_vec();
    fleet.bounce(&half);
    poll(
        Duration::from_secs(20),
        "half the clients moved to the restarted gateway 1",
        || async {
            let per = fleet.connected_per_node();
            let gw1 = per.get("local-gw-1").copied().unwrap_or(0);
            (fleet.connected().len() == CLIENTS && gw1 >= CLIENTS / 2 - 50).then_some(())
        },
    )
    .await
    .map_err(|e| anyhow!("{e}: {:?}", fleet.connected_per_node()))?;

    // (b) rolling restart: gateway 1, then gateway 2.
    let per = fleet.connected_per_node();
    let on_gw1 = per["local-gw-1"];
    let ends_before = fleet.ends().len();
    let t_b = Instant::now();
    let rolling = cluster.spawn(&["rolling-restart"])?;
    let b1 = drained(
        &fleet,
        &sender,
        "local-gw-1",
        on_gw1,
        ends_before,
        Some(t_b),
    )
    .await?;
    // Gateway 2 drains once gateway 1 is ready again (plus the pause). All clients
    // are on gateway 2 then: `drained` saw every one connected and none on gateway 1.
    let b2 = drained(&fleet, &sender, "local-gw-2", CLIENTS, b1.ends_seen, None).await?;
    let log_b = finish(rolling, "rolling-restart").await?;
    let t_rolling = t_b.elapsed();

    let sent = all_delivered(&fleet, sender.stop().await?, "every stored send received").await?;
    let (sum, each) = gateway_connections(&metrics).await;
    ensure!(
        sum == CLIENTS,
        "connections after the rolling restart: {each:?}"
    );
    eventually(
        Duration::from_secs(20),
        "every inbox empty (all acked)",
        || async { (inbox_entries(&redis_url(), &cluster.namespace).ok()? == 0).then_some(()) },
    )
    .await;
    let dups = fleet.duplicates.load(Ordering::Relaxed);
    ensure!(dups == 0, "{dups} ids arrived twice on one connection");
    let codes = fleet.close_codes();
    let (failures, errors) = (fleet.connect_failures(), fleet.error_frames());
    fleet.stop().await;
    cluster.run(&["down"])?;
    cluster.keep_state = std::env::var_os("KURIR_E2E_KEEP_STATE").is_some();

    eprintln!(
        "up {t_up:.1?}; {CLIENTS} connected in {t_connect:.1?} ({spread:?}); \
         (a) restart-gateway 1 took {t_restart:.1?}: {a}; \
         (b) rolling-restart took {t_rolling:.1?}: {b1}; then {b2}; \
         {sent} stored sends delivered; close codes {codes:?}; \
         {failures} failed connection attempts, {errors} error frames; total {:.1?}\n\
         restart-gateway 1:\n{log_a}rolling-restart:\n{log_b}",
        t_test.elapsed()
    );
    Ok(())
}
