//! The `text/event-stream` format (HTML Living Standard, "Server-sent events"). Every
//! event is an unnamed one whose `data` is the same JSON frame a WebSocket client gets,
//! so one parser serves both; stored notifications carry `id: <cursor>`, heartbeats are
//! comments, and the end of a stream is a `close` frame.

use bytes::{BufMut, Bytes, BytesMut};
use kurir_wire::frame::payload_of;
use serde::Serialize;

use crate::protocol::CloseReason;

/// One event whose data is the payload of a WebSocket-framed JSON frame (server
/// frames are built once, framed for WebSocket; this takes their JSON back out).
pub fn from_frame(frame: &[u8], id: Option<&str>) -> Bytes {
    data(payload_of(frame), id)
}

/// One event with `json` as its data. JSON from `serde_json` holds no raw line breaks,
/// so it is one `data:` line.
pub fn data(json: &[u8], id: Option<&str>) -> Bytes {
    let mut buf = BytesMut::with_capacity(json.len() + 64);
    append(&mut buf, json, id);
    buf.freeze()
}

/// [`data`], written at the end of `buf` (several events in one chunk).
pub fn append(buf: &mut BytesMut, json: &[u8], id: Option<&str>) {
    buf.reserve(json.len() + 64);
    if let Some(id) = id {
        buf.put_slice(b"id: ");
        // A line break would end the field early; cursors have none, but the format
        // must hold whatever the store returns.
        for b in id.bytes().filter(|b| !matches!(b, b'\r' | b'\n' | 0)) {
            buf.put_u8(b);
        }
        buf.put_u8(b'\n');
    }
    buf.put_slice(b"data: ");
    buf.put_slice(json);
    buf.put_slice(b"\n\n");
}

/// The first bytes of a stream: how long a browser waits before reconnecting.
pub fn retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// A heartbeat: a comment, which `EventSource` ignores and proxies see as traffic.
pub fn heartbeat() -> Bytes {
    Bytes::from_static(b": ping\n\n")
}

#[derive(Serialize)]
struct Close<'a> {
    r#type: &'static str,
    code: u16,
    reason: &'a str,
    reconnect: bool,
}

/// The last event of a stream: the close code and reason a WebSocket would get, and
/// whether to reconnect. Streams that should not come back set a long `retry` too, for
/// clients that reconnect by themselves whatever the data says.
pub fn close(reason: &CloseReason, retry_ms: u64) -> Bytes {
    let json = serde_json::to_vec(&Close {
        r#type: "close",
        code: reason.code(),
        reason: &reason.text(),
        reconnect: reason.reconnect(),
    })
    .unwrap_or_default();
    let mut buf = BytesMut::from(&retry(retry_ms)[..]);
    append(&mut buf, &json, None);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_cannot_break_out_of_its_line() {
        let e = data(b"{}", Some("1-2\n\ndata: evil"));
        assert_eq!(&e[..], b"id: 1-2data: evil\ndata: {}\n\n");
    }

    #[test]
    fn a_close_says_whether_to_come_back() {
        let e = close(&CloseReason::Draining, 1500);
        let text = std::str::from_utf8(&e).unwrap();
        assert!(text.starts_with("retry: 1500\n\ndata: {"), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(text.split("data: ").nth(1).unwrap().trim()).unwrap();
        assert_eq!(json["type"], "close");
        assert_eq!(json["code"], 1012);
        assert_eq!(json["reconnect"], true);
    }
}
