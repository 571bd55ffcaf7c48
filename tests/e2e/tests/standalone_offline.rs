//! Offline reach in the development node (`kurir`): the device registry and the
//! due-queue in memory, Redis and NATS pointed at a closed port to prove they are not
//! used. A fallback pushes to a fake Web Push service; a scheduled send goes out on time.

use std::time::Duration;

use anyhow::Result;
use kurir_e2e::*;
use kurir_proto::v1::{CancelScheduledRequest, SendRequest};
use kurir_testkit::push::{vapid_private_key, FakePushService};

#[tokio::test]
async fn the_development_node_pushes_and_schedules_in_memory() -> Result<()> {
    let push = FakePushService::start().await;
    let (ws, grpc, metrics, closed) = (free_port(), free_port(), free_port(), free_port());
    let env = [
        ("KURIR_REDIS_URL", format!("redis://127.0.0.1:{closed}")),
        ("KURIR_NATS_URL", format!("nats://127.0.0.1:{closed}")),
        ("KURIR_LISTEN", format!("127.0.0.1:{ws}")),
        ("KURIR_GRPC_LISTEN", format!("127.0.0.1:{grpc}")),
        ("KURIR_METRICS_LISTEN", format!("127.0.0.1:{metrics}")),
        ("KURIR_API_KEYS", API_KEY.to_string()),
        ("KURIR_JWT_SECRET", JWT_SECRET.to_string()),
        ("KURIR_VAPID_PRIVATE_KEY", vapid_private_key()),
        ("KURIR_VAPID_SUBJECT", "mailto:ops@kurir.test".to_string()),
        ("KURIR_WEBPUSH_ALLOWED_ORIGINS", push.origin()),
    ];
    let mut proc = Proc::spawn("standalone", "kurir", &env)?;
    let grpc: std::net::SocketAddr = format!("127.0.0.1:{grpc}").parse()?;
    proc.wait_listening(grpc, Duration::from_secs(20)).await?;
    let mut api = api_client(grpc, Some(API_KEY)).await?;
    let alice = user("alice");
    register_browser(&mut api, &push, &alice, "phone").await?;
    send_with_fallback(&mut api, &[&alice], "approved", 0).await?;
    eventually(Duration::from_secs(10), "the push", || async {
        (push.arrivals("phone").len() == 1).then_some(())
    })
    .await;

    // Scheduled: not before send_at, within a second after; a cancelled one never.
    let bob = user("bob");
    let mut c = Client::connect(&format!(
        "ws://127.0.0.1:{ws}/ws?token={}",
        token(&bob, &[], 60)
    ))
    .await?;
    let send_at = now_ms() + 1_500;
    let scheduled = |title: &str| SendRequest {
        user_ids: vec![bob.clone()],
        notification: Some(note(title)),
        ttl_seconds: 600,
        send_at,
        ..Default::default()
    };
    let kept = api.send(scheduled("kept")).await?.into_inner().id;
    let dropped = api.send(scheduled("dropped")).await?.into_inner().id;
    api.cancel_scheduled(CancelScheduledRequest { id: dropped })
        .await?;
    let n = c.next_notification(Duration::from_secs(10)).await?;
    let at = now_ms();
    assert_eq!(n["id"], kept.as_str());
    assert!(at >= send_at && at - send_at < 1_000, "{} ms", at - send_at);
    c.expect_silence(Duration::from_millis(700)).await?;
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
