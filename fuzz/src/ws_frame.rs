//! A client frame's header and its masking, against a model written from RFC 6455 §5.2.
//!
//! Input: one byte choosing the size limit, then the bytes the header parser sees.

use crate::under_test::{self, FrameFault, FrameHead};

/// Size limits worth crossing: none, the control-frame bound, each length encoding's
/// edge, the gateway's default-sized limits, and none at all.
pub const LIMITS: [usize; 8] = [0, 1, 125, 126, 65_535, 65_536, 1 << 20, usize::MAX];

/// The limit a target input's first byte selects.
pub fn limit(selector: u8) -> usize {
    LIMITS[usize::from(selector) % LIMITS.len()]
}

pub fn run(data: &[u8]) {
    let Some((&selector, buf)) = data.split_first() else {
        return;
    };
    let max = limit(selector);
    let got = under_test::parse_header(buf, max);
    let want = model(buf, max);
    assert_eq!(got, want, "header of {buf:02x?} with limit {max}");
    let Ok(Some(h)) = got else { return };
    assert!(h.header_len <= buf.len());

    // Unmasking is the byte-wise XOR, whatever the length and alignment, and undoes itself.
    let payload = &buf[h.header_len..buf.len().min(h.header_len.saturating_add(h.payload_len))];
    for start in 0..payload.len().min(4) {
        let original = &payload[start..];
        let mut fast = original.to_vec();
        under_test::unmask(&mut fast, h.mask);
        let slow: Vec<u8> = original
            .iter()
            .zip(h.mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        assert_eq!(fast, slow, "unmask of {} bytes", original.len());
        under_test::unmask(&mut fast, h.mask);
        assert_eq!(fast, original);
    }
}

/// RFC 6455 §5.2 for a server reading a client: `Ok(None)` until the header is whole.
fn model(buf: &[u8], max: usize) -> Result<Option<FrameHead>, FrameFault> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (fin, rsv, opcode) = (buf[0] >> 7 == 1, (buf[0] >> 4) & 0b111, buf[0] & 0xF);
    let (masked, len7) = (buf[1] >> 7 == 1, buf[1] & 0x7F);
    if rsv != 0 || !matches!(opcode, 0x0..=0x2 | 0x8..=0xA) || !masked {
        return Err(FrameFault::Protocol);
    }
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    if buf.len() < 2 + ext {
        return Ok(None);
    }
    let len = match ext {
        0 => u128::from(len7),
        _ => buf[2..2 + ext]
            .iter()
            .fold(0u128, |n, &b| (n << 8) | u128::from(b)),
    };
    // "The minimal number of bytes MUST be used to encode the length", and a 64-bit
    // length's most significant bit MUST be 0.
    let minimal = match ext {
        2 => len >= 126,
        8 => len > 0xFFFF && len >> 63 == 0,
        _ => true,
    };
    if !minimal {
        return Err(FrameFault::Protocol);
    }
    let control = opcode >= 0x8;
    if control && (!fin || len > 125) {
        return Err(FrameFault::Protocol);
    }
    if len > max as u128 {
        return Err(FrameFault::TooLarge);
    }
    let header_len = 2 + ext + 4;
    if buf.len() < header_len {
        return Ok(None);
    }
    let mut mask = [0; 4];
    mask.copy_from_slice(&buf[2 + ext..header_len]);
    Ok(Some(FrameHead {
        fin,
        opcode,
        mask,
        header_len,
        payload_len: usize::try_from(len).unwrap_or(usize::MAX),
    }))
}
