//! The `kurir-dispatcher` binary: the exit code and one-line message of a configuration
//! it refuses. (The client commands are `kurir`'s and tested there.)

use super::support::KEY;

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
