//! `kurir-gateway`'s exit codes: 64 for bad flags, environment or configuration, 69 when
//! a port cannot be bound, 0 for `--help` and `--version`; a failure is one line on
//! stderr.

use std::process::{Command, Output};

use kurir_backends::Namespace;

const SECRET: &str = kurir_gateway::config::TEST_JWT_SECRET;

/// Run the binary with `args` and `env` only (no `KURIR_*` variable of the caller's).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kurir-gateway"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("KURIR_")) {
        cmd.env_remove(k);
    }
    cmd.args(args)
        .env("KURIR_LISTEN", "127.0.0.1:0")
        .env("KURIR_METRICS_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .output()
        .expect("run kurir-gateway")
}

fn assert_fails(out: &Output, code: i32, expected: &str, case: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{case}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{case}: {stderr}");
    assert!(stderr.starts_with("kurir-gateway: "), "{case}: {stderr}");
    assert!(stderr.contains(expected), "{case}: {stderr}");
}

#[test]
fn bad_flags_environment_or_configuration_exit_64_with_one_line() {
    let secret = [("KURIR_JWT_SECRET", SECRET)];
    for (args, env, expected) in [
        (&[][..], &[][..], "KURIR_JWT_SECRET"),
        (&["--listen", "nope"][..], &secret[..], "listen"),
        (&["--namespace", "a.b"][..], &secret[..], "namespace"),
        (&["--log-format", "yaml"][..], &secret[..], "log-format"),
        (&["--no-such-flag"][..], &secret[..], "no-such-flag"),
        (
            &[][..],
            &[("KURIR_JWT_SECRET", SECRET), ("KURIR_HEARTBEAT_MS", "0")][..],
            "KURIR_HEARTBEAT_MS",
        ),
        (
            &[][..],
            &[
                ("KURIR_JWT_SECRET", SECRET),
                ("KURIR_BACKEND_TIMEOUT_MS", "0"),
            ][..],
            "KURIR_BACKEND_TIMEOUT_MS",
        ),
        // A secret under 32 bytes: named, never shown.
        (
            &[][..],
            &[("KURIR_JWT_SECRET", "short-secret-31-bytes-012345678")][..],
            "KURIR_JWT_SECRET",
        ),
    ] {
        let out = run(args, env);
        let case = format!("{args:?} {env:?}");
        assert_fails(&out, 64, expected, &case);
        assert!(!String::from_utf8_lossy(&out.stderr).contains("short-secret-31"));
    }
}

#[test]
fn help_and_version_exit_0() {
    for flag in ["--help", "--version"] {
        let out = run(&[flag], &[]);
        assert_eq!(out.status.code(), Some(0), "{flag}");
        assert!(!out.stdout.is_empty(), "{flag}");
    }
}

/// Needs NATS and Redis (`KURIR_NATS_URL`, `KURIR_REDIS_URL` or the local defaults): the
/// listeners are bound after the backends connect.
#[test]
fn a_port_in_use_exits_69() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let ns = Namespace::random_for_test();
    let nats = std::env::var("KURIR_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let redis =
        std::env::var("KURIR_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let out = run(
        &[],
        &[
            ("KURIR_JWT_SECRET", SECRET),
            ("KURIR_NAMESPACE", ns.as_str()),
            ("KURIR_NATS_URL", &nats),
            ("KURIR_REDIS_URL", &redis),
            ("KURIR_LISTEN", &addr),
            ("RUST_LOG", "off"),
        ],
    );
    assert_fails(&out, 69, &addr, "port in use");
}
