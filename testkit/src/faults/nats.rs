//! A `nats-server` a test owns, on a free port.

use std::process::Command;
use std::time::Duration;

use super::{find_program, log_dir, ServerError};
use crate::ports::{free_port, wait_port};
use crate::process::{Process, Signal};

/// A private NATS server: stop, pause or restart it at will (same port each time).
pub struct OwnNats {
    pub port: u16,
    proc: Option<Process>,
}

impl OwnNats {
    pub async fn start() -> Result<Self, ServerError> {
        let mut n = Self {
            port: free_port(),
            proc: None,
        };
        n.restart().await?;
        Ok(n)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Start it (again) and wait until it accepts connections.
    pub async fn restart(&mut self) -> Result<(), ServerError> {
        let program = find_program("nats-server", &["/usr/sbin/nats-server"])
            .unwrap_or_else(|| "nats-server".into());
        let mut cmd = Command::new(program);
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        let name = format!("nats-{}", self.port);
        self.proc = Some(Process::launch(&name, cmd, &log_dir())?);
        wait_port(([127, 0, 0, 1], self.port).into(), Duration::from_secs(10)).await?;
        Ok(())
    }

    /// SIGKILL: clients see their connections drop.
    pub fn stop(&mut self) {
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

    /// SIGCONT after [`OwnNats::pause`].
    pub fn resume(&self) {
        if let Some(p) = &self.proc {
            p.signal(Signal::CONT);
        }
    }
}
