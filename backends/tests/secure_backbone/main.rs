//! The backbone hops with authentication and TLS, against real servers that require
//! them: a private `nats-server` (TLS with client certificates, a user with a password
//! full of reserved characters; another with an nkey user) and a private `redis-server`
//! (TLS only, `--port 0`, client certificates required, the default user off and an ACL
//! user limited to `~kurir:*` and the commands Kurir runs). Certificates come from
//! `kurir-testkit`'s test PKI in a temporary directory; servers listen on free loopback
//! ports and are killed by PID on drop.
//!
//! The bus, presence and inbox contracts pass through the secured connections; a wrong
//! password, a missing TLS setting or a wrong CA fails with a message that names the
//! cause and never carries the password.

#[macro_use]
#[path = "../support/mod.rs"]
mod support;
mod servers;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kurir_backends::bus::Bus;
use kurir_backends::contract;
use kurir_backends::{BackboneSecurity, Backends, ConnectOptions, Namespace, UserId};
use kurir_testkit::certs::tempdir;
use kurir_testkit::eventually;

use servers::*;

/// The ACL rules of Kurir's Redis users (gateway and dispatcher alike): its keys only, no
/// channels, and only the commands it runs, directly or from its scripts. The Kubernetes
/// manifests use this same line (tests/ops/validate_manifests.py checks they agree).
pub const KURIR_REDIS_ACL: &str = "~kurir:* resetchannels -@all +ping +hello +auth +select +client|setname +client|id +cluster|slots +cluster|shards +info +eval +evalsha +script|load +get +set +del +unlink +hget +hset +hdel +hgetall +hlen +pexpire +pttl +xadd +xdel +xrange +xlen +exists +hexists +hincrby +zadd +zrem +zcard +zrange +zrevrange +zrangebyscore";

/// A password with every character a URL parser trips on.
pub const PASSWORD: &str = "p/ss@w:rd?#1";
/// The same, percent-encoded as a URL should carry it.
pub const PASSWORD_ENCODED: &str = "p%2Fss%40w%3Ard%3F%231";

macro_rules! through {
    ($pki:ident, $nats:ident, $redis:ident, $suite:ident, [$($case:ident),* $(,)?]) => {
        $(
            let ns = Namespace::random_for_test();
            let factory = SecureFactory {
                opts: secure_options(ns.clone(), &$pki, &$nats, &$redis),
                ns,
            };
            contract::$suite::$case(&factory).await;
        )*
    };
}

/// Every bus, presence and inbox contract case through TLS with client certificates,
/// a password and (on Redis) the restricted ACL user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contracts_pass_through_tls_and_authentication() {
    if !servers_installed() {
        return;
    }
    let pki = Pki::new();
    let nats = start_secure_nats(&pki).await;
    let redis = start_secure_redis(&pki).await;
    bus_cases!(through!(pki, nats, redis, bus,));
    presence_cases!(through!(pki, nats, redis, presence,));
    inbox_cases!(through!(pki, nats, redis, inbox,));
    devices_cases!(through!(pki, nats, redis, devices,));
    due_cases!(through!(pki, nats, redis, due,));
}

/// The ACL user cannot touch keys outside `kurir:*` nor run what Kurir does not need.
#[tokio::test]
async fn the_redis_acl_confines_kurir_to_its_keys_and_commands() {
    if !servers_installed() {
        return;
    }
    let pki = Pki::new();
    let redis = start_secure_redis(&pki).await;
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["--tls", "-p", &redis.port.to_string()])
            .arg("--cacert")
            .arg(pki.path("ca.pem"))
            .arg("--cert")
            .arg(pki.path("client.pem"))
            .arg("--key")
            .arg(pki.path("client.key"))
            .args(["--user", "kurir", "--pass", PASSWORD, "--no-auth-warning"])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    assert!(cli(&["SET", "kurir:t:x", "1"]).contains("OK"));
    for denied in [
        vec!["SET", "other:x", "1"],
        vec!["FLUSHALL"],
        vec!["CONFIG", "GET", "requirepass"],
        vec!["KEYS", "*"],
        vec!["ACL", "LIST"],
    ] {
        let reply = cli(&denied);
        assert!(reply.contains("NOPERM"), "{denied:?} was allowed: {reply}");
    }
}

/// An nkey user: KURIR_NATS_CREDS names a file holding only the seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nkey_seed_file_authenticates_to_nats() {
    if !servers_installed() {
        return;
    }
    let user = nkeys::KeyPair::new_user();
    let nats = start_nats(&format!(
        "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
        user.public_key()
    ))
    .await;
    let dir = tempdir().unwrap();
    let seed_file = dir.path().join("kurir.nk");
    std::fs::write(&seed_file, user.seed().unwrap()).unwrap();
    let url = format!("nats://127.0.0.1:{}", nats.port);

    let ns = Namespace::random_for_test();
    let mut opts = ConnectOptions::new(ns.clone(), &url, &support::redis_url());
    opts.security.nats_creds = Some(seed_file);
    let factory = SecureFactory { ns, opts };
    contract::bus::publish_then_subscribe_delivers(&factory).await;
    contract::bus::delivers_across_clients(&factory).await;

    // Without the seed the server refuses, and the error says why.
    let opts = ConnectOptions::new(Namespace::random_for_test(), &url, &support::redis_url());
    let bus = Backends::connect(&opts).await.unwrap().bus;
    let error = publish_error(bus.as_ref()).await;
    assert!(error.to_lowercase().contains("authoriz"), "{error}");
}

/// The whole chain of a failed publish, after the first attempt had time to end.
async fn publish_error(bus: &dyn Bus) -> String {
    eventually(
        Duration::from_secs(10),
        "a failed connection attempt",
        || async {
            match bus.publish("kurir.t.x".into(), "x".into()).await {
                Ok(()) => panic!("published through a connection that should have been refused"),
                Err(e) => {
                    let chain = error_chain(&e);
                    chain.contains("last attempt").then_some(chain)
                }
            }
        },
    )
    .await
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Logs written while `f` runs on this (current-thread) runtime.
#[derive(Clone, Default)]
struct Captured(Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

/// A refused client: its bus or store is unavailable, the error and the logs name the
/// cause, and neither carries the password (raw or encoded).
async fn refused(opts: ConnectOptions, hop: &str, cause: &[&str]) {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let backends = Backends::connect(&opts)
        .await
        .expect("options are well-formed");
    let error = if hop == "nats" {
        publish_error(backends.bus.as_ref()).await
    } else {
        let user = UserId::parse("u1").unwrap();
        // Let a few attempts fail so their log lines are written.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let e = backends.presence.lookup(&[user]).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        let chain = error_chain(&e);
        assert!(
            chain.contains("last attempt"),
            "the error does not say why: {chain}"
        );
        chain
    };
    eprintln!("{hop} refused as expected: {error}");
    let logs = logs.text();
    let all = format!("{error}\n{logs}");
    for secret in [PASSWORD, PASSWORD_ENCODED, "ss@w:rd", "ss%40w"] {
        assert!(!all.contains(secret), "the password leaked:\n{all}");
    }
    let lower = all.to_lowercase();
    assert!(
        cause.iter().any(|c| lower.contains(c)),
        "no cause among {cause:?} in:\n{all}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn wrong_credentials_or_tls_settings_fail_clearly_without_the_password() {
    if !servers_installed() {
        return;
    }
    let pki = Pki::new();
    let nats = start_secure_nats(&pki).await;
    let redis = start_secure_redis(&pki).await;
    let ns = Namespace::random_for_test;
    let base = |ns| secure_options(ns, &pki, &nats, &redis);

    // Wrong password.
    let mut o = base(ns());
    o.nats_url = format!("tls://kurir:{PASSWORD}x@127.0.0.1:{}", nats.port).into();
    refused(o, "nats", &["authorization"]).await;
    let mut o = base(ns());
    o.redis_url = format!(
        "rediss://kurir:{PASSWORD_ENCODED}x@127.0.0.1:{}",
        redis.port
    )
    .into();
    refused(o, "redis", &["wrongpass", "invalid username-password"]).await;

    // A CA that did not sign the servers' certificates.
    let mut o = base(ns());
    o.security = security(&pki, "other-ca.pem");
    refused(o.clone(), "nats", &["certificate", "unknownissuer", "tls"]).await;
    refused(o, "redis", &["certificate", "unknownissuer", "tls"]).await;

    // No TLS settings: the system roots do not know the test CA, and plain TCP to the
    // Redis TLS port is not Redis.
    let mut o = base(ns());
    o.security = BackboneSecurity::default();
    o.nats_url = format!("nats://kurir:{PASSWORD}@127.0.0.1:{}", nats.port).into();
    refused(o.clone(), "nats", &["certificate", "unknownissuer", "tls"]).await;
    o.redis_url = format!("redis://kurir:{PASSWORD_ENCODED}@127.0.0.1:{}", redis.port).into();
    refused(o, "redis", &["redis connection failed", "not connected"]).await;
}

/// A CA for Redis on a plain `redis://` URL is refused at once rather than ignored
/// (which would send the password in clear).
#[tokio::test]
async fn tls_files_on_a_plain_redis_url_are_refused() {
    if !servers_installed() {
        return;
    }
    let pki = Pki::new();
    let mut opts = ConnectOptions::new(
        Namespace::random_for_test(),
        "nats://127.0.0.1:4222",
        &format!("redis://kurir:{PASSWORD_ENCODED}@127.0.0.1:6379"),
    );
    opts.security.redis_ca = Some(pki.path("ca.pem"));
    let e = Backends::connect(&opts)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("rediss://"), "{e}");
    assert!(!e.contains("ss%40w") && !e.contains("ss@w"), "{e}");
}
