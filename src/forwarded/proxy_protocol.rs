//! The PROXY protocol (v1 and v2), sans IO: [`parse_proxy_header`] reads the header a proxy
//! sends before the client's bytes, asking for exactly as many bytes as the header holds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::ForwardedError;

/// Most bytes of a PROXY protocol header accepted (v1 is at most 107; v2 is 16 bytes and its
/// addresses, plus TLVs).
pub const MAX_PROXY_HEADER: usize = 4096;

/// The longest PROXY v1 line, `\r\n` included (the spec's limit).
const MAX_V1: usize = 107;
/// The PROXY v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";

/// Whether a listener reads a PROXY protocol header before TLS and HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ProxyProtocol {
    /// No PROXY header is read: a connection starting with one (v1 or v2) is not classified
    /// and is closed without an answer ([`ForwardedError::ProxyHeaderUnexpected`]).
    #[default]
    Off,
    /// A PROXY header is read if the connection starts with one.
    Optional,
    /// Every connection must start with a PROXY header; others are closed with
    /// [`ForwardedError::ProxyHeaderMissing`].
    Required,
}

/// A parsed PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// 1 or 2.
    pub version: u8,
    /// The client's address and port; `None` for `UNKNOWN` (v1), `LOCAL` and non-TCP families
    /// (v2): the connection's own address stands.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, when given.
    pub destination: Option<SocketAddr>,
}

/// The state of a PROXY header read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyParse {
    /// The bytes are not the start of a PROXY header (nothing of them is consumed).
    NotProxy,
    /// A PROXY header so far: read exactly this many more bytes (never more than the header
    /// holds, so nothing after it is consumed).
    NeedMore(usize),
    /// A complete header of `len` bytes.
    Done {
        /// The header's length.
        len: usize,
        /// The header.
        header: ProxyHeader,
    },
}

/// Parses the start of a connection as a PROXY protocol header (v1 or v2).
pub fn parse_proxy_header(buf: &[u8]) -> Result<ProxyParse, ForwardedError> {
    let is_prefix =
        |sig: &[u8]| buf.len() <= sig.len() && sig.starts_with(buf) || buf.starts_with(sig);
    if buf.first() == Some(&b'P') {
        if !is_prefix(V1_PREFIX) {
            return Ok(ProxyParse::NotProxy);
        }
        return parse_v1(buf);
    }
    if buf.is_empty() {
        return Ok(ProxyParse::NeedMore(1));
    }
    if !is_prefix(&V2_SIGNATURE) {
        return Ok(ProxyParse::NotProxy);
    }
    parse_v2(buf)
}

fn parse_v1(buf: &[u8]) -> Result<ProxyParse, ForwardedError> {
    let malformed = ForwardedError::ProxyHeaderMalformed;
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= MAX_V1 {
            return Err(ForwardedError::ProxyHeaderTooLarge { limit: MAX_V1 });
        }
        if buf.contains(&b'\n') || buf.contains(&0) {
            return Err(malformed("v1 line with a stray LF or NUL"));
        }
        return Ok(ProxyParse::NeedMore(1));
    };
    let len = end + 2;
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| malformed("v1 line is not ASCII"))?;
    let mut fields = line.split(' ');
    fields.next(); // "PROXY"
    let header = |source, destination| ProxyParse::Done {
        len,
        header: ProxyHeader {
            version: 1,
            source,
            destination,
        },
    };
    match fields.next() {
        Some("UNKNOWN") => Ok(header(None, None)),
        Some(family @ ("TCP4" | "TCP6")) => {
            let parts: Vec<&str> = fields.collect();
            let [src, dst, sport, dport] = parts.as_slice() else {
                return Err(malformed(
                    "v1 TCP line without exactly four fields after the family",
                ));
            };
            let ip = |s: &str| -> Result<IpAddr, ForwardedError> {
                let ip = if family == "TCP4" {
                    s.parse::<Ipv4Addr>().map(IpAddr::V4).ok()
                } else {
                    s.parse::<Ipv6Addr>().map(IpAddr::V6).ok()
                };
                ip.ok_or(malformed("v1 address of the wrong family or invalid"))
            };
            let port = |s: &str| -> Result<u16, ForwardedError> {
                if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(malformed("v1 port is not a number"));
                }
                s.parse().map_err(|_| malformed("v1 port out of range"))
            };
            Ok(header(
                Some(SocketAddr::new(ip(src)?, port(sport)?)),
                Some(SocketAddr::new(ip(dst)?, port(dport)?)),
            ))
        }
        _ => Err(malformed("v1 family is not TCP4, TCP6 or UNKNOWN")),
    }
}

fn parse_v2(buf: &[u8]) -> Result<ProxyParse, ForwardedError> {
    let malformed = ForwardedError::ProxyHeaderMalformed;
    // Byte by byte until the signature is whole: a stream that only starts like it is not
    // PROXY, and reading ahead could wait for bytes its client never sends.
    if buf.len() < V2_SIGNATURE.len() {
        return Ok(ProxyParse::NeedMore(1));
    }
    if buf.len() < 16 {
        return Ok(ProxyParse::NeedMore(16 - buf.len()));
    }
    let (ver_cmd, family) = (buf[12], buf[13]);
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 {
        return Err(malformed("v2 version is not 2"));
    }
    let command = ver_cmd & 0x0f;
    if command > 1 {
        return Err(malformed("v2 command is neither LOCAL nor PROXY"));
    }
    let len = 16 + body;
    if len > MAX_PROXY_HEADER {
        return Err(ForwardedError::ProxyHeaderTooLarge {
            limit: MAX_PROXY_HEADER,
        });
    }
    if buf.len() < len {
        return Ok(ProxyParse::NeedMore(len - buf.len()));
    }
    let addresses = &buf[16..len];
    let (source, destination) = match (command, family) {
        (0, _) => (None, None),
        (1, 0x11) => {
            let a: &[u8; 12] = addresses
                .get(..12)
                .and_then(|a| a.try_into().ok())
                .ok_or(malformed("v2 TCP4 addresses shorter than 12 bytes"))?;
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            (
                Some(SocketAddr::new(ip(0), port(8))),
                Some(SocketAddr::new(ip(4), port(10))),
            )
        }
        (1, 0x21) => {
            let a = addresses
                .get(..36)
                .ok_or(malformed("v2 TCP6 addresses shorter than 36 bytes"))?;
            let ip = |o: usize| {
                let octets: [u8; 16] = a[o..o + 16].try_into().unwrap_or([0; 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            (
                Some(SocketAddr::new(ip(0), port(32))),
                Some(SocketAddr::new(ip(16), port(34))),
            )
        }
        // UNSPEC, UDP and UNIX: no TCP client address to report.
        (1, 0x00 | 0x12 | 0x22 | 0x31 | 0x32) => (None, None),
        _ => return Err(malformed("v2 address family/protocol unknown")),
    };
    Ok(ProxyParse::Done {
        len,
        header: ProxyHeader {
            version: 2,
            source,
            destination,
        },
    })
}
