//! Entries the capacity pushes out: `append` names them, so the dispatcher can report
//! `DROPPED` receipts.

use super::*;

/// `append` names the unexpired entries the capacity pushed out, oldest first, and only
/// those: not the ones acked before, nor the ones already expired.
pub async fn append_names_the_entries_the_cap_dropped(f: &dyn Factory) {
    let inbox = f.inbox(3).await;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut stored = Vec::new();
    for i in 0..3 {
        let e = entry(LONG, &format!("{i}"));
        let appended = inbox
            .append(&[alice.clone(), bob.clone()], &e)
            .await
            .unwrap();
        assert!(appended.iter().all(|a| a.dropped.is_empty()));
        stored.push(e.id);
    }
    // Bob acks his oldest: his inbox has room, alice's does not.
    assert!(inbox.ack(&bob, stored[0]).await.unwrap());
    let e = entry(LONG, "3");
    let appended = inbox
        .append(&[alice.clone(), bob.clone()], &e)
        .await
        .unwrap();
    assert_eq!(appended[0].dropped, vec![stored[0]]);
    assert!(appended[1].dropped.is_empty(), "{:?}", appended[1]);
    // A retried append stores nothing, so it drops nothing.
    let again = inbox
        .append(std::slice::from_ref(&alice), &e)
        .await
        .unwrap();
    assert!(again[0].dropped.is_empty());
    // An entry already expired when trimmed was over, not pushed out.
    let carol = user("carol");
    for _ in 0..3 {
        let mut over = entry(LONG, "over");
        over.expires_at = now_ms() - 1;
        inbox
            .append(std::slice::from_ref(&carol), &over)
            .await
            .unwrap();
    }
    let fresh = inbox
        .append(std::slice::from_ref(&carol), &entry(LONG, "fresh"))
        .await
        .unwrap();
    assert!(fresh[0].dropped.is_empty(), "{:?}", fresh[0]);
}
