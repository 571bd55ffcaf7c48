//! The committed corpus: every seed and every input a campaign once found failing
//! (`fuzz/corpus/<target>/`), replayed through its target on each test run.
//! `cargo test -p kurir-fuzz --test corpus -- --ignored write_seeds` writes the seeds.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use kurir_fuzz::TARGETS;
use kurir_proto::v1::{Notification, PublishRequest, SendRequest, WatchReceiptsRequest};
use prost::Message;
use sha2::Sha256;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

#[test]
fn replay_corpus() {
    for (name, run) in TARGETS {
        let dir = corpus_dir(name);
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(inputs.len() >= 3, "{name}: at least 3 seeds");
        for path in inputs {
            let data = std::fs::read(&path).unwrap();
            run(&data);
        }
    }
}

/// A client frame as a browser sends it.
fn masked(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![u8::from(fin) << 7 | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    out
}

fn with(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    [prefix, rest].concat()
}

fn token(header: &str, claims: &str, key: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

// Fields a request gains later keep their defaults (and encode to nothing).
#[allow(clippy::needless_update)]
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let m = [0x37, 0xfa, 0x21, 0x3d];
    let hs = r#"{"alg":"HS256","typ":"JWT"}"#;
    // 2100-01-01: far enough ahead for the seed to stay a valid token.
    let good = r#"{"sub":"alice","exp":4102444800,"topics":["news.*"]}"#;
    let key = kurir_fuzz::jwt::SECRET;
    let note = |title: &str| {
        Some(Notification {
            title: title.into(),
            ..Default::default()
        })
    };
    let upgrade = "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
                   Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    vec![
        // ws_frame: [limit selector] + header bytes (and payload).
        (
            "ws_frame",
            "text",
            with(&[6], &masked(true, 0x1, b"Hello", m)),
        ),
        (
            "ws_frame",
            "len16",
            with(&[4], &masked(true, 0x2, &[7; 300], m)),
        ),
        (
            "ws_frame",
            "len64",
            with(&[7], &masked(false, 0x1, &[1; 70_000], m)[..20]),
        ),
        (
            "ws_frame",
            "ping125",
            with(&[2], &masked(true, 0x9, &[9; 125], m)),
        ),
        (
            "ws_frame",
            "close",
            with(&[1], &masked(true, 0x8, b"\x03\xe8bye", m)),
        ),
        // ws_read: [limit, early bytes, read sizes] + the client's bytes.
        (
            "ws_read",
            "session",
            with(
                &[1, 0, 0x5a],
                &[
                    masked(true, 0x1, br#"{"type":"subscribe","topic":"news"}"#, m),
                    masked(true, 0x9, b"p", m),
                    masked(false, 0x1, b"{\"type\":", m),
                    masked(true, 0xA, b"", m),
                    masked(true, 0x0, br#""ping"}"#, m),
                    masked(true, 0x8, b"\x03\xe8", m),
                ]
                .concat(),
            ),
        ),
        (
            "ws_read",
            "early-binary",
            with(
                &[0, 7, 0x13],
                &[
                    masked(true, 0x2, &[0, 1, 2], m),
                    masked(true, 0x1, "é€😀".as_bytes(), m),
                ]
                .concat(),
            ),
        ),
        (
            "ws_read",
            "too-large",
            with(&[0, 0, 0xff], &masked(false, 0x1, &[b'a'; 200], m)),
        ),
        (
            "ws_read",
            "bad-utf8",
            with(&[4, 0, 0x01], &masked(true, 0x1, b"\xff\xfe", m)),
        ),
        // http_upgrade: [0] + header lines, or [1] + a raw request.
        (
            "http_upgrade",
            "headers",
            with(
                &[0],
                b"\x00keep-alive, Upgrade\n\x01websocket\n\x0213\n\x03dGhlIHNhbXBsZSBub25jZQ==\n",
            ),
        ),
        (
            "http_upgrade",
            "headers-named",
            with(
                &[0],
                b"connection: upgrade\nupgrade: WebSocket\nsec-websocket-version: 8\n\
                  sec-websocket-key: c2hvcnQ=\norigin: https://app.example\n",
            ),
        ),
        ("http_upgrade", "raw", with(&[1], upgrade.as_bytes())),
        (
            "http_upgrade",
            "raw-pipelined",
            with(
                &[1],
                format!("GET /ws?token=x HTTP/1.1\r\nHost: a\r\n\r\n{upgrade}").as_bytes(),
            ),
        ),
        // client_frame: the text of one frame.
        (
            "client_frame",
            "ack",
            br#"{"type":"ack","id":"0190b2f5-8c3e-7d4a-9b1c-2d3e4f5a6b7c"}"#.to_vec(),
        ),
        (
            "client_frame",
            "subscribe",
            br#"{"type":"subscribe","topic":"news.eu"}"#.to_vec(),
        ),
        (
            "client_frame",
            "unsubscribe",
            br#"{"type":"unsubscribe","topic":"news.eu"}"#.to_vec(),
        ),
        ("client_frame", "ping", br#"{"type":"ping"}"#.to_vec()),
        (
            "client_frame",
            "unknown",
            br#"{"type":"dance","id":1}"#.to_vec(),
        ),
        // jwt: [0] + a token's text, or [1] + choices.
        ("jwt", "good", with(&[0], token(hs, good, key).as_bytes())),
        (
            "jwt",
            "alg-none",
            with(
                &[0],
                format!(
                    "{}.{}.",
                    URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
                    URL_SAFE_NO_PAD.encode(good)
                )
                .as_bytes(),
            ),
        ),
        (
            "jwt",
            "expired",
            with(&[0], token(hs, r#"{"sub":"bob","exp":1}"#, key).as_bytes()),
        ),
        ("jwt", "built", with(&[1], &[0u8; 64])),
        // grpc_validate: [kind | 0x08 when built] + the request's bytes.
        (
            "grpc_validate",
            "send",
            with(
                &[0],
                &SendRequest {
                    user_ids: vec!["alice".into(), "bob".into(), "alice".into()],
                    notification: note("hi"),
                    ttl_seconds: 3600,
                    idempotency_key: "order-42".into(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
        ),
        (
            "grpc_validate",
            "publish",
            with(
                &[1],
                &PublishRequest {
                    topic: "orders.eu".into(),
                    notification: note("shipped"),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
        ),
        (
            "grpc_validate",
            "watch",
            with(
                &[5],
                &WatchReceiptsRequest {
                    user_ids: vec!["alice".into()],
                    notification_ids: vec!["0190b2f5-8c3e-7d4a-9b1c-2d3e4f5a6b7c".into()],
                }
                .encode_to_vec(),
            ),
        ),
        ("grpc_validate", "built-send", with(&[8], &[0x5a; 64])),
    ]
}

#[test]
#[ignore = "writes the seed corpus into the source tree"]
fn write_seeds() {
    for (target, name, data) in seeds() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    }
}

#[test]
fn seeds_are_committed() {
    for (target, name, data) in seeds() {
        let path = corpus_dir(target).join(format!("seed-{name}"));
        let committed = std::fs::read(&path).unwrap_or_default();
        // The JWT seeds hold no clock-dependent bytes; every seed is reproducible.
        assert_eq!(
            committed,
            data,
            "{} is stale: rerun write_seeds",
            path.display()
        );
    }
}
