//! Offline reach end to end: real dispatcher and gateway processes on real Redis and
//! NATS, pushing to a fake Web Push service. Acks cancel pushes, each device of an
//! offline user is pushed exactly once however many dispatchers race for the due items,
//! a SIGKILLed dispatcher's pending items are pushed by the other (and the item it was
//! pushing when killed, once its lease ends), gone devices are
//! removed, `Retry-After` is honoured, phones are reached through FCM and APNs, and
//! scheduled sends go out on time across a
//! dispatcher restart unless cancelled.

use std::time::{Duration, Instant};

use anyhow::Result;
use kurir_e2e::*;
use kurir_proto::v1::{
    CancelScheduledRequest, ListDevicesRequest, Platform, RegisterDeviceRequest, SendRequest,
};
use kurir_testkit::mobile_push::FakeMobilePush;
use kurir_testkit::push::Answer;
use tonic::Code;

const T: Duration = Duration::from_secs(10);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Wait until the fake saw `n` requests at each of `endpoints`, then a little longer
/// to see that no more come.
async fn exactly(c: &OfflineCluster, endpoints: &[&str], n: usize) {
    eventually(T, "every push", || async {
        endpoints
            .iter()
            .all(|e| c.push.arrivals(e).len() >= n)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    for e in endpoints {
        assert_eq!(c.push.arrivals(e).len(), n, "pushes at {e}");
    }
}

/// A browser registers its own subscription over its socket (the SDK's `enablePush`),
/// with the key the gateway serves; an offline user is then pushed at it, and it can be
/// dropped again over HTTP (the SSE transport's path). Subscriptions to anywhere but
/// an allowed push service are refused.
#[tokio::test]
async fn a_browser_registers_its_subscription_over_its_own_connection() -> Result<()> {
    let c = OfflineCluster::start(1).await?;
    let alice = user("alice");
    let http = reqwest::Client::new();
    let key: serde_json::Value = http
        .get(format!("http://{}/v1/push/key", c.gateway.addr))
        .send()
        .await?
        .json()
        .await?;
    let key = key["vapid_public_key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(key.len(), 87, "base64url of a 65-byte point: {key}");

    let mut ws = Client::connect(&c.gateway.ws_url(&token(&alice, &[], 60))).await?;
    let (p256dh, auth) = kurir_testkit::push::browser_keys();
    let subscription = |endpoint: String| {
        serde_json::json!({"endpoint": endpoint, "expirationTime": null,
            "keys": {"p256dh": p256dh, "auth": auth}})
    };
    ws.send_json(serde_json::json!({"type": "push_subscribe",
        "subscription": subscription(c.push.endpoint("tab"))}))
        .await?;
    let ok = ws.next_frame(T).await?;
    assert_eq!(ok["type"], "push_subscribed", "{ok}");
    let device = ok["device_id"].as_str().unwrap_or_default().to_string();
    for bad in [
        "https://evil.example/push/x",
        "http://169.254.169.254/latest",
    ] {
        ws.send_json(serde_json::json!({"type": "push_subscribe",
            "subscription": subscription(bad.into())}))
            .await?;
        let e = ws.next_frame(T).await?;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some("bad_request")),
            "{bad}: {e}"
        );
    }
    drop(ws);

    let mut api = c.dispatchers[0].client().await?;
    let listed = api
        .list_devices(ListDevicesRequest {
            user_id: alice.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(listed.devices.len(), 1);
    assert_eq!(
        listed.devices[0].id, device,
        "the API sees the browser's device"
    );
    eventually(T, "alice offline", || {
        let mut api = api.clone();
        let alice = alice.clone();
        async move {
            let p = api
                .get_presence(kurir_proto::v1::GetPresenceRequest {
                    user_ids: vec![alice],
                })
                .await
                .ok()?
                .into_inner();
            (!p.users[0].online).then_some(())
        }
    })
    .await;
    send_with_fallback(&mut api, &[&alice], "while the tab is closed", 0).await?;
    exactly(&c, &["tab"], 1).await;

    let gone = http
        .post(format!("http://{}/v1/push/unsubscribe", c.gateway.addr))
        .bearer_auth(token(&alice, &[], 60))
        .json(&serde_json::json!({"endpoint": c.push.endpoint("tab")}))
        .send()
        .await?;
    assert_eq!(gone.status(), 200);
    let listed = api
        .list_devices(ListDevicesRequest {
            user_id: alice.clone(),
        })
        .await?
        .into_inner();
    assert!(listed.devices.is_empty());
    cleanup_namespace(&redis_url(), &c.namespace);
    Ok(())
}

#[tokio::test]
async fn an_ack_in_time_means_no_push() -> Result<()> {
    let c = OfflineCluster::start(2).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut api = c.dispatchers[0].client().await?;
    c.browser(&mut api, &alice, "alice").await?;
    c.browser(&mut api, &bob, "bob").await?;
    let mut ws = Client::connect(&c.gateway.ws_url(&token(&alice, &[], 60))).await?;
    let id = send_with_fallback(&mut api, &[&alice, &bob], "approved", 1_500).await?;
    let n = ws.next_notification(T).await?;
    assert_eq!(n["id"], id.as_str());
    ws.ack(&id).await?;
    // Bob never acks: he is pushed; alice acked: she is not.
    exactly(&c, &["bob"], 1).await;
    assert!(c.push.arrivals("alice").is_empty(), "pushed after an ack");
    cleanup_namespace(&redis_url(), &c.namespace);
    Ok(())
}

#[tokio::test]
async fn two_dispatchers_push_each_device_of_an_offline_user_exactly_once() -> Result<()> {
    let c = OfflineCluster::start(2).await?;
    let alice = user("alice");
    let mut apis = [
        c.dispatchers[0].client().await?,
        c.dispatchers[1].client().await?,
    ];
    for name in ["phone", "laptop", "tablet"] {
        c.browser(&mut apis[0], &alice, name).await?;
    }
    const SENDS: usize = 20;
    for i in 0..SENDS {
        send_with_fallback(&mut apis[i % 2], &[&alice], &format!("n{i}"), 0).await?;
    }
    exactly(&c, &["phone", "laptop", "tablet"], SENDS).await;
    cleanup_namespace(&redis_url(), &c.namespace);
    Ok(())
}

#[tokio::test]
async fn a_sigkilled_dispatchers_pending_items_are_pushed_once_by_the_other() -> Result<()> {
    let mut c = OfflineCluster::start(2).await?;
    let alice = user("alice");
    let mut api = c.dispatchers[0].client().await?;
    c.browser(&mut api, &alice, "a1").await?;
    c.browser(&mut api, &alice, "a2").await?;
    const SENDS: usize = 10;
    for i in 0..SENDS {
        send_with_fallback(&mut api, &[&alice], &format!("n{i}"), 2_000).await?;
    }
    c.dispatchers[0].proc.kill();
    exactly(&c, &["a1", "a2"], SENDS).await;
    // The survivor did all of it.
    let done = c.dispatchers[1]
        .metric("kurir_dispatcher_due_items_total{kind=\"fallback\",outcome=\"done\"}")
        .await?;
    assert_eq!(done as usize, SENDS);
    cleanup_namespace(&redis_url(), &c.namespace);
    Ok(())
}

#[tokio::test]
async fn an_item_whose_dispatcher_died_mid_push_is_pushed_by_another_after_its_lease() -> Result<()>
{
    let mut c = OfflineCluster::start(1).await?;
    let alice = user("alice");
    let mut api = c.dispatchers[0].client().await?;
    c.browser(&mut api, &alice, "phone").await?;
    // The push service takes the first request and answers nothing: the dispatcher holds
    // the item's claim and is inside the push when it is killed.
    c.push.script("phone", [Answer::stall()]);
    send_with_fallback(&mut api, &[&alice], "hello", 0).await?;
    eventually(T, "the first push", || async {
        (c.push.arrivals("phone").len() == 1).then_some(())
    })
    .await;
    let killed_at = Instant::now();
    c.dispatchers[0].proc.kill();
    let d = c.start_dispatcher().await?;
    eventually(T, "the push again, from the other dispatcher", || async {
        (c.push.arrivals("phone").len() == 2).then_some(())
    })
    .await;
    let again = c.push.arrivals("phone")[1];
    // Not before the dead dispatcher's lease ran out.
    assert!(
        again.duration_since(killed_at) >= Duration::from_millis(DUE_LEASE_MS - 300),
        "pushed again {:?} after the kill",
        again.duration_since(killed_at)
    );
    // Answered this time: the item moved on to its expiry, and nothing more comes.
    tokio::time::sleep(Duration::from_millis(2 * DUE_LEASE_MS)).await;
    assert_eq!(c.push.arrivals("phone").len(), 2);
    let done = d
        .metric("kurir_dispatcher_due_items_total{kind=\"fallback\",outcome=\"done\"}")
        .await?;
    assert_eq!(done, 1.0);
    cleanup_namespace(&redis_url(), &c.namespace);
    Ok(())
}

#[tokio::test]
async fn phones_are_pushed_through_fcm_and_apns_with_the_providers_credentials() -> Result<()> {
    let mut c = OfflineCluster::start(0).await?;
    let mobile = FakeMobilePush::start().await;
    let d = c
        .start_dispatcher_with(mobile.dispatcher_env("com.example.kurir"))
        .await?;
    let mut api = d.client().await?;
    let alice = user("alice");
    let phone = |platform: Platform, token: &str, app_id: &str| RegisterDeviceRequest {
        user_id: alice.clone(),
        platform: platform as i32,
        token: token.to_owned(),
        app_id: app_id.to_owned(),
        ..Default::default()
    };
    api.register_device(phone(Platform::Fcm, "fcm-token-android-1", ""))
        .await?;
    api.register_device(phone(Platform::Apns, "a1b2c3d4e5f60718", ""))
        .await?;
    // Another app of the same Apple team: its bundle id is its topic.
    api.register_device(phone(
        Platform::Apns,
        "0f1e2d3c4b5a6978",
        "com.example.other",
    ))
    .await?;
    let id = send_with_fallback(&mut api, &[&alice], "approved", 0).await?;
    eventually(T, "three pushes", || async {
        (mobile.pushes().len() == 3).then_some(())
    })
    .await;
    assert!(
        mobile.grants().iter().all(|ok| *ok),
        "{:?}",
        mobile.grants()
    );
    let pushes = mobile.pushes();
    for p in &pushes {
        assert!(
            p.authorized,
            "{} push to {} not authorized",
            p.provider, p.device
        );
    }
    let fcm = pushes
        .iter()
        .find(|p| p.provider == "fcm")
        .expect("an FCM push");
    assert_eq!(fcm.device, "fcm-token-android-1");
    assert_eq!(fcm.body["message"]["notification"]["title"], "approved");
    assert_eq!(fcm.body["message"]["data"]["kurir_id"], id.as_str());
    let topic = |device: &str| {
        let p = pushes
            .iter()
            .find(|p| p.provider == "apns" && p.device == device)
            .expect("an APNs push");
        assert_eq!(p.headers["apns-push-type"], "alert");
        assert_eq!(p.body["aps"]["alert"]["title"], "approved");
        assert_eq!(p.body["kurir_id"], id.as_str());
        p.headers["apns-topic"].to_str().unwrap().to_owned()
    };
    assert_eq!(topic("a1b2c3d4e5f60718"), "com.example.kurir");
    assert_eq!(topic("0f1e2d3c4b5a6978"), "com.example.other");
    for provider in ["fcm", "apns"] {
        let sent = d
            .metric(&format!(
                "kurir_push_sent_total{{provider=\"{provider}\",outcome=\"sent\"}}"
            ))
            .await?;
        assert!(sent >= 1.0, "{provider}: {sent}");
    }
    c.dispatchers.push(d);
    cleanup_namespace(&redis_url(), &c.namespace);
    Ok(())
}

#[tokio::test]
async fn gone_devices_are_removed_and_retry_after_is_honoured() -> Result<()> {
    let c = OfflineCluster::start(2).await?;
    let alice = user("alice");
    let mut api = c.dispatchers[0].client().await?;
    let gone = c.browser(&mut api, &alice, "gone").await?;
    let busy = c.browser(&mut api, &alice, "busy").await?;
    c.push.script("gone", [Answer::status(410)]);
    c.push.script("busy", [Answer::retry_after(429, 1)]);
    send_with_fallback(&mut api, &[&alice], "hello", 0).await?;
    exactly(&c, &["gone"], 1).await;
    eventually(T, "the retry", || async {
        (c.push.arrivals("busy").len() == 2).then_some(())
    })
    .await;
    let busy_at = c.push.arrivals("busy");
    assert!(busy_at[1] - busy_at[0] >= Duration::from_millis(950));
    // The dispatcher removes the gone device once all of the user's pushes are answered,
    // the retried one included.
    let listed = || {
        let mut api = api.clone();
        let alice = alice.clone();
        async move {
            let reply = api
                .list_devices(ListDevicesRequest { user_id: alice })
                .await
                .ok()?
                .into_inner();
            Some(reply.devices.into_iter().map(|d| d.id).collect::<Vec<_>>())
        }
    };
    eventually(T, "the gone device removed", || async {
        listed().await.filter(|ids| ids.len() == 1)
    })
    .await;
    assert_eq!(
        listed().await.unwrap_or_default(),
        [busy],
        "{gone} is still registered"
    );
    cleanup_namespace(&redis_url(), &c.namespace);
    Ok(())
}

#[tokio::test]
async fn scheduled_sends_survive_a_restart_go_out_on_time_and_can_be_cancelled() -> Result<()> {
    let mut c = OfflineCluster::start(1).await?;
    let alice = user("alice");
    let mut api = c.dispatchers[0].client().await?;
    let send_at = now_ms() + 4_000;
    let scheduled = |title: &str| SendRequest {
        user_ids: vec![alice.clone()],
        notification: Some(note(title)),
        ttl_seconds: 600,
        send_at,
        ..Default::default()
    };
    let kept = api.send(scheduled("kept")).await?.into_inner().id;
    let cancelled = api.send(scheduled("cancelled")).await?.into_inner().id;
    api.cancel_scheduled(CancelScheduledRequest {
        id: cancelled.clone(),
    })
    .await?;
    // The only dispatcher dies and another starts: the schedule is in Redis.
    c.dispatchers[0].proc.kill();
    c.dispatchers.clear();
    let d = c.start_dispatcher().await?;
    let mut ws = Client::connect(&c.gateway.ws_url(&token(&alice, &[], 60))).await?;
    let n = ws.next_notification(Duration::from_secs(15)).await?;
    let at = now_ms();
    assert_eq!(n["id"], kept.as_str());
    assert!(at >= send_at, "{} ms early", send_at - at);
    assert!(at - send_at < 1_000, "{} ms late", at - send_at);
    ws.expect_silence(Duration::from_millis(700)).await?;
    let mut api = d.client().await?;
    let err = api
        .cancel_scheduled(CancelScheduledRequest { id: kept })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "already sent");
    cleanup_namespace(&redis_url(), &c.namespace);
    Ok(())
}
