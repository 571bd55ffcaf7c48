//! RFC 6455 framing, server side. What we send is framed here once: a notification's
//! frame (header and JSON) is one `Bytes` that every socket it goes to writes as it is.
//! What clients send is parsed here: masked frames, fragments, control frames and the
//! size limit, each violation a [`WireError`] that names the close code it earns.

use bytes::{Bytes, BytesMut};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The longest header of a server frame (unmasked, 64-bit length).
pub const MAX_HEADER: usize = 10;

/// Control frames carry at most this much payload.
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Why a client's bytes are not a valid frame stream. Each ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// A frame or message above the size limit (close 1009).
    TooLarge,
    /// Not valid RFC 6455 from a client (close 1002).
    Protocol(&'static str),
}

/// The header of a client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: u8,
    pub mask: [u8; 4],
    /// Bytes the header takes.
    pub header_len: usize,
    pub payload_len: usize,
}

impl Header {
    /// Header and payload together.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }

    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Parse the header at the start of `buf`: `Ok(None)` while it is incomplete.
///
/// # Errors
/// Reserved bits or opcodes, an unmasked frame, a fragmented or oversized control
/// frame, or a payload above `max_payload`.
pub fn parse_header(buf: &[u8], max_payload: usize) -> Result<Option<Header>, WireError> {
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
    if b1 & 0x80 == 0 {
        return Err(WireError::Protocol("client frames must be masked"));
    }
    let (len, at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                (u64::from_be_bytes(n), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let control = opcode & 0x8 != 0;
    if control && (!fin || len > MAX_CONTROL_PAYLOAD as u64) {
        return Err(WireError::Protocol("control frames are short and whole"));
    }
    if len > max_payload as u64 {
        return Err(WireError::TooLarge);
    }
    let Some(m) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        header_len: at + 4,
        // Bounded by max_payload, a usize.
        payload_len: len as usize,
    }))
}

/// Undo the client's masking in place.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
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
        let (header, n) = header(opcode, len);
        let start = MAX_HEADER - n;
        self.buf[start..MAX_HEADER].copy_from_slice(&header[..n]);
        let mut bytes = Bytes::from(self.buf);
        let _ = bytes.split_to(start);
        bytes
    }
}

/// A server frame's header for a `len`-byte payload, and how many of its bytes count.
fn header(opcode: u8, len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut h = [0u8; MAX_HEADER];
    h[0] = 0x80 | opcode;
    let n = if len < 126 {
        h[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, n)
}

/// A text frame of `payload`.
pub fn text(payload: &[u8]) -> Bytes {
    frame(OP_TEXT, payload)
}

/// A whole frame of `payload`.
pub fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let (header, n) = header(opcode, payload.len());
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

/// A close frame: the code, then a reason of at most 123 bytes.
pub fn close(code: u16, reason: &str) -> Bytes {
    let reason = crate::ws::close::truncate(reason, MAX_CONTROL_PAYLOAD - 2);
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    frame(OP_CLOSE, &payload)
}

/// The payload of a server frame (tests).
#[cfg(test)]
pub fn payload_of(frame: &[u8]) -> &[u8] {
    let at = match frame[1] & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    &frame[at..]
}

/// A client frame as a browser would send it (tests).
#[cfg(test)]
pub fn masked(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
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
    let mut body = payload.to_vec();
    unmask(&mut body, mask);
    out.extend_from_slice(&body);
    out
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
    fn bad_client_frames_are_refused() {
        let ok = masked(true, OP_TEXT, b"{}", [9, 9, 9, 9]);
        let mut unmasked = ok.clone();
        unmasked[1] &= 0x7F;
        assert!(matches!(
            parse_header(&unmasked, 100),
            Err(WireError::Protocol(_))
        ));
        let mut rsv = ok.clone();
        rsv[0] |= 0x40;
        assert!(matches!(
            parse_header(&rsv, 100),
            Err(WireError::Protocol(_))
        ));
        let mut op = ok.clone();
        op[0] = 0x83;
        assert!(matches!(
            parse_header(&op, 100),
            Err(WireError::Protocol(_))
        ));
        let long_ping = masked(true, OP_PING, &[0; 126], [0; 4]);
        assert!(matches!(
            parse_header(&long_ping, 1000),
            Err(WireError::Protocol(_))
        ));
        let split_ping = masked(false, OP_PING, b"", [0; 4]);
        assert!(matches!(
            parse_header(&split_ping, 1000),
            Err(WireError::Protocol(_))
        ));
        // The size limit is judged from the header alone, before the payload arrives.
        let huge = masked(true, OP_TEXT, &[0; 2000], [0; 4]);
        assert_eq!(parse_header(&huge[..10], 1000), Err(WireError::TooLarge));
    }
}
