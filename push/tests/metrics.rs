//! The push metrics as the servers expose them.

mod common;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::{policy, serve, webpush_client, webpush_device};
use kurir_push::telemetry::{DURATION_BUCKETS, DURATION_SECONDS, SENT_TOTAL};
use kurir_push::{Outcome, PushMessage, Pusher};
use kurir_runtime::metrics::{install, Buckets};

#[tokio::test]
async fn sends_are_counted_by_provider_and_outcome_and_timed() {
    let handle = install(&[Buckets {
        metric: DURATION_SECONDS,
        bounds: DURATION_BUCKETS,
    }])
    .expect("recorder");
    let router = Router::new()
        .route("/push/ok", post(|| async { StatusCode::CREATED }))
        .route("/push/gone", post(|| async { StatusCode::GONE }));
    let origin = format!("http://{}", serve(router).await);
    let pusher = Pusher::new(policy(1, 5)).with_webpush(webpush_client(&origin));
    let message = PushMessage::new("n", "t", "b");
    assert_eq!(
        pusher
            .send(&webpush_device(format!("{origin}/push/ok")), &message)
            .await,
        Outcome::Sent { id: None }
    );
    let gone = pusher
        .send(&webpush_device(format!("{origin}/push/gone")), &message)
        .await;
    assert!(matches!(gone, Outcome::Gone { .. }));

    let text = handle.render();
    let series = |name: &str, labels: &[&str]| {
        text.lines()
            .find(|line| line.starts_with(name) && labels.iter().all(|l| line.contains(l)))
            .map(str::to_owned)
    };
    let sent = series(SENT_TOTAL, &["provider=\"webpush\"", "outcome=\"sent\""]).expect(&text);
    assert!(sent.ends_with(" 1"), "{sent}");
    let gone = series(SENT_TOTAL, &["provider=\"webpush\"", "outcome=\"gone\""]).expect(&text);
    assert!(gone.ends_with(" 1"), "{gone}");
    let count = series(
        &format!("{DURATION_SECONDS}_count"),
        &["provider=\"webpush\""],
    )
    .expect(&text);
    assert!(count.ends_with(" 2"), "{count}");
    assert!(series(
        &format!("{DURATION_SECONDS}_bucket"),
        &["provider=\"webpush\"", "le=\"0.25\""]
    )
    .is_some());
    assert!(!text.contains(&origin), "no endpoint in the metrics");
}
