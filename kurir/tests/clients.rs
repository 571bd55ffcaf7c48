//! `kurir send`, `presence` and `disconnect` against a dispatcher: JSON lines on stdout,
//! one-line errors with the gRPC code, `http://` and `https://` with mTLS.

mod support;

use kurir_backends::{Backends, NotificationId};
use kurir_tls::test_certs::{tempdir, TestCa};
use support::{kurir, memory, real, stderr, Served, KEY};

async fn clients_talk_to_the_server(backends: Backends) {
    let served = Served::start(backends, |_| {}).await;
    let with_key = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--endpoint".into(),
            served.endpoint(),
            "--api-key".into(),
            KEY.into(),
        ]);
        v
    };

    let out = kurir(&with_key(&[
        "send", "--user", "alice", "--user", "bob", "--title", "Hi", "--body", "there", "--data",
        "k=v", "--ttl", "0",
    ]))
    .await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let reply: serde_json::Value = serde_json::from_str(&stdout).expect("json line");
    NotificationId::parse(reply["id"].as_str().expect("id")).expect("uuid");
    assert_eq!(reply["online_users"], 0);
    assert_eq!(reply["stored_users"], 0);

    let out = kurir(&with_key(&["presence", "--user", "alice"])).await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(reply["users"][0]["user_id"], "alice");
    assert_eq!(reply["users"][0]["online"], false);

    let out = kurir(&with_key(&[
        "disconnect",
        "--user",
        "alice",
        "--reason",
        "bye",
    ]))
    .await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(reply["connections_closed"], 0, "alice has no connection");

    // Scheduled, with a fallback: answered at once, nothing stored yet.
    let later = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 60_000)
        .to_string();
    let out = kurir(&with_key(&[
        "send",
        "--user",
        "alice",
        "--title",
        "Later",
        "--send-at",
        &later,
        "--fallback-after-ms",
        "5000",
    ]))
    .await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    NotificationId::parse(reply["id"].as_str().expect("id")).expect("uuid");
    assert_eq!(reply["stored_users"], 0);
    // A fallback without a stored notification is refused, naming the field.
    let out = kurir(&with_key(&[
        "send",
        "--user",
        "alice",
        "--title",
        "x",
        "--ttl",
        "0",
        "--fallback-after-ms",
        "0",
    ]))
    .await;
    assert!(
        stderr(&out).starts_with("kurir: InvalidArgument: fallback: "),
        "{}",
        stderr(&out)
    );

    let out = kurir(&with_key(&["send", "--topic", "bad topic", "--title", "x"])).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("kurir: InvalidArgument: topic: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let out = kurir(&[
        "send",
        "--broadcast",
        "--title",
        "x",
        "--endpoint",
        &served.endpoint(),
        "--api-key",
        "wrong",
    ])
    .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Unauthenticated"), "{}", stderr(&out));
}

#[tokio::test]
async fn clients_talk_to_the_server_over_memory() {
    clients_talk_to_the_server(memory()).await;
}

#[tokio::test]
async fn clients_talk_to_the_server_over_nats_and_redis() {
    clients_talk_to_the_server(real().await).await;
}

#[tokio::test]
async fn bad_flags_exit_64_and_no_server_exits_1() {
    let out = kurir(&["send", "--title", "t"]).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("kurir: ") && err.contains("--broadcast"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let endpoint = format!("http://{closed}");
    let out = kurir(&["presence", "--user", "a", "--endpoint", &endpoint]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
}

#[tokio::test]
async fn the_client_speaks_https_with_a_ca_file_and_a_client_certificate() {
    let dir = tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let (ca, clients) = (
        TestCa::new("kurir server CA"),
        TestCa::new("kurir client CA"),
    );
    ca.issue("dispatcher")
        .write(&path("cert.pem"), &path("key.pem"));
    ca.write(&path("ca.pem"));
    clients.write(&path("clients.pem"));
    clients
        .issue("cli")
        .write(&path("client.pem"), &path("client-key.pem"));
    let served = Served::start(memory(), |c| {
        c.tls_cert = Some(path("cert.pem"));
        c.tls_key = Some(path("key.pem"));
        c.tls_client_ca = Some(path("clients.pem"));
    })
    .await;
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = ["presence", "--user", "alice", "--endpoint"]
            .map(String::from)
            .into();
        args.push(format!("https://localhost:{}", served.grpc.port()));
        args.push("--ca-file".into());
        args.push(path("ca.pem").display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        async move { kurir(&args).await }
    };
    let (cert, key) = (path("client.pem"), path("client-key.pem"));
    let ok = run(&[
        "--client-cert",
        cert.to_str().unwrap(),
        "--client-key",
        key.to_str().unwrap(),
    ])
    .await;
    assert!(ok.status.success(), "{}", stderr(&ok));
    let out: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(out["users"][0]["user_id"], "alice");
    let refused = run(&[]).await;
    assert!(!refused.status.success(), "no client certificate");
}
