//! The [`DueQueue`](crate::due::DueQueue) contract.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{eventually, Factory, PROMPT};
use crate::clock::now_ms;
use crate::due::{Cancel, Claimed, DueQueue};

const LEASE: Duration = Duration::from_secs(60);

fn ids(items: &[Claimed]) -> Vec<String> {
    items.iter().map(|c| c.id.clone()).collect()
}

/// An item is claimed only once its time has come, earliest first, with its payload.
pub async fn items_are_claimed_when_due_earliest_first(f: &dyn Factory) {
    let q = f.due().await;
    let now = now_ms();
    q.schedule("later", now + 10_000, Bytes::from("l"))
        .await
        .unwrap();
    q.schedule("second", now - 10, Bytes::from("2"))
        .await
        .unwrap();
    q.schedule("first", now - 20, Bytes::from("1"))
        .await
        .unwrap();
    assert_eq!(q.next_due().await.unwrap(), Some(now - 20));
    let claimed = q.claim(now, LEASE, 10).await.unwrap();
    assert_eq!(ids(&claimed), ["first", "second"]);
    assert_eq!(&claimed[0].payload[..], b"1");
    assert_eq!(claimed[0].lease.attempt, 1);
    assert!(q.claim(now, LEASE, 10).await.unwrap().is_empty());
    // Claims take at most `limit` items (the leased ones stay hidden).
    let claimed = q.claim(now + 10_000, LEASE, 1).await.unwrap();
    assert_eq!(ids(&claimed), ["later"]);
}

/// A claimed item is invisible until its lease ends, then handed out again with a new
/// lease; the old lease can no longer complete it.
pub async fn a_lease_hides_an_item_until_it_ends(f: &dyn Factory) {
    let q = f.due().await;
    q.schedule("x", now_ms() - 1, Bytes::from("x"))
        .await
        .unwrap();
    let lease = Duration::from_millis(800);
    let first = q.claim(now_ms(), lease, 10).await.unwrap();
    assert_eq!(ids(&first), ["x"]);
    assert!(q.claim(now_ms(), lease, 10).await.unwrap().is_empty());
    let second = eventually("the lease to end", PROMPT, || async {
        let c = q.claim(now_ms(), LEASE, 10).await.unwrap();
        (!c.is_empty()).then_some(c)
    })
    .await;
    assert_eq!(ids(&second), ["x"]);
    assert_eq!(second[0].lease.attempt, 2);
    assert!(
        !q.complete(&first[0]).await.unwrap(),
        "a stale lease completed"
    );
    assert!(q.complete(&second[0]).await.unwrap());
    assert!(!q.complete(&second[0]).await.unwrap());
    assert_eq!(q.next_due().await.unwrap(), None);
}

/// `complete` removes the item for good.
pub async fn complete_removes_the_item(f: &dyn Factory) {
    let q = f.due().await;
    q.schedule("x", now_ms() - 1, Bytes::from("x"))
        .await
        .unwrap();
    let claimed = q
        .claim(now_ms(), Duration::from_millis(1), 10)
        .await
        .unwrap();
    assert!(q.complete(&claimed[0]).await.unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(q.claim(now_ms(), LEASE, 10).await.unwrap().is_empty());
    assert_eq!(q.cancel("x", now_ms()).await.unwrap(), Cancel::NotFound);
}

/// `reschedule` moves a claimed item to a later time with a new payload, unleased.
pub async fn reschedule_moves_a_claimed_item(f: &dyn Factory) {
    let q = f.due().await;
    let now = now_ms();
    q.schedule("x", now - 1, Bytes::from("stage-1"))
        .await
        .unwrap();
    let claimed = q.claim(now, LEASE, 10).await.unwrap();
    assert!(q
        .reschedule(&claimed[0], now + 5_000, Bytes::from("stage-2"))
        .await
        .unwrap());
    assert!(q.claim(now + 4_000, LEASE, 10).await.unwrap().is_empty());
    // Unleased: it can be cancelled while it waits.
    let again = q.claim(now + 5_000, LEASE, 10).await.unwrap();
    assert_eq!(&again[0].payload[..], b"stage-2");
    assert!(!q.reschedule(&claimed[0], now, Bytes::new()).await.unwrap());
}

/// `cancel` removes a waiting item, refuses a leased one, and knows no unknown id.
pub async fn cancel_removes_only_waiting_items(f: &dyn Factory) {
    let q = f.due().await;
    let now = now_ms();
    q.schedule("waiting", now + 60_000, Bytes::from("w"))
        .await
        .unwrap();
    q.schedule("busy", now - 1, Bytes::from("b")).await.unwrap();
    let busy = q.claim(now, LEASE, 10).await.unwrap();
    assert_eq!(ids(&busy), ["busy"]);
    assert_eq!(q.cancel("waiting", now).await.unwrap(), Cancel::Cancelled);
    assert_eq!(q.cancel("waiting", now).await.unwrap(), Cancel::NotFound);
    assert_eq!(q.cancel("nope", now).await.unwrap(), Cancel::NotFound);
    assert_eq!(q.cancel("busy", now).await.unwrap(), Cancel::Leased);
    assert!(q.complete(&busy[0]).await.unwrap());
    assert!(q.claim(now + 120_000, LEASE, 10).await.unwrap().is_empty());
}

/// Many claimers racing (each with its own client on Redis) never get the same item,
/// and together get every item.
pub async fn racing_claimers_never_share_an_item(f: &dyn Factory) {
    const ITEMS: usize = 400;
    const CLAIMERS: usize = 8;
    let producer = f.due().await;
    let now = now_ms();
    for i in 0..ITEMS {
        producer
            .schedule(&format!("item-{i}"), now - 1, Bytes::from("p"))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..CLAIMERS {
        let q: Arc<dyn DueQueue> = f.due().await;
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = q.claim(now_ms(), LEASE, 7).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                for item in &batch {
                    assert!(q.complete(item).await.unwrap());
                }
                got.extend(ids(&batch));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for task in tasks {
        for id in task.await.unwrap() {
            total += 1;
            assert!(seen.insert(id.clone()), "{id} was claimed twice");
        }
    }
    assert_eq!(total, ITEMS);
    assert_eq!(seen.len(), ITEMS);
}
