//! The [`PresenceStore`](crate::presence::PresenceStore) contract.

use std::time::Duration;

use super::{eventually, Factory, PROMPT};
use crate::ids::{ConnId, NodeId, UserId};
use crate::presence::{Beat, Lease, UserPresence};

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

/// A fresh incarnation of node `name`.
fn lease(name: &str) -> Lease {
    Lease::new(node(name))
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
    let (gw, alice) = (lease("gw-1"), user("alice"));
    store.beat(&gw, LONG).await.unwrap();
    store.add(&gw, &alice, ConnId(7)).await.unwrap();
    let found = store.lookup(std::slice::from_ref(&alice)).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].user, alice);
    assert!(found[0].online());
    assert_eq!(conns(&found[0]), vec![(ConnId(7), "gw-1")]);
    assert_eq!(found[0].nodes(), vec![gw.node]);
}

/// `add` is idempotent.
pub async fn add_is_idempotent(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let (gw, alice) = (lease("gw-1"), user("alice"));
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
    let (gw, alice) = (lease("gw-1"), user("alice"));
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
    let (a, b, alice) = (lease("gw-a"), lease("gw-b"), user("alice"));
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
    assert_eq!(found[0].nodes(), vec![a.node, b.node]);
}

/// An entry counts only while its node's liveness mark is fresh: a node that never
/// beat holds nobody.
pub async fn entries_of_a_node_without_liveness_do_not_count(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let (live, silent, alice) = (lease("gw-live"), lease("gw-silent"), user("alice"));
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
    let (dying, healthy, alice) = (lease("gw-dying"), lease("gw-healthy"), user("alice"));
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
    let (gw, alice) = (lease("gw-1"), user("alice"));
    store.beat(&gw, SHORT).await.unwrap();
    store.add(&gw, &alice, ConnId(1)).await.unwrap();
    for _ in 0..8 {
        tokio::time::sleep(SHORT / 4).await;
        let beat = store.beat(&gw, SHORT).await.unwrap();
        assert_eq!(beat, Beat::Kept, "a beat within the TTL keeps the mark");
        let found = store.lookup(std::slice::from_ref(&alice)).await.unwrap();
        assert!(found[0].online(), "a beating node must keep counting");
    }
}

/// `remove_node` drops the node's liveness mark and the given entries.
pub async fn remove_node_drops_its_entries_and_liveness(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let (leaving, staying) = (lease("gw-leaving"), lease("gw-staying"));
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
    let beat = store.beat(&leaving, LONG).await.unwrap();
    assert_eq!(beat, Beat::Lapsed, "the mark is gone");
}

/// `remove_node` drops the mark only while it holds the lease's epoch: an old
/// incarnation leaving late does not take down the new one.
pub async fn remove_node_keeps_a_newer_incarnations_mark(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let alice = user("alice");
    let old = lease("gw-1");
    let new = Lease::new(old.node.clone());
    store.beat(&old, LONG).await.unwrap();
    store.add(&old, &alice, ConnId(1)).await.unwrap();
    store.beat(&new, LONG).await.unwrap();
    store.add(&new, &alice, ConnId(2)).await.unwrap();
    store
        .remove_node(&old, &[(alice.clone(), ConnId(1))])
        .await
        .unwrap();
    let found = store.lookup(&[alice]).await.unwrap();
    assert_eq!(conns(&found[0]), vec![(ConnId(2), "gw-1")]);
    assert_eq!(store.beat(&new, LONG).await.unwrap(), Beat::Kept);
}

/// `beat` says whether the mark held the lease's epoch until now: an incarnation's first
/// beat is `Lapsed`, the next `Kept`; once the TTL has passed, `Lapsed` again; a beat of
/// another incarnation of the same node is `Lapsed`, and so is the next of the first.
pub async fn a_beat_reports_kept_or_lapsed(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let (gw, alice) = (lease("gw-1"), user("alice"));
    assert_eq!(
        store.beat(&gw, SHORT).await.unwrap(),
        Beat::Lapsed,
        "first beat"
    );
    assert_eq!(
        store.beat(&gw, SHORT).await.unwrap(),
        Beat::Kept,
        "second beat"
    );
    // Wait the TTL out, watching an entry of the node (a beat would renew the mark).
    store.add(&gw, &alice, ConnId(1)).await.unwrap();
    eventually("the mark to expire", EXPIRY_BOUND, || {
        let (store, alice) = (store.clone(), alice.clone());
        async move { (!store.lookup(&[alice]).await.unwrap()[0].online()).then_some(()) }
    })
    .await;
    assert_eq!(
        store.beat(&gw, LONG).await.unwrap(),
        Beat::Lapsed,
        "after the TTL"
    );
    assert_eq!(store.beat(&gw, LONG).await.unwrap(), Beat::Kept);
    let other = Lease::new(gw.node.clone());
    assert_eq!(
        store.beat(&other, LONG).await.unwrap(),
        Beat::Lapsed,
        "another epoch"
    );
    assert_eq!(
        store.beat(&gw, LONG).await.unwrap(),
        Beat::Lapsed,
        "taken over"
    );
}

/// A node restarted with the same id (a new epoch) hides its previous incarnation's
/// entries once it beats: they stop counting (at once for a lookup that also meets an
/// entry of the new epoch), and its new entries count.
pub async fn a_new_epoch_hides_the_old_incarnation(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let (alice, bob) = (user("alice"), user("bob"));
    let old = lease("gw-1");
    store.beat(&old, LONG).await.unwrap();
    store.add(&old, &alice, ConnId(1)).await.unwrap();
    store.add(&old, &bob, ConnId(2)).await.unwrap();
    let found = store.lookup(&[alice.clone(), bob.clone()]).await.unwrap();
    assert!(
        found.iter().all(UserPresence::online),
        "the old incarnation counts"
    );

    let new = Lease::new(old.node.clone());
    assert_eq!(store.beat(&new, LONG).await.unwrap(), Beat::Lapsed);
    // Ghosts stop counting: bob's only entry is the old incarnation's.
    eventually("the old incarnation to stop counting", PROMPT, || {
        let (store, bob) = (store.clone(), bob.clone());
        async move { (!store.lookup(&[bob]).await.unwrap()[0].online()).then_some(()) }
    })
    .await;
    store.add(&new, &alice, ConnId(3)).await.unwrap();
    let found = store.lookup(&[alice.clone(), bob]).await.unwrap();
    assert_eq!(conns(&found[0]), vec![(ConnId(3), "gw-1")]);
    assert!(!found[1].online());
    // The old incarnation's conn id written again under the new epoch counts too.
    store.add(&new, &alice, ConnId(1)).await.unwrap();
    let found = store.lookup(&[alice]).await.unwrap();
    assert_eq!(
        conns(&found[0]),
        vec![(ConnId(1), "gw-1"), (ConnId(3), "gw-1")]
    );
}

/// A node whose mark lapsed (a slow beat, a Redis hiccup) and whose entries lookups
/// pruned meanwhile is online again once it beats with a new epoch and adds its
/// connections again; prunes decided during the lapse never remove what it re-added.
pub async fn entries_re_added_after_a_lapse_count_again(f: &dyn Factory) {
    let store = f.presence(LONG).await;
    let (alice, bob) = (user("alice"), user("bob"));
    let first = lease("gw-1");
    store.beat(&first, SHORT).await.unwrap();
    store.add(&first, &alice, ConnId(1)).await.unwrap();
    store.add(&first, &alice, ConnId(2)).await.unwrap();
    store.add(&first, &bob, ConnId(3)).await.unwrap();
    // The mark lapses: lookups stop counting the node and prune its entries.
    eventually("the lapsed node to stop counting", EXPIRY_BOUND, || {
        let (store, users) = (store.clone(), [alice.clone(), bob.clone()]);
        async move {
            let found = store.lookup(&users).await.unwrap();
            found.iter().all(|p| !p.online()).then_some(())
        }
    })
    .await;
    // Its next beat tells the node; it takes a new epoch and writes its connections
    // again (alice's here), racing the prunes of the lookups above.
    assert_eq!(store.beat(&first, LONG).await.unwrap(), Beat::Lapsed);
    let second = Lease::new(first.node.clone());
    store.beat(&second, LONG).await.unwrap();
    store.add(&second, &alice, ConnId(1)).await.unwrap();
    store.add(&second, &alice, ConnId(2)).await.unwrap();
    let expected = vec![(ConnId(1), "gw-1"), (ConnId(2), "gw-1")];
    // Let the background prunes settle: the re-added entries count throughout.
    for _ in 0..10 {
        let found = store.lookup(&[alice.clone(), bob.clone()]).await.unwrap();
        assert_eq!(conns(&found[0]), expected, "re-added entries must count");
        assert!(!found[1].online(), "what was not re-added stays gone");
        tokio::time::sleep(SHORT / 10).await;
    }
}

/// Entries expire after the store's entry TTL unless refreshed.
pub async fn entries_expire_without_refresh(f: &dyn Factory) {
    let store = f.presence(SHORT).await;
    let (gw, alice) = (lease("gw-1"), user("alice"));
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
    let gw = lease("gw-1");
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
    let gw = lease("gw-1");
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
    let (a, b) = (lease("gw-a"), lease("gw-b"));
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
