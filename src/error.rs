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

/// Displays an error with its chain of causes, `: `-separated (for logs, where no `{:#}` of
/// anyhow is at hand).
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

use libp2p_core::Multiaddr;

/// Errors of the WebSocket transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding a listening socket failed.
    #[error("failed to listen on {addr}")]
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
        /// What timed out, e.g. "WebSocket handshake (TCP, TLS and HTTP upgrade)".
        stage: &'static str,
        /// The configured timeout.
        after: Duration,
    },
    /// TLS failed: see [`TlsError`].
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The HTTP upgrade failed: see [`HandshakeError`].
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// Accepting a TCP connection failed.
    #[error("failed to accept a connection")]
    Accept(#[source] io::Error),
    /// Plain `/ws` on an address that is not loopback.
    #[error(
        "refusing to listen on {addr}: plain /ws is only allowed on loopback addresses (the libp2p \
         WebSockets spec requires TLS certificates for anything reachable from elsewhere). Listen on \
         /tls/ws with a certificate (TlsConfig::with_server_certificate), or, behind a TLS-terminating \
         reverse proxy, opt out with Config::with_insecure_listen(true)"
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
    /// The noise keypair could not be used.
    #[error("noise setup failed")]
    Noise(#[from] libp2p_noise::Error),
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
         for, or give that name with /tls/sni/<name>/ws"
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
    /// Another TLS handshake failure.
    #[error("TLS handshake with {server_name} failed")]
    Handshake {
        /// The server name (dialing) or `"client"` (listening).
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
    /// A certificate, key or PEM file could not be used.
    #[error("TLS: {0}")]
    Certificate(String),
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
    /// A malformed or non-WebSocket HTTP request or response.
    #[error("invalid WebSocket handshake")]
    Protocol(#[source] soketto::handshake::Error),
    /// The connection failed during the handshake.
    #[error("i/o error during the WebSocket handshake")]
    Io(#[from] io::Error),
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

/// Errors of the WebSocket framing layer, each with the close code it is answered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A client sent an unmasked frame (RFC 6455 section 5.1).
    #[error("WebSocket protocol error: the client sent an unmasked frame")]
    UnmaskedClientFrame,
    /// A server sent a masked frame (RFC 6455 section 5.1).
    #[error("WebSocket protocol error: the server sent a masked frame")]
    MaskedServerFrame,
    /// A frame that violates RFC 6455: reserved bits or opcodes, fragmented or oversized control
    /// frames, continuation frames out of order, an invalid close payload.
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
    /// A frame larger than the limit.
    #[error("WebSocket frame of {len} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// The declared payload length.
        len: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A message (a frame and its continuations) larger than the limit.
    #[error("WebSocket message exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// A text message or a close reason that is not valid UTF-8 (RFC 6455 section 8.1); the
    /// string names which.
    #[error("WebSocket protocol error: {0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// The peer did not answer a keep-alive ping in time.
    #[error("the peer did not answer a WebSocket ping within {0:?}")]
    KeepAliveTimeout(Duration),
    /// The peer closed the TCP connection without a WebSocket close frame.
    #[error("the connection ended without a WebSocket close frame")]
    UnexpectedEof,
    /// The connection failed earlier; every later call reports this.
    #[error("the WebSocket connection failed earlier: {0}")]
    Failed(String),
}

impl FrameError {
    /// The close code sent to the peer when this error ends the connection.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::FrameTooLarge { .. } | FrameError::MessageTooLarge { .. } => 1009,
            FrameError::InvalidUtf8(_) => 1007,
            FrameError::KeepAliveTimeout(_) => 1011,
            _ => 1002,
        }
    }

    /// Recovers the `FrameError` from an `io::Error` returned by a
    /// [`Connection`](crate::Connection).
    pub fn from_io(error: &io::Error) -> Option<&FrameError> {
        error.get_ref()?.downcast_ref::<FrameError>()
    }

    pub(crate) fn into_io(self) -> io::Error {
        let kind = match self {
            FrameError::KeepAliveTimeout(_) => io::ErrorKind::TimedOut,
            FrameError::UnexpectedEof => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }
}
