//! The main listener over TLS (`wss://`, HTTPS), certificate reload, and the bound on
//! connections that never finish their handshake.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::{Duration, Instant};

use futures::StreamExt;
use kurir_backends::{Backends, ConnectOptions, Namespace};
use kurir_gateway::{Config, Gateway};
use kurir_testkit::ClientToken;
use kurir_tls::test_certs::{tempdir, Leaf, TempDir, TestCa};
use kurir_tls::ALPN_HTTP1;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = kurir_gateway::config::TEST_JWT_SECRET;

struct Pki {
    ca: TestCa,
    dir: TempDir,
}

impl Pki {
    fn new() -> Self {
        Self {
            ca: TestCa::new("kurir test CA"),
            dir: tempdir().unwrap(),
        }
    }
    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
    fn install(&self, cn: &str) -> Leaf {
        let leaf = self.ca.issue(cn);
        leaf.write(&self.cert(), &self.key());
        leaf
    }
}

struct Running {
    addr: SocketAddr,
    node: kurir_backends::NodeId,
    backends: Backends,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(backends: Backends, tweak: impl FnOnce(&mut Config)) -> Running {
    let mut config = Config::for_test(backends.namespace.clone());
    tweak(&mut config);
    let gw = Gateway::bind(config, backends.clone(), None).await.unwrap();
    let (addr, node) = (gw.local_addr(), gw.node_id().clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gw.serve(async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        node,
        backends,
        _stop: tx,
    }
}

async fn real_backends() -> Backends {
    let nats = std::env::var("KURIR_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let redis =
        std::env::var("KURIR_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let opts = ConnectOptions::new(Namespace::random_for_test(), &nats, &redis);
    Backends::connect(&opts)
        .await
        .unwrap_or_else(|e| panic!("NATS {nats} / Redis {redis}: {e}"))
}

fn tls_config(pki: &Pki, tweak: impl FnOnce(&mut Config)) -> impl FnOnce(&mut Config) {
    let (cert, key) = (pki.cert(), pki.key());
    move |c: &mut Config| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
        tweak(c);
    }
}

fn token(user: &str) -> String {
    ClientToken::new(user).expires_in(60).sign(SECRET)
}

async fn tls_connect(addr: SocketAddr, ca: &TestCa) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(ca.client_config(None, &[ALPN_HTTP1]))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

type Wss = tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>;

/// A `wss://` session past its welcome, and the certificate the server showed.
async fn wss(addr: SocketAddr, ca: &TestCa, user: &str) -> (Wss, CertificateDer<'static>) {
    let tls = tls_connect(addr, ca).await.unwrap();
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let url = format!("wss://localhost:{}/ws?token={}", addr.port(), token(user));
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    (ws, cert)
}

async fn next_json(ws: &mut Wss) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// A live notification to `user`, as the dispatcher routes it to this node.
async fn notify(gw: &Running, user: &str, title: &str) {
    support::notify(&gw.backends, &gw.node, user, title).await;
}

async fn expect_notification(ws: &mut Wss, title: &str) {
    let n = next_json(ws).await;
    assert_eq!(
        (n["type"].as_str(), n["title"].as_str()),
        (Some("notification"), Some(title)),
        "{n}"
    );
}

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn wss_delivers_end_to_end_and_https_serves_health() {
    let pki = Pki::new();
    let leaf = pki.install("gateway");
    let gw = start(real_backends().await, tls_config(&pki, |_| {})).await;
    let (mut ws, cert) = wss(gw.addr, &pki.ca, "alice").await;
    assert_eq!(cert, leaf.cert_der);
    notify(&gw, "alice", "over TLS").await;
    expect_notification(&mut ws, "over TLS").await;

    let mut https = tls_connect(gw.addr, &pki.ca).await.unwrap();
    https
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    https.read_to_string(&mut answer).await.ok();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn plaintext_clients_get_nothing_from_a_tls_port() {
    let pki = Pki::new();
    pki.install("gateway");
    let gw = start(
        Backends::memory(Namespace::random_for_test()),
        tls_config(&pki, |_| {}),
    )
    .await;
    let url = format!("ws://{}/ws?token={}", gw.addr, token("alice"));
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("refused promptly");
    assert!(
        result.is_err(),
        "a plaintext upgrade on the TLS port must fail"
    );
    // And a client that does not trust the CA refuses the server.
    assert!(tls_connect(gw.addr, &TestCa::new("other")).await.is_err());
}

#[test]
fn tls_needs_both_files() {
    let mut c = Config::for_test(Namespace::random_for_test());
    c.tls_cert = Some("/nonexistent/cert.pem".into());
    assert_eq!(c.validate().unwrap_err().setting, "KURIR_TLS_KEY");
}

#[tokio::test]
async fn unreadable_certificate_files_stop_the_start() {
    let pki = Pki::new();
    let mut c = Config::for_test(Namespace::random_for_test());
    c.tls_cert = Some(pki.cert());
    c.tls_key = Some(pki.key());
    let err = Gateway::bind(c, Backends::memory(Namespace::random_for_test()), None)
        .await
        .err()
        .expect("no certificate files");
    assert!(err.to_string().contains("cert.pem"), "{err}");
}

/// Rotation: new connections get the new certificate, an open one keeps receiving.
async fn rotation(trigger: impl AsyncFnOnce(), interval_ms: u64) {
    let pki = Pki::new();
    let first = pki.install("first");
    let gw = start(
        Backends::memory(Namespace::random_for_test()),
        tls_config(&pki, |c| c.tls_reload_interval_ms = interval_ms),
    )
    .await;
    let (mut old, cert) = wss(gw.addr, &pki.ca, "alice").await;
    assert_eq!(cert, first.cert_der);

    let second = pki.install("second");
    assert_ne!(first.serial, second.serial);
    trigger().await;
    let second_der = second.cert_der.clone();
    eventually("new connections to see the new certificate", async || {
        let tls = tls_connect(gw.addr, &pki.ca).await.unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0] == second_der
    })
    .await;
    let (mut new, cert) = wss(gw.addr, &pki.ca, "alice").await;
    assert_eq!(cert, second.cert_der);
    notify(&gw, "alice", "after rotation").await;
    expect_notification(&mut old, "after rotation").await;
    expect_notification(&mut new, "after rotation").await;
}

#[tokio::test]
async fn rotated_files_are_picked_up_by_the_poll() {
    rotation(async || {}, 100).await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate() {
    rotation(
        async || {
            let status = std::process::Command::new("kill")
                .args(["-HUP", &std::process::id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        },
        3_600_000,
    )
    .await;
}

/// Whether the server closed `s` (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(within, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// `first_bytes` is what each hostile client sends before going silent.
async fn hostile_clients_are_bounded(tls: bool, first_bytes: &'static [u8]) {
    let pki = Pki::new();
    pki.install("gateway");
    let limits = |c: &mut Config| {
        c.max_pending_handshakes = 4;
        c.handshake_timeout_ms = 1_500;
    };
    let backends = Backends::memory(Namespace::random_for_test());
    let gw = if tls {
        start(backends, tls_config(&pki, limits)).await
    } else {
        start(backends, limits).await
    };
    let opened = Instant::now();
    let mut hostile = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(first_bytes).await.unwrap();
        hostile.push(s);
    }
    // Every place is taken: the next connections are closed at once.
    for _ in 0..3 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        assert!(
            closed_within(&mut s, Duration::from_millis(700)).await,
            "refused at once"
        );
    }
    // Those in their handshake are closed at its deadline, not before.
    if opened.elapsed() < Duration::from_millis(1_200) {
        assert!(
            !closed_within(&mut hostile[0], Duration::from_millis(100)).await,
            "held until the deadline"
        );
    }
    for s in &mut hostile {
        assert!(
            closed_within(s, Duration::from_secs(4)).await,
            "dropped after the handshake timeout"
        );
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(1_400),
        "{:?}",
        opened.elapsed()
    );
    // With them gone, a normal client connects.
    if tls {
        let (_ws, _) = wss(gw.addr, &pki.ca, "alice").await;
    } else {
        let url = format!("ws://{}/ws?token={}", gw.addr, token("alice"));
        tokio_tungstenite::connect_async(url).await.unwrap();
    }
}

#[tokio::test]
async fn silent_tls_clients_are_bounded_and_dropped() {
    hostile_clients_are_bounded(true, b"").await;
}

#[tokio::test]
async fn slow_request_heads_are_bounded_and_dropped() {
    hostile_clients_are_bounded(false, b"GET /ws HTTP/1.1\r\nHost: x\r\n").await;
}
