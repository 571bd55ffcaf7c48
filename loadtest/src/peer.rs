//! The peers Kurir is measured against, on loopback ports, their CPU and RSS measured
//! like Kurir's:
//! - Socket.IO (`--peer socketio`): two `server.mjs` processes on
//!   `@socket.io/redis-adapter` and one `emitter.mjs` (`@socket.io/redis-emitter`), from
//!   `loadtest/peers/socketio/`, with a Redis key prefix unique to the run;
//! - Mosquitto (`--peer mosquitto`, the seed study's MQTT broker): one `mosquitto`
//!   process (Debian's package) with a configuration written for the run: a loopback
//!   listener, anonymous clients, nothing persisted, no queue limit.

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

/// Start a Mosquitto broker of its own for the run.
pub async fn spawn_mosquitto(log_dir: &Path) -> Result<Targets> {
    let binary = kurir_testkit::faults::find_program("mosquitto", &["/usr/sbin/mosquitto"])
        .context("mosquitto not found: apt-get install mosquitto")?;
    let key = format!("lt-mosquitto-{:016x}", rand::random::<u64>());
    let log_dir = log_dir.join(&key);
    std::fs::create_dir_all(&log_dir)?;
    let addr: SocketAddr = free_addr();
    let config = log_dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "listener {} {}\nallow_anonymous true\npersistence false\n\
             max_queued_messages 0\nmax_inflight_messages 0\nlog_dest stderr\nlog_type error\n",
            addr.port(),
            addr.ip()
        ),
    )?;
    let mut cmd = Command::new(binary);
    cmd.arg("-c").arg(&config);
    let mut t = Targets {
        namespace: key,
        ..Targets::default()
    };
    t.spawned.push(Spawned::spawn(
        "mosquitto",
        Role::PeerServer,
        cmd,
        &log_dir,
    )?);
    t.spawned[0]
        .process
        .wait_listening(addr, Duration::from_secs(20))
        .await?;
    t.gateways.push(addr);
    t.mqtt.push(addr);
    t.watched = t.spawned.iter().map(Spawned::watched).collect();
    Ok(t)
}
