//! Inbound connections of a [`Port`]: admission (the pending-handshake limits), then either the
//! `Incoming` event at once (a socket serving one kind) or classification first (a shared socket,
//! a PROXY header, a trusted reverse proxy), and the `Incoming` event for the listener of the kind.

use std::{net::SocketAddr, sync::atomic::Ordering, time::Instant};

use futures::FutureExt;
use libp2p_core::{
    multiaddr::{Multiaddr, Protocol},
    transport::TransportEvent,
};

use super::{Event, Port};
use crate::{
    addr::{Addr, Host, Kind, Security, WsAddr},
    admission::Ticket,
    classify::{self, Class, Served, Verdict},
    error::{Chain, Error, HandshakeError, TimeoutStage},
    forwarded::{ForwardedError, ProxyProtocol},
    provider::{self, Provider},
    transport::{
        accept::{
            accept, accept_single, is_proxy_header, read_proxy_header, refuse, sniff, Inspect,
            Serve,
        },
        output::Prefix,
        ListenerUpgrade, Output,
    },
};

/// A connection classified (and, from a trusted reverse proxy, maybe upgraded) before its
/// `Incoming` event, admitted, waiting to be reported.
pub(super) struct Sorted<S> {
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

impl<P: Provider> Port<P> {
    pub(super) fn on_accept(
        &mut self,
        tcp: P::Stream,
        remote: SocketAddr,
    ) -> Option<Event<P::Stream>> {
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
        // Every deadline counts from now, whatever path the connection takes: the handshake
        // timeout bounds classification, a PROXY header, TLS and the HTTP upgrade; with the
        // upgraded stack, the upgrade timeout bounds all of it and noise and yamux too (the
        // ticket's deadline, enforced where the ticket guards the upgrade).
        let accepted = Instant::now();
        let config = &self.shared.config;
        let timeout = config.handshake_timeout;
        let mut deadline = accepted + timeout;
        if self.shared.handoff.get().is_some() {
            ticket = ticket.with_deadline(
                accepted + config.upgrade_timeout,
                config.upgrade_timeout,
                P::timer,
            );
        }
        if let Some(upgrade_deadline) = ticket.deadline() {
            deadline = deadline.min(upgrade_deadline);
        }
        if let [member] = self.members.as_slice() {
            if !trusted && proxy_protocol == ProxyProtocol::Off {
                let (kind, serve) = (member.addr.kind(), member.serve.clone());
                let shared = self.shared.clone();
                let upgrade = async move {
                    let result = provider::timeout_at::<P, _>(
                        deadline,
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
        let charge = ticket.charge();
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
                            // Charged to the client's own share at once, before anything else
                            // it sends (or does not send).
                            if let Err(refusal) = charge.to(source.ip()) {
                                tracing::debug!(%remote, client = %source, ?refusal, "too many pending handshakes of the client a PROXY header named; closing");
                                return None;
                            }
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
                    if is_proxy_header(&prefix) {
                        let error = Error::ProxyProtocol(ForwardedError::ProxyHeaderUnexpected);
                        tracing::debug!(%remote, error = %Chain(&error), "closing");
                        refuse::<P>(&mut tcp, &[]).await;
                        return None;
                    }
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
                        let result = accept::<P>(
                            shared.clone(),
                            tcp,
                            prefix,
                            serve.clone(),
                            Inspect::Believe,
                            Some(charge),
                        )
                        .await;
                        return Some(match result {
                            Ok((output, Some(client))) => (
                                class,
                                SortedIo::Ready(Box::new(Ok(output))),
                                SocketAddr::new(client.ip, client.port.unwrap_or(0)),
                                client.https,
                            ),
                            Ok((output, None)) => (class, SortedIo::Ready(Box::new(Ok(output))), peer, false),
                            Err(Error::Handshake(HandshakeError::Forwarded(
                                ForwardedError::ClientShareFull { client },
                            ))) => {
                                tracing::debug!(%remote, %client, "too many pending handshakes of the client a forwarding header named; answered 503 and closed");
                                return None;
                            }
                            Err(error) => (class, SortedIo::Ready(Box::new(Err(error))), peer, false),
                        });
                    }
                    Some((class, SortedIo::Pending { tcp, prefix, inspect }, peer, false))
                };
                match ticket.phase(provider::timeout_at::<P, _>(deadline, sort)).await {
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
                .map(|result| result.unwrap_or_else(Err))
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
    pub(super) fn on_sorted(&mut self, sorted: Sorted<P::Stream>) -> Option<Event<P::Stream>> {
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
            ticket,
            deadline,
            ..
        } = sorted;
        if client.ip() != remote.ip() {
            // Charged to the client's share already, when the header naming it was read.
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
                        accept::<P>(shared, tcp, prefix, serve, inspect, None),
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
}
