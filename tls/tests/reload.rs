//! Loading, reloading (file change and SIGHUP), mTLS and the handshake bounds, against
//! real TLS handshakes on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kurir_tls::incoming::{tls_incoming, HandshakeLimits};
use kurir_tls::test_certs::{tempdir, Leaf, TempDir, TestCa};
use kurir_tls::{ServerCerts, TlsError, TlsFiles, ALPN_H2};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

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
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.path("cert.pem"),
            key: self.path("key.pem"),
            client_ca: None,
        }
    }
    fn install(&self, cn: &str) -> Leaf {
        let leaf = self.ca.issue(cn);
        leaf.write(&self.path("cert.pem"), &self.path("key.pem"));
        leaf
    }
}

/// Serve `certs` on loopback: finished connections are kept open until the test ends.
async fn serve(
    certs: Arc<ServerCerts>,
    limits: HandshakeLimits,
) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let mut incoming = tls_incoming(listener, certs, limits, "test", stop.clone());
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Some(Ok(tls)) = incoming.next().await {
            open.push(tls);
        }
    });
    (addr, stop)
}

/// The leaf certificate the server presents, or the handshake error.
async fn served_cert(
    addr: SocketAddr,
    ca: &TestCa,
    identity: Option<&Leaf>,
) -> std::io::Result<CertificateDer<'static>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = TlsConnector::from(ca.client_config(identity, &[ALPN_H2]));
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    // TLS 1.3: a refused client certificate shows on the first read.
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(300), tls.read(&mut byte)).await {
        Ok(Err(e)) => return Err(e),
        Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
        _ => {}
    }
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].clone())
}

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn serves_the_loaded_pair() {
    let pki = Pki::new();
    let leaf = pki.install("first");
    let certs = ServerCerts::load(pki.files(), &[ALPN_H2], "test").unwrap();
    let (addr, _stop) = serve(certs, HandshakeLimits::default()).await;
    assert_eq!(
        served_cert(addr, &pki.ca, None).await.unwrap(),
        leaf.cert_der
    );
    let other = TestCa::new("someone else");
    assert!(
        served_cert(addr, &other, None).await.is_err(),
        "a client trusting another CA refuses the server"
    );
}

#[test]
fn bad_files_are_refused_naming_the_file() {
    let pki = Pki::new();
    let alpn: &[&[u8]] = &[ALPN_H2];
    // Missing.
    let err = ServerCerts::load(pki.files(), alpn, "test").unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err}");
    assert!(err.to_string().contains("cert.pem"), "{err}");
    // A key that is not the certificate's.
    let a = pki.ca.issue("a");
    let b = pki.ca.issue("b");
    std::fs::write(pki.path("cert.pem"), &a.cert_pem).unwrap();
    std::fs::write(pki.path("key.pem"), &b.key_pem).unwrap();
    let err = ServerCerts::load(pki.files(), alpn, "test").unwrap_err();
    assert!(matches!(err, TlsError::Config(_)), "{err}");
    // No key in the key file, no certificate in the certificate file.
    std::fs::write(pki.path("key.pem"), &a.cert_pem).unwrap();
    let err = ServerCerts::load(pki.files(), alpn, "test").unwrap_err();
    assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
    std::fs::write(pki.path("cert.pem"), "not PEM at all\n").unwrap();
    let err = ServerCerts::load(pki.files(), alpn, "test").unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    // The key never shows in an error.
    std::fs::write(pki.path("cert.pem"), &a.cert_pem).unwrap();
    std::fs::write(pki.path("key.pem"), a.key_pem.replace('A', "!")).unwrap();
    let err = ServerCerts::load(pki.files(), alpn, "test").unwrap_err();
    let body: String = a.key_pem.lines().nth(1).unwrap().to_owned();
    assert!(!err.to_string().contains(&body[..20]), "{err}");
}

#[tokio::test]
async fn changed_files_are_picked_up_and_bad_ones_keep_the_old_pair() {
    let pki = Pki::new();
    pki.install("first");
    let certs = ServerCerts::load(pki.files(), &[ALPN_H2], "test").unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(
        certs
            .watch(Duration::from_millis(100), stop.clone())
            .unwrap(),
    );
    let (addr, _s) = serve(certs.clone(), HandshakeLimits::default()).await;

    let second = pki.install("second");
    eventually("the second certificate", async || {
        served_cert(addr, &pki.ca, None).await.ok() == Some(second.cert_der.clone())
    })
    .await;

    // A half-rotated pair (new certificate, old key) is refused; the second stays.
    let third = pki.ca.issue("third");
    std::fs::write(pki.path("cert.pem"), &third.cert_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        served_cert(addr, &pki.ca, None).await.unwrap(),
        second.cert_der
    );
    // The key arrives: the pair is whole again and taken.
    std::fs::write(pki.path("key.pem"), &third.key_pem).unwrap();
    eventually("the third certificate", async || {
        served_cert(addr, &pki.ca, None).await.ok() == Some(third.cert_der.clone())
    })
    .await;
    stop.cancel();
}

#[tokio::test]
async fn sighup_reloads_without_waiting_for_the_poll() {
    let pki = Pki::new();
    pki.install("first");
    let certs = ServerCerts::load(pki.files(), &[ALPN_H2], "test").unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(
        certs
            .watch(Duration::from_secs(3600), stop.clone())
            .unwrap(),
    );
    let (addr, _s) = serve(certs.clone(), HandshakeLimits::default()).await;
    let second = pki.install("second");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("the certificate after SIGHUP", async || {
        served_cert(addr, &pki.ca, None).await.ok() == Some(second.cert_der.clone())
    })
    .await;
    stop.cancel();
}

#[tokio::test]
async fn client_certificates_must_come_from_the_client_ca() {
    let pki = Pki::new();
    pki.install("server");
    let clients = TestCa::new("clients");
    clients.write(&pki.path("clients.pem"));
    let files = TlsFiles {
        client_ca: Some(pki.path("clients.pem")),
        ..pki.files()
    };
    let certs = ServerCerts::load(files, &[ALPN_H2], "test").unwrap();
    assert!(certs.requires_client_certs());
    let (addr, _s) = serve(certs, HandshakeLimits::default()).await;
    assert!(
        served_cert(addr, &pki.ca, None).await.is_err(),
        "no client certificate"
    );
    let stranger = TestCa::new("stranger").issue("service");
    assert!(
        served_cert(addr, &pki.ca, Some(&stranger)).await.is_err(),
        "a certificate from another CA"
    );
    let good = clients.issue("service");
    served_cert(addr, &pki.ca, Some(&good)).await.unwrap();
}

#[tokio::test]
async fn stalled_handshakes_are_bounded_in_number_and_time() {
    let pki = Pki::new();
    pki.install("server");
    let certs = ServerCerts::load(pki.files(), &[ALPN_H2], "test").unwrap();
    let limits = HandshakeLimits {
        max_pending: 3,
        timeout: Duration::from_millis(800),
    };
    let (addr, _s) = serve(certs, limits).await;
    // Three clients connect and say nothing: they hold every permit.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(TcpStream::connect(addr).await.unwrap());
    }
    // A fourth is closed at once.
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_millis(500), fourth.read(&mut buf))
        .await
        .expect("refused at once, not held");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // The stalled ones are closed at the deadline.
    for s in &mut stalled {
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("closed after the handshake timeout");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    assert!(started.elapsed() >= Duration::from_millis(500));
    // Then a normal client gets in.
    served_cert(addr, &pki.ca, None).await.unwrap();
}
