//! A private NATS cluster: `n` `nats-server`s on free local ports, each with routes to
//! all the others, for the paths a real multi-node backbone takes (interest spread over
//! routes, a client moving to another node when its own dies).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use super::{find_program, log_dir, ServerError};
use crate::http;
use crate::poll::poll;
use crate::ports::{free_port, wait_port};
use crate::process::Process;

/// One node's ports.
struct Node {
    client: u16,
    route: u16,
    monitor: u16,
    proc: Option<Process>,
}

/// The nodes are killed by PID on drop.
pub struct NatsCluster {
    nodes: Vec<Node>,
    name: String,
}

impl NatsCluster {
    /// Start `n` nodes and wait until every one has routes to all the others.
    pub async fn start(n: usize) -> Result<Self, ServerError> {
        let mut cluster = Self {
            nodes: (0..n)
                .map(|_| Node {
                    client: free_port(),
                    route: free_port(),
                    monitor: free_port(),
                    proc: None,
                })
                .collect(),
            name: format!("kurir-test-{:08x}", rand::random::<u32>()),
        };
        for i in 0..n {
            cluster.launch(i)?;
        }
        for i in 0..n {
            cluster.wait_routed(i).await?;
        }
        Ok(cluster)
    }

    fn launch(&mut self, i: usize) -> Result<(), ServerError> {
        let program = find_program("nats-server", &["/usr/sbin/nats-server"])
            .unwrap_or_else(|| "nats-server".into());
        let routes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.route))
            .collect();
        let node = &self.nodes[i];
        let mut cmd = Command::new(program);
        cmd.args(["-a", "127.0.0.1", "-p", &node.client.to_string()])
            .args(["-m", &node.monitor.to_string()])
            .args(["-n", &format!("{}-{i}", self.name)])
            .args(["--cluster_name", &self.name])
            .args(["--cluster", &format!("nats://127.0.0.1:{}", node.route)])
            .args(["--routes", &routes.join(",")]);
        let name = format!("nats-cluster-{}", node.client);
        self.nodes[i].proc = Some(Process::launch(&name, cmd, &log_dir())?);
        Ok(())
    }

    /// Wait until node `i` accepts clients and has a route to every other node.
    async fn wait_routed(&self, i: usize) -> Result<(), ServerError> {
        let node = &self.nodes[i];
        wait_port(
            ([127, 0, 0, 1], node.client).into(),
            Duration::from_secs(10),
        )
        .await?;
        let monitor: SocketAddr = ([127, 0, 0, 1], node.monitor).into();
        let want = format!("\"num_routes\": {}", self.nodes.len() - 1);
        poll(Duration::from_secs(20), "nats routes up", || {
            let want = want.clone();
            async move {
                let reply = http::get(monitor, "/routez", Duration::from_secs(2))
                    .await
                    .ok()?;
                reply.body.contains(&want).then_some(())
            }
        })
        .await?;
        Ok(())
    }

    /// Client URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client)
    }

    /// Monitoring address of node `i` (`/connz`, `/routez`, …).
    pub fn monitor(&self, i: usize) -> SocketAddr {
        ([127, 0, 0, 1], self.nodes[i].monitor).into()
    }

    /// Client URLs of every node, comma-separated (what a deployment configures).
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL node `i`: its clients' connections drop, its routes go.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            p.kill();
        }
    }

    /// Start node `i` again (same ports) and wait until it is routed to the others.
    pub async fn restart(&mut self, i: usize) -> Result<(), ServerError> {
        self.launch(i)?;
        self.wait_routed(i).await
    }
}
