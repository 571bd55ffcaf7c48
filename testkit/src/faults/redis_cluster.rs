//! A private three-node Redis Cluster on free local ports (`redis-server` and
//! `redis-cli` from `PATH`), for the cluster-mode paths of the Redis seams.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{log_dir, scratch, ServerError};
use crate::poll::poll;
use crate::ports::{free_port, wait_port};
use crate::process::Process;

/// The nodes are killed by PID and their directory removed on drop.
pub struct RedisCluster {
    nodes: Vec<Process>,
    ports: Vec<u16>,
    dir: PathBuf,
}

impl RedisCluster {
    pub async fn start() -> Result<Self, ServerError> {
        let mut cluster = Self {
            nodes: Vec::new(),
            ports: Vec::new(),
            dir: scratch("cluster")?,
        };
        for _ in 0..3 {
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
                ])
                .args(["--save", "", "--appendonly", "no"])
                .current_dir(&node_dir);
            let name = format!("redis-cluster-{port}");
            cluster.nodes.push(Process::launch(&name, cmd, &log_dir())?);
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
            .args(["--cluster-replicas", "0", "--cluster-yes"])
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

    async fn wait_until_ok(&self) -> Result<(), ServerError> {
        for &port in &self.ports {
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
