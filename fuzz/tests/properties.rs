//! Every fuzz target on generated inputs, a short budget per target in the normal test
//! run: random bytes, and inputs built the way real clients and callers build them (whole
//! frames, header lines, JSON frames, tokens, requests) so the checks deep inside the
//! parsers are reached without coverage guidance. `PROPTEST_CASES` raises the budget.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config;

use kurir_fuzz::{client_frame, grpc_validate, http_upgrade, jwt, ws_frame, ws_read};

/// `default` cases per property, or `PROPTEST_CASES`.
fn budget(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

/// A client frame on the wire: mostly well-formed, sometimes with a reserved bit,
/// opcode, missing mask or an overlong length encoding.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        prop_oneof![
            8 => prop::sample::select(vec![0x0u8, 0x1, 0x2, 0x8, 0x9, 0xA]),
            1 => 0u8..16,
        ],
        prop_oneof![10 => Just(0u8), 1 => 1u8..8],
        prop_oneof![15 => Just(true), 1 => Just(false)],
        0u8..3,
        any::<[u8; 4]>(),
        prop_oneof![
            4 => vec(any::<u8>(), 0..64),
            2 => vec(prop::sample::select(b"{}\"type:ackping".to_vec()), 0..40),
            1 => vec(any::<u8>(), 120..300),
        ],
    )
        .prop_map(|(fin, opcode, rsv, masked, encoding, mask, payload)| {
            let mut out = vec![u8::from(fin) << 7 | rsv << 4 | opcode];
            let m = if masked { 0x80 } else { 0 };
            let n = payload.len();
            match (encoding, n) {
                (0, n) if n < 126 => out.push(m | n as u8),
                (0 | 1, n) if n <= 0xFFFF => {
                    out.push(m | 126);
                    out.extend_from_slice(&(n as u16).to_be_bytes());
                }
                (_, n) => {
                    out.push(m | 127);
                    out.extend_from_slice(&(n as u64).to_be_bytes());
                }
            }
            if masked {
                out.extend_from_slice(&mask);
                out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, k)| b ^ k));
            } else {
                out.extend_from_slice(&payload);
            }
            out
        })
}

/// Bytes with one of them flipped somewhere, or left alone.
fn damaged(bytes: Vec<u8>, at: usize, flip: u8) -> Vec<u8> {
    let mut bytes = bytes;
    if !bytes.is_empty() && flip != 0 {
        let i = at % bytes.len();
        bytes[i] ^= flip;
    }
    bytes
}

fn header_line() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec![
        "Connection",
        "Upgrade",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Key",
        "Origin",
        "Host",
        "Authorization",
        "X-Other",
    ]);
    let value = prop_oneof![
        prop::sample::select(vec![
            "Upgrade",
            "keep-alive, Upgrade",
            "upgrade ,close",
            "websocket",
            "WebSocket, h2c",
            "13",
            " 13",
            "8",
            "dGhlIHNhbXBsZSBub25jZQ==",
            "  dGhlIHNhbXBsZSBub25jZQ==  ",
            "dGhlIHNhbXBsZSBub25jZQ",
            "c2hvcnQ=",
            "Bearer abc",
            "",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,30}",
    ];
    (name, value).prop_map(|(n, v)| format!("{n}: {v}"))
}

fn client_json() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        6 => prop::sample::select(vec!["ack", "subscribe", "unsubscribe", "ping"])
            .prop_map(|k| format!("\"{k}\"")),
        1 => "\"[a-z]{0,8}\"",
        1 => prop::sample::select(vec!["1", "null", "[]", "{}", "\"\\u0061ck\""]).prop_map(str::to_owned),
    ];
    let field = (
        prop::sample::select(vec!["id", "topic", "type", "extra"]),
        prop_oneof![
            "\"[ -~]{0,12}\"",
            prop::sample::select(vec!["1", "null", "true", "[\"a\"]", "{}"])
                .prop_map(str::to_owned),
        ],
    )
        .prop_map(|(k, v)| format!("\"{k}\":{v}"));
    (kind, vec(field, 0..3), any::<bool>()).prop_map(|(kind, fields, type_first)| {
        let mut parts = fields;
        let tag = format!("\"type\":{kind}");
        if type_first {
            parts.insert(0, tag);
        } else {
            parts.push(tag);
        }
        format!("{{{}}}", parts.join(","))
    })
}

proptest! {
    #![proptest_config(budget(3000))]

    #[test]
    fn ws_frame_random(data in bytes(24)) {
        ws_frame::run(&data);
    }

    #[test]
    fn ws_frame_built(limit in any::<u8>(), f in frame(), cut in any::<usize>()) {
        let cut = cut % (f.len() + 1);
        ws_frame::run(&[&[limit][..], &f[..cut]].concat());
    }

    #[test]
    fn ws_read_random(data in bytes(256)) {
        ws_read::run(&data);
    }

    #[test]
    fn ws_read_built(
        config in any::<[u8; 3]>(),
        frames in vec(frame(), 0..6),
        at in any::<usize>(),
        flip in prop_oneof![3 => Just(0u8), 1 => any::<u8>()],
    ) {
        let stream = damaged(frames.concat(), at, flip);
        ws_read::run(&[&config[..], &stream].concat());
    }

    #[test]
    fn http_upgrade_random(data in bytes(256)) {
        http_upgrade::run(&data);
    }

    #[test]
    fn http_upgrade_built(lines in vec(header_line(), 0..7), raw in any::<bool>()) {
        let input = if raw {
            let mut r = String::from("GET /ws HTTP/1.1\r\n");
            for l in &lines {
                r.push_str(l);
                r.push_str("\r\n");
            }
            r.push_str("\r\n");
            [&[1u8][..], r.as_bytes()].concat()
        } else {
            [&[0u8][..], lines.join("\n").as_bytes()].concat()
        };
        http_upgrade::run(&input);
    }

    #[test]
    fn client_frame_random(data in bytes(64)) {
        client_frame::run(&data);
    }

    #[test]
    fn client_frame_built(text in client_json()) {
        client_frame::run(text.as_bytes());
    }

    #[test]
    fn jwt_random(data in bytes(200)) {
        jwt::run(&data);
    }

    #[test]
    fn jwt_built(choices in bytes(160)) {
        jwt::run(&[&[1u8][..], &choices].concat());
    }

    #[test]
    fn grpc_validate_decoded(kind in 0u8..8, data in bytes(200)) {
        grpc_validate::run(&[&[kind][..], &data].concat());
    }

    #[test]
    fn grpc_validate_built(kind in 0u8..8, choices in bytes(200)) {
        grpc_validate::run(&[&[kind | 0x08][..], &choices].concat());
    }
}
