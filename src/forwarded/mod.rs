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

#[cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub))]
mod headers;
#[cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub))]
mod proxy_protocol;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

pub use self::{
    headers::{ForwardedClient, HeaderSources, MAX_HOPS},
    proxy_protocol::{ProxyHeader, ProxyProtocol, MAX_PROXY_HEADER},
};
internal! {
    // The parsers the listener runs (public for the fuzz targets with `unstable-internals`).
    use self::{
        headers::client_from_headers,
        proxy_protocol::{parse_proxy_header, ProxyParse, V2_SIGNATURE},
    };
}
use crate::proxy::IpNet;

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
    /// The client a trusted proxy named (in a PROXY header or a forwarding header) holds its
    /// share of pending handshakes already
    /// ([`Config::with_max_pending_handshakes_per_ip`](crate::Config::with_max_pending_handshakes_per_ip));
    /// the connection is closed (an HTTP request is answered 503 first, before any upgrade).
    #[error("the client the proxy named ({client}) holds its share of pending handshakes already")]
    ClientShareFull {
        /// The client's address.
        client: IpAddr,
    },
    /// A PROXY protocol header on a listener that reads none
    /// ([`ProxyProtocol::Off`]); the connection is closed without an answer.
    #[error("a PROXY protocol header, and the listener reads none (PROXY protocol is off)")]
    ProxyHeaderUnexpected,
    /// A forwarding header with more than [`MAX_HOPS`] hops.
    #[error("the {header} header has more than {limit} hops")]
    TooManyHops {
        /// The header's name.
        header: &'static str,
        /// The limit.
        limit: usize,
    },
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
    /// Trusts these networks; `X-Forwarded-For` believed ([`HeaderSources::default`]), PROXY
    /// protocol off.
    pub fn new(trusted: impl IntoIterator<Item = IpNet>) -> Self {
        ReverseProxy {
            trusted: trusted.into_iter().collect(),
            headers: HeaderSources::default(),
            proxy_protocol: ProxyProtocol::Off,
            per_port: Vec::new(),
        }
    }

    /// Which one forwarding header is believed: the one the proxy sets. Default:
    /// `X-Forwarded-For` ([`HeaderSources::default`]); [`HeaderSources::forwarded`] for a proxy
    /// that sets `Forwarded`, [`HeaderSources::none`] for PROXY headers only.
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

    /// The forwarding header believed.
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
