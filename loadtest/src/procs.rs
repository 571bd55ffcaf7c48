//! Server processes as the kernel sees them: CPU time (utime + stime from
//! `/proc/<pid>/stat`) and resident memory (`VmRSS` from `/proc/<pid>/status`), sampled
//! before and after a measured phase. Also the open-file limit of this process.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Serialize;

/// What a watched process is, for per-role sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Gateway,
    Dispatcher,
    /// A Socket.IO server of the peer stack.
    PeerServer,
    /// The peer's `@socket.io/redis-emitter` sender.
    PeerEmitter,
    Other,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Dispatcher => "dispatcher",
            Self::PeerServer => "peer_server",
            Self::PeerEmitter => "peer_emitter",
            Self::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
    pub role: Role,
}

/// `name=PID` from `--pid`; the role is guessed from the name.
pub fn parse_pid_arg(s: &str) -> Result<Watched, String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| "expected name=PID".to_string())?;
    let pid: u32 = pid.parse().map_err(|_| format!("bad pid {pid:?}"))?;
    let role = if name.starts_with("gateway") || name.starts_with("gw") {
        Role::Gateway
    } else if name.starts_with("dispatcher") {
        Role::Dispatcher
    } else {
        Role::Other
    };
    Ok(Watched {
        name: name.into(),
        pid,
        role,
    })
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

/// Read one process's counters; fails when it has exited.
pub fn sample(pid: u32) -> Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} gone"))?;
    let cpu_ticks = parse_cpu_ticks(&stat).context("malformed /proc stat")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} gone"))?;
    let rss_bytes = parse_rss_kib(&status).context("no VmRSS")? * 1024;
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Ok(Sample {
        cpu_seconds: cpu_ticks as f64 / hz,
        rss_bytes,
    })
}

/// utime + stime (fields 14 and 15), counted after the `(comm)` field, which may hold
/// spaces.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is fields[N - 3].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn parse_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Samples of all watched processes at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(pub BTreeMap<String, (Watched, Sample)>);

impl Snapshot {
    pub fn take(procs: &[Watched]) -> Self {
        Self(
            procs
                .iter()
                .filter_map(|w| sample(w.pid).ok().map(|s| (w.name.clone(), (w.clone(), s))))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<Sample> {
        self.0.get(name).map(|(_, s)| *s)
    }
}

/// Per-process change between two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct Delta {
    pub name: String,
    pub pid: u32,
    pub role: Role,
    pub cpu_seconds: f64,
    pub rss_before: u64,
    pub rss_after: u64,
}

pub fn deltas(before: &Snapshot, after: &Snapshot) -> Vec<Delta> {
    after
        .0
        .iter()
        .filter_map(|(name, (w, a))| {
            let b = before.get(name)?;
            Some(Delta {
                name: name.clone(),
                pid: w.pid,
                role: w.role,
                cpu_seconds: (a.cpu_seconds - b.cpu_seconds).max(0.0),
                rss_before: b.rss_bytes,
                rss_after: a.rss_bytes,
            })
        })
        .collect()
}

/// CPU seconds summed over one role.
pub fn role_cpu(deltas: &[Delta], role: Role) -> f64 {
    deltas
        .iter()
        .filter(|d| d.role == role)
        .map(|d| d.cpu_seconds)
        .sum()
}

/// Raise the open-file soft limit to the hard limit; returns the new soft limit.
/// Children (spawned gateways, workers) inherit it.
pub fn raise_nofile() -> Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let cur = getrlimit(Resource::Nofile);
    let Some(hard) = cur.maximum else {
        return Ok(cur.current.unwrap_or(u64::MAX));
    };
    if cur.current != Some(hard) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            },
        )
        .context("setrlimit NOFILE")?;
    }
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_comm() {
        let stat = "1234 (kurir gate) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0 100 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(
            parse_rss_kib("Name:\tx\nVmRSS:\t  2048 kB\nThreads: 3\n"),
            Some(2048)
        );
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(s.cpu_seconds >= 0.0);
    }

    #[test]
    fn pid_args_name_roles() {
        let w = parse_pid_arg("gateway-1=42").unwrap();
        assert_eq!((w.pid, w.role), (42, Role::Gateway));
        assert_eq!(
            parse_pid_arg("dispatcher=7").unwrap().role,
            Role::Dispatcher
        );
        assert!(parse_pid_arg("x").is_err());
    }
}
