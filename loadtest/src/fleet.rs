//! The coordinator's handle on its workers: in-process (`--workers 0`) or `kurir-loadtest
//! worker` children on JSON lines. Users are split into contiguous ranges, one per
//! worker; each worker gets its own block of source addresses in 127.0.0.0/8.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use futures::future::try_join_all;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::worker::{
    ChurnSpec, ClientSpec, Command, ConnectSpec, ConnectSummary, Progress, Reply, Worker,
    WorkerReport,
};

/// Source addresses per worker (each has its own ephemeral-port range towards a gateway).
const SOURCE_IPS_PER_WORKER: u8 = 32;

enum Link {
    Local(Box<Worker>),
    Child(Box<ChildLink>),
}

struct ChildLink {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Link {
    async fn call(&mut self, cmd: Command) -> Result<Reply> {
        let reply = match self {
            Self::Local(w) => w.handle(cmd).await,
            Self::Child(c) => {
                let ChildLink { stdin, lines, .. } = &mut **c;
                let mut text = serde_json::to_vec(&cmd)?;
                text.push(b'\n');
                stdin.write_all(&text).await.context("worker stdin")?;
                stdin.flush().await?;
                let line = lines
                    .next_line()
                    .await?
                    .context("worker exited without replying")?;
                serde_json::from_str(&line).context("bad worker reply")?
            }
        };
        if let Reply::Failed { message } = &reply {
            bail!("worker failed: {message}");
        }
        Ok(reply)
    }
}

/// Workers and the user range each holds.
pub struct Fleet {
    links: Vec<Link>,
    /// `(first, count)` of users per worker.
    pub ranges: Vec<(u64, u64)>,
}

/// Source addresses of worker `w`: 127.(1 + w / 8).(w % 8 * 32 ..).1 — never 127.0.0.x,
/// where the servers listen.
pub fn source_ips(w: usize) -> Vec<IpAddr> {
    let b = 1 + (w / 8) as u8;
    let c0 = (w % 8) as u8 * SOURCE_IPS_PER_WORKER;
    (0..SOURCE_IPS_PER_WORKER)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, b, c0 + i, 1)))
        .collect()
}

/// Split `total` users into `n` contiguous ranges.
pub fn split(total: u64, n: usize) -> Vec<(u64, u64)> {
    let n = n.max(1) as u64;
    (0..n)
        .map(|w| {
            let a = total * w / n;
            let b = total * (w + 1) / n;
            (a, b - a)
        })
        .collect()
}

impl Fleet {
    /// `workers == 0`: one worker inside this process. Otherwise spawn that many
    /// children of `exe`, each living at most `max_seconds`.
    pub async fn start(
        workers: usize,
        total_users: u64,
        exe: &Path,
        max_seconds: u64,
    ) -> Result<Self> {
        let mut links = Vec::new();
        if workers == 0 {
            links.push(Link::Local(Box::default()));
        } else {
            for _ in 0..workers {
                let mut child = tokio::process::Command::new(exe)
                    .arg("worker")
                    .arg("--max-seconds")
                    .arg(max_seconds.to_string())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| format!("spawn worker {}", exe.display()))?;
                let stdin = child.stdin.take().context("worker stdin")?;
                let stdout = child.stdout.take().context("worker stdout")?;
                links.push(Link::Child(Box::new(ChildLink {
                    child,
                    stdin,
                    lines: BufReader::new(stdout).lines(),
                })));
            }
        }
        let ranges = split(total_users, links.len());
        Ok(Self { links, ranges })
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Which worker holds user `index`.
    pub fn worker_of(&self, index: u64) -> usize {
        self.ranges
            .iter()
            .position(|&(a, n)| index >= a && index < a + n)
            .unwrap_or(0)
    }

    /// Worker pids (for their own CPU/RSS), empty for in-process.
    pub fn pids(&self) -> Vec<u32> {
        self.links
            .iter()
            .filter_map(|l| match l {
                Link::Child(c) => c.child.id(),
                Link::Local(_) => None,
            })
            .collect()
    }

    async fn all(&mut self, cmds: Vec<Command>) -> Result<Vec<Reply>> {
        try_join_all(self.links.iter_mut().zip(cmds).map(|(l, c)| l.call(c))).await
    }

    pub async fn setup(&mut self, spec: &ClientSpec) -> Result<()> {
        let cmds = (0..self.len())
            .map(|w| {
                let mut s = spec.clone();
                s.source_ips = source_ips(w);
                Command::Setup(s)
            })
            .collect();
        self.all(cmds).await.map(drop)
    }

    /// Connect every worker's range (or the part of it below `limit` users per worker's
    /// share), `rate` connects/s in total (0 = max).
    pub async fn connect(
        &mut self,
        topics: &[String],
        rate: f64,
        concurrency: usize,
    ) -> Result<ConnectSummary> {
        let n = self.len() as f64;
        let cmds = self
            .ranges
            .iter()
            .map(|&(first, count)| {
                Command::Connect(ConnectSpec {
                    first,
                    count,
                    topics: topics.to_vec(),
                    rate: rate / n,
                    concurrency,
                })
            })
            .collect();
        let mut total = ConnectSummary::default();
        let mut hist = crate::report::Hist::default();
        for r in self.all(cmds).await? {
            if let Reply::Connected(s) = r {
                total.ok += s.ok;
                total.failed += s.failed;
                for (k, v) in s.errors {
                    *total.errors.entry(k).or_default() += v;
                }
                total.elapsed_ms = total.elapsed_ms.max(s.elapsed_ms);
                hist.merge(&crate::report::Hist::load(&s.handshake));
            }
        }
        total.handshake = hist.dump();
        Ok(total)
    }

    /// Start `per_worker` churning clients in each worker.
    pub async fn churn(&mut self, per_worker: u64, hold_ms: u64, seed: u64) -> Result<()> {
        let cmds = (0..self.len())
            .map(|w| {
                Command::Churn(ChurnSpec {
                    first: w as u64 * per_worker,
                    churners: per_worker,
                    hold_ms,
                    seed,
                })
            })
            .collect();
        self.all(cmds).await.map(drop)
    }

    pub async fn poll(&mut self) -> Result<Vec<Progress>> {
        let cmds = (0..self.len()).map(|_| Command::Poll).collect();
        Ok(self
            .all(cmds)
            .await?
            .into_iter()
            .filter_map(|r| match r {
                Reply::Progress(p) => Some(p),
                _ => None,
            })
            .collect())
    }

    /// Stop every client and collect the reports (workers exit afterwards).
    pub async fn finish(mut self) -> Result<Vec<WorkerReport>> {
        let cmds = (0..self.len()).map(|_| Command::Finish).collect();
        let reports = self
            .all(cmds)
            .await?
            .into_iter()
            .filter_map(|r| match r {
                Reply::Report(r) => Some(*r),
                _ => None,
            })
            .collect();
        for l in &mut self.links {
            if let Link::Child(c) = l {
                let exited =
                    tokio::time::timeout(std::time::Duration::from_secs(5), c.child.wait()).await;
                if exited.is_err() {
                    let _ = c.child.start_kill();
                }
            }
        }
        Ok(reports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_all_users() {
        let r = split(10, 3);
        assert_eq!(r, vec![(0, 3), (3, 3), (6, 4)]);
        assert_eq!(split(5, 0), vec![(0, 5)]);
    }

    #[test]
    fn workers_get_disjoint_source_addresses() {
        let a = source_ips(0);
        let b = source_ips(1);
        let c = source_ips(8);
        assert_eq!(a[0], "127.1.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(b[0], "127.1.32.1".parse::<IpAddr>().unwrap());
        assert_eq!(c[0], "127.2.0.1".parse::<IpAddr>().unwrap());
        assert!(a.iter().all(|x| !b.contains(x) && !c.contains(x)));
    }
}
