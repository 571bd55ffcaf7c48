//! Collapse keys: a newer stored notification with the same key replaces the user's
//! older unacked one, so a replay sends only the newest.

use super::*;

fn keyed(payload: &str, key: &str) -> NewEntry {
    let mut e = entry(LONG, payload);
    e.collapse_key = Some(key.to_owned());
    e
}

pub async fn a_collapse_key_replaces_the_older_entry(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let alice = user("alice");
    let bob = user("bob");
    let first = keyed("3 new messages", "chat");
    let plain = entry(LONG, "no key");
    let other = keyed("build is green", "ci");
    // An empty key is no key: both stay.
    let empty = keyed("empty key", "");
    let empty_too = keyed("empty key again", "");
    for e in [&first, &plain, &other, &empty, &empty_too] {
        append_one(&*inbox, &alice, e).await;
    }
    append_one(&*inbox, &bob, &first).await;

    let newer = keyed("4 new messages", "chat");
    let newer_cursor = append_one(&*inbox, &alice, &newer).await;
    assert_eq!(
        ids(&all_pending(&*inbox, &alice).await),
        vec![plain.id, other.id, empty.id, empty_too.id, newer.id],
        "only the newest entry of a key is kept, in append order"
    );
    assert_eq!(
        ids(&all_pending(&*inbox, &bob).await),
        vec![first.id],
        "keys are per user"
    );

    // The replaced entry is gone: acking it removes nothing. A retried append of the
    // newest stores nothing twice.
    assert!(!inbox.ack(&alice, first.id).await.unwrap());
    assert_eq!(append_one(&*inbox, &alice, &newer).await, newer_cursor);

    // Once the newest is acked the key names nothing; the next one is simply stored.
    assert!(inbox.ack(&alice, newer.id).await.unwrap());
    let latest = keyed("1 new message", "chat");
    append_one(&*inbox, &alice, &latest).await;
    assert_eq!(
        ids(&all_pending(&*inbox, &alice).await),
        vec![plain.id, other.id, empty.id, empty_too.id, latest.id]
    );
}

/// Collapsing and trimming together never lose the newest entry of a key, and acks
/// keep working on what is left.
pub async fn collapse_keys_survive_trimming(f: &dyn Factory) {
    const SMALL: usize = 3;
    let inbox = f.inbox(SMALL).await;
    let alice = user("alice");
    let mut newest = None;
    for i in 0..(SMALL * 4) {
        let e = if i % 2 == 0 {
            keyed(&format!("status {i}"), "status")
        } else {
            entry(LONG, &format!("plain {i}"))
        };
        append_one(&*inbox, &alice, &e).await;
        if i % 2 == 0 {
            newest = Some(e.id);
        }
    }
    let kept = ids(&all_pending(&*inbox, &alice).await);
    assert!(kept.len() <= SMALL, "{kept:?}");
    let newest = newest.unwrap();
    assert_eq!(
        kept.iter().filter(|id| **id == newest).count(),
        1,
        "{kept:?}"
    );
    for id in kept {
        assert!(inbox.ack(&alice, id).await.unwrap());
    }
    assert!(all_pending(&*inbox, &alice).await.is_empty());
}
