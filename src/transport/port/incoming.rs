//! Inbound connections of a [`Port`]: admission (the pending-handshake limits), then the path
//! [`inbound::path`] picks. On the direct path (a socket serving only `/tcp`, no proxies) the
//! `Incoming` event goes out at once and its upgrade future reads the first bytes and routes them;
//! on the route-first path the connection's phases run here first, each under the connection's
//! ticket and its one deadline: a PROXY header and the first bytes; a refusal; for the WebSocket
//! kinds TLS and the request head (a plain HTTP request is answered here and never reported);
//! from a trusted proxy whose forwarding headers are believed, the HTTP upgrade. Then the event
//! goes to the listener of its kind.

use std::{
    future::Future,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{future::BoxFuture, FutureExt};
use futures_rustls::TlsAcceptor;
use libp2p_core::{
    multiaddr::{Multiaddr, Protocol},
    transport::TransportEvent,
};

use super::{Event, Port};
use crate::{
    addr::{Addr, Host, Kind, Security, WsAddr},
    admission::{Charge, Ticket},
    classify::Verdict,
    error::{Chain, Error, HandshakeError, TimeoutStage},
    forwarded::{ForwardedClient, ForwardedError},
    metrics::Recorder,
    provider::{self, Provider},
    transport::{
        accept::{
            accept_tcp, is_proxy_header, open, read_first_bytes, read_proxy_header, refuse,
            serve_tcp, upgrade, Open, Opened, Serve,
        },
        inbound::{self, charge_named, Inspect, Path, Route, Trust, Unrecognised},
        output::Prefix,
        ListenerUpgrade, Output, Shared,
    },
};

/// A connection on the route-first path between two of its phases.
pub(super) struct Inbound<S> {
    carry: Carry,
    step: Step<S>,
}

/// What a connection carries from phase to phase.
struct Carry {
    remote: SocketAddr,
    /// When it was accepted (the handshake time is counted from it).
    accepted: Instant,
    ticket: Ticket,
    deadline: Instant,
    /// The handshake timeout the deadline was counted with (for the error that reports it).
    timeout: Duration,
    trust: Trust,
    /// The socket's one listener, when no proxy is involved (see [`Path::RouteFirst`]).
    lone: Option<Kind>,
    /// Counts the failures that are not reported (reported ones are counted with their event).
    metrics: Recorder,
}

/// Where a connection on the route-first path stands.
enum Step<S> {
    /// Its first bytes are read (after a PROXY header, if any): to be routed. `peer` is the
    /// client a trusted PROXY header named, or the remote address.
    Read {
        tcp: S,
        prefix: Prefix,
        verdict: Verdict,
        peer: SocketAddr,
    },
    /// A WebSocket connection whose request head is read: an upgrade request, to be upgraded.
    Opened {
        kind: Kind,
        opened: Opened<S>,
        peer: SocketAddr,
        path: String,
    },
    /// Served as `kind` and upgraded already (a trusted proxy's forwarding headers had to be
    /// read first), or failed on the way (reported to the listener of `kind`); `client` is whom
    /// the headers named (`https`: over TLS), or the peer.
    Upgraded {
        kind: Kind,
        result: Box<Result<Output<S>, Error>>,
        client: SocketAddr,
        https: bool,
    },
}

impl<S> Step<S> {
    /// A failure of a connection from `peer`, reported to the listener of `kind`.
    fn failed(kind: Kind, error: Error, peer: SocketAddr) -> Self {
        Step::Upgraded {
            kind,
            result: Box::new(Err(error)),
            client: peer,
            https: false,
        }
    }
}

/// The stage a timeout of a WebSocket connection's handshake is reported at.
fn stage(carry: &Carry) -> TimeoutStage {
    match carry.lone {
        Some(_) => TimeoutStage::Accept,
        None => TimeoutStage::AcceptShared,
    }
}

/// Which phases report their failures (a timeout, an eviction): to the listener of `kind`, the
/// timeout at `stage`, as a connection from `peer` (the client a trusted proxy named, or the
/// remote address).
type Report = Option<(Kind, TimeoutStage, SocketAddr)>;

/// Runs one phase of a route-first connection under its ticket and its deadline: the next step,
/// or `None` (the connection is closed) if the phase ends it, or if it times out or is evicted
/// where `report` is `None` (otherwise those are reported as failures).
fn phase<P: Provider>(
    mut carry: Carry,
    future: impl Future<Output = Option<Step<P::Stream>>> + Send + 'static,
    report: Report,
) -> BoxFuture<'static, Option<Inbound<P::Stream>>> {
    async move {
        let bounded = provider::timeout_at::<P, _>(carry.deadline, future);
        let remote = carry.remote;
        let metrics = carry.metrics.clone();
        let failed = |error: Error| {
            if report.is_none() {
                metrics.inbound_failed_unrouted(&error);
            }
            report.map(|(kind, _, peer)| Step::failed(kind, error, peer))
        };
        let step = match carry.ticket.phase(bounded).await {
            Ok(Some(step)) => step?,
            Ok(None) => {
                tracing::debug!(%remote, "not served within the handshake timeout; closing");
                let after = carry.timeout;
                let stage = report.map_or(TimeoutStage::AcceptShared, |(_, stage, _)| stage);
                failed(Error::Timeout { stage, after })?
            }
            Err(_) => {
                tracing::debug!(%remote, "evicted while being routed");
                failed(Error::Evicted)?
            }
        };
        Some(Inbound { carry, step })
    }
    .boxed()
}

/// The first phase of the route-first path: a PROXY header if one is read (its client charged to
/// its share at once when a trusted proxy sent it), then the first bytes. A failure is reported
/// to `lone`'s listener, if the socket has one (see [`Path::RouteFirst`]).
async fn read_first<P: Provider>(
    mut tcp: P::Stream,
    remote: SocketAddr,
    trust: Trust,
    charge: Charge,
    lone: Option<Kind>,
    metrics: Recorder,
) -> Option<Step<P::Stream>> {
    let failed = |error: Error| {
        tracing::debug!(%remote, error = %Chain(&error), "closing");
        if lone.is_none() {
            metrics.inbound_failed_unrouted(&error);
        }
        lone.map(|kind| Step::failed(kind, error, remote))
    };
    let (header, prefix) = match read_proxy_header(&mut tcp, trust.proxy_protocol).await {
        Ok(read) => read,
        Err(error) => return failed(error),
    };
    let mut peer = remote;
    if let Some(source) = header.and_then(|h| h.source) {
        if trust.trusted {
            if let Err(refusal) = charge_named(&charge, source.ip()) {
                tracing::debug!(%remote, client = %source, ?refusal, "too many pending handshakes of the client a PROXY header named; closing");
                return None;
            }
            peer = source;
        } else {
            tracing::debug!(%remote, claimed = %source, "PROXY header from a peer that is not a trusted proxy; ignored");
        }
    }
    match read_first_bytes(&mut tcp, prefix).await {
        Ok((verdict, prefix)) => Some(Step::Read {
            tcp,
            prefix,
            verdict,
            peer,
        }),
        Err(error) => failed(Error::Handshake(HandshakeError::Io(error))),
    }
}

/// The phase of a routed WebSocket connection: TLS (for `/tls/ws`) and its request head. A plain
/// HTTP request is answered and closed here (logged, not reported); an upgrade request goes on.
async fn open_phase<P: Provider>(
    shared: Arc<Shared>,
    tcp: P::Stream,
    prefix: Prefix,
    kind: Kind,
    tls: Option<TlsAcceptor>,
    path: String,
    peer: SocketAddr,
) -> Option<Step<P::Stream>> {
    let metrics = shared.config.metrics.clone();
    match open::<P>(shared, tcp, prefix, tls, &path).await {
        Ok(Open::Upgrade(opened)) => Some(Step::Opened {
            kind,
            opened,
            peer,
            path,
        }),
        Ok(Open::Answered { status }) => {
            tracing::debug!(%peer, ?kind, ?status, "answered a plain HTTP request; closed");
            if let Some(status) = status {
                metrics.http_answered(kind, status);
            }
            None
        }
        Ok(Open::Validated) => {
            tracing::debug!(%peer, "answered an ACME TLS-ALPN-01 validation; closed");
            None
        }
        Err(error) => Some(Step::failed(kind, error, peer)),
    }
}

/// The phase of a connection from a trusted proxy whose forwarding headers are believed: the
/// HTTP upgrade, which names the client (charged to its share as soon as the header is read).
async fn upgrade_believed<P: Provider>(
    accept: impl Future<Output = Result<(Output<P::Stream>, Option<ForwardedClient>), Error>>,
    kind: Kind,
    peer: SocketAddr,
    remote: SocketAddr,
) -> Option<Step<P::Stream>> {
    let (result, client, https) = match accept.await {
        Ok((output, Some(client))) => (
            Ok(output),
            SocketAddr::new(client.ip, client.port.unwrap_or(0)),
            client.https,
        ),
        Ok((output, None)) => (Ok(output), peer, false),
        Err(Error::Handshake(HandshakeError::Forwarded(ForwardedError::ClientShareFull {
            client,
        }))) => {
            tracing::debug!(%remote, %client, "too many pending handshakes of the client a forwarding header named; answered 503 and closed");
            return None;
        }
        Err(error) => (Err(error), peer, false),
    };
    Some(Step::Upgraded {
        kind,
        result: Box::new(result),
        client,
        https,
    })
}

impl<P: Provider> Port<P> {
    /// Admits a connection from `remote` accepted at `accepted`: its ticket, bounded by the
    /// upgrade timeout from `accepted` when the upgraded stack holds it.
    fn admit(&self, remote: SocketAddr, trust: Trust, accepted: Instant) -> Option<Ticket> {
        let admitted = if trust.trusted {
            self.admission.admit_trusted(remote.ip())
        } else {
            self.admission.admit(remote.ip())
        };
        let ticket = match admitted {
            Ok(ticket) => ticket,
            Err(refusal) => {
                tracing::debug!(%remote, ?refusal, "too many pending handshakes; closing the new socket");
                return None;
            }
        };
        let config = &self.shared.config;
        Some(match self.shared.handoff.get() {
            Some(_) => ticket.with_deadline(
                accepted + config.upgrade_timeout,
                config.upgrade_timeout,
                P::timer,
            ),
            None => ticket,
        })
    }

    pub(super) fn on_accept(
        &mut self,
        tcp: P::Stream,
        remote: SocketAddr,
    ) -> Option<Event<P::Stream>> {
        let accepted = Instant::now();
        let config = &self.shared.config;
        let trust = Trust::of(config, remote.ip(), self.local.port());
        let ticket = self.admit(remote, trust, accepted)?;
        let deadline = inbound::deadline(config, accepted, ticket.deadline());
        let timeout = config.handshake_timeout;
        let only = match self.members.as_slice() {
            [member] => Some(member.addr.kind()),
            _ => None,
        };
        match inbound::path(only, trust) {
            Path::Direct => {
                let shared = self.shared.clone();
                let upgrade = async move {
                    let accept = accept_tcp::<P>(shared, tcp);
                    let result = provider::timeout_at::<P, _>(deadline, accept).await;
                    result.unwrap_or(Err(Error::Timeout {
                        stage: TimeoutStage::Accept,
                        after: timeout,
                    }))
                };
                Some(self.incoming_event(0, upgrade.boxed(), remote, false, ticket, accepted))
            }
            Path::RouteFirst { lone } => {
                let charge = ticket.charge();
                let carry = Carry {
                    remote,
                    accepted,
                    ticket,
                    deadline,
                    timeout,
                    trust,
                    lone,
                    metrics: config.metrics.clone(),
                };
                let metrics = config.metrics.clone();
                let read = read_first::<P>(tcp, remote, trust, charge, lone, metrics);
                let report = lone.map(|kind| (kind, TimeoutStage::Accept, remote));
                self.routing.push(phase::<P>(carry, read, report));
                None
            }
        }
    }

    /// The next step of a route-first connection: routes it by its first bytes (refusing it, or
    /// opening it, or reporting it), upgrades it once its request head is read, or reports it
    /// once upgraded.
    pub(super) fn on_inbound(&mut self, inbound: Inbound<P::Stream>) -> Option<Event<P::Stream>> {
        let Inbound { carry, step } = inbound;
        let remote = carry.remote;
        match step {
            Step::Read {
                tcp,
                prefix,
                verdict,
                peer,
            } => {
                let proxy_header = is_proxy_header(&prefix);
                let unrecognised = carry
                    .lone
                    .map_or(Unrecognised::Close, Unrecognised::ServeAs);
                match inbound::route(verdict, proxy_header, self.served(), unrecognised) {
                    Route::Refuse { sign, error } => {
                        tracing::debug!(%remote, error = %Chain(&error), "closing");
                        if carry.lone.is_none() {
                            carry.metrics.inbound_failed_unrouted(&error);
                        }
                        let report = carry.lone.map(|kind| (kind, TimeoutStage::Accept, peer));
                        let reported = report.map(|(kind, _, _)| Step::failed(kind, error, peer));
                        let mut tcp = tcp;
                        let refusal = async move {
                            refuse::<P>(&mut tcp, sign).await;
                            reported
                        };
                        self.next_phase(phase::<P>(carry, refusal, report));
                        None
                    }
                    Route::Serve(kind) => self.serve(carry, kind, tcp, prefix, peer),
                }
            }
            Step::Opened {
                kind,
                opened,
                peer,
                path,
            } => self.upgrade_opened(carry, kind, opened, peer, path),
            Step::Upgraded {
                kind,
                result,
                client,
                https,
            } => {
                let at = self.member_of(kind, remote)?;
                if client.ip() != remote.ip() {
                    // Charged to the client's share already, when the header naming it was read.
                    tracing::debug!(%remote, %client, https, "a trusted reverse proxy named the client");
                }
                let upgrade = async move { *result }.boxed();
                Some(self.incoming_event(at, upgrade, client, https, carry.ticket, carry.accepted))
            }
        }
    }

    /// Queues a route-first connection's next phase, and wakes the port's task so that it is
    /// polled (a future pushed to `routing` is polled on the next `poll_next` of it, which may not
    /// come otherwise: the step before may have been taken outside `poll_routing`).
    fn next_phase(&mut self, phase: BoxFuture<'static, Option<Inbound<P::Stream>>>) {
        self.routing.push(phase);
        self.wake();
    }

    /// The listener of `kind`, if it is still here.
    fn member_of(&self, kind: Kind, remote: SocketAddr) -> Option<usize> {
        let at = self.members.iter().position(|m| m.addr.kind() == kind);
        if at.is_none() {
            tracing::debug!(%remote, ?kind, "its listener was removed meanwhile; closing");
        }
        at
    }

    /// Serves a routed connection as `kind`: a `/tcp` one is reported now; a WebSocket one is
    /// opened first (TLS, the request head).
    fn serve(
        &mut self,
        carry: Carry,
        kind: Kind,
        tcp: P::Stream,
        prefix: Prefix,
        peer: SocketAddr,
    ) -> Option<Event<P::Stream>> {
        let remote = carry.remote;
        let at = self.member_of(kind, remote)?;
        let serve = self.members[at].serve.clone();
        let Serve::Ws { tls, path } = serve else {
            if peer.ip() != remote.ip() {
                // Charged to the client's share already, when the header naming it was read.
                tracing::debug!(%remote, client = %peer, "a trusted reverse proxy named the client");
            }
            let output = serve_tcp::<P>(&self.shared, tcp, prefix);
            let upgrade = async move { Ok(output) }.boxed();
            return Some(self.incoming_event(
                at,
                upgrade,
                peer,
                false,
                carry.ticket,
                carry.accepted,
            ));
        };
        let open = open_phase::<P>(self.shared.clone(), tcp, prefix, kind, tls, path, peer);
        let report = Some((kind, stage(&carry), peer));
        self.next_phase(phase::<P>(carry, open, report));
        None
    }

    /// Upgrades an opened WebSocket connection: from a trusted proxy whose forwarding headers are
    /// believed, here first (to know the client); otherwise in the event's future.
    fn upgrade_opened(
        &mut self,
        carry: Carry,
        kind: Kind,
        opened: Opened<P::Stream>,
        peer: SocketAddr,
        path: String,
    ) -> Option<Event<P::Stream>> {
        let remote = carry.remote;
        let at = self.member_of(kind, remote)?;
        let shared = self.shared.clone();
        if carry.trust.believes_headers(&shared.config, peer.ip()) {
            let charge = carry.ticket.charge();
            let accept = upgrade::<P>(shared, opened, path, Inspect::Believe, Some(charge));
            let believed = upgrade_believed::<P>(accept, kind, peer, remote);
            self.next_phase(phase::<P>(carry, believed, None));
            return None;
        }
        if peer.ip() != remote.ip() {
            // Charged to the client's share already, when the header naming it was read.
            tracing::debug!(%remote, client = %peer, "a trusted reverse proxy named the client");
        }
        let (deadline, inspect, after) =
            (carry.deadline, carry.trust.untrusted_headers, carry.timeout);
        let stage = stage(&carry);
        let upgrade = async move {
            let accept = upgrade::<P>(shared, opened, path, inspect, None);
            match provider::timeout_at::<P, _>(deadline, accept).await {
                Some(result) => result.map(|(output, _)| output),
                None => Err(Error::Timeout { stage, after }),
            }
        };
        Some(self.incoming_event(
            at,
            upgrade.boxed(),
            peer,
            false,
            carry.ticket,
            carry.accepted,
        ))
    }

    /// The `Incoming` event of member `at` for a connection from `remote` (the client, when a
    /// trusted reverse proxy named it; `https` when it said the client came over TLS) accepted at
    /// `accepted`, with its admission ticket: guarding the upgrade here, or handed to the upgraded
    /// stack above; its outcome counted in the metrics.
    fn incoming_event(
        &self,
        at: usize,
        upgrade: ListenerUpgrade<P::Stream>,
        remote: SocketAddr,
        https: bool,
        ticket: Ticket,
        accepted: Instant,
    ) -> Event<P::Stream> {
        let member = &self.members[at];
        let local_addr = member.addr.with_ip(self.local.ip(), self.local.port());
        let send_back_addr = send_back_addr(&member.addr, remote, https);
        let upgrade = upgrade
            .inspect(move |result| {
                if let Err(error) = result {
                    tracing::debug!(%remote, error = %Chain(error), "inbound handshake failed");
                }
            })
            .boxed();
        let upgrade = match self.shared.handoff.get() {
            Some(handoff) => {
                handoff.leave(ticket);
                upgrade
            }
            None => ticket
                .guard(upgrade)
                .map(|result| result.unwrap_or_else(Err))
                .boxed(),
        };
        let kind = member.addr.kind();
        let upgrade = self
            .shared
            .config
            .metrics
            .meter_incoming(kind, accepted, upgrade);
        TransportEvent::Incoming {
            listener_id: member.id,
            upgrade,
            local_addr,
            send_back_addr,
        }
    }
}

/// The address to report for a connection from `remote` to a listener on `addr` (`https`: a
/// trusted proxy said the client came over TLS).
fn send_back_addr(addr: &Addr, remote: SocketAddr, https: bool) -> Multiaddr {
    match addr {
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
    }
}
