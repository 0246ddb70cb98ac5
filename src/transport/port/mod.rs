//! The listening sockets: a [`Port`] is one socket and the listeners (`listen_on`s) it serves, one
//! per kind. Its stream accepts connections (bounded per poll, pausing after accept errors),
//! follows the interfaces of an unspecified address (if-watch), and yields the listeners' events.

mod incoming;

use std::{
    collections::VecDeque,
    io,
    marker::PhantomData,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    task::{Context, Poll, Waker},
    time::Instant,
};

use futures::{future::BoxFuture, stream::FuturesUnordered, Stream, StreamExt};
use libp2p_core::transport::{ListenerId, TransportEvent};

use self::incoming::Sorted;
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

/// Most classified connections one poll of a shared socket takes before it yields.
const MAX_SORTED_PER_POLL: usize = 64;

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

/// One listening socket and the listeners (`listen_on`s) it serves, one per kind.
pub(super) struct Port<P: Provider> {
    pub(super) local: SocketAddr,
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
    pub(super) fn new(local: SocketAddr, incoming: P::Listener, shared: Arc<Shared>) -> Self {
        let config = &shared.config;
        let admission = Admission::new(Limits {
            max_total: config.max_pending_handshakes,
            max_per_key: config.max_pending_handshakes_per_ip,
            ipv4_prefix: config.ipv4_share_prefix,
            ipv6_prefix: config.ipv6_share_prefix,
        });
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
    pub(super) fn can_share(&self, addr: SocketAddr, kind: Kind) -> bool {
        !self.closed
            && self.local.ip() == addr.ip()
            && self.local.port() == addr.port()
            && !self.served().has(kind)
    }

    /// Adds a listener: reports its addresses (now, or as the interfaces are seen).
    pub(super) fn add(&mut self, member: Member) {
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
    pub(super) fn remove(&mut self, id: ListenerId) -> bool {
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
