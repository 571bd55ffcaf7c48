//! A `redis-server` a test owns: a free port, AOF on, its own directory.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::redis_cli::redis_cli;
use super::{log_dir, scratch, ServerError};
use crate::poll::poll;
use crate::ports::free_port;
use crate::process::{Process, Signal};

/// A private Redis that can be killed (keeping what AOF holds), wiped and restarted.
pub struct OwnRedis {
    pub port: u16,
    dir: PathBuf,
    proc: Option<Process>,
}

impl OwnRedis {
    pub async fn start() -> Result<Self, ServerError> {
        let port = free_port();
        let mut r = Self {
            port,
            dir: scratch(&format!("redis-{port}"))?,
            proc: None,
        };
        r.restart().await?;
        Ok(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Start it (again) on the same port and data, and wait for `PONG`.
    pub async fn restart(&mut self) -> Result<(), ServerError> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir);
        let name = format!("redis-{}", self.port);
        self.proc = Some(Process::launch(&name, cmd, &log_dir())?);
        let url = self.url();
        poll(Duration::from_secs(10), "own redis-server", || {
            let url = url.clone();
            async move { (redis_cli(&url, &["PING"]).ok()? == "PONG").then_some(()) }
        })
        .await?;
        Ok(())
    }

    /// SIGKILL and delete its data: the next start is an empty Redis.
    pub fn kill_and_wipe(&mut self) -> Result<(), ServerError> {
        self.kill();
        let io = |source| ServerError::Io {
            what: "wiping the private Redis".into(),
            source,
        };
        std::fs::remove_dir_all(&self.dir).map_err(io)?;
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        Ok(())
    }

    /// SIGKILL: only what AOF already holds survives.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// SIGSTOP: connections stay open but nothing answers.
    pub fn pause(&self) {
        if let Some(p) = &self.proc {
            p.signal(Signal::STOP);
        }
    }

    /// SIGCONT after [`OwnRedis::pause`].
    pub fn resume(&self) {
        if let Some(p) = &self.proc {
            p.signal(Signal::CONT);
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
