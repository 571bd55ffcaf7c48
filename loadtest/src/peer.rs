//! The Socket.IO peer (`--peer socketio`): two `server.mjs` processes on
//! `@socket.io/redis-adapter` and one `emitter.mjs` (`@socket.io/redis-emitter`), from
//! `loadtest/peers/socketio/`, on loopback ports and a Redis key prefix unique to the
//! run. Their CPU and RSS are measured like Kurir's.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use kurir_testkit::ports::free_addr;

use crate::cluster::{Spawned, Targets};
use crate::procs::Role;

pub const SERVERS: usize = 2;

/// Start the peer stack. The emitter's stdin is returned for the sender.
pub async fn spawn_socketio(
    dir: &Path,
    redis_url: &str,
    log_dir: &Path,
) -> Result<(Targets, std::process::ChildStdin)> {
    if !dir.join("node_modules").is_dir() {
        bail!(
            "{}/node_modules missing: run `npm ci --prefix {}` first",
            dir.display(),
            dir.display()
        );
    }
    let key = format!("lt-sio-{:016x}", rand::random::<u64>());
    let log_dir = &log_dir.join(&key);
    let mut t = Targets {
        namespace: key.clone(),
        ..Targets::default()
    };
    let node = |script: &str| {
        let mut cmd = Command::new("node");
        cmd.arg(script)
            .current_dir(dir)
            .env("REDIS_URL", redis_url)
            .env("KEY", &key)
            .env("NODE_ENV", "production");
        cmd
    };
    for i in 0..SERVERS {
        let addr: SocketAddr = free_addr();
        let mut cmd = node("server.mjs");
        cmd.env("PORT", addr.port().to_string());
        t.spawned.push(Spawned::spawn(
            &format!("sio-server-{i}"),
            Role::PeerServer,
            cmd,
            log_dir,
        )?);
        t.gateways.push(addr);
    }
    let mut cmd = node("emitter.mjs");
    cmd.stdin(Stdio::piped());
    let mut emitter = Spawned::spawn_piped("sio-emitter", Role::PeerEmitter, cmd, log_dir)?;
    let stdin = emitter.take_stdin().context("emitter stdin")?;
    t.spawned.push(emitter);
    for (s, addr) in t.spawned.iter_mut().zip(t.gateways.clone()) {
        s.process
            .wait_http_ok(addr, "/healthz", Duration::from_secs(20))
            .await?;
    }
    t.watched = t.spawned.iter().map(Spawned::watched).collect();
    Ok((t, stdin))
}
