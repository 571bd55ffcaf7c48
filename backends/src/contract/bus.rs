//! The [`Bus`](crate::bus::Bus) contract.
//!
//! Negative checks ("nothing arrives") never wait for silence: they publish a marker
//! afterwards and check that the marker is the next thing to arrive, which per-publisher
//! ordering makes conclusive.
//!
//! A subscription is in place on the server only some time after `subscribe` returns
//! (`flush` hands it to the server, it does not wait for the server to apply it). Within
//! one client, order makes that invisible; across clients, cases first wait until a
//! probe from the publishing client arrives ([`subscribed`]).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::{eventually, Factory, PROMPT};
use crate::bus::{Bus, Subscription};
use crate::ids::Topic;

/// What [`subscribed`] publishes; [`next`] skips it.
const PROBE: &[u8] = b"contract-probe";

/// The next message other than a probe, or a panic naming `what` after [`PROMPT`].
async fn next(sub: &mut Subscription, what: &str) -> Bytes {
    loop {
        match tokio::time::timeout(PROMPT, sub.next()).await {
            Ok(Some(payload)) if payload == PROBE => continue,
            Ok(Some(payload)) => return payload,
            Ok(None) => panic!("subscription ended while waiting for {what}"),
            Err(_) => panic!("nothing arrived within {PROMPT:?} while waiting for {what}"),
        }
    }
}

/// Wait until `sub` receives what `publisher` publishes on `subject`, i.e. until the
/// server has applied the subscription. Probes still in flight are skipped by [`next`].
async fn subscribed(publisher: &dyn Bus, sub: &mut Subscription, subject: &str) {
    let deadline = tokio::time::Instant::now() + PROMPT;
    loop {
        publisher
            .publish(subject.to_owned(), Bytes::from_static(PROBE))
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            Ok(Some(payload)) if payload == PROBE => return,
            Ok(Some(other)) => panic!("unexpected message {other:?} before the probe"),
            Ok(None) => panic!("subscription ended while probing it"),
            Err(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "subscription to {subject} not in place within {PROMPT:?}"
            ),
        }
    }
}

fn subject(f: &dyn Factory, name: &str) -> String {
    f.namespace()
        .topic_subject(&Topic::parse(&format!("contract.{name}")).unwrap())
}

/// A subscriber receives what is published to its subject, byte for byte.
pub async fn publish_then_subscribe_delivers(f: &dyn Factory) {
    let bus = f.bus().await;
    let s = subject(f, "a");
    let mut sub = bus.subscribe(s.clone()).await.unwrap();
    bus.flush().await.unwrap();
    let payload = Bytes::from_static(b"\x00hello\xff");
    bus.publish(s, payload.clone()).await.unwrap();
    assert_eq!(next(&mut sub, "the message").await, payload);
}

/// A subscriber receives what another client publishes.
pub async fn delivers_across_clients(f: &dyn Factory) {
    let (publisher, subscriber) = (f.bus().await, f.bus().await);
    let s = subject(f, "a");
    let mut sub = subscriber.subscribe(s.clone()).await.unwrap();
    subscribed(&*publisher, &mut sub, &s).await;
    publisher
        .publish(s, Bytes::from_static(b"m"))
        .await
        .unwrap();
    assert_eq!(&next(&mut sub, "the message").await[..], b"m");
}

/// Publish `tag` followed by the sequence number, `0..n`, then flush: `Ok` from publish
/// means queued in the client, and a client dropped right after may lose its queue.
async fn publish_numbered(bus: &dyn Bus, subject: &str, tag: u8, n: u32) {
    for i in 0..n {
        let mut m = vec![tag];
        m.extend_from_slice(&i.to_be_bytes());
        bus.publish(subject.to_owned(), Bytes::from(m))
            .await
            .unwrap();
    }
    bus.flush().await.unwrap();
}

/// Per publisher and subject, messages arrive in publish order.
pub async fn order_is_kept_per_publisher(f: &dyn Factory) {
    let (a, b, subscriber) = (f.bus().await, f.bus().await, f.bus().await);
    let s = subject(f, "ordered");
    let mut sub = subscriber.subscribe(s.clone()).await.unwrap();
    subscribed(&*a, &mut sub, &s).await;
    subscribed(&*b, &mut sub, &s).await;
    const N: u32 = 200;
    tokio::join!(
        publish_numbered(&*a, &s, b'a', N),
        publish_numbered(&*b, &s, b'b', N)
    );
    let (mut next_a, mut next_b) = (0u32, 0u32);
    while next_a < N || next_b < N {
        let m = next(&mut sub, "the remaining messages").await;
        let i = u32::from_be_bytes(m[1..5].try_into().unwrap());
        let expected = if m[0] == b'a' {
            &mut next_a
        } else {
            &mut next_b
        };
        assert_eq!(i, *expected, "publisher {} out of order", m[0] as char);
        *expected += 1;
    }
}

/// At-most-once: a message published while nobody is subscribed is gone.
pub async fn nothing_is_kept_without_subscribers(f: &dyn Factory) {
    let bus = f.bus().await;
    let s = subject(f, "lonely");
    bus.publish(s.clone(), Bytes::from_static(b"lost"))
        .await
        .unwrap();
    bus.flush().await.unwrap();
    let mut sub = bus.subscribe(s.clone()).await.unwrap();
    bus.flush().await.unwrap();
    bus.publish(s, Bytes::from_static(b"marker")).await.unwrap();
    assert_eq!(&next(&mut sub, "the marker").await[..], b"marker");
}

/// Every subscription of a subject receives every message.
pub async fn every_subscription_receives(f: &dyn Factory) {
    let (bus, other) = (f.bus().await, f.bus().await);
    let s = subject(f, "fan");
    let mut one = bus.subscribe(s.clone()).await.unwrap();
    let mut two = bus.subscribe(s.clone()).await.unwrap();
    let mut three = other.subscribe(s.clone()).await.unwrap();
    bus.flush().await.unwrap();
    subscribed(&*bus, &mut three, &s).await;
    bus.publish(s, Bytes::from_static(b"all")).await.unwrap();
    for sub in [&mut one, &mut two, &mut three] {
        assert_eq!(&next(sub, "the message").await[..], b"all");
    }
}

/// Subjects are isolated: a subscription receives only its own subject's messages.
pub async fn subjects_are_isolated(f: &dyn Factory) {
    let bus = f.bus().await;
    let (a, b) = (subject(f, "a"), subject(f, "b"));
    let mut sub_a = bus.subscribe(a.clone()).await.unwrap();
    let mut sub_b = bus.subscribe(b.clone()).await.unwrap();
    bus.flush().await.unwrap();
    bus.publish(a.clone(), Bytes::from_static(b"for a"))
        .await
        .unwrap();
    bus.publish(b, Bytes::from_static(b"for b")).await.unwrap();
    bus.publish(a, Bytes::from_static(b"again a"))
        .await
        .unwrap();
    assert_eq!(&next(&mut sub_b, "b's message").await[..], b"for b");
    assert_eq!(&next(&mut sub_a, "a's message").await[..], b"for a");
    assert_eq!(&next(&mut sub_a, "a's second").await[..], b"again a");
}

/// A subscription lives until dropped: dropping one stops it and leaves the others.
pub async fn dropping_a_subscription_unsubscribes_only_it(f: &dyn Factory) {
    let bus = f.bus().await;
    let s = subject(f, "drop");
    let dropped = bus.subscribe(s.clone()).await.unwrap();
    let mut kept = bus.subscribe(s.clone()).await.unwrap();
    bus.flush().await.unwrap();
    drop(dropped);
    bus.flush().await.unwrap();
    bus.publish(s.clone(), Bytes::from_static(b"after drop"))
        .await
        .unwrap();
    assert_eq!(&next(&mut kept, "the message").await[..], b"after drop");
    drop(kept);
    // Subscribing again after both were dropped starts afresh.
    let mut again = bus.subscribe(s.clone()).await.unwrap();
    bus.flush().await.unwrap();
    bus.publish(s, Bytes::from_static(b"fresh")).await.unwrap();
    assert_eq!(&next(&mut again, "the message").await[..], b"fresh");
}

/// `flush` succeeds on a healthy bus, and the client says it is connected.
pub async fn flush_and_connected_on_a_healthy_bus(f: &dyn Factory) {
    let bus = f.bus().await;
    eventually("the bus to connect", PROMPT, || async {
        bus.is_connected().then_some(())
    })
    .await;
    bus.publish(subject(f, "x"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    bus.flush().await.unwrap();
    assert_eq!(*bus.reconnected().borrow(), 0, "no reconnect happened");
}
