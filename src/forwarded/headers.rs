//! The forwarding headers of the HTTP upgrade request, sans IO: `Forwarded` (RFC 7239),
//! `X-Forwarded-For` (with `X-Forwarded-Proto`) and `X-Real-IP`; [`client_from_headers`] finds
//! the client that the one believed header ([`HeaderSources`]) describes.

use std::net::{IpAddr, Ipv6Addr};

use super::ForwardedError;
use crate::proxy::IpNet;

/// Most hops in a forwarding header (`Forwarded`, `X-Forwarded-For`).
pub const MAX_HOPS: usize = 64;

/// The one forwarding header of the upgrade request a listener believes from trusted proxies:
/// the header the proxy itself sets (and overwrites, so that a client cannot pass its own value
/// through it). Exactly one is believed, never "the first found": a proxy that sets
/// `X-Forwarded-For` passes a client's own `Forwarded` header on untouched, and believing that
/// would let the client name any address. Default: `X-Forwarded-For`
/// ([`HeaderSources::x_forwarded_for`]), what the README's nginx configuration sets.
///
/// ```
/// use libp2p_ws::forwarded::HeaderSources;
/// assert_eq!(HeaderSources::default(), HeaderSources::x_forwarded_for());
/// assert_eq!(HeaderSources::forwarded().header(), Some("Forwarded"));
/// assert!(!HeaderSources::none().any());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeaderSources {
    source: Option<Source>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    Forwarded,
    XForwardedFor,
    XRealIp,
}

impl Default for HeaderSources {
    /// `X-Forwarded-For` (with `X-Forwarded-Proto`) only.
    fn default() -> Self {
        HeaderSources::x_forwarded_for()
    }
}

impl HeaderSources {
    /// None: only the PROXY protocol (if on) changes the client address.
    pub fn none() -> Self {
        HeaderSources { source: None }
    }

    /// `Forwarded` (RFC 7239) only, its `proto=` saying whether the client came over TLS; for a
    /// proxy that sets (overwrites) `Forwarded` itself.
    pub fn forwarded() -> Self {
        HeaderSources {
            source: Some(Source::Forwarded),
        }
    }

    /// `X-Forwarded-For` only, with `X-Forwarded-Proto` saying whether the client came over TLS
    /// (the default); for a proxy that sets both (nginx's `$proxy_add_x_forwarded_for` appends the
    /// client it saw to what the client sent, and the right-most untrusted hop is the one taken).
    pub fn x_forwarded_for() -> Self {
        HeaderSources {
            source: Some(Source::XForwardedFor),
        }
    }

    /// `X-Real-IP` only (exactly one address), with `X-Forwarded-Proto`; for a proxy that sets
    /// (overwrites) it.
    pub fn x_real_ip() -> Self {
        HeaderSources {
            source: Some(Source::XRealIp),
        }
    }

    /// Whether a header is believed.
    pub fn any(&self) -> bool {
        self.source.is_some()
    }

    /// The name of the believed header, if any.
    pub fn header(&self) -> Option<&'static str> {
        self.source.map(|source| match source {
            Source::Forwarded => "Forwarded",
            Source::XForwardedFor => "X-Forwarded-For",
            Source::XRealIp => "X-Real-IP",
        })
    }
}

/// The client as a trusted proxy describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedClient {
    /// The client's address.
    pub ip: IpAddr,
    /// The client's port, when the header gives one (`Forwarded: for="[..]:port"`).
    pub port: Option<u16>,
    /// Whether the client reached the proxy over TLS (`proto=https`, `X-Forwarded-Proto: https`).
    pub https: bool,
}

/// One hop of a forwarding header: an address (and port), or an unknown or obfuscated node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Addr(IpAddr, Option<u16>, Option<bool>),
    Unknown,
}

/// The client described by the forwarding header `sources` names, in a request from a trusted
/// proxy, or `None` when that header is absent (or the hop it names is unknown/obfuscated). `headers` are
/// the request's (name, value) pairs; several headers of one name form one list. The client is
/// the right-most hop that is not in `trusted` (the left-most when all are).
pub fn client_from_headers<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
    trusted: &[IpNet],
    sources: HeaderSources,
) -> Result<Option<ForwardedClient>, ForwardedError> {
    let joined = |name: &'static str| -> Result<Option<String>, ForwardedError> {
        let mut out: Option<String> = None;
        for (_, value) in headers
            .clone()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            let value =
                std::str::from_utf8(value).map_err(|_| ForwardedError::MalformedHeader {
                    header: name,
                    reason: "not UTF-8".into(),
                })?;
            match &mut out {
                Some(all) => {
                    all.push(',');
                    all.push_str(value);
                }
                None => out = Some(value.to_string()),
            }
        }
        Ok(out)
    };
    let Some(name) = sources.header() else {
        return Ok(None);
    };
    let Some(value) = joined(name)? else {
        return Ok(None);
    };
    let hops = match sources.source {
        Some(Source::Forwarded) => parse_forwarded(&value)?,
        Some(Source::XForwardedFor) => parse_ip_list("X-Forwarded-For", &value)?,
        _ => {
            let hops = parse_ip_list("X-Real-IP", &value)?;
            if hops.len() != 1 {
                return Err(ForwardedError::MalformedHeader {
                    header: "X-Real-IP",
                    reason: "not exactly one address".into(),
                });
            }
            hops
        }
    };
    let chosen = hops
        .iter()
        .rev()
        .find(|hop| match hop {
            Hop::Addr(ip, ..) => !trusted.iter().any(|net| net.contains(*ip)),
            Hop::Unknown => true,
        })
        .or(hops.first());
    let Some(Hop::Addr(ip, port, proto)) = chosen.copied() else {
        return Ok(None);
    };
    // `Forwarded` says it in `proto=` (or not at all); the others with `X-Forwarded-Proto`.
    let https = match proto {
        Some(https) => https,
        None if sources.source == Some(Source::Forwarded) => false,
        None => match joined("X-Forwarded-Proto")? {
            Some(value) => value
                .rsplit(',')
                .next()
                .map(|p| {
                    p.trim().eq_ignore_ascii_case("https") || p.trim().eq_ignore_ascii_case("wss")
                })
                .unwrap_or(false),
            None => false,
        },
    };
    Ok(Some(ForwardedClient { ip, port, https }))
}

/// An address as hops write it: `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`.
fn parse_node(s: &str) -> Option<(IpAddr, Option<u16>)> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((ip, None));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip = ip.parse::<Ipv6Addr>().ok()?;
        return match after {
            "" => Some((IpAddr::V6(ip), None)),
            _ => Some((IpAddr::V6(ip), Some(parse_port(after.strip_prefix(':')?)?))),
        };
    }
    let (ip, port) = s.split_once(':')?;
    Some((IpAddr::V4(ip.parse().ok()?), Some(parse_port(port)?)))
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_ip_list(header: &'static str, value: &str) -> Result<Vec<Hop>, ForwardedError> {
    let mut hops = Vec::new();
    for entry in value.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        if hops.len() == MAX_HOPS {
            return Err(ForwardedError::TooManyHops {
                header,
                limit: MAX_HOPS,
            });
        }
        if entry.eq_ignore_ascii_case("unknown") {
            hops.push(Hop::Unknown);
            continue;
        }
        let (ip, port) = parse_node(entry).ok_or_else(|| ForwardedError::MalformedHeader {
            header,
            reason: format!("{:?} is not an IP address", shorten(entry)),
        })?;
        hops.push(Hop::Addr(ip, port, None));
    }
    if hops.is_empty() {
        return Err(ForwardedError::MalformedHeader {
            header,
            reason: "no address".into(),
        });
    }
    Ok(hops)
}

fn malformed_forwarded(reason: String) -> ForwardedError {
    ForwardedError::MalformedHeader {
        header: "Forwarded",
        reason,
    }
}

/// RFC 7239: comma-separated elements of `;`-separated `name=value` pairs, values tokens or
/// quoted strings. Only `for` and `proto` are read; an element without `for` is an unknown hop.
fn parse_forwarded(value: &str) -> Result<Vec<Hop>, ForwardedError> {
    let mut hops = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    let mut element = Element::default();
    loop {
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        if i == bytes.len() {
            element.finish(&mut hops)?;
            break;
        }
        match bytes[i] {
            b',' => {
                std::mem::take(&mut element).finish(&mut hops)?;
                i += 1;
                continue;
            }
            b';' => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let start = i;
        while i < bytes.len() && is_tchar(bytes[i]) {
            i += 1;
        }
        let name = &value[start..i];
        if name.is_empty() || bytes.get(i) != Some(&b'=') {
            return Err(malformed_forwarded(format!(
                "expected name=value at byte {start}"
            )));
        }
        i += 1;
        let val = forwarded_value(value, &mut i, name)?;
        expect_separator(value, i, name)?;
        element.empty = false;
        if name.eq_ignore_ascii_case("for") {
            if element.node.is_some() {
                return Err(malformed_forwarded("for= twice in one element".into()));
            }
            element.node = Some(forwarded_for(&val)?);
        } else if name.eq_ignore_ascii_case("proto") {
            if element.https.is_some() {
                return Err(malformed_forwarded("proto= twice in one element".into()));
            }
            element.https =
                Some(val.eq_ignore_ascii_case("https") || val.eq_ignore_ascii_case("wss"));
        }
    }
    if hops.is_empty() {
        return Err(malformed_forwarded("no element".into()));
    }
    Ok(hops)
}

/// RFC 7239 section 4: a pair is followed by `;` (the next pair), `,` (the next element) or the
/// end, with optional whitespace before; `for="1.2.3.4"for=5.6.7.8` is malformed.
fn expect_separator(value: &str, mut i: usize, name: &str) -> Result<(), ForwardedError> {
    let bytes = value.as_bytes();
    while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
        i += 1;
    }
    match bytes.get(i) {
        None | Some(b';') | Some(b',') => Ok(()),
        Some(_) => Err(malformed_forwarded(format!(
            "expected ; or , after the {name}= pair, at byte {i}"
        ))),
    }
}

/// One element of a `Forwarded` header, as far as it was read.
struct Element {
    /// Its `for`.
    node: Option<Hop>,
    /// Its `proto`: whether it is `https` (or `wss`).
    https: Option<bool>,
    /// No pair was read.
    empty: bool,
}

impl Default for Element {
    fn default() -> Self {
        Element {
            node: None,
            https: None,
            empty: true,
        }
    }
}

impl Element {
    /// Adds the element to `hops` (an element without `for` is an unknown hop; an empty one is
    /// skipped).
    fn finish(self, hops: &mut Vec<Hop>) -> Result<(), ForwardedError> {
        if self.empty {
            return Ok(());
        }
        if hops.len() == MAX_HOPS {
            return Err(ForwardedError::TooManyHops {
                header: "Forwarded",
                limit: MAX_HOPS,
            });
        }
        hops.push(match self.node {
            Some(Hop::Addr(ip, port, _)) => Hop::Addr(ip, port, self.https),
            _ => Hop::Unknown,
        });
        Ok(())
    }
}

/// The value of the pair `name=` at byte `*i` of `value`: a quoted string (unescaped) or a token;
/// `*i` moves past it.
fn forwarded_value(value: &str, i: &mut usize, name: &str) -> Result<String, ForwardedError> {
    let bytes = value.as_bytes();
    if bytes.get(*i) != Some(&b'"') {
        let start = *i;
        while *i < bytes.len() && is_tchar(bytes[*i]) {
            *i += 1;
        }
        if start == *i {
            return Err(malformed_forwarded(format!("{name}= without a value")));
        }
        return Ok(value[start..*i].to_string());
    }
    *i += 1;
    let mut out = String::new();
    loop {
        match bytes.get(*i) {
            None => return Err(malformed_forwarded("unterminated quoted string".into())),
            Some(b'"') => {
                *i += 1;
                return Ok(out);
            }
            Some(b'\\') => {
                let c = *bytes
                    .get(*i + 1)
                    .ok_or_else(|| malformed_forwarded("unterminated quoted string".into()))?;
                out.push(c as char);
                *i += 2;
            }
            Some(&c) if c == b'\t' || (b' '..0x7f).contains(&c) => {
                out.push(c as char);
                *i += 1;
            }
            Some(_) => {
                return Err(malformed_forwarded(
                    "control or non-ASCII byte in a quoted string".into(),
                ))
            }
        }
    }
}

/// The hop a `for=` value names: unknown (`unknown`, an obfuscated `_name`) or a node.
fn forwarded_for(val: &str) -> Result<Hop, ForwardedError> {
    if val.eq_ignore_ascii_case("unknown") || val.starts_with('_') {
        return Ok(Hop::Unknown);
    }
    let (ip, port) = parse_node(val).ok_or_else(|| {
        malformed_forwarded(format!(
            "for={:?} is not a node (an IP address, [IPv6], port optional)",
            shorten(val)
        ))
    })?;
    Ok(Hop::Addr(ip, port, None))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}
