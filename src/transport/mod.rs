//! The [`libp2p_core::Transport`] implementation: listening sockets (each shared by the listeners
//! of one port), dial futures, events.
//!
//! `poll` accepts sockets and reports addresses. Each accepted connection takes one of two paths,
//! both decided in `inbound`: on a socket that serves one kind (and no proxies), it is reported
//! at once and its upgrade future reads the first bytes and routes them (refusing a kind the
//! socket does not serve at once), then runs TLS and the HTTP upgrade (or nothing, for `/tcp`);
//! otherwise it is routed first (inside `poll`, bounded by its deadline and the pending-handshake
//! limit) and reported to the listener of its kind.
//!
//! Here: the [`Transport`] itself (`listen_on`, `dial`, `poll`). Its pieces: `output` (what it
//! yields: [`Output`], [`Socket`], [`TcpConnection`]), `dial` (DNS, TCP or a proxy's tunnel, TLS,
//! the HTTP upgrade), `inbound` (the inbound path's decisions, pure: which path, the deadline,
//! charging a named client, and the route the first bytes take), `port` (the listening sockets:
//! the accept loop, its backoff, interface changes, and admitting and routing inbound
//! connections) and `accept` (the IO of serving one: PROXY header, first bytes, refusal, TLS, the
//! HTTP upgrade).

mod accept;
mod dial;
mod inbound;
mod output;
mod port;

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{future::BoxFuture, stream::SelectAll, AsyncRead, AsyncWrite, FutureExt, StreamExt};
use futures_rustls::{rustls::ClientConfig, TlsAcceptor};
use libp2p_core::{
    multiaddr::Multiaddr,
    transport::{DialOpts, ListenerId, TransportError, TransportEvent},
};

pub use self::output::{Output, Socket, TcpConnection};
use self::{
    accept::Serve,
    dial::usable_addresses,
    port::{Member, Port},
};
use crate::{
    addr::{Addr, Host, Kind, Security},
    admission::Handoff,
    config::Config,
    error::{Error, TimeoutStage, TlsError},
    metrics::{Direction, Recorder},
    provider::{self, Provider},
};

/// How long a listener pauses accepting after `accept` failed (EMFILE, ENFILE, ENOBUFS...), so that
/// a full fd table does not turn the accept loop into a busy loop. libp2p-tcp pauses as long.
pub(crate) const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Accept errors are reported (a `ListenerError` event and a warning) at most once per this long;
/// the ones in between are counted and the count is given with the next report.
pub(crate) const ACCEPT_ERROR_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// The future that upgrades an accepted socket (routing by its first bytes, then TLS and the HTTP
/// upgrade for WebSocket listeners).
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
    /// Built on the first lookup that needs it (`/dnsaddr`, or `/dns*` with configured servers).
    resolver: OnceLock<crate::dns::Resolver>,
    /// Set when a layer above takes over each inbound connection's admission ticket (see
    /// [`Transport::hand_off_tickets`]).
    handoff: OnceLock<Handoff>,
}

impl Shared {
    fn resolver<P: Provider>(&self) -> &crate::dns::Resolver {
        self.resolver
            .get_or_init(|| P::dns_resolver(&self.config.dns))
    }

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
        if let Some((id, chains)) = config.tls.served_chains() {
            config.metrics.watch_certificate(id, chains);
        }
        Transport {
            shared: Arc::new(Shared {
                config,
                client_tls: OnceLock::new(),
                resolver: OnceLock::new(),
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
        if let Some(name) = crate::dns::dnsaddr_name(&addr) {
            let name = name.map_err(|error| {
                tracing::debug!(%addr, %error, "not a /dnsaddr address this transport dials");
                TransportError::MultiaddrNotSupported(addr.clone())
            })?;
            return Ok(dial::dial_dnsaddr::<P>(self.shared.clone(), addr, name).boxed());
        }
        let target = Addr::parse(&addr).map_err(|error| {
            tracing::debug!(%addr, %error, "not a TCP or WebSocket address");
            TransportError::MultiaddrNotSupported(addr.clone())
        })?;
        if !dial::dialable(&target) {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        let shared = self.shared.clone();
        Ok(async move {
            let timeout = shared.config.handshake_timeout;
            let start = Instant::now();
            let deadline = start + timeout;
            let stage = match target {
                Addr::Ws(_) => TimeoutStage::DialWebSocket,
                Addr::Tcp(_) => TimeoutStage::DialTcp,
            };
            let (kind, recorder) = (target.kind(), shared.config.metrics.clone());
            let dial = dial::dial_addr::<P>(shared, target, deadline);
            let result = match provider::timeout_at::<P, _>(deadline, dial).await {
                Some(result) => result,
                None => Err(Error::Timeout {
                    stage,
                    after: timeout,
                }),
            };
            recorder.dialed(result, kind, start)
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

impl Recorder {
    /// Counts a dial of `kind` begun at `start` that ended with `result`: an established
    /// connection (which gets its meter) or a failure.
    pub(super) fn dialed<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        result: Result<Output<S>, Error>,
        kind: Kind,
        start: Instant,
    ) -> Result<Output<S>, Error> {
        match result {
            Ok(mut output) => {
                output.set_meter(self.opened(Direction::Outbound, output.kind(), start.elapsed()));
                Ok(output)
            }
            Err(error) => {
                self.dial_failed(kind, &error);
                Err(error)
            }
        }
    }

    /// Wraps the upgrade of an inbound connection of `kind` accepted at `accepted` so that its
    /// outcome is counted: an established connection with its meter (its handshake time counted
    /// from the accept), or a failed inbound handshake of `kind`. Without metrics it is returned
    /// unchanged.
    pub(super) fn meter_incoming<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        &self,
        kind: Kind,
        accepted: Instant,
        upgrade: ListenerUpgrade<S>,
    ) -> ListenerUpgrade<S> {
        if !self.is_on() {
            return upgrade;
        }
        let recorder = self.clone();
        upgrade
            .map(move |result| match result {
                Ok(mut output) => {
                    let took = accepted.elapsed();
                    output.set_meter(recorder.opened(Direction::Inbound, output.kind(), took));
                    Ok(output)
                }
                Err(error) => {
                    recorder.inbound_failed(kind, &error);
                    Err(error)
                }
            })
            .boxed()
    }
}
