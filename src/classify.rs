//! Which form an accepted connection speaks, from its first bytes: the classifier behind port
//! sharing (one TCP port serving `/tcp`, `/ws` and `/tls/ws`).
//!
//! This module is pure: no IO, no clock. The transport reads at most `MAX_PREFIX` (20) bytes from
//! each accepted socket (within the handshake timeout), asks `classify` after each read, and
//! hands the bytes it read on to the connection's handler, so none are lost.
//!
//! The rules, each decided as early as the bytes allow:
//! - multistream-select's header `\x13/multistream/1.0.0\n` (all 20 bytes): [`Class::Tcp`], what
//!   every libp2p dialer sends first on a plain TCP connection;
//! - an HTTP request line's method (1 to `MAX_METHOD_LEN` (16) of `A-Z`, `-`, `_`) and the space after
//!   it: [`Class::Http`], a WebSocket upgrade request (or a plain HTTP request, which the `/ws`
//!   listener answers with a 4xx);
//! - a TLS handshake record header, `16 03 0x` with `x` at most 4: [`Class::Tls`], a ClientHello;
//! - anything else, as soon as one byte rules all three out: `Verdict::Unknown`.
//!
//! [`Class`] is what errors name; the classifier itself (`classify`, `Verdict`, `MAX_PREFIX`,
//! `MAX_METHOD_LEN`) is public only with the feature `unstable-internals` (no stability promise).

use std::fmt;

use crate::addr::Kind;

/// multistream-select's header, what a libp2p dialer sends first over plain TCP.
pub const MULTISTREAM_HEADER: &[u8] = b"\x13/multistream/1.0.0\n";

internal! {
    /// Longest HTTP method accepted, in bytes (the longest registered ones have 17 letters, but
    /// none a WebSocket client sends; `GET` is the only one that can upgrade).
    const MAX_METHOD_LEN: usize = 16;
}

internal! {
    /// Most bytes [`classify`] needs to decide: the length of [`MULTISTREAM_HEADER`].
    const MAX_PREFIX: usize = MULTISTREAM_HEADER.len();
}

/// The form a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Class {
    /// multistream-select: plain libp2p over TCP (`/tcp`).
    Tcp,
    /// An HTTP request: a WebSocket upgrade (`/ws`).
    Http,
    /// A TLS ClientHello: WebSocket over TLS (`/tls/ws`).
    Tls,
}

impl Class {
    /// The listener kind that serves this form.
    pub fn kind(self) -> Kind {
        match self {
            Class::Tcp => Kind::Tcp,
            Class::Http => Kind::Ws,
            Class::Tls => Kind::TlsWs,
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::Tcp => "multistream-select (/tcp)",
            Class::Http => "HTTP (/ws)",
            Class::Tls => "TLS (/tls/ws)",
        })
    }
}

internal! {
    /// What the bytes so far say.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[non_exhaustive]
    enum Verdict {
        /// The connection speaks this form.
        Known(Class),
        /// The bytes match none of the forms.
        Unknown,
        /// The bytes so far are the start of a form; read more (never after [`MAX_PREFIX`] bytes).
        NeedMore,
    }
}

internal! {
    /// Classifies the first bytes of a connection (see the module docs). Looks at no byte after the
    /// one that decides, and decides at the latest at [`MAX_PREFIX`] bytes.
    fn classify(prefix: &[u8]) -> Verdict {
        let Some(&first) = prefix.first() else {
            return Verdict::NeedMore;
        };
        match first {
            0x13 => {
                let n = prefix.len().min(MULTISTREAM_HEADER.len());
                if prefix[..n] != MULTISTREAM_HEADER[..n] {
                    Verdict::Unknown
                } else if n == MULTISTREAM_HEADER.len() {
                    Verdict::Known(Class::Tcp)
                } else {
                    Verdict::NeedMore
                }
            }
            0x16 => match prefix.get(1..3) {
                None if prefix.get(1).is_none_or(|&b| b == 0x03) => Verdict::NeedMore,
                Some(&[0x03, minor]) if minor <= 0x04 => Verdict::Known(Class::Tls),
                _ => Verdict::Unknown,
            },
            b'A'..=b'Z' => {
                for (i, &b) in prefix.iter().enumerate().skip(1) {
                    match b {
                        b' ' => return Verdict::Known(Class::Http),
                        b'A'..=b'Z' | b'-' | b'_' if i < MAX_METHOD_LEN => {}
                        _ => return Verdict::Unknown,
                    }
                }
                Verdict::NeedMore
            }
            _ => Verdict::Unknown,
        }
    }
}

/// The set of kinds a port serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Served(u8);

impl Served {
    fn bit(kind: Kind) -> u8 {
        match kind {
            Kind::Tcp => 1,
            Kind::Ws => 2,
            Kind::TlsWs => 4,
        }
    }

    pub(crate) fn with(self, kind: Kind) -> Self {
        Served(self.0 | Self::bit(kind))
    }

    pub(crate) fn has(self, kind: Kind) -> bool {
        self.0 & Self::bit(kind) != 0
    }

    #[cfg(test)]
    pub(crate) fn bits(self) -> u8 {
        self.0
    }

    #[cfg(test)]
    pub(crate) fn from_bits(bits: u8) -> Self {
        Served(bits & 7)
    }
}

/// A TLS fatal alert record (`unexpected_message`): what a port that serves `/tls/ws` answers to
/// an HTTP request it cannot serve, so that the dialer can say "the server answered with TLS".
pub(crate) const TLS_ALERT: &[u8] = &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x0a];

/// What a port that serves `/ws` answers to a TLS ClientHello it cannot serve.
pub(crate) const HTTP_NOT_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\
Content-Type: text/plain\r\nContent-Length: 58\r\n\r\n\
this port speaks plain WebSocket, not TLS: dial it as /ws\n";

/// What a port that serves only `/tcp` answers to an HTTP request: multistream-select's header
/// and `na` (not available), so that the dialer can say "dial /tcp".
pub(crate) const MULTISTREAM_NA: &[u8] = b"\x13/multistream/1.0.0\n\x03na\n";

/// The bytes a port serving `served` writes before closing a connection that spoke `spoke`,
/// which it does not serve: a sign of a form it does serve that the dialer can recognise, or
/// nothing.
pub(crate) fn refusal_sign(spoke: Class, served: Served) -> &'static [u8] {
    match spoke {
        Class::Tls if served.has(Kind::Ws) => HTTP_NOT_TLS,
        Class::Http if served.has(Kind::TlsWs) => TLS_ALERT,
        Class::Http if served.has(Kind::Tcp) => MULTISTREAM_NA,
        _ => &[],
    }
}

/// What the first bytes of a server's answer say about the form it speaks, when a dialer's
/// handshake failed on them: [`Class::Tls`] for a TLS record, [`Class::Tcp`] for
/// multistream-select's header, `None` otherwise.
pub(crate) fn answer_class(answer: &[u8]) -> Option<Class> {
    match answer {
        [0x15 | 0x16, 0x03, minor, ..] if *minor <= 0x04 => Some(Class::Tls),
        _ if answer.len() >= MULTISTREAM_HEADER.len() && answer.starts_with(MULTISTREAM_HEADER) => {
            Some(Class::Tcp)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every prefix shorter than the deciding byte needs more; the deciding prefix and every longer
    /// one give `verdict`.
    fn decided_at(bytes: &[u8], at: usize, verdict: Verdict) {
        for n in 0..at {
            assert_eq!(
                classify(&bytes[..n]),
                Verdict::NeedMore,
                "{:?} after {n} bytes",
                String::from_utf8_lossy(bytes)
            );
        }
        for n in at..=bytes.len() {
            assert_eq!(
                classify(&bytes[..n]),
                verdict,
                "{:?} after {n} bytes",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn multistream_header_byte_by_byte() {
        let mut bytes = MULTISTREAM_HEADER.to_vec();
        bytes.extend_from_slice(b"\x07/noise\n");
        decided_at(&bytes, MAX_PREFIX, Verdict::Known(Class::Tcp));
        // One wrong byte anywhere in the header rules it out at that byte.
        for i in 1..MULTISTREAM_HEADER.len() {
            let mut wrong = MULTISTREAM_HEADER.to_vec();
            wrong[i] ^= 0x20;
            decided_at(&wrong, i + 1, Verdict::Unknown);
        }
        // Another multistream version is not ours.
        decided_at(b"\x13/multistream/2.0.0\n", 15, Verdict::Unknown);
    }

    #[test]
    fn tls_record_header_byte_by_byte() {
        for minor in 0..=4u8 {
            let hello = [0x16, 0x03, minor, 0x01, 0xfc, 0x01];
            decided_at(&hello, 3, Verdict::Known(Class::Tls));
        }
        decided_at(&[0x16, 0x03, 0x05], 3, Verdict::Unknown);
        decided_at(&[0x16, 0x02, 0x01], 2, Verdict::Unknown);
        // An alert or application data record is not a ClientHello.
        decided_at(&[0x15, 0x03, 0x03], 1, Verdict::Unknown);
        decided_at(&[0x17, 0x03, 0x03], 1, Verdict::Unknown);
    }

    #[test]
    fn http_request_line_byte_by_byte() {
        decided_at(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            4,
            Verdict::Known(Class::Http),
        );
        decided_at(b"POST /x HTTP/1.1\r\n", 5, Verdict::Known(Class::Http));
        decided_at(b"M-SEARCH * HTTP/1.1\r\n", 9, Verdict::Known(Class::Http));
        let longest = b"ABCDEFGHIJKLMNOP / HTTP/1.1";
        decided_at(longest, MAX_METHOD_LEN + 1, Verdict::Known(Class::Http));
        // A method one letter too long, a lower-case method, no method, a digit.
        decided_at(
            b"ABCDEFGHIJKLMNOPQ / HTTP/1.1",
            MAX_METHOD_LEN + 1,
            Verdict::Unknown,
        );
        decided_at(b"get / HTTP/1.1", 1, Verdict::Unknown);
        decided_at(b" GET /", 1, Verdict::Unknown);
        decided_at(b"G3T /", 2, Verdict::Unknown);
        decided_at(b"GET\r\n", 4, Verdict::Unknown);
    }

    #[test]
    fn everything_else_is_unknown_at_the_first_byte() {
        for first in 0..=255u8 {
            let expected = match first {
                0x13 | 0x16 | b'A'..=b'Z' => Verdict::NeedMore,
                _ => Verdict::Unknown,
            };
            assert_eq!(classify(&[first]), expected, "first byte {first:#04x}");
        }
        assert_eq!(classify(&[]), Verdict::NeedMore);
    }

    #[test]
    fn decided_within_max_prefix_for_every_two_byte_start() {
        // Whatever follows, MAX_PREFIX bytes are always enough.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let mut bytes = [b'A'; MAX_PREFIX];
                bytes[0] = a;
                bytes[1] = b;
                assert_ne!(classify(&bytes), Verdict::NeedMore, "{a:#04x} {b:#04x}");
                let mut bytes = MULTISTREAM_HEADER.to_vec();
                bytes[0] = a;
                bytes[1] = b;
                assert_ne!(classify(&bytes), Verdict::NeedMore, "{a:#04x} {b:#04x}");
            }
        }
    }

    proptest::proptest! {
        /// The fuzz target's properties (fuzz/fuzz_targets/classify.rs): fed one byte at a time,
        /// the classifier decides within MAX_PREFIX bytes and never changes its mind.
        #[test]
        fn decides_early_and_never_changes_its_mind(
            start in proptest::prop_oneof![
                proptest::strategy::Just(MULTISTREAM_HEADER.to_vec()),
                proptest::strategy::Just(b"GET ".to_vec()),
                proptest::strategy::Just(vec![0x16, 0x03]),
                proptest::strategy::Just(Vec::new()),
            ],
            cut in 0usize..24,
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let mut data = start[..cut.min(start.len())].to_vec();
            data.extend_from_slice(&tail);
            let mut decided = None;
            for n in 0..=data.len() {
                let verdict = classify(&data[..n]);
                match decided {
                    None if verdict == Verdict::NeedMore => proptest::prop_assert!(n < MAX_PREFIX),
                    None => decided = Some(verdict),
                    Some(first) => proptest::prop_assert_eq!(first, verdict),
                }
            }
        }
    }

    #[test]
    fn door_signs_name_a_form_the_port_serves() {
        let all = Served::default()
            .with(Kind::Tcp)
            .with(Kind::Ws)
            .with(Kind::TlsWs);
        let tcp = Served::default().with(Kind::Tcp);
        let ws = Served::default().with(Kind::Ws);
        let tls = Served::default().with(Kind::TlsWs);
        assert_eq!(refusal_sign(Class::Tls, ws), HTTP_NOT_TLS);
        assert_eq!(refusal_sign(Class::Tls, tcp), b"");
        assert_eq!(refusal_sign(Class::Http, tls), TLS_ALERT);
        assert_eq!(refusal_sign(Class::Http, tcp), MULTISTREAM_NA);
        assert_eq!(refusal_sign(Class::Tcp, all.with(Kind::Tcp)), b"");
        assert_eq!(refusal_sign(Class::Tcp, ws), b"");
        assert_eq!(answer_class(TLS_ALERT), Some(Class::Tls));
        assert_eq!(answer_class(MULTISTREAM_NA), Some(Class::Tcp));
        assert_eq!(answer_class(HTTP_NOT_TLS), None);
        assert_eq!(answer_class(b"HTTP/1.1 101 Switching"), None);
        assert_eq!(answer_class(&[0x15, 0x03]), None);
        assert_eq!(
            HTTP_NOT_TLS.len()
                - HTTP_NOT_TLS
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .unwrap()
                - 4,
            58,
            "Content-Length matches the body"
        );
        assert!(Served::from_bits(all.bits()).has(Kind::TlsWs));
        assert!(!Served::from_bits(tcp.bits()).has(Kind::Ws));
    }
}
