//! Issue 4: `kurir-dispatcher --standalone` is a whole Kurir in one process. Redis and
//! NATS URLs point at closed ports to prove they are not used.

use std::time::Duration;

use anyhow::Result;
use kurir_e2e::*;

const T: Duration = Duration::from_secs(5);

struct Standalone {
    _proc: Proc,
    ws: String,
    grpc: std::net::SocketAddr,
}

async fn start(extra: &[&str]) -> Result<Standalone> {
    let (ws, grpc, metrics) = (free_port(), free_port(), free_port());
    let closed = free_port();
    let env = vec![
        ("KURIR_REDIS_URL", format!("redis://127.0.0.1:{closed}")),
        ("KURIR_NATS_URL", format!("nats://127.0.0.1:{closed}")),
        ("KURIR_LISTEN", format!("127.0.0.1:{ws}")),
        ("KURIR_GRPC_LISTEN", format!("127.0.0.1:{grpc}")),
        ("KURIR_METRICS_LISTEN", format!("127.0.0.1:{metrics}")),
        ("KURIR_API_KEYS", API_KEY.to_string()),
        ("KURIR_JWT_SECRET", JWT_SECRET.to_string()),
        ("KURIR_STANDALONE", "true".to_string()),
        (
            "KURIR_DEMO_INTERVAL",
            extra.first().copied().unwrap_or("").to_string(),
        ),
    ];
    let env: Vec<_> = env.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let proc = Proc::spawn("standalone", "kurir-dispatcher", &env)?;
    let grpc: std::net::SocketAddr = format!("127.0.0.1:{grpc}").parse()?;
    eventually(Duration::from_secs(20), "standalone ports", || async {
        let a = tokio::net::TcpStream::connect(grpc).await.ok()?;
        let b = tokio::net::TcpStream::connect(("127.0.0.1", ws))
            .await
            .ok()?;
        drop((a, b));
        Some(())
    })
    .await?;
    Ok(Standalone {
        _proc: proc,
        ws: format!("127.0.0.1:{ws}"),
        grpc,
    })
}

#[tokio::test]
async fn send_reaches_a_websocket_client_without_redis_or_nats() -> Result<()> {
    let s = start(&[]).await?;
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
    let s = start(&["300ms"]).await?;
    let out = std::process::Command::new("curl")
        .args([
            "-sf",
            &format!("http://{}/dev/token?user=bob&topics=demo", s.ws),
        ])
        .output()?;
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)?;
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

/// The README's quick start: `--standalone` with nothing configured prints a development
/// API key and a ready-made token, and those work as printed.
#[tokio::test]
async fn the_printed_credentials_work() -> Result<()> {
    use std::io::BufRead;
    let (ws, grpc, metrics, closed) = (free_port(), free_port(), free_port(), free_port());
    let mut child = std::process::Command::new(bin("kurir-dispatcher"))
        .arg("--standalone")
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
    .await?;
    let mut c = Client::connect(&format!("ws://127.0.0.1:{ws}/ws?token={tok}")).await?;
    assert_eq!(c.welcome["user"], "alice", "the printed token is alice's");
    let mut api = api_client(grpc, Some(&key)).await?;
    send(&mut api, &["alice"], "Welcome aboard", 3600).await?;
    assert_eq!(c.next_notification(T).await?["title"], "Welcome aboard");
    Ok(())
}
