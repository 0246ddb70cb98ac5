//! The client's address behind reverse proxies, sans IO: the PROXY protocol (v1 and v2, as
//! haproxy's `send-proxy`/`send-proxy-v2` and nginx's `proxy_protocol` send it) and the
//! forwarding headers of the HTTP upgrade request (`Forwarded` of RFC 7239, `X-Forwarded-For`,
//! `X-Real-IP`, `X-Forwarded-Proto`), and [`ReverseProxy`], the listener setting that says whom
//! to believe.
//!
//! Only connections from a trusted network ([`ReverseProxy::new`]) may override the client
//! address; from anyone else the headers are ignored (logged at debug). Everything is bounded: a
//! PROXY header by [`MAX_PROXY_HEADER`] bytes, the HTTP headers by the head size limit, the hops
//! of a forwarding header by [`MAX_HOPS`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::proxy::IpNet;

/// Most bytes of a PROXY protocol header accepted (v1 is at most 107; v2 is 16 bytes and its
/// addresses, plus TLVs).
pub const MAX_PROXY_HEADER: usize = 4096;
/// Most hops in a forwarding header (`Forwarded`, `X-Forwarded-For`).
pub const MAX_HOPS: usize = 64;

/// The longest PROXY v1 line, `\r\n` included (the spec's limit).
const MAX_V1: usize = 107;
/// The PROXY v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";

/// Whether a listener reads a PROXY protocol header before TLS and HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ProxyProtocol {
    /// No PROXY header is read (a connection starting with one is not classified and closed).
    #[default]
    Off,
    /// A PROXY header is read if the connection starts with one.
    Optional,
    /// Every connection must start with a PROXY header; others are closed with
    /// [`ForwardedError::ProxyHeaderMissing`].
    Required,
}

/// Why a PROXY header or a forwarding header was refused; the connection is closed (an HTTP
/// request with a malformed forwarding header is answered 400 first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardedError {
    /// The listener requires a PROXY header and the connection does not start with one.
    #[error(
        "the listener requires a PROXY protocol header and the connection does not start with one"
    )]
    ProxyHeaderMissing,
    /// A malformed PROXY header; the string says what is wrong.
    #[error("malformed PROXY protocol header: {0}")]
    ProxyHeaderMalformed(&'static str),
    /// A PROXY header longer than [`MAX_PROXY_HEADER`] (or a v1 line longer than 107 bytes).
    #[error("the PROXY protocol header exceeds {limit} bytes")]
    ProxyHeaderTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A malformed forwarding header.
    #[error("malformed {header} header: {reason}")]
    MalformedHeader {
        /// The header's name.
        header: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A forwarding header with more than [`MAX_HOPS`] hops.
    #[error("the {header} header has more than {limit} hops")]
    TooManyHops {
        /// The header's name.
        header: &'static str,
        /// The limit.
        limit: usize,
    },
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

/// Which forwarding headers of the upgrade request a listener believes (from trusted proxies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeaderSources {
    forwarded: bool,
    x_forwarded_for: bool,
    x_real_ip: bool,
}

impl Default for HeaderSources {
    /// All three.
    fn default() -> Self {
        HeaderSources {
            forwarded: true,
            x_forwarded_for: true,
            x_real_ip: true,
        }
    }
}

impl HeaderSources {
    /// None: only the PROXY protocol (if on) changes the client address.
    pub fn none() -> Self {
        HeaderSources {
            forwarded: false,
            x_forwarded_for: false,
            x_real_ip: false,
        }
    }

    /// `Forwarded` (RFC 7239), the first consulted.
    pub fn with_forwarded(mut self, on: bool) -> Self {
        self.forwarded = on;
        self
    }

    /// `X-Forwarded-For` (with `X-Forwarded-Proto`), consulted when `Forwarded` is absent.
    pub fn with_x_forwarded_for(mut self, on: bool) -> Self {
        self.x_forwarded_for = on;
        self
    }

    /// `X-Real-IP`, consulted last.
    pub fn with_x_real_ip(mut self, on: bool) -> Self {
        self.x_real_ip = on;
        self
    }

    /// Whether any header is believed.
    pub fn any(&self) -> bool {
        self.forwarded || self.x_forwarded_for || self.x_real_ip
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

/// The client described by the forwarding headers of a request from a trusted proxy, or `None`
/// when no believed header is present (or the hop it names is unknown/obfuscated). `headers` are
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
    let hops = if let Some(value) = sources
        .forwarded
        .then(|| joined("Forwarded"))
        .transpose()?
        .flatten()
    {
        parse_forwarded(&value)?
    } else if let Some(value) = sources
        .x_forwarded_for
        .then(|| joined("X-Forwarded-For"))
        .transpose()?
        .flatten()
    {
        parse_ip_list("X-Forwarded-For", &value)?
    } else if let Some(value) = sources
        .x_real_ip
        .then(|| joined("X-Real-IP"))
        .transpose()?
        .flatten()
    {
        let hops = parse_ip_list("X-Real-IP", &value)?;
        if hops.len() != 1 {
            return Err(ForwardedError::MalformedHeader {
                header: "X-Real-IP",
                reason: "not exactly one address".into(),
            });
        }
        hops
    } else {
        return Ok(None);
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
    let https = match proto {
        Some(https) => https,
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

/// RFC 7239: comma-separated elements of `;`-separated `name=value` pairs, values tokens or
/// quoted strings. Only `for` and `proto` are read; an element without `for` is an unknown hop.
fn parse_forwarded(value: &str) -> Result<Vec<Hop>, ForwardedError> {
    let malformed = |reason: String| ForwardedError::MalformedHeader {
        header: "Forwarded",
        reason,
    };
    let mut hops = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    let mut element_for: Option<Hop> = None;
    let mut element_proto: Option<bool> = None;
    let mut element_empty = true;
    let finish = |hops: &mut Vec<Hop>,
                  f: Option<Hop>,
                  p: Option<bool>,
                  empty: bool|
     -> Result<(), ForwardedError> {
        if empty {
            return Ok(());
        }
        if hops.len() == MAX_HOPS {
            return Err(ForwardedError::TooManyHops {
                header: "Forwarded",
                limit: MAX_HOPS,
            });
        }
        hops.push(match f {
            Some(Hop::Addr(ip, port, _)) => Hop::Addr(ip, port, p),
            _ => Hop::Unknown,
        });
        Ok(())
    };
    loop {
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        if i == bytes.len() {
            finish(&mut hops, element_for, element_proto, element_empty)?;
            break;
        }
        match bytes[i] {
            b',' => {
                finish(
                    &mut hops,
                    element_for.take(),
                    element_proto.take(),
                    element_empty,
                )?;
                element_empty = true;
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
            return Err(malformed(format!("expected name=value at byte {start}")));
        }
        i += 1;
        let val = if bytes.get(i) == Some(&b'"') {
            i += 1;
            let mut out = String::new();
            loop {
                match bytes.get(i) {
                    None => return Err(malformed("unterminated quoted string".into())),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let c = *bytes
                            .get(i + 1)
                            .ok_or_else(|| malformed("unterminated quoted string".into()))?;
                        out.push(c as char);
                        i += 2;
                    }
                    Some(&c) if c == b'\t' || (b' '..0x7f).contains(&c) => {
                        out.push(c as char);
                        i += 1;
                    }
                    Some(_) => {
                        return Err(malformed(
                            "control or non-ASCII byte in a quoted string".into(),
                        ))
                    }
                }
            }
            out
        } else {
            let start = i;
            while i < bytes.len() && is_tchar(bytes[i]) {
                i += 1;
            }
            if start == i {
                return Err(malformed(format!("{name}= without a value")));
            }
            value[start..i].to_string()
        };
        element_empty = false;
        if name.eq_ignore_ascii_case("for") {
            element_for = Some(
                if val.eq_ignore_ascii_case("unknown") || val.starts_with('_') {
                    Hop::Unknown
                } else {
                    let (ip, port) = parse_node(&val).ok_or_else(|| {
                        malformed(format!(
                            "for={:?} is not a node (an IP address, [IPv6], port optional)",
                            shorten(&val)
                        ))
                    })?;
                    Hop::Addr(ip, port, None)
                },
            );
        } else if name.eq_ignore_ascii_case("proto") {
            element_proto =
                Some(val.eq_ignore_ascii_case("https") || val.eq_ignore_ascii_case("wss"));
        }
    }
    if hops.is_empty() {
        return Err(malformed("no element".into()));
    }
    Ok(hops)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Reverse proxies a listener trusts to tell it the client's address: their networks, the
/// forwarding headers believed from them, and the PROXY protocol setting per listener port.
/// Give it to [`Config::with_reverse_proxy`](crate::Config::with_reverse_proxy).
///
/// ```
/// use libp2p_ws::forwarded::{ProxyProtocol, ReverseProxy};
/// let proxies = ReverseProxy::new(["127.0.0.1/32".parse().unwrap(), "10.0.0.0/8".parse().unwrap()])
///     .with_proxy_protocol(ProxyProtocol::Optional)
///     .with_proxy_protocol_on(4002, ProxyProtocol::Required);
/// assert_eq!(proxies.proxy_protocol_for(4002), ProxyProtocol::Required);
/// assert_eq!(proxies.proxy_protocol_for(4001), ProxyProtocol::Optional);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReverseProxy {
    trusted: Vec<IpNet>,
    headers: HeaderSources,
    proxy_protocol: ProxyProtocol,
    per_port: Vec<(u16, ProxyProtocol)>,
}

impl ReverseProxy {
    /// Trusts these networks; all forwarding headers believed, PROXY protocol off.
    pub fn new(trusted: impl IntoIterator<Item = IpNet>) -> Self {
        ReverseProxy {
            trusted: trusted.into_iter().collect(),
            headers: HeaderSources::default(),
            proxy_protocol: ProxyProtocol::Off,
            per_port: Vec::new(),
        }
    }

    /// Which forwarding headers are believed. Default: all ([`HeaderSources::default`]).
    pub fn with_headers(mut self, headers: HeaderSources) -> Self {
        self.headers = headers;
        self
    }

    /// The PROXY protocol setting of every listener without its own. Default: off.
    pub fn with_proxy_protocol(mut self, mode: ProxyProtocol) -> Self {
        self.proxy_protocol = mode;
        self
    }

    /// The PROXY protocol setting of the listeners on local port `port`.
    pub fn with_proxy_protocol_on(mut self, port: u16, mode: ProxyProtocol) -> Self {
        self.per_port.retain(|(p, _)| *p != port);
        self.per_port.push((port, mode));
        self
    }

    /// The trusted networks.
    pub fn trusted(&self) -> &[IpNet] {
        &self.trusted
    }

    /// Whether `ip` is in a trusted network.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// The forwarding headers believed.
    pub fn headers(&self) -> HeaderSources {
        self.headers
    }

    /// The PROXY protocol setting for a listener on local port `port`.
    pub fn proxy_protocol_for(&self, port: u16) -> ProxyProtocol {
        self.per_port
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, mode)| *mode)
            .unwrap_or(self.proxy_protocol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> (usize, ProxyHeader) {
        match parse_proxy_header(buf).unwrap() {
            ProxyParse::Done { len, header } => (len, header),
            other => panic!("{other:?}"),
        }
    }

    /// Feeds `buf` the way the transport reads: as many bytes as asked for, no more.
    fn feed(buf: &[u8]) -> Result<ProxyParse, ForwardedError> {
        let mut have = 0;
        loop {
            match parse_proxy_header(&buf[..have])? {
                ProxyParse::NeedMore(n) => {
                    assert!(n > 0);
                    if have + n > buf.len() {
                        return Ok(ProxyParse::NeedMore(n));
                    }
                    have += n;
                }
                other => return Ok(other),
            }
        }
    }

    #[test]
    fn v1_lines() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1";
        let (len, header) = done(line);
        assert_eq!(len, 45);
        assert_eq!(header.source, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(
            header.destination,
            Some("198.51.100.2:443".parse().unwrap())
        );
        match feed(line).unwrap() {
            ProxyParse::Done { len: 45, .. } => {}
            other => panic!("{other:?}"),
        }
        let (_, v6) = done(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
        assert_eq!(v6.source, Some("[2001:db8::1]:1".parse().unwrap()));
        assert_eq!(done(b"PROXY UNKNOWN\r\n").1.source, None);
        assert_eq!(done(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n").1.source, None);
        for bad in [
            &b"PROXY TCP4 ::1 ::1 1 2\r\n"[..],
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
            b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n",
            b"PROXY TCP4 1.2.3.4\n",
        ] {
            assert!(
                parse_proxy_header(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY ".as_slice(), &[b'A'; 200]].concat();
        assert_eq!(
            feed(&long),
            Err(ForwardedError::ProxyHeaderTooLarge { limit: 107 })
        );
    }

    #[test]
    fn not_proxy_is_decided_early() {
        for other in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01",
            b"/multistream/1.0.0\n",
            b"POST",
            b"\r\n\r\nX",
        ] {
            assert_eq!(feed(other).unwrap(), ProxyParse::NotProxy, "{other:?}");
        }
        assert_eq!(parse_proxy_header(b"").unwrap(), ProxyParse::NeedMore(1));
        assert_eq!(
            parse_proxy_header(b"PROX").unwrap(),
            ProxyParse::NeedMore(1)
        );
    }

    fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | cmd);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn v2_headers() {
        let body = [
            192, 0, 2, 1, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb, /* a TLV */ 0x04, 0, 1, 0,
        ];
        let header = v2(1, 0x11, &body);
        let mut stream = header.clone();
        stream.extend_from_slice(b"\x16\x03\x01");
        match feed(&stream).unwrap() {
            ProxyParse::Done { len, header: h } => {
                assert_eq!(len, header.len());
                assert_eq!(h.version, 2);
                assert_eq!(h.source, Some("192.0.2.1:8080".parse().unwrap()));
                assert_eq!(h.destination, Some("10.0.0.1:443".parse().unwrap()));
            }
            other => panic!("{other:?}"),
        }
        let mut v6 = [0u8; 36];
        v6[15] = 1;
        v6[32..34].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            done(&v2(1, 0x21, &v6)).1.source,
            Some("[::1]:7".parse().unwrap())
        );
        assert_eq!(done(&v2(0, 0x11, &body)).1.source, None, "LOCAL");
        assert_eq!(done(&v2(1, 0x00, &[])).1.source, None, "UNSPEC");
        assert!(
            parse_proxy_header(&v2(1, 0x11, &body[..8])).is_err(),
            "short addresses"
        );
        assert!(
            parse_proxy_header(&v2(2, 0x11, &body)).is_err(),
            "bad command"
        );
        assert!(
            parse_proxy_header(&v2(1, 0x99, &body)).is_err(),
            "bad family"
        );
        let mut bad_version = v2(1, 0x11, &body);
        bad_version[12] = 0x11;
        assert!(parse_proxy_header(&bad_version).is_err());
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(
            parse_proxy_header(&huge),
            Err(ForwardedError::ProxyHeaderTooLarge {
                limit: MAX_PROXY_HEADER
            })
        );
    }

    fn client(
        headers: &[(&'static str, &'static str)],
        trusted: &[&str],
    ) -> Result<Option<ForwardedClient>, ForwardedError> {
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        client_from_headers(
            headers.iter().map(|(n, v)| (*n, v.as_bytes())),
            &trusted,
            HeaderSources::default(),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn x_forwarded_for_takes_the_right_most_untrusted_hop() {
        let c = client(
            &[("X-Forwarded-For", "203.0.113.9, 198.51.100.7, 10.0.0.2")],
            &["10.0.0.0/8"],
        )
        .unwrap()
        .unwrap();
        assert_eq!((c.ip, c.port, c.https), (ip("198.51.100.7"), None, false));
        let c = client(
            &[("x-forwarded-for", "10.0.0.3, 10.0.0.2")],
            &["10.0.0.0/8"],
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.ip, ip("10.0.0.3"), "all trusted: the left-most");
        let c = client(
            &[
                ("X-Forwarded-For", "1.1.1.1"),
                ("X-Forwarded-For", "2.2.2.2:80"),
                ("X-Forwarded-Proto", "https"),
            ],
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!((c.ip, c.port, c.https), (ip("2.2.2.2"), Some(80), true));
        assert_eq!(
            client(&[("X-Forwarded-For", "unknown")], &[]).unwrap(),
            None
        );
        assert!(matches!(
            client(&[("X-Forwarded-For", "1.1.1.1, evil")], &[]),
            Err(ForwardedError::MalformedHeader {
                header: "X-Forwarded-For",
                ..
            })
        ));
        assert!(client(&[("X-Forwarded-For", " , ")], &[]).is_err());
        let many = vec!["1.1.1.1"; MAX_HOPS + 1].join(",");
        let many: &'static str = Box::leak(many.into_boxed_str());
        assert!(matches!(
            client(&[("X-Forwarded-For", many)], &[]),
            Err(ForwardedError::TooManyHops { .. })
        ));
    }

    #[test]
    fn forwarded_rfc7239() {
        let c = client(
            &[(
                "Forwarded",
                "for=192.0.2.43, for=\"[2001:db8:cafe::17]:4711\";proto=https;by=10.0.0.1",
            )],
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.ip, c.port, c.https),
            (ip("2001:db8:cafe::17"), Some(4711), true)
        );
        let c = client(
            &[(
                "Forwarded",
                "For=\"192.0.2.60:47011\";Proto=http, for=10.1.1.1",
            )],
            &["10.0.0.0/8"],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.ip, c.port, c.https),
            (ip("192.0.2.60"), Some(47011), false)
        );
        assert_eq!(client(&[("Forwarded", "for=_hidden")], &[]).unwrap(), None);
        assert_eq!(
            client(
                &[("Forwarded", "for=unknown, for=10.0.0.1")],
                &["10.0.0.0/8"]
            )
            .unwrap(),
            None
        );
        // Forwarded wins over X-Forwarded-For.
        let c = client(
            &[("X-Forwarded-For", "1.1.1.1"), ("Forwarded", "for=2.2.2.2")],
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.ip, ip("2.2.2.2"));
        for bad in [
            "for=",
            "for=\"1.2.3.4",
            "=x",
            "for=not-an-ip",
            "for=\"[::1\"",
            "for=1.2.3.4:99999",
            "",
        ] {
            assert!(client(&[("Forwarded", bad)], &[]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn x_real_ip_and_sources() {
        let c = client(&[("X-Real-IP", "198.51.100.1")], &[])
            .unwrap()
            .unwrap();
        assert_eq!(c.ip, ip("198.51.100.1"));
        assert!(client(&[("X-Real-IP", "1.1.1.1, 2.2.2.2")], &[]).is_err());
        assert_eq!(client(&[("Host", "x")], &[]).unwrap(), None);
        let only_real = HeaderSources::none().with_x_real_ip(true);
        let headers = [("X-Forwarded-For", "1.1.1.1"), ("X-Real-IP", "3.3.3.3")];
        let c = client_from_headers(
            headers.iter().map(|(n, v)| (*n, v.as_bytes())),
            &[],
            only_real,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.ip, ip("3.3.3.3"));
        assert_eq!(
            client_from_headers(
                headers.iter().map(|(n, v)| (*n, v.as_bytes())),
                &[],
                HeaderSources::none()
            )
            .unwrap(),
            None
        );
    }
}
