//! UTF-8 checked as bytes arrive: a text message is judged piece by piece (frame by
//! frame, and within a frame as its payload trickles in), so the connection can fail on
//! the first byte that cannot start or continue a character rather than at the end of
//! the message (RFC 6455 §8.1 allows either; failing fast keeps nothing of a bad message).

/// The bytes of a text message so far are not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("text is not UTF-8")]
pub struct InvalidUtf8;

/// Incremental validator: holds at most three bytes of a character cut by a piece
/// boundary.
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    carry: [u8; 4],
    carried: u8,
}

impl Utf8Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Check the next piece.
    ///
    /// # Errors
    /// A byte that no valid UTF-8 text could have at this position, even if more
    /// bytes followed.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        // Finish a character cut by the previous piece, one byte at a time (at most 3).
        while self.carried > 0 {
            let Some((&b, rest)) = input.split_first() else {
                return Ok(());
            };
            self.carry[self.carried as usize] = b;
            self.carried += 1;
            input = rest;
            match std::str::from_utf8(&self.carry[..self.carried as usize]) {
                Ok(_) => self.carried = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {}
            }
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            // `error_len() == None`: the input ends inside a character that is valid so far.
            Err(e) if e.error_len().is_none() => {
                let tail = &input[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carried = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// The message ended: it must not end inside a character.
    ///
    /// # Errors
    /// The last character is incomplete.
    pub fn finish(&self) -> Result<(), InvalidUtf8> {
        if self.carried == 0 {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_pieces(bytes: &[u8], size: usize) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        for piece in bytes.chunks(size.max(1)) {
            v.feed(piece)?;
        }
        v.finish()
    }

    #[test]
    fn valid_text_passes_in_any_pieces() {
        let text = "κόσμε ascii 𝄞 \u{10FFFF} \u{FEFF}".as_bytes();
        for size in 1..=text.len() {
            assert_eq!(in_pieces(text, size), Ok(()), "pieces of {size}");
        }
    }

    #[test]
    fn invalid_bytes_fail_where_they_are() {
        for bad in [
            &b"\xff"[..],
            b"\xc0\x80",         // overlong
            b"\xed\xa0\x80",     // surrogate
            b"\xf4\x90\x80\x80", // above U+10FFFF
            b"\xce\xba\x80",     // stray continuation
        ] {
            for size in 1..=bad.len() {
                assert_eq!(in_pieces(bad, size), Err(InvalidUtf8), "{bad:?} by {size}");
            }
        }
    }

    #[test]
    fn fails_on_the_first_bad_byte_before_the_text_ends() {
        // U+10FFFF is F4 8F BF BF; F4 90 can start no character: fail at the 0x90.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"hello \xf4"), Ok(()));
        assert_eq!(v.feed(b"\x90"), Err(InvalidUtf8));
        // A valid prefix of a character is not an error until the message ends.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xf0\x9d"), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }
}
