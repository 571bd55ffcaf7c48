//! `kurir token` and the development node's exit codes, as scripts see them: one line
//! on stdout or one line `kurir: …` on stderr, and 64 / 69 for usage / ports.

mod support;

use std::process::Output;

use support::stderr;

const SECRET: &str = "commands-test-secret-0123456789abcdef";

fn kurir(args: &[&str], env: &[(&str, String)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kurir"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run kurir")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

#[test]
fn token_prints_only_the_token_which_the_gateway_accepts() {
    let out = kurir(
        &[
            "token",
            "--user",
            "alice",
            "--topics",
            "news.*,demo",
            "--ttl",
            "120",
        ],
        &[("KURIR_JWT_SECRET", SECRET.into())],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let id = kurir_gateway::auth::Verifier::hs256(SECRET.as_bytes())
        .verify(stdout.trim_end())
        .unwrap();
    assert_eq!(id.user.as_str(), "alice");
    assert_eq!(id.topics, ["news.*", "demo"]);
}

#[test]
fn token_errors_are_one_line_and_exit_64() {
    for (args, env, expected) in [
        (
            &["token", "--user", "alice"][..],
            vec![],
            "KURIR_JWT_SECRET",
        ),
        (
            &["token", "--user", "a b"][..],
            vec![("KURIR_JWT_SECRET", SECRET.to_string())],
            "--user",
        ),
        (
            &["token", "--user", "alice", "--topics", "bad topic"][..],
            vec![("KURIR_JWT_SECRET", SECRET.to_string())],
            "--topics",
        ),
        (
            &["token", "--user", "alice"][..],
            vec![("KURIR_JWT_SECRET", "short".to_string())],
            "32 bytes",
        ),
        (&["token"][..], vec![], "--user"),
    ] {
        let out = kurir(args, &env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("kurir: ") && err.contains(expected),
            "{args:?}: {err}"
        );
        assert!(!err.contains("short\""), "{args:?}: {err}");
    }
}

#[test]
fn the_development_node_exits_64_on_bad_settings_and_69_on_a_taken_port() {
    let bad = kurir(&["--grpc-listen", "nope"], &[]);
    assert_eq!(bad.status.code(), Some(64), "{}", stderr(&bad));
    assert!(stderr(&bad).starts_with("kurir: "), "{}", stderr(&bad));
    let bad = kurir(&["dev", "--demo-interval", "1ms"], &[]);
    assert_eq!(bad.status.code(), Some(64), "{}", stderr(&bad));

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = kurir(
        &[],
        &[
            ("KURIR_LISTEN", format!("127.0.0.1:{}", free_port())),
            ("KURIR_GRPC_LISTEN", taken.local_addr().unwrap().to_string()),
            ("KURIR_METRICS_LISTEN", format!("127.0.0.1:{}", free_port())),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(69), "{err}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("kurir: ") && last.contains("cannot listen"),
        "{err}"
    );
}

#[test]
fn vapid_prints_a_key_pair_the_dispatcher_accepts() {
    let out = kurir(&["vapid", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pair: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (private, public) = (
        pair["private_key"].as_str().unwrap(),
        pair["public_key"].as_str().unwrap(),
    );
    let key = kurir_push::webpush::vapid::VapidKey::new(private, "mailto:ops@kurir.test")
        .expect("a usable KURIR_VAPID_PRIVATE_KEY");
    assert_eq!(key.public_key(), public);
    // The default output is an environment line to paste, with the public key beside.
    let out = kurir(&["vapid"], &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("KURIR_VAPID_PRIVATE_KEY="))
        .expect("the private key line");
    let private = line.trim_start_matches("KURIR_VAPID_PRIVATE_KEY=");
    let key = kurir_push::webpush::vapid::VapidKey::new(private, "mailto:ops@kurir.test").unwrap();
    assert!(text.contains(key.public_key()), "{text}");
}
