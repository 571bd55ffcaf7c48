//! Issue 3, end to end: inbox, replay, cursors, acks, receipts, idempotency, order, slow
//! consumers, and the chaos runs (gateway SIGKILL, NATS restart, Redis restart).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
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
    send(&mut api, &[&alice], "short-lived", 2).await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut c = Client::connect(&cluster.gateways[0].ws_url(&token(&alice, &[], 60))).await?;
    c.expect_silence(Duration::from_secs(1)).await?;
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

#[tokio::test]
async fn watch_receipts_sees_delivered_and_acked_filtered() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let gw = &cluster.gateways[0];
    let mut a = Client::connect(&gw.ws_url(&token(&alice, &[], 60))).await?;
    let mut b = Client::connect(&gw.ws_url(&token(&bob, &[], 60))).await?;
    let mut api = cluster.dispatcher.client().await?;
    let mut stream = api
        .watch_receipts(WatchReceiptsRequest {
            user_ids: vec![alice.clone()],
            notification_ids: vec![],
        })
        .await?
        .into_inner();
    tokio::time::sleep(Duration::from_millis(300)).await; // the watch subscribes
    let r = send(&mut api, &[&alice, &bob], "tracked", 600).await?;
    let n = a.next_notification(T).await?;
    b.next_notification(T).await?;
    a.ack(n["id"].as_str().unwrap()).await?;

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let rc = tokio::time::timeout(T, stream.next())
            .await?
            .expect("stream open")?;
        assert_eq!(rc.user_id, alice, "filtered to alice");
        assert_eq!(rc.id, r.id);
        seen.push(rc.status);
    }
    assert_eq!(
        seen,
        [ReceiptStatus::Delivered as i32, ReceiptStatus::Acked as i32]
    );
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

const USERS: usize = 100;
const SENDS: usize = 2000;
/// One send every 2 ms: 2,000 sends over ~4 s plus gRPC time.
const SEND_EVERY: Duration = Duration::from_millis(2);

enum Fault {
    KillGateway,
    RestartNats(OwnNats),
    RestartRedis(OwnRedis),
}

async fn chaos(mut fault: Fault) -> Result<()> {
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
    let fleet = Fleet::start(
        &users,
        &addrs(&[&cluster.gateways[0], &cluster.gateways[1]]),
    );
    let mut api = cluster.dispatcher.client().await?;
    tokio::time::sleep(Duration::from_secs(1)).await; // the fleet connects

    let mut expected = Vec::new();
    let mut unavailable = 0;
    let mut tick = tokio::time::interval(SEND_EVERY);
    for i in 0..SENDS {
        tick.tick().await;
        match (i, &mut fault) {
            (700, Fault::KillGateway) => cluster.gateways[0].proc.kill(),
            (1000, Fault::KillGateway) => {
                let node = cluster.gateways[0].node.clone();
                let g = cluster.start_gateway(&node, &nats, &redis).await?;
                cluster.gateways[0] = g;
                fleet.set_gateways(&addrs(&[&cluster.gateways[0], &cluster.gateways[1]]));
            }
            (700, Fault::RestartNats(n)) => n.stop(),
            (1000, Fault::RestartNats(n)) => n.restart().await?,
            (700, Fault::RestartRedis(r)) => r.kill(),
            (1000, Fault::RestartRedis(r)) => r.restart().await?,
            _ => {}
        }
        let u = &users[i % USERS];
        match send(&mut api, &[u], &format!("c{i}"), 3600).await {
            Ok(r) => expected.push((u.clone(), r.id)),
            Err(e) => {
                let code = e.downcast_ref::<tonic::Status>().map(|s| s.code());
                assert_eq!(code, Some(tonic::Code::Unavailable), "send {i}: {e}");
                assert!(
                    matches!(fault, Fault::RestartRedis(_)),
                    "send {i} failed: {e}"
                );
                unavailable += 1;
            }
        }
    }
    if matches!(fault, Fault::RestartRedis(_)) {
        assert!(
            unavailable > 0,
            "Send kept answering OK while Redis was down"
        );
    }
    eventually(
        Duration::from_secs(60),
        "every (user, id) received",
        || async { (fleet.missing(&expected) == 0).then_some(()) },
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}: {} of {} missing",
            fleet.missing(&expected),
            expected.len()
        )
    })?;
    eventually(
        Duration::from_secs(30),
        "every inbox empty (all acked)",
        || async { (inbox_entries(&redis, &cluster.namespace).ok()? == 0).then_some(()) },
    )
    .await?;
    assert_eq!(
        fleet.duplicates.load(Ordering::Relaxed),
        0,
        "an id twice on one connection"
    );
    fleet.stop().await;
    cleanup_namespace(&redis, &cluster.namespace);
    Ok(())
}

#[tokio::test]
async fn chaos_gateway_sigkill_mid_stream_loses_nothing() -> Result<()> {
    chaos(Fault::KillGateway).await
}

#[tokio::test]
async fn chaos_nats_restart_mid_stream_loses_nothing() -> Result<()> {
    chaos(Fault::RestartNats(OwnNats::start().await?)).await
}

#[tokio::test]
async fn chaos_redis_restart_mid_stream_loses_no_acknowledged_send() -> Result<()> {
    chaos(Fault::RestartRedis(OwnRedis::start().await?)).await
}
