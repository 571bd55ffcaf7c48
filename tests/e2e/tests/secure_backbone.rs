//! A gateway and a dispatcher with both backbone hops secured as in production: a
//! private nats-server requiring TLS and running the Kubernetes manifest's own
//! `authorization` block (per-role users and subject permissions), and a private
//! redis-server on TLS only with the default user off and the manifests' ACL users.
//! A stored notification, a live one, a topic publish and a receipt all make it through.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use kurir_e2e::*;
use kurir_proto::v1::{PublishRequest, ReceiptStatus, WatchReceiptsRequest};
use kurir_testkit::certs::BackbonePki;
use kurir_testkit::faults::find_program;

const T: Duration = Duration::from_secs(10);
/// Passwords as the manifests want them: URL-safe.
const GATEWAY_PW: &str = "gw0123456789abcdef";
const DISPATCHER_PW: &str = "disp0123456789abcdef";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn nats_server() -> Option<PathBuf> {
    find_program(
        "nats-server",
        &["/usr/sbin/nats-server", "/usr/local/bin/nats-server"],
    )
}

/// A server process and its scratch directory, killed by PID and removed on drop.
struct Owned {
    _proc: Proc,
    dir: PathBuf,
}

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "kurir-e2e-{what}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `name { … }` of a config text, braces matched.
fn block(text: &str, start: &str) -> Option<String> {
    let from = text.find(start)?;
    let mut depth = 0;
    for (i, c) in text[from..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(text[from..from + i + 1].to_owned());
                }
            }
            _ => {}
        }
    }
    None
}

/// The Redis ACL rules the manifests use (and the backends' secure test proves).
fn kurir_redis_acl() -> String {
    let test =
        std::fs::read_to_string(repo().join("backends/tests/secure_backbone/main.rs")).unwrap();
    let start = test.find("pub const KURIR_REDIS_ACL: &str = \"").unwrap() + 35;
    let len = test[start..].find('"').unwrap();
    test[start..start + len].to_owned()
}

/// Start `cmd` as `name` with its log in `dir`, and wait for `port`.
async fn serve(name: &str, cmd: Command, dir: PathBuf, port: u16) -> Result<Owned> {
    let mut proc = Proc::launch(name, cmd, &dir)?;
    proc.wait_listening(([127, 0, 0, 1], port).into(), T)
        .await?;
    Ok(Owned { _proc: proc, dir })
}

async fn secure_nats(pki: &Path) -> Result<(Owned, u16)> {
    let dir = scratch("nats");
    let port = free_port();
    let manifest = std::fs::read_to_string(repo().join("k8s/base/nats/nats.conf"))?;
    let auth =
        block(&manifest, "authorization {").context("no authorization block in the manifest")?;
    let conf = format!(
        "listen: \"127.0.0.1:{port}\"\ntls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n}}\n{auth}\n",
        pki.join("server.pem").display(),
        pki.join("server.key").display(),
        pki.join("ca.pem").display(),
    );
    std::fs::write(dir.join("nats.conf"), conf)?;
    let mut cmd = Command::new(nats_server().unwrap());
    cmd.arg("-c")
        .arg(dir.join("nats.conf"))
        .env("KURIR_NATS_GATEWAY_PASSWORD", GATEWAY_PW)
        .env("KURIR_NATS_DISPATCHER_PASSWORD", DISPATCHER_PW);
    Ok((serve("nats-server", cmd, dir, port).await?, port))
}

async fn secure_redis(pki: &Path) -> Result<(Owned, u16)> {
    let dir = scratch("redis");
    let port = free_port();
    let acl = kurir_redis_acl();
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .arg("--tls-cert-file")
    .arg(pki.join("server.pem"))
    .arg("--tls-key-file")
    .arg(pki.join("server.key"))
    .arg("--tls-ca-cert-file")
    .arg(pki.join("ca.pem"))
    .args([
        "--save",
        "",
        "--appendonly",
        "no",
        "--user",
        "default",
        "off",
    ]);
    for (user, pw) in [("gateway", GATEWAY_PW), ("dispatcher", DISPATCHER_PW)] {
        cmd.args(["--user", user, "on", &format!(">{pw}")])
            .args(acl.split(' '));
    }
    cmd.current_dir(&dir);
    Ok((serve("redis-server", cmd, dir, port).await?, port))
}

fn tls_env(pki: &Path) -> Vec<(&'static str, String)> {
    let p = |f: &str| pki.join(f).display().to_string();
    vec![
        ("KURIR_NATS_CA", p("ca.pem")),
        ("KURIR_NATS_CLIENT_CERT", p("client.pem")),
        ("KURIR_NATS_CLIENT_KEY", p("client.key")),
        ("KURIR_REDIS_CA", p("ca.pem")),
        ("KURIR_REDIS_CLIENT_CERT", p("client.pem")),
        ("KURIR_REDIS_CLIENT_KEY", p("client.key")),
    ]
}

#[tokio::test]
async fn gateway_and_dispatcher_work_with_both_hops_secured() -> Result<()> {
    if nats_server().is_none() {
        eprintln!("SKIPPED: nats-server not installed");
        return Ok(());
    }
    let pki_dir = scratch("pki");
    BackbonePki::write(&pki_dir);
    let (_nats, nats_port) = secure_nats(&pki_dir).await?;
    let (_redis, redis_port) = secure_redis(&pki_dir).await?;
    let ns = random_namespace();
    let url = |scheme: &str, role: &str, pw: &str, port: u16| {
        format!("{scheme}://{role}:{pw}@127.0.0.1:{port}")
    };

    let dispatcher = DispatcherProc::start_with(
        &ns,
        &url("tls", "dispatcher", DISPATCHER_PW, nats_port),
        &url("rediss", "dispatcher", DISPATCHER_PW, redis_port),
        &tls_env(&pki_dir),
    )
    .await?;
    // Ready means its probe through its own node subject came back and its presence
    // writes work, both through the secured hops with the gateway role's rights.
    let gateway = GatewayProc::start(
        "gw-secure",
        &GatewayOpts {
            namespace: ns.clone(),
            nats_url: url("tls", "gateway", GATEWAY_PW, nats_port),
            redis_url: url("rediss", "gateway", GATEWAY_PW, redis_port),
            extra: tls_env(&pki_dir),
        },
    )
    .await?;

    let mut api = dispatcher.client().await?;
    let mut receipts = api
        .watch_receipts(WatchReceiptsRequest::default())
        .await?
        .into_inner();
    let alice = user("alice");
    let stored = send(&mut api, &[&alice], "stored", 600).await?;
    assert_eq!((stored.online_users, stored.stored_users), (0, 1));

    let mut c = Client::connect(&gateway.ws_url(&token(&alice, &["news"], 60))).await?;
    let replayed = c.next_notification(T).await?;
    assert_eq!(replayed["id"], stored.id.as_str());
    c.ack(&stored.id).await?;

    let live = send(&mut api, &[&alice], "live", 0).await?;
    assert_eq!(live.online_users, 1);
    assert_eq!(c.next_notification(T).await?["id"], live.id.as_str());

    c.subscribe("news").await?;
    // The request grows optional fields; the defaults are what this test means.
    #[allow(clippy::needless_update)]
    let publish = PublishRequest {
        topic: "news".into(),
        notification: Some(note("topic")),
        ..Default::default()
    };
    api.publish(publish).await?;
    assert_eq!(c.next_notification(T).await?["title"], "topic");

    let deadline = tokio::time::Instant::now() + T;
    loop {
        let r = tokio::time::timeout_at(deadline, receipts.next())
            .await
            .context("no ACKED receipt through the secured bus")?
            .context("receipt stream ended")??;
        if r.id == stored.id && r.status == ReceiptStatus::Acked as i32 {
            break;
        }
    }
    let _ = std::fs::remove_dir_all(&pki_dir);
    Ok(())
}
