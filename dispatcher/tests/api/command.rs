//! The `kurir-dispatcher` binary: the client subcommand against a server, and the exit
//! code and one-line message of a configuration it refuses.

use kurir_backends::{Backends, NotificationId};

use super::support::{self, *};

cases!(send_subcommand_talks_to_the_server,);

async fn send_subcommand_talks_to_the_server(backends: Backends) {
    let h = Harness::start(backends).await;
    let run = |args: Vec<String>| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kurir-dispatcher"))
            .args(args)
            .env_remove("KURIR_API_KEY")
            .env_remove("KURIR_ENDPOINT")
            .output()
            .await
            .expect("run kurir-dispatcher")
    };
    let args = |extra: &[&str]| -> Vec<String> {
        let endpoint = h.endpoint();
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--endpoint".into(),
            endpoint,
            "--api-key".into(),
            KEY.into(),
        ]);
        v
    };

    let out = run(args(&[
        "send", "--user", "alice", "--user", "bob", "--title", "Hi", "--body", "there", "--data",
        "k=v", "--ttl", "0",
    ]))
    .await;
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let reply: serde_json::Value = serde_json::from_str(&stdout).expect("json line");
    NotificationId::parse(reply["id"].as_str().expect("id")).expect("uuid");
    assert_eq!(reply["online_users"], 0);
    assert_eq!(reply["stored_users"], 0);

    let out = run(args(&["presence", "--user", "alice"])).await;
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(reply["users"][0]["user_id"], "alice");
    assert_eq!(reply["users"][0]["online"], false);

    let out = run(args(&["send", "--topic", "bad topic", "--title", "x"])).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("InvalidArgument: topic: "), "{stderr}");

    let out = run(vec![
        "send".into(),
        "--broadcast".into(),
        "--title".into(),
        "x".into(),
        "--endpoint".into(),
        h.endpoint(),
        "--api-key".into(),
        "wrong".into(),
    ])
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
}

#[tokio::test]
async fn bad_configuration_exits_64_with_one_line() {
    let run = |args: &[&str], keys: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kurir-dispatcher"));
        cmd.args(args)
            .env_remove("KURIR_API_KEYS")
            .env_remove("KURIR_INSECURE_NO_AUTH")
            .env("KURIR_GRPC_LISTEN", "127.0.0.1:0")
            .env("KURIR_METRICS_LISTEN", "127.0.0.1:0");
        if let Some(keys) = keys {
            cmd.env("KURIR_API_KEYS", keys);
        }
        cmd.output().expect("run kurir-dispatcher")
    };
    for (args, keys, expected) in [
        (&[][..], None, "KURIR_API_KEYS"),
        (&["--grpc-listen", "nope"][..], Some(KEY), "grpc-listen"),
        (&["--namespace", "a.b"][..], Some(KEY), "namespace"),
        (&["--insecure-no-auth"][..], Some(KEY), "--insecure-no-auth"),
        (
            &["--max-in-flight", "0"][..],
            Some(KEY),
            "KURIR_MAX_IN_FLIGHT",
        ),
        // A key under 32 bytes, even beside a good one; the message never shows it.
        (
            &[][..],
            Some("test-api-key-0123456789abcdef0123456789,short-key-31-bytes-0123456789ab"),
            "KURIR_API_KEYS: key 2 is 31 bytes; keys must be at least 32 bytes",
        ),
        (
            &["--grpc-max-message-bytes", "1000"][..],
            Some(KEY),
            "KURIR_GRPC_MAX_MESSAGE_BYTES",
        ),
    ] {
        let out = run(args, keys);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("short-key-31"), "{args:?}: {stderr}");
    }
}
