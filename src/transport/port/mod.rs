//! The listening sockets: a [`Port`] is one socket and the listeners (`listen_on`s) it serves, one
//! per kind. Its stream accepts connections (bounded per poll, pausing after accept errors),
//! follows the interfaces of an unspecified address (if-watch), and yields the listeners' events.

mod incoming;

use std::{
    collections::VecDeque,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Instant,
};

use futures::{future::BoxFuture, stream::FuturesUnordered, Stream, StreamExt};
use libp2p_core::{
    transport::{ListenerId, TransportEvent},
    Multiaddr,
};

use self::incoming::Inbound;
use super::{
    accept::Serve, ListenerUpgrade, Shared, ACCEPT_ERROR_BACKOFF, ACCEPT_ERROR_REPORT_INTERVAL,
};
use crate::{
    addr::{Addr, Kind},
    admission::{Admission, Limits},
    classify::Served,
    error::{Error, SharedIoError},
    provider::{IfEvent, Provider, Timer},
};

/// Most sockets one poll of a listener accepts before it yields to the executor.
const MAX_ACCEPTS_PER_POLL: usize = 64;

/// Most route-first connections one poll of a socket advances by a step before it yields.
const MAX_ROUTED_PER_POLL: usize = 64;

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
pub(super) struct Member {
    pub(super) id: ListenerId,
    pub(super) addr: Addr,
    pub(super) serve: Serve,
}

/// Whether a socket follows the interfaces of its unspecified address.
enum IfWatch<W> {
    /// Not yet: the watcher starts on the first poll (inside the runtime).
    Due,
    /// Watching.
    On(W),
    /// A specified address, or the watcher failed or ended, or the socket closed.
    Off,
}

/// One listening socket and the listeners (`listen_on`s) it serves, one per kind.
pub(super) struct Port<P: Provider> {
    pub(super) local: SocketAddr,
    /// `None` once the last listener is removed: the socket is closed.
    incoming: Option<P::Listener>,
    members: Vec<Member>,
    if_watch: IfWatch<P::IfWatcher>,
    /// The interface addresses reported so far (for listeners that join later).
    known_ips: Vec<IpAddr>,
    accept_errors: AcceptErrors,
    shared: Arc<Shared>,
    admission: Admission,
    /// Connections on the route-first path, each at its next phase.
    routing: FuturesUnordered<BoxFuture<'static, Option<Inbound<P::Stream>>>>,
    events: VecDeque<Event<P::Stream>>,
    waker: Option<Waker>,
    /// The ACME certificates' change count last seen (wildcard listeners).
    certificates_seen: Option<u64>,
    /// The concrete addresses the wildcard listeners announced.
    wildcard_announced: Vec<(ListenerId, Multiaddr)>,
}

impl<P: Provider> Port<P> {
    pub(super) fn new(local: SocketAddr, incoming: P::Listener, shared: Arc<Shared>) -> Self {
        let config = &shared.config;
        let admission = Admission::new(Limits {
            max_total: config.max_pending_handshakes,
            max_per_key: config.max_pending_handshakes_per_ip,
            ipv4_prefix: config.ipv4_share_prefix,
            ipv6_prefix: config.ipv6_share_prefix,
        })
        .with_recorder(config.metrics.clone());
        Port {
            local,
            incoming: Some(incoming),
            members: Vec::new(),
            if_watch: match local.ip().is_unspecified() {
                true => IfWatch::Due,
                false => IfWatch::Off,
            },
            known_ips: Vec::new(),
            accept_errors: AcceptErrors::default(),
            shared,
            admission,
            routing: FuturesUnordered::new(),
            events: VecDeque::new(),
            waker: None,
            certificates_seen: None,
            wildcard_announced: Vec::new(),
        }
    }

    fn served(&self) -> Served {
        self.members
            .iter()
            .fold(Served::default(), |s, m| s.with(m.addr.kind()))
    }

    /// Whether a listener of `kind` on `addr` can join this socket.
    pub(super) fn can_share(&self, addr: SocketAddr, kind: Kind) -> bool {
        self.incoming.is_some()
            && self.local.ip() == addr.ip()
            && self.local.port() == addr.port()
            && !self.served().has(kind)
    }

    /// Adds a listener: reports its addresses (now, or as the interfaces are seen).
    pub(super) fn add(&mut self, member: Member) {
        for ip in self.ips() {
            for listen_addr in self.announced(&member, ip) {
                self.events.push_back(TransportEvent::NewAddress {
                    listener_id: member.id,
                    listen_addr,
                });
            }
        }
        self.members.push(member);
        self.wake();
    }

    /// The addresses of this socket's listeners: its own, or the interfaces' seen so far.
    fn ips(&self) -> Vec<IpAddr> {
        match self.local.ip().is_unspecified() {
            true => self.known_ips.clone(),
            false => vec![self.local.ip()],
        }
    }

    /// What `member` announces on `ip`: its address; for a wildcard listener
    /// (`/tls/sni/*.<suffix>/ws` with ACME certificates) the concrete addresses of the domain
    /// the certificate in use is for, none before there is one.
    fn announced(&self, member: &Member, ip: IpAddr) -> Vec<Multiaddr> {
        let port = self.local.port();
        let wildcard = member
            .addr
            .wildcard_sni()
            .and_then(|suffix| self.shared.config.tls.wildcard_addresses(suffix, ip, port));
        wildcard.unwrap_or_else(|| vec![member.addr.with_ip(ip, port)])
    }

    /// Announces the wildcard listeners' addresses that a new certificate brings (once per
    /// certificate change; the port is woken at the next one).
    fn poll_certificates(&mut self, cx: &mut Context<'_>) {
        if !self.members.iter().any(|m| m.addr.wildcard_sni().is_some()) {
            return;
        }
        let version = self.shared.config.tls.watch_certificates(cx.waker());
        if version == self.certificates_seen {
            return;
        }
        self.certificates_seen = version;
        for ip in self.ips() {
            for member in self
                .members
                .iter()
                .filter(|m| m.addr.wildcard_sni().is_some())
            {
                for listen_addr in self.announced(member, ip) {
                    if !self
                        .wildcard_announced
                        .contains(&(member.id, listen_addr.clone()))
                    {
                        self.wildcard_announced
                            .push((member.id, listen_addr.clone()));
                        self.events.push_back(TransportEvent::NewAddress {
                            listener_id: member.id,
                            listen_addr,
                        });
                    }
                }
            }
        }
    }

    /// Removes listener `id`, if it is here; the socket closes with its last listener.
    pub(super) fn remove(&mut self, id: ListenerId) -> bool {
        let Some(at) = self.members.iter().position(|m| m.id == id) else {
            return false;
        };
        self.members.remove(at);
        self.events.push_back(TransportEvent::ListenerClosed {
            listener_id: id,
            reason: Ok(()),
        });
        if self.members.is_empty() {
            self.incoming = None;
            self.if_watch = IfWatch::Off;
            self.routing = FuturesUnordered::new();
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
        let up = matches!(event, IfEvent::Up(_));
        if up {
            if !self.known_ips.contains(&ip) {
                self.known_ips.push(ip);
            }
        } else {
            self.known_ips.retain(|known| *known != ip);
        }
        for member in &self.members {
            for listen_addr in self.announced(member, ip) {
                if member.addr.wildcard_sni().is_some() {
                    let entry = (member.id, listen_addr.clone());
                    self.wildcard_announced.retain(|e| *e != entry);
                    if up {
                        self.wildcard_announced.push(entry);
                    }
                }
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

impl<P: Provider> Port<P> {
    /// Starts the interface watcher when due, and takes its events; an event to yield, if any.
    fn poll_if_watch(&mut self, cx: &mut Context<'_>) -> Option<Event<P::Stream>> {
        if let IfWatch::Due = self.if_watch {
            self.if_watch = IfWatch::Off;
            match P::if_watcher() {
                Ok(watcher) => self.if_watch = IfWatch::On(watcher),
                Err(error) => {
                    let error = SharedIoError(Arc::new(error));
                    self.on_error(|| Error::InterfaceWatch(error.clone()));
                }
            }
        }
        while let IfWatch::On(watcher) = &mut self.if_watch {
            match watcher.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(event))) => self.on_if_event(event),
                Poll::Ready(Some(Err(error))) => {
                    let error = SharedIoError(Arc::new(error));
                    self.on_error(|| Error::InterfaceWatch(error.clone()));
                }
                Poll::Ready(None) => self.if_watch = IfWatch::Off,
                Poll::Pending => break,
            }
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
        }
        None
    }

    /// Advances the route-first connections, bounded per poll; an event to yield, if any.
    fn poll_routing(&mut self, cx: &mut Context<'_>) -> Option<Event<P::Stream>> {
        let mut routed = 0;
        while !self.routing.is_empty() {
            if routed == MAX_ROUTED_PER_POLL {
                cx.waker().wake_by_ref();
                break;
            }
            routed += 1;
            match self.routing.poll_next_unpin(cx) {
                Poll::Ready(Some(Some(inbound))) => {
                    if let Some(event) = self.on_inbound(inbound) {
                        return Some(event);
                    }
                }
                Poll::Ready(Some(None)) => {}
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        None
    }

    /// Accepts connections, bounded per poll: a flood of connections that are closed at once
    /// (over the pending limit) must not keep this poll going; the rest wait for the next one.
    /// An event to yield, if any.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Option<Event<P::Stream>> {
        let mut accepted = 0;
        while self.accept_errors.poll_backoff(cx).is_ready() {
            let incoming = self.incoming.as_mut()?;
            if accepted == MAX_ACCEPTS_PER_POLL {
                cx.waker().wake_by_ref();
                break;
            }
            accepted += 1;
            match P::poll_accept(incoming, cx) {
                Poll::Ready(Ok((tcp, remote))) => {
                    if let Some(event) = self.on_accept(tcp, remote) {
                        return Some(event);
                    }
                    // A connection to route: poll it once now, so it registers its waker.
                    if let Poll::Ready(Some(Some(inbound))) = self.routing.poll_next_unpin(cx) {
                        if let Some(event) = self.on_inbound(inbound) {
                            return Some(event);
                        }
                    }
                }
                Poll::Ready(Err(error)) => {
                    self.on_accept_error(error);
                    if let Some(event) = self.events.pop_front() {
                        return Some(event);
                    }
                }
                Poll::Pending => break,
            }
        }
        None
    }
}

impl<P: Provider> Stream for Port<P> {
    type Item = Event<P::Stream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(event) = this.events.pop_front() {
            return Poll::Ready(Some(event));
        }
        if this.incoming.is_none() {
            return Poll::Ready(None);
        }
        this.waker = Some(cx.waker().clone());
        this.poll_certificates(cx);
        if let Some(event) = this.events.pop_front() {
            return Poll::Ready(Some(event));
        }
        let event = this
            .poll_if_watch(cx)
            .or_else(|| this.poll_routing(cx))
            .or_else(|| this.poll_accept(cx));
        match event {
            Some(event) => Poll::Ready(Some(event)),
            None => Poll::Pending,
        }
    }
}
