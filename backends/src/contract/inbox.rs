//! The [`Inbox`](crate::inbox::Inbox) contract.

use std::time::Duration;

use bytes::Bytes;

use super::{eventually, Factory};
use crate::ids::{NotificationId, UserId};
use crate::inbox::{
    now_ms, Claim, Claimant, Cursor, Fingerprint, IdempotencyKey, Inbox, NewEntry, StoredEntry,
};

/// A TTL no case outlives.
const LONG: Duration = Duration::from_secs(120);
/// A TTL cases wait out.
const SHORT: Duration = Duration::from_secs(1);
const CAPACITY: usize = 100;

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn entry(ttl: Duration, payload: &str) -> NewEntry {
    NewEntry {
        id: NotificationId::generate(),
        expires_at: now_ms() + i64::try_from(ttl.as_millis()).unwrap(),
        payload: Bytes::from(payload.to_owned()),
        collapse_key: None,
    }
}

async fn append_one(inbox: &dyn Inbox, to: &UserId, e: &NewEntry) -> Cursor {
    let appended = inbox.append(std::slice::from_ref(to), e).await.unwrap();
    assert_eq!(appended.len(), 1);
    appended.into_iter().next().unwrap().cursor
}

async fn all_pending(inbox: &dyn Inbox, of: &UserId) -> Vec<StoredEntry> {
    inbox.pending(of, None, usize::MAX).await.unwrap()
}

fn ids(entries: &[StoredEntry]) -> Vec<NotificationId> {
    entries.iter().map(|e| e.id).collect()
}

/// `append` stores one entry per user and returns each user's cursor, in the order of
/// the users; one user's cursors strictly increase in append order.
pub async fn append_returns_increasing_cursors(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut last: Vec<Option<Cursor>> = vec![None, None];
    for i in 0..20 {
        let cursors = inbox
            .append(
                &[alice.clone(), bob.clone()],
                &entry(LONG, &format!("n{i}")),
            )
            .await
            .unwrap();
        assert_eq!(cursors.len(), 2);
        for (prev, c) in last.iter_mut().zip(cursors.into_iter().map(|a| a.cursor)) {
            assert!(Cursor::parse(c.as_str()).is_some(), "cursor shape {c}");
            if let Some(p) = prev {
                assert!(c > *p, "cursor {c} after {p}");
            }
            *prev = Some(c);
        }
    }
    assert_eq!(all_pending(&*inbox, &alice).await.len(), 20);
    assert_eq!(all_pending(&*inbox, &bob).await.len(), 20);
    assert!(inbox
        .append(&[], &entry(LONG, "nobody"))
        .await
        .unwrap()
        .is_empty());
}

/// `pending` returns the stored entries oldest first, with what was appended and the
/// cursor `append` returned.
pub async fn pending_returns_entries_oldest_first(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let alice = user("alice");
    let mut appended = Vec::new();
    for i in 0..5 {
        let e = entry(LONG, &format!("payload {i}"));
        let c = append_one(&*inbox, &alice, &e).await;
        appended.push((c, e));
    }
    let pending = all_pending(&*inbox, &alice).await;
    assert_eq!(pending.len(), 5);
    for (got, (cursor, e)) in pending.iter().zip(&appended) {
        assert_eq!(&got.cursor, cursor);
        assert_eq!(got.id, e.id);
        assert_eq!(got.expires_at, e.expires_at);
        assert_eq!(got.payload, e.payload);
    }
}

/// Binary payloads come back byte for byte.
pub async fn payloads_are_binary_safe(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let alice = user("alice");
    let mut e = entry(LONG, "");
    e.payload = Bytes::from((0..=255u8).collect::<Vec<u8>>());
    append_one(&*inbox, &alice, &e).await;
    assert_eq!(all_pending(&*inbox, &alice).await[0].payload, e.payload);
}

/// `pending` after a cursor starts strictly after it.
pub async fn pending_after_a_cursor_is_exclusive(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let alice = user("alice");
    let mut cursors = Vec::new();
    let mut entries = Vec::new();
    for i in 0..5 {
        let e = entry(LONG, &format!("{i}"));
        cursors.push(append_one(&*inbox, &alice, &e).await);
        entries.push(e.id);
    }
    let after_second = inbox.pending(&alice, Some(&cursors[1]), 100).await.unwrap();
    assert_eq!(ids(&after_second), entries[2..].to_vec());
    let after_last = inbox.pending(&alice, Some(&cursors[4]), 100).await.unwrap();
    assert!(after_last.is_empty());
}

/// `pending` returns at most `limit` entries, the oldest; paging by cursor sees each
/// entry once.
pub async fn pending_respects_the_limit(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let alice = user("alice");
    let mut appended = Vec::new();
    for i in 0..7 {
        let e = entry(LONG, &format!("{i}"));
        append_one(&*inbox, &alice, &e).await;
        appended.push(e.id);
    }
    assert!(inbox.pending(&alice, None, 0).await.unwrap().is_empty());
    let first = inbox.pending(&alice, None, 3).await.unwrap();
    assert_eq!(ids(&first), appended[..3].to_vec());
    let mut seen = Vec::new();
    let mut after: Option<Cursor> = None;
    loop {
        let page = inbox.pending(&alice, after.as_ref(), 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = Some(page.last().unwrap().cursor.clone());
        seen.extend(ids(&page));
    }
    assert_eq!(seen, appended);
}

/// Inboxes are per user.
pub async fn users_have_separate_inboxes(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let (alice, bob) = (user("alice"), user("bob"));
    let e = entry(LONG, "only alice");
    append_one(&*inbox, &alice, &e).await;
    assert!(all_pending(&*inbox, &bob).await.is_empty());
    assert!(!inbox.ack(&bob, e.id).await.unwrap());
    assert_eq!(ids(&all_pending(&*inbox, &alice).await), vec![e.id]);
}

/// `ack` removes the entry for every reader of the inbox (every connection of the user)
/// and only that entry.
pub async fn ack_removes_the_entry(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let alice = user("alice");
    let (first, second) = (entry(LONG, "1"), entry(LONG, "2"));
    append_one(&*inbox, &alice, &first).await;
    append_one(&*inbox, &alice, &second).await;
    assert!(inbox.ack(&alice, first.id).await.unwrap());
    assert_eq!(ids(&all_pending(&*inbox, &alice).await), vec![second.id]);
    // Another handle on the same store (another connection or process) sees the same.
    let other = f.inbox(CAPACITY).await;
    assert_eq!(ids(&all_pending(&*other, &alice).await), vec![second.id]);
}

/// Acking twice or acking an unknown id is not an error, and removes nothing.
pub async fn ack_is_idempotent(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let alice = user("alice");
    let e = entry(LONG, "x");
    let kept = entry(LONG, "kept");
    append_one(&*inbox, &alice, &e).await;
    append_one(&*inbox, &alice, &kept).await;
    assert!(inbox.ack(&alice, e.id).await.unwrap());
    assert!(!inbox.ack(&alice, e.id).await.unwrap());
    assert!(!inbox.ack(&alice, NotificationId::generate()).await.unwrap());
    assert!(!inbox
        .ack(&user("nobody"), NotificationId::generate())
        .await
        .unwrap());
    assert_eq!(ids(&all_pending(&*inbox, &alice).await), vec![kept.id]);
}

/// An entry whose `expires_at` has passed is never returned, and does not count
/// against `limit`.
pub async fn expired_entries_are_never_returned(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let alice = user("alice");
    let short = entry(SHORT, "short");
    let long = entry(LONG, "long");
    append_one(&*inbox, &alice, &short).await;
    append_one(&*inbox, &alice, &long).await;
    assert_eq!(
        ids(&all_pending(&*inbox, &alice).await),
        vec![short.id, long.id]
    );
    // Wait until `short` has expired by the clock its `expires_at` is on.
    eventually(
        "the short entry to expire",
        Duration::from_secs(5),
        || async { (now_ms() > short.expires_at + 200).then_some(()) },
    )
    .await;
    assert_eq!(ids(&all_pending(&*inbox, &alice).await), vec![long.id]);
    assert_eq!(
        ids(&inbox.pending(&alice, None, 1).await.unwrap()),
        vec![long.id]
    );
}

/// An entry appended already expired is never returned.
pub async fn entries_appended_expired_are_never_returned(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let alice = user("alice");
    let mut dead = entry(LONG, "dead");
    dead.expires_at = now_ms() - 1_000;
    let live = entry(LONG, "live");
    append_one(&*inbox, &alice, &dead).await;
    append_one(&*inbox, &alice, &live).await;
    assert_eq!(ids(&all_pending(&*inbox, &alice).await), vec![live.id]);
}

/// An inbox keeps at most its capacity, trimming the oldest first.
pub async fn capacity_trims_the_oldest(f: &dyn Factory) {
    const SMALL: usize = 5;
    let inbox = f.inbox(SMALL).await;
    let alice = user("alice");
    let mut appended = Vec::new();
    for i in 0..(SMALL * 3 + 2) {
        let e = entry(LONG, &format!("{i}"));
        append_one(&*inbox, &alice, &e).await;
        appended.push(e.id);
        let pending = all_pending(&*inbox, &alice).await;
        assert!(
            pending.len() <= SMALL,
            "{} entries > capacity",
            pending.len()
        );
    }
    let kept = ids(&all_pending(&*inbox, &alice).await);
    assert_eq!(kept, appended[appended.len() - SMALL..].to_vec());
    // One more: the oldest is trimmed, and named.
    let e = entry(LONG, "one more");
    let more = inbox
        .append(std::slice::from_ref(&alice), &e)
        .await
        .unwrap();
    assert_eq!(more[0].dropped, vec![kept[0]]);
    let kept = ids(&all_pending(&*inbox, &alice).await);
    // Acks still work on what is left after many trims.
    for id in kept {
        assert!(inbox.ack(&alice, id).await.unwrap());
    }
    assert!(all_pending(&*inbox, &alice).await.is_empty());
}

/// Appending an id the inbox holds returns its cursor and stores nothing twice (a
/// retried append).
pub async fn append_is_idempotent_per_notification(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let alice = user("alice");
    let e = entry(LONG, "once");
    let first = append_one(&*inbox, &alice, &e).await;
    let again = append_one(&*inbox, &alice, &e).await;
    assert_eq!(first, again);
    assert_eq!(ids(&all_pending(&*inbox, &alice).await), vec![e.id]);
}

/// `append` to many users is one call.
pub async fn append_to_many_users(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let users: Vec<UserId> = (0..1500).map(|i| user(&format!("u{i}"))).collect();
    let e = entry(LONG, "fan-out");
    let cursors = inbox.append(&users, &e).await.unwrap();
    assert_eq!(cursors.len(), users.len());
    for u in [&users[0], &users[777], &users[1499]] {
        assert_eq!(ids(&all_pending(&*inbox, u).await), vec![e.id]);
    }
}

/// An idempotency key in the test scope.
fn idem(key: &str) -> IdempotencyKey {
    IdempotencyKey::new("contract", key).unwrap()
}

/// A claimant with a fresh id, for the same request as every other `claimant()`.
fn claimant() -> Claimant {
    Claimant {
        id: NotificationId::generate(),
        fingerprint: Fingerprint([1; 16]),
    }
}

/// `claim`: the first caller for a key wins; later ones learn the winner's id, as in
/// progress while its claim is pending and as existing once settled; the winner claiming
/// again (a retry) still holds it.
pub async fn claim_first_wins(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let key = idem(&format!("order-{}", f.namespace()));
    let (a, b) = (claimant(), claimant());
    assert_eq!(inbox.claim(&key, a, LONG).await.unwrap(), Claim::New);
    assert_eq!(
        inbox.claim(&key, b, LONG).await.unwrap(),
        Claim::InProgress(a.id)
    );
    // Claiming again with the holder's id is the holder retrying.
    assert_eq!(inbox.claim(&key, a, LONG).await.unwrap(), Claim::New);
    assert!(inbox.settle(&key, a, LONG).await.unwrap());
    assert_eq!(
        inbox.claim(&key, b, LONG).await.unwrap(),
        Claim::Existing(a.id)
    );
    // Other keys are independent.
    assert_eq!(
        inbox.claim(&idem("other"), b, LONG).await.unwrap(),
        Claim::New
    );
}

/// A claim is pending until settled: another id sees it `InProgress`, then `Existing`;
/// another handle on the same store sees the same.
pub async fn claim_is_pending_until_settled(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let other = f.inbox(CAPACITY).await;
    let (a, b) = (claimant(), claimant());
    assert_eq!(inbox.claim(&idem("k"), a, LONG).await.unwrap(), Claim::New);
    assert_eq!(
        other.claim(&idem("k"), b, LONG).await.unwrap(),
        Claim::InProgress(a.id)
    );
    assert!(inbox.settle(&idem("k"), a, LONG).await.unwrap());
    assert_eq!(
        other.claim(&idem("k"), b, LONG).await.unwrap(),
        Claim::Existing(a.id)
    );
    // Settling again (a retried settle) keeps it settled.
    assert!(inbox.settle(&idem("k"), a, LONG).await.unwrap());
    assert_eq!(
        other.claim(&idem("k"), b, LONG).await.unwrap(),
        Claim::Existing(a.id)
    );
}

/// `settle` needs a claim of its id: on a free key or another id's claim it reports
/// `false` and changes nothing.
pub async fn settle_changes_only_a_claim_of_its_id(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let (a, b, c) = (claimant(), claimant(), claimant());
    assert!(!inbox.settle(&idem("k"), a, LONG).await.unwrap());
    assert_eq!(inbox.claim(&idem("k"), a, LONG).await.unwrap(), Claim::New);
    assert!(!inbox.settle(&idem("k"), b, LONG).await.unwrap());
    assert_eq!(
        inbox.claim(&idem("k"), c, LONG).await.unwrap(),
        Claim::InProgress(a.id)
    );
    // `a` still holds it pending: it can still give it up.
    inbox.release(&idem("k"), a).await.unwrap();
    assert_eq!(inbox.claim(&idem("k"), c, LONG).await.unwrap(), Claim::New);
}

/// `release` frees a key that holds a pending claim of the id, and only then.
pub async fn release_frees_only_the_holders_key(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let (a, b, c) = (claimant(), claimant(), claimant());
    assert_eq!(inbox.claim(&idem("k"), a, LONG).await.unwrap(), Claim::New);
    inbox.release(&idem("k"), b).await.unwrap();
    assert_eq!(
        inbox.claim(&idem("k"), c, LONG).await.unwrap(),
        Claim::InProgress(a.id)
    );
    inbox.release(&idem("k"), a).await.unwrap();
    assert_eq!(inbox.claim(&idem("k"), b, LONG).await.unwrap(), Claim::New);
    inbox.release(&idem("never-claimed"), a).await.unwrap();
}

/// `release` never frees a settled claim: what it names has reached its users.
pub async fn release_frees_only_a_pending_claim(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let (a, b) = (claimant(), claimant());
    assert_eq!(inbox.claim(&idem("k"), a, LONG).await.unwrap(), Claim::New);
    assert!(inbox.settle(&idem("k"), a, LONG).await.unwrap());
    inbox.release(&idem("k"), a).await.unwrap();
    assert_eq!(
        inbox.claim(&idem("k"), b, LONG).await.unwrap(),
        Claim::Existing(a.id)
    );
}

/// A pending claim lasts its pending TTL: a claimer that never settles or releases
/// (it died) frees the key for another id.
pub async fn a_pending_claim_expires_at_its_ttl(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let (a, b) = (claimant(), claimant());
    assert_eq!(inbox.claim(&idem("k"), a, SHORT).await.unwrap(), Claim::New);
    assert_eq!(
        inbox.claim(&idem("k"), b, SHORT).await.unwrap(),
        Claim::InProgress(a.id)
    );
    let inbox2 = inbox.clone();
    eventually(
        "the pending claim to expire",
        Duration::from_secs(5),
        move || {
            let inbox = inbox2.clone();
            async move {
                match inbox.claim(&idem("k"), b, LONG).await.unwrap() {
                    Claim::New => Some(()),
                    Claim::InProgress(holder) => {
                        assert_eq!(holder, a.id);
                        None
                    }
                    other => panic!("a pending claim read as {other:?}"),
                }
            }
        },
    )
    .await;
    // Too late to settle: `b` holds the key now.
    assert!(!inbox.settle(&idem("k"), a, LONG).await.unwrap());
    assert_eq!(
        inbox.claim(&idem("k"), a, LONG).await.unwrap(),
        Claim::InProgress(b.id)
    );
}

/// A settled claim lasts the TTL it was settled with.
pub async fn claims_expire_after_their_ttl(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let (a, b) = (claimant(), claimant());
    assert_eq!(inbox.claim(&idem("k"), a, LONG).await.unwrap(), Claim::New);
    assert!(inbox.settle(&idem("k"), a, SHORT).await.unwrap());
    assert_eq!(
        inbox.claim(&idem("k"), b, SHORT).await.unwrap(),
        Claim::Existing(a.id)
    );
    let inbox2 = inbox.clone();
    eventually("the claim to expire", Duration::from_secs(5), move || {
        let inbox = inbox2.clone();
        async move {
            match inbox.claim(&idem("k"), b, LONG).await.unwrap() {
                Claim::New => Some(()),
                Claim::Existing(holder) => {
                    assert_eq!(holder, a.id);
                    None
                }
                other => panic!("a settled claim read as {other:?}"),
            }
        }
    })
    .await;
}

/// Claiming again with the id that holds the key is `New`, pending or settled (a
/// retried claim), and leaves the claim's phase as it was.
pub async fn retried_claim_with_the_same_id_is_new(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let (a, b) = (claimant(), claimant());
    assert_eq!(inbox.claim(&idem("k"), a, LONG).await.unwrap(), Claim::New);
    assert_eq!(inbox.claim(&idem("k"), a, LONG).await.unwrap(), Claim::New);
    assert_eq!(
        inbox.claim(&idem("k"), b, LONG).await.unwrap(),
        Claim::InProgress(a.id)
    );
    assert!(inbox.settle(&idem("k"), a, LONG).await.unwrap());
    assert_eq!(inbox.claim(&idem("k"), a, LONG).await.unwrap(), Claim::New);
    // Still settled after the retried claim.
    assert_eq!(
        inbox.claim(&idem("k"), b, LONG).await.unwrap(),
        Claim::Existing(a.id)
    );
    inbox.release(&idem("k"), a).await.unwrap();
    assert_eq!(
        inbox.claim(&idem("k"), b, LONG).await.unwrap(),
        Claim::Existing(a.id)
    );
}

/// `claim` is atomic: of concurrent claims of one key, exactly one is `New` and the
/// others see its id, in progress.
pub async fn concurrent_claims_have_one_winner(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let ids: Vec<Claimant> = (0..32).map(|_| claimant()).collect();
    let tasks: Vec<_> = ids
        .iter()
        .map(|&id| {
            let inbox = inbox.clone();
            tokio::spawn(async move { (id, inbox.claim(&idem("race"), id, LONG).await.unwrap()) })
        })
        .collect();
    let mut winners = Vec::new();
    let mut seen = Vec::new();
    for t in tasks {
        let (id, claim) = t.await.unwrap();
        match claim {
            Claim::New => winners.push(id.id),
            Claim::InProgress(holder) => seen.push(holder),
            Claim::Existing(holder) => panic!("nobody settled, yet {holder} is existing"),
            Claim::OtherRequest => panic!("every claimant sent the same request"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins");
    assert!(
        seen.iter().all(|h| *h == winners[0]),
        "losers see the winner"
    );
}

/// A key held for one request answers a claimant with another fingerprint
/// `OtherRequest`, pending or settled, and never names the holder; release and settle
/// by that claimant change nothing.
pub async fn a_claim_for_another_request_is_refused(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let a = claimant();
    let stranger = Claimant {
        id: NotificationId::generate(),
        fingerprint: Fingerprint([2; 16]),
    };
    assert_eq!(inbox.claim(&idem("k"), a, LONG).await.unwrap(), Claim::New);
    assert_eq!(
        inbox.claim(&idem("k"), stranger, LONG).await.unwrap(),
        Claim::OtherRequest
    );
    inbox.release(&idem("k"), stranger).await.unwrap();
    assert!(!inbox.settle(&idem("k"), stranger, LONG).await.unwrap());
    assert!(inbox.settle(&idem("k"), a, LONG).await.unwrap());
    assert_eq!(
        inbox.claim(&idem("k"), stranger, LONG).await.unwrap(),
        Claim::OtherRequest
    );
    // The same request still gets the first id.
    assert_eq!(
        inbox.claim(&idem("k"), claimant(), LONG).await.unwrap(),
        Claim::Existing(a.id)
    );
}

/// The same key in two scopes names two independent claims.
pub async fn scopes_keep_keys_apart(f: &dyn Factory) {
    let inbox = f.inbox(CAPACITY).await;
    let mine = IdempotencyKey::new("scope-a", "order-1").unwrap();
    let theirs = IdempotencyKey::new("scope-b", "order-1").unwrap();
    let (a, b) = (claimant(), claimant());
    assert_eq!(inbox.claim(&mine, a, LONG).await.unwrap(), Claim::New);
    assert!(inbox.settle(&mine, a, LONG).await.unwrap());
    assert_eq!(inbox.claim(&theirs, b, LONG).await.unwrap(), Claim::New);
    assert!(inbox.settle(&theirs, b, LONG).await.unwrap());
    assert_eq!(
        inbox.claim(&mine, claimant(), LONG).await.unwrap(),
        Claim::Existing(a.id)
    );
    assert_eq!(
        inbox.claim(&theirs, claimant(), LONG).await.unwrap(),
        Claim::Existing(b.id)
    );
}

mod collapse;
mod dropped;
pub use collapse::*;
pub use dropped::*;
