//! gRPC over TLS and mTLS: what a client needs to get a call through. (The `kurir`
//! client against an `https://` endpoint is tested with the `kurir` crate.)

mod support;

use std::path::PathBuf;
use std::time::Duration;

use kurir_proto::v1::dispatcher_client::DispatcherClient;
use kurir_proto::v1::GetPresenceRequest;
use kurir_tls::test_certs::{tempdir, Leaf, TempDir, TestCa};
use support::{memory, real, Harness, KEY};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

struct Pki {
    ca: TestCa,
    clients: TestCa,
    dir: TempDir,
}

impl Pki {
    fn new() -> Self {
        let pki = Self {
            ca: TestCa::new("kurir server CA"),
            clients: TestCa::new("kurir client CA"),
            dir: tempdir().unwrap(),
        };
        pki.ca
            .issue("dispatcher")
            .write(&pki.path("cert.pem"), &pki.path("key.pem"));
        pki.ca.write(&pki.path("ca.pem"));
        pki.clients.write(&pki.path("clients.pem"));
        pki
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// Server config: TLS, and mTLS with `client_ca`.
    fn tls(&self, client_ca: bool) -> impl FnOnce(&mut kurir_dispatcher::Config) {
        let (cert, key, ca) = (
            self.path("cert.pem"),
            self.path("key.pem"),
            self.path("clients.pem"),
        );
        move |c| {
            c.tls_cert = Some(cert);
            c.tls_key = Some(key);
            c.tls_client_ca = client_ca.then_some(ca);
        }
    }
}

async fn tls_channel(
    h: &Harness,
    ca: &TestCa,
    identity: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.cert_pem()))
        .domain_name("localhost");
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
    }
    Endpoint::from_shared(format!("https://localhost:{}", h.grpc.port()))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls)?
        .connect()
        .await
}

/// GetPresence over `channel`, with `key` as bearer when given.
async fn presence(channel: Channel, key: Option<&str>) -> Result<(), tonic::Status> {
    let mut req = tonic::Request::new(GetPresenceRequest {
        user_ids: vec!["alice".into()],
    });
    if let Some(k) = key {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    req.set_timeout(Duration::from_secs(5));
    DispatcherClient::new(channel)
        .get_presence(req)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn grpc_over_tls_needs_tls_and_still_an_api_key() {
    let pki = Pki::new();
    let h = Harness::start_with(real().await, pki.tls(false)).await;
    let channel = tls_channel(&h, &pki.ca, None)
        .await
        .expect("TLS with the CA");
    presence(channel.clone(), Some(KEY))
        .await
        .expect("call over TLS");
    let refused = presence(channel, None).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Code::Unauthenticated,
        "TLS alone is no credential"
    );
    // Plaintext to the TLS port fails.
    let plain = Endpoint::from_shared(h.endpoint())
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    match plain.connect().await {
        Err(_) => {}
        Ok(channel) => assert!(
            presence(channel, Some(KEY)).await.is_err(),
            "plaintext call succeeded"
        ),
    }
    // A client trusting another CA refuses the server.
    let stranger = TestCa::new("stranger");
    match tls_channel(&h, &stranger, None).await {
        Err(_) => {}
        Ok(channel) => assert!(presence(channel, Some(KEY)).await.is_err()),
    }
}

/// Whether a call through a channel made with `identity` gets through, without a key.
async fn mtls_call(h: &Harness, pki: &Pki, identity: Option<&Leaf>) -> bool {
    match tls_channel(h, &pki.ca, identity).await {
        Err(_) => false,
        Ok(channel) => presence(channel, None).await.is_ok(),
    }
}

#[tokio::test]
async fn mtls_accepts_only_certificates_from_the_client_ca_and_needs_no_key() {
    let pki = Pki::new();
    let h = Harness::start_with(memory(), pki.tls(true)).await;
    assert!(!mtls_call(&h, &pki, None).await, "no client certificate");
    let stranger = TestCa::new("stranger").issue("service");
    assert!(
        !mtls_call(&h, &pki, Some(&stranger)).await,
        "a certificate from another CA"
    );
    let server_ca_leaf = pki.ca.issue("service");
    assert!(
        !mtls_call(&h, &pki, Some(&server_ca_leaf)).await,
        "the server's CA is not the client CA"
    );
    let good = pki.clients.issue("service");
    assert!(
        mtls_call(&h, &pki, Some(&good)).await,
        "a good client certificate, no key"
    );
    // An API key on top changes nothing.
    let channel = tls_channel(&h, &pki.ca, Some(&good)).await.unwrap();
    presence(channel, Some(KEY)).await.unwrap();
}

#[tokio::test]
async fn mtls_alone_is_enough_configuration() {
    let pki = Pki::new();
    let tls = pki.tls(true);
    let h = Harness::start_with(memory(), |c| {
        tls(c);
        c.api_keys.clear();
    })
    .await;
    let good = pki.clients.issue("service");
    assert!(mtls_call(&h, &pki, Some(&good)).await);
}

#[tokio::test]
async fn unreadable_certificate_files_stop_the_start() {
    let dir = tempdir().unwrap();
    let mut config =
        kurir_dispatcher::Config::for_test(kurir_backends::Namespace::random_for_test());
    config.tls_cert = Some(dir.path().join("missing.pem"));
    config.tls_key = Some(dir.path().join("missing-key.pem"));
    let metrics = kurir_dispatcher::telemetry::install_recorder().unwrap();
    let err = kurir_dispatcher::Dispatcher::bind(config, memory(), metrics)
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(err, kurir_dispatcher::StartError::Config(_)),
        "{err}"
    );
    assert!(err.to_string().contains("missing.pem"), "{err}");
}
