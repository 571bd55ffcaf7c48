//! A small `kurir-loadtest` run in the test suite: a real cluster (1 dispatcher, 2
//! gateways, the debug binaries built by `cargo nextest run --workspace`) in a random
//! namespace on the Redis and NATS of `KURIR_REDIS_URL`/`KURIR_NATS_URL`; a few hundred
//! clients and a few thousand sends must arrive exactly once. Correctness, not speed.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kurir_loadtest::{run, Cli};
use serde_json::Value;

/// Directory of the workspace binaries: the parent of this test's `deps/`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    for b in ["kurir-gateway", "kurir-dispatcher"] {
        assert!(
            dir.join(b).exists(),
            "{} not built; run the suite with `cargo nextest run --workspace` (it builds the binaries)",
            dir.join(b).display()
        );
    }
    dir
}

async fn scenario(args: &[&str]) -> (Value, bool) {
    let dir = bin_dir();
    let mut argv = vec!["kurir-loadtest"];
    argv.extend_from_slice(args);
    let bin = dir.display().to_string();
    argv.extend_from_slice(&[
        "--spawn-cluster",
        "--gateways",
        "2",
        "--bin-dir",
        &bin,
        "--workers",
        "0",
        "--json",
        "--log-dir",
        "/tmp/kurir-loadtest-smoke",
    ]);
    let cli = Cli::parse_from(argv);
    let (text, ok) = tokio::time::timeout(Duration::from_secs(60), run(cli.command))
        .await
        .expect("scenario bounded by 60 s")
        .expect("scenario ran");
    (serde_json::from_str(&text).expect("JSON report"), ok)
}

fn metric(report: &Value, key: &str) -> u64 {
    report["metrics"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no metric {key} in {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_sends_arrive_exactly_once() {
    let (r, ok) = scenario(&[
        "targeted",
        "--clients",
        "300",
        "--rate",
        "1000",
        "--count",
        "3000",
        "--duration",
        "20",
    ])
    .await;
    assert_eq!(metric(&r, "connected"), 300, "{r:#}");
    assert_eq!(metric(&r, "sends_ok"), 3000, "{r:#}");
    assert_eq!(metric(&r, "expected"), 3000, "{r:#}");
    assert_eq!(metric(&r, "received"), 3000, "{r:#}");
    assert_eq!(metric(&r, "lost"), 0, "{r:#}");
    assert_eq!(metric(&r, "duplicates"), 0, "{r:#}");
    assert_eq!(metric(&r, "misrouted"), 0, "{r:#}");
    assert!(ok, "{r:#}");
}

/// The same over SSE streams and MQTT devices (stored sends: MQTT acks with PUBACK).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_sends_arrive_exactly_once_over_sse_and_mqtt() {
    for peer in ["kurir-sse", "kurir-mqtt"] {
        let (r, ok) = scenario(&[
            "targeted",
            "--peer",
            peer,
            "--clients",
            "100",
            "--rate",
            "500",
            "--count",
            "1000",
            "--ttl",
            "60",
            "--duration",
            "20",
        ])
        .await;
        assert_eq!(metric(&r, "connected"), 100, "{peer}: {r:#}");
        assert_eq!(metric(&r, "received"), 1000, "{peer}: {r:#}");
        assert_eq!(metric(&r, "lost"), 0, "{peer}: {r:#}");
        assert_eq!(metric(&r, "duplicates"), 0, "{peer}: {r:#}");
        assert!(ok, "{peer}: {r:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_fanout_reaches_every_subscriber_once() {
    let (r, ok) = scenario(&[
        "fanout",
        "--clients",
        "200",
        "--mode",
        "topic",
        "--publishes",
        "5",
        "--rate",
        "10",
        "--duration",
        "10",
    ])
    .await;
    assert_eq!(metric(&r, "publishes_ok"), 5, "{r:#}");
    assert_eq!(metric(&r, "received"), 1000, "{r:#}");
    assert_eq!(metric(&r, "lost"), 0, "{r:#}");
    assert_eq!(metric(&r, "duplicates"), 0, "{r:#}");
    assert!(ok, "{r:#}");
}
