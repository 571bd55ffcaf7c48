//! `floor`: what one socket write costs on this machine, with no server in the way — the
//! physical floor under a gateway's CPU per delivery. A writer thread writes `--payload`
//! byte frames round-robin to `--sockets` loopback TCP connections whose other ends a
//! child process reads (a tokio task and a 4 KiB buffer each, like the load clients),
//! and its own CPU time (`CLOCK_THREAD_CPUTIME_ID`) is divided by the writes it made.
//!
//! Three runs: one frame per `write()` as fast as possible; `--batch` frames per
//! `write()` (what coalescing queued frames buys); and one frame per `write()` paced at
//! `--rate` writes per second, where the readers sleep between frames and every write
//! also pays for waking one (only the writes are timed there, not the pacing sleeps). On loopback a write also runs the receiver's TCP input in
//! the writer's syscall, so these figures are higher than a write across a real network.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use tokio::io::AsyncReadExt;

use crate::procs;
use crate::report::{ratio, Report};

#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    /// Loopback connections written to (the reader holds the other ends).
    #[arg(long, default_value_t = 10_000)]
    pub sockets: usize,
    /// Bytes per frame (a 100-byte notification is ~110 bytes on the wire).
    #[arg(long, default_value_t = 110)]
    pub payload: usize,
    /// Frames per `write()` in the coalesced run.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Writes per second in the paced run.
    #[arg(long, default_value_t = 5_000.0)]
    pub rate: f64,
    /// Seconds per run.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Accepted like every scenario's (so scripts can pass it); nothing here is random.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// One run's outcome.
struct Run {
    writes: u64,
    frames: u64,
    cpu_seconds: f64,
    wall_seconds: f64,
}

pub async fn run(args: &FloorArgs) -> Result<(Report, bool)> {
    if args.sockets == 0 || args.payload == 0 || args.batch == 0 || args.duration <= 0.0 {
        bail!("--sockets, --payload, --batch and --duration must be > 0");
    }
    procs::raise_nofile()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let exe = std::env::current_exe()?;
    let mut reader = tokio::process::Command::new(exe)
        .args(["floor-reader", "--addr", &addr.to_string()])
        .args(["--sockets", &args.sockets.to_string()])
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("spawn the reader process")?;
    let reader_pid = reader.id().context("reader pid")?;
    let a = args.clone();
    let runs = tokio::task::spawn_blocking(move || -> Result<Vec<Run>> {
        let mut sockets = Vec::with_capacity(a.sockets);
        listener.set_nonblocking(false)?;
        while sockets.len() < a.sockets {
            let (s, _) = listener.accept()?;
            s.set_nodelay(true)?;
            sockets.push(s);
        }
        let frame = vec![b'x'; a.payload];
        let batch = frame.repeat(a.batch);
        let d = Duration::from_secs_f64(a.duration);
        Ok(vec![
            write_loop(&mut sockets, &frame, 1, d, None)?,
            write_loop(&mut sockets, &batch, a.batch as u64, d, None)?,
            write_loop(&mut sockets, &frame, 1, d, Some(a.rate))?,
        ])
    });
    let before = procs::sample(reader_pid)?;
    let runs = runs.await??;
    let after = procs::sample(reader_pid)?;
    drop(reader.stdin.take());
    let _ = reader.kill().await;

    let mut r = Report::new("floor");
    r.param("sockets", args.sockets as u64);
    r.param("payload_bytes", args.payload as u64);
    r.param("batch", args.batch as u64);
    r.param("rate", args.rate);
    let names = [
        ("one", "1 frame per write, max rate".to_string()),
        (
            "batched",
            format!("{} frames per write, max rate", args.batch),
        ),
        (
            "paced",
            format!("1 frame per write, {} writes/s", args.rate),
        ),
    ];
    for ((key, title), run) in names.iter().zip(&runs) {
        r.section(title);
        r.num(&format!("{key}_writes"), "writes", run.writes as f64, "");
        r.num(
            &format!("{key}_write_rate"),
            "writes per wall second",
            ratio(run.writes as f64, run.wall_seconds),
            "/s",
        );
        r.num(
            &format!("{key}_cpu_us_per_write"),
            "writer CPU per write",
            ratio(run.cpu_seconds * 1e6, run.writes as f64),
            "µs",
        );
        r.num(
            &format!("{key}_frames_per_cpu_second"),
            "frames per writer CPU-second",
            ratio(run.frames as f64, run.cpu_seconds),
            "",
        );
    }
    r.section("reader process");
    r.num(
        "reader_cpu_seconds",
        "reader CPU over all runs",
        after.cpu_seconds - before.cpu_seconds,
        "s",
    );
    Ok((r, true))
}

/// Write `buf` (`frames` frames) to the sockets round-robin for `duration`, paced at
/// `rate` writes per second when given. The writer's own CPU time is measured.
fn write_loop(
    sockets: &mut [TcpStream],
    buf: &[u8],
    frames: u64,
    duration: Duration,
    rate: Option<f64>,
) -> Result<Run> {
    let gap = rate.map(|r| Duration::from_secs_f64(1.0 / r.max(1.0)));
    let start = Instant::now();
    let mut cpu_seconds = 0.0;
    let mut cpu0 = thread_cpu_seconds();
    let mut writes = 0u64;
    let mut next = start;
    'outer: loop {
        for s in sockets.iter_mut() {
            if let Some(gap) = gap {
                // Paced: only the write is timed, not the writer's own sleep and wake.
                next += gap;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                cpu0 = thread_cpu_seconds();
            }
            s.write_all(buf)?;
            writes += 1;
            if gap.is_some() {
                cpu_seconds += thread_cpu_seconds() - cpu0;
            }
            if writes.is_multiple_of(256) && start.elapsed() >= duration {
                break 'outer;
            }
        }
    }
    if gap.is_none() {
        cpu_seconds = thread_cpu_seconds() - cpu0;
    }
    Ok(Run {
        writes,
        frames: writes * frames,
        cpu_seconds,
        wall_seconds: start.elapsed().as_secs_f64(),
    })
}

fn thread_cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// The reader process: connect `sockets` times to `addr` and read everything, until
/// stdin closes (the parent is done or gone).
pub async fn reader(addr: &str, sockets: usize) -> Result<()> {
    procs::raise_nofile()?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..sockets {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        tasks.spawn(async move {
            let mut buf = vec![0u8; 4096];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        });
    }
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    tasks.abort_all();
    Ok(())
}
