//! Processes a test or a benchmark starts: the real binaries with exactly the
//! environment given, stderr kept in a log file (named in every failure, never
//! deleted), readiness waited for while watching that the process is still alive, and
//! a stop by PID when the handle drops (SIGKILL, or SIGTERM first for a drain).

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use rustix::process::Signal;
use tokio::time::Instant;

use crate::binaries::bin;
use crate::http;

/// How many lines of a log a failure quotes.
const TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("spawning {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("creating the log {}: {source}", path.display())]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{name} exited ({status}); log {}:\n{tail}", log.display())]
    Exited {
        name: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{name} not ready ({what}) within {within:?}; log {}:\n{tail}", log.display())]
    NotReady {
        name: String,
        what: String,
        within: Duration,
        log: PathBuf,
        tail: String,
    },
    #[error("{name} still running {within:?} after the signal")]
    StillRunning { name: String, within: Duration },
}

/// What dropping the handle does to a process still running.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Kill,
    /// SIGTERM, then SIGKILL if it has not exited after the grace period.
    Terminate(Duration),
}

/// A running child process, stopped by PID when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    stop: Stop,
}

impl Process {
    /// Workspace binary `binary` (see [`bin`]) with only `PATH`, `RUST_LOG` (from
    /// `KURIR_E2E_LOG`, default `info`) and `env`; its log in
    /// `$TMPDIR/kurir-e2e-logs/`.
    pub fn spawn<K, V>(name: &str, binary: &str, env: &[(K, V)]) -> Result<Self, ProcessError>
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let level = std::env::var("KURIR_E2E_LOG").unwrap_or_else(|_| "info".into());
        let mut cmd = clean_command(bin(binary), &level);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        static SPAWNED: AtomicUsize = AtomicUsize::new(0);
        let n = SPAWNED.fetch_add(1, Ordering::Relaxed);
        let file = format!("{name}-{}-{n}", std::process::id());
        Self::launch(&file, cmd, &std::env::temp_dir().join("kurir-e2e-logs"))
            .map(|p| p.named(name))
    }

    /// Start `cmd` (stdin closed, stdout discarded, stderr to `log_dir/<name>.log`).
    pub fn launch(name: &str, mut cmd: Command, log_dir: &Path) -> Result<Self, ProcessError> {
        cmd.stdin(Stdio::null());
        Self::launch_keeping_stdin(name, cmd, log_dir)
    }

    /// Like [`Process::launch`], keeping whatever stdin `cmd` was given (a pipe).
    pub fn launch_keeping_stdin(
        name: &str,
        mut cmd: Command,
        log_dir: &Path,
    ) -> Result<Self, ProcessError> {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::create_dir_all(log_dir)
            .and_then(|()| std::fs::File::create(&log))
            .map_err(|source| ProcessError::Log {
                path: log.clone(),
                source,
            })?;
        cmd.stdout(Stdio::null()).stderr(file);
        let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            name: name.to_owned(),
            source,
        })?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
            stop: Stop::Kill,
        })
    }

    /// On drop, SIGTERM and wait up to `grace` before SIGKILL (a gateway drains).
    pub fn terminate_on_drop(mut self, grace: Duration) -> Self {
        self.stop = Stop::Terminate(grace);
        self
    }

    fn named(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last lines of the log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// Send `sig` (e.g. [`Signal::TERM`] to drain, [`Signal::STOP`] to pause).
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, wait up to `grace` (blocking), then SIGKILL.
    pub fn terminate(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        self.signal(Signal::TERM);
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        self.kill();
    }

    /// The exit status once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// An error naming the log if the process has exited.
    pub fn check_alive(&mut self) -> Result<(), ProcessError> {
        match self.exited() {
            None => Ok(()),
            Some(status) => Err(ProcessError::Exited {
                name: self.name.clone(),
                status: status.to_string(),
                log: self.log.clone(),
                tail: self.log_tail(),
            }),
        }
    }

    /// Wait for the exit (after a signal), bounded.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus, ProcessError> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(ProcessError::StillRunning {
                    name: self.name.clone(),
                    within,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Poll `ready` until it holds; fails at once if the process exits, or after
    /// `within`, quoting the log either way.
    pub async fn wait_ready<F, Fut>(
        &mut self,
        within: Duration,
        what: &str,
        mut ready: F,
    ) -> Result<(), ProcessError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        loop {
            if ready().await {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(ProcessError::NotReady {
                    name: self.name.clone(),
                    what: what.to_owned(),
                    within,
                    log: self.log.clone(),
                    tail: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until something accepts TCP connections on `addr`.
    pub async fn wait_listening(
        &mut self,
        addr: SocketAddr,
        within: Duration,
    ) -> Result<(), ProcessError> {
        self.wait_ready(within, &format!("listening on {addr}"), || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await
    }

    /// Wait until `GET path` on `addr` answers 200 (`/readyz`, `/healthz`).
    pub async fn wait_http_ok(
        &mut self,
        addr: SocketAddr,
        path: &str,
        within: Duration,
    ) -> Result<(), ProcessError> {
        self.wait_ready(within, &format!("200 from {addr}{path}"), || async move {
            matches!(http::status(addr, path).await, Ok(200))
        })
        .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        match self.stop {
            Stop::Kill => self.kill(),
            Stop::Terminate(grace) => self.terminate(grace),
        }
    }
}

/// `program` with an empty environment but `PATH` and `RUST_LOG=level`: a process under
/// test sees only the settings the test gives it.
pub fn clean_command(program: impl AsRef<OsStr>, level: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", level);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_exit_fails_readiness_quoting_the_log() {
        let dir = std::env::temp_dir().join(format!("kurir-testkit-{}", std::process::id()));
        let mut cmd = clean_command("sh", "info");
        cmd.args(["-c", "echo broken config >&2; exit 3"]);
        let mut p = Process::launch("failing", cmd, &dir).unwrap();
        let e = p
            .wait_ready(Duration::from_secs(10), "never", || async { false })
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("failing exited"), "{text}");
        assert!(text.contains("broken config"), "{text}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn drop_stops_a_running_process() {
        let dir = std::env::temp_dir().join(format!("kurir-testkit-drop-{}", std::process::id()));
        let mut cmd = clean_command("sleep", "info");
        cmd.arg("30");
        let p = Process::launch("sleeper", cmd, &dir)
            .unwrap()
            .terminate_on_drop(Duration::from_secs(5));
        let pid = p.pid();
        drop(p);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
