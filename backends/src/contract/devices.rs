//! The [`DeviceStore`](crate::devices::DeviceStore) contract.

use std::time::Duration;

use bytes::Bytes;

use super::{eventually, Factory, PROMPT};
use crate::devices::{DeviceId, StoredDevice};
use crate::ids::UserId;

const LONG: Duration = Duration::from_secs(120);

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn dev(name: &str) -> DeviceId {
    DeviceId::parse(name).unwrap()
}

fn ids(devices: &[StoredDevice]) -> Vec<String> {
    devices.iter().map(|d| d.id.to_string()).collect()
}

/// `register` stores a device; `list` returns it with its payload, most recent first.
pub async fn register_then_list_most_recent_first(f: &dyn Factory) {
    let store = f.devices(20, LONG).await;
    let alice = user("alice");
    for name in ["a", "b", "c"] {
        let dropped = store
            .register(&alice, &dev(name), Bytes::from(format!("payload-{name}")))
            .await
            .unwrap();
        assert!(dropped.is_empty());
    }
    let listed = store.list(&alice).await.unwrap();
    assert_eq!(ids(&listed), ["c", "b", "a"]);
    assert_eq!(&listed[0].payload[..], b"payload-c");
    assert!(store.list(&user("bob")).await.unwrap().is_empty());
}

/// Registering an id again replaces its payload and makes it the most recent.
pub async fn registering_again_replaces_and_refreshes(f: &dyn Factory) {
    let store = f.devices(20, LONG).await;
    let alice = user("alice");
    store
        .register(&alice, &dev("a"), Bytes::from("old"))
        .await
        .unwrap();
    store
        .register(&alice, &dev("b"), Bytes::from("b"))
        .await
        .unwrap();
    store
        .register(&alice, &dev("a"), Bytes::from("new"))
        .await
        .unwrap();
    let listed = store.list(&alice).await.unwrap();
    assert_eq!(ids(&listed), ["a", "b"]);
    assert_eq!(&listed[0].payload[..], b"new");
}

/// Past the capacity, the least recently registered or used devices are dropped and
/// named; a touched device counts as recent.
pub async fn the_cap_drops_the_least_recent(f: &dyn Factory) {
    let store = f.devices(3, LONG).await;
    let alice = user("alice");
    for name in ["a", "b", "c"] {
        store
            .register(&alice, &dev(name), Bytes::from(name))
            .await
            .unwrap();
    }
    // `a` is used, so `b` is now the least recent.
    store.touch(&alice, &[dev("a")]).await.unwrap();
    let dropped = store
        .register(&alice, &dev("d"), Bytes::from("d"))
        .await
        .unwrap();
    assert_eq!(dropped, vec![dev("b")]);
    assert_eq!(ids(&store.list(&alice).await.unwrap()), ["d", "a", "c"]);
}

/// `unregister` removes one device and says whether it was there.
pub async fn unregister_removes_one(f: &dyn Factory) {
    let store = f.devices(20, LONG).await;
    let alice = user("alice");
    store
        .register(&alice, &dev("a"), Bytes::from("a"))
        .await
        .unwrap();
    store
        .register(&alice, &dev("b"), Bytes::from("b"))
        .await
        .unwrap();
    assert!(store.unregister(&alice, &dev("a")).await.unwrap());
    assert!(!store.unregister(&alice, &dev("a")).await.unwrap());
    assert!(!store.unregister(&user("bob"), &dev("b")).await.unwrap());
    assert_eq!(ids(&store.list(&alice).await.unwrap()), ["b"]);
}

/// Devices expire after the TTL without a registration or a push; a touch renews it.
pub async fn devices_expire_unless_used(f: &dyn Factory) {
    let ttl = Duration::from_millis(1500);
    let store = f.devices(20, ttl).await;
    let (alice, bob) = (user("alice"), user("bob"));
    store
        .register(&alice, &dev("a"), Bytes::from("a"))
        .await
        .unwrap();
    store
        .register(&bob, &dev("b"), Bytes::from("b"))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    // Keep bob's alive past alice's expiry.
    let touch_bob = async {
        while started.elapsed() < Duration::from_millis(2500) {
            store.touch(&bob, &[dev("b")]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    touch_bob.await;
    eventually("alice's devices to expire", PROMPT, || async {
        store.list(&alice).await.unwrap().is_empty().then_some(())
    })
    .await;
    assert_eq!(ids(&store.list(&bob).await.unwrap()), ["b"]);
}
