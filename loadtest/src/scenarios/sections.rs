//! The report sections scenarios share: worker reports merged, then connections,
//! deliveries (delay, loss, duplicates), frames, server CPU per delivery and the
//! client side, each a block of figures in the [`Report`].

use crate::procs::{self, Delta, Role};
use crate::report::{ratio, Hist, Report};
use crate::sender::SendStats;
use crate::worker::{ConnectSummary, WorkerReport};

/// Merged worker reports.
#[derive(Debug, Default)]
pub struct Received {
    pub receipts: u64,
    pub distinct_per_worker: Vec<u64>,
    pub duplicates: u64,
    pub misrouted: u64,
    pub bad_frames: std::collections::BTreeMap<String, u64>,
    pub closes: std::collections::BTreeMap<String, u64>,
    pub delay: Hist,
    pub created_delay: Hist,
    pub worker_rss: u64,
    pub worker_cpu: f64,
}

pub fn merge(reports: &[WorkerReport]) -> Received {
    let mut r = Received::default();
    for w in reports {
        r.receipts += w.receipts;
        r.distinct_per_worker.push(w.distinct);
        r.duplicates += w.duplicates;
        r.misrouted += w.misrouted;
        for (k, v) in &w.bad_frames {
            *r.bad_frames.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &w.closes {
            *r.closes.entry(k.clone()).or_default() += v;
        }
        r.delay.merge(&Hist::load(&w.delay));
        r.created_delay.merge(&Hist::load(&w.created_delay));
        r.worker_rss += w.rss_bytes;
        r.worker_cpu += w.cpu_seconds;
    }
    r
}

pub fn connect_section(r: &mut Report, s: &ConnectSummary) {
    r.section("connect");
    r.num("connected", "clients connected", s.ok as f64, "");
    r.num("connect_failed", "connects failed", s.failed as f64, "");
    if !s.errors.is_empty() {
        r.value(
            "connect_errors",
            "connect errors",
            serde_json::to_value(&s.errors).unwrap_or_default(),
        );
    }
    r.num(
        "connect_seconds",
        "time to connect all",
        s.elapsed_ms as f64 / 1000.0,
        "s",
    );
    r.num(
        "connect_rate",
        "connect rate",
        ratio(s.ok as f64, s.elapsed_ms as f64 / 1000.0),
        "conn/s",
    );
    r.percentiles(
        "handshake",
        "handshake (TCP → welcome)",
        &Hist::load(&s.handshake).percentiles(),
    );
}

/// Sends, loss and duplicates for sends to users by id; returns lost + duplicates +
/// misrouted + send errors (0 = correct).
pub fn delivery_section(r: &mut Report, sent: &SendStats, got: &Received) -> u64 {
    r.section("sends");
    r.num(
        "sends_attempted",
        "sends attempted",
        sent.attempted as f64,
        "",
    );
    r.num("sends_ok", "sends accepted", sent.ok as f64, "");
    let errors: u64 = sent.errors.values().sum();
    r.num("send_errors", "send errors", errors as f64, "");
    if !sent.errors.is_empty() {
        r.value(
            "send_error_codes",
            "send error codes",
            serde_json::to_value(&sent.errors).unwrap_or_default(),
        );
    }
    r.num(
        "send_rate",
        "achieved send rate",
        ratio(sent.attempted as f64, sent.elapsed.as_secs_f64()),
        "/s",
    );
    if sent.offline > 0 {
        r.num(
            "sends_with_offline_recipients",
            "sends with offline recipients",
            sent.offline as f64,
            "",
        );
    }
    r.percentiles(
        "response_time",
        "response time (call → reply)",
        &sent.rpc.percentiles(),
    );
    r.section("deliveries");
    let expected: u64 = sent.expected_per_worker.iter().sum();
    let mut lost = 0;
    let mut extra = 0;
    for (w, &e) in sent.expected_per_worker.iter().enumerate() {
        let d = got.distinct_per_worker.get(w).copied().unwrap_or(0);
        lost += e.saturating_sub(d);
        extra += d.saturating_sub(e);
    }
    r.num("expected", "deliveries expected", expected as f64, "");
    r.num("received", "deliveries received", got.receipts as f64, "");
    r.num("lost", "lost", lost as f64, "");
    r.num("duplicates", "duplicates", got.duplicates as f64, "");
    r.num("misrouted", "misrouted", got.misrouted as f64, "");
    if extra > 0 {
        r.num("unexpected", "received for failed sends", extra as f64, "");
    }
    frames_section(r, got);
    r.percentiles(
        "delay",
        "delay (send call → receipt)",
        &got.delay.percentiles(),
    );
    r.percentiles(
        "delay_from_created_at",
        "delay (created_at → receipt, ms stamp)",
        &got.created_delay.percentiles(),
    );
    lost + got.duplicates + got.misrouted + errors
}

pub fn frames_section(r: &mut Report, got: &Received) {
    if !got.bad_frames.is_empty() {
        r.value(
            "bad_frames",
            "error/bad frames",
            serde_json::to_value(&got.bad_frames).unwrap_or_default(),
        );
    }
    if !got.closes.is_empty() {
        r.value(
            "server_closes",
            "closed by server",
            serde_json::to_value(&got.closes).unwrap_or_default(),
        );
    }
}

/// Per-process CPU and memory over the measured phase, and efficiency figures.
pub fn cpu_section(r: &mut Report, deltas: &[Delta], deliveries: u64, sends: u64) {
    r.section("server processes (measured phase)");
    for d in deltas {
        r.num(
            &format!("cpu_seconds.{}", d.name),
            &format!("{} cpu", d.name),
            d.cpu_seconds,
            "s",
        );
        r.num(
            &format!("rss_mib.{}", d.name),
            &format!("{} rss", d.name),
            d.rss_after as f64 / (1 << 20) as f64,
            "MiB",
        );
        if deliveries > 0 {
            r.num(
                &format!("cpu_ms_per_1000_deliveries.{}", d.name),
                &format!("{} cpu per 1,000 deliveries", d.name),
                d.cpu_seconds * 1e6 / deliveries as f64,
                "ms",
            );
        }
    }
    let (front, back) = if deltas.iter().any(|d| d.role == Role::PeerServer) {
        (Role::PeerServer, Role::PeerEmitter)
    } else {
        (Role::Gateway, Role::Dispatcher)
    };
    let front_cpu = procs::role_cpu(deltas, front);
    let back_cpu = procs::role_cpu(deltas, back);
    if front_cpu > 0.0 && deliveries > 0 {
        r.num(
            "deliveries_per_gateway_cpu_second",
            &format!("deliveries per {} CPU-second", front.label()),
            deliveries as f64 / front_cpu,
            "",
        );
    }
    if front_cpu + back_cpu > 0.0 && deliveries > 0 {
        r.num(
            "deliveries_per_server_cpu_second",
            "deliveries per server CPU-second (all)",
            deliveries as f64 / (front_cpu + back_cpu),
            "",
        );
    }
    if back_cpu > 0.0 && sends > 0 {
        r.num(
            "sends_per_dispatcher_cpu_second",
            &format!("sends per {} CPU-second", back.label()),
            sends as f64 / back_cpu,
            "",
        );
    }
}

pub fn client_section(r: &mut Report, got: &Received) {
    if got.worker_rss > 0 {
        r.section("load clients");
        r.num(
            "worker_cpu_seconds",
            "worker processes cpu (total)",
            got.worker_cpu,
            "s",
        );
        r.num(
            "worker_rss_mib",
            "worker processes rss",
            got.worker_rss as f64 / (1 << 20) as f64,
            "MiB",
        );
    }
}
