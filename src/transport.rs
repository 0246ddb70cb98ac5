//! The [`libp2p_core::Transport`] implementation: listening sockets (each shared by the listeners
//! of one port), dial futures, events.
//!
//! `poll` accepts sockets and reports addresses. A socket that serves one kind reports each
//! accepted connection at once; its upgrade future classifies the first bytes (closing a wrong
//! door at once), then runs TLS and the HTTP upgrade (or nothing, for `/tcp`). A socket shared by
//! several kinds classifies each connection first (inside `poll`, bounded by the handshake
//! timeout and the pending-handshake limit) and reports it to the listener of its kind.

use std::{
    collections::VecDeque,
    io,
    marker::PhantomData,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc, Mutex, OnceLock,
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use futures::{
    future::BoxFuture,
    stream::{FuturesUnordered, SelectAll},
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt, Stream, StreamExt,
};
use futures_rustls::{rustls::ClientConfig, TlsAcceptor, TlsConnector};
use libp2p_core::{
    multiaddr::{Multiaddr, Protocol},
    transport::{DialOpts, ListenerId, TransportError, TransportEvent},
};

use crate::{
    addr::{Addr, DnsFamily, Host, Kind, Security, TcpAddr, WsAddr},
    admission::{Admission, Ticket},
    classify::{self, Class, Served, Verdict, MAX_PREFIX},
    config::Config,
    error::{Chain, Error, HandshakeError, SharedIoError, TimeoutStage, TlsError},
    forwarded::{self, ForwardedClient, ForwardedError, ProxyHeader, ProxyParse, ProxyProtocol},
    framed::Connection,
    handshake,
    proto::Role,
    provider::{self, IfEvent, Provider, Timer},
    proxy::{self, ProxyError, TunnelTarget},
    tls_config,
};

/// How long a listener pauses accepting after `accept` failed (EMFILE, ENFILE, ENOBUFS...), so that
/// a full fd table does not turn the accept loop into a busy loop. libp2p-tcp pauses as long.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Accept errors are reported (a `ListenerError` event and a warning) at most once per this long;
/// the ones in between are counted and the count is given with the next report.
pub const ACCEPT_ERROR_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Most sockets one poll of a listener accepts before it yields to the executor.
const MAX_ACCEPTS_PER_POLL: usize = 64;

/// Most classified connections one poll of a shared socket takes before it yields.
const MAX_SORTED_PER_POLL: usize = 64;

/// Most bytes read (and dropped) from a connection that is refused, after the sign was sent, so
/// that closing it does not reset the connection before the dialer read the sign.
const MAX_DRAIN: usize = 64 * 1024;

/// The socket under an upgraded connection: plain TCP or TLS over TCP. `S` is the runtime's TCP
/// stream ([`Provider::Stream`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum Socket<S> {
    /// Plain TCP (`/ws`).
    Plain(S),
    /// TLS over TCP (`/tls/ws`, `/wss`).
    Tls(Box<futures_rustls::TlsStream<S>>),
}

impl<S> Socket<S> {
    /// The TCP stream under the connection.
    pub fn tcp(&self) -> &S {
        match self {
            Socket::Plain(s) => s,
            Socket::Tls(s) => s.get_ref().0,
        }
    }
}

/// The bytes a listener read from a connection to classify it, not yet handed on.
#[derive(Clone, Copy, Default)]
pub(crate) struct Prefix {
    buf: [u8; MAX_PREFIX],
    start: u8,
    end: u8,
}

impl Prefix {
    /// A prefix holding `bytes` (at most [`MAX_PREFIX`] of them).
    fn from_bytes(bytes: &[u8]) -> Self {
        let mut prefix = Prefix::default();
        let n = bytes.len().min(MAX_PREFIX);
        prefix.buf[..n].copy_from_slice(&bytes[..n]);
        prefix.end = n as u8;
        prefix
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start as usize..self.end as usize]
    }

    fn read(&mut self, out: &mut [u8]) -> usize {
        let rest = self.bytes();
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.start += n as u8;
        n
    }
}

/// A plain TCP connection (`/tcp`): the runtime's TCP stream, after the few bytes a listener read
/// to classify it (which it hands on first, so none are lost).
pub struct TcpConnection<S> {
    io: S,
    prefix: Prefix,
}

impl<S> TcpConnection<S> {
    /// A connection with nothing read ahead.
    pub fn new(io: S) -> Self {
        TcpConnection {
            io,
            prefix: Prefix::default(),
        }
    }

    fn with_prefix(io: S, prefix: Prefix) -> Self {
        TcpConnection { io, prefix }
    }

    /// The TCP stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// How many bytes read ahead (to classify the connection) are still to be handed out.
    pub fn read_ahead(&self) -> usize {
        self.prefix.bytes().len()
    }
}

impl<S> std::fmt::Debug for TcpConnection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConnection")
            .field("read_ahead", &self.read_ahead())
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TcpConnection<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.prefix.start < this.prefix.end && !buf.is_empty() {
            return Poll::Ready(Ok(this.prefix.read(buf)));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.prefix.start < this.prefix.end {
            if let Some(buf) = bufs.iter_mut().find(|b| !b.is_empty()) {
                return Poll::Ready(Ok(this.prefix.read(buf)));
            }
        }
        Pin::new(&mut this.io).poll_read_vectored(cx, bufs)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TcpConnection<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

/// What the transport yields: a WebSocket connection used as a byte stream (`/ws`, `/tls/ws`) or a
/// plain TCP connection (`/tcp`). Either is an `AsyncRead + AsyncWrite` byte stream.
#[derive(Debug)]
#[non_exhaustive]
// One per connection, moved once: the WebSocket variant stays inline so that its reads and writes
// take no extra indirection.
#[allow(clippy::large_enum_variant)]
pub enum Output<S> {
    /// A WebSocket connection (`/ws`, `/tls/ws`).
    WebSocket(Connection<Socket<S>>),
    /// A plain TCP connection (`/tcp`).
    Tcp(TcpConnection<S>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Output<S> {
    /// Which of the three forms the connection speaks.
    pub fn kind(&self) -> Kind {
        match self {
            Output::WebSocket(c) => match c.get_ref() {
                Socket::Plain(_) => Kind::Ws,
                Socket::Tls(_) => Kind::TlsWs,
            },
            Output::Tcp(_) => Kind::Tcp,
        }
    }

    /// The TCP stream under the connection.
    pub fn tcp(&self) -> &S {
        match self {
            Output::WebSocket(c) => c.get_ref().tcp(),
            Output::Tcp(c) => c.get_ref(),
        }
    }

    /// The WebSocket connection, if it is one.
    pub fn websocket(&self) -> Option<&Connection<Socket<S>>> {
        match self {
            Output::WebSocket(c) => Some(c),
            Output::Tcp(_) => None,
        }
    }

    /// The WebSocket connection, mutably, if it is one.
    pub fn websocket_mut(&mut self) -> Option<&mut Connection<Socket<S>>> {
        match self {
            Output::WebSocket(c) => Some(c),
            Output::Tcp(_) => None,
        }
    }

    /// The WebSocket connection, if it is one.
    pub fn into_websocket(self) -> Option<Connection<Socket<S>>> {
        match self {
            Output::WebSocket(c) => Some(c),
            Output::Tcp(_) => None,
        }
    }

    /// The plain TCP connection, if it is one.
    pub fn into_tcp(self) -> Option<TcpConnection<S>> {
        match self {
            Output::Tcp(c) => Some(c),
            Output::WebSocket(_) => None,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Output<S> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Output::WebSocket(c) => Pin::new(c).poll_read(cx, buf),
            Output::Tcp(c) => Pin::new(c).poll_read(cx, buf),
        }
    }

    #[inline]
    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Output::WebSocket(c) => Pin::new(c).poll_read_vectored(cx, bufs),
            Output::Tcp(c) => Pin::new(c).poll_read_vectored(cx, bufs),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Output<S> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Output::WebSocket(c) => Pin::new(c).poll_write(cx, buf),
            Output::Tcp(c) => Pin::new(c).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Output::WebSocket(c) => Pin::new(c).poll_write_vectored(cx, bufs),
            Output::Tcp(c) => Pin::new(c).poll_write_vectored(cx, bufs),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Output::WebSocket(c) => Pin::new(c).poll_flush(cx),
            Output::Tcp(c) => Pin::new(c).poll_flush(cx),
        }
    }

    #[inline]
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Output::WebSocket(c) => Pin::new(c).poll_close(cx),
            Output::Tcp(c) => Pin::new(c).poll_close(cx),
        }
    }
}

/// The future that upgrades an accepted socket (classification, then TLS and the HTTP upgrade for
/// WebSocket listeners).
pub type ListenerUpgrade<S> = BoxFuture<'static, Result<Output<S>, Error>>;

/// The future that dials (DNS, TCP, then TLS and the HTTP upgrade for WebSocket addresses). It
/// does nothing until polled.
pub type Dial<S> = BoxFuture<'static, Result<Output<S>, Error>>;

/// The transport on the runtime `P`: WebSocket (`/ws`, `/tls/ws`) and plain TCP (`/tcp`), without
/// noise and yamux (see `libp2p_ws::async_std::upgraded` and `libp2p_ws::tokio::upgraded` for the
/// complete stack).
///
/// # One port for `/tcp`, `/ws` and `/tls/ws`
///
/// Listening on the same IP address and port for several kinds (for example
/// `/ip4/0.0.0.0/tcp/4001`, then `/ip4/0.0.0.0/tcp/4001/ws` and `/ip4/0.0.0.0/tcp/4001/tls/ws`)
/// shares one socket: each `listen_on` keeps its own [`ListenerId`], events and addresses, and
/// each accepted connection goes to the listener of the form its first bytes speak
/// (multistream-select: `/tcp`; an HTTP request: `/ws`; a TLS ClientHello: `/tls/ws`; see
/// [`classify`](crate::classify)). Removing a listener keeps the others serving; the socket closes
/// with the last. A port named as `0` is never shared (two `/tcp/0` listeners are two sockets),
/// but listening on the port a `/tcp/0` listener got shares it. The same kind twice on one port
/// is refused by the operating system (the address is in use), as is any second bind of a port
/// when [`Config::with_port_sharing`] turns sharing off.
pub struct Transport<P: Provider> {
    shared: Arc<Shared>,
    listeners: SelectAll<Port<P>>,
}

struct Shared {
    config: Config,
    client_tls: OnceLock<Result<Arc<ClientConfig>, Arc<TlsError>>>,
    /// Set when a layer above takes over each inbound connection's admission ticket (see
    /// [`Transport::hand_off_tickets`]).
    handoff: OnceLock<Handoff>,
}

/// Where an accepted connection's admission [`Ticket`] waits for the layer above this transport
/// to take it, within the same `poll` that reports the `Incoming` event.
pub(crate) type Handoff = Arc<Mutex<Option<Ticket>>>;

impl Shared {
    fn client_tls(&self) -> Result<Arc<ClientConfig>, TlsError> {
        self.client_tls
            .get_or_init(|| self.config.tls.client_config().map_err(Arc::new))
            .clone()
            .map_err(TlsError::ClientConfig)
    }
}

impl<P: Provider> std::fmt::Debug for Transport<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("config", &self.shared.config)
            .field("sockets", &self.listeners.len())
            .finish()
    }
}

impl<P: Provider> Transport<P> {
    /// A transport with the given configuration.
    pub fn new(config: Config) -> Self {
        Transport {
            shared: Arc::new(Shared {
                config,
                client_tls: OnceLock::new(),
                handoff: OnceLock::new(),
            }),
            listeners: SelectAll::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// From now on, each `Incoming` event leaves its connection's admission ticket in the returned
    /// slot instead of inside the upgrade future, for the layer above (the noise + yamux stack of
    /// `upgraded`) to hold until its own upgrade is done: so a connection counts as a pending
    /// handshake until noise and yamux complete, not only until the HTTP upgrade does.
    pub(crate) fn hand_off_tickets(&self) -> Handoff {
        self.shared.handoff.get_or_init(Handoff::default).clone()
    }

    fn bind_addresses(&self, spec: &Addr) -> Result<Vec<SocketAddr>, Error> {
        match spec.host() {
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, spec.port())]),
            Host::Dns { name, family } => {
                usable_addresses(name, *family, resolve_blocking(name, spec.port()))
            }
        }
    }
}

/// Resolves a name without an executor (for `listen_on`, which is synchronous).
fn resolve_blocking(name: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    Ok((name, port).to_socket_addrs()?.collect())
}

/// Binds a non-blocking standard listener.
fn bind(addr: SocketAddr) -> io::Result<(std::net::TcpListener, SocketAddr)> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

impl<P: Provider> libp2p_core::Transport for Transport<P> {
    type Output = Output<P::Stream>;
    type Error = Error;
    type ListenerUpgrade = ListenerUpgrade<P::Stream>;
    type Dial = Dial<P::Stream>;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Error>> {
        let spec = Addr::parse_listen(&addr).map_err(|error| {
            tracing::debug!(%addr, %error, "not a TCP or WebSocket listen address");
            TransportError::MultiaddrNotSupported(addr.clone())
        })?;
        let config = &self.shared.config;
        let serve = match &spec {
            Addr::Tcp(_) => Serve::Tcp,
            Addr::Ws(ws) => Serve::Ws {
                tls: match ws.security {
                    Security::Plain => None,
                    Security::Tls { .. } => match config.tls.server_config() {
                        Some(server) => Some(TlsAcceptor::from(server)),
                        None => {
                            return Err(TransportError::Other(Error::NoServerCertificate { addr }))
                        }
                    },
                },
                path: ws.path.clone(),
            },
        };
        let candidates = self.bind_addresses(&spec).map_err(TransportError::Other)?;
        if spec.kind() == Kind::Ws
            && !config.allow_insecure_listen
            && !candidates.iter().all(|a| a.ip().is_loopback())
        {
            return Err(TransportError::Other(Error::InsecureListen { addr }));
        }
        let kind = spec.kind();
        let member = Member {
            id,
            addr: spec,
            serve,
        };
        if config.port_sharing {
            for candidate in &candidates {
                if candidate.port() == 0 {
                    continue;
                }
                if let Some(port) = self
                    .listeners
                    .iter_mut()
                    .find(|port| port.can_share(*candidate, kind))
                {
                    tracing::debug!(%addr, local = %port.local, "listening on a shared port");
                    port.add(member);
                    return Ok(());
                }
            }
        }
        let mut last_error = None;
        for candidate in candidates {
            let bound = bind(candidate)
                .and_then(|(std, local)| P::new_listener(std).map(|listener| (listener, local)));
            match bound {
                Ok((incoming, local)) => {
                    let mut port = Port::new(local, incoming, self.shared.clone());
                    tracing::debug!(%addr, %local, "listening");
                    port.add(member);
                    self.listeners.push(port);
                    return Ok(());
                }
                Err(source) => {
                    last_error = Some(Error::Bind {
                        addr: candidate,
                        source,
                    })
                }
            }
        }
        Err(TransportError::Other(
            last_error.unwrap_or(Error::InsecureListen { addr }),
        ))
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.listeners.iter_mut().any(|port| port.remove(id))
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Error>> {
        let target = Addr::parse(&addr).map_err(|error| {
            tracing::debug!(%addr, %error, "not a TCP or WebSocket address");
            TransportError::MultiaddrNotSupported(addr.clone())
        })?;
        if let Host::Ip(ip) = target.host() {
            if ip.is_unspecified() || target.port() == 0 {
                return Err(TransportError::MultiaddrNotSupported(addr));
            }
        }
        let shared = self.shared.clone();
        Ok(async move {
            let timeout = shared.config.handshake_timeout;
            let deadline = Instant::now() + timeout;
            let (stage, dial) = match target {
                Addr::Ws(target) => (
                    TimeoutStage::DialWebSocket,
                    dial_ws::<P>(shared, target, deadline).boxed(),
                ),
                Addr::Tcp(target) => (
                    TimeoutStage::DialTcp,
                    dial_tcp::<P>(shared, target, deadline).boxed(),
                ),
            };
            match provider::timeout_at::<P, _>(deadline, dial).await {
                Some(result) => result,
                None => Err(Error::Timeout {
                    stage,
                    after: timeout,
                }),
            }
        }
        .boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Error>> {
        match self.listeners.poll_next_unpin(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(event),
            _ => Poll::Pending,
        }
    }
}

/// The resolved addresses of the family the address asks for (`/dns4`, `/dns6`), or a DNS error.
fn usable_addresses(
    name: &str,
    family: DnsFamily,
    resolved: io::Result<Vec<SocketAddr>>,
) -> Result<Vec<SocketAddr>, Error> {
    let dns_error = |source| Error::Dns {
        name: name.to_string(),
        source,
    };
    let usable: Vec<_> = resolved
        .map_err(dns_error)?
        .into_iter()
        .filter(|a| family.admits(&a.ip()))
        .collect();
    if usable.is_empty() {
        return Err(dns_error(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no address of the requested family ({family:?})"),
        )));
    }
    Ok(usable)
}

/// Resolves `host` (if a name) and connects to the first address that answers; sets
/// `TCP_NODELAY` as configured.
async fn connect<P: Provider>(config: &Config, host: &Host, port: u16) -> Result<P::Stream, Error> {
    let candidates = match host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        Host::Dns { name, family } => {
            usable_addresses(name, *family, P::resolve(name.clone(), port).await)?
        }
    };
    let mut last_error = None;
    for candidate in candidates {
        match P::connect(candidate).await {
            Ok(stream) => {
                if let Err(e) = P::set_nodelay(&stream, config.nodelay) {
                    tracing::debug!(%e, "could not set TCP_NODELAY");
                }
                return Ok(stream);
            }
            Err(source) => {
                tracing::debug!(addr = %candidate, %source, "connect failed");
                last_error = Some(Error::Connect {
                    addr: candidate,
                    source,
                });
            }
        }
    }
    Err(last_error.unwrap_or_else(|| Error::Dns {
        name: match host {
            Host::Dns { name, .. } => name.clone(),
            Host::Ip(ip) => ip.to_string(),
        },
        source: io::ErrorKind::NotFound.into(),
    }))
}

/// Opens the TCP stream of a dial of `kind` to `host:port`: directly, or through the proxy the
/// configuration names for it (a tunnel opened by `deadline`).
async fn open<P: Provider>(
    config: &Config,
    host: &Host,
    port: u16,
    kind: Kind,
    deadline: Instant,
) -> Result<P::Stream, Error> {
    let Some(proxy) = config.proxy.route(host, kind) else {
        return connect::<P>(config, host, port).await;
    };
    let failed = |source| Error::Proxy {
        proxy: proxy.to_string(),
        source,
    };
    let tunnel = async {
        let target = match host {
            Host::Ip(ip) => TunnelTarget::Addr(SocketAddr::new(*ip, port)),
            Host::Dns { name, .. } if proxy.resolves_names() => {
                TunnelTarget::Name(name.clone(), port)
            }
            Host::Dns { name, family } => {
                let resolved =
                    usable_addresses(name, *family, P::resolve(name.clone(), port).await)?;
                TunnelTarget::Addr(resolved[0])
            }
        };
        let proxy_host = match proxy.host().parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Dns {
                name: proxy.host().to_string(),
                family: DnsFamily::Any,
            },
        };
        let mut tcp = match connect::<P>(config, &proxy_host, proxy.port()).await {
            Ok(tcp) => tcp,
            Err(Error::Connect { source, .. }) => return Err(failed(ProxyError::Connect(source))),
            Err(Error::Dns { source, .. }) => return Err(failed(ProxyError::Resolve(source))),
            Err(other) => return Err(other),
        };
        tracing::debug!(%proxy, ?target, "opening a tunnel");
        proxy::tunnel(&mut tcp, proxy, &target, config.max_head_size)
            .await
            .map_err(failed)?;
        Ok(tcp)
    };
    match provider::timeout_at::<P, _>(deadline, tunnel).await {
        Some(result) => result,
        None => Err(failed(ProxyError::Timeout {
            after: config.handshake_timeout,
        })),
    }
}

async fn dial_tcp<P: Provider>(
    shared: Arc<Shared>,
    target: TcpAddr,
    deadline: Instant,
) -> Result<Output<P::Stream>, Error> {
    let tcp = open::<P>(
        &shared.config,
        &target.host,
        target.port,
        Kind::Tcp,
        deadline,
    )
    .await?;
    Ok(Output::Tcp(TcpConnection::new(tcp)))
}

async fn dial_ws<P: Provider>(
    shared: Arc<Shared>,
    target: WsAddr,
    deadline: Instant,
) -> Result<Output<P::Stream>, Error> {
    let config = &shared.config;
    let kind = if target.is_secure() {
        Kind::TlsWs
    } else {
        Kind::Ws
    };
    let tcp = open::<P>(config, &target.host, target.port, kind, deadline).await?;
    let mut stream = if target.is_secure() {
        let name = target.server_name();
        let server_name = tls_config::server_name(&name)?;
        let connector = TlsConnector::from(shared.client_tls()?);
        let tls = connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| tls_config::classify_client_error(&name, e))?;
        Socket::Tls(Box::new(futures_rustls::TlsStream::Client(tls)))
    } else {
        Socket::Plain(tcp)
    };

    let leftover = handshake::connect(
        &mut stream,
        config.max_head_size,
        &target.host_header(),
        &target.request_target(),
    )
    .await?;
    Ok(Output::WebSocket(
        Connection::new(stream, Role::Client, config.frame, &leftover).with_timers(P::timer),
    ))
}

/// How a listener serves the connections of its kind.
#[derive(Clone)]
enum Serve {
    /// `/tcp`: the stream as it is.
    Tcp,
    /// `/ws` or `/tls/ws`: TLS if `tls`, then the HTTP upgrade for `path`.
    Ws {
        tls: Option<TlsAcceptor>,
        path: String,
    },
}

/// Reads the first bytes of a connection, at most [`MAX_PREFIX`], until [`classify`] decides;
/// `prefix` holds what was read before (after a PROXY header, the bytes that told it was none).
async fn sniff<S: AsyncRead + Unpin>(
    io: &mut S,
    mut prefix: Prefix,
) -> io::Result<(Verdict, Prefix)> {
    loop {
        match classify::classify(prefix.bytes()) {
            Verdict::NeedMore if usize::from(prefix.end) < MAX_PREFIX => {}
            Verdict::NeedMore => return Ok((Verdict::Unknown, prefix)),
            verdict => return Ok((verdict, prefix)),
        }
        let n = io.read(&mut prefix.buf[usize::from(prefix.end)..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        prefix.end += n as u8;
    }
}

/// Closes a connection this port does not serve: sends `sign` (see
/// [`door_sign`](classify::door_sign)) and a FIN at once, then reads and drops what the client
/// sent that has already arrived (at most [`MAX_DRAIN`] bytes, without waiting), so that the close
/// does not reset the connection before the client read the sign.
async fn refuse<P: Provider>(io: &mut P::Stream, sign: &[u8]) {
    if !sign.is_empty() && io.write_all(sign).await.is_err() {
        return;
    }
    if io.close().await.is_err() || P::shutdown_write(io).is_err() {
        return;
    }
    // Only what has arrived already: waiting for the client to close would hold the connection
    // (and its admission ticket) until the timeout.
    let mut drained = 0;
    let mut scratch = [0u8; 2048];
    while drained < MAX_DRAIN {
        let read = futures::future::poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut *io).poll_read(cx, &mut scratch) {
                Poll::Ready(Ok(n)) if n > 0 => Some(n),
                _ => None,
            })
        })
        .await;
        match read {
            Some(n) => drained += n,
            None => return,
        }
    }
}

/// Reads a PROXY protocol header if `mode` asks for one: exactly its bytes, nothing after it
/// (at most [`MAX_PROXY_HEADER`](forwarded::MAX_PROXY_HEADER)). Returns the header, if there was
/// one, and the bytes read that turned out not to be one (for [`sniff`]).
async fn read_proxy_header<S: AsyncRead + Unpin>(
    io: &mut S,
    mode: ProxyProtocol,
) -> Result<(Option<ProxyHeader>, Prefix), Error> {
    if mode == ProxyProtocol::Off {
        return Ok((None, Prefix::default()));
    }
    let mut buf = Vec::new();
    loop {
        match forwarded::parse_proxy_header(&buf).map_err(Error::ProxyProtocol)? {
            ProxyParse::NotProxy if mode == ProxyProtocol::Required => {
                return Err(Error::ProxyProtocol(ForwardedError::ProxyHeaderMissing))
            }
            ProxyParse::NotProxy => return Ok((None, Prefix::from_bytes(&buf))),
            ProxyParse::NeedMore(n) => {
                let start = buf.len();
                buf.resize(start + n, 0);
                io.read_exact(&mut buf[start..])
                    .await
                    .map_err(sniff_error)?;
            }
            ProxyParse::Done { header, .. } => return Ok((Some(header), Prefix::default())),
        }
    }
}

/// What an upgrade does with the forwarding headers of the request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Inspect {
    /// No reverse proxies are configured.
    Off,
    /// Not from a trusted proxy: forwarding headers are ignored (logged at debug).
    Ignore,
    /// From a trusted proxy: the believed headers name the client.
    Believe,
}

/// The forwarding headers, for the debug log of ignored ones.
const FORWARDING_HEADERS: [&str; 4] = [
    "Forwarded",
    "X-Forwarded-For",
    "X-Real-IP",
    "X-Forwarded-Proto",
];

fn sniff_error(error: io::Error) -> Error {
    Error::Handshake(HandshakeError::Io(error))
}

/// The upgrade of a connection on a socket that serves one kind: classifies it (closing a wrong
/// door at once), then serves it.
async fn accept_single<P: Provider>(
    shared: Arc<Shared>,
    mut tcp: P::Stream,
    kind: Kind,
    serve: Serve,
    inspect: Inspect,
) -> Result<Output<P::Stream>, Error> {
    let (verdict, prefix) = sniff(&mut tcp, Prefix::default())
        .await
        .map_err(sniff_error)?;
    if let Verdict::Known(class) = verdict {
        if class.kind() != kind {
            let sign = classify::door_sign(class, Served::default().with(kind));
            refuse::<P>(&mut tcp, sign).await;
            return Err(Error::NotServed { spoke: class });
        }
    }
    // Unrecognised bytes go to the listener's own handler, which answers as it always did (an
    // HTTP 400, a TLS alert, a failed multistream-select negotiation).
    accept::<P>(shared, tcp, prefix, serve, inspect)
        .await
        .map(|(output, _)| output)
}

/// Serves a classified connection (the bytes read to classify it in `prefix`); with
/// [`Inspect::Believe`], also returns the client the request's forwarding headers name.
async fn accept<P: Provider>(
    shared: Arc<Shared>,
    tcp: P::Stream,
    prefix: Prefix,
    serve: Serve,
    inspect: Inspect,
) -> Result<(Output<P::Stream>, Option<ForwardedClient>), Error> {
    let config = &shared.config;
    let reverse = config.reverse_proxy.as_ref();
    let mut client = None;
    let mut inspect_headers = |headers: handshake::Headers<'_>| -> Result<(), HandshakeError> {
        match (inspect, reverse) {
            (Inspect::Believe, Some(reverse)) => {
                client = forwarded::client_from_headers(
                    headers.iter().map(|h| (h.name, h.value)),
                    reverse.trusted(),
                    reverse.headers(),
                )
                .map_err(HandshakeError::Forwarded)?;
            }
            (Inspect::Ignore, _)
                if headers.iter().any(|h| {
                    FORWARDING_HEADERS
                        .iter()
                        .any(|name| h.name.eq_ignore_ascii_case(name))
                }) =>
            {
                tracing::debug!(
                    "forwarding headers from a peer that is not a trusted proxy; ignored"
                );
            }
            _ => {}
        }
        Ok(())
    };
    if let Err(e) = P::set_nodelay(&tcp, config.nodelay) {
        tracing::debug!(%e, "could not set TCP_NODELAY");
    }
    let path = match serve {
        Serve::Tcp => return Ok((Output::Tcp(TcpConnection::with_prefix(tcp, prefix)), None)),
        Serve::Ws {
            tls: Some(acceptor),
            path,
        } => {
            // The read-ahead is the start of the ClientHello: rustls takes it before the rest.
            let tls = acceptor
                .accept_with(tcp, |session| {
                    let mut rest = prefix.bytes();
                    while !rest.is_empty() {
                        if !matches!(session.read_tls(&mut rest), Ok(n) if n > 0) {
                            break;
                        }
                    }
                })
                .await
                .map_err(TlsError::Accept)?;
            let mut stream = Socket::Tls(Box::new(futures_rustls::TlsStream::Server(tls)));
            let rest = handshake::accept_inspecting(
                &mut stream,
                config.max_head_size,
                &path,
                &mut inspect_headers,
            )
            .await?;
            return Ok((
                Output::WebSocket(
                    Connection::new(stream, Role::Server, config.frame, &rest)
                        .with_timers(P::timer),
                ),
                client,
            ));
        }
        Serve::Ws { tls: None, path } => path,
    };
    let mut stream = Socket::Plain(tcp);
    let mut ahead = TcpConnection::with_prefix(&mut stream, prefix);
    let mut rest = handshake::accept_inspecting(
        &mut ahead,
        config.max_head_size,
        &path,
        &mut inspect_headers,
    )
    .await?;
    // The handshake reads the read-ahead first; any of it left follows what it read.
    rest.extend_from_slice(ahead.prefix.bytes());
    Ok((
        Output::WebSocket(
            Connection::new(stream, Role::Server, config.frame, &rest).with_timers(P::timer),
        ),
        client,
    ))
}

/// Accept errors in a row: the backoff timer and the rate limit of their reports.
#[derive(Default)]
struct AcceptErrors {
    /// While set, accepting pauses until it fires.
    backoff: Option<Timer>,
    /// When an accept error was last reported.
    last_report: Option<Instant>,
    /// Errors since then that were not reported.
    suppressed: u64,
}

impl AcceptErrors {
    /// Records an accept error: starts the backoff, and says whether to report it now.
    fn on_error(&mut self, now: Instant, timer: fn(Instant) -> Timer) -> Option<u64> {
        let resume = now + ACCEPT_ERROR_BACKOFF;
        match self.backoff.as_mut() {
            Some(backoff) => backoff.as_mut().reset(resume),
            None => self.backoff = Some(timer(resume)),
        }
        let due = self
            .last_report
            .is_none_or(|last| now.duration_since(last) >= ACCEPT_ERROR_REPORT_INTERVAL);
        if due {
            self.last_report = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// `Pending` while backing off.
    fn poll_backoff(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(backoff) = self.backoff.as_mut() {
            std::task::ready!(backoff.as_mut().poll(cx));
            self.backoff = None;
        }
        Poll::Ready(())
    }
}

type Event<S> = TransportEvent<ListenerUpgrade<S>, Error>;

/// One `listen_on` on a socket: its id, its address (and so its kind) and how it serves.
struct Member {
    id: ListenerId,
    addr: Addr,
    serve: Serve,
}

/// A connection classified (and, from a trusted reverse proxy, maybe upgraded) before its
/// `Incoming` event, admitted, waiting to be reported.
struct Sorted<S> {
    io: SortedIo<S>,
    class: Class,
    remote: SocketAddr,
    /// The client: `remote`, or whom a trusted reverse proxy named.
    client: SocketAddr,
    /// Whether a trusted reverse proxy said the client came over TLS.
    https: bool,
    ticket: Ticket,
    deadline: Instant,
}

/// Where a sorted connection stands.
enum SortedIo<S> {
    /// Classified: its upgrade runs in the `Incoming` event's future.
    Pending {
        tcp: S,
        prefix: Prefix,
        inspect: Inspect,
    },
    /// Upgraded already (the request's forwarding headers had to be read first).
    Ready(Box<Result<Output<S>, Error>>),
}

/// One listening socket and the listeners (`listen_on`s) it serves, one per kind.
struct Port<P: Provider> {
    local: SocketAddr,
    incoming: Option<P::Listener>,
    members: Vec<Member>,
    /// The kinds of `members`, for the classifying futures.
    served: Arc<AtomicU8>,
    /// Started on the first poll (inside the runtime) when listening on an unspecified address.
    if_watcher: Option<P::IfWatcher>,
    watch_interfaces: bool,
    /// The interface addresses reported so far (for listeners that join later).
    known_ips: Vec<IpAddr>,
    accept_errors: AcceptErrors,
    shared: Arc<Shared>,
    admission: Admission,
    /// Connections being classified (only while the socket serves more than one kind).
    sorting: FuturesUnordered<BoxFuture<'static, Option<Sorted<P::Stream>>>>,
    events: VecDeque<Event<P::Stream>>,
    closed: bool,
    waker: Option<Waker>,
    _provider: PhantomData<P>,
}

impl<P: Provider> Port<P> {
    fn new(local: SocketAddr, incoming: P::Listener, shared: Arc<Shared>) -> Self {
        let admission = Admission::new(
            shared.config.max_pending_handshakes,
            shared.config.max_pending_handshakes_per_ip,
        );
        Port {
            local,
            incoming: Some(incoming),
            members: Vec::new(),
            served: Arc::default(),
            if_watcher: None,
            watch_interfaces: local.ip().is_unspecified(),
            known_ips: Vec::new(),
            accept_errors: AcceptErrors::default(),
            shared,
            admission,
            sorting: FuturesUnordered::new(),
            events: VecDeque::new(),
            closed: false,
            waker: None,
            _provider: PhantomData,
        }
    }

    fn served(&self) -> Served {
        self.members
            .iter()
            .fold(Served::default(), |s, m| s.with(m.addr.kind()))
    }

    /// Whether a listener of `kind` on `addr` can join this socket.
    fn can_share(&self, addr: SocketAddr, kind: Kind) -> bool {
        !self.closed
            && self.local.ip() == addr.ip()
            && self.local.port() == addr.port()
            && !self.served().has(kind)
    }

    /// Adds a listener: reports its addresses (now, or as the interfaces are seen).
    fn add(&mut self, member: Member) {
        let port = self.local.port();
        if !self.local.ip().is_unspecified() {
            self.events.push_back(TransportEvent::NewAddress {
                listener_id: member.id,
                listen_addr: member.addr.with_ip(self.local.ip(), port),
            });
        }
        for ip in &self.known_ips {
            self.events.push_back(TransportEvent::NewAddress {
                listener_id: member.id,
                listen_addr: member.addr.with_ip(*ip, port),
            });
        }
        self.members.push(member);
        self.served.store(self.served().bits(), Ordering::Relaxed);
        self.wake();
    }

    /// Removes listener `id`, if it is here; the socket closes with its last listener.
    fn remove(&mut self, id: ListenerId) -> bool {
        let Some(at) = self.members.iter().position(|m| m.id == id) else {
            return false;
        };
        self.members.remove(at);
        self.served.store(self.served().bits(), Ordering::Relaxed);
        self.events.push_back(TransportEvent::ListenerClosed {
            listener_id: id,
            reason: Ok(()),
        });
        if self.members.is_empty() {
            self.closed = true;
            self.incoming = None;
            self.if_watcher = None;
            self.watch_interfaces = false;
            self.sorting = FuturesUnordered::new();
        }
        self.wake();
        true
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Queues an interface change for every listener.
    fn on_if_event(&mut self, event: IfEvent) {
        let (IfEvent::Up(ip) | IfEvent::Down(ip)) = event;
        if ip.is_ipv4() != self.local.is_ipv4() {
            return;
        }
        let port = self.local.port();
        let up = matches!(event, IfEvent::Up(_));
        if up {
            if !self.known_ips.contains(&ip) {
                self.known_ips.push(ip);
            }
        } else {
            self.known_ips.retain(|known| *known != ip);
        }
        for member in &self.members {
            let listen_addr = member.addr.with_ip(ip, port);
            self.events.push_back(if up {
                TransportEvent::NewAddress {
                    listener_id: member.id,
                    listen_addr,
                }
            } else {
                TransportEvent::AddressExpired {
                    listener_id: member.id,
                    listen_addr,
                }
            });
        }
    }

    /// Queues a listener error for every listener.
    fn on_error(&mut self, error: impl Fn() -> Error) {
        for member in &self.members {
            self.events.push_back(TransportEvent::ListenerError {
                listener_id: member.id,
                error: error(),
            });
        }
    }

    fn on_accept(&mut self, tcp: P::Stream, remote: SocketAddr) -> Option<Event<P::Stream>> {
        let reverse = self.shared.config.reverse_proxy.as_ref();
        let trusted = reverse.is_some_and(|r| r.trusts(remote.ip()));
        let proxy_protocol = reverse.map_or(ProxyProtocol::Off, |r| {
            r.proxy_protocol_for(self.local.port())
        });
        let inspect = match reverse {
            None => Inspect::Off,
            Some(_) => Inspect::Ignore,
        };
        let admitted = if trusted {
            self.admission.admit_trusted(remote.ip())
        } else {
            self.admission.admit(remote.ip())
        };
        let mut ticket = match admitted {
            Ok(ticket) => ticket,
            Err(refusal) => {
                tracing::debug!(%remote, ?refusal, "too many pending handshakes; closing the new socket");
                return None;
            }
        };
        let timeout = self.shared.config.handshake_timeout;
        let deadline = Instant::now() + timeout;
        if let [member] = self.members.as_slice() {
            if !trusted && proxy_protocol == ProxyProtocol::Off {
                let (kind, serve) = (member.addr.kind(), member.serve.clone());
                let shared = self.shared.clone();
                let upgrade = async move {
                    let result = provider::timeout::<P, _>(
                        timeout,
                        accept_single::<P>(shared, tcp, kind, serve, inspect),
                    )
                    .await;
                    result.unwrap_or(Err(Error::Timeout {
                        stage: TimeoutStage::Accept,
                        after: timeout,
                    }))
                };
                return Some(self.incoming_event(0, upgrade.boxed(), remote, false, ticket));
            }
        }
        // Classify first (after a PROXY header; from a trusted proxy whose forwarding headers are
        // believed, through the HTTP upgrade), then report to the listener of the kind.
        let served = self.served.clone();
        let serves: Vec<(Kind, Serve)> = if trusted {
            self.members
                .iter()
                .map(|m| (m.addr.kind(), m.serve.clone()))
                .collect()
        } else {
            Vec::new()
        };
        let shared = self.shared.clone();
        self.sorting.push(
            async move {
                let sort = async move {
                    let mut tcp = tcp;
                    let (header, prefix) = match read_proxy_header(&mut tcp, proxy_protocol).await {
                        Ok(read) => read,
                        Err(error) => {
                            tracing::debug!(%remote, error = %Chain(&error), "closing");
                            return None;
                        }
                    };
                    let mut peer = remote;
                    if let Some(source) = header.and_then(|h| h.source) {
                        if trusted {
                            peer = source;
                        } else {
                            tracing::debug!(%remote, claimed = %source, "PROXY header from a peer that is not a trusted proxy; ignored");
                        }
                    }
                    let (verdict, prefix) = match sniff(&mut tcp, prefix).await {
                        Ok(sniffed) => sniffed,
                        Err(error) => {
                            tracing::debug!(%remote, %error, "connection closed before it could be classified");
                            return None;
                        }
                    };
                    let served = Served::from_bits(served.load(Ordering::Relaxed));
                    let class = match verdict {
                        Verdict::Known(class) if served.has(class.kind()) => class,
                        Verdict::Known(class) => {
                            let error = Error::NotServed { spoke: class };
                            tracing::debug!(%remote, %error, "closing");
                            refuse::<P>(&mut tcp, classify::door_sign(class, served)).await;
                            return None;
                        }
                        _ => {
                            tracing::debug!(%remote, error = %Error::Unrecognized, "closing");
                            refuse::<P>(&mut tcp, &[]).await;
                            return None;
                        }
                    };
                    let reverse = shared.config.reverse_proxy.as_ref();
                    let believe = trusted
                        && reverse.is_some_and(|r| r.trusts(peer.ip()) && r.headers().any());
                    if believe && class.kind() != Kind::Tcp {
                        let (_, serve) = serves.iter().find(|(k, _)| *k == class.kind())?;
                        let result =
                            accept::<P>(shared.clone(), tcp, prefix, serve.clone(), Inspect::Believe)
                                .await;
                        return Some(match result {
                            Ok((output, Some(client))) => (
                                class,
                                SortedIo::Ready(Box::new(Ok(output))),
                                SocketAddr::new(client.ip, client.port.unwrap_or(0)),
                                client.https,
                            ),
                            Ok((output, None)) => (class, SortedIo::Ready(Box::new(Ok(output))), peer, false),
                            Err(error) => (class, SortedIo::Ready(Box::new(Err(error))), peer, false),
                        });
                    }
                    Some((class, SortedIo::Pending { tcp, prefix, inspect }, peer, false))
                };
                match ticket.phase(provider::timeout::<P, _>(timeout, sort)).await {
                    Ok(Some(Some((class, io, client, https)))) => Some(Sorted {
                        io,
                        class,
                        remote,
                        client,
                        https,
                        ticket,
                        deadline,
                    }),
                    Ok(None) => {
                        tracing::debug!(%remote, ?timeout, "not classified (or, from a trusted proxy, not upgraded) within the handshake timeout; closing");
                        None
                    }
                    Ok(Some(None)) => None,
                    Err(_) => {
                        tracing::debug!(%remote, "evicted while being classified");
                        None
                    }
                }
            }
            .boxed(),
        );
        None
    }

    /// The `Incoming` event of member `at` for a connection from `remote` (the client, when a
    /// trusted reverse proxy named it; `https` when it said the client came over TLS), with its
    /// admission ticket.
    fn incoming_event(
        &self,
        at: usize,
        upgrade: ListenerUpgrade<P::Stream>,
        remote: SocketAddr,
        https: bool,
        ticket: Ticket,
    ) -> Event<P::Stream> {
        let member = &self.members[at];
        let local_addr = member.addr.with_ip(self.local.ip(), self.local.port());
        let send_back_addr = match &member.addr {
            Addr::Tcp(_) => Multiaddr::empty()
                .with(remote.ip().into())
                .with(Protocol::Tcp(remote.port())),
            Addr::Ws(ws) => WsAddr {
                host: Host::Ip(remote.ip()),
                port: remote.port(),
                security: match ws.security {
                    Security::Plain if !https => Security::Plain,
                    _ => Security::Tls { sni: None },
                },
                path: "/".into(),
                peer_id: None,
            }
            .to_multiaddr(),
        };
        let upgrade = upgrade
            .inspect(move |result| {
                if let Err(error) = result {
                    tracing::debug!(%remote, error = %Chain(error), "inbound handshake failed");
                }
            })
            .boxed();
        let upgrade = match self.shared.handoff.get() {
            Some(handoff) => {
                *handoff.lock().unwrap_or_else(|e| e.into_inner()) = Some(ticket);
                upgrade
            }
            None => ticket
                .guard(upgrade)
                .map(|result| result.unwrap_or(Err(Error::Evicted)))
                .boxed(),
        };
        TransportEvent::Incoming {
            listener_id: member.id,
            upgrade,
            local_addr,
            send_back_addr,
        }
    }

    /// The `Incoming` event for a sorted connection, if its kind still has a listener (and its
    /// client, when a proxy named one, has room among the pending handshakes).
    fn on_sorted(&mut self, sorted: Sorted<P::Stream>) -> Option<Event<P::Stream>> {
        let Some(at) = self
            .members
            .iter()
            .position(|m| m.addr.kind() == sorted.class.kind())
        else {
            tracing::debug!(remote = %sorted.remote, class = %sorted.class, "its listener was removed meanwhile; closing");
            return None;
        };
        let Sorted {
            io,
            remote,
            client,
            https,
            mut ticket,
            deadline,
            ..
        } = sorted;
        if client.ip() != remote.ip() {
            if let Err(refusal) = ticket.reassign(client.ip()) {
                tracing::debug!(%remote, %client, ?refusal, "too many pending handshakes of the client a proxy named; closing");
                return None;
            }
            tracing::debug!(%remote, %client, https, "a trusted reverse proxy named the client");
        }
        let upgrade = match io {
            SortedIo::Ready(result) => async move { *result }.boxed(),
            SortedIo::Pending {
                tcp,
                prefix,
                inspect,
            } => {
                let serve = self.members[at].serve.clone();
                let shared = self.shared.clone();
                let timeout = self.shared.config.handshake_timeout;
                let left = deadline.saturating_duration_since(Instant::now());
                async move {
                    let result = provider::timeout::<P, _>(
                        left,
                        accept::<P>(shared, tcp, prefix, serve, inspect),
                    )
                    .await;
                    match result {
                        Some(result) => result.map(|(output, _)| output),
                        None => Err(Error::Timeout {
                            stage: TimeoutStage::AcceptShared,
                            after: timeout,
                        }),
                    }
                }
                .boxed()
            }
        };
        Some(self.incoming_event(at, upgrade, client, https, ticket))
    }

    fn on_accept_error(&mut self, error: io::Error) {
        let Some(suppressed) = self.accept_errors.on_error(Instant::now(), P::timer) else {
            return;
        };
        tracing::warn!(
            local = %self.local,
            %error,
            suppressed,
            pause = ?ACCEPT_ERROR_BACKOFF,
            "accepting a connection failed; pausing the listener"
        );
        let error = SharedIoError(Arc::new(error));
        self.on_error(|| Error::Accept(error.clone()));
    }
}

impl<P: Provider> Stream for Port<P> {
    type Item = Event<P::Stream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(event) = this.events.pop_front() {
            return Poll::Ready(Some(event));
        }
        if this.closed {
            return Poll::Ready(None);
        }
        this.waker = Some(cx.waker().clone());

        if this.watch_interfaces {
            this.watch_interfaces = false;
            match P::if_watcher() {
                Ok(watcher) => this.if_watcher = Some(watcher),
                Err(error) => {
                    let error = SharedIoError(Arc::new(error));
                    this.on_error(|| Error::InterfaceWatch(error.clone()));
                }
            }
        }
        while let Some(watcher) = this.if_watcher.as_mut() {
            match watcher.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(event))) => this.on_if_event(event),
                Poll::Ready(Some(Err(error))) => {
                    let error = SharedIoError(Arc::new(error));
                    this.on_error(|| Error::InterfaceWatch(error.clone()));
                }
                Poll::Ready(None) => this.if_watcher = None,
                Poll::Pending => break,
            }
            if let Some(event) = this.events.pop_front() {
                return Poll::Ready(Some(event));
            }
        }

        // Classified connections of a shared socket, bounded per poll.
        let mut sorted = 0;
        while !this.sorting.is_empty() {
            if sorted == MAX_SORTED_PER_POLL {
                cx.waker().wake_by_ref();
                break;
            }
            sorted += 1;
            match this.sorting.poll_next_unpin(cx) {
                Poll::Ready(Some(Some(connection))) => {
                    if let Some(event) = this.on_sorted(connection) {
                        return Poll::Ready(Some(event));
                    }
                }
                Poll::Ready(Some(None)) => {}
                Poll::Ready(None) | Poll::Pending => break,
            }
        }

        // Bounded per poll: a flood of connections that are closed at once (over the pending
        // limit) must not keep this poll going; the rest wait for the next one.
        let mut accepted = 0;
        while this.accept_errors.poll_backoff(cx).is_ready() {
            let Some(incoming) = this.incoming.as_mut() else {
                break;
            };
            if accepted == MAX_ACCEPTS_PER_POLL {
                cx.waker().wake_by_ref();
                break;
            }
            accepted += 1;
            match P::poll_accept(incoming, cx) {
                Poll::Ready(Ok((tcp, remote))) => {
                    if let Some(event) = this.on_accept(tcp, remote) {
                        return Poll::Ready(Some(event));
                    }
                    // A connection to classify: poll it once now, so it registers its waker.
                    if let Poll::Ready(Some(Some(connection))) = this.sorting.poll_next_unpin(cx) {
                        if let Some(event) = this.on_sorted(connection) {
                            return Poll::Ready(Some(event));
                        }
                    }
                }
                Poll::Ready(Err(error)) => {
                    this.on_accept_error(error);
                    if let Some(event) = this.events.pop_front() {
                        return Poll::Ready(Some(event));
                    }
                }
                Poll::Pending => break,
            }
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Socket<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read_vectored(cx, bufs),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_read_vectored(cx, bufs),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Socket<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_close(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}
