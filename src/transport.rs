//! The [`libp2p_core::Transport`] implementation: listeners, dial futures, events.
//!
//! `poll` only accepts sockets and reports addresses. TLS and the HTTP upgrade run inside the
//! per-connection futures ([`ListenerUpgrade`] and [`Dial`]), each bounded by the handshake timeout.

use std::{
    collections::VecDeque,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    task::{Context, Poll, Waker},
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
    config::Config,
    error::{Error, TlsError},
    framed::{Connection, Role},
    handshake, runtime,
    runtime::{IfEvent, IfWatcher, Incoming, TcpStream},
    tls,
};

/// The socket under an upgraded connection: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Socket {
    /// Plain TCP (`/ws`).
    Plain(TcpStream),
    /// TLS over TCP (`/tls/ws`, `/wss`).
    Tls(Box<futures_rustls::TlsStream<TcpStream>>),
}

/// What the transport yields: an upgraded WebSocket connection used as a byte stream.
pub type Output = Connection<Socket>;

/// The future that upgrades an accepted socket (TLS, then the HTTP upgrade).
pub type ListenerUpgrade = BoxFuture<'static, Result<Output, Error>>;

/// The future that dials (DNS, TCP, TLS, then the HTTP upgrade). It does nothing until polled.
pub type Dial = BoxFuture<'static, Result<Output, Error>>;

/// The WebSocket transport (without noise and yamux; see [`upgraded`](crate::upgraded) for the
/// complete stack).
pub struct Transport {
    shared: Arc<Shared>,
    listeners: SelectAll<Listener>,
}

struct Shared {
    config: Config,
    client_tls: OnceLock<Result<Arc<ClientConfig>, String>>,
}

impl Shared {
    fn client_tls(&self) -> Result<Arc<ClientConfig>, TlsError> {
        self.client_tls
            .get_or_init(|| self.config.tls.client_config().map_err(|e| e.to_string()))
            .clone()
            .map_err(TlsError::Certificate)
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("config", &self.shared.config)
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

impl Transport {
    /// A transport with the given configuration.
    pub fn new(config: Config) -> Self {
        Transport {
            shared: Arc::new(Shared {
                config,
                client_tls: OnceLock::new(),
            }),
            listeners: SelectAll::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    fn bind_addresses(&self, spec: &WsAddr) -> Result<Vec<SocketAddr>, Error> {
        match &spec.host {
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, spec.port)]),
            Host::Dns { name, family } => {
                usable_addresses(name, *family, runtime::resolve_blocking(name, spec.port))
            }
        }
    }
}

impl libp2p_core::Transport for Transport {
    type Output = Output;
    type Error = Error;
    type ListenerUpgrade = ListenerUpgrade;
    type Dial = Dial;

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
            match runtime::bind(candidate) {
                Ok((incoming, local)) => {
                    let listener =
                        Listener::new(id, spec, local, incoming, tls, self.shared.clone())
                            .map_err(TransportError::Other)?;
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

    fn dial(&mut self, addr: Multiaddr, _opts: DialOpts) -> Result<Dial, TransportError<Error>> {
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
            match runtime::timeout(timeout, dial(shared, target)).await {
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
    ) -> Poll<TransportEvent<ListenerUpgrade, Error>> {
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

async fn dial(shared: Arc<Shared>, target: WsAddr) -> Result<Output, Error> {
    let config = &shared.config;
    let candidates = match &target.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, target.port)],
        Host::Dns { name, family } => {
            usable_addresses(name, *family, runtime::resolve(name, target.port).await)?
        }
    };

    let mut tcp = None;
    let mut last_error = None;
    for candidate in candidates {
        match runtime::connect(candidate).await {
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
    if let Err(e) = runtime::set_nodelay(&tcp, config.nodelay) {
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
    Ok(Connection::new(
        stream,
        Role::Client,
        config.frame,
        &leftover,
    ))
}

async fn accept(
    shared: Arc<Shared>,
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    path: String,
) -> Result<Output, Error> {
    let config = &shared.config;
    if let Err(e) = runtime::set_nodelay(&tcp, config.nodelay) {
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
    Ok(Connection::new(stream, Role::Server, config.frame, &rest))
}

/// One listening socket and the addresses it reports.
struct Listener {
    id: ListenerId,
    spec: WsAddr,
    local: SocketAddr,
    incoming: Option<Incoming>,
    if_watcher: Option<IfWatcher>,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    pending_handshakes: Arc<AtomicUsize>,
    events: VecDeque<TransportEvent<ListenerUpgrade, Error>>,
    closed: bool,
    waker: Option<Waker>,
}

impl Listener {
    fn new(
        id: ListenerId,
        spec: WsAddr,
        local: SocketAddr,
        incoming: Incoming,
        tls: Option<TlsAcceptor>,
        shared: Arc<Shared>,
    ) -> Result<Self, Error> {
        let mut listener = Listener {
            id,
            spec,
            local,
            incoming: Some(incoming),
            if_watcher: None,
            tls,
            shared,
            pending_handshakes: Arc::new(AtomicUsize::new(0)),
            events: VecDeque::new(),
            closed: false,
            waker: None,
        };
        if local.ip().is_unspecified() {
            listener.if_watcher = Some(IfWatcher::new().map_err(Error::Accept)?);
        } else {
            let listen_addr = listener.spec.with_ip(local.ip(), local.port());
            listener.events.push_back(TransportEvent::NewAddress {
                listener_id: id,
                listen_addr,
            });
        }
        Ok(listener)
    }

    fn close(&mut self, reason: Result<(), Error>) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.incoming = None;
        self.if_watcher = None;
        self.events.push_back(TransportEvent::ListenerClosed {
            listener_id: self.id,
            reason,
        });
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn address_event(&self, event: IfEvent) -> Option<TransportEvent<ListenerUpgrade, Error>> {
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
        tcp: TcpStream,
        remote: SocketAddr,
    ) -> Option<TransportEvent<ListenerUpgrade, Error>> {
        let max = self.shared.config.max_pending_handshakes;
        if self.pending_handshakes.load(Ordering::Relaxed) >= max {
            tracing::debug!(%remote, max, "too many pending WebSocket handshakes; closing the new socket");
            return None;
        }
        let local = tcp.local_addr().unwrap_or(self.local);
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
        let guard = PendingGuard::new(self.pending_handshakes.clone());
        let shared = self.shared.clone();
        let tls = self.tls.clone();
        let path = self.spec.path.clone();
        let upgrade = async move {
            let _guard = guard;
            let timeout = shared.config.handshake_timeout;
            let result = runtime::timeout(timeout, accept(shared, tcp, tls, path)).await;
            let result = result.unwrap_or(Err(Error::Timeout {
                stage: "accepting (TLS and WebSocket upgrade)",
                after: timeout,
            }));
            if let Err(error) = &result {
                tracing::debug!(%remote, %error, "inbound WebSocket handshake failed");
            }
            result
        }
        .boxed();
        Some(TransportEvent::Incoming {
            listener_id: self.id,
            upgrade,
            local_addr,
            send_back_addr,
        })
    }
}

impl Stream for Listener {
    type Item = TransportEvent<ListenerUpgrade, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(event) = this.events.pop_front() {
            return Poll::Ready(Some(event));
        }
        if this.closed {
            return Poll::Ready(None);
        }
        this.waker = Some(cx.waker().clone());

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

        while let Some(incoming) = this.incoming.as_mut() {
            match incoming.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok((tcp, remote)))) => {
                    if let Some(event) = this.on_accept(tcp, remote) {
                        return Poll::Ready(Some(event));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Some(TransportEvent::ListenerError {
                        listener_id: this.id,
                        error: Error::Accept(error),
                    }))
                }
                Poll::Ready(None) => {
                    this.close(Ok(()));
                    return Poll::Ready(this.events.pop_front());
                }
                Poll::Pending => break,
            }
        }
        Poll::Pending
    }
}

/// Counts a handshake in progress for as long as it lives.
struct PendingGuard(Arc<AtomicUsize>);

impl PendingGuard {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        PendingGuard(counter)
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Socket {
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

impl AsyncWrite for Socket {
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
