//! WatchReceipts: filters, slow watchers, and streams ended by a shutdown.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use kurir_backends::{Backends, NotificationId};
use kurir_proto::internal::v1::ReceiptBatch;
use kurir_proto::v1::{Receipt, ReceiptStatus, WatchReceiptsRequest};
use prost::Message;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::support::{self, *};

cases!(
    receipts_are_filtered,
    a_receipt_watcher_that_falls_behind_is_ended,
    shutdown_ends_receipt_streams_and_returns,
);

/// A gateway's batch of one receipt.
fn receipt(user: &str, id: NotificationId, status: ReceiptStatus) -> Bytes {
    Bytes::from(
        ReceiptBatch {
            node: "gw-1".into(),
            receipts: vec![Receipt {
                id: id.to_string(),
                user_id: user.into(),
                status: status as i32,
                node: String::new(),
                at: 1,
                ..Default::default()
            }],
        }
        .encode_to_vec(),
    )
}

async fn receipts_are_filtered(backends: Backends) {
    let h = Harness::start(backends).await;
    let mut api = h.client(Some(KEY)).await;
    let mut stream = api
        .watch_receipts(WatchReceiptsRequest {
            user_ids: vec!["alice".into()],
            notification_ids: vec![],
        })
        .await
        .expect("watch")
        .into_inner();
    // The subscription exists once the call returned: what is published now is seen.
    let subject = h.backends.namespace.receipts_subject();
    let (n1, n2) = (NotificationId::generate(), NotificationId::generate());
    for payload in [
        receipt("bob", n1, ReceiptStatus::Delivered),
        Bytes::from_static(b"\xff not a receipt"),
        receipt("alice", n1, ReceiptStatus::Delivered),
        receipt("alice", n2, ReceiptStatus::Acked),
    ] {
        h.backends
            .bus
            .publish(subject.clone(), payload)
            .await
            .expect("publish");
    }
    let mut got = Vec::new();
    while got.len() < 2 {
        let r = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("receipt within 10 s")
            .expect("stream open")
            .expect("receipt");
        assert_eq!(r.node, "gw-1", "the batch's node is each receipt's");
        got.push((r.user_id, r.id, r.status));
    }
    assert_eq!(
        got,
        [
            (
                "alice".into(),
                n1.to_string(),
                ReceiptStatus::Delivered as i32
            ),
            ("alice".into(), n2.to_string(), ReceiptStatus::Acked as i32),
        ]
    );

    let err = api
        .watch_receipts(WatchReceiptsRequest {
            user_ids: vec![],
            notification_ids: vec!["not-a-uuid".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "notification_ids[0]: must be a UUID");
}

async fn a_receipt_watcher_that_falls_behind_is_ended(backends: Backends) {
    let h = Harness::start_with(backends, |c| c.watch_buffer = 1).await;
    let mut api = h.client(Some(KEY)).await;
    let mut stream = api
        .watch_receipts(WatchReceiptsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    // Far more than the HTTP/2 windows hold, published while nobody reads.
    let subject = h.backends.namespace.receipts_subject();
    let payload = receipt(
        "alice",
        NotificationId::generate(),
        ReceiptStatus::Delivered,
    );
    for _ in 0..40_000 {
        h.backends
            .bus
            .publish(subject.clone(), payload.clone())
            .await
            .expect("publish");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut received = 0;
    let end = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, stream.next()).await {
            Ok(Some(Ok(_))) => received += 1,
            Ok(Some(Err(status))) => break status,
            Ok(None) => panic!("stream ended without an error after {received}"),
            Err(_) => panic!("stream neither lagged nor ended after {received} receipts"),
        }
    };
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
    assert!(received < 40_000);
}

async fn shutdown_ends_receipt_streams_and_returns(backends: Backends) {
    let h = Harness::start(backends).await;
    let mut health = HealthClient::new(h.channel().await);
    let mut api = h.client(Some(KEY)).await;
    let mut stream = api
        .watch_receipts(WatchReceiptsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let stopped = tokio::time::timeout(Duration::from_secs(10), h.stop())
        .await
        .expect("serve returned within 10 s");
    stopped.expect("clean stop");
    match stream.next().await {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    // The health service stopped with the server.
    assert!(health.check(HealthCheckRequest::default()).await.is_err());
}
