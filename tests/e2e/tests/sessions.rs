//! Clients that never read, against the real processes: `Disconnect` (gRPC, then NATS to
//! the gateway) and drain (SIGTERM) end their sessions within seconds, the write stall
//! timeout closes them by itself, and what a node holds under 200 of them comes back
//! once they are gone (figures printed with `--nocapture`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use kurir_e2e::*;
use kurir_proto::v1::{DisconnectRequest, GetPresenceRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Settings that let only the mechanism under test end a wedged session.
fn no_stall_no_rate_limit() -> Vec<(&'static str, String)> {
    vec![
        ("KURIR_WRITE_STALL_TIMEOUT_MS", "120000".into()),
        ("KURIR_CLIENT_FRAMES_PER_SECOND", "1000000".into()),
        ("KURIR_CLIENT_FRAMES_BURST", "1000000".into()),
    ]
}

async fn gateway(namespace: &str, extra: Vec<(&'static str, String)>) -> Result<GatewayProc> {
    let node = format!("gw-{}", &namespace[5..13]);
    GatewayProc::start(
        &node,
        &GatewayOpts {
            namespace: namespace.into(),
            nats_url: nats_url(),
            redis_url: redis_url(),
            extra,
        },
    )
    .await
}

/// A client with a tiny receive buffer that upgrades, then sends frames and never reads
/// a byte, until the server drops it (or two minutes pass). Returned once the server
/// has stopped reading too: a write that has not completed for two seconds.
struct NeverReading(tokio::task::JoinHandle<()>);

impl Drop for NeverReading {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn never_reading(addr: SocketAddr, token: &str) -> Result<NeverReading> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut s = socket.connect(addr).await?;
    let req = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if s.read(&mut b).await? == 0 {
            bail!("closed during the handshake");
        }
        head.push(b[0]);
    }
    ensure!(head.starts_with(b"HTTP/1.1 101"), "not upgraded");
    // Pings (answered with pongs, coalesced) and binary frames (each answered with an
    // `error` frame): the server's writes soon fill both socket buffers.
    let mask = [1u8, 2, 3, 4];
    let mut frames = vec![0x89, 0x80 | 100];
    frames.extend_from_slice(&mask);
    frames.extend((0..100).map(|i| b'p' ^ mask[i % 4]));
    for _ in 0..8 {
        frames.extend_from_slice(&[0x82, 0x81, 1, 2, 3, 4, b'b' ^ 1]);
    }
    let batch: Vec<u8> = frames
        .iter()
        .copied()
        .cycle()
        .take(frames.len() * 64)
        .collect();
    let (wedged_tx, wedged) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut wedged_tx = Some(wedged_tx);
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            // Never cut a write short: a torn frame would end the session as a
            // protocol error instead.
            let write = s.write_all(&batch);
            tokio::pin!(write);
            let written = loop {
                tokio::select! {
                    r = &mut write => break r,
                    () = tokio::time::sleep(Duration::from_secs(2)) => {
                        if let Some(tx) = wedged_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
            };
            if written.is_err() {
                return;
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(60), wedged)
        .await
        .map_err(|_| {
            anyhow::anyhow!("the server kept reading frames whose answers were never read")
        })?
        .map_err(|_| anyhow::anyhow!("dropped before the server stopped reading"))?;
    Ok(NeverReading(task))
}

async fn online(api: &Api, user: &str) -> Option<bool> {
    let mut api = api.clone();
    let p = api
        .get_presence(GetPresenceRequest {
            user_ids: vec![user.to_string()],
        })
        .await
        .ok()?;
    Some(p.into_inner().users[0].online)
}

#[tokio::test]
async fn disconnect_ends_a_client_that_never_reads() -> Result<()> {
    let ns = random_namespace();
    let dispatcher = DispatcherProc::start(&ns, &nats_url(), &redis_url()).await?;
    let gw = gateway(&ns, no_stall_no_rate_limit()).await?;
    let api = dispatcher.client().await?;
    let mallory = user("mallory");
    let _wedged = never_reading(gw.addr, &token(&mallory, &[], 300)).await?;
    ensure!(online(&api, &mallory).await == Some(true));
    let asked = Instant::now();
    let r = api
        .clone()
        .disconnect(DisconnectRequest {
            user_id: mallory.clone(),
            reason: "abuse".into(),
        })
        .await?
        .into_inner();
    ensure!(r.connections_closed == 1);
    eventually(Duration::from_secs(5), "mallory offline", || async {
        (online(&api, &mallory).await == Some(false)).then_some(())
    })
    .await;
    eventually(Duration::from_secs(5), "session ended", || async {
        (gw.metric("kurir_gateway_connections").await.ok()? == 0.0).then_some(())
    })
    .await;
    eprintln!(
        "disconnect: offline and session ended {:?} after the RPC",
        asked.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn drain_ends_clients_that_never_read() -> Result<()> {
    let ns = random_namespace();
    let mut extra = no_stall_no_rate_limit();
    extra.push(("KURIR_DRAIN_SECONDS", "2".into()));
    let mut gw = gateway(&ns, extra).await?;
    let mut wedged = Vec::new();
    for i in 0..10 {
        wedged.push(never_reading(gw.addr, &token(&user(&format!("w{i}")), &[], 300)).await?);
    }
    let term = Instant::now();
    gw.proc.signal(Signal::TERM);
    gw.proc.wait_exit(Duration::from_secs(30)).await?;
    let took = term.elapsed();
    // The drain window, then at most a couple of seconds for the last closes.
    ensure!(
        took < Duration::from_secs(2 + 3),
        "exited {took:?} after SIGTERM"
    );
    eprintln!("drain: 10 never-reading clients, exited {took:?} after SIGTERM (drain 2 s)");
    Ok(())
}

#[tokio::test]
async fn the_stall_timeout_frees_what_200_never_reading_clients_hold() -> Result<()> {
    let ns = random_namespace();
    let gw = gateway(
        &ns,
        vec![
            ("KURIR_WRITE_STALL_TIMEOUT_MS", "3000".into()),
            ("KURIR_CLIENT_FRAMES_PER_SECOND", "1000000".into()),
            ("KURIR_CLIENT_FRAMES_BURST", "1000000".into()),
        ],
    )
    .await?;
    let rss = || async { gw.metric("process_resident_memory_bytes").await };
    let before = rss().await?;
    let started = Instant::now();
    let tokens: Vec<String> = (0..200)
        .map(|i| token(&user(&format!("r{i}")), &[], 300))
        .collect();
    let wedged =
        futures::future::try_join_all(tokens.iter().map(|t| never_reading(gw.addr, t))).await?;
    let opened = started.elapsed();
    let held = rss().await?;
    let open = gw.metric("kurir_gateway_connections").await?;
    let all_closed = poll(
        // Filling 200 clients' socket buffers with the node's answers takes a while on
        // a loaded machine: a client's write can block before the node's does.
        Duration::from_secs(120),
        "every wedged session closed",
        || async { (gw.metric("kurir_gateway_connections").await.ok()? == 0.0).then_some(()) },
    )
    .await;
    if all_closed.is_err() {
        for reason in [
            "write_stalled",
            "slow_consumer",
            "idle",
            "protocol",
            "client",
            "rate_limited",
        ] {
            let series = format!("kurir_gateway_connections_closed_total{{reason=\"{reason}\"}}");
            eprintln!("{series} = {:?}", gw.metric(&series).await);
        }
        eprintln!("open: {:?}", gw.metric("kurir_gateway_connections").await);
    }
    all_closed?;
    let closed = gw
        .metric("kurir_gateway_connections_closed_total{reason=\"write_stalled\"}")
        .await?;
    let after = rss().await?;
    eprintln!(
        "200 never-reading clients (wedged in {opened:?}, {open} sessions open): RSS {:.1} MiB \
         before, {:.1} MiB while held, {:.1} MiB after; {closed} closed as write_stalled \
         within {:?}",
        before / 1048576.0,
        held / 1048576.0,
        after / 1048576.0,
        started.elapsed()
    );
    ensure!(closed == 200.0, "{closed} closed as write_stalled");
    drop(wedged);
    Ok(())
}
