//! Backend outages on real servers: calls fail fast with UNAVAILABLE, readiness says
//! why, and the failed operation is counted.

use std::time::{Duration, Instant};

use kurir_proto::v1::{GetPresenceRequest, SendRequest};
use tonic::Code;

use super::send_req;
use super::support::*;

#[tokio::test]
async fn redis_unreachable_is_unavailable_within_seconds() {
    let backends = real_with(&format!("redis://127.0.0.1:{}", closed_port())).await;
    let h = Harness::start(backends).await;
    let mut api = h.client(Some(KEY)).await;
    for ttl in [3600, 0] {
        let started = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(8), api.send(send_req(&["alice"], ttl)))
            .await
            .expect("Send answered within 8 s")
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "ttl {ttl}: {err:?}");
        assert_eq!(err.message(), "backend unavailable");
        assert!(started.elapsed() < Duration::from_secs(8));
    }
    let err = tokio::time::timeout(
        Duration::from_secs(8),
        api.get_presence(GetPresenceRequest {
            user_ids: vec!["alice".into()],
        }),
    )
    .await
    .expect("GetPresence answered within 8 s")
    .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    let (status, body) = h.admin_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("presence"), "{body}");
}

/// The value of one series in a Prometheus text body.
fn series(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A Send that fails because Redis is down is counted against Redis, under the operation
/// that failed. The inbox and idempotency series are touched by nothing else here (the
/// readiness probe only looks up presence), so each must have grown by that call alone.
#[tokio::test]
async fn failed_backend_calls_are_counted() {
    let backends = real_with(&format!("redis://127.0.0.1:{}", closed_port())).await;
    let h = Harness::start(backends).await;
    let mut api = h.client(Some(KEY)).await;
    for (op, req) in [
        ("inbox", send_req(&["alice"], 3600)),
        (
            "idempotency",
            SendRequest {
                idempotency_key: "order-47-shipped".into(),
                ..send_req(&["alice"], 3600)
            },
        ),
    ] {
        let name = format!(r#"kurir_backend_errors_total{{backend="redis",op="{op}"}}"#);
        let before = series(&h.admin_get("/metrics").await.1, &name)
            .unwrap_or_else(|| panic!("{name} not exported from start-up"));
        let err = api.send(req).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{op}: {err:?}");
        let after = series(&h.admin_get("/metrics").await.1, &name).expect("still exported");
        assert!(
            after >= before + 1.0,
            "{name}: {before} before, {after} after"
        );
    }
}
