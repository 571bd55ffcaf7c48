//! A private Redis Cluster on free local ports (`redis-server` and `redis-cli` from
//! `PATH`): three masters, with or without a replica each, for the cluster-mode paths of
//! the Redis seams and for failovers.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{log_dir, scratch, ServerError};
use crate::poll::poll;
use crate::ports::{free_port, wait_port};
use crate::process::Process;

/// The nodes are killed by PID and their directory removed on drop.
pub struct RedisCluster {
    nodes: Vec<Option<Process>>,
    ports: Vec<u16>,
    dir: PathBuf,
}

/// The cluster's layout: master ports, and `(replica port, its master's port)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    pub masters: Vec<u16>,
    pub replicas: Vec<(u16, u16)>,
}

/// How long a master may be unreachable before its replica takes over (the default,
/// 15 s, is far longer than a test).
const NODE_TIMEOUT_MS: &str = "1000";

impl RedisCluster {
    /// Three masters, no replicas.
    pub async fn start() -> Result<Self, ServerError> {
        Self::start_with_replicas(0).await
    }

    /// Three masters with `replicas` replicas each.
    pub async fn start_with_replicas(replicas: usize) -> Result<Self, ServerError> {
        let mut cluster = Self {
            nodes: Vec::new(),
            ports: Vec::new(),
            dir: scratch("cluster")?,
        };
        for _ in 0..3 * (1 + replicas) {
            let port = free_port();
            let node_dir = cluster.dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).map_err(|source| ServerError::Io {
                what: format!("creating {}", node_dir.display()),
                source,
            })?;
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    NODE_TIMEOUT_MS,
                    // A replica may take over however long ago it last heard from its
                    // master (a fresh test cluster has seen few writes).
                    "--cluster-replica-validity-factor",
                    "0",
                ])
                .args(["--save", "", "--appendonly", "no"])
                .current_dir(&node_dir);
            let name = format!("redis-cluster-{port}");
            cluster
                .nodes
                .push(Some(Process::launch(&name, cmd, &log_dir())?));
            cluster.ports.push(port);
        }
        for &port in &cluster.ports {
            wait_port(([127, 0, 0, 1], port).into(), Duration::from_secs(10)).await?;
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ServerError::Io {
                what: "redis-cli --cluster create".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(super::redis_cli::RedisCliError::Failed {
                args: "--cluster create".into(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
            .into());
        }
        cluster.wait_until_ok().await?;
        Ok(cluster)
    }

    /// `redis-cluster://` URL naming every node.
    pub fn url(&self) -> String {
        let others: Vec<String> = self.ports[1..]
            .iter()
            .map(|p| format!("node=127.0.0.1:{p}"))
            .collect();
        format!(
            "redis-cluster://127.0.0.1:{}?{}",
            self.ports[0],
            others.join("&")
        )
    }

    /// Who is master and who replicates whom, as the cluster sees it now (`CLUSTER
    /// NODES` of a live node); failed nodes are left out.
    pub fn roles(&self) -> Result<Roles, ServerError> {
        let port = self.live_ports().next().ok_or_else(|| ServerError::Io {
            what: "every node is down".into(),
            source: std::io::Error::other("no live node"),
        })?;
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "cluster", "nodes"])
            .output()
            .map_err(|source| ServerError::Io {
                what: "redis-cli cluster nodes".into(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // <id> <ip:port@cport> <flags> <master id or -> …
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
        let port_of = |row: &[&str]| -> Option<u16> {
            row.get(1)?
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        };
        let mut masters = Vec::new();
        let mut replicas = Vec::new();
        for row in &rows {
            let (Some(p), Some(flags)) = (port_of(row), row.get(2)) else {
                continue;
            };
            if flags.contains("fail") {
                continue;
            }
            if flags.contains("master") {
                masters.push(p);
            } else if flags.contains("slave") {
                let master = row.get(3).and_then(|id| {
                    rows.iter()
                        .find(|r| r.first() == Some(id))
                        .and_then(|r| port_of(r))
                });
                if let Some(m) = master {
                    replicas.push((p, m));
                }
            }
        }
        Ok(Roles { masters, replicas })
    }

    /// `CLUSTER FAILOVER` on replica `port`: it takes over its master's slots once it
    /// has caught up with it (a planned switch, nothing lost).
    pub fn failover(&self, port: u16) -> Result<(), ServerError> {
        super::redis_cli::redis_cli(
            &format!("redis://127.0.0.1:{port}"),
            &["cluster", "failover"],
        )?;
        Ok(())
    }

    /// SIGKILL the node on `port`: its replica takes over after the node timeout, with
    /// whatever it had replicated.
    pub fn kill(&mut self, port: u16) {
        if let Some(i) = self.ports.iter().position(|&p| p == port) {
            if let Some(mut p) = self.nodes[i].take() {
                p.kill();
            }
        }
    }

    fn live_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports
            .iter()
            .zip(&self.nodes)
            .filter(|(_, n)| n.is_some())
            .map(|(p, _)| *p)
    }

    /// Wait until every live node says `cluster_state:ok`.
    pub async fn wait_until_ok(&self) -> Result<(), ServerError> {
        for port in self.live_ports() {
            poll(Duration::from_secs(20), "cluster_state:ok", || async move {
                let out = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .ok()?;
                String::from_utf8_lossy(&out.stdout)
                    .contains("cluster_state:ok")
                    .then_some(())
            })
            .await?;
        }
        Ok(())
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
