//! The [`PresenceStore`](crate::presence::PresenceStore) contract.

use std::time::Duration;

use super::{eventually, Factory};
use crate::ids::{ConnId, NodeId, UserId};
use crate::presence::UserPresence;

/// A TTL no case outlives.
const LONG: Duration = Duration::from_secs(120);
/// A TTL cases wait out.
const SHORT: Duration = Duration::from_secs(1);
/// How long a TTL of [`SHORT`] may take to be observed (server expiry is lazy + active).
const EXPIRY_BOUND: Duration = Duration::from_secs(5);

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn node(name: &str) -> NodeId {
    NodeId::parse(name).unwrap()
}

fn conns(p: &UserPresence) -> Vec<(ConnId, &str)> {
    p.connections
        .iter()
        .map(|(c, n)| (*c, n.as_str()))
        .collect()
}

/// `add` records a connection; `lookup` returns it on its node.
pub async fn add_then_lookup(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let (gw, alice) = (node("gw-1"), user("alice"));
    store.beat(&gw, LONG).await.unwrap();
    store.add(&gw, &alice, ConnId(7)).await.unwrap();
    let found = store.lookup(std::slice::from_ref(&alice)).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].user, alice);
    assert!(found[0].online());
    assert_eq!(conns(&found[0]), vec![(ConnId(7), "gw-1")]);
    assert_eq!(found[0].nodes(), vec![gw]);
}

/// `add` is idempotent.
pub async fn add_is_idempotent(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let (gw, alice) = (node("gw-1"), user("alice"));
    store.beat(&gw, LONG).await.unwrap();
    for _ in 0..3 {
        store.add(&gw, &alice, ConnId(7)).await.unwrap();
    }
    let found = store.lookup(&[alice]).await.unwrap();
    assert_eq!(conns(&found[0]), vec![(ConnId(7), "gw-1")]);
}

/// `remove` forgets one connection, keeps the others, and is idempotent.
pub async fn remove_forgets_one_connection(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let (gw, alice) = (node("gw-1"), user("alice"));
    store.beat(&gw, LONG).await.unwrap();
    store.add(&gw, &alice, ConnId(1)).await.unwrap();
    store.add(&gw, &alice, ConnId(2)).await.unwrap();
    store.remove(&alice, ConnId(1)).await.unwrap();
    store.remove(&alice, ConnId(1)).await.unwrap();
    store.remove(&alice, ConnId(99)).await.unwrap();
    store.remove(&user("nobody"), ConnId(1)).await.unwrap();
    let found = store.lookup(std::slice::from_ref(&alice)).await.unwrap();
    assert_eq!(conns(&found[0]), vec![(ConnId(2), "gw-1")]);
    store.remove(&alice, ConnId(2)).await.unwrap();
    assert!(!store.lookup(&[alice]).await.unwrap()[0].online());
}

/// A user's connections on several nodes, sorted by connection id; nodes distinct
/// and sorted.
pub async fn connections_on_several_nodes(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let (a, b, alice) = (node("gw-a"), node("gw-b"), user("alice"));
    store.beat(&a, LONG).await.unwrap();
    store.beat(&b, LONG).await.unwrap();
    store.add(&b, &alice, ConnId(30)).await.unwrap();
    store.add(&a, &alice, ConnId(20)).await.unwrap();
    store.add(&b, &alice, ConnId(10)).await.unwrap();
    let found = store.lookup(&[alice]).await.unwrap();
    assert_eq!(
        conns(&found[0]),
        vec![
            (ConnId(10), "gw-b"),
            (ConnId(20), "gw-a"),
            (ConnId(30), "gw-b")
        ]
    );
    assert_eq!(found[0].nodes(), vec![a, b]);
}

/// An entry counts only while its node's liveness mark is fresh: a node that never
/// beat holds nobody.
pub async fn entries_of_a_node_without_liveness_do_not_count(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let (live, silent, alice) = (node("gw-live"), node("gw-silent"), user("alice"));
    store.beat(&live, LONG).await.unwrap();
    store.add(&silent, &alice, ConnId(1)).await.unwrap();
    store.add(&live, &alice, ConnId(2)).await.unwrap();
    let found = store.lookup(&[alice]).await.unwrap();
    assert_eq!(conns(&found[0]), vec![(ConnId(2), "gw-live")]);
}

/// A SIGKILLed node's entries stop counting within its liveness TTL, without anyone
/// deleting them; other nodes' entries stay.
pub async fn dead_node_stops_counting_after_its_ttl(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let (dying, healthy, alice) = (node("gw-dying"), node("gw-healthy"), user("alice"));
    store.beat(&dying, SHORT).await.unwrap();
    store.beat(&healthy, LONG).await.unwrap();
    store.add(&dying, &alice, ConnId(1)).await.unwrap();
    store.add(&healthy, &alice, ConnId(2)).await.unwrap();
    let found = store.lookup(std::slice::from_ref(&alice)).await.unwrap();
    assert_eq!(found[0].connections.len(), 2, "both count while fresh");
    let started = tokio::time::Instant::now();
    eventually(
        "the dead node's entry to stop counting",
        EXPIRY_BOUND,
        || {
            let (store, alice) = (store.clone(), alice.clone());
            async move {
                let found = store.lookup(&[alice]).await.unwrap();
                (found[0].connections.len() == 1).then_some(found)
            }
        },
    )
    .await;
    assert!(started.elapsed() >= SHORT / 2, "stopped counting too early");
    let found = store.lookup(&[alice]).await.unwrap();
    assert_eq!(conns(&found[0]), vec![(ConnId(2), "gw-healthy")]);
}

/// A node that keeps beating stays alive past its TTL.
pub async fn beating_keeps_a_node_alive(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let (gw, alice) = (node("gw-1"), user("alice"));
    store.beat(&gw, SHORT).await.unwrap();
    store.add(&gw, &alice, ConnId(1)).await.unwrap();
    for _ in 0..8 {
        tokio::time::sleep(SHORT / 4).await;
        store.beat(&gw, SHORT).await.unwrap();
        let found = store.lookup(std::slice::from_ref(&alice)).await.unwrap();
        assert!(found[0].online(), "a beating node must keep counting");
    }
}

/// `remove_node` drops the node's liveness mark and the given entries.
pub async fn remove_node_drops_its_entries_and_liveness(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let (leaving, staying) = (node("gw-leaving"), node("gw-staying"));
    let (alice, bob) = (user("alice"), user("bob"));
    store.beat(&leaving, LONG).await.unwrap();
    store.beat(&staying, LONG).await.unwrap();
    store.add(&leaving, &alice, ConnId(1)).await.unwrap();
    store.add(&leaving, &alice, ConnId(2)).await.unwrap();
    store.add(&leaving, &bob, ConnId(3)).await.unwrap();
    store.add(&staying, &bob, ConnId(4)).await.unwrap();
    // Not in `entries`: stops counting with the liveness mark.
    store.add(&leaving, &bob, ConnId(5)).await.unwrap();
    store
        .remove_node(
            &leaving,
            &[
                (alice.clone(), ConnId(1)),
                (alice.clone(), ConnId(2)),
                (bob.clone(), ConnId(3)),
            ],
        )
        .await
        .unwrap();
    let found = store.lookup(&[alice, bob]).await.unwrap();
    assert!(!found[0].online());
    assert_eq!(conns(&found[1]), vec![(ConnId(4), "gw-staying")]);
}

/// Entries expire after the store's entry TTL unless refreshed.
pub async fn entries_expire_without_refresh(f: &dyn Factory) {
    let store = f.presence(SHORT).await;
    let (gw, alice) = (node("gw-1"), user("alice"));
    store.beat(&gw, LONG).await.unwrap();
    store.add(&gw, &alice, ConnId(1)).await.unwrap();
    assert!(store.lookup(std::slice::from_ref(&alice)).await.unwrap()[0].online());
    eventually("the entry to expire", EXPIRY_BOUND, || {
        let (store, alice) = (store.clone(), alice.clone());
        async move { (!store.lookup(&[alice]).await.unwrap()[0].online()).then_some(()) }
    })
    .await;
}

/// `refresh` extends the entry TTL of the given users (and only theirs).
pub async fn refresh_extends_entries(f: &dyn Factory) {
    let store = f.presence(SHORT).await;
    let gw = node("gw-1");
    let (kept, dropped) = (user("kept"), user("dropped"));
    store.beat(&gw, LONG).await.unwrap();
    store.add(&gw, &kept, ConnId(1)).await.unwrap();
    store.add(&gw, &dropped, ConnId(2)).await.unwrap();
    // Refresh `kept` for well over its TTL.
    for _ in 0..8 {
        tokio::time::sleep(SHORT / 4).await;
        store.refresh(std::slice::from_ref(&kept)).await.unwrap();
    }
    let found = store.lookup(&[kept.clone(), dropped]).await.unwrap();
    assert!(found[0].online(), "refreshed entries must live on");
    assert!(!found[1].online(), "entries not refreshed must expire");
    // Refreshing users without entries is harmless.
    store.refresh(&[user("ghost")]).await.unwrap();
    store.refresh(&[]).await.unwrap();
}

/// `lookup` of users nobody added answers them offline; of nobody, nothing.
pub async fn lookup_of_unknown_users(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let found = store
        .lookup(&[user("nobody"), user("ghost")])
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|p| !p.online()));
    assert!(store.lookup(&[]).await.unwrap().is_empty());
}

/// `lookup` answers in the order asked, duplicates included.
pub async fn lookup_keeps_the_order_asked(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let gw = node("gw-1");
    store.beat(&gw, LONG).await.unwrap();
    store.add(&gw, &user("b"), ConnId(2)).await.unwrap();
    store.add(&gw, &user("a"), ConnId(1)).await.unwrap();
    let asked = [user("c"), user("b"), user("a"), user("b")];
    let found = store.lookup(&asked).await.unwrap();
    let users: Vec<&UserId> = found.iter().map(|p| &p.user).collect();
    assert_eq!(users, asked.iter().collect::<Vec<_>>());
    let online: Vec<bool> = found.iter().map(UserPresence::online).collect();
    assert_eq!(online, vec![false, true, true, true]);
    assert_eq!(found[1].connections[0].0, ConnId(2));
    assert_eq!(found[2].connections[0].0, ConnId(1));
}

/// One lookup answers thousands of users (pipelined, not one call per user).
pub async fn lookup_of_many_users(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let (a, b) = (node("gw-a"), node("gw-b"));
    store.beat(&a, LONG).await.unwrap();
    store.beat(&b, LONG).await.unwrap();
    let users: Vec<UserId> = (0..2500).map(|i| user(&format!("u{i}"))).collect();
    for (i, u) in users.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let gw = if i % 4 == 0 { &a } else { &b };
        store.add(gw, u, ConnId(i as u64)).await.unwrap();
    }
    let found = store.lookup(&users).await.unwrap();
    assert_eq!(found.len(), users.len());
    for (i, p) in found.iter().enumerate() {
        assert_eq!(p.user, users[i]);
        assert_eq!(p.online(), i % 2 == 0, "user {i}");
        if i % 2 == 0 {
            let gw = if i % 4 == 0 { "gw-a" } else { "gw-b" };
            assert_eq!(conns(p), vec![(ConnId(i as u64), gw)]);
        }
    }
    store.refresh(&users).await.unwrap();
}
