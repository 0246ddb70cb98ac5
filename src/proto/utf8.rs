//! Incremental UTF-8 validation of text messages (RFC 6455 section 8.1).

use super::error::ProtocolViolation;

/// Incremental UTF-8 check of a text message that arrives in pieces split anywhere, even inside a
/// character. Fails at the first byte that cannot start or continue a valid sequence, without
/// waiting for the end of the message.
#[derive(Debug, Default)]
pub(crate) struct Utf8Check {
    /// The start of a character split by the end of the previous piece.
    partial: [u8; 4],
    partial_len: usize,
}

const ERROR: ProtocolViolation = ProtocolViolation::InvalidUtf8Text;

impl Utf8Check {
    /// Checks the next piece of the message.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ProtocolViolation> {
        if self.partial_len > 0 {
            // Complete the split character with the first bytes of this piece.
            let have = self.partial_len;
            let take = (4 - have).min(bytes.len());
            let mut joined = self.partial;
            joined[have..have + take].copy_from_slice(&bytes[..take]);
            let consumed = match std::str::from_utf8(&joined[..have + take]) {
                Ok(_) => take,
                Err(e) if e.valid_up_to() > 0 => e.valid_up_to() - have,
                Err(e) if e.error_len().is_some() => return Err(ERROR),
                Err(_) => {
                    // Still incomplete: this piece was too short to finish the character.
                    self.partial = joined;
                    self.partial_len = have + take;
                    return Ok(());
                }
            };
            self.partial_len = 0;
            bytes = &bytes[consumed..];
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(ERROR),
            Err(e) => {
                let rest = &bytes[e.valid_up_to()..];
                self.partial[..rest.len()].copy_from_slice(rest);
                self.partial_len = rest.len();
                Ok(())
            }
        }
    }

    /// The message ended: it must not end inside a character.
    pub(crate) fn finish(&mut self) -> Result<(), ProtocolViolation> {
        let split = std::mem::take(&mut self.partial_len);
        if split == 0 {
            Ok(())
        } else {
            Err(ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in pieces of `step` bytes; `Ok` only if every piece and the end pass.
    fn check_in_pieces(bytes: &[u8], step: usize) -> Result<(), ProtocolViolation> {
        let mut check = Utf8Check::default();
        for piece in bytes.chunks(step) {
            check.feed(piece)?;
        }
        check.finish()
    }

    #[test]
    fn agrees_with_std_at_every_split() {
        let samples: &[&[u8]] = &[
            "κόσμε".as_bytes(),
            "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
            "\u{10FFFF}\u{FFFD}\u{0800}\u{007F}\u{0080}".as_bytes(),
            b"",
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", // a surrogate
            b"\xf4\x90\x80\x80",                                               // above U+10FFFF
            b"\xc0\xaf",                                                       // overlong
            b"\xce\xba\xe1", // ends inside a character
            b"\x80",         // lone continuation byte
            b"abc\xff",
        ];
        for sample in samples {
            let want = std::str::from_utf8(sample).is_ok();
            for step in 1..=sample.len().max(1) {
                let got = check_in_pieces(sample, step);
                assert_eq!(got.is_ok(), want, "{sample:?} in pieces of {step}: {got:?}");
                if let Err(e) = got {
                    assert_eq!(e.close_code(), 1007);
                }
            }
        }
    }

    #[test]
    fn fails_at_the_first_invalid_byte() {
        // Fail fast: the invalid byte is seen before the message ends (Autobahn 6.4.x).
        let mut check = Utf8Check::default();
        check.feed("κόσμε".as_bytes()).unwrap();
        check.feed(b"\xf4").unwrap(); // could still start a valid character
        assert!(check.feed(b"\x90").is_err()); // F4 90: above U+10FFFF
    }

    #[test]
    fn a_split_character_is_completed_by_the_next_piece_and_state_resets_per_message() {
        let mut check = Utf8Check::default();
        let euro = "€".as_bytes(); // three bytes
        check.feed(&euro[..1]).unwrap();
        check.feed(&euro[1..2]).unwrap();
        check.feed(&euro[2..]).unwrap();
        check.finish().unwrap();
        check.feed(&euro[..2]).unwrap();
        assert!(check.finish().is_err(), "ends inside a character");
        // `finish` resets: the next message starts clean.
        check.feed(b"ok").unwrap();
        check.finish().unwrap();
    }
}
