//! `kurir` (no arguments) is a whole Kurir in one process. Redis and NATS URLs point at
//! closed ports to prove they are not used. `kurir-dispatcher --standalone` still starts
//! the same node, through `kurir`, for one release.

use std::io::Read as _;
use std::time::Duration;

use anyhow::Result;
use kurir_e2e::*;

const T: Duration = Duration::from_secs(5);

struct Standalone {
    _proc: Proc,
    ws: String,
    grpc: std::net::SocketAddr,
}

/// A standalone node on free loopback ports; `jwt_secret` configured or not (then it
/// generates one and serves `/dev/token`).
async fn start(demo_interval: Option<&str>, jwt_secret: Option<&str>) -> Result<Standalone> {
    let (ws, grpc, metrics) = (free_port(), free_port(), free_port());
    let closed = free_port();
    let mut env = vec![
        ("KURIR_REDIS_URL", format!("redis://127.0.0.1:{closed}")),
        ("KURIR_NATS_URL", format!("nats://127.0.0.1:{closed}")),
        ("KURIR_LISTEN", format!("127.0.0.1:{ws}")),
        ("KURIR_GRPC_LISTEN", format!("127.0.0.1:{grpc}")),
        ("KURIR_METRICS_LISTEN", format!("127.0.0.1:{metrics}")),
        ("KURIR_API_KEYS", API_KEY.to_string()),
    ];
    if let Some(every) = demo_interval {
        env.push(("KURIR_DEMO_INTERVAL", every.to_string()));
    }
    if let Some(secret) = jwt_secret {
        env.push(("KURIR_JWT_SECRET", secret.to_string()));
    }
    let proc = Proc::spawn("standalone", "kurir", &env)?;
    let grpc: std::net::SocketAddr = format!("127.0.0.1:{grpc}").parse()?;
    eventually(Duration::from_secs(20), "standalone ports", || async {
        let a = tokio::net::TcpStream::connect(grpc).await.ok()?;
        let b = tokio::net::TcpStream::connect(("127.0.0.1", ws))
            .await
            .ok()?;
        drop((a, b));
        Some(())
    })
    .await;
    Ok(Standalone {
        _proc: proc,
        ws: format!("127.0.0.1:{ws}"),
        grpc,
    })
}

/// `GET path` on `addr`: the status code and body.
fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            &format!("http://{addr}{path}"),
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

#[tokio::test]
async fn send_reaches_a_websocket_client_without_redis_or_nats() -> Result<()> {
    let s = start(None, Some(JWT_SECRET)).await?;
    let alice = user("alice");
    let mut api = api_client(s.grpc, Some(API_KEY)).await?;
    // Stored while offline, replayed on connect; then live.
    let stored = send(&mut api, &[&alice], "Registration approved", 3600).await?;
    assert_eq!(stored.stored_users, 1);
    let mut c = Client::connect(&format!(
        "ws://{}/ws?token={}",
        s.ws,
        token(&alice, &[], 60)
    ))
    .await?;
    let n = c.next_notification(T).await?;
    assert_eq!(
        (n["id"].as_str(), n["replayed"].as_bool()),
        (Some(stored.id.as_str()), Some(true))
    );
    c.ack(&stored.id).await?;
    let live = send(&mut api, &[&alice], "Candidate declared competent", 0).await?;
    assert_eq!(live.online_users, 1);
    let n = c.next_notification(T).await?;
    assert_eq!(n["title"], "Candidate declared competent");
    drop(c);
    let mut c = Client::connect(&format!(
        "ws://{}/ws?token={}",
        s.ws,
        token(&alice, &[], 60)
    ))
    .await?;
    c.expect_silence(Duration::from_millis(500)).await?;
    Ok(())
}

#[tokio::test]
async fn demo_ticker_publishes_server_time_and_dev_tokens_work() -> Result<()> {
    let s = start(Some("300ms"), None).await?;
    let (code, body) = http_get(&s.ws, "/dev/token?user=bob&topics=demo")?;
    assert_eq!(code, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body)?;
    let tok = body["token"].as_str().expect("token").to_string();
    let mut c = Client::connect(&format!("ws://{}/ws?token={tok}", s.ws)).await?;
    assert_eq!(c.subscribe("demo").await?["type"], "subscribed");
    let n = c.next_notification(T).await?;
    assert_eq!(n["topic"], "demo");
    assert!(
        n["body"].as_str().unwrap().starts_with("Server time: "),
        "{n}"
    );
    Ok(())
}

/// The README's quick start: `kurir` with nothing configured prints a development API key
/// and a ready-made token, and those work as printed.
#[tokio::test]
async fn the_printed_credentials_work() -> Result<()> {
    use std::io::BufRead;
    let (ws, grpc, metrics, closed) = (free_port(), free_port(), free_port(), free_port());
    let mut child = std::process::Command::new(bin("kurir"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KURIR_REDIS_URL", format!("redis://127.0.0.1:{closed}"))
        .env("KURIR_NATS_URL", format!("nats://127.0.0.1:{closed}"))
        .env("KURIR_LISTEN", format!("127.0.0.1:{ws}"))
        .env("KURIR_GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("KURIR_METRICS_LISTEN", format!("127.0.0.1:{metrics}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().expect("piped");
    let _guard = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut key, mut tok) = (None, None);
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("API"), Some("key"), Some(k)) => key = Some(k.to_string()),
                (Some("token"), Some(t), None) => tok = Some(t.to_string()),
                _ => {}
            }
            if let (Some(k), Some(t)) = (&key, &tok) {
                let _ = tx.send((k.clone(), t.clone()));
                return;
            }
        }
    });
    let (key, tok) = rx
        .recv_timeout(Duration::from_secs(20))
        .map_err(|_| anyhow::anyhow!("no API key and token printed"))?;
    let grpc: std::net::SocketAddr = format!("127.0.0.1:{grpc}").parse()?;
    eventually(Duration::from_secs(10), "gRPC port", || async {
        tokio::net::TcpStream::connect(grpc).await.ok().map(drop)
    })
    .await;
    let mut c = Client::connect(&format!("ws://127.0.0.1:{ws}/ws?token={tok}")).await?;
    assert_eq!(c.welcome["user"], "alice", "the printed token is alice's");
    let mut api = api_client(grpc, Some(&key)).await?;
    send(&mut api, &["alice"], "Welcome aboard", 3600).await?;
    assert_eq!(c.next_notification(T).await?["title"], "Welcome aboard");
    Ok(())
}

/// A standalone node whose stdout and stderr are kept.
struct Captured {
    child: std::process::Child,
    out: std::sync::Arc<Output>,
}

/// What a process wrote, collected by reader threads.
#[derive(Default)]
struct Output(std::sync::Mutex<String>);

impl Output {
    fn text(&self) -> String {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Captured {
    fn spawn(args: &[&str], env: &[(&str, String)]) -> Result<Self> {
        Self::spawn_binary("kurir", args, env)
    }

    fn spawn_binary(binary: &str, args: &[&str], env: &[(&str, String)]) -> Result<Self> {
        let mut child = std::process::Command::new(bin(binary))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // As much logging as there is: the secret must not be in any of it.
            .env("RUST_LOG", "debug")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let out = std::sync::Arc::new(Output::default());
        let pipes: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("piped")),
            Box::new(child.stderr.take().expect("piped")),
        ];
        for mut pipe in pipes {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = out.0.lock() {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        Ok(Self { child, out })
    }

    /// Wait for the banner (printed once every listener is bound).
    async fn banner(&self) -> Result<String> {
        Ok(
            eventually(Duration::from_secs(20), "the standalone banner", || async {
                let text = self.out.text();
                text.contains("try:").then_some(text)
            })
            .await,
        )
    }

    /// Stop the process and return everything it wrote.
    fn finish(mut self) -> String {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        self.out.text()
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With a configured secret, standalone accepts tokens signed with it, serves no
/// `/dev/token` and never prints the secret (banner and logs alike).
#[tokio::test]
async fn a_configured_secret_is_used_but_never_served_or_printed() -> Result<()> {
    let (ws, grpc, metrics, closed) = (free_port(), free_port(), free_port(), free_port());
    let secret = format!("configured-secret-{}", uuid::Uuid::new_v4().simple());
    let node = Captured::spawn(
        &[],
        &[
            ("KURIR_REDIS_URL", format!("redis://127.0.0.1:{closed}")),
            ("KURIR_NATS_URL", format!("nats://127.0.0.1:{closed}")),
            ("KURIR_LISTEN", format!("127.0.0.1:{ws}")),
            ("KURIR_GRPC_LISTEN", format!("127.0.0.1:{grpc}")),
            ("KURIR_METRICS_LISTEN", format!("127.0.0.1:{metrics}")),
            ("KURIR_JWT_SECRET", secret.clone()),
        ],
    )?;
    let banner = node.banner().await?;
    assert!(banner.contains("configured key in use"), "{banner}");
    let ws = format!("127.0.0.1:{ws}");
    let (code, _) = http_get(&ws, "/dev/token?user=alice")?;
    assert_eq!(code, 404, "no development tokens with a configured key");
    let t = token_with_secret("alice", &[], 60, &secret);
    let c = Client::connect(&format!("ws://{ws}/ws?token={t}")).await?;
    assert_eq!(c.welcome["user"], "alice");
    drop(c);
    let output = node.finish();
    assert!(output.contains("Kurir standalone"), "{output}");
    assert!(
        !output.contains(&secret),
        "the configured secret was printed"
    );
    Ok(())
}

/// With no listen variables, every listener is on 127.0.0.1 only: reachable there, not
/// on another loopback address (which a 0.0.0.0 bind would answer). Ports are passed as
/// flags on the any-address, which standalone narrows too; only the variables widen it.
#[tokio::test]
async fn listeners_bind_loopback_unless_told_otherwise() -> Result<()> {
    let (ws, grpc, metrics, closed) = (free_port(), free_port(), free_port(), free_port());
    let node = Captured::spawn(
        &[
            "--grpc-listen",
            &format!("0.0.0.0:{grpc}"),
            "--metrics-listen",
            &format!("0.0.0.0:{metrics}"),
        ],
        &[
            ("KURIR_REDIS_URL", format!("redis://127.0.0.1:{closed}")),
            ("KURIR_NATS_URL", format!("nats://127.0.0.1:{closed}")),
            // The gateway half takes its address from the environment only; its
            // default (port 8080) may be taken on a shared machine, so it gets a free
            // port here and the narrowing itself is unit-tested.
            ("KURIR_LISTEN", format!("127.0.0.1:{ws}")),
        ],
    )?;
    let banner = node.banner().await?;
    assert!(banner.contains(&format!("127.0.0.1:{grpc}")), "{banner}");
    for port in [grpc, metrics] {
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok(),
            "{port} on 127.0.0.1"
        );
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.2", port))
                .await
                .is_err(),
            "{port} answered on 127.0.0.2: bound to all interfaces"
        );
    }
    node.finish();
    Ok(())
}

/// The deprecated alias: `kurir-dispatcher --standalone` says where the node went and
/// runs `kurir` with its arguments and environment; the node is the same one.
#[tokio::test]
async fn the_standalone_alias_notes_the_move_and_starts_a_node_through_kurir() -> Result<()> {
    let (ws, grpc, metrics, closed) = (free_port(), free_port(), free_port(), free_port());
    let node = Captured::spawn_binary(
        "kurir-dispatcher",
        &[
            "--standalone",
            "--grpc-listen",
            &format!("127.0.0.1:{grpc}"),
        ],
        &[
            ("KURIR_REDIS_URL", format!("redis://127.0.0.1:{closed}")),
            ("KURIR_NATS_URL", format!("nats://127.0.0.1:{closed}")),
            ("KURIR_LISTEN", format!("127.0.0.1:{ws}")),
            ("KURIR_METRICS_LISTEN", format!("127.0.0.1:{metrics}")),
        ],
    )?;
    let banner = node.banner().await?;
    assert!(
        banner.contains("`kurir-dispatcher --standalone` is deprecated"),
        "{banner}"
    );
    assert!(banner.contains(&format!("127.0.0.1:{grpc}")), "{banner}");
    assert!(banner.contains("try:  kurir send"), "{banner}");
    let c = Client::connect(&format!(
        "ws://127.0.0.1:{ws}/ws?token={}",
        banner
            .lines()
            .find_map(|l| l.trim().strip_prefix("token"))
            .map(str::trim)
            .unwrap_or_default()
    ))
    .await?;
    assert_eq!(c.welcome["user"], "alice");
    drop(c);
    node.finish();
    Ok(())
}
