//! Who may call: API keys, and what answers without one (health, reflection, the admin
//! endpoints).

use std::time::Duration;

use futures::StreamExt;
use kurir_backends::Backends;
use kurir_proto::v1::{GetPresenceRequest, SendStreamRequest};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

use super::send_req;
use super::support::{self, *};

cases!(
    missing_or_wrong_key_is_unauthenticated,
    health_is_answered_without_a_key,
    reflection_lists_the_dispatcher,
    admin_endpoints_answer,
);

async fn missing_or_wrong_key_is_unauthenticated(backends: Backends) {
    let h = Harness::start(backends).await;
    for key in [None, Some("wrong-key")] {
        let mut api = h.client(key).await;
        let err = api.send(send_req(&["alice"], 0)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{key:?}: {err:?}");
        let err = api
            .get_presence(GetPresenceRequest {
                user_ids: vec!["alice".into()],
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        let err = api
            .send_stream(futures::stream::iter(Vec::<SendStreamRequest>::new()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "SendStream, {key:?}");
    }
    // A valid key gets through auth (the call itself may fail on placeholder backends).
    let mut api = h.client(Some(KEY)).await;
    let status = api.send(send_req(&[], 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

async fn health_is_answered_without_a_key(backends: Backends) {
    let h = Harness::start(backends).await;
    let mut health = HealthClient::new(h.channel().await);
    for service in ["", "kurir.v1.Dispatcher"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health {service:?}: {e:?}"))
            .into_inner();
        assert_eq!(reply.status, ServingStatus::Serving as i32, "{service:?}");
    }
}

async fn reflection_lists_the_dispatcher(backends: Backends) {
    let h = Harness::start(backends).await;
    let mut reflection = ServerReflectionClient::new(h.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let reply = replies.next().await.expect("one reply").expect("ok reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reply {reply:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"kurir.v1.Dispatcher"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
}

async fn admin_endpoints_answer(backends: Backends) {
    let h = Harness::start(backends).await;
    assert_eq!(h.admin_get("/healthz").await.0, 200);
    let (_, body) = eventually(Duration::from_secs(10), "/readyz 200", || async {
        let r = h.admin_get("/readyz").await;
        (r.0 == 200).then_some(r)
    })
    .await;
    let report: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(report["ready"], true);

    let mut api = h.client(Some(KEY)).await;
    let _ = api.send(send_req(&[], 0)).await;
    let (status, metrics) = h.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for series in [
        r#"kurir_dispatcher_requests_total{method="Send",code="OK"}"#,
        r#"kurir_dispatcher_requests_total{method="Disconnect",code="OK"}"#,
        r#"kurir_dispatcher_requests_total{method="Send",code="InvalidArgument"}"#,
        r#"kurir_dispatcher_request_duration_seconds_bucket{method="Send",le="0.005"}"#,
        "kurir_dispatcher_published_total",
        "kurir_dispatcher_stored_total",
        "kurir_backend_errors_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(metrics.contains(series), "missing {series}");
    }
}
