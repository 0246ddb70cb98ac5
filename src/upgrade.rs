//! The complete libp2p stack over WebSockets: multistream-select negotiates noise, then yamux.

use libp2p_core::{
    muxing::StreamMuxerBox,
    transport::{Boxed, Transport as _},
    upgrade::Version,
};
use libp2p_identity::{Keypair, PeerId};

use crate::{config::Config, error::Error, transport::Transport};

/// The WebSocket transport upgraded with noise (authentication and encryption) and yamux
/// (multiplexing), negotiated by multistream-select, bounded by
/// [`Config::with_upgrade_timeout`], and boxed.
///
/// It plugs into a `Swarm` on any executor. With async-std:
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let keypair = libp2p_identity::Keypair::generate_ed25519();
/// let transport = libp2p_ws::upgraded(&keypair, libp2p_ws::Config::default())?;
/// let behaviour = libp2p::ping::Behaviour::default();
/// let config = libp2p::swarm::Config::with_executor(|f| {
///     async_std::task::spawn(f);
/// });
/// let swarm = libp2p::swarm::Swarm::new(transport, behaviour, keypair.public().to_peer_id(), config);
/// # Ok(()) }
/// ```
///
/// With libp2p's (tokio) `SwarmBuilder`, use [`constructor`].
pub fn upgraded(
    keypair: &Keypair,
    config: Config,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Error> {
    let noise = libp2p_noise::Config::new(keypair)?;
    let timeout = config.upgrade_timeout;
    Ok(Transport::new(config)
        .upgrade(Version::V1Lazy)
        .authenticate(noise)
        .multiplex(libp2p_yamux::Config::default())
        .timeout(timeout)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// The error type `SwarmBuilder::with_other_transport` accepts from a transport constructor.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A transport constructor for libp2p's `SwarmBuilder` (`with_other_transport`), which is how tokio
/// applications (libp2p 0.57's builder is tokio-only) use this transport. The builder's phase types
/// are private, so this is the extension point: a closure that builds [`upgraded`] from the
/// builder's keypair.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let swarm = libp2p::SwarmBuilder::with_new_identity()
///     .with_tokio()
///     .with_other_transport(libp2p_ws::constructor(libp2p_ws::Config::default()))?
///     .with_behaviour(|_| libp2p::ping::Behaviour::default())?
///     .build();
/// # Ok(()) }
/// ```
pub fn constructor(
    config: Config,
) -> impl FnOnce(&Keypair) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BoxError> {
    move |keypair| upgraded(keypair, config).map_err(|e| Box::new(e) as BoxError)
}
