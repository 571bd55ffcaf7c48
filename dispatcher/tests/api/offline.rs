//! Offline reach in process: devices, push fallbacks against a fake Web Push service,
//! scheduled sends and their cancellation, and the receipts they produce.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kurir_backends::{Backends, NotificationId};
use kurir_proto::v1::{
    BroadcastRequest, CancelScheduledRequest, Fallback, ListDevicesRequest, Platform,
    PublishRequest, Receipt, ReceiptStatus, RegisterDeviceRequest, SendRequest,
    UnregisterDeviceRequest, WatchReceiptsRequest, WebPushSubscription,
};
use kurir_push::secret::Secret;
use kurir_testkit::push::{browser_keys, vapid_private_key, Answer, FakePushService};
use tonic::Code;

use super::support::{self, *};

cases!(
    devices_are_registered_listed_and_unregistered,
    device_registrations_are_validated,
    an_offline_user_is_pushed_once_per_device,
    an_ack_in_time_cancels_the_push,
    a_gone_device_is_removed,
    a_429_is_retried_after_its_retry_after,
    scheduled_sends_go_out_at_send_at_and_can_be_cancelled,
    an_unacked_notification_is_reported_expired,
    fallbacks_and_schedules_are_validated,
);

/// A dispatcher pushing to a fake Web Push service, polling its due-queue often.
struct Offline {
    push: FakePushService,
    h: Harness,
    api: Api,
}

impl Offline {
    async fn start(backends: Backends) -> Self {
        let push = FakePushService::start().await;
        let origin = push.origin();
        let h = Harness::start_with(backends, |c| {
            c.push.vapid_private_key = Some(Secret::new(vapid_private_key()));
            c.push.vapid_subject = Some("mailto:ops@kurir.test".into());
            c.push.webpush_allowed_origins = origin;
            c.due_poll_ms = 50;
        })
        .await;
        let api = h.client(Some(KEY)).await;
        Self { push, h, api }
    }

    /// Register a browser of `user` pushed at endpoint `name`; its device id.
    async fn browser(&self, user: &str, name: &str) -> String {
        let (p256dh, auth) = browser_keys();
        self.api
            .clone()
            .register_device(RegisterDeviceRequest {
                user_id: user.into(),
                platform: Platform::WebPush as i32,
                subscription: Some(WebPushSubscription {
                    endpoint: self.push.endpoint(name),
                    p256dh,
                    auth,
                }),
                ..Default::default()
            })
            .await
            .expect("register")
            .into_inner()
            .device_id
    }

    async fn send(&self, users: &[&str], ttl_seconds: u32, fallback: Option<Fallback>) -> String {
        self.api
            .clone()
            .send(SendRequest {
                user_ids: users.iter().map(|u| u.to_string()).collect(),
                notification: note("hello"),
                ttl_seconds,
                fallback,
                ..Default::default()
            })
            .await
            .expect("send")
            .into_inner()
            .id
    }

    async fn receipts(&self) -> tonic::Streaming<Receipt> {
        self.api
            .clone()
            .watch_receipts(WatchReceiptsRequest::default())
            .await
            .expect("watch")
            .into_inner()
    }
}

fn after(ms: u32) -> Option<Fallback> {
    Some(Fallback {
        channels: vec![],
        after_ms: ms,
    })
}

/// The next `n` receipts of notification `id` with one of `statuses`.
async fn collect(
    stream: &mut tonic::Streaming<Receipt>,
    id: &str,
    statuses: &[ReceiptStatus],
    n: usize,
) -> Vec<Receipt> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {out:?} of {n} receipts within 10 s"))
            .expect("stream open")
            .expect("receipt");
        if next.id == id && statuses.iter().any(|s| *s as i32 == next.status) {
            out.push(next);
        }
    }
    out
}

async fn devices_are_registered_listed_and_unregistered(backends: Backends) {
    let o = Offline::start(backends).await;
    let a = o.browser("alice", "a").await;
    let b = o.browser("alice", "b").await;
    assert_ne!(a, b);
    // The same subscription again is the same device.
    assert_eq!(o.browser("alice", "a").await, a);
    let mut api = o.api.clone();
    let list = |user: &str| ListDevicesRequest {
        user_id: user.into(),
    };
    let listed = api.list_devices(list("alice")).await.unwrap().into_inner();
    let ids: Vec<&str> = listed.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, [a.as_str(), b.as_str()], "most recent first");
    assert_eq!(listed.devices[0].platform, Platform::WebPush as i32);
    assert!(listed.devices[0].registered_at > 0);
    let unregister = |id: &str| UnregisterDeviceRequest {
        user_id: "alice".into(),
        device_id: id.into(),
    };
    assert!(
        api.unregister_device(unregister(&a))
            .await
            .unwrap()
            .into_inner()
            .removed
    );
    assert!(
        !api.unregister_device(unregister(&a))
            .await
            .unwrap()
            .into_inner()
            .removed
    );
    let listed = api.list_devices(list("alice")).await.unwrap().into_inner();
    assert_eq!(listed.devices.len(), 1);
    assert!(api
        .list_devices(list("bob"))
        .await
        .unwrap()
        .into_inner()
        .devices
        .is_empty());
}

async fn device_registrations_are_validated(backends: Backends) {
    let o = Offline::start(backends).await;
    let mut api = o.api.clone();
    let (p256dh, auth) = browser_keys();
    let web = |endpoint: &str| RegisterDeviceRequest {
        user_id: "alice".into(),
        platform: Platform::WebPush as i32,
        subscription: Some(WebPushSubscription {
            endpoint: endpoint.into(),
            p256dh: p256dh.clone(),
            auth: auth.clone(),
        }),
        ..Default::default()
    };
    // Not an allowed push service: an internal address, another port, a stranger.
    for endpoint in [
        "http://127.0.0.1:6379/push/x".to_owned(),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://push.example.com/x".to_owned(),
    ] {
        let err = api.register_device(web(&endpoint)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{endpoint}");
        assert!(
            err.message().starts_with("subscription.endpoint: "),
            "{err:?}"
        );
    }
    let err = api
        .register_device(RegisterDeviceRequest {
            user_id: "alice".into(),
            platform: Platform::Fcm as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "token: required");
    let err = api
        .register_device(RegisterDeviceRequest {
            user_id: "alice".into(),
            token: "abc".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("platform: "), "{err:?}");
    // Nothing was stored by the refused calls.
    let listed = api
        .list_devices(ListDevicesRequest {
            user_id: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.devices.is_empty());
}

async fn an_offline_user_is_pushed_once_per_device(backends: Backends) {
    let o = Offline::start(backends).await;
    let a1 = o.browser("alice", "a1").await;
    let a2 = o.browser("alice", "a2").await;
    o.browser("bob", "b1").await;
    // Bob is online: with after_ms = 0 only users without a live connection are pushed.
    connect_user(&o.h.backends, &node("gw-1"), &user("bob")).await;
    let mut receipts = o.receipts().await;
    let id = o.send(&["alice", "bob"], 60, after(0)).await;
    let pushed = collect(&mut receipts, &id, &[ReceiptStatus::Pushed], 2).await;
    let mut devices: Vec<&str> = pushed.iter().map(|r| r.device_id.as_str()).collect();
    devices.sort_unstable();
    let mut expected = [a1.as_str(), a2.as_str()];
    expected.sort_unstable();
    assert_eq!(devices, expected);
    assert!(pushed.iter().all(|r| r.user_id == "alice"));
    // Nothing more arrives: one push per device, none for the online user.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(o.push.arrivals("a1").len(), 1);
    assert_eq!(o.push.arrivals("a2").len(), 1);
    assert_eq!(o.push.arrivals("b1").len(), 0);
    // The notification's TTL reached the push service.
    let ttl: u64 = o.push.headers("a1")[0]["ttl"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((50..=60).contains(&ttl), "TTL {ttl}");
}

async fn an_ack_in_time_cancels_the_push(backends: Backends) {
    let o = Offline::start(backends).await;
    o.browser("alice", "a").await;
    o.browser("bob", "b").await;
    let id = o.send(&["alice", "bob"], 60, after(600)).await;
    // Alice acks on some device before the wait is over; bob does not.
    let nid = NotificationId::parse(&id).unwrap();
    assert!(o.h.backends.inbox.ack(&user("alice"), nid).await.unwrap());
    eventually(Duration::from_secs(5), "bob's push", || async {
        (o.push.arrivals("b").len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(o.push.arrivals("a").is_empty(), "pushed after an ack");
}

async fn a_gone_device_is_removed(backends: Backends) {
    let o = Offline::start(backends).await;
    let gone = o.browser("alice", "gone").await;
    let kept = o.browser("alice", "kept").await;
    o.push.script("gone", [Answer::status(410)]);
    let mut receipts = o.receipts().await;
    let id = o.send(&["alice"], 60, after(0)).await;
    let got = collect(
        &mut receipts,
        &id,
        &[ReceiptStatus::Pushed, ReceiptStatus::PushFailed],
        2,
    )
    .await;
    let failed = got
        .iter()
        .find(|r| r.status == ReceiptStatus::PushFailed as i32)
        .expect("a PUSH_FAILED receipt");
    assert_eq!(failed.device_id, gone);
    assert!(failed.reason.starts_with("gone: "), "{failed:?}");
    let listed = o
        .api
        .clone()
        .list_devices(ListDevicesRequest {
            user_id: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, [kept.as_str()]);
}

async fn a_429_is_retried_after_its_retry_after(backends: Backends) {
    let o = Offline::start(backends).await;
    o.browser("alice", "busy").await;
    o.push.script("busy", [Answer::retry_after(429, 1)]);
    let mut receipts = o.receipts().await;
    let id = o.send(&["alice"], 60, after(0)).await;
    collect(&mut receipts, &id, &[ReceiptStatus::Pushed], 1).await;
    let arrivals = o.push.arrivals("busy");
    assert_eq!(arrivals.len(), 2, "one refusal, one retry");
    let waited = arrivals[1] - arrivals[0];
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
}

async fn scheduled_sends_go_out_at_send_at_and_can_be_cancelled(backends: Backends) {
    let o = Offline::start(backends).await;
    let gw = node("gw-1");
    connect_user(&o.h.backends, &gw, &user("alice")).await;
    let mut spy = Spy::node(&o.h.backends, &gw).await;
    let mut api = o.api.clone();
    let send_at = kurir_runtime::now_ms() + 1_500;
    let scheduled = |title: &str| SendRequest {
        user_ids: vec!["alice".into()],
        notification: note(title),
        ttl_seconds: 60,
        send_at,
        ..Default::default()
    };
    let started = Instant::now();
    let kept = api.send(scheduled("kept")).await.unwrap().into_inner();
    let cancelled = api.send(scheduled("cancelled")).await.unwrap().into_inner();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "answered at once"
    );
    assert_eq!(kept.stored_users, 0);
    let cancel = |id: &str| CancelScheduledRequest { id: id.into() };
    api.cancel_scheduled(cancel(&cancelled.id)).await.unwrap();
    let again = api
        .cancel_scheduled(cancel(&cancelled.id))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    let unknown = NotificationId::generate().to_string();
    assert_eq!(
        api.cancel_scheduled(cancel(&unknown))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // Nothing before send_at; the kept one within a second after it.
    let mut ids = Vec::new();
    while ids.is_empty() {
        for kind in spy.drain_envelopes().await {
            if let kurir_proto::internal::v1::envelope::Kind::Delivery(d) = kind {
                ids.push((d.id, kurir_runtime::now_ms()));
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (id, at) = &ids[0];
    assert_eq!(id, &kept.id, "{ids:?}");
    assert!(*at >= send_at, "delivered {} ms early", send_at - at);
    assert!(*at - send_at < 1_000, "delivered {} ms late", at - send_at);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        spy.drain_envelopes().await.is_empty(),
        "the cancelled one went out"
    );
    // Sent: no longer cancellable.
    assert_eq!(
        api.cancel_scheduled(cancel(&kept.id))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // Publish and Broadcast take send_at too.
    let publish = api
        .publish(PublishRequest {
            topic: "news".into(),
            notification: note("later"),
            send_at: kurir_runtime::now_ms() + 60_000,
        })
        .await
        .unwrap()
        .into_inner();
    api.cancel_scheduled(cancel(&publish.id)).await.unwrap();
    let broadcast = api
        .broadcast(BroadcastRequest {
            notification: note("later"),
            send_at: kurir_runtime::now_ms() + 60_000,
        })
        .await
        .unwrap()
        .into_inner();
    api.cancel_scheduled(cancel(&broadcast.id)).await.unwrap();
}

async fn an_unacked_notification_is_reported_expired(backends: Backends) {
    let o = Offline::start(backends).await;
    let mut receipts = o.receipts().await;
    let id = o.send(&["alice"], 1, after(0)).await;
    let sent = Instant::now();
    let expired = collect(&mut receipts, &id, &[ReceiptStatus::Expired], 1).await;
    assert_eq!(expired[0].user_id, "alice");
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "reported early"
    );
}

async fn fallbacks_and_schedules_are_validated(backends: Backends) {
    let o = Offline::start(backends).await;
    let mut api = o.api.clone();
    let err = api
        .send(SendRequest {
            user_ids: vec!["alice".into()],
            notification: note("t"),
            ttl_seconds: 0,
            fallback: after(0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("fallback: "), "{err:?}");
    let far = kurir_runtime::now_ms() + 31 * 24 * 3600 * 1000;
    let err = api
        .send(SendRequest {
            user_ids: vec!["alice".into()],
            notification: note("t"),
            send_at: far,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("send_at: "), "{err:?}");
    let err = api
        .broadcast(BroadcastRequest {
            notification: note("t"),
            send_at: far,
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("send_at: "), "{err:?}");
    // A past send_at sends now.
    let reply = api
        .send(SendRequest {
            user_ids: vec!["alice".into()],
            notification: note("t"),
            ttl_seconds: 60,
            send_at: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.stored_users, 1);
}

#[tokio::test]
async fn memory_a_full_inbox_reports_dropped() {
    let backends = support::memory();
    let small = Backends {
        inbox: std::sync::Arc::new(kurir_backends::inbox::MemoryInbox::new(2)),
        ..backends
    };
    a_full_inbox_reports_dropped(small).await;
}

#[tokio::test]
async fn real_a_full_inbox_reports_dropped() {
    let mut opts = kurir_backends::ConnectOptions::new(
        kurir_backends::Namespace::random_for_test(),
        &nats_url(),
        &redis_url(),
    );
    opts.inbox_capacity = 2;
    let backends = Backends::connect(&opts).await.expect("NATS and Redis");
    a_full_inbox_reports_dropped(backends).await;
}

/// Past the inbox capacity the oldest unacked entry is pushed out: `DROPPED`, counted.
async fn a_full_inbox_reports_dropped(backends: Backends) {
    let o = Offline::start(backends).await;
    let mut receipts = o.receipts().await;
    let first = o.send(&["alice"], 60, None).await;
    o.send(&["alice"], 60, None).await;
    o.send(&["alice"], 60, None).await;
    let dropped = collect(&mut receipts, &first, &[ReceiptStatus::Dropped], 1).await;
    assert_eq!(dropped[0].user_id, "alice");
    let (_, metrics) = o.h.admin_get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kurir_inbox_dropped_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}
