//! Typed errors, one enum per layer; converted at the edges.
//!
//! Each error's `Display` says what failed at its own layer and leaves the cause to
//! [`std::error::Error::source`] (the Rust API guidelines' rule), so a chain printed with
//! anyhow's `{:#}` or eyre shows every message once.
//!
//! - [`Error`]: what the transport's `listen_on` and `dial` (and the futures they return) fail with.
//! - [`TlsError`]: TLS configuration and TLS handshakes.
//! - [`HandshakeError`]: the HTTP upgrade, on either side.
//! - [`FrameError`]: the WebSocket framing layer, after the upgrade. It reaches the caller inside an
//!   [`std::io::Error`] (the connection is an `AsyncRead + AsyncWrite`); get it back with
//!   [`FrameError::from_io`].

use std::{fmt, io, net::SocketAddr, time::Duration};

pub use crate::proto::error::{FrameError, ProtocolViolation, SharedIoError};

/// Displays an error with its chain of causes, `: `-separated, each distinct message once: for
/// logs and command-line output, where anyhow's `{:#}` would repeat what rust-libp2p's layers
/// repeat.
///
/// rust-libp2p's `TransportTimeout` and DNS layers print their inner error and also return it as
/// their `source()`, and `TransportError::Other` prints nothing, so a swarm's errors printed with
/// `{:#}` show the same message two to four times and empty parts (`: : `). `Report` skips a message
/// that is empty or that the message printed before it ends with.
///
/// ```
/// use libp2p_ws::Report;
/// let error = std::io::Error::other("refused");
/// assert_eq!(Report(&error).to_string(), "refused");
/// ```
///
/// For a `libp2p::swarm::DialError::Transport(errors)`, whose own `Display` already prints each
/// address's chain, print each `(address, error)` pair with `Report(error)` instead.
#[derive(Clone, Copy)]
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = String::new();
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(self.0);
        // Bounded: a chain longer than this is cut (no error chain of ours is a tenth as long).
        for _ in 0..MAX_CHAIN {
            let Some(error) = current else { break };
            let message = error.to_string();
            // libp2p-dns's "Multiple dial errors occurred:\n - <inner>" ends with what follows it.
            if !message.is_empty() && !last.ends_with(&message) {
                if !last.is_empty() {
                    f.write_str(": ")?;
                }
                f.write_str(&message)?;
                last = message;
            }
            current = error.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The crate's logs print chains with [`Report`].
pub(crate) use self::Report as Chain;

/// The longest error chain [`Report`] and [`Error::find`] walk.
const MAX_CHAIN: usize = 64;

/// What the complete stack (`upgraded`, `constructor`) puts inside the `io::Error`s it reports: the
/// transport's [`Error`], as the `source()` of a node that names the transport.
///
/// An `io::Error`'s `source()`, like that of `either::Either` (rust-libp2p's `OrTransport`, which
/// `SwarmBuilder` puts around every transport), is its inner error's `source()`, never the inner
/// error itself; a node that only carries our error lets it show up in the chain of causes, where
/// [`Error::find`] finds it by type through any number of layers.
#[derive(Debug)]
pub(crate) struct Carried(pub(crate) Error);

impl fmt::Display for Carried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("libp2p-ws")
    }
}

impl std::error::Error for Carried {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

use libp2p_core::Multiaddr;

/// Errors of the WebSocket transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding a listening socket failed. When the port is in use, the message says that this
    /// transport already serves `/tcp` on a shared port (the usual cause: an app that also
    /// listens on the port with libp2p-tcp).
    #[error("failed to listen on {addr}{}", bind_hint(source))]
    Bind {
        /// The socket address we tried to bind.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// Every TCP connection attempt failed; the error of the last attempt.
    #[error("failed to connect to {addr}")]
    Connect {
        /// The last socket address tried.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// Resolving a DNS name failed or returned no usable address.
    #[error("failed to resolve {name}")]
    Dns {
        /// The name from the address.
        name: String,
        /// Why resolution failed.
        source: io::Error,
    },
    /// A stage of connection setup took longer than its timeout.
    #[error("{stage} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        stage: TimeoutStage,
        /// The configured timeout.
        after: Duration,
    },
    /// TLS failed: see [`TlsError`].
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The HTTP upgrade failed: see [`HandshakeError`].
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// Accepting a TCP connection failed (reported to every listener on the port, at most once a
    /// second with the count of the ones in between; the listener pauses accepting for 100 ms, as
    /// libp2p-tcp does, so that a full fd table does not make the accept loop spin).
    #[error("failed to accept a connection")]
    Accept(#[source] SharedIoError),
    /// Watching the network interfaces (for a listener on an unspecified address) failed; the
    /// listener keeps the addresses it reported.
    #[error("watching the network interfaces failed")]
    InterfaceWatch(#[source] SharedIoError),
    /// Plain `/ws` on an address that is not loopback.
    #[error(
        "refusing to listen on {addr}: plain /ws is only allowed on loopback addresses (the libp2p \
         WebSockets spec requires TLS certificates for anything reachable from elsewhere). Listen on \
         /tls/ws with a certificate (TlsConfig::with_server_certificate), or, behind a TLS-terminating \
         reverse proxy, opt out with Config::danger_insecure_listen(true)"
    )]
    InsecureListen {
        /// The address that was refused.
        addr: Multiaddr,
    },
    /// Listening on a TLS address without a server certificate.
    #[error(
        "cannot listen on {addr}: no TLS server certificate is configured. Load one with \
         ServerCertificate::from_pem_files(chain, key) and pass it to \
         TlsConfig::with_server_certificate, or provide a rustls::ServerConfig with \
         TlsConfig::with_server_config"
    )]
    NoServerCertificate {
        /// The address that was refused.
        addr: Multiaddr,
    },
    /// This pending inbound handshake was closed to make room for a connection from another
    /// address: the listener held its maximum of pending handshakes
    /// ([`Config::with_max_pending_handshakes`](crate::Config::with_max_pending_handshakes)) and
    /// this one was the oldest of the address holding the most.
    #[error(
        "pending handshake evicted to admit a connection from another address (listener full)"
    )]
    Evicted,
    /// An inbound connection spoke a form (its first bytes) that no listener on this port serves;
    /// it was closed at once, after a sign of a form the port does serve where there is one (an
    /// HTTP 400 to a ClientHello on a port with `/ws`, a TLS alert to HTTP on a port with
    /// `/tls/ws`, multistream-select's `na` to HTTP on a `/tcp`-only port).
    #[error("the client spoke {spoke}, which no listener on this port serves; closed")]
    NotServed {
        /// What the client spoke.
        spoke: crate::classify::Class,
    },
    /// An inbound connection on a shared port whose first bytes are neither multistream-select,
    /// HTTP nor TLS; closed.
    #[error(
        "the first bytes of the connection are neither multistream-select, HTTP nor TLS; closed"
    )]
    Unrecognized,
    /// A `/dnsaddr` address gave nothing to dial: see [`DnsaddrError`](crate::dns::DnsaddrError).
    #[error("resolving a /dnsaddr address failed")]
    Dnsaddr(#[source] crate::dns::DnsaddrError),
    /// Dialing through a proxy failed: the proxy could not be reached, refused the tunnel or
    /// did not open it in time; the source says why.
    #[error("dialing through the proxy {proxy} failed")]
    Proxy {
        /// The proxy's URL, without credentials.
        proxy: String,
        /// Why.
        source: crate::proxy::ProxyError,
    },
    /// An inbound connection's PROXY protocol header was missing (where required), malformed or
    /// too large; closed.
    #[error("PROXY protocol")]
    ProxyProtocol(#[source] crate::forwarded::ForwardedError),
    /// An upgrade of the complete stack (`upgraded`, `constructor`) failed after the WebSocket
    /// connection was up: multistream-select and noise, or multistream-select and yamux. The
    /// source is rust-libp2p's error for that step.
    #[error("the {step} upgrade failed")]
    Upgrade {
        /// Which upgrade failed.
        step: UpgradeStep,
        /// rust-libp2p's error (multistream-select's or the protocol's).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The noise keypair could not be used.
    #[error("noise setup failed")]
    Noise(#[from] libp2p_noise::Error),
}

/// What [`TlsError::NameMismatch`] adds when the name checked is an IP address: a `/dns` address
/// may have been resolved by an outer DNS layer before this transport saw it.
fn ip_target_hint(server_name: &str) -> &'static str {
    if server_name.parse::<std::net::IpAddr>().is_ok() {
        " (if you dialed a /dns address, an outer DNS layer such as libp2p-dns, \
         SwarmBuilder::with_dns, resolved it first and the name was lost: leave names to this \
         transport, with constructor_with for the app's other transports)"
    } else {
        ""
    }
}

/// What [`Error::Bind`] adds to its message for the operating system's error.
fn bind_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::AddrInUse => {
            " (the port is in use by another socket; this transport already serves /tcp on a \
             shared port, together with /ws and /tls/ws: do not also listen on it with libp2p-tcp \
             (SwarmBuilder::with_tcp), listen on /ip4/<ip>/tcp/<port> here instead)"
        }
        _ => "",
    }
}

/// Which upgrade of the complete stack an [`Error::Upgrade`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeStep {
    /// Negotiating and running noise (authentication and encryption).
    Noise,
    /// Negotiating and running yamux (multiplexing).
    Yamux,
}

impl fmt::Display for UpgradeStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpgradeStep::Noise => "noise (multistream-select, then noise)",
            UpgradeStep::Yamux => "yamux (multistream-select, then yamux)",
        })
    }
}

/// The stage of connection setup that an [`Error::Timeout`] cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutStage {
    /// Dialing a WebSocket address: DNS, TCP (through a proxy if configured), TLS and the HTTP
    /// upgrade, bounded by the handshake timeout.
    DialWebSocket,
    /// Dialing a `/tcp` address: DNS and TCP, bounded by the handshake timeout.
    DialTcp,
    /// Dialing by name: a `/dnsaddr` address (its TXT lookups), or a `/dns*` address resolved by
    /// the [`Dns`](crate::dns::Dns) layer for another transport; then each address found, in
    /// turn; bounded by the handshake timeout.
    DialByName,
    /// Accepting on a port with one form: TLS and the HTTP upgrade (and a PROXY protocol header
    /// where configured), bounded by the handshake timeout.
    Accept,
    /// Accepting on a shared port: telling the forms apart, then TLS and the HTTP upgrade,
    /// bounded by the handshake timeout.
    AcceptShared,
    /// The complete stack's upgrade: the WebSocket handshake, then noise and yamux, bounded by
    /// the upgrade timeout.
    Upgrade,
}

impl fmt::Display for TimeoutStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutStage::DialWebSocket => "dialing (DNS, TCP, TLS and WebSocket upgrade)",
            TimeoutStage::DialTcp => "dialing (DNS and TCP)",
            TimeoutStage::DialByName => "dialing by name (DNS lookups, then each address found)",
            TimeoutStage::Accept => "accepting (TLS and WebSocket upgrade)",
            TimeoutStage::AcceptShared => "accepting (classification, TLS and WebSocket upgrade)",
            TimeoutStage::Upgrade => "upgrading (WebSocket, noise and yamux)",
        })
    }
}

impl Error {
    /// Finds the transport's `Error` in any error a swarm reports about this transport: a
    /// `libp2p::swarm::ListenError`, a `TransportError<io::Error>` (each address's entry of a
    /// `DialError::Transport`, or what `Swarm::listen_on` returns), an `io::Error` of the complete
    /// stack, or our `Error` itself; through the layers `SwarmBuilder` adds (`TransportTimeout`,
    /// `OrTransport`'s `Either`, libp2p-dns, boxing).
    ///
    /// ```no_run
    /// # fn example(event: libp2p::swarm::SwarmEvent<()>) {
    /// use libp2p::swarm::{DialError, SwarmEvent};
    /// use libp2p_ws::{Error, Report, TlsError};
    /// match event {
    ///     SwarmEvent::OutgoingConnectionError { error: DialError::Transport(errors), .. } => {
    ///         for (addr, error) in &errors {
    ///             if let Some(Error::Tls(TlsError::NameMismatch { .. })) = Error::find(error) {
    ///                 eprintln!("{addr}: wrong certificate name: {}", Report(error));
    ///             }
    ///         }
    ///     }
    ///     SwarmEvent::IncomingConnectionError { error, .. } => {
    ///         if let Some(Error::Evicted) = Error::find(&error) { /* a crowded listener */ }
    ///     }
    ///     _ => {}
    /// }
    /// # }
    /// ```
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Error> {
        let mut current = error;
        for _ in 0..MAX_CHAIN {
            if let Some(ours) = current.downcast_ref::<Error>() {
                return Some(ours);
            }
            if let Some(carried) = current.downcast_ref::<Carried>() {
                return Some(&carried.0);
            }
            // An io::Error's source() skips its inner error: look at the inner error itself.
            let next = match current.downcast_ref::<io::Error>() {
                Some(io) => io
                    .get_ref()
                    .map(|inner| inner as &(dyn std::error::Error + 'static)),
                None => current.source(),
            };
            current = next?;
        }
        None
    }

    /// Finds the transport's `Error` inside an `io::Error` from the complete stack (`upgraded`,
    /// `constructor`): [`Error::find`] for an `io::Error`.
    pub fn from_io(error: &io::Error) -> Option<&Error> {
        Self::find(error)
    }

    /// Wraps the error into the `io::Error` the complete stack reports (see [`Carried`]).
    pub(crate) fn into_io(self) -> io::Error {
        let kind = match &self {
            Error::Timeout { .. } => io::ErrorKind::TimedOut,
            Error::Connect { source, .. } | Error::Bind { source, .. } => source.kind(),
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, Carried(self))
    }
}

/// Errors of TLS configuration and TLS handshakes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The server's certificate chain does not lead to a trusted root.
    #[error(
        "TLS: the certificate of {server_name} was issued by an unknown authority; trust its CA with \
         TlsConfig::add_root_pem_file (or use the OS store with TlsConfig::with_native_roots)"
    )]
    UnknownIssuer {
        /// The name the certificate was checked against.
        server_name: String,
    },
    /// The server's certificate is not valid for the name we dialed.
    #[error(
        "TLS: the certificate presented is not valid for {server_name}; dial the name it was issued \
         for, or give that name with /tls/sni/<name>/ws{}", ip_target_hint(server_name)
    )]
    NameMismatch {
        /// The name the certificate was checked against.
        server_name: String,
    },
    /// The server's certificate has expired (or is not yet valid).
    #[error("TLS: the certificate of {server_name} has expired or is not yet valid")]
    Expired {
        /// The name the certificate was checked against.
        server_name: String,
    },
    /// Another failure of an outbound TLS handshake.
    #[error("TLS handshake with {server_name} failed")]
    Handshake {
        /// The server name.
        server_name: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The server answered the ClientHello in plain text (for example an HTTP 400): the port does
    /// not speak TLS.
    #[error("TLS: the server {server_name} does not speak TLS on this port (it answered in plain text); dial /ws")]
    NotTls {
        /// The name the handshake was for.
        server_name: String,
    },
    /// The server closed the connection on the ClientHello without answering: the port does not
    /// seem to speak TLS (a `/tcp`-only port of this transport does this).
    #[error("TLS: the server {server_name} closed the connection on the ClientHello without answering; the port does not seem to speak TLS: dial /ws or /tcp")]
    ClosedOnHello {
        /// The name the handshake was for.
        server_name: String,
    },
    /// The name to verify is neither a DNS name nor an IP address.
    #[error("TLS: {0:?} is not a valid server name")]
    InvalidServerName(String),
    /// Certificates could not be read from a PEM file or text.
    #[error("TLS: could not read PEM certificates from {from}")]
    ReadCertificates {
        /// The file (or "the PEM text").
        from: String,
        /// The PEM parser's error.
        source: rustls_pki_types::pem::Error,
    },
    /// A PEM file or text holds no certificate.
    #[error("TLS: no PEM certificate found in {from}")]
    NoCertificates {
        /// The file (or "the PEM text").
        from: String,
    },
    /// A private key could not be read from a PEM file or text (or there is none).
    #[error("TLS: could not read a private key from {from}")]
    ReadPrivateKey {
        /// The file (or "the PEM text").
        from: String,
        /// The PEM parser's error.
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate and the private key do not belong together (or the key's type is not
    /// supported).
    #[error("TLS: the certificate and the private key do not fit together")]
    KeyMismatch(#[source] futures_rustls::rustls::Error),
    /// A root certificate added with `TlsConfig::add_root_*` is not a valid CA certificate.
    #[error("TLS: invalid root certificate")]
    InvalidRoot(#[source] futures_rustls::rustls::Error),
    /// Generating a throwaway certificate (the `rcgen` helpers in `tls::dev`) failed.
    #[error("TLS: generating a certificate failed")]
    Generate(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The TLS client configuration could not be built (it is built once, at the first TLS
    /// dial, and every TLS dial reports this then); the source says why.
    #[error("TLS: the client configuration could not be built")]
    ClientConfig(#[source] std::sync::Arc<TlsError>),
    /// An inbound TLS handshake (on a `/tls/ws` listener) failed.
    #[error("inbound TLS handshake failed")]
    Accept(#[source] io::Error),
    /// rustls refused the configuration.
    #[error("rustls refused the TLS configuration")]
    Config(#[from] futures_rustls::rustls::Error),
}

/// Errors of the HTTP upgrade.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The server answered with an HTTP status other than 101.
    #[error("the server refused the WebSocket upgrade with HTTP {status}{}", reason_suffix(*status))]
    Rejected {
        /// The HTTP status code, e.g. 404 for a wrong `/http-path`.
        status: u16,
    },
    /// The server answered with a redirect, which this transport does not follow.
    #[error("the server redirected the WebSocket upgrade (HTTP {status}) to {location}; dial that address instead")]
    Redirect {
        /// The HTTP status code.
        status: u16,
        /// The `Location` header.
        location: String,
    },
    /// The request or response head is larger than the limit.
    #[error("the HTTP head exceeds the limit of {limit} bytes")]
    HeadTooLarge {
        /// The configured limit ([`Config::with_max_head_size`](crate::Config::with_max_head_size)).
        limit: usize,
    },
    /// A request for a path this listener does not serve (answered with 404).
    #[error(
        "a client asked for {requested:?}, but this listener serves {served:?} (answered 404)"
    )]
    PathNotFound {
        /// The request target, decoded.
        requested: String,
        /// The path of the listener.
        served: String,
    },
    /// The server's 101 response selects a WebSocket extension this side did not ask for (it asks
    /// for none); RFC 6455 section 4.1 requires the client to fail the connection.
    #[error("the server selected the WebSocket extension {extension:?}, which was not requested")]
    UnsolicitedExtension {
        /// The first extension named in the response's `Sec-WebSocket-Extensions` header.
        extension: String,
    },
    /// The server's 101 response selects a subprotocol this side did not ask for (it asks for
    /// none); RFC 6455 section 4.1 requires the client to fail the connection.
    #[error("the server selected the WebSocket subprotocol {protocol:?}, which was not requested")]
    UnsolicitedSubprotocol {
        /// The value of the response's `Sec-WebSocket-Protocol` header.
        protocol: String,
    },
    /// A request whose `Sec-WebSocket-Key` is not the base64 encoding of 16 bytes (RFC 6455
    /// section 4.1; answered with 400).
    #[error("the Sec-WebSocket-Key of the request is not the base64 encoding of 16 bytes (answered 400)")]
    InvalidKey,
    /// A request with a header that must appear once, more than once (answered with 400).
    #[error("the request has more than one {name} header (answered 400)")]
    DuplicateHeader {
        /// The header's name.
        name: &'static str,
    },
    /// The server answered the HTTP upgrade request with a TLS record: the port speaks TLS.
    #[error("the server answered with TLS; dial /tls/ws")]
    AnsweredWithTls,
    /// The server answered the HTTP upgrade request with multistream-select's header: the port
    /// speaks libp2p over plain TCP.
    #[error("the server answered with multistream-select (libp2p over plain TCP); dial /tcp")]
    AnsweredWithMultistream,
    /// A forwarding header (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`) from a trusted reverse
    /// proxy is malformed or has too many hops (answered with 400).
    #[error("refused the forwarding headers of a trusted proxy (answered 400)")]
    Forwarded(#[source] crate::forwarded::ForwardedError),
    /// A malformed or non-WebSocket HTTP request or response: see [`UpgradeViolation`].
    #[error("invalid WebSocket handshake")]
    Protocol(#[source] UpgradeViolation),
    /// The connection failed during the handshake.
    #[error("i/o error during the WebSocket handshake")]
    Io(#[from] io::Error),
}

/// What was wrong with an HTTP upgrade request or response (RFC 6455 section 4), one variant per
/// rule.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeViolation {
    /// The request's method is not `GET` (answered 405).
    #[error("the request method is not GET")]
    NotGet,
    /// The HTTP version is not 1.1 (answered 505).
    #[error("the HTTP version is not 1.1")]
    HttpVersion,
    /// A header the upgrade needs is missing (answered 426 by a listener).
    #[error("the {0} header is missing")]
    MissingHeader(String),
    /// A header of the upgrade has a value other than the upgrade needs (answered 426 by a
    /// listener).
    #[error("the {0} header has an unexpected value")]
    UnexpectedHeader(String),
    /// The `Sec-WebSocket-Key` is not 24 characters long (answered 400).
    #[error("the Sec-WebSocket-Key is {0} bytes long, not 24")]
    KeyLength(usize),
    /// The response's `Sec-WebSocket-Accept` does not match the request's key: the client must fail
    /// the connection (section 4.1).
    #[error("the Sec-WebSocket-Accept of the response does not match the key")]
    AcceptMismatch,
    /// The HTTP head could not be parsed.
    #[error("the HTTP head is malformed")]
    MalformedHttp(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A header value that must be text is not valid UTF-8.
    #[error("a header value is not valid UTF-8")]
    Utf8(#[source] std::str::Utf8Error),
}

fn reason_suffix(status: u16) -> &'static str {
    match status {
        400 => " (Bad Request)",
        403 => " (Forbidden)",
        404 => " (Not Found: check the /http-path of the address)",
        426 => " (Upgrade Required)",
        431 => " (Request Header Fields Too Large)",
        500 => " (Internal Server Error)",
        502 => " (Bad Gateway)",
        503 => " (Service Unavailable)",
        _ => "",
    }
}
