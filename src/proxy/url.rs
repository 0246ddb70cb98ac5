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
