//! Kurir on a real Redis Cluster with replicas (three masters, one replica each): a
//! planned `CLUSTER FAILOVER` and the SIGKILL of a master, each in the middle of a steady
//! stream of stored sends to connected users. Every `Send` that answered OK is
//! delivered, no connection sees an id twice, and presence recovers.
//!
//! What asynchronous replication can lose, and what that means for Kurir, is in
//! docs/operations.md ("Redis with replicas").

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use kurir_e2e::steady::*;
use kurir_e2e::*;
use kurir_proto::v1::GetPresenceRequest;

enum Fault {
    /// `CLUSTER FAILOVER` on a replica: it catches up, then takes over.
    Planned,
    /// SIGKILL of a master: its replica takes over after the node timeout.
    MasterKilled,
}

async fn everyone_online(api: &Api, users: &[String]) -> Option<()> {
    let mut api = api.clone();
    let p = api
        .get_presence(GetPresenceRequest {
            user_ids: users.to_vec(),
        })
        .await
        .ok()?
        .into_inner();
    p.users.iter().all(|u| u.online).then_some(())
}

async fn failover_mid_stream(fault: Fault) -> Result<()> {
    let mut redis = RedisCluster::start_with_replicas(1).await?;
    let url = redis.url();
    let cluster = Cluster::start_on(2, &nats_url(), &url).await?;
    let users: Vec<String> = (0..USERS).map(|i| user(&format!("u{i}"))).collect();
    let gws = [
        cluster.gateways[0].addr.to_string(),
        cluster.gateways[1].addr.to_string(),
    ];
    let fleet = Fleet::start(&users, &gws);
    eventually(Duration::from_secs(20), "the fleet connected", || async {
        (fleet.connected().len() == USERS).then_some(())
    })
    .await;
    let api = cluster.dispatcher.client().await?;
    let progress = Arc::new(AtomicUsize::new(0));
    let mut sender = tokio::spawn(send_steadily(
        api.clone(),
        users.clone(),
        progress.clone(),
        true,
    ));

    reached(&progress, FAULT_AT, &mut sender).await?;
    let roles = redis.roles()?;
    let (replica, master) = roles.replicas[0];
    assert!(roles.masters.contains(&master));
    let started = Instant::now();
    match fault {
        Fault::Planned => redis.failover(replica)?,
        Fault::MasterKilled => redis.kill(master),
    }
    poll(Duration::from_secs(20), "the replica took over", || async {
        let roles = redis.roles().ok()?;
        roles.masters.contains(&replica).then_some(())
    })
    .await?;
    redis.wait_until_ok().await?;
    let took = started.elapsed();

    let mut sent = sender.await??;
    // After the failover, Sends are answered OK again (and delivered, checked below).
    let after = Instant::now();
    let mut api2 = api.clone();
    let again = poll(Duration::from_secs(20), "a Send answered OK again", || {
        let mut api = api2.clone();
        let u = users[0].clone();
        async move { send(&mut api, &[&u], "after", 600).await.ok() }
    })
    .await?;
    sent.ok.push((users[0].clone(), again.id));
    let recovered = after.elapsed();
    for (i, u) in users.iter().enumerate().take(10) {
        let r = send(&mut api2, &[u], &format!("after-{i}"), 600).await?;
        sent.ok.push((u.clone(), r.id));
    }
    let masters: Vec<String> = redis
        .roles()?
        .masters
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    all_received(&fleet, &sent.ok, &masters, &cluster.namespace).await?;
    // Presence lost with a killed master comes back with the gateways' refresh.
    eventually(Duration::from_secs(30), "everyone online again", || {
        everyone_online(&api, &users)
    })
    .await;
    eprintln!(
        "replica {replica} took over from {master} in {took:?}; {} sends answered OK (all delivered), {} UNAVAILABLE; OK again {recovered:?} after the stream ended",
        sent.ok.len(),
        sent.unavailable
    );
    fleet.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_planned_failover_mid_stream_loses_nothing() -> Result<()> {
    failover_mid_stream(Fault::Planned).await
}

/// Not in the default run: a SIGKILLed primary takes the writes it acknowledged but had
/// not replicated yet (docs/operations.md, "Redis with replicas"), so now and then a Send
/// answered OK in the instant before the kill is lost (1 of 723 once). Run it with
/// `cargo nextest run -p kurir-e2e --test redis_cluster --run-ignored all`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "can lose the last unreplicated writes by design of Redis replication; run on demand"]
async fn chaos_a_master_sigkilled_mid_stream_loses_no_acknowledged_send() -> Result<()> {
    failover_mid_stream(Fault::MasterKilled).await
}
