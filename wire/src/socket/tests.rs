use super::*;
use crate::frame::{masked, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_TEXT};
use crate::limits::PartialBudget;
use tokio::io::{AsyncReadExt, DuplexStream};

fn limits(max: usize) -> Arc<ReadLimits> {
    Arc::new(ReadLimits::new(max, Duration::from_secs(10), 1 << 20))
}

fn pair(max: usize) -> (WsSocket<DuplexStream>, DuplexStream) {
    let (server, client) = tokio::io::duplex(1 << 20);
    (WsSocket::new(server, &[], limits(max)), client)
}

/// Poll the socket once: what it can tell from the bytes already there.
async fn poll_once(ws: &mut WsSocket<DuplexStream>) -> Poll<Result<Incoming, ReadError>> {
    poll_fn(|cx| Poll::Ready(ws.poll_read(cx))).await
}

#[tokio::test]
async fn reads_messages_split_and_coalesced() {
    let (mut ws, mut client) = pair(1000);
    let mut bytes = masked(true, OP_TEXT, b"{\"type\":\"ping\"}", [1, 2, 3, 4]);
    bytes.extend(masked(true, OP_PING, b"p", [5, 6, 7, 8]));
    bytes.extend(masked(false, OP_TEXT, b"ab", [0; 4]));
    bytes.extend(masked(true, OP_PING, b"", [0; 4]));
    bytes.extend(masked(true, OP_CONTINUATION, "cé".as_bytes(), [7; 4]));
    // One byte at a time, then everything at once.
    for b in &bytes[..5] {
        client.write_all(&[*b]).await.unwrap();
    }
    client.write_all(&bytes[5..]).await.unwrap();
    assert_eq!(
        ws.read().await.unwrap(),
        Incoming::Text("{\"type\":\"ping\"}".into())
    );
    assert_eq!(
        ws.read().await.unwrap(),
        Incoming::Ping(Bytes::from_static(b"p"))
    );
    assert_eq!(ws.read().await.unwrap(), Incoming::Ping(Bytes::new()));
    assert_eq!(ws.read().await.unwrap(), Incoming::Text("abcé".into()));
    assert!(ws.rx.capacity() == 0, "nothing kept once all is read");
    assert!(ws.partial.is_none(), "no deadline kept once all is read");
    client
        .write_all(&masked(true, OP_BINARY, b"\x00", [0; 4]))
        .await
        .unwrap();
    assert_eq!(
        ws.read().await.unwrap(),
        Incoming::Binary(Bytes::from_static(b"\x00"))
    );
    client
        .write_all(&masked(true, OP_CLOSE, b"\x03\xe8ok", [3; 4]))
        .await
        .unwrap();
    assert_eq!(ws.read().await.unwrap(), Incoming::Close(Some(1000)));
    drop(client);
    assert!(matches!(ws.read().await, Err(ReadError::Closed)));
    assert_eq!(ws.limits.budget.used(), 0);
}

#[tokio::test]
async fn text_split_inside_frames_and_characters() {
    let (mut ws, mut client) = pair(1000);
    let text = "κόσμε 𝄞 and more text";
    let mut bytes = masked(false, OP_TEXT, &text.as_bytes()[..3], [1, 2, 3, 4]);
    bytes.extend(masked(
        true,
        OP_CONTINUATION,
        &text.as_bytes()[3..],
        [9, 8, 7, 6],
    ));
    for b in &bytes {
        client.write_all(&[*b]).await.unwrap();
        tokio::task::yield_now().await;
        if let Poll::Ready(r) = poll_once(&mut ws).await {
            assert_eq!(r.unwrap(), Incoming::Text(text.into()));
            return;
        }
    }
    panic!("the message never completed");
}

#[tokio::test]
async fn limits_and_protocol_errors() {
    let (mut ws, mut client) = pair(100);
    client
        .write_all(&masked(true, OP_TEXT, &[b'a'; 101], [0; 4])[..8])
        .await
        .unwrap();
    assert!(matches!(
        ws.read().await,
        Err(ReadError::Wire(WireError::TooLarge))
    ));

    let (mut ws, mut client) = pair(100);
    let mut bytes = masked(false, OP_TEXT, &[b'a'; 60], [0; 4]);
    bytes.extend(masked(true, OP_CONTINUATION, &[b'a'; 60], [0; 4]));
    client.write_all(&bytes).await.unwrap();
    assert!(
        matches!(ws.read().await, Err(ReadError::Wire(WireError::TooLarge))),
        "the limit holds for a message in fragments"
    );

    let (mut ws, mut client) = pair(100);
    client
        .write_all(&masked(true, OP_CONTINUATION, b"x", [0; 4]))
        .await
        .unwrap();
    assert!(matches!(
        ws.read().await,
        Err(ReadError::Wire(WireError::Protocol(_)))
    ));

    let (mut ws, mut client) = pair(100);
    let mut bytes = masked(false, OP_TEXT, b"x", [0; 4]);
    bytes.extend(masked(true, OP_BINARY, b"y", [0; 4]));
    client.write_all(&bytes).await.unwrap();
    assert!(matches!(
        ws.read().await,
        Err(ReadError::Wire(WireError::Protocol(_)))
    ));

    let (mut ws, mut client) = pair(100);
    client
        .write_all(&masked(true, OP_TEXT, b"\xff\xfe", [0; 4]))
        .await
        .unwrap();
    assert!(matches!(ws.read().await, Err(ReadError::InvalidText)));
}

#[tokio::test]
async fn non_minimal_and_top_bit_lengths_fail_the_connection() {
    let (mut ws, mut client) = pair(1 << 20);
    // "hi" announced in the 16-bit form.
    client
        .write_all(&[0x81, 0x80 | 126, 0, 2, 0, 0, 0, 0, b'h', b'i'])
        .await
        .unwrap();
    assert!(matches!(
        ws.read().await,
        Err(ReadError::Wire(WireError::Protocol(_)))
    ));
    let (mut ws, mut client) = pair(usize::MAX);
    let mut f = vec![0x82, 0x80 | 127];
    f.extend_from_slice(&(u64::MAX).to_be_bytes());
    client.write_all(&f).await.unwrap();
    assert!(matches!(
        ws.read().await,
        Err(ReadError::Wire(WireError::Protocol(_)))
    ));
}

#[tokio::test]
async fn close_codes_are_checked() {
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let (mut ws, mut client) = pair(100);
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(b"reason");
        client
            .write_all(&masked(true, OP_CLOSE, &payload, [1, 2, 3, 4]))
            .await
            .unwrap();
        assert!(
            matches!(
                ws.read().await,
                Err(ReadError::Wire(WireError::Protocol(_)))
            ),
            "close code {code}"
        );
    }
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1011, 1012, 1014, 3000, 4999,
    ] {
        let (mut ws, mut client) = pair(100);
        client
            .write_all(&masked(true, OP_CLOSE, &code.to_be_bytes(), [1, 2, 3, 4]))
            .await
            .unwrap();
        assert_eq!(ws.read().await.unwrap(), Incoming::Close(Some(code)));
    }
    let (mut ws, mut client) = pair(100);
    client
        .write_all(&masked(true, OP_CLOSE, b"\x03\xe8\xce\xba\xe1", [0; 4]))
        .await
        .unwrap();
    assert!(
        matches!(ws.read().await, Err(ReadError::InvalidText)),
        "the reason must be UTF-8"
    );
    let (mut ws, mut client) = pair(100);
    client
        .write_all(&masked(true, OP_CLOSE, b"\x03", [0; 4]))
        .await
        .unwrap();
    assert!(matches!(
        ws.read().await,
        Err(ReadError::Wire(WireError::Protocol(_)))
    ));
}

#[tokio::test]
async fn invalid_utf8_fails_on_the_first_bad_byte_before_the_message_ends() {
    // Within one frame: 100 bytes announced, a bad byte among the first ten.
    let (mut ws, mut client) = pair(1000);
    let mut bad = b"valid \xf4\x90".to_vec();
    bad.resize(100, b'a');
    let f = masked(true, OP_TEXT, &bad, [5, 6, 7, 8]);
    client.write_all(&f[..6 + 10]).await.unwrap();
    assert!(
        matches!(
            poll_once(&mut ws).await,
            Poll::Ready(Err(ReadError::InvalidText))
        ),
        "failed before the frame is whole"
    );

    // In a later fragment, before the message's last fragment.
    let (mut ws, mut client) = pair(1000);
    let mut bytes = masked(false, OP_TEXT, "κό".as_bytes(), [1, 2, 3, 4]);
    bytes.extend(masked(false, OP_CONTINUATION, b"ok \xc0\xaf", [4, 3, 2, 1]));
    client.write_all(&bytes).await.unwrap();
    assert!(matches!(
        poll_once(&mut ws).await,
        Poll::Ready(Err(ReadError::InvalidText))
    ));

    // A character cut between fragments is fine; an unfinished one at the end is not.
    let (mut ws, mut client) = pair(1000);
    let mut bytes = masked(false, OP_TEXT, b"\xf0\x9d", [1, 2, 3, 4]);
    bytes.extend(masked(true, OP_CONTINUATION, b"\x84", [4, 3, 2, 1]));
    client.write_all(&bytes).await.unwrap();
    assert!(matches!(
        poll_once(&mut ws).await,
        Poll::Ready(Err(ReadError::InvalidText))
    ));
}

#[tokio::test]
async fn buffers_grow_with_what_arrives_not_with_what_a_header_announces() {
    let limits = Arc::new(ReadLimits::new(64 * 1024, Duration::from_secs(10), 1 << 20));
    let (server, mut client) = tokio::io::duplex(1 << 20);
    let mut ws = WsSocket::new(server, &[], limits.clone());
    // 60 000 bytes announced, 10 sent.
    let f = masked(false, OP_BINARY, &[7; 60_000], [1, 2, 3, 4]);
    client.write_all(&f[..8 + 10]).await.unwrap();
    assert!(poll_once(&mut ws).await.is_pending());
    assert!(
        ws.rx.capacity() < 4096,
        "{} bytes kept for 18 received",
        ws.rx.capacity()
    );
    assert!(limits.budget.used() < 4096, "{}", limits.budget.used());
    // The rest arrives: the fragment is kept, and its bytes counted, until the end.
    client.write_all(&f[18..]).await.unwrap();
    assert!(poll_once(&mut ws).await.is_pending());
    let held = limits.budget.used();
    assert!((60_000..=2 * 64 * 1024).contains(&held), "{held}");
    client
        .write_all(&masked(true, OP_CONTINUATION, b"", [0; 4]))
        .await
        .unwrap();
    let Poll::Ready(Ok(Incoming::Binary(b))) = poll_once(&mut ws).await else {
        panic!("the message is whole");
    };
    assert_eq!(b.len(), 60_000);
    assert_eq!(
        limits.budget.used(),
        0,
        "released when the message completes"
    );
}

#[tokio::test(start_paused = true)]
async fn pings_do_not_keep_a_partial_message_alive() {
    let (mut ws, mut client) = pair(64 * 1024);
    let start = tokio::time::Instant::now();
    client
        .write_all(&masked(false, OP_TEXT, &[b'a'; 3000], [1; 4]))
        .await
        .unwrap();
    let mut pings = 0;
    let err = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        client
            .write_all(&masked(true, OP_PING, b"", [2; 4]))
            .await
            .unwrap();
        match ws.read().await {
            Ok(Incoming::Ping(_)) => pings += 1,
            Ok(other) => panic!("{other:?}"),
            Err(e) => break e,
        }
        assert!(pings < 30, "the partial message outlived its deadline");
    };
    assert!(matches!(err, ReadError::MessageTooSlow), "{err:?}");
    assert!(pings >= 8, "{pings}");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(10) && elapsed <= Duration::from_secs(11),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_partial_message_times_out_and_each_message_gets_its_own_time() {
    let (mut ws, mut client) = pair(64 * 1024);
    // Slow but whole within the limit, twice in a row: each message has 10 s.
    for _ in 0..2 {
        client
            .write_all(&masked(false, OP_TEXT, b"ab", [1; 4]))
            .await
            .unwrap();
        assert!(poll_once(&mut ws).await.is_pending());
        tokio::time::sleep(Duration::from_secs(7)).await;
        client
            .write_all(&masked(true, OP_CONTINUATION, b"c", [1; 4]))
            .await
            .unwrap();
        assert_eq!(ws.read().await.unwrap(), Incoming::Text("abc".into()));
    }
    // An incomplete frame that stays incomplete: the read itself ends at the deadline.
    let f = masked(true, OP_TEXT, b"hello", [1; 4]);
    client.write_all(&f[..8]).await.unwrap();
    let start = tokio::time::Instant::now();
    assert!(matches!(ws.read().await, Err(ReadError::MessageTooSlow)));
    assert_eq!(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test]
async fn an_idle_socket_keeps_no_timer_and_reserves_nothing() {
    let (mut ws, mut client) = pair(1000);
    client
        .write_all(&masked(true, OP_TEXT, b"hi", [1; 4]))
        .await
        .unwrap();
    assert_eq!(ws.read().await.unwrap(), Incoming::Text("hi".into()));
    assert!(poll_once(&mut ws).await.is_pending());
    assert!(ws.partial.is_none());
    assert_eq!(ws.rx.capacity(), 0);
    assert_eq!(ws.limits.budget.used(), 0);
}

#[tokio::test]
async fn a_socket_that_cannot_reserve_from_the_node_budget_is_failed() {
    let limits = Arc::new(ReadLimits {
        max_message: 64 * 1024,
        partial_timeout: Duration::from_secs(10),
        budget: Arc::new(PartialBudget::new(8 * 1024)),
    });
    let open = || {
        let (server, client) = tokio::io::duplex(1 << 20);
        (WsSocket::new(server, &[], limits.clone()), client)
    };
    let part = masked(false, OP_BINARY, &[0; 5000], [1; 4]);
    let (mut a, mut ca) = open();
    ca.write_all(&part).await.unwrap();
    assert!(poll_once(&mut a).await.is_pending());
    let held_by_a = limits.budget.used();
    assert!(held_by_a >= 5000, "{held_by_a}");
    let (mut b, mut cb) = open();
    cb.write_all(&part).await.unwrap();
    assert!(
        matches!(
            poll_once(&mut b).await,
            Poll::Ready(Err(ReadError::Overloaded))
        ),
        "the second partial message does not fit"
    );
    drop(b);
    assert_eq!(
        limits.budget.used(),
        held_by_a,
        "a failed socket takes nothing"
    );
    drop(a);
    assert_eq!(
        limits.budget.used(),
        0,
        "a dropped socket gives its share back"
    );
    let (mut c, mut cc) = open();
    cc.write_all(&part).await.unwrap();
    assert!(poll_once(&mut c).await.is_pending(), "room again");
}

#[tokio::test]
async fn early_bytes_are_read_first() {
    let (server, _client) = tokio::io::duplex(64);
    let early = masked(true, OP_TEXT, b"hi", [1; 4]);
    let mut ws = WsSocket::new(server, &early, limits(100));
    assert_eq!(ws.read().await.unwrap(), Incoming::Text("hi".into()));
}

#[tokio::test]
async fn writes_batches_whole_even_through_a_small_pipe() {
    // A pipe smaller than the batch: writes complete in pieces while the peer reads.
    let (server, mut client) = tokio::io::duplex(7);
    let mut ws = WsSocket::new(server, &[], limits(100));
    let frames: Vec<Bytes> = (0..100)
        .map(|i| frame::text(format!("frame {i}").as_bytes()))
        .collect();
    let mut expected: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
    expected.extend_from_slice(&frame::close(1012, "drain"));
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        got
    });
    ws.write(&frames).await.unwrap();
    let wait = Duration::from_secs(5);
    ws.close(Some(frame::close(1012, "drain")), wait, wait)
        .await;
    assert_eq!(
        reader.await.unwrap(),
        expected,
        "frames, then the close frame, then EOF"
    );
}
