//! The complete libp2p stack over WebSockets: multistream-select negotiates noise, then yamux.
//!
//! Generic over the runtime provider; the per-runtime entry points are
//! `libp2p_ws::async_std::upgraded` / `libp2p_ws::tokio::upgraded` and their `constructor`s.

use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Instant,
};

use either::Either;
use futures::{future::BoxFuture, FutureExt};
use libp2p_core::{
    muxing::StreamMuxerBox,
    transport::{
        timeout::TransportTimeoutError, Boxed, DialOpts, ListenerId, Transport as _,
        TransportError, TransportEvent,
    },
    upgrade::Version,
    Multiaddr,
};
use libp2p_identity::{Keypair, PeerId};

use crate::{
    admission::Handoff,
    config::Config,
    error::{Error, TimeoutStage, UpgradeStep},
    metrics::{Direction, Recorder},
    provider::Provider,
    transport::Transport,
};

/// The WebSocket transport on runtime `P` upgraded with noise (authentication and encryption) and
/// yamux (multiplexing), negotiated by multistream-select, bounded by
/// [`Config::with_upgrade_timeout`], and boxed.
pub(crate) fn upgraded<P: Provider>(
    keypair: &Keypair,
    config: Config,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Error> {
    let noise = libp2p_noise::Config::new(keypair)?;
    let timeout = config.upgrade_timeout;
    let recorder = config.metrics.clone();
    let transport = Transport::<P>::new(config);
    let handoff = transport.hand_off_tickets();
    let inner = transport
        .upgrade(Version::V1Lazy)
        .authenticate(noise)
        .multiplex(libp2p_yamux::Config::default())
        .timeout(timeout)
        // Unwrap the builder's layers, so that our own errors reach the swarm as themselves (each
        // layer of rust-libp2p's wrappers both prints and sources its inner error: a chain
        // printed with `{:#}` showed our message three times).
        .map_err(move |error| match error {
            TransportTimeoutError::Timeout => Error::Timeout {
                stage: TimeoutStage::Upgrade,
                after: timeout,
            }
            .into_io(),
            TransportTimeoutError::TimerError(error) => error,
            // The WebSocket transport's own error.
            TransportTimeoutError::Other(Either::Left(Either::Left(error))) => error.into_io(),
            // The upgrades' errors, kept apart from the transport's and named by step.
            TransportTimeoutError::Other(Either::Left(Either::Right(error))) => Error::Upgrade {
                step: UpgradeStep::Noise,
                source: Box::new(error),
            }
            .into_io(),
            TransportTimeoutError::Other(Either::Right(error)) => Error::Upgrade {
                step: UpgradeStep::Yamux,
                source: Box::new(error),
            }
            .into_io(),
        })
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed();
    Ok(Admitted {
        inner,
        handoff,
        recorder,
    }
    .boxed())
}

/// The upgraded stack with each inbound connection's admission ticket held until noise and yamux
/// are done (or the upgrade fails or is dropped), so pending-handshake limits cover the whole
/// upgrade, not only the HTTP part. The WebSocket transport leaves the ticket in `handoff` within
/// the `poll` that reports the `Incoming` event, which passes up through the builder's layers
/// unchanged; this layer takes it there.
struct Admitted<O> {
    inner: Boxed<O>,
    handoff: Handoff,
    /// Times each complete upgrade (a no-op without metrics).
    recorder: Recorder,
}

/// Records how long `upgrade` (begun now) takes when it succeeds, or how it failed above the
/// transport (noise, yamux, the upgrade timeout, an eviction while the layer held the ticket),
/// with metrics on.
fn timed<O: Send + 'static>(
    recorder: &Recorder,
    direction: Direction,
    addr: &Multiaddr,
    upgrade: BoxFuture<'static, io::Result<O>>,
) -> BoxFuture<'static, io::Result<O>> {
    let kind = match crate::addr::Addr::parse(addr) {
        Ok(addr) if recorder.is_on() => addr.kind(),
        _ => return upgrade,
    };
    let (recorder, start) = (recorder.clone(), Instant::now());
    upgrade
        .inspect(move |result| {
            let error = match result {
                Ok(_) => return recorder.upgraded(direction, kind, start.elapsed()),
                Err(error) => Error::from_io(error),
            };
            // Only what fails above the transport: its own failures were counted below.
            if let Some(
                error @ (Error::Upgrade { .. }
                | Error::Evicted
                | Error::Timeout {
                    stage: TimeoutStage::Upgrade,
                    ..
                }),
            ) = error
            {
                match direction {
                    Direction::Inbound => recorder.inbound_failed(kind, error),
                    Direction::Outbound => recorder.dial_failed(kind, error),
                }
            }
        })
        .boxed()
}

impl<O: Send + 'static> libp2p_core::Transport for Admitted<O> {
    type Output = O;
    type Error = io::Error;
    type ListenerUpgrade = <Boxed<O> as libp2p_core::Transport>::ListenerUpgrade;
    type Dial = <Boxed<O> as libp2p_core::Transport>::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<io::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<io::Error>> {
        let dial = self.inner.dial(addr.clone(), opts)?;
        Ok(timed(&self.recorder, Direction::Outbound, &addr, dial))
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
        let event = ready!(Pin::new(&mut self.inner).poll(cx));
        let TransportEvent::Incoming {
            listener_id,
            upgrade,
            local_addr,
            send_back_addr,
        } = event
        else {
            return Poll::Ready(event);
        };
        let upgrade = match self.handoff.take() {
            Some(ticket) => ticket
                .guard(upgrade)
                .map(|result| result.unwrap_or_else(|error| Err(error.into_io())))
                .boxed(),
            None => upgrade,
        };
        let upgrade = timed(&self.recorder, Direction::Inbound, &local_addr, upgrade);
        Poll::Ready(TransportEvent::Incoming {
            listener_id,
            upgrade,
            local_addr,
            send_back_addr,
        })
    }
}

/// The error type `SwarmBuilder::with_other_transport` accepts from a transport constructor.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a transport constructor for `SwarmBuilder::with_other_transport` returns: the complete
/// stack, boxed, or why it could not be built.
pub type Constructed = Result<Boxed<(PeerId, StreamMuxerBox)>, BoxError>;

/// A transport constructor for libp2p's `SwarmBuilder` (`with_other_transport`): a closure that
/// builds [`upgraded`] from the builder's keypair.
pub(crate) fn constructor<P: Provider>(config: Config) -> impl FnOnce(&Keypair) -> Constructed {
    move |keypair| upgraded::<P>(keypair, config).map_err(|e| Box::new(e) as BoxError)
}

/// [`constructor`] beside the application's other transports (`other`, built from the keypair:
/// QUIC, say), all under one [`Dns`](crate::dns::Dns) layer: `/dnsaddr` resolved for all, `/dns*`
/// for the others, WebSocket addresses passed on by name.
pub(crate) fn constructor_with<P, O, F>(
    config: Config,
    other: F,
) -> impl FnOnce(&Keypair) -> Constructed
where
    P: Provider,
    F: FnOnce(&Keypair) -> Result<O, BoxError>,
    O: libp2p_core::Transport<Output = (PeerId, StreamMuxerBox)> + Send + Unpin + 'static,
    O::Error: std::error::Error + Send + Sync + 'static,
    O::Dial: Send + 'static,
    O::ListenerUpgrade: Send + 'static,
{
    move |keypair| {
        let ours = upgraded::<P>(keypair, config.clone())?;
        let both = ours
            .or_transport(other(keypair)?)
            .map(|output, _| output.into_inner());
        Ok(crate::dns::Dns::<_, P>::new(both, &config).boxed())
    }
}

/// Defines a runtime's public module body: the provider and the `Transport`, `upgraded` and
/// `constructor` that name it.
macro_rules! runtime_module {
    (
        $provider:ty,
        $runtime:literal,
        $stream:ty,
        upgraded: [$(#[$upgraded_doc:meta])*],
        constructor: [$(#[$constructor_doc:meta])*] $(,)?
    ) => {
        pub use $provider as Provider;

        /// The TCP stream of this runtime under each connection.
        pub type TcpStream = $stream;

        #[doc = concat!("The WebSocket transport on ", $runtime, " (without noise and yamux).")]
        pub type Transport = $crate::Transport<Provider>;

        #[doc = concat!(
            "The DNS layer on ", $runtime, " for an application's other transports beside this \
             one (see [`dns::Dns`](crate::dns::Dns)); [`constructor_with`] builds it."
        )]
        pub type Dns<T> = $crate::dns::Dns<T, Provider>;

        #[doc = concat!("An upgraded connection on ", $runtime, ": what [`Transport`] yields.")]
        pub type Output = $crate::Output<TcpStream>;

        #[doc = concat!("The inbound upgrade future of [`Transport`] on ", $runtime, ".")]
        pub type ListenerUpgrade = $crate::ListenerUpgrade<TcpStream>;

        #[doc = concat!("The dial future of [`Transport`] on ", $runtime, ".")]
        pub type Dial = $crate::Dial<TcpStream>;

        #[doc = concat!(
            "The complete stack on ", $runtime, ": WebSocket, then noise and yamux negotiated by \
             multistream-select, bounded by [`Config::with_upgrade_timeout`](crate::Config::with_upgrade_timeout), boxed."
        )]
        $(#[$upgraded_doc])*
        pub fn upgraded(
            keypair: &libp2p_identity::Keypair,
            config: $crate::Config,
        ) -> Result<
            libp2p_core::transport::Boxed<(
                libp2p_identity::PeerId,
                libp2p_core::muxing::StreamMuxerBox,
            )>,
            $crate::Error,
        > {
            $crate::upgrade::upgraded::<Provider>(keypair, config)
        }

        #[doc = concat!(
            "A transport constructor on ", $runtime, " for libp2p's `SwarmBuilder::with_other_transport`: \
             a closure that builds [`upgraded`] from the builder's keypair.\n\n\
             The builder's connection timeout (10 s unless `with_connection_timeout` says \
             otherwise) bounds the same upgrade from outside; the defaults of the handshake and \
             upgrade timeouts (8 s and 9.5 s) fit inside it, so that a stalled handshake fails \
             with this transport's typed error. Find that error in what the swarm reports with \
             [`Error::find`](crate::Error::find)."
        )]
        $(#[$constructor_doc])*
        pub fn constructor(
            config: $crate::Config,
        ) -> impl FnOnce(&libp2p_identity::Keypair) -> $crate::Constructed {
            $crate::upgrade::constructor::<Provider>(config)
        }

        #[doc = concat!(
            "[`constructor`] beside the application's other transports on ", $runtime, ": `other` \
             builds them from the keypair (QUIC, say, with its muxer boxed), and the two go under \
             one [`Dns`] layer, which resolves `/dnsaddr` for all and `/dns*` for the others, and \
             passes WebSocket addresses on by name so that TLS checks the certificate against the \
             name. Use it instead of `SwarmBuilder::with_dns()`, which resolves WebSocket names \
             before this transport sees them (the certificate is then checked against the IP). \
             On tokio, with QUIC:\n\n\
             ```no_run\n\
             # fn main() -> Result<(), libp2p_ws::BoxError> {\n\
             use libp2p::{core::{muxing::StreamMuxerBox, Transport as _}, quic};\n\
             let swarm = libp2p::SwarmBuilder::with_new_identity()\n\
             \x20   .with_tokio()\n\
             \x20   .with_other_transport(libp2p_ws::tokio::constructor_with(\n\
             \x20       libp2p_ws::Config::default(),\n\
             \x20       |key| Ok(quic::tokio::Transport::new(quic::Config::new(key))\n\
             \x20           .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)))),\n\
             \x20   ))?\n\
             \x20   .with_behaviour(|_| libp2p::ping::Behaviour::default())?\n\
             \x20   .build();\n\
             # Ok(()) }\n\
             ```"
        )]
        pub fn constructor_with<O, F>(
            config: $crate::Config,
            other: F,
        ) -> impl FnOnce(&libp2p_identity::Keypair) -> $crate::Constructed
        where
            F: FnOnce(&libp2p_identity::Keypair) -> Result<O, $crate::BoxError>,
            O: libp2p_core::Transport<
                    Output = (libp2p_identity::PeerId, libp2p_core::muxing::StreamMuxerBox),
                > + Send
                + Unpin
                + 'static,
            O::Error: std::error::Error + Send + Sync + 'static,
            O::Dial: Send + 'static,
            O::ListenerUpgrade: Send + 'static,
        {
            $crate::upgrade::constructor_with::<Provider, O, F>(config, other)
        }
    };
}
pub(crate) use runtime_module;
