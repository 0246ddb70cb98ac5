//! Proxy URLs: [`Proxy`] (`http://`, `socks5://`, `socks5h://`, with optional credentials), its
//! parser and its `Display`.

use std::{fmt, str::FromStr};

use percent_encoding::percent_decode_str;

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
    pub(super) username: String,
    pub(super) password: String,
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

    /// Parses a proxy URL (see the [module docs](super)); without a scheme, `http://` is assumed
    /// (as curl does).
    ///
    /// The URL is read by the [`url`] crate (WHATWG URL rules: percent-encoding, IPv6 literals,
    /// ports, for `http://` lowercase names and IPv4 forms such as `127.1`), within our bounds: no
    /// path, query or fragment, no control characters or raw `\`, a host of ASCII letters,
    /// digits, `-`, `.` and `_` (or an IP address), a port from 1 to 65535, credentials that
    /// decode to UTF-8.
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
        let authority = authority_as_written(rest)?;
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let parsed = ::url::Url::parse(&format!("{scheme}://{rest}"))
            .map_err(|e| ProxyUrlError::Invalid(url_error(e, hostport)))?;
        let credentials = if authority.contains('@') {
            Some(credentials(&parsed)?)
        } else {
            None
        };
        let host = host(&parsed)?;
        let port = match parsed.port() {
            None => default_port,
            Some(0) => return Err(ProxyUrlError::Invalid(PORT_RANGE)),
            Some(port) => port,
        };
        Ok(Proxy {
            kind,
            host,
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

const PORT_RANGE: &str = "the port is not 1 to 65535";

/// Our message for the url crate's `error` about `hostport` (the URL's host and port as written).
fn url_error(error: ::url::ParseError, hostport: &str) -> &'static str {
    use ::url::ParseError as E;
    let (bracketed, port) = match hostport.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            None => return "an unclosed [ in the host",
            Some((_, "")) => (true, None),
            Some((_, after)) => match after.strip_prefix(':') {
                Some(port) => (true, Some(port)),
                None => return "junk after the IPv6 address",
            },
        },
        None => (false, hostport.split_once(':').map(|(_, port)| port)),
    };
    match error {
        E::EmptyHost => "no host",
        E::InvalidIpv6Address if bracketed => "not an IPv6 address inside [ ]",
        E::InvalidIpv4Address => "not an IPv4 address",
        E::InvalidPort => match port {
            Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                PORT_RANGE
            }
            _ => "the port is not a number",
        },
        E::IdnaError | E::InvalidDomainCharacter | E::InvalidIpv6Address => {
            "invalid characters in the host"
        }
        _ => "not a URL of the form scheme://[user:password@]host[:port]",
    }
}

/// The authority of `rest` (the URL after `scheme://`), after the checks on the URL as written that
/// the url crate would not make (it drops tabs and line breaks anywhere, reads `\` as `/` in http
/// URLs, drops `/.` and `/..` and extra slashes).
fn authority_as_written(rest: &str) -> Result<&str, ProxyUrlError> {
    if rest.contains(|c: char| c.is_ascii_control()) {
        return Err(ProxyUrlError::Invalid("control characters in the URL"));
    }
    if rest.contains('\\') {
        return Err(ProxyUrlError::Invalid("a \\ in the URL (write it as %5C)"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if !matches!(&rest[authority.len()..], "" | "/") {
        return Err(ProxyUrlError::Invalid(
            "a proxy URL has no path, query or fragment",
        ));
    }
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // Not "http:///host": the url crate skips the extra slashes of special schemes.
    if hostport.is_empty() {
        return Err(ProxyUrlError::Invalid("no host"));
    }
    if !hostport.is_ascii() {
        return Err(ProxyUrlError::Invalid("invalid characters in the host"));
    }
    if hostport.ends_with(':') {
        return Err(ProxyUrlError::Invalid("the port is not a number"));
    }
    Ok(authority)
}

/// The user name and password of a parsed URL, percent-decoded.
fn credentials(parsed: &::url::Url) -> Result<Credentials, ProxyUrlError> {
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| ProxyUrlError::Invalid("the credentials are not UTF-8"))
    };
    Ok(Credentials {
        username: decode(parsed.username())?,
        password: decode(parsed.password().unwrap_or_default())?,
    })
}

/// The host of a parsed URL: an IP address (IPv6 without brackets) or a lowercase name of ASCII
/// letters, digits, `-`, `.` and `_`.
fn host(parsed: &::url::Url) -> Result<String, ProxyUrlError> {
    match parsed.host() {
        None => Err(ProxyUrlError::Invalid("no host")),
        Some(::url::Host::Ipv4(ip)) => Ok(ip.to_string()),
        Some(::url::Host::Ipv6(ip)) => Ok(ip.to_string()),
        Some(::url::Host::Domain(name)) => {
            if name.is_empty() {
                return Err(ProxyUrlError::Invalid("no host"));
            }
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return Err(ProxyUrlError::Invalid("invalid characters in the host"));
            }
            Ok(name.to_ascii_lowercase())
        }
    }
}
