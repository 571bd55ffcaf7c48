//! The request that opens a WebSocket: its headers through the gateway's upgrade check,
//! and its raw bytes through the same HTTP/1.1 server (hyper, with the gateway's
//! settings) the listener runs.
//!
//! Input: a byte choosing the path (even: headers; odd: raw request), then the bytes.
//! For headers, each line is `name: value`; a line starting with a byte below 0x10 names
//! one of the headers the check reads, so the fuzzer need not spell them.

use std::cell::RefCell;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::under_test;

/// Headers a short line prefix names.
const KNOWN: [HeaderName; 6] = [
    header::CONNECTION,
    header::UPGRADE,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_KEY,
    header::ORIGIN,
    header::HOST,
];

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check_headers(&headers(rest));
    } else {
        serve_raw(rest);
    }
}

/// A header map from `name: value` lines; lines that are not a valid header are skipped.
pub fn headers(bytes: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in bytes.split(|&b| b == b'\n') {
        let (name, value) = match line.first() {
            Some(&i) if i < 0x10 => (KNOWN[usize::from(i) % KNOWN.len()].clone(), &line[1..]),
            _ => {
                let Some(colon) = line.iter().position(|&b| b == b':') else {
                    continue;
                };
                let Ok(name) = HeaderName::from_bytes(&line[..colon]) else {
                    continue;
                };
                (name, &line[colon + 1..])
            }
        };
        if let Ok(value) = HeaderValue::from_bytes(value.trim_ascii()) {
            map.append(name, value);
        }
    }
    map
}

/// The check against its rules: an accepted request names both tokens, version 13 and a
/// 16-byte key, and gets that key's accept value; a refused one gets a 4xx answer.
fn check_headers(headers: &HeaderMap) {
    match under_test::check_upgrade(headers) {
        Ok(accept) => {
            let key = headers[header::SEC_WEBSOCKET_KEY].as_bytes().trim_ascii();
            let decoded = base64::engine::general_purpose::STANDARD.decode(key);
            assert_eq!(decoded.map(|k| k.len()).ok(), Some(16), "key {key:?}");
            assert_eq!(headers[header::SEC_WEBSOCKET_VERSION], "13");
            assert!(has_token(headers, &header::CONNECTION, "upgrade"));
            assert!(has_token(headers, &header::UPGRADE, "websocket"));
            assert_eq!(accept, under_test::accept_key(key));
            let answer = under_test::switching_protocols(&accept);
            assert_eq!(answer.status(), StatusCode::SWITCHING_PROTOCOLS);
            assert_eq!(answer.headers()[header::SEC_WEBSOCKET_ACCEPT], accept);
        }
        Err(refusal) => assert!(refusal.status().is_client_error()),
    }
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

thread_local! {
    /// One runtime per fuzzing thread: building one per input would cost more than the parse.
    static RUNTIME: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime builds"),
    );
}

/// Serve `request` (a client's raw bytes, then the end of its stream) on one HTTP/1.1
/// connection, answering every request with the upgrade check's verdict. It must end by
/// itself: a request cut short is an error, a whole one an answer.
fn serve_raw(request: &[u8]) {
    let io = TokioIo::new(Client {
        bytes: request.to_vec(),
        at: 0,
    });
    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
        let answer = match under_test::check_upgrade(req.headers()) {
            Ok(accept) => under_test::switching_protocols(&accept),
            Err(refusal) => *refusal,
        };
        Ok::<_, Infallible>(answer)
    });
    RUNTIME.with_borrow(|rt| {
        let conn = under_test::http1_builder()
            .serve_connection(io, service)
            .with_upgrades();
        // The answer (or the error) is all there is to see; the end must come.
        let _ = rt.block_on(conn);
    });
}

/// The client's end of the connection, in memory: its bytes, then the end of stream;
/// answers are swallowed.
/// (Owned: an upgraded connection hands its stream on, so it must be `'static`.)
struct Client {
    bytes: Vec<u8>,
    at: usize,
}

impl AsyncRead for Client {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = buf.remaining().min(this.bytes.len() - this.at);
        buf.put_slice(&this.bytes[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Client {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
