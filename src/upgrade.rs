//! The complete libp2p stack over WebSockets: multistream-select negotiates noise, then yamux.
//!
//! Generic over the runtime provider; the per-runtime entry points are
//! `libp2p_ws::async_std::upgraded` / `libp2p_ws::tokio::upgraded` and their `constructor`s.

use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use either::Either;
use futures::FutureExt;
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
    admission,
    config::Config,
    error::{Error, TimeoutStage, UpgradeStep},
    provider::Provider,
    transport::{Handoff, Transport},
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
            TransportTimeoutError::Timeout => io::Error::new(
                io::ErrorKind::TimedOut,
                Error::Timeout {
                    stage: TimeoutStage::Upgrade,
                    after: timeout,
                },
            ),
            TransportTimeoutError::TimerError(error) => error,
            // The WebSocket transport's own error.
            TransportTimeoutError::Other(Either::Left(Either::Left(error))) => {
                io::Error::other(error)
            }
            // The upgrades' errors, kept apart from the transport's and named by step.
            TransportTimeoutError::Other(Either::Left(Either::Right(error))) => {
                io::Error::other(Error::Upgrade {
                    step: UpgradeStep::Noise,
                    source: Box::new(error),
                })
            }
            TransportTimeoutError::Other(Either::Right(error)) => {
                io::Error::other(Error::Upgrade {
                    step: UpgradeStep::Yamux,
                    source: Box::new(error),
                })
            }
        })
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed();
    Ok(Admitted { inner, handoff }.boxed())
}

/// The upgraded stack with each inbound connection's admission ticket held until noise and yamux
/// are done (or the upgrade fails or is dropped), so pending-handshake limits cover the whole
/// upgrade, not only the HTTP part. The WebSocket transport leaves the ticket in `handoff` within
/// the `poll` that reports the `Incoming` event, which passes up through the builder's layers
/// unchanged; this layer takes it there.
struct Admitted<O> {
    inner: Boxed<O>,
    handoff: Handoff,
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
        self.inner.dial(addr, opts)
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
        let ticket = self
            .handoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let upgrade = match ticket {
            Some(ticket) => ticket
                .guard(upgrade)
                .map(|result| result.unwrap_or_else(|error| Err(admission::io_error(error))))
                .boxed(),
            None => upgrade,
        };
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

/// A transport constructor for libp2p's `SwarmBuilder` (`with_other_transport`): a closure that
/// builds [`upgraded`] from the builder's keypair.
pub(crate) fn constructor<P: Provider>(
    config: Config,
) -> impl FnOnce(&Keypair) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BoxError> {
    move |keypair| upgraded::<P>(keypair, config).map_err(|e| Box::new(e) as BoxError)
}

/// Defines a runtime's public module body: the provider and the `Transport`, `upgraded` and
/// `constructor` that name it.
macro_rules! runtime_module {
    ($provider:ty, $runtime:literal, $stream:ty) => {
        pub use $provider as Provider;

        /// The TCP stream of this runtime under each connection.
        pub type TcpStream = $stream;

        #[doc = concat!("The WebSocket transport on ", $runtime, " (without noise and yamux).")]
        pub type Transport = $crate::Transport<Provider>;

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
             a closure that builds [`upgraded`] from the builder's keypair."
        )]
        pub fn constructor(
            config: $crate::Config,
        ) -> impl FnOnce(
            &libp2p_identity::Keypair,
        ) -> Result<
            libp2p_core::transport::Boxed<(
                libp2p_identity::PeerId,
                libp2p_core::muxing::StreamMuxerBox,
            )>,
            $crate::BoxError,
        > {
            $crate::upgrade::constructor::<Provider>(config)
        }
    };
}
pub(crate) use runtime_module;
