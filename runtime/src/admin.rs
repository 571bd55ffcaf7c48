//! The admin endpoints every server serves on its metrics listener: `/metrics`
//! (Prometheus text), `/healthz` (the process answers) and `/readyz` (200 only while the
//! server can do its work, else 503, with a JSON report either way), and the upkeep
//! task that folds histogram samples into buckets between scrapes.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// What `/readyz` reports. Cheap to clone; `report` is called on every probe.
pub trait Readiness: Clone + Send + Sync + 'static {
    type Report: Serialize + Send;

    /// Whether the server is ready, and the body that says why.
    fn report(&self) -> (bool, Self::Report);
}

/// How often histogram samples are folded into buckets when nobody scrapes: without it
/// they pile up in memory between scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// `/healthz` and `/readyz`, to merge into any router (the gateway also serves them on
/// its client listener).
pub fn health_routes<S, R>(readiness: R) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    R: Readiness,
{
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let (ready, report) = readiness.report();
                async move {
                    let status = if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, Json(report)).into_response()
                }
            }),
        )
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn router<R: Readiness>(handle: PrometheusHandle, readiness: R) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = crate::metrics::render(&handle);
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
        .merge(health_routes(readiness))
}

/// Fold histogram samples into buckets every [`UPKEEP_INTERVAL`], scraped or not, until
/// `stop`.
pub async fn upkeep(handle: PrometheusHandle, stop: CancellationToken) {
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            () = stop.cancelled() => break,
        }
    }
}

/// Serve `router` on `listener` until `stop`; a failure is logged, not fatal.
pub async fn serve(listener: tokio::net::TcpListener, router: Router, stop: CancellationToken) {
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::warn!(error = %e, "admin listener failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tower::ServiceExt;

    #[derive(Clone, Default)]
    struct Flag(Arc<AtomicBool>);

    impl Readiness for Flag {
        type Report = serde_json::Value;
        fn report(&self) -> (bool, Self::Report) {
            let ready = self.0.load(Ordering::Relaxed);
            (ready, serde_json::json!({ "ready": ready }))
        }
    }

    async fn get(router: &Router, path: &str) -> (StatusCode, String) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_follows_the_report_and_metrics_include_process_series() {
        let flag = Flag::default();
        let handle = crate::metrics::install(&[]).unwrap();
        let router = router(handle, flag.clone());
        assert_eq!(
            get(&router, "/healthz").await,
            (StatusCode::OK, "ok".into())
        );
        assert_eq!(
            get(&router, "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, r#"{"ready":false}"#.into())
        );
        flag.0.store(true, Ordering::Relaxed);
        assert_eq!(get(&router, "/readyz").await.0, StatusCode::OK);
        let (status, body) = get(&router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("process_resident_memory_bytes"), "{body}");
    }
}
