//! Dialing through forward proxies: HTTP CONNECT and SOCKS5.
//!
//! A [`Proxy`] is a proxy URL: `http://[user:pass@]host[:port]` (HTTP CONNECT, default port 80),
//! `socks5://[user:pass@]host[:port]` (SOCKS5, names resolved here, default port 1080) or
//! `socks5h://...` (SOCKS5, names resolved by the proxy: no DNS lookup happens on this side).
//! Give one to [`Config::with_proxy`](crate::Config::with_proxy) for every dial, or read the usual
//! environment variables with [`ProxyEnv::from_env`] and give them to
//! [`Config::with_proxy_env`](crate::Config::with_proxy_env).
//!
//! The proxy only carries bytes: TLS (its SNI and certificate verification) and the HTTP upgrade
//! (its `Host` header) run end to end with the origin, through the tunnel. Everything read from
//! the proxy is bounded (the response head by
//! [`Config::with_max_head_size`](crate::Config::with_max_head_size)) and the tunnel is part of
//! the dial, within [`Config::with_handshake_timeout`](crate::Config::with_handshake_timeout).
//! Failures are [`Error::Proxy`](crate::Error::Proxy), naming the proxy, with a [`ProxyError`]
//! saying why.
//!
//! The protocols themselves are sans-IO ([`http`], [`socks5`]); [`tunnel`] runs them over any
//! byte stream.

pub mod http;
mod net;
pub mod socks5;

use std::{fmt, io, str::FromStr, time::Duration};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use percent_encoding::percent_decode_str;

pub use net::{IpNet, IpNetError};

use crate::addr::{Host, Kind};

/// The protocol a proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProxyKind {
    /// HTTP CONNECT (`http://`); the proxy resolves names.
    HttpConnect,
    /// SOCKS5 (`socks5://`, `socks5h://`).
    Socks5 {
        /// `socks5h`: names go to the proxy, which resolves them; `socks5`: names are resolved
        /// here and the proxy gets the address.
        remote_dns: bool,
    },
}

/// A username and a password for a proxy. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    username: String,
    password: String,
}

impl Credentials {
    /// Credentials from a username and a password.
    pub fn new(username: &str, password: &str) -> Self {
        Credentials {
            username: username.to_string(),
            password: password.to_string(),
        }
    }

    /// The username.
    pub fn username(&self) -> &str {
        &self.username
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A forward proxy to dial through. `Display` gives its URL without credentials.
///
/// ```
/// use libp2p_ws::proxy::{Proxy, ProxyKind};
/// let proxy: Proxy = "socks5h://alice:s%40cret@127.0.0.1:1080".parse().unwrap();
/// assert_eq!(proxy.kind(), ProxyKind::Socks5 { remote_dns: true });
/// assert_eq!(proxy.credentials().unwrap().username(), "alice");
/// assert_eq!(proxy.to_string(), "socks5h://127.0.0.1:1080");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Proxy {
    kind: ProxyKind,
    host: String,
    port: u16,
    credentials: Option<Credentials>,
}

/// Why a proxy URL or a proxy environment variable cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyUrlError {
    /// The scheme is not `http`, `socks5` or `socks5h`.
    #[error("unsupported proxy scheme {0:?}: use http://, socks5:// or socks5h://")]
    UnsupportedScheme(String),
    /// The URL is malformed; the string says where.
    #[error("invalid proxy URL: {0}")]
    Invalid(&'static str),
    /// An environment variable holds an invalid proxy URL.
    #[error("the environment variable {variable} holds an invalid proxy URL")]
    Variable {
        /// The variable's name.
        variable: &'static str,
        /// Why its value is invalid.
        source: Box<ProxyUrlError>,
    },
}

impl Proxy {
    /// A proxy of `kind` at `host:port`, without credentials.
    pub fn new(kind: ProxyKind, host: &str, port: u16) -> Self {
        Proxy {
            kind,
            host: host.to_string(),
            port,
            credentials: None,
        }
    }

    /// The same proxy, authenticating with `credentials` (HTTP basic auth, SOCKS5
    /// username/password).
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Parses a proxy URL (see the [module docs](self)); without a scheme, `http://` is assumed
    /// (as curl does).
    pub fn parse(url: &str) -> Result<Self, ProxyUrlError> {
        let url = url.trim();
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("http".to_string(), url),
        };
        let (kind, default_port) = match scheme.as_str() {
            "http" => (ProxyKind::HttpConnect, 80),
            "socks5" => (ProxyKind::Socks5 { remote_dns: false }, 1080),
            "socks5h" => (ProxyKind::Socks5 { remote_dns: true }, 1080),
            _ => return Err(ProxyUrlError::UnsupportedScheme(scheme)),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(ProxyUrlError::Invalid(
                "a proxy URL has no path, query or fragment",
            ));
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let credentials = match userinfo {
            None => None,
            Some(userinfo) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let decode = |s: &str| {
                    percent_decode_str(s)
                        .decode_utf8()
                        .map(|s| s.into_owned())
                        .map_err(|_| ProxyUrlError::Invalid("the credentials are not UTF-8"))
                };
                Some(Credentials {
                    username: decode(user)?,
                    password: decode(pass)?,
                })
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (ip, after) = v6
                .split_once(']')
                .ok_or(ProxyUrlError::Invalid("an unclosed [ in the host"))?;
            ip.parse::<std::net::Ipv6Addr>()
                .map_err(|_| ProxyUrlError::Invalid("not an IPv6 address inside [ ]"))?;
            match after {
                "" => (ip, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (ip, Some(port)),
                    None => return Err(ProxyUrlError::Invalid("junk after the IPv6 address")),
                },
            }
        } else {
            match hostport.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(ProxyUrlError::Invalid("no host"));
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
        {
            return Err(ProxyUrlError::Invalid("invalid characters in the host"));
        }
        let port = match port {
            None => default_port,
            Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or(ProxyUrlError::Invalid("the port is not 1 to 65535"))?,
            Some(_) => return Err(ProxyUrlError::Invalid("the port is not a number")),
        };
        Ok(Proxy {
            kind,
            host: host.to_ascii_lowercase(),
            port,
            credentials,
        })
    }

    /// The protocol the proxy speaks.
    pub fn kind(&self) -> ProxyKind {
        self.kind
    }

    /// The proxy's host: a name or an IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The credentials, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Whether names in dialed addresses are resolved by the proxy (HTTP CONNECT, `socks5h`)
    /// rather than here (`socks5`).
    pub fn resolves_names(&self) -> bool {
        !matches!(self.kind, ProxyKind::Socks5 { remote_dns: false })
    }
}

impl FromStr for Proxy {
    type Err = ProxyUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Proxy::parse(s)
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            ProxyKind::HttpConnect => "http",
            ProxyKind::Socks5 { remote_dns: false } => "socks5",
            ProxyKind::Socks5 { remote_dns: true } => "socks5h",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// `NO_PROXY`, as curl reads it: a comma- (or space-) separated list of hosts that are dialed
/// directly. A name matches itself and its subdomains (`example.com` and `.example.com` both
/// match `example.com` and `a.example.com`); an IP address or a CIDR network matches the IP
/// addresses in it (names are not resolved to check); `*` alone matches everything. Matching is
/// case-insensitive and ignores a trailing dot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    names: Vec<String>,
    nets: Vec<IpNet>,
}

impl NoProxy {
    /// Parses a `NO_PROXY` value; entries that are neither a name nor an address are skipped.
    pub fn parse(value: &str) -> Self {
        let mut no_proxy = NoProxy::default();
        for entry in value.split([',', ' ', '\t']).map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                no_proxy.all = true;
            } else if let Ok(net) = entry.parse::<IpNet>() {
                no_proxy.nets.push(net);
            } else {
                let name = entry.trim_start_matches('.').trim_end_matches('.');
                if !name.is_empty() {
                    no_proxy.names.push(name.to_ascii_lowercase());
                }
            }
        }
        no_proxy
    }

    /// Whether `host` is to be dialed directly.
    pub fn matches(&self, host: &Host) -> bool {
        if self.all {
            return true;
        }
        match host {
            Host::Ip(ip) => self.nets.iter().any(|net| net.contains(*ip)),
            Host::Dns { name, .. } => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                self.names.iter().any(|entry| {
                    name == *entry
                        || (name.len() > entry.len()
                            && name.ends_with(entry.as_str())
                            && name.as_bytes()[name.len() - entry.len() - 1] == b'.')
                })
            }
        }
    }
}

/// The proxy settings of the environment, read once: `https_proxy`/`HTTPS_PROXY` for `/tls/ws`
/// dials, `http_proxy`/`HTTP_PROXY` for `/ws` dials, `all_proxy`/`ALL_PROXY` for those without
/// their own and for `/tcp` dials, and `no_proxy`/`NO_PROXY` ([`NoProxy`]) for the hosts dialed
/// directly. The lower-case name wins where both are set; empty values count as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    https: Option<Proxy>,
    http: Option<Proxy>,
    all: Option<Proxy>,
    no_proxy: NoProxy,
}

impl ProxyEnv {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ProxyUrlError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup` (for tests, or settings from elsewhere).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ProxyUrlError> {
        let get = |lower: &'static str, upper: &'static str| {
            [lower, upper].into_iter().find_map(|name| {
                lookup(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            })
        };
        let proxy = |lower, upper| -> Result<Option<Proxy>, ProxyUrlError> {
            match get(lower, upper) {
                None => Ok(None),
                Some((variable, value)) => {
                    Proxy::parse(&value)
                        .map(Some)
                        .map_err(|e| ProxyUrlError::Variable {
                            variable,
                            source: Box::new(e),
                        })
                }
            }
        };
        Ok(ProxyEnv {
            https: proxy("https_proxy", "HTTPS_PROXY")?,
            http: proxy("http_proxy", "HTTP_PROXY")?,
            all: proxy("all_proxy", "ALL_PROXY")?,
            no_proxy: get("no_proxy", "NO_PROXY")
                .map(|(_, v)| NoProxy::parse(&v))
                .unwrap_or_default(),
        })
    }

    /// The proxy for a dial of `kind` to `host`, or `None` to dial directly.
    pub fn proxy_for(&self, host: &Host, kind: Kind) -> Option<&Proxy> {
        if self.no_proxy.matches(host) {
            return None;
        }
        match kind {
            Kind::TlsWs => self.https.as_ref().or(self.all.as_ref()),
            Kind::Ws => self.http.as_ref().or(self.all.as_ref()),
            Kind::Tcp => self.all.as_ref(),
        }
    }

    /// Whether no proxy is set.
    pub fn is_empty(&self) -> bool {
        self.https.is_none() && self.http.is_none() && self.all.is_none()
    }
}

/// How the transport dials: directly, through one proxy, or as the environment says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Proxies {
    #[default]
    Direct,
    Fixed(Proxy),
    Env(Box<ProxyEnv>),
}

impl Proxies {
    pub(crate) fn route(&self, host: &Host, kind: Kind) -> Option<&Proxy> {
        match self {
            Proxies::Direct => None,
            Proxies::Fixed(proxy) => Some(proxy),
            Proxies::Env(env) => env.proxy_for(host, kind),
        }
    }
}

/// Why a tunnel through a proxy failed; inside [`Error::Proxy`](crate::Error::Proxy), which
/// names the proxy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// Connecting to the proxy failed (refused, unreachable).
    #[error("could not connect to the proxy")]
    Connect(#[source] io::Error),
    /// The proxy's own name could not be resolved.
    #[error("could not resolve the proxy's name")]
    Resolve(#[source] io::Error),
    /// HTTP 407 (or 401, which some proxies such as tinyproxy send for wrong credentials): the
    /// proxy wants (other) credentials.
    #[error(
        "the proxy {} (HTTP {status}{})",
        if *sent_credentials { "refused the credentials" } else { "requires credentials: give them in the URL, http://user:password@host:port" },
        challenge.as_deref().map(|c| format!(", it asks for {c}")).unwrap_or_default()
    )]
    AuthRequired {
        /// The HTTP status: 407, or 401.
        status: u16,
        /// Whether credentials were sent.
        sent_credentials: bool,
        /// The proxy's `Proxy-Authenticate` header, if any.
        challenge: Option<String>,
    },
    /// The proxy answered `CONNECT` with a status other than 2xx or 407.
    #[error("the proxy refused the tunnel with HTTP {status} {reason}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The reason phrase (printable ASCII, shortened).
        reason: String,
    },
    /// The proxy's response head is larger than the limit.
    #[error("the proxy's response head exceeds the limit of {limit} bytes")]
    HeadTooLarge {
        /// The limit ([`Config::with_max_head_size`](crate::Config::with_max_head_size)).
        limit: usize,
    },
    /// The proxy does not speak the protocol (a malformed answer); the string says how.
    #[error("malformed answer from the proxy: {0}")]
    Malformed(String),
    /// SOCKS5: the proxy accepts none of the offered authentication methods.
    #[error(
        "SOCKS5: the proxy accepts none of the offered authentication methods ({})",
        if *offered_credentials { "no authentication, username/password" } else { "no authentication; it may want a username and password: give them in the URL, socks5h://user:password@host:port" }
    )]
    SocksNoAcceptableMethod {
        /// Whether username/password was offered.
        offered_credentials: bool,
    },
    /// SOCKS5: the proxy refused the username and password.
    #[error("SOCKS5: the proxy refused the username and password")]
    SocksAuthFailed,
    /// SOCKS5: the proxy answered CONNECT with a failure code (RFC 1928 section 6).
    #[error("SOCKS5: the proxy could not connect: {} (reply code {code})", socks5::reply_meaning(*code))]
    SocksFailure {
        /// The reply code: 1 general failure, 2 not allowed, 3 network unreachable, 4 host
        /// unreachable, 5 connection refused, 6 TTL expired, 7 command not supported, 8 address
        /// type not supported.
        code: u8,
    },
    /// The credentials cannot be sent (SOCKS5 limits each to 255 bytes).
    #[error("the proxy credentials cannot be used: {0}")]
    InvalidCredentials(&'static str),
    /// The dialed address cannot be sent to the proxy.
    #[error("the address cannot be sent to the proxy: {0}")]
    InvalidTarget(String),
    /// The tunnel was not open within the handshake timeout.
    #[error("the proxy did not open the tunnel within the handshake timeout ({after:?})")]
    Timeout {
        /// [`Config::with_handshake_timeout`](crate::Config::with_handshake_timeout).
        after: Duration,
    },
    /// The proxy closed the connection before the tunnel was open.
    #[error("the proxy closed the connection before the tunnel was open")]
    Closed,
    /// Reading from or writing to the proxy failed.
    #[error("i/o error talking to the proxy")]
    Io(#[source] io::Error),
}

/// Where the tunnel leads: a name (resolved by the proxy) or an address, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelTarget {
    /// A name for the proxy to resolve.
    Name(String, u16),
    /// An address.
    Addr(std::net::SocketAddr),
}

impl TunnelTarget {
    /// `host:port` for HTTP CONNECT (an IPv6 address in brackets). Names must be printable
    /// ASCII without spaces, `@`, `/` or `:` (nothing that could break the request line).
    fn authority(&self) -> Result<String, ProxyError> {
        match self {
            TunnelTarget::Addr(addr) => Ok(addr.to_string()),
            TunnelTarget::Name(name, port) => {
                check_name(name)?;
                Ok(format!("{name}:{port}"))
            }
        }
    }
}

fn check_name(name: &str) -> Result<(), ProxyError> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(ProxyError::InvalidTarget(format!(
            "{name:?} is not a DNS name (letters, digits, '-', '.', '_'; at most 255 bytes)"
        )))
    }
}

/// Opens a tunnel to `target` through `proxy` over `io`, a connection to the proxy. Reads only
/// the proxy's answer (byte by byte for HTTP, so nothing of the origin's is consumed), at most
/// `max_head` bytes of it. Unbounded in time: the caller bounds it.
pub async fn tunnel<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    proxy: &Proxy,
    target: &TunnelTarget,
    max_head: usize,
) -> Result<(), ProxyError> {
    match proxy.kind {
        ProxyKind::HttpConnect => {
            let credentials = proxy.credentials.as_ref();
            let request = http::connect_request(&target.authority()?, credentials);
            write(io, &request).await?;
            let mut head = Vec::with_capacity(256);
            let mut byte = [0u8; 1];
            loop {
                if head.len() >= max_head {
                    return Err(ProxyError::HeadTooLarge { limit: max_head });
                }
                read_exact(io, &mut byte).await?;
                head.push(byte[0]);
                if head.ends_with(b"\n")
                    && http::parse_response(&head, credentials.is_some())?.is_some()
                {
                    return Ok(());
                }
            }
        }
        ProxyKind::Socks5 { .. } => {
            let credentials = proxy.credentials.as_ref();
            write(io, &socks5::greeting(credentials.is_some())).await?;
            let mut reply = [0u8; 2];
            read_exact(io, &mut reply).await?;
            if socks5::parse_method(reply, credentials.is_some())? == socks5::USERNAME_PASSWORD {
                let credentials = credentials.ok_or(ProxyError::Malformed(
                    "username/password chosen but not offered".into(),
                ))?;
                write(io, &socks5::auth_request(credentials)?).await?;
                read_exact(io, &mut reply).await?;
                socks5::parse_auth_reply(reply)?;
            }
            let request = match target {
                TunnelTarget::Addr(addr) => socks5::connect_request(&socks5::Target::Addr(*addr))?,
                TunnelTarget::Name(name, port) => {
                    check_name(name)?;
                    socks5::connect_request(&socks5::Target::Name(name, *port))?
                }
            };
            write(io, &request).await?;
            let mut head = [0u8; 4];
            read_exact(io, &mut head).await?;
            let rest = match socks5::parse_reply_head(head)? {
                Some(rest) => rest,
                None => {
                    let mut len = [0u8; 1];
                    read_exact(io, &mut len).await?;
                    socks5::name_reply_rest(len[0])
                }
            };
            let mut bound = [0u8; 257];
            read_exact(io, &mut bound[..rest]).await
        }
    }
}

async fn write<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> Result<(), ProxyError> {
    io.write_all(bytes).await.map_err(ProxyError::Io)?;
    io.flush().await.map_err(ProxyError::Io)
}

async fn read_exact<S: AsyncRead + Unpin>(io: &mut S, buf: &mut [u8]) -> Result<(), ProxyError> {
    io.read_exact(buf).await.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ProxyError::Closed,
        _ => ProxyError::Io(e),
    })
}

/// Standard base64 with padding (RFC 4648), for HTTP basic authentication.
pub(crate) fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::DnsFamily;

    fn name(n: &str) -> Host {
        Host::Dns {
            name: n.into(),
            family: DnsFamily::Any,
        }
    }

    fn ip(s: &str) -> Host {
        Host::Ip(s.parse().unwrap())
    }

    #[test]
    fn base64_rfc4648_vectors() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
    }

    #[test]
    fn proxy_urls() {
        let p = Proxy::parse("http://u:p%3Aw@proxy.example:3128/").unwrap();
        assert_eq!(p.kind(), ProxyKind::HttpConnect);
        assert_eq!((p.host(), p.port()), ("proxy.example", 3128));
        let c = p.credentials().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:w"));
        assert!(
            !format!("{p:?}").contains("p:w"),
            "Debug hides the password"
        );
        assert_eq!(p.to_string(), "http://proxy.example:3128");
        assert_eq!(
            Proxy::parse("10.0.0.1:8080").unwrap().kind(),
            ProxyKind::HttpConnect
        );
        assert_eq!(Proxy::parse("http://h").unwrap().port(), 80);
        assert_eq!(Proxy::parse("socks5://h").unwrap().port(), 1080);
        let v6 = Proxy::parse("socks5h://[::1]:9050").unwrap();
        assert_eq!((v6.host(), v6.port()), ("::1", 9050));
        assert_eq!(v6.to_string(), "socks5h://[::1]:9050");
        assert!(!Proxy::parse("socks5://h").unwrap().resolves_names());
        assert!(Proxy::parse("socks5h://h").unwrap().resolves_names());
        for bad in [
            "https://h:1",
            "socks4://h",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://h:x",
            "http://h/path",
            "http://[::1",
            "http://[zz]:1",
            "http://h h:1",
            "http://[::1]x",
        ] {
            assert!(Proxy::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn no_proxy_as_curl_reads_it() {
        let np = NoProxy::parse("localhost, .example.com,10.0.0.0/8 ::1,192.168.1.1,");
        assert!(np.matches(&name("localhost")));
        assert!(np.matches(&name("LOCALHOST.")));
        assert!(np.matches(&name("example.com")));
        assert!(np.matches(&name("a.b.example.com")));
        assert!(!np.matches(&name("badexample.com")));
        assert!(!np.matches(&name("example.org")));
        assert!(np.matches(&ip("10.1.2.3")));
        assert!(!np.matches(&ip("11.0.0.1")));
        assert!(np.matches(&ip("::1")));
        assert!(np.matches(&ip("192.168.1.1")));
        assert!(!np.matches(&ip("192.168.1.2")));
        assert!(!np.matches(&name("10.1.2.3.nip.io")));
        assert!(NoProxy::parse("*").matches(&name("anything")));
        assert!(!NoProxy::parse("").matches(&name("anything")));
        assert!(NoProxy::parse("example.com").matches(&name("www.example.com")));
    }

    #[test]
    fn environment_selection() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            }
        };
        let env = ProxyEnv::from_lookup(vars(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:1"),
            ("ALL_PROXY", "socks5h://all:1"),
            ("NO_PROXY", "localhost,127.0.0.0/8"),
            ("http_proxy", " "),
        ]))
        .unwrap();
        let host = name("example.com");
        assert_eq!(env.proxy_for(&host, Kind::TlsWs).unwrap().host(), "lower");
        assert_eq!(env.proxy_for(&host, Kind::Ws).unwrap().host(), "all");
        assert_eq!(env.proxy_for(&host, Kind::Tcp).unwrap().host(), "all");
        assert!(env.proxy_for(&name("localhost"), Kind::TlsWs).is_none());
        assert!(env.proxy_for(&ip("127.0.0.1"), Kind::Ws).is_none());
        assert!(ProxyEnv::from_lookup(vars(&[])).unwrap().is_empty());
        match ProxyEnv::from_lookup(vars(&[("HTTP_PROXY", "ftp://x")])) {
            Err(ProxyUrlError::Variable { variable, .. }) => assert_eq!(variable, "HTTP_PROXY"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_that_could_break_a_request_are_refused() {
        for bad in ["a b", "a\r\nX: y", "", "a:1", "a/b", "a@b"] {
            assert!(
                TunnelTarget::Name(bad.into(), 1).authority().is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(
            TunnelTarget::Addr("[::1]:5".parse().unwrap())
                .authority()
                .unwrap(),
            "[::1]:5"
        );
    }

    /// A scripted proxy: answers `answer` to whatever is written, records what was written.
    struct Scripted {
        answer: io::Cursor<Vec<u8>>,
        written: Vec<u8>,
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::task::Poll::Ready(io::Read::read(&mut self.answer, buf))
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.written.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn run_tunnel(
        proxy: &str,
        answer: &[u8],
        target: TunnelTarget,
    ) -> (Result<(), ProxyError>, Scripted) {
        let mut io = Scripted {
            answer: io::Cursor::new(answer.to_vec()),
            written: Vec::new(),
        };
        let proxy = Proxy::parse(proxy).unwrap();
        let result = futures::executor::block_on(tunnel(&mut io, &proxy, &target, 256));
        (result, io)
    }

    #[test]
    fn http_tunnel_reads_only_the_head() {
        let answer = b"HTTP/1.1 200 OK\r\n\r\nORIGIN";
        let (result, io) = run_tunnel(
            "http://h:1",
            answer,
            TunnelTarget::Name("x.test".into(), 443),
        );
        result.unwrap();
        assert_eq!(io.answer.position(), 19, "the origin's bytes stay unread");
        assert!(io.written.starts_with(b"CONNECT x.test:443 HTTP/1.1\r\n"));
        let (result, _) = run_tunnel(
            "http://h:1",
            &[b'a'; 300],
            TunnelTarget::Name("x".into(), 1),
        );
        assert!(
            matches!(result, Err(ProxyError::HeadTooLarge { limit: 256 })),
            "{result:?}"
        );
        let (result, _) = run_tunnel(
            "http://h:1",
            b"HTTP/1.1 20",
            TunnelTarget::Name("x".into(), 1),
        );
        assert!(matches!(result, Err(ProxyError::Closed)), "{result:?}");
    }

    #[test]
    fn socks5_tunnel_with_credentials_and_a_name() {
        let answer = [5, 2, 1, 0, 5, 0, 0, 3, 3, b'a', b'b', b'c', 0, 80, b'!'];
        let (result, io) = run_tunnel(
            "socks5h://u:p@h:1",
            &answer,
            TunnelTarget::Name("x.test".into(), 443),
        );
        result.unwrap();
        assert_eq!(io.answer.position(), answer.len() as u64 - 1);
        let mut expected = vec![5, 2, 0, 2, 1, 1, b'u', 1, b'p', 5, 1, 0, 3, 6];
        expected.extend_from_slice(b"x.test");
        expected.extend_from_slice(&[1, 187]);
        assert_eq!(io.written, expected);
        let (result, _) = run_tunnel(
            "socks5h://h:1",
            &[5, 0, 5, 4, 0, 1],
            TunnelTarget::Name("x".into(), 1),
        );
        assert!(
            matches!(result, Err(ProxyError::SocksFailure { code: 4 })),
            "{result:?}"
        );
    }
}
