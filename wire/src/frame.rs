//! The frame codec, free of IO: opcodes, headers in both directions, masking, close
//! codes. What a server sends is framed here once (a notification's header and payload
//! are one `Bytes` every socket writes as it is); what a peer sends is judged here, each
//! violation a [`WireError`] that names the close code it earns.

use bytes::{Bytes, BytesMut};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The longest header of a server frame (unmasked, 64-bit length).
pub const MAX_HEADER: usize = 10;

/// Control frames carry at most this much payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A close reason fits in a control frame after its two-byte code.
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// Why a peer's bytes are not a valid frame stream. Each ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A frame or message above the size limit (close 1009).
    #[error("frame or message too large")]
    TooLarge,
    /// Not valid RFC 6455 (close 1002).
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
}

/// The header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: u8,
    /// All zero for an unmasked (server) frame.
    pub mask: [u8; 4],
    /// Bytes the header takes.
    pub header_len: usize,
    pub payload_len: usize,
}

impl Header {
    /// Header and payload together.
    /// Saturating: a payload limit near `usize::MAX` must not wrap the sum.
    pub fn frame_len(&self) -> usize {
        self.header_len.saturating_add(self.payload_len)
    }

    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Parse a client frame's header at the start of `buf` (server side): `Ok(None)` while
/// it is incomplete.
///
/// # Errors
/// Reserved bits or opcodes, an unmasked frame, a length not in its shortest form or
/// with the top bit set, a fragmented or oversized control frame, or a payload above
/// `max_payload`: all judged from the header alone, before any payload arrives.
pub fn parse_header(buf: &[u8], max_payload: usize) -> Result<Option<Header>, WireError> {
    parse(buf, max_payload, true)
}

/// Parse a server frame's header at the start of `buf` (client side): `Ok(None)` while
/// it is incomplete.
///
/// # Errors
/// As [`parse_header`], except that server frames must not be masked.
pub fn parse_server_header(buf: &[u8], max_payload: usize) -> Result<Option<Header>, WireError> {
    parse(buf, max_payload, false)
}

fn parse(buf: &[u8], max_payload: usize, masked: bool) -> Result<Option<Header>, WireError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(WireError::Protocol("reserved bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(WireError::Protocol("reserved opcode"));
    }
    match (b1 & 0x80 != 0, masked) {
        (false, true) => return Err(WireError::Protocol("client frames must be masked")),
        (true, false) => return Err(WireError::Protocol("server frames must not be masked")),
        _ => {}
    }
    let control = opcode & 0x8 != 0;
    let (len, at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => {
                let n = u16::from_be_bytes([b[0], b[1]]);
                if n < 126 {
                    return Err(WireError::Protocol("length not in its shortest form"));
                }
                (u64::from(n), 4)
            }
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                let n = u64::from_be_bytes(n);
                if n >> 63 != 0 {
                    return Err(WireError::Protocol("64-bit length with the top bit set"));
                }
                if n <= 0xFFFF {
                    return Err(WireError::Protocol("length not in its shortest form"));
                }
                (n, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if control && (!fin || len > MAX_CONTROL_PAYLOAD as u64) {
        return Err(WireError::Protocol("control frames are short and whole"));
    }
    if len > max_payload as u64 {
        return Err(WireError::TooLarge);
    }
    let mask = if masked {
        let Some(m) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        [m[0], m[1], m[2], m[3]]
    } else {
        [0; 4]
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        header_len: at + if masked { 4 } else { 0 },
        // Bounded by max_payload, a usize.
        payload_len: len as usize,
    }))
}

/// Undo (or apply) a mask in place.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    unmask_from(payload, mask, 0);
}

/// Undo a mask in place on a part of a payload that starts `offset` bytes into it: a
/// frame can be unmasked piece by piece as its bytes arrive.
pub fn unmask_from(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    let mask = {
        let r = offset % 4;
        [
            mask[r],
            mask[(r + 1) % 4],
            mask[(r + 2) % 4],
            mask[(r + 3) % 4],
        ]
    };
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 §7.4): the defined codes
/// 1000–1003 and 1007–1011, the registered 1012–1014, and 3000–4999 (libraries and
/// applications). 1004 is reserved, 1005, 1006 and 1015 must never be on the wire, and
/// the rest below 3000 is unassigned; 5000 and above is outside the ranges.
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A frame being written: payload bytes go in after [`MAX_HEADER`] bytes of room, and
/// [`FrameBuf::finish`] puts the header in that room, so the payload is never copied.
#[derive(Debug, Clone)]
pub struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    /// Room for `payload` bytes before growing.
    pub fn with_capacity(payload: usize) -> Self {
        let mut buf = Vec::with_capacity(MAX_HEADER + payload);
        buf.resize(MAX_HEADER, 0);
        Self { buf }
    }

    /// Where the payload goes (append only).
    pub fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub fn payload_len(&self) -> usize {
        self.buf.len() - MAX_HEADER
    }

    /// The payload so far.
    pub fn payload_bytes(&self) -> &[u8] {
        &self.buf[MAX_HEADER..]
    }

    /// The whole frame, `fin` set, unmasked.
    pub fn finish(mut self, opcode: u8) -> Bytes {
        let len = self.payload_len();
        let (header, n) = header(true, opcode, len, false);
        let start = MAX_HEADER - n;
        self.buf[start..MAX_HEADER].copy_from_slice(&header[..n]);
        let mut bytes = Bytes::from(self.buf);
        let _ = bytes.split_to(start);
        bytes
    }
}

/// A frame's header for a `len`-byte payload (shortest length form, mask bit as
/// asked; the key follows separately), and how many of its bytes count.
fn header(fin: bool, opcode: u8, len: usize, masked: bool) -> ([u8; MAX_HEADER], usize) {
    let mut h = [0u8; MAX_HEADER];
    h[0] = if fin { 0x80 } else { 0 } | opcode;
    let mask_bit = if masked { 0x80 } else { 0 };
    let n = if len < 126 {
        h[1] = mask_bit | len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        h[1] = mask_bit | 126;
        h[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        h[1] = mask_bit | 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, n)
}

/// A text frame of `payload`.
pub fn text(payload: &[u8]) -> Bytes {
    frame(OP_TEXT, payload)
}

/// A whole server frame of `payload`.
pub fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let (header, n) = header(true, opcode, payload.len(), false);
    let mut out = BytesMut::with_capacity(n + payload.len());
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(payload);
    out.freeze()
}

/// An empty ping (keepalive; browsers answer it by themselves). Static: no allocation.
pub fn ping() -> Bytes {
    static PING: Bytes = Bytes::from_static(&[0x80 | OP_PING, 0]);
    PING.clone()
}

/// A close frame: the code, then as much of `reason` as fits (123 bytes, cut on a
/// character boundary).
pub fn close(code: u16, reason: &str) -> Bytes {
    let reason = truncate(reason, MAX_CLOSE_REASON);
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    frame(OP_CLOSE, &payload)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A client frame (client side, and tests of the server side): masked with `mask`, as
/// RFC 6455 §5.3 requires of clients.
pub fn masked(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let (header, n) = header(fin, opcode, payload.len(), true);
    let mut out = Vec::with_capacity(n + 4 + payload.len());
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(&mask);
    let body = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[body..], mask);
    out
}

/// The payload of a whole unmasked frame (a server frame, as a client or a test sees it).
pub fn payload_of(frame: &[u8]) -> &[u8] {
    let at = match frame[1] & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    &frame[at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_have_the_shortest_header() {
        assert_eq!(&text(b"hi")[..], b"\x81\x02hi");
        let mid = text(&[b'a'; 300]);
        assert_eq!(&mid[..4], &[0x81, 126, 0x01, 0x2C]);
        assert_eq!(mid.len(), 304);
        let big = frame(OP_BINARY, &vec![0; 70_000]);
        assert_eq!(&big[..2], &[0x82, 127]);
        assert_eq!(u64::from_be_bytes(big[2..10].try_into().unwrap()), 70_000);
        assert_eq!(&close(1012, "bye")[..], b"\x88\x05\x03\xf4bye");
        assert_eq!(close(1000, &"é".repeat(100)).len(), 2 + 2 + 122);
    }

    #[test]
    fn frame_buf_puts_the_header_in_front_without_copying() {
        for len in [0, 5, 125, 126, 300, 65_535, 65_536] {
            let mut b = FrameBuf::with_capacity(len);
            b.payload().extend(std::iter::repeat_n(b'x', len));
            let framed = b.clone().finish(OP_TEXT);
            assert_eq!(framed, text(&vec![b'x'; len]), "len {len}");
            assert_eq!(payload_of(&framed).len(), len);
        }
    }

    #[test]
    fn client_headers_parse_in_pieces() {
        let f = masked(true, OP_TEXT, &[b'z'; 200], [1, 2, 3, 4]);
        for cut in 0..8 {
            assert_eq!(parse_header(&f[..cut], 1000), Ok(None), "cut {cut}");
        }
        let h = parse_header(&f, 1000).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.header_len, h.payload_len),
            (true, OP_TEXT, 8, 200)
        );
        let mut body = f[h.header_len..].to_vec();
        unmask(&mut body, h.mask);
        assert_eq!(body, vec![b'z'; 200]);
    }

    #[test]
    fn unmasking_in_pieces_equals_unmasking_at_once() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let f = masked(true, OP_BINARY, &(0..=255).collect::<Vec<u8>>(), mask);
        let body = &f[8..];
        for cut in [0, 1, 3, 5, 128, 255] {
            let mut b = body.to_vec();
            let (a, rest) = b.split_at_mut(cut);
            unmask_from(a, mask, 0);
            unmask_from(rest, mask, cut);
            assert_eq!(b, (0..=255).collect::<Vec<u8>>(), "cut {cut}");
        }
    }

    #[test]
    fn server_headers_parse_on_the_client_side() {
        let f = text(&[b'a'; 300]);
        let h = parse_server_header(&f, 1000).unwrap().unwrap();
        assert_eq!((h.header_len, h.payload_len, h.mask), (4, 300, [0; 4]));
        assert_eq!(parse_server_header(&f[..3], 1000), Ok(None));
        let client = masked(true, OP_TEXT, b"x", [1; 4]);
        assert!(matches!(
            parse_server_header(&client, 1000),
            Err(WireError::Protocol(_))
        ));
    }

    fn is_protocol(r: Result<Option<Header>, WireError>) -> bool {
        matches!(r, Err(WireError::Protocol(_)))
    }

    #[test]
    fn bad_client_frames_are_refused() {
        let ok = masked(true, OP_TEXT, b"{}", [9, 9, 9, 9]);
        let mut unmasked = ok.clone();
        unmasked[1] &= 0x7F;
        assert!(is_protocol(parse_header(&unmasked, 100)));
        let mut rsv = ok.clone();
        rsv[0] |= 0x40;
        assert!(is_protocol(parse_header(&rsv, 100)));
        let mut op = ok.clone();
        op[0] = 0x83;
        assert!(is_protocol(parse_header(&op, 100)));
        let long_ping = masked(true, OP_PING, &[0; 126], [0; 4]);
        assert!(is_protocol(parse_header(&long_ping, 1000)));
        let split_ping = masked(false, OP_PING, b"", [0; 4]);
        assert!(is_protocol(parse_header(&split_ping, 1000)));
        // The size limit is judged from the header alone, before the payload arrives.
        let huge = masked(true, OP_TEXT, &[0; 2000], [0; 4]);
        assert_eq!(parse_header(&huge[..10], 1000), Err(WireError::TooLarge));
    }

    #[test]
    fn lengths_must_be_in_their_shortest_form() {
        // 5 bytes announced in the 16-bit form, and in the 64-bit form.
        let sixteen = [0x81, 0x80 | 126, 0, 5, 0, 0, 0, 0];
        assert!(is_protocol(parse_header(&sixteen, 1 << 20)));
        let mut sixty_four = vec![0x81, 0x80 | 127];
        sixty_four.extend_from_slice(&5u64.to_be_bytes());
        assert!(is_protocol(parse_header(&sixty_four, 1 << 20)));
        // 65 535 fits 16 bits: the 64-bit form of it is refused too.
        let mut edge = vec![0x82, 0x80 | 127];
        edge.extend_from_slice(&65_535u64.to_be_bytes());
        assert!(is_protocol(parse_header(&edge, 1 << 20)));
        // The shortest forms themselves are fine.
        let mut ok = vec![0x82, 0x80 | 127];
        ok.extend_from_slice(&65_536u64.to_be_bytes());
        ok.extend_from_slice(&[0; 4]);
        assert_eq!(
            parse_header(&ok, 1 << 20).unwrap().unwrap().payload_len,
            65_536
        );
        let ok16 = [0x82, 0x80 | 126, 0, 126, 0, 0, 0, 0];
        assert_eq!(parse_header(&ok16, 1000).unwrap().unwrap().payload_len, 126);
        // The client side holds servers to the same rule.
        assert!(is_protocol(parse_server_header(&[0x81, 126, 0, 5], 1000)));
    }

    #[test]
    fn a_64_bit_length_with_the_top_bit_set_is_a_protocol_error() {
        let mut f = vec![0x82, 0x80 | 127];
        f.extend_from_slice(&(1u64 << 63 | 70_000).to_be_bytes());
        // A protocol error (1002), not "too large" (1009), whatever the size limit.
        assert!(is_protocol(parse_header(&f, usize::MAX)));
        assert!(is_protocol(parse_header(&f, 100)));
    }

    #[test]
    fn close_codes_follow_rfc_6455_section_7_4() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(close_code_allowed(ok), "{ok}");
        }
        for ok in [1012, 1013, 1014] {
            assert!(close_code_allowed(ok), "{ok} (registered since)");
        }
        for bad in [
            0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!close_code_allowed(bad), "{bad}");
        }
    }
}
