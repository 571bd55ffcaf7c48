//! The one computation of the opening handshake that belongs to the protocol rather than
//! to an HTTP stack: `Sec-WebSocket-Accept` from the client's key (RFC 6455 §4.2.2).

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The key suffix RFC 6455 §1.3 fixes.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_rfc_example_key() {
        // RFC 6455 §1.3.
        assert_eq!(
            super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
