//! What the contract suites cannot say: how the NATS/Redis implementations behave when
//! the servers are down or come back, and the Redis data layout they promise (TTLs,
//! bounded index, lazy pruning). Outages are staged with an in-process TCP proxy in
//! front of the shared servers, never by touching the servers themselves.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::prelude::{HashesInterface, KeysInterface, StreamsInterface};
use futures::StreamExt;
use kurir_backends::contract::Factory;
use kurir_backends::inbox::{Claimant, Fingerprint, IdempotencyKey, NewEntry};
use kurir_backends::presence::{Beat, Lease};
use kurir_backends::{
    BackendError, Backends, ConnId, ConnectOptions, NodeId, NotificationId, UserId,
};
use kurir_testkit::eventually;
use support::{closed_port, nats_url, redis_url, socket_addr, Proxy, ServicesFactory};

/// How fast a call must fail while its server is down.
const FAIL_FAST: Duration = Duration::from_secs(3);

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn node(s: &str) -> NodeId {
    NodeId::parse(s).unwrap()
}

fn entry(ttl: Duration) -> NewEntry {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    NewEntry {
        id: NotificationId::generate(),
        expires_at: now + ttl.as_millis() as i64,
        payload: Bytes::from_static(b"p"),
        collapse_key: None,
    }
}

/// Assert `call` fails with a transient error within [`FAIL_FAST`].
async fn fails_fast<T: std::fmt::Debug>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, BackendError>>,
) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(FAIL_FAST * 2, call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung while its server was down"));
    let error = outcome.expect_err(what);
    assert!(error.is_transient(), "{what}: {error} should be transient");
    assert!(
        started.elapsed() < FAIL_FAST,
        "{what} took {:?} to fail",
        started.elapsed()
    );
}

#[tokio::test]
async fn starts_without_redis_and_calls_fail_fast() {
    let f = ServicesFactory::new().await;
    let mut opts = f.options();
    opts.redis_url = format!("redis://127.0.0.1:{}", closed_port()).into();
    let started = Instant::now();
    let backends = Backends::connect(&opts)
        .await
        .expect("starts without Redis");
    assert!(
        started.elapsed() < FAIL_FAST,
        "start took {:?}",
        started.elapsed()
    );
    let (alice, gw) = (user("alice"), Lease::new(node("gw-1")));
    fails_fast(
        "lookup",
        backends.presence.lookup(std::slice::from_ref(&alice)),
    )
    .await;
    fails_fast("add", backends.presence.add(&gw, &alice, ConnId(1))).await;
    fails_fast("beat", backends.presence.beat(&gw, Duration::from_secs(5))).await;
    fails_fast(
        "append",
        backends.inbox.append(
            std::slice::from_ref(&alice),
            &entry(Duration::from_secs(60)),
        ),
    )
    .await;
    fails_fast("pending", backends.inbox.pending(&alice, None, 10)).await;
    fails_fast(
        "ack",
        backends.inbox.ack(&alice, NotificationId::generate()),
    )
    .await;
    fails_fast(
        "claim",
        backends.inbox.claim(
            &IdempotencyKey::new("scope", "k").unwrap(),
            Claimant {
                id: NotificationId::generate(),
                fingerprint: Fingerprint([0; 16]),
            },
            Duration::from_secs(5),
        ),
    )
    .await;
    // The bus is unaffected.
    assert!(backends.bus.is_connected());
}

#[tokio::test]
async fn starts_without_nats_and_publish_fails_fast() {
    let f = ServicesFactory::new().await;
    let mut opts = f.options();
    opts.nats_url = format!("nats://127.0.0.1:{}", closed_port()).into();
    let started = Instant::now();
    let backends = Backends::connect(&opts).await.expect("starts without NATS");
    assert!(
        started.elapsed() < FAIL_FAST,
        "start took {:?}",
        started.elapsed()
    );
    assert!(!backends.bus.is_connected());
    let subject = backends.namespace.broadcast_subject();
    fails_fast(
        "publish",
        backends
            .bus
            .publish(subject.clone(), Bytes::from_static(b"x")),
    )
    .await;
    fails_fast("flush", backends.bus.flush()).await;
    // Subscribing is accepted: the client subscribes once it connects.
    let _sub = backends
        .bus
        .subscribe(subject)
        .await
        .expect("subscribe while down");
    // Redis is unaffected.
    backends.presence.lookup(&[user("alice")]).await.unwrap();
    f.cleanup().await;
}

#[tokio::test]
async fn malformed_urls_are_invalid_not_transient() {
    let ns = kurir_backends::Namespace::random_for_test();
    for (nats, redis) in [
        ("nats://127.0.0.1:4222", "not a url"),
        ("nats://127.0.0.1:4222", "redis://:99999"),
        ("", "redis://127.0.0.1:6379"),
    ] {
        let opts = ConnectOptions::new(ns.clone(), nats, redis);
        let error = Backends::connect(&opts)
            .await
            .err()
            .unwrap_or_else(|| panic!("{nats} {redis} accepted"));
        assert!(matches!(error, BackendError::Invalid { .. }), "{error}");
        assert!(!error.is_transient());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_calls_recover_after_an_outage() {
    let f = ServicesFactory::new().await;
    let proxy = Proxy::start(socket_addr(&redis_url()).await).await.unwrap();
    let mut opts = f.options();
    opts.redis_url = format!("redis://127.0.0.1:{}", proxy.port).into();
    let backends = Backends::connect(&opts).await.unwrap();
    let (alice, gw) = (user("alice"), Lease::new(node("gw-1")));
    backends
        .presence
        .beat(&gw, Duration::from_secs(60))
        .await
        .unwrap();
    backends.presence.add(&gw, &alice, ConnId(1)).await.unwrap();

    proxy.cut();
    eventually(FAIL_FAST, "calls to fail during the outage", || async {
        backends
            .presence
            .lookup(std::slice::from_ref(&alice))
            .await
            .err()
    })
    .await;
    fails_fast(
        "lookup during the outage",
        backends.presence.lookup(std::slice::from_ref(&alice)),
    )
    .await;

    proxy.restore();
    let found = eventually(
        Duration::from_secs(15),
        "calls to succeed again",
        || async {
            backends
                .presence
                .lookup(std::slice::from_ref(&alice))
                .await
                .ok()
        },
    )
    .await;
    assert!(
        found[0].online(),
        "data written before the outage is still there"
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_reconnects_resubscribes_and_counts_it() {
    let f = ServicesFactory::new().await;
    let proxy = Proxy::start(socket_addr(&nats_url()).await).await.unwrap();
    let mut opts = f.options();
    opts.nats_url = format!("nats://127.0.0.1:{}", proxy.port).into();
    let behind_proxy = Backends::connect(&opts).await.unwrap();
    let direct = Backends::connect(&f.options()).await.unwrap();
    let bus = behind_proxy.bus.clone();
    let subject = f.namespace().broadcast_subject();
    let mut sub = bus.subscribe(subject.clone()).await.unwrap();
    let mut reconnected = bus.reconnected();
    assert_eq!(*reconnected.borrow_and_update(), 0);
    assert!(bus.is_connected());

    proxy.cut();
    eventually(
        Duration::from_secs(30),
        "the client to notice the outage",
        || async { (!bus.is_connected()).then_some(()) },
    )
    .await;
    fails_fast(
        "publish during the outage",
        bus.publish(subject.clone(), Bytes::from_static(b"x")),
    )
    .await;

    proxy.restore();
    tokio::time::timeout(Duration::from_secs(15), reconnected.changed())
        .await
        .expect("reconnect within 15 s")
        .unwrap();
    assert_eq!(*reconnected.borrow(), 1);
    assert!(bus.is_connected());
    // The subscription was re-established: messages from another client arrive again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        direct
            .bus
            .publish(subject.clone(), Bytes::from_static(b"after"))
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            Ok(Some(got)) => break got,
            Ok(None) => panic!("the subscription ended across the reconnect"),
            Err(_) => assert!(Instant::now() < deadline, "not resubscribed within 10 s"),
        }
    };
    assert_eq!(&got[..], b"after");
    f.cleanup().await;
}

#[tokio::test]
async fn redis_presence_keys_carry_their_ttls_and_dead_entries_are_pruned() {
    let f = ServicesFactory::new().await;
    let mut opts = f.options();
    opts.presence_ttl = Duration::from_secs(300);
    let backends = Backends::connect(&opts).await.unwrap();
    let ns = f.namespace().clone();
    let alice = user("alice");
    let (live, dying) = (Lease::new(node("gw-live")), Lease::new(node("gw-dying")));
    let beat = backends
        .presence
        .beat(&live, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(beat, Beat::Lapsed);
    backends
        .presence
        .beat(&dying, Duration::from_secs(1))
        .await
        .unwrap();
    backends
        .presence
        .add(&live, &alice, ConnId(1))
        .await
        .unwrap();
    backends
        .presence
        .add(&dying, &alice, ConnId(2))
        .await
        .unwrap();
    // An older release's entry (no epoch): ignored, and never pruned.
    let legacy = ConnId(3).to_string();
    let redis = f.redis();
    let _: () = redis
        .hset(ns.presence_key(&alice), (legacy.as_str(), "gw-live"))
        .await
        .unwrap();

    let entry_ttl: i64 = redis.pttl(ns.presence_key(&alice)).await.unwrap();
    assert!(
        (290_000..=300_000).contains(&entry_ttl),
        "entry TTL {entry_ttl}"
    );
    let node_ttl: i64 = redis.pttl(ns.node_key(&live.node)).await.unwrap();
    assert!(
        (50_000..=60_000).contains(&node_ttl),
        "liveness TTL {node_ttl}"
    );
    let mark: String = redis.get(ns.node_key(&live.node)).await.unwrap();
    assert_eq!(mark, live.epoch.to_string());
    assert_eq!(mark.len(), 16);
    let fields: std::collections::HashMap<String, String> =
        redis.hgetall(ns.presence_key(&alice)).await.unwrap();
    assert_eq!(
        fields.get(&ConnId(1).to_string()),
        Some(&format!("gw-live/{}", live.epoch))
    );
    let found = backends
        .presence
        .lookup(std::slice::from_ref(&alice))
        .await
        .unwrap();
    assert_eq!(found[0].connections.len(), 2, "the legacy entry is ignored");

    // Once the dying node's mark is gone, a lookup prunes its entry from the hash.
    eventually(
        Duration::from_secs(10),
        "the dead node's entry to be pruned",
        || async {
            backends
                .presence
                .lookup(std::slice::from_ref(&alice))
                .await
                .unwrap();
            let mut fields: Vec<String> = redis.hkeys(ns.presence_key(&alice)).await.unwrap();
            fields.sort();
            (fields == vec![ConnId(1).to_string(), legacy.clone()]).then_some(())
        },
    )
    .await;
    f.cleanup().await;
}

#[tokio::test]
async fn redis_inbox_lives_as_long_as_its_longest_entry() {
    let f = ServicesFactory::new().await;
    let backends = Backends::connect(&f.options()).await.unwrap();
    let ns = f.namespace().clone();
    let alice = user("alice");
    let redis = f.redis();
    let ttls = || async {
        let stream: i64 = redis.pttl(ns.inbox_key(&alice)).await.unwrap();
        let index: i64 = redis.pttl(ns.inbox_index_key(&alice)).await.unwrap();
        (stream, index)
    };
    backends
        .inbox
        .append(
            std::slice::from_ref(&alice),
            &entry(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let (stream, index) = ttls().await;
    // The entry's TTL and the grace in which its expiry is told from an ack.
    let grace = i64::try_from(kurir_backends::inbox::EXPIRED_GRACE.as_millis()).unwrap();
    let expected = 55_000 + grace..=60_000 + grace;
    assert!(expected.contains(&stream), "stream TTL {stream}");
    assert!(expected.contains(&index), "index TTL {index}");
    // A shorter entry does not shorten the inbox's life; a longer one extends it.
    backends
        .inbox
        .append(std::slice::from_ref(&alice), &entry(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(ttls().await.0 > 50_000 + grace);
    backends
        .inbox
        .append(
            std::slice::from_ref(&alice),
            &entry(Duration::from_secs(120)),
        )
        .await
        .unwrap();
    let (stream, index) = ttls().await;
    let expected = 115_000 + grace..=120_000 + grace;
    assert!(expected.contains(&stream), "stream TTL {stream}");
    assert!(expected.contains(&index), "index TTL {index}");
    f.cleanup().await;
}

#[tokio::test]
async fn redis_inbox_stream_and_index_stay_bounded() {
    let f = ServicesFactory::new().await;
    let mut opts = f.options();
    opts.inbox_capacity = 5;
    let backends = Backends::connect(&opts).await.unwrap();
    let ns = f.namespace().clone();
    let alice = user("alice");
    for _ in 0..40 {
        backends
            .inbox
            .append(
                std::slice::from_ref(&alice),
                &entry(Duration::from_secs(60)),
            )
            .await
            .unwrap();
        let index: u64 = f.redis().hlen(ns.inbox_index_key(&alice)).await.unwrap();
        assert!(index <= 10, "index holds {index} ids for a capacity of 5");
    }
    let stream: u64 = f.redis().xlen(ns.inbox_key(&alice)).await.unwrap();
    assert_eq!(stream, 5);
    f.cleanup().await;
}

#[tokio::test]
async fn processes_of_a_namespace_must_agree_on_the_inbox_capacity() {
    let f = ServicesFactory::new().await;
    let with_capacity = |capacity| {
        let mut opts = f.options();
        opts.inbox_capacity = capacity;
        opts
    };
    // The first process records its capacity; the same value is welcome again.
    Backends::connect(&with_capacity(10)).await.unwrap();
    Backends::connect(&with_capacity(10)).await.unwrap();
    let stored: Option<String> = f
        .redis()
        .hget(
            format!("kurir:{}:settings", f.options().namespace),
            "inbox_capacity",
        )
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some("10"));
    // Another value is refused with a message that names the setting and the way out.
    let refused = Backends::connect(&with_capacity(20)).await.err().unwrap();
    assert!(
        matches!(refused, BackendError::Invalid { .. }),
        "{refused:?}"
    );
    let message = refused.to_string();
    assert!(
        message.contains("KURIR_INBOX_CAPACITY is 20 here but 10"),
        "{message}"
    );
    assert!(message.contains("HDEL"), "{message}");
    // Memory backends share nothing, so they have nothing to agree on.
    let _ = Backends::memory(f.options().namespace.clone());
    f.cleanup().await;
}
