//! Issue 3, end to end: inbox, replay, cursors, acks, receipts, idempotency, order, slow
//! consumers, and the chaos runs (gateway SIGKILL over WebSocket, SSE and MQTT, NATS
//! restart, Redis restart).

use std::collections::HashSet;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use kurir_e2e::steady::*;
use kurir_e2e::*;
use kurir_proto::v1::{ReceiptStatus, SendRequest, WatchReceiptsRequest};
use serde_json::Value;

const T: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(500);

async fn replayed(c: &mut Client, n: usize) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(c.next_notification(T).await?);
    }
    Ok(out)
}

#[tokio::test]
async fn offline_user_gets_replay_until_ack_and_cursor_resumes() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let gw = &cluster.gateways[0];
    let alice = user("alice");
    let mut api = cluster.dispatcher.client().await?;
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = send(&mut api, &[&alice], &format!("n{i}"), 600).await?;
        assert_eq!((r.online_users, r.stored_users), (0, 1));
        ids.push(r.id);
    }

    let mut c = Client::connect(&gw.ws_url(&token(&alice, &[], 60))).await?;
    let got = replayed(&mut c, 3).await?;
    let titles: Vec<_> = got
        .iter()
        .map(|n| n["title"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(titles, ["n0", "n1", "n2"], "oldest first");
    assert!(got
        .iter()
        .all(|n| n["replayed"] == true && n["cursor"].is_string()));
    c.expect_silence(QUIET).await?;
    c.ack(&ids[0]).await?;
    c.expect_silence(QUIET).await?;
    drop(c);

    // Acked: not replayed again; the others are.
    let mut c = Client::connect(&gw.ws_url(&token(&alice, &[], 60))).await?;
    let got = replayed(&mut c, 2).await?;
    assert_eq!(got[0]["id"], ids[1].as_str());
    assert_eq!(got[1]["id"], ids[2].as_str());
    c.expect_silence(QUIET).await?;
    let cursor = got[0]["cursor"].as_str().unwrap().to_string();
    drop(c);

    // Resume after the cursor of n1: only n2.
    let url = format!("{}&cursor={cursor}", gw.ws_url(&token(&alice, &[], 60)));
    let mut c = Client::connect(&url).await?;
    assert_eq!(c.next_notification(T).await?["id"], ids[2].as_str());
    c.expect_silence(QUIET).await?;
    // Live stored notifications carry a cursor too.
    let r = send(&mut api, &[&alice], "live", 600).await?;
    let n = c.next_notification(T).await?;
    assert_eq!(
        (n["id"].as_str(), n["replayed"].as_bool()),
        (Some(r.id.as_str()), Some(false))
    );
    assert!(n["cursor"].is_string());
    assert!(gw.metric("kurir_gateway_acks_total").await? >= 1.0);
    Ok(())
}

#[tokio::test]
async fn expired_notifications_are_never_delivered() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let alice = user("alice");
    let mut api = cluster.dispatcher.client().await?;
    // Oldest first, so a replay that ignored expiry would show the short-lived one first.
    let short = send(&mut api, &[&alice], "short-lived", 2).await?;
    let long = send(&mut api, &[&alice], "long-lived", 600).await?;
    assert_eq!((short.stored_users, long.stored_users), (1, 1));
    // What is under test is time passing: 2 s past the short TTL, not a wait for a state.
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The long-lived entry keeps the stream alive and the expired one is still in it, so
    // only the per-entry expiry can keep it from being replayed.
    let key = format!("kurir:{}:inbox:{{{alice}}}", cluster.namespace);
    assert_eq!(
        redis_cli(&redis_url(), &["XLEN", &key])?,
        "2",
        "both entries still stored"
    );
    let mut c = Client::connect(&cluster.gateways[0].ws_url(&token(&alice, &[], 60))).await?;
    let n = c.next_notification(T).await?;
    assert_eq!(
        (n["id"].as_str(), n["title"].as_str()),
        (Some(long.id.as_str()), Some("long-lived"))
    );
    c.expect_silence(Duration::from_secs(1)).await?;
    cleanup_namespace(&redis_url(), &cluster.namespace);
    Ok(())
}

#[tokio::test]
async fn idempotent_retry_delivers_once() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let alice = user("alice");
    let mut c = Client::connect(&cluster.gateways[0].ws_url(&token(&alice, &[], 60))).await?;
    let mut api = cluster.dispatcher.client().await?;
    let req = SendRequest {
        user_ids: vec![alice.clone()],
        notification: Some(note("once")),
        ttl_seconds: 600,
        idempotency_key: format!("order-{}", rand::random::<u64>()),
        ..Default::default()
    };
    let first = api.send(req.clone()).await?.into_inner();
    let second = api.send(req).await?.into_inner();
    assert_eq!(first.id, second.id);
    assert_eq!(c.next_notification(T).await?["id"], first.id.as_str());
    c.expect_silence(QUIET).await?;
    drop(c);
    // And only one stored copy.
    let mut c = Client::connect(&cluster.gateways[0].ws_url(&token(&alice, &[], 60))).await?;
    assert_eq!(c.next_notification(T).await?["id"], first.id.as_str());
    c.expect_silence(QUIET).await?;
    Ok(())
}

#[tokio::test]
async fn sequential_sends_arrive_in_order_live_and_replayed() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let gw = &cluster.gateways[0];
    let (alice, bob) = (user("alice"), user("bob"));
    let mut a = Client::connect(&gw.ws_url(&token(&alice, &[], 60))).await?;
    let mut api = cluster.dispatcher.client().await?;
    for i in 0..200 {
        send(&mut api, &[&alice, &bob], &format!("{i}"), 600).await?;
    }
    for i in 0..200 {
        assert_eq!(
            a.next_notification(T).await?["title"],
            i.to_string().as_str()
        );
    }
    let mut b = Client::connect(&gw.ws_url(&token(&bob, &[], 60))).await?;
    for i in 0..200 {
        let n = b.next_notification(T).await?;
        assert_eq!(n["title"], i.to_string().as_str());
        assert_eq!(n["replayed"], true);
    }
    Ok(())
}

/// Wait until the dispatcher runs `n` receipt watchers: each subscribed to the receipts
/// subject before its forwarding task (the gauge) started, on the connection the
/// dispatcher later publishes the deliveries on, so the bus has the subscription before
/// any receipt of them exists.
async fn watchers_open(d: &DispatcherProc, n: f64) -> Result<()> {
    eventually(T, &format!("{n} receipt watchers open"), || async {
        (d.metric("kurir_dispatcher_receipt_watchers").await.ok()? >= n).then_some(())
    })
    .await;
    Ok(())
}

/// The next `n` receipts of a watch stream: (id, user, status).
async fn receipts<S>(stream: &mut S, n: usize) -> Result<Vec<(String, String, i32)>>
where
    S: futures::Stream<Item = Result<kurir_proto::v1::Receipt, tonic::Status>> + Unpin,
{
    let mut seen = Vec::new();
    while seen.len() < n {
        let rc = tokio::time::timeout(T, stream.next())
            .await
            .map_err(|_| anyhow::anyhow!("{} of {n} receipts within {T:?}: {seen:?}", seen.len()))?
            .expect("stream open")?;
        seen.push((rc.id, rc.user_id, rc.status));
    }
    Ok(seen)
}

#[tokio::test]
async fn watch_receipts_sees_delivered_and_acked_filtered() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let gw = &cluster.gateways[0];
    let mut a = Client::connect(&gw.ws_url(&token(&alice, &[], 60))).await?;
    let mut b = Client::connect(&gw.ws_url(&token(&bob, &[], 60))).await?;
    let mut api = cluster.dispatcher.client().await?;
    let (delivered, acked) = (ReceiptStatus::Delivered as i32, ReceiptStatus::Acked as i32);

    // Filtered by user: alice's receipts, none of bob's for the same notification.
    let mut by_user = api
        .watch_receipts(WatchReceiptsRequest {
            user_ids: vec![alice.clone()],
            notification_ids: vec![],
        })
        .await?
        .into_inner();
    watchers_open(&cluster.dispatcher, 1.0).await?;
    let r = send(&mut api, &[&alice, &bob], "tracked", 600).await?;
    let n = b.next_notification(T).await?;
    b.ack(n["id"].as_str().unwrap()).await?;
    let n = a.next_notification(T).await?;
    a.ack(n["id"].as_str().unwrap()).await?;
    assert_eq!(
        receipts(&mut by_user, 2).await?,
        [
            (r.id.clone(), alice.clone(), delivered),
            (r.id.clone(), alice.clone(), acked)
        ],
        "filtered to alice"
    );

    // Filtered by notification id: two stored for carol while she is offline, a watcher
    // of the first only. Carol acks the other one first, so everything of it is
    // published before the ACKED the watcher waits for.
    let first = send(&mut api, &[&carol], "first", 600).await?;
    let other = send(&mut api, &[&carol], "other", 600).await?;
    let mut by_id = api
        .watch_receipts(WatchReceiptsRequest {
            user_ids: vec![],
            notification_ids: vec![first.id.clone()],
        })
        .await?
        .into_inner();
    watchers_open(&cluster.dispatcher, 2.0).await?;
    let mut c = Client::connect(&gw.ws_url(&token(&carol, &[], 60))).await?;
    let got = replayed(&mut c, 2).await?;
    assert_eq!(got[0]["id"], first.id.as_str());
    assert_eq!(got[1]["id"], other.id.as_str());
    c.ack(&other.id).await?;
    c.ack(&first.id).await?;
    assert_eq!(
        receipts(&mut by_id, 2).await?,
        [
            (first.id.clone(), carol.clone(), delivered),
            (first.id.clone(), carol.clone(), acked)
        ],
        "filtered to {}, not {}",
        first.id,
        other.id
    );
    if let Ok(Some(extra)) = tokio::time::timeout(QUIET, by_id.next()).await {
        anyhow::bail!("unexpected receipt {extra:?}");
    }
    Ok(())
}

#[tokio::test]
async fn slow_consumer_is_closed_with_1013_and_loses_nothing() -> Result<()> {
    let ns = random_namespace();
    // However much the kernel buffers before the cut-off, every send must still fit in
    // the inbox, or trimming (not the slow consumer) would lose the oldest.
    let capacity = ("KURIR_INBOX_CAPACITY", "4000".to_string());
    let dispatcher = DispatcherProc::start_with(
        &ns,
        &nats_url(),
        &redis_url(),
        std::slice::from_ref(&capacity),
    )
    .await?;
    let opts = GatewayOpts {
        namespace: ns.clone(),
        nats_url: nats_url(),
        redis_url: redis_url(),
        extra: vec![("KURIR_OUTBOUND_QUEUE", "8".to_string()), capacity],
    };
    let gw = GatewayProc::start(&format!("gw-{}", &ns[5..13]), &opts).await?;
    let (slow, fast) = (user("slow"), user("fast"));
    // The slow client never reads: kernel buffers fill, then its queue, then 1013.
    let mut s = Client::connect(&gw.ws_url(&token(&slow, &[], 60))).await?;
    let mut f = Client::connect(&gw.ws_url(&token(&fast, &[], 60))).await?;
    let mut api = dispatcher.client().await?;
    let body = "x".repeat(3500);
    let mut sent = Vec::new();
    let mut closed = false;
    for i in 0..3000 {
        let r = api
            .send(SendRequest {
                user_ids: vec![slow.clone()],
                notification: Some(kurir_proto::v1::Notification {
                    title: format!("{i}"),
                    body: body.clone(),
                    ..Default::default()
                }),
                ttl_seconds: 600,
                ..Default::default()
            })
            .await?
            .into_inner();
        sent.push(r.id);
        if i % 100 == 99
            && gw
                .metric(r#"kurir_gateway_dropped_total{reason="slow_consumer"}"#)
                .await?
                >= 1.0
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow consumer was never cut off");
    // Others are unaffected.
    send(&mut api, &[&fast], "still fine", 0).await?;
    assert_eq!(f.next_notification(T).await?["title"], "still fine");
    // The slow socket ends with 1013 once we read what the kernel buffered.
    assert_eq!(
        s.closed(Duration::from_secs(20)).await?,
        Ended::Closed(1013)
    );
    // Reconnecting replays everything stored (nothing acked, nothing lost).
    let mut s = Client::connect(&gw.ws_url(&token(&slow, &[], 60))).await?;
    let mut got = HashSet::new();
    for _ in 0..sent.len() {
        got.insert(
            s.next_notification(T).await?["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(got, sent.into_iter().collect::<HashSet<_>>());
    Ok(())
}

// ---- chaos ----------------------------------------------------------------------------

fn addrs(gws: &[&GatewayProc]) -> Vec<String> {
    gws.iter().map(|g| g.addr.to_string()).collect()
}

/// Where a fleet over `transport` connects: the MQTT listeners for MQTT.
fn addrs_for(transport: Transport, gws: &[&GatewayProc]) -> Vec<String> {
    match transport {
        Transport::Mqtt => gws.iter().map(|g| g.mqtt.to_string()).collect(),
        _ => addrs(gws),
    }
}

enum Fault {
    KillGateway,
    RestartNats(OwnNats),
    RestartRedis(OwnRedis),
}

async fn chaos(mut fault: Fault, transport: Transport) -> Result<()> {
    let nats = match &fault {
        Fault::RestartNats(n) => n.url(),
        _ => nats_url(),
    };
    let redis = match &fault {
        Fault::RestartRedis(r) => r.url(),
        _ => redis_url(),
    };
    let mut cluster = Cluster::start_on(2, &nats, &redis).await?;
    let users: Vec<String> = (0..USERS).map(|i| user(&format!("u{i}"))).collect();
    let fleet = Fleet::start_over(
        transport,
        &users,
        &addrs_for(transport, &[&cluster.gateways[0], &cluster.gateways[1]]),
        JWT_SECRET,
    );
    let api = cluster.dispatcher.client().await?;
    eventually(Duration::from_secs(20), "the fleet connected", || async {
        (fleet.connected().len() == USERS).then_some(())
    })
    .await;

    let progress = Arc::new(AtomicUsize::new(0));
    let redis_fault = matches!(fault, Fault::RestartRedis(_));
    let mut sender = tokio::spawn(send_steadily(
        api,
        users.clone(),
        progress.clone(),
        redis_fault,
    ));
    // The fault schedule, keyed on the send index; stopping and restarting (the new
    // gateway has to become ready) take as long as they take while the sends go on.
    reached(&progress, FAULT_AT, &mut sender).await?;
    match &mut fault {
        Fault::KillGateway => cluster.gateways[0].proc.kill(),
        Fault::RestartNats(n) => n.stop(),
        Fault::RestartRedis(r) => r.kill(),
    }
    reached(&progress, REPAIR_AT, &mut sender).await?;
    match &mut fault {
        Fault::KillGateway => {
            let node = cluster.gateways[0].node.clone();
            let g = cluster.start_gateway(&node, &nats, &redis).await?;
            cluster.gateways[0] = g;
            fleet.set_gateways(&addrs_for(
                transport,
                &[&cluster.gateways[0], &cluster.gateways[1]],
            ));
        }
        Fault::RestartNats(n) => n.restart().await?,
        Fault::RestartRedis(r) => r.restart().await?,
    }
    let sent = sender.await??;
    if redis_fault {
        assert!(
            sent.unavailable > 0,
            "Send kept answering OK while Redis was down"
        );
    }
    all_received(
        &fleet,
        &sent.ok,
        std::slice::from_ref(&redis),
        &cluster.namespace,
    )
    .await?;
    fleet.stop().await;
    cleanup_namespace(&redis, &cluster.namespace);
    Ok(())
}

// Multi-threaded: process and redis-cli calls of the fault schedule block a worker for
// a moment, and must not block the send loop with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_gateway_sigkill_mid_stream_loses_nothing() -> Result<()> {
    chaos(Fault::KillGateway, Transport::WebSocket).await
}

/// The same over SSE: the clients come back with `Last-Event-ID`, as browsers do.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_gateway_sigkill_mid_stream_loses_nothing_over_sse() -> Result<()> {
    chaos(Fault::KillGateway, Transport::Sse).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_gateway_sigkill_mid_stream_loses_nothing_over_mqtt() -> Result<()> {
    chaos(Fault::KillGateway, Transport::Mqtt).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_nats_restart_mid_stream_loses_nothing() -> Result<()> {
    chaos(
        Fault::RestartNats(OwnNats::start().await?),
        Transport::WebSocket,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_redis_restart_mid_stream_loses_no_acknowledged_send() -> Result<()> {
    chaos(
        Fault::RestartRedis(OwnRedis::start().await?),
        Transport::WebSocket,
    )
    .await
}
