//! The [`libp2p_core::Transport`] implementation: listeners, dial futures, events.
//!
//! `poll` only accepts sockets and reports addresses. TLS and the HTTP upgrade run inside the
//! per-connection futures ([`ListenerUpgrade`] and [`Dial`]), each bounded by the handshake timeout.

use std::{
    collections::VecDeque,
    io,
    marker::PhantomData,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use futures::{
    future::BoxFuture, stream::SelectAll, AsyncRead, AsyncWrite, FutureExt, Stream, StreamExt,
};
use futures_rustls::{rustls::ClientConfig, TlsAcceptor, TlsConnector};
use libp2p_core::{
    multiaddr::Multiaddr,
    transport::{DialOpts, ListenerId, TransportError, TransportEvent},
};

use crate::{
    addr::{DnsFamily, Host, Security, WsAddr},
    admission::{Admission, Ticket},
    config::Config,
    error::{Chain, Error, TlsError},
    framed::{Connection, Role},
    handshake,
    provider::{self, IfEvent, Provider, Timer},
    tls,
};

/// How long a listener pauses accepting after `accept` failed (EMFILE, ENFILE, ENOBUFS...), so that
/// a full fd table does not turn the accept loop into a busy loop. libp2p-tcp pauses as long.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Accept errors are reported (a `ListenerError` event and a warning) at most once per this long;
/// the ones in between are counted and the count is given with the next report.
pub const ACCEPT_ERROR_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Most sockets one poll of a listener accepts before it yields to the executor.
const MAX_ACCEPTS_PER_POLL: usize = 64;

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

/// What the transport yields: an upgraded WebSocket connection used as a byte stream.
pub type Output<S> = Connection<Socket<S>>;

/// The future that upgrades an accepted socket (TLS, then the HTTP upgrade).
pub type ListenerUpgrade<S> = BoxFuture<'static, Result<Output<S>, Error>>;

/// The future that dials (DNS, TCP, TLS, then the HTTP upgrade). It does nothing until polled.
pub type Dial<S> = BoxFuture<'static, Result<Output<S>, Error>>;

/// The WebSocket transport on the runtime `P` (without noise and yamux; see
/// `libp2p_ws::async_std::upgraded` and `libp2p_ws::tokio::upgraded` for the complete stack).
pub struct Transport<P: Provider> {
    shared: Arc<Shared>,
    listeners: SelectAll<Listener<P>>,
}

struct Shared {
    config: Config,
    client_tls: OnceLock<Result<Arc<ClientConfig>, String>>,
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
            .get_or_init(|| self.config.tls.client_config().map_err(|e| e.to_string()))
            .clone()
            .map_err(TlsError::Certificate)
    }
}

impl<P: Provider> std::fmt::Debug for Transport<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("config", &self.shared.config)
            .field("listeners", &self.listeners.len())
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

    fn bind_addresses(&self, spec: &WsAddr) -> Result<Vec<SocketAddr>, Error> {
        match &spec.host {
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, spec.port)]),
            Host::Dns { name, family } => {
                usable_addresses(name, *family, resolve_blocking(name, spec.port))
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
        let spec = WsAddr::parse_listen(&addr).map_err(|error| {
            tracing::debug!(%addr, %error, "not a WebSocket listen address");
            TransportError::MultiaddrNotSupported(addr.clone())
        })?;
        let config = &self.shared.config;
        let tls = match spec.security {
            Security::Plain => None,
            Security::Tls { .. } => match config.tls.server_config() {
                Some(server) => Some(TlsAcceptor::from(server)),
                None => return Err(TransportError::Other(Error::NoServerCertificate { addr })),
            },
        };
        let candidates = self.bind_addresses(&spec).map_err(TransportError::Other)?;
        if tls.is_none()
            && !config.allow_insecure_listen
            && !candidates.iter().all(|a| a.ip().is_loopback())
        {
            return Err(TransportError::Other(Error::InsecureListen { addr }));
        }
        let mut last_error = None;
        for candidate in candidates {
            let bound = bind(candidate)
                .and_then(|(std, local)| P::new_listener(std).map(|listener| (listener, local)));
            match bound {
                Ok((incoming, local)) => {
                    let listener =
                        Listener::new(id, spec, local, incoming, tls, self.shared.clone());
                    tracing::debug!(%addr, %local, "listening");
                    self.listeners.push(listener);
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
        match self.listeners.iter_mut().find(|l| l.id == id && !l.closed) {
            Some(listener) => {
                listener.close(Ok(()));
                true
            }
            None => false,
        }
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Error>> {
        let target = WsAddr::parse(&addr).map_err(|error| {
            tracing::debug!(%addr, %error, "not a WebSocket address");
            TransportError::MultiaddrNotSupported(addr.clone())
        })?;
        if let Host::Ip(ip) = target.host {
            if ip.is_unspecified() || target.port == 0 {
                return Err(TransportError::MultiaddrNotSupported(addr));
            }
        }
        let shared = self.shared.clone();
        Ok(async move {
            let timeout = shared.config.handshake_timeout;
            match provider::timeout::<P, _>(timeout, dial::<P>(shared, target)).await {
                Some(result) => result,
                None => Err(Error::Timeout {
                    stage: "dialing (DNS, TCP, TLS and WebSocket upgrade)",
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

async fn dial<P: Provider>(
    shared: Arc<Shared>,
    target: WsAddr,
) -> Result<Output<P::Stream>, Error> {
    let config = &shared.config;
    let candidates = match &target.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, target.port)],
        Host::Dns { name, family } => {
            usable_addresses(name, *family, P::resolve(name.clone(), target.port).await)?
        }
    };

    let mut tcp = None;
    let mut last_error = None;
    for candidate in candidates {
        match P::connect(candidate).await {
            Ok(stream) => {
                tcp = Some(stream);
                break;
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
    let Some(tcp) = tcp else {
        return Err(last_error.unwrap_or(Error::Dns {
            name: target.server_name(),
            source: io::ErrorKind::NotFound.into(),
        }));
    };
    if let Err(e) = P::set_nodelay(&tcp, config.nodelay) {
        tracing::debug!(%e, "could not set TCP_NODELAY");
    }

    let mut stream = if target.is_secure() {
        let name = target.server_name();
        let server_name = tls::server_name(&name)?;
        let connector = TlsConnector::from(shared.client_tls()?);
        let tls = connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| tls::classify_client_error(&name, e))?;
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
    Ok(Connection::new(stream, Role::Client, config.frame, &leftover).with_timers(P::timer))
}

async fn accept<P: Provider>(
    shared: Arc<Shared>,
    tcp: P::Stream,
    tls: Option<TlsAcceptor>,
    path: String,
) -> Result<Output<P::Stream>, Error> {
    let config = &shared.config;
    if let Err(e) = P::set_nodelay(&tcp, config.nodelay) {
        tracing::debug!(%e, "could not set TCP_NODELAY");
    }
    let mut stream = match tls {
        Some(acceptor) => {
            let tls = acceptor
                .accept(tcp)
                .await
                .map_err(|source| TlsError::Handshake {
                    server_name: "client".into(),
                    source,
                })?;
            Socket::Tls(Box::new(futures_rustls::TlsStream::Server(tls)))
        }
        None => Socket::Plain(tcp),
    };
    let rest = handshake::accept(&mut stream, config.max_head_size, &path).await?;
    Ok(Connection::new(stream, Role::Server, config.frame, &rest).with_timers(P::timer))
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

/// One listening socket and the addresses it reports.
struct Listener<P: Provider> {
    id: ListenerId,
    spec: WsAddr,
    local: SocketAddr,
    incoming: Option<P::Listener>,
    /// Started on the first poll (inside the runtime) when listening on an unspecified address.
    if_watcher: Option<P::IfWatcher>,
    watch_interfaces: bool,
    accept_errors: AcceptErrors,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    admission: Admission,
    events: VecDeque<TransportEvent<ListenerUpgrade<P::Stream>, Error>>,
    closed: bool,
    waker: Option<Waker>,
    _provider: PhantomData<P>,
}

impl<P: Provider> Listener<P> {
    fn new(
        id: ListenerId,
        spec: WsAddr,
        local: SocketAddr,
        incoming: P::Listener,
        tls: Option<TlsAcceptor>,
        shared: Arc<Shared>,
    ) -> Self {
        let admission = Admission::new(
            shared.config.max_pending_handshakes,
            shared.config.max_pending_handshakes_per_ip,
        );
        let mut listener = Listener {
            id,
            spec,
            local,
            incoming: Some(incoming),
            if_watcher: None,
            watch_interfaces: local.ip().is_unspecified(),
            accept_errors: AcceptErrors::default(),
            tls,
            shared,
            admission,
            events: VecDeque::new(),
            closed: false,
            waker: None,
            _provider: PhantomData,
        };
        if !listener.watch_interfaces {
            let listen_addr = listener.spec.with_ip(local.ip(), local.port());
            listener.events.push_back(TransportEvent::NewAddress {
                listener_id: id,
                listen_addr,
            });
        }
        listener
    }

    fn close(&mut self, reason: Result<(), Error>) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.incoming = None;
        self.if_watcher = None;
        self.watch_interfaces = false;
        self.events.push_back(TransportEvent::ListenerClosed {
            listener_id: self.id,
            reason,
        });
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn address_event(
        &self,
        event: IfEvent,
    ) -> Option<TransportEvent<ListenerUpgrade<P::Stream>, Error>> {
        let (IfEvent::Up(ip) | IfEvent::Down(ip)) = event;
        if ip.is_ipv4() != self.local.is_ipv4() {
            return None;
        }
        let listen_addr = self.spec.with_ip(ip, self.local.port());
        Some(match event {
            IfEvent::Up(_) => TransportEvent::NewAddress {
                listener_id: self.id,
                listen_addr,
            },
            IfEvent::Down(_) => TransportEvent::AddressExpired {
                listener_id: self.id,
                listen_addr,
            },
        })
    }

    fn on_accept(
        &mut self,
        tcp: P::Stream,
        remote: SocketAddr,
    ) -> Option<TransportEvent<ListenerUpgrade<P::Stream>, Error>> {
        let ticket = match self.admission.admit(remote.ip()) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                tracing::debug!(%remote, ?refusal, "too many pending handshakes; closing the new socket");
                return None;
            }
        };
        let local = P::local_addr(&tcp).unwrap_or(self.local);
        let local_addr = self.spec.with_ip(local.ip(), local.port());
        let send_back_addr = WsAddr {
            host: Host::Ip(remote.ip()),
            port: remote.port(),
            security: match self.spec.security {
                Security::Plain => Security::Plain,
                Security::Tls { .. } => Security::Tls { sni: None },
            },
            path: "/".into(),
            peer_id: None,
        }
        .to_multiaddr();
        let handoff = self.shared.handoff.get().cloned();
        let shared = self.shared.clone();
        let tls = self.tls.clone();
        let path = self.spec.path.clone();
        let upgrade = async move {
            let timeout = shared.config.handshake_timeout;
            let result =
                provider::timeout::<P, _>(timeout, accept::<P>(shared, tcp, tls, path)).await;
            let result = result.unwrap_or(Err(Error::Timeout {
                stage: "accepting (TLS and WebSocket upgrade)",
                after: timeout,
            }));
            if let Err(error) = &result {
                tracing::debug!(%remote, error = %Chain(error), "inbound WebSocket handshake failed");
            }
            result
        };
        let upgrade = match handoff {
            Some(handoff) => {
                *handoff.lock().unwrap_or_else(|e| e.into_inner()) = Some(ticket);
                upgrade.boxed()
            }
            None => ticket
                .guard(upgrade)
                .map(|result| result.unwrap_or(Err(Error::Evicted)))
                .boxed(),
        };
        Some(TransportEvent::Incoming {
            listener_id: self.id,
            upgrade,
            local_addr,
            send_back_addr,
        })
    }

    fn on_accept_error(
        &mut self,
        error: io::Error,
    ) -> Option<TransportEvent<ListenerUpgrade<P::Stream>, Error>> {
        let suppressed = self.accept_errors.on_error(Instant::now(), P::timer)?;
        tracing::warn!(
            local = %self.local,
            %error,
            suppressed,
            pause = ?ACCEPT_ERROR_BACKOFF,
            "accepting a connection failed; pausing the listener"
        );
        Some(TransportEvent::ListenerError {
            listener_id: self.id,
            error: Error::Accept(error),
        })
    }
}

impl<P: Provider> Stream for Listener<P> {
    type Item = TransportEvent<ListenerUpgrade<P::Stream>, Error>;

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
                    return Poll::Ready(Some(TransportEvent::ListenerError {
                        listener_id: this.id,
                        error: Error::Accept(error),
                    }))
                }
            }
        }
        while let Some(watcher) = this.if_watcher.as_mut() {
            match watcher.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(event))) => {
                    if let Some(event) = this.address_event(event) {
                        return Poll::Ready(Some(event));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Some(TransportEvent::ListenerError {
                        listener_id: this.id,
                        error: Error::Accept(error),
                    }))
                }
                Poll::Ready(None) => this.if_watcher = None,
                Poll::Pending => break,
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
                }
                Poll::Ready(Err(error)) => {
                    if let Some(event) = this.on_accept_error(error) {
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
