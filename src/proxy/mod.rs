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
//! The protocols themselves are sans-IO (`http`, `socks5`); `tunnel` runs them over any byte
//! stream. They are public only with the feature `unstable-internals` (no stability promise).

mod env;
internal! {
    #[cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub))]
    mod http;
}
mod net;
internal! {
    #[cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub))]
    mod socks5;
}
#[cfg(test)]
mod tests;
#[cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub))]
mod tunnel;
mod url;

use std::{io, time::Duration};

pub(crate) use self::env::Proxies;
pub use self::{
    env::{NoProxy, ProxyEnv},
    net::{IpNet, IpNetError},
    url::{Credentials, Proxy, ProxyKind, ProxyUrlError},
};
internal! {
    use self::tunnel::{tunnel, TunnelTarget};
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
        /// The reason phrase (UTF-8, control characters replaced by `?`, shortened).
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

/// Standard base64 with padding (RFC 4648), for HTTP basic authentication.
pub(crate) fn base64(input: &[u8]) -> String {
    data_encoding::BASE64.encode(input)
}
