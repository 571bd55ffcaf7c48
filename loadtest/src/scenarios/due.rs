//! `due`: the due-queue under load. Offline users with one Web Push device each, at a
//! fake push service in this process; stored `Send`s with a fallback whose waits make
//! the checks come due at `--rate` per second, starting `--lead` seconds after the first
//! `Send`, once every `Send` is in (so the measured window holds due-queue work only:
//! claim, inbox check, device lookup, encryption, the push, the receipt, the move to the
//! expiry step). Reports the delay from each item's due time to the push service's
//! request, and due items per dispatcher CPU-second.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::{stream, StreamExt};
use kurir_proto::v1::{
    Fallback, Notification, Platform, RegisterDeviceRequest, SendRequest, WebPushSubscription,
};
use kurir_testkit::faults::redis_cli::cleanup_namespace;
use kurir_testkit::push::{browser_keys, vapid_private_key, FakePushService};

use super::{key_values, Common};
use crate::cluster::{self, SpawnOptions};
use crate::procs::{self, Role, Snapshot};
use crate::report::{Hist, Report};
use crate::sender::{connect_apis, Api};

/// The dispatcher's clock works in whole milliseconds: a request this much before the
/// intended due time is on time.
const EARLY_TOLERANCE: Duration = Duration::from_millis(2);
/// Assumed `Send` rate while filling, for the default `--lead`.
const FILL_RATE_GUESS: f64 = 4_000.0;

#[derive(Debug, Clone, Args)]
pub struct DueArgs {
    /// Takes `--spawn-cluster` (required), `--bin-dir`, `--dispatcher-env`, `--pid`,
    /// `--duration`, `--drain`, `--json`; the client options do not apply.
    #[command(flatten)]
    pub common: Common,
    /// Items coming due per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Items in all (default: `--rate` × `--duration`).
    #[arg(long)]
    pub count: Option<u64>,
    /// Offline users, one Web Push device each; the items go to them in turn.
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// Seconds from the first `Send` to the first due item; filling must end before it
    /// (default: enough for 4,000 `Send`s per second, plus 3).
    #[arg(long)]
    pub lead: Option<f64>,
    /// Calls in flight at most while registering and filling.
    #[arg(long, default_value_t = 256)]
    pub inflight: usize,
    /// gRPC connections to the dispatcher.
    #[arg(long, default_value_t = 4)]
    pub channels: usize,
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The fake's endpoint name of user `k`'s device.
fn device(k: u64) -> String {
    format!("d{k}")
}

pub async fn run(args: &DueArgs) -> Result<(Report, bool)> {
    let c = &args.common;
    if !c.spawn_cluster {
        bail!("due needs --spawn-cluster: its dispatcher must push to the fake push service this process runs");
    }
    if args.rate <= 0.0 {
        bail!("--rate must be above 0");
    }
    procs::raise_nofile()?;
    let push = FakePushService::start().await;
    let mut dispatcher_env = key_values(&c.dispatcher_env);
    for (k, v) in [
        ("KURIR_VAPID_PRIVATE_KEY", vapid_private_key()),
        (
            "KURIR_VAPID_SUBJECT",
            "mailto:loadtest@kurir.invalid".into(),
        ),
        ("KURIR_WEBPUSH_ALLOWED_ORIGINS", push.origin()),
    ] {
        dispatcher_env.push((k.to_owned(), v));
    }
    let mut targets = cluster::spawn_kurir(&SpawnOptions {
        gateways: 0,
        bin_dir: c.bin_dir(),
        nats_url: c.nats_url.clone(),
        redis_url: c.redis_url.clone(),
        log_dir: c.log_dir.clone(),
        gateway_env: Vec::new(),
        dispatcher_env,
    })
    .await?;
    targets.watched.extend(c.pids.iter().cloned());
    let result = measure(args, &push, &targets).await;
    targets.shutdown();
    cleanup_namespace(&c.redis_url, &targets.namespace);
    result
}

async fn measure(
    args: &DueArgs,
    push: &FakePushService,
    targets: &cluster::Targets,
) -> Result<(Report, bool)> {
    let c = &args.common;
    let url = targets.dispatcher.clone().context("no dispatcher")?;
    let apis = connect_apis(&url, &targets.api_key, args.channels).await?;
    let users = args.users.max(1);
    let count = args
        .count
        .unwrap_or((args.rate * c.duration).round() as u64)
        .max(1);
    let lead = args
        .lead
        .unwrap_or(count as f64 / FILL_RATE_GUESS + 3.0)
        .max(0.5);
    let window = count as f64 / args.rate;
    let prefix = format!("due{:x}-", rand::random::<u32>());
    let user = |k: u64| format!("{prefix}{k}");

    let mut r = Report::new("due");
    r.param("rate", args.rate);
    r.param("count", count);
    r.param("users", users);
    r.param("lead_s", lead);

    let registered = stream::iter(0..users)
        .map(|k| {
            let mut api = apis[k as usize % apis.len()].clone();
            let (p256dh, auth) = browser_keys();
            let request = RegisterDeviceRequest {
                user_id: user(k),
                platform: Platform::WebPush as i32,
                subscription: Some(WebPushSubscription {
                    endpoint: push.endpoint(&device(k)),
                    p256dh,
                    auth,
                }),
                ..Default::default()
            };
            async move { api.register_device(request).await.is_ok() }
        })
        .buffer_unordered(args.inflight.max(1))
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await as u64;
    if registered != users {
        bail!("{} of {users} devices not registered", users - registered);
    }

    // Item i is due at t0 + i / rate. The dispatcher measures `after_ms` from its own
    // clock when the call arrives, so rounding up makes it due at or just after that.
    let start = Instant::now();
    let t0_unix = unix_ms() + lead * 1000.0;
    let t0 = start + Duration::from_secs_f64(lead);
    let due_offset_ms = |i: u64| i as f64 * 1000.0 / args.rate;
    // The notification must still be stored when its check comes due.
    let ttl_seconds = (lead + window + c.drain + 60.0).ceil() as u32;
    let send = |i: u64, mut api: Api| {
        let to = user(i % users);
        async move {
            let after = (t0_unix + due_offset_ms(i) - unix_ms()).ceil();
            if after < 1.0 {
                return Err("filling ran past the item's due time".to_owned());
            }
            let request = SendRequest {
                user_ids: vec![to],
                notification: Some(Notification {
                    title: "due".into(),
                    body: format!("item {i}"),
                    ..Default::default()
                }),
                ttl_seconds,
                fallback: Some(Fallback {
                    channels: vec![Platform::WebPush as i32],
                    after_ms: after as u32,
                }),
                ..Default::default()
            };
            api.send(request)
                .await
                .map(drop)
                .map_err(|s| s.message().to_owned())
        }
    };
    let mut errors = 0u64;
    let mut first_error = None;
    let mut outcomes = stream::iter(0..count)
        .map(|i| send(i, apis[i as usize % apis.len()].clone()))
        .buffer_unordered(args.inflight.max(1));
    while let Some(outcome) = outcomes.next().await {
        if let Err(e) = outcome {
            errors += 1;
            first_error.get_or_insert(e);
        }
    }
    let filled = start.elapsed().as_secs_f64();
    r.section("filling the queue (Send with a fallback)");
    r.num("fill.sends", "sends", count as f64, "");
    r.num("fill.errors", "errors", errors as f64, "");
    if let Some(e) = &first_error {
        r.text("fill.first_error", "first error", e);
    }
    r.num("fill.seconds", "took", filled, "s");
    r.num(
        "fill.sends_per_s",
        "sends per second",
        count as f64 / filled,
        "",
    );
    let overran = Instant::now() > t0;
    if overran {
        r.text(
            "fill.overran",
            "warning",
            "filling ended after the first item came due: raise --lead",
        );
    }

    // The fake push service stamps arrivals with std's clock: so does this scenario.
    tokio::time::sleep_until(t0.into()).await;
    let before = Snapshot::take(&targets.watched);
    let own_before = procs::sample(std::process::id()).ok();
    let deadline = t0 + Duration::from_secs_f64(window + c.drain);
    while push.total() < count as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = Snapshot::take(&targets.watched);
    let own_after = procs::sample(std::process::id()).ok();
    let ended = Instant::now();

    // Each device's requests, in order, are its items in order (one user's items are
    // `users / rate` seconds apart).
    let mut delay = Hist::default();
    let (mut missing, mut duplicates, mut early) = (0u64, 0u64, 0u64);
    let mut last = t0;
    for k in 0..users {
        let arrivals = push.arrivals(&device(k));
        let items: Vec<u64> = (k..count).step_by(users as usize).collect();
        missing += items.len().saturating_sub(arrivals.len()) as u64;
        duplicates += arrivals.len().saturating_sub(items.len()) as u64;
        for (at, i) in arrivals.iter().zip(&items) {
            let due = t0 + Duration::from_secs_f64(due_offset_ms(*i) / 1000.0);
            match at.checked_duration_since(due) {
                Some(d) => delay.record(d.as_micros() as u64),
                // Whole milliseconds on the dispatcher's side: up to 2 ms is on time.
                None if due.duration_since(*at) <= EARLY_TOLERANCE => delay.record(0),
                None => early += 1,
            }
            last = last.max(*at);
        }
    }
    let pushed = delay.len() + early;
    let span = last.saturating_duration_since(t0).as_secs_f64();
    r.section("due window (Web Push to a fake push service)");
    r.num("due.pushed", "items pushed", pushed as f64, "");
    r.num("due.missing", "missing", missing as f64, "");
    r.num("due.duplicates", "pushed twice", duplicates as f64, "");
    r.num("due.early", "pushed before due", early as f64, "");
    if span > 0.0 {
        r.num(
            "due.items_per_s",
            "items per second (first due to last push)",
            pushed as f64 / span,
            "",
        );
    }
    r.percentiles(
        "due.delay",
        "due time → push service request",
        &delay.percentiles(),
    );
    let measured = ended.saturating_duration_since(t0).as_secs_f64();
    r.num("due.measured_s", "measured for", measured, "s");

    r.section("server processes (due window)");
    let deltas = procs::deltas(&before, &after);
    for d in &deltas {
        r.num(
            &format!("cpu_seconds.{}", d.name),
            &format!("{} cpu", d.name),
            d.cpu_seconds,
            "s",
        );
        if pushed > 0 {
            r.num(
                &format!("cpu_us_per_item.{}", d.name),
                &format!("{} cpu per item", d.name),
                d.cpu_seconds * 1e6 / pushed as f64,
                "µs",
            );
        }
    }
    let dispatcher = procs::role_cpu(&deltas, Role::Dispatcher);
    let all: f64 = deltas.iter().map(|d| d.cpu_seconds).sum();
    if dispatcher > 0.0 {
        r.num(
            "items_per_dispatcher_cpu_second",
            "due items per dispatcher CPU-second",
            pushed as f64 / dispatcher,
            "",
        );
    }
    if pushed > 0 {
        r.num(
            "cpu_us_per_item.all",
            "every watched process, cpu per item",
            all * 1e6 / pushed as f64,
            "µs",
        );
    }
    if let (Some(b), Some(a)) = (own_before, own_after) {
        r.num(
            "cpu_seconds.fake_push_service",
            "fake push service (this process, not counted)",
            a.cpu_seconds - b.cpu_seconds,
            "s",
        );
    }
    let ok = errors == 0 && missing == 0 && duplicates == 0 && early == 0 && !overran;
    Ok((r, ok))
}
