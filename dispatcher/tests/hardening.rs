//! The gRPC API as a public service: idempotency keys scoped per API key and bound to
//! their request, the reflection switch, and the server's connection limits (message
//! size, concurrent streams, HTTP/2 keepalive, connection age). In process, like
//! `api.rs`; each case runs over the in-memory seams and over real NATS and Redis.

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use kurir_backends::Backends;
use kurir_dispatcher::config::Secret;
use kurir_dispatcher::limits::{MAX_SEND_REQUEST_BYTES, MAX_USERS};
use kurir_proto::v1::{SendRequest, WatchReceiptsRequest};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

cases!(
    the_same_idempotency_key_under_two_api_keys_is_two_sends,
    a_key_reused_for_a_different_request_is_refused,
    unauthenticated_callers_share_one_scope,
    reflection_switched_off_is_unimplemented,
    messages_over_the_limit_are_out_of_range,
    streams_beyond_the_limit_wait_for_a_free_one,
    silent_connections_are_pinged_and_closed,
    old_connections_are_sent_away,
    without_keepalive_or_age_a_silent_connection_stays,
);

fn keyed(users: &[&str], title: &str, key: &str) -> SendRequest {
    SendRequest {
        user_ids: users.iter().map(|u| u.to_string()).collect(),
        notification: note(title),
        ttl_seconds: 3600,
        idempotency_key: key.into(),
        ..Default::default()
    }
}

/// The ids in alice's inbox.
async fn stored(h: &Harness) -> Vec<String> {
    h.backends
        .inbox
        .pending(&user("alice"), None, 10)
        .await
        .expect("pending")
        .into_iter()
        .map(|e| e.id.to_string())
        .collect()
}

/// Two backends (two API keys) pick the same idempotency key for different sends: each
/// is sent, each retry gets its own first id, and neither ever sees the other's.
async fn the_same_idempotency_key_under_two_api_keys_is_two_sends(backends: Backends) {
    let h = Harness::start_with(backends, |c| c.api_keys.push(Secret::from(OTHER_KEY))).await;
    let mut first = h.client(Some(KEY)).await;
    let mut second = h.client(Some(OTHER_KEY)).await;
    let a = first
        .send(keyed(&["alice"], "from the first backend", "order-1"))
        .await
        .expect("first backend")
        .into_inner();
    let b = second
        .send(keyed(&["alice"], "from the second backend", "order-1"))
        .await
        .expect("second backend")
        .into_inner();
    assert_ne!(
        a.id, b.id,
        "the second backend was answered with the first's id"
    );
    assert_eq!((a.stored_users, b.stored_users), (1, 1));
    let mut both = stored(&h).await;
    both.sort();
    let mut expected = vec![a.id.clone(), b.id.clone()];
    expected.sort();
    assert_eq!(both, expected);
    // Retries stay within their own scope.
    let again_a = first
        .send(keyed(&["alice"], "from the first backend", "order-1"))
        .await
        .expect("first retry")
        .into_inner();
    let again_b = second
        .send(keyed(&["alice"], "from the second backend", "order-1"))
        .await
        .expect("second retry")
        .into_inner();
    assert_eq!((again_a.id, again_b.id), (a.id, b.id));
    assert_eq!(stored(&h).await.len(), 2);
}

/// One API key, one idempotency key, a different request: FAILED_PRECONDITION naming
/// the field, nothing delivered, and the first id not revealed; the same request
/// retried still gets the first id.
async fn a_key_reused_for_a_different_request_is_refused(backends: Backends) {
    let h = Harness::start(backends).await;
    let gw = node("gw-1");
    connect_user(&h.backends, &gw, &user("alice")).await;
    let mut spy = Spy::node(&h.backends, &gw).await;
    let mut api = h.client(Some(KEY)).await;
    let req = keyed(&["alice"], "shipped", "order-2");
    let first = api.send(req.clone()).await.expect("first").into_inner();
    assert_eq!(spy.drain().await.len(), 1);
    let different = [
        keyed(&["alice"], "cancelled", "order-2"),
        keyed(&["alice", "bob"], "shipped", "order-2"),
        SendRequest {
            ttl_seconds: 0,
            ..req.clone()
        },
    ];
    for other in different {
        let status = api.send(other.clone()).await.expect_err("refused");
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{other:?}: {status:?}"
        );
        assert!(
            status
                .message()
                .starts_with("idempotency_key: already used for a different request"),
            "{status:?}"
        );
        assert!(!status.message().contains(&first.id), "{status:?}");
    }
    assert!(spy.drain().await.is_empty(), "a refused send was published");
    assert_eq!(stored(&h).await, std::slice::from_ref(&first.id));
    let again = api.send(req).await.expect("retry").into_inner();
    assert_eq!(again.id, first.id);
    assert!(
        spy.drain().await.is_empty(),
        "the retry was published again"
    );
    let (_, metrics) = h.admin_get("/metrics").await;
    let refused = r#"kurir_dispatcher_requests_total{method="Send",code="FailedPrecondition"}"#;
    assert!(metrics.contains(refused), "missing {refused}");
}

/// `--insecure-no-auth`: every caller is in the one shared scope.
async fn unauthenticated_callers_share_one_scope(backends: Backends) {
    let h = Harness::start_with(backends, |c| {
        c.api_keys.clear();
        c.insecure_no_auth = true;
    })
    .await;
    let mut one = h.client(None).await;
    let mut other = h.client(None).await;
    let req = keyed(&["alice"], "shipped", "order-3");
    let first = one.send(req.clone()).await.expect("first").into_inner();
    let again = other.send(req).await.expect("retry").into_inner();
    assert_eq!(again.id, first.id);
    let status = other
        .send(keyed(&["alice"], "cancelled", "order-3"))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
}

/// KURIR_GRPC_REFLECTION=false: both reflection services are unregistered
/// (UNIMPLEMENTED); health is still answered.
async fn reflection_switched_off_is_unimplemented(backends: Backends) {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest as AlphaReflectionRequest;

    let h = Harness::start_with(backends, |c| c.grpc_reflection = false).await;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let status = match ServerReflectionClient::new(h.channel().await)
        .server_reflection_info(futures::stream::iter([request]))
        .await
    {
        Ok(reply) => reply
            .into_inner()
            .next()
            .await
            .expect("a reply or an error")
            .expect_err("reflection answered"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let request = AlphaReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::ListServices(String::new())),
    };
    let status = match AlphaClient::new(h.channel().await)
        .server_reflection_info(futures::stream::iter([request]))
        .await
    {
        Ok(reply) => reply
            .into_inner()
            .next()
            .await
            .expect("a reply or an error")
            .expect_err("v1alpha reflection answered"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let reply = HealthClient::new(h.channel().await)
        .check(HealthCheckRequest {
            service: "kurir.v1.Dispatcher".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(reply.status, ServingStatus::Serving as i32);
}

/// At the smallest limit allowed, the largest valid Send (10000 user ids of 128 bytes)
/// still fits, and a larger message is refused with OUT_OF_RANGE before it is decoded.
async fn messages_over_the_limit_are_out_of_range(backends: Backends) {
    let h = Harness::start_with(backends, |c| {
        c.grpc_max_message_bytes = MAX_SEND_REQUEST_BYTES;
    })
    .await;
    let mut api = h.client(Some(KEY)).await;
    let largest = SendRequest {
        user_ids: (0..MAX_USERS).map(|i| format!("{i:0>128}")).collect(),
        ttl_seconds: 0,
        ..keyed(&[], "to many users", "")
    };
    let reply = api.send(largest).await.expect("largest valid Send");
    assert_eq!(reply.into_inner().online_users, 0);
    let oversized = SendRequest {
        user_ids: (0..2 * MAX_USERS).map(|i| format!("{i:0>128}")).collect(),
        ttl_seconds: 0,
        ..keyed(&[], "to too many users", "")
    };
    let status = api.send(oversized).await.expect_err("oversized");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // The connection stays usable.
    api.send(keyed(&["alice"], "small", ""))
        .await
        .expect("a small Send after the refused one");
}

/// With two streams allowed per connection, a third WatchReceipts on the same
/// connection waits until one of the first two ends.
async fn streams_beyond_the_limit_wait_for_a_free_one(backends: Backends) {
    let h = Harness::start_with(backends, |c| c.grpc_max_concurrent_streams = 2).await;
    let api = h.client(Some(KEY)).await;
    let watch = || {
        let mut api = api.clone();
        async move {
            api.watch_receipts(WatchReceiptsRequest::default())
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let first = watch().await.expect("first stream");
    let _second = watch().await.expect("second stream");
    let third = tokio::spawn(watch());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third stream opened beyond the limit"
    );
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("the third stream opened once the first ended")
        .expect("task");
    third.expect("third stream");
}

/// A raw HTTP/2 connection to the gRPC port: the client preface, then nothing. Returns
/// the frame types the server sent before it closed the connection, or `None` if it
/// was still open after `limit`.
async fn silent_connection(h: &Harness, limit: Duration) -> Option<Vec<(u8, u8)>> {
    let mut socket = tokio::net::TcpStream::connect(h.grpc)
        .await
        .expect("connect");
    socket
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut header = [0u8; 9];
        match tokio::time::timeout_at(deadline, socket.read_exact(&mut header)).await {
            Err(_) => return None,
            Ok(Err(_)) => return Some(frames),
            Ok(Ok(_)) => {}
        }
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let (kind, flags) = (header[3], header[4]);
        if kind == 0x4 && flags & 0x1 == 0 {
            // Acknowledge the server's SETTINGS like a real client; only pings go unanswered.
            socket
                .write_all(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
                .await
                .ok();
        }
        frames.push((kind, flags));
        let mut payload = vec![0u8; len];
        match tokio::time::timeout_at(deadline, socket.read_exact(&mut payload)).await {
            Err(_) => return None,
            Ok(Err(_)) => return Some(frames),
            Ok(Ok(_)) => {}
        }
    }
}

const PING: u8 = 0x6;

/// A peer that stops answering is pinged after KURIR_GRPC_KEEPALIVE_MS of silence and
/// dropped KURIR_GRPC_KEEPALIVE_TIMEOUT_MS later.
async fn silent_connections_are_pinged_and_closed(backends: Backends) {
    let h = Harness::start_with(backends, |c| {
        c.grpc_keepalive_ms = 200;
        c.grpc_keepalive_timeout_ms = 200;
    })
    .await;
    let started = Instant::now();
    let frames = silent_connection(&h, Duration::from_secs(10))
        .await
        .expect("the server closed a connection that never answered its pings");
    assert!(
        frames
            .iter()
            .any(|&(kind, flags)| kind == PING && flags & 0x1 == 0),
        "closed without a ping first: {frames:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// After KURIR_GRPC_MAX_CONNECTION_AGE_MS a connection is shut down gracefully: an
/// idle one (as here) is closed at once, one with calls open after the grace.
async fn old_connections_are_sent_away(backends: Backends) {
    let h = Harness::start_with(backends, |c| {
        c.grpc_keepalive_ms = 0;
        c.grpc_max_connection_age_ms = 300;
        c.grpc_max_connection_age_grace_ms = 300;
    })
    .await;
    let started = Instant::now();
    silent_connection(&h, Duration::from_secs(10))
        .await
        .expect("the server closed a connection past its age");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed before its age"
    );
}

/// The control for the two cases above: without keepalive or a connection age, a
/// silent connection stays open.
async fn without_keepalive_or_age_a_silent_connection_stays(backends: Backends) {
    let h = Harness::start_with(backends, |c| {
        c.grpc_keepalive_ms = 0;
        c.grpc_max_connection_age_ms = 0;
    })
    .await;
    let closed = silent_connection(&h, Duration::from_millis(1500)).await;
    assert!(closed.is_none(), "closed anyway: {closed:?}");
}
