//! WebSocket multiaddresses: parsing into dial targets and listen specs, and printing back.
//!
//! This module is pure: no IO, no DNS. It implements the address grammar of the libp2p WebSockets
//! specification:
//!
//! ```text
//! <host> [/tcp/<port>] <security> [/http-path/<percent-encoded>] [/p2p/<peer-id>]
//!
//! <host>     = /ip4/<a> | /ip6/<a> | /dns/<name> | /dns4/<name> | /dns6/<name>
//! <security> = /ws | /wss | /tls/ws | /tls/sni/<host>/ws      (and the legacy /x-parity-ws/<path>)
//! ```
//!
//! An omitted TCP port means 443 for the secure forms and 80 for `/ws`. Everything else (for example
//! `/dnsaddr`, `/quic-v1`, `/p2p-circuit`, `/unix`, `/ws` not over TCP, trailing components) is
//! rejected with an [`AddrError`], which the transport turns into
//! [`TransportError::MultiaddrNotSupported`](libp2p_core::transport::TransportError) so that other
//! transports get their turn.
//!
//! The canonical form printed by [`WsAddr::to_multiaddr`] always names the TCP port, writes TLS as
//! `/tls/ws` (or `/tls/sni/<host>/ws`) and the path as `/http-path/<percent-encoded>` (omitted when it is
//! `/`). Listen addresses are reported in that form, so another node can dial them as printed.
//!
//! The transport also serves plain libp2p TCP (`<host>/tcp/<port>[/p2p/<peer-id>]`, the port
//! required): [`Addr`] is either kind, parsed by [`Addr::parse`] and [`Addr::parse_listen`], and
//! [`Kind`] names the three forms one TCP port can serve (`/tcp`, `/ws`, `/tls/ws`).

use std::{fmt, net::IpAddr};

use libp2p_core::multiaddr::{Multiaddr, Protocol};
use libp2p_identity::PeerId;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// TCP port assumed for `/ws` when the address names none.
pub const DEFAULT_PORT_INSECURE: u16 = 80;
/// TCP port assumed for `/wss` and `/tls/ws` when the address names none.
pub const DEFAULT_PORT_SECURE: u16 = 443;

/// Characters that are percent-encoded in the HTTP request target. Everything that is not allowed in an
/// RFC 3986 path (other than `/`) is encoded; `%` is encoded too, since the path is held decoded.
const REQUEST_TARGET: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The host part of a WebSocket address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IP address (`/ip4` or `/ip6`).
    Ip(IpAddr),
    /// A DNS name to resolve (`/dns`, `/dns4` or `/dns6`).
    Dns {
        /// The name, as written in the address.
        name: String,
        /// Which address families the resolution may return.
        family: DnsFamily,
    },
}

/// The address families a `/dns*` component allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DnsFamily {
    /// `/dns`: IPv4 and IPv6.
    Any,
    /// `/dns4`: IPv4 only.
    V4,
    /// `/dns6`: IPv6 only.
    V6,
}

impl DnsFamily {
    /// Whether a resolved IP address belongs to this family.
    pub fn admits(self, ip: &IpAddr) -> bool {
        match self {
            DnsFamily::Any => true,
            DnsFamily::V4 => ip.is_ipv4(),
            DnsFamily::V6 => ip.is_ipv6(),
        }
    }
}

/// Whether the WebSocket runs over TLS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Security {
    /// `/ws`: plain WebSocket.
    Plain,
    /// `/wss`, `/tls/ws` or `/tls/sni/<host>/ws`.
    Tls {
        /// The server name from `/tls/sni/<host>`, if given.
        sni: Option<String>,
    },
}

/// A parsed WebSocket address: where to connect (or listen), how, and which HTTP path to use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WsAddr {
    pub(crate) host: Host,
    pub(crate) port: u16,
    pub(crate) security: Security,
    pub(crate) path: String,
    pub(crate) peer_id: Option<PeerId>,
}

/// Why an address is not a WebSocket address this transport can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// The address does not start with `/ip4`, `/ip6`, `/dns`, `/dns4` or `/dns6`.
    #[error("a WebSocket address starts with /ip4, /ip6, /dns, /dns4 or /dns6")]
    UnsupportedHost,
    /// No `/ws`, `/wss` or `/tls/ws` where one was expected (for example `/quic-v1`, `/udp`); from
    /// [`Addr::parse`]: neither `<host>/tcp/<port>` nor a WebSocket address.
    #[error("not a WebSocket address: expected /ws, /wss, /tls/ws or /tls/sni/<host>/ws after the host and port")]
    NotWebSocket,
    /// `/tls` (and `/sni`) not followed by `/ws`.
    #[error("/tls must be followed by /ws (or /sni/<host>/ws)")]
    TlsWithoutWs,
    /// An `/sni` name that is empty.
    #[error("/sni needs a non-empty host name")]
    EmptySni,
    /// An `/http-path` whose value is empty (`/http-path/`); the root path needs no `/http-path`.
    #[error("/http-path needs a non-empty, percent-encoded path (omit it for the root path /)")]
    EmptyHttpPath,
    /// Two paths: `/x-parity-ws/<path>` and `/http-path/<path>` together.
    #[error("the address names two HTTP paths")]
    TwoPaths,
    /// A component after the WebSocket part that is neither `/http-path` nor `/p2p`.
    #[error("unexpected component after the WebSocket part of the address: /{0}")]
    Trailing(String),
    /// A `/p2p/<peer-id>` on an address to listen on.
    #[error("a listen address must not end in /p2p/<peer-id>")]
    PeerIdInListenAddress,
}

impl WsAddr {
    /// Parses a multiaddress as a WebSocket address (for dialing).
    pub fn parse(addr: &Multiaddr) -> Result<Self, AddrError> {
        let mut iter = addr.iter().peekable();

        let host = match iter.next() {
            Some(Protocol::Ip4(ip)) => Host::Ip(ip.into()),
            Some(Protocol::Ip6(ip)) => Host::Ip(ip.into()),
            Some(Protocol::Dns(name)) => dns(name, DnsFamily::Any),
            Some(Protocol::Dns4(name)) => dns(name, DnsFamily::V4),
            Some(Protocol::Dns6(name)) => dns(name, DnsFamily::V6),
            _ => return Err(AddrError::UnsupportedHost),
        };

        let explicit_port = match iter.peek() {
            Some(Protocol::Tcp(port)) => {
                let port = *port;
                iter.next();
                Some(port)
            }
            _ => None,
        };

        let (security, legacy_path) = match iter.next() {
            Some(Protocol::Ws(path)) => (Security::Plain, path.into_owned()),
            Some(Protocol::Wss(path)) => (Security::Tls { sni: None }, path.into_owned()),
            Some(Protocol::Tls) => {
                let sni = match iter.peek() {
                    Some(Protocol::Sni(name)) => {
                        if name.is_empty() {
                            return Err(AddrError::EmptySni);
                        }
                        let name = name.to_string();
                        iter.next();
                        Some(name)
                    }
                    _ => None,
                };
                match iter.next() {
                    Some(Protocol::Ws(path)) => (Security::Tls { sni }, path.into_owned()),
                    _ => return Err(AddrError::TlsWithoutWs),
                }
            }
            _ => return Err(AddrError::NotWebSocket),
        };

        let mut path = normalize_path(&legacy_path);
        if let Some(Protocol::HttpPath(p)) = iter.peek() {
            if path != "/" {
                return Err(AddrError::TwoPaths);
            }
            if p.is_empty() {
                return Err(AddrError::EmptyHttpPath);
            }
            // The http-path value is the request target without its leading `/`.
            path = format!("/{p}");
            iter.next();
        }

        let peer_id = match iter.next() {
            Some(Protocol::P2p(id)) => Some(id),
            Some(other) => return Err(AddrError::Trailing(other.tag().to_string())),
            None => None,
        };
        if let Some(other) = iter.next() {
            return Err(AddrError::Trailing(other.tag().to_string()));
        }

        let port = explicit_port.unwrap_or(match security {
            Security::Plain => DEFAULT_PORT_INSECURE,
            Security::Tls { .. } => DEFAULT_PORT_SECURE,
        });

        Ok(WsAddr {
            host,
            port,
            security,
            path,
            peer_id,
        })
    }

    /// Parses a multiaddress to listen on: as [`WsAddr::parse`], without a `/p2p` suffix.
    pub fn parse_listen(addr: &Multiaddr) -> Result<Self, AddrError> {
        let parsed = Self::parse(addr)?;
        if parsed.peer_id.is_some() {
            return Err(AddrError::PeerIdInListenAddress);
        }
        Ok(parsed)
    }

    /// IP address or DNS name.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// TCP port, with the default for the scheme filled in when the address omits it.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Plain or TLS.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// The decoded HTTP path; always starts with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The peer id from a trailing `/p2p/<peer-id>`, if any.
    pub fn peer_id(&self) -> Option<PeerId> {
        self.peer_id
    }

    /// Whether the connection runs over TLS.
    pub fn is_secure(&self) -> bool {
        matches!(self.security, Security::Tls { .. })
    }

    /// The name to present in TLS SNI and to verify the certificate against: the `/sni` name, else
    /// the DNS name, else the IP address.
    pub fn server_name(&self) -> String {
        match (&self.security, &self.host) {
            (Security::Tls { sni: Some(sni) }, _) => sni.clone(),
            (_, Host::Dns { name, .. }) => name.clone(),
            (_, Host::Ip(ip)) => ip.to_string(),
        }
    }

    /// The value of the HTTP `Host` header: `host[:port]`, with an IPv6 address in brackets and the
    /// port left out when it is the scheme's default, as browsers do. The host is the `/sni` name if
    /// given (so virtual hosts behind a reverse proxy work), else the DNS name, else the IP address.
    pub fn host_header(&self) -> String {
        let host = match (&self.security, &self.host) {
            (Security::Tls { sni: Some(sni) }, _) => sni.clone(),
            (_, Host::Dns { name, .. }) => name.clone(),
            (_, Host::Ip(IpAddr::V6(ip))) => format!("[{ip}]"),
            (_, Host::Ip(IpAddr::V4(ip))) => ip.to_string(),
        };
        let default = if self.is_secure() {
            DEFAULT_PORT_SECURE
        } else {
            DEFAULT_PORT_INSECURE
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The HTTP request target: the path, percent-encoded where HTTP requires it.
    pub fn request_target(&self) -> String {
        utf8_percent_encode(&self.path, REQUEST_TARGET).to_string()
    }

    /// The canonical multiaddress of this address (see the module docs), with the given host in place
    /// of this one's. Used to report listen addresses.
    pub fn with_ip(&self, ip: IpAddr, port: u16) -> Multiaddr {
        WsAddr {
            host: Host::Ip(ip),
            port,
            ..self.clone()
        }
        .to_multiaddr()
    }

    /// The canonical multiaddress of this address (see the module docs).
    pub fn to_multiaddr(&self) -> Multiaddr {
        let mut addr = Multiaddr::empty();
        addr.push(host_protocol(&self.host));
        addr.push(Protocol::Tcp(self.port));
        if let Security::Tls { sni } = &self.security {
            addr.push(Protocol::Tls);
            if let Some(sni) = sni {
                addr.push(Protocol::Sni(sni.clone().into()));
            }
        }
        addr.push(Protocol::Ws("/".into()));
        let path = self.path.strip_prefix('/').unwrap_or(&self.path);
        if !path.is_empty() {
            addr.push(Protocol::HttpPath(path.to_string().into()));
        }
        if let Some(peer_id) = self.peer_id {
            addr.push(Protocol::P2p(peer_id));
        }
        addr
    }
}

impl fmt::Display for WsAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_multiaddr().fmt(f)
    }
}

/// The three forms one TCP port can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    /// Plain libp2p over TCP (`/tcp/<port>`): multistream-select right on the socket.
    Tcp,
    /// Plain WebSocket (`/tcp/<port>/ws`).
    Ws,
    /// WebSocket over TLS (`/tcp/<port>/tls/ws`, `/wss`, `/tls/sni/<name>/ws`).
    TlsWs,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Tcp => "/tcp",
            Kind::Ws => "/ws",
            Kind::TlsWs => "/tls/ws",
        })
    }
}

/// A plain TCP address: `<host>/tcp/<port>[/p2p/<peer-id>]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TcpAddr {
    pub(crate) host: Host,
    pub(crate) port: u16,
    pub(crate) peer_id: Option<PeerId>,
}

impl TcpAddr {
    /// IP address or DNS name.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// TCP port (always named in the address).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The peer id from a trailing `/p2p/<peer-id>`, if any.
    pub fn peer_id(&self) -> Option<PeerId> {
        self.peer_id
    }

    /// The canonical multiaddress: `<host>/tcp/<port>[/p2p/<peer-id>]`.
    pub fn to_multiaddr(&self) -> Multiaddr {
        let mut addr = Multiaddr::empty();
        addr.push(host_protocol(&self.host));
        addr.push(Protocol::Tcp(self.port));
        if let Some(peer_id) = self.peer_id {
            addr.push(Protocol::P2p(peer_id));
        }
        addr
    }

    /// This address with the given IP and port in place of its own.
    pub fn with_ip(&self, ip: IpAddr, port: u16) -> Multiaddr {
        TcpAddr {
            host: Host::Ip(ip),
            port,
            ..self.clone()
        }
        .to_multiaddr()
    }
}

impl fmt::Display for TcpAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_multiaddr().fmt(f)
    }
}

/// Any address this transport serves: plain TCP or WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Addr {
    /// `<host>/tcp/<port>[/p2p/<peer-id>]`.
    Tcp(TcpAddr),
    /// A WebSocket address (see [`WsAddr`]).
    Ws(WsAddr),
}

impl Addr {
    /// Parses a multiaddress to dial: a plain TCP address (`<host>/tcp/<port>`, optionally with
    /// `/p2p/<peer-id>`) or a WebSocket address ([`WsAddr::parse`]).
    pub fn parse(addr: &Multiaddr) -> Result<Self, AddrError> {
        match WsAddr::parse(addr) {
            Ok(ws) => Ok(Addr::Ws(ws)),
            Err(AddrError::NotWebSocket) => parse_tcp(addr).map(Addr::Tcp),
            Err(e) => Err(e),
        }
    }

    /// Parses a multiaddress to listen on: as [`Addr::parse`], without a `/p2p` suffix.
    pub fn parse_listen(addr: &Multiaddr) -> Result<Self, AddrError> {
        let parsed = Self::parse(addr)?;
        if parsed.peer_id().is_some() {
            return Err(AddrError::PeerIdInListenAddress);
        }
        Ok(parsed)
    }

    /// Which of the three forms this is.
    pub fn kind(&self) -> Kind {
        match self {
            Addr::Tcp(_) => Kind::Tcp,
            Addr::Ws(ws) if ws.is_secure() => Kind::TlsWs,
            Addr::Ws(_) => Kind::Ws,
        }
    }

    /// The host.
    pub fn host(&self) -> &Host {
        match self {
            Addr::Tcp(tcp) => &tcp.host,
            Addr::Ws(ws) => &ws.host,
        }
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        match self {
            Addr::Tcp(tcp) => tcp.port,
            Addr::Ws(ws) => ws.port,
        }
    }

    /// The peer id from a trailing `/p2p/<peer-id>`, if any.
    pub fn peer_id(&self) -> Option<PeerId> {
        match self {
            Addr::Tcp(tcp) => tcp.peer_id,
            Addr::Ws(ws) => ws.peer_id,
        }
    }

    /// The canonical multiaddress of this address with the given IP and port in place of its own.
    pub fn with_ip(&self, ip: IpAddr, port: u16) -> Multiaddr {
        match self {
            Addr::Tcp(tcp) => tcp.with_ip(ip, port),
            Addr::Ws(ws) => ws.with_ip(ip, port),
        }
    }

    /// The canonical multiaddress.
    pub fn to_multiaddr(&self) -> Multiaddr {
        match self {
            Addr::Tcp(tcp) => tcp.to_multiaddr(),
            Addr::Ws(ws) => ws.to_multiaddr(),
        }
    }

    /// For a wildcard TLS listen address (`/tls/sni/*.<suffix>/ws`, as AutoTLS listens), the
    /// suffix.
    pub(crate) fn wildcard_sni(&self) -> Option<&str> {
        match self {
            Addr::Ws(WsAddr {
                security: Security::Tls { sni: Some(sni) },
                ..
            }) => sni.strip_prefix("*."),
            _ => None,
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_multiaddr().fmt(f)
    }
}

/// `<host>/tcp/<port>[/p2p/<peer-id>]` and nothing else.
fn parse_tcp(addr: &Multiaddr) -> Result<TcpAddr, AddrError> {
    let mut iter = addr.iter();
    let host = match iter.next() {
        Some(Protocol::Ip4(ip)) => Host::Ip(ip.into()),
        Some(Protocol::Ip6(ip)) => Host::Ip(ip.into()),
        Some(Protocol::Dns(name)) => dns(name, DnsFamily::Any),
        Some(Protocol::Dns4(name)) => dns(name, DnsFamily::V4),
        Some(Protocol::Dns6(name)) => dns(name, DnsFamily::V6),
        _ => return Err(AddrError::UnsupportedHost),
    };
    let port = match iter.next() {
        Some(Protocol::Tcp(port)) => port,
        _ => return Err(AddrError::NotWebSocket),
    };
    let peer_id = match iter.next() {
        None => None,
        Some(Protocol::P2p(id)) => Some(id),
        Some(other) => return Err(AddrError::Trailing(other.tag().to_string())),
    };
    if let Some(other) = iter.next() {
        return Err(AddrError::Trailing(other.tag().to_string()));
    }
    Ok(TcpAddr {
        host,
        port,
        peer_id,
    })
}

fn host_protocol(host: &Host) -> Protocol<'static> {
    match host {
        Host::Ip(IpAddr::V4(ip)) => Protocol::Ip4(*ip),
        Host::Ip(IpAddr::V6(ip)) => Protocol::Ip6(*ip),
        Host::Dns { name, family } => {
            let name = name.clone().into();
            match family {
                DnsFamily::Any => Protocol::Dns(name),
                DnsFamily::V4 => Protocol::Dns4(name),
                DnsFamily::V6 => Protocol::Dns6(name),
            }
        }
    }
}

fn dns(name: std::borrow::Cow<'_, str>, family: DnsFamily) -> Host {
    Host::Dns {
        name: name.into_owned(),
        family,
    }
}

/// `path/to` and `/path/to` both mean `/path/to`; an empty path means `/`.
fn normalize_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

#[cfg(test)]
mod tests;
