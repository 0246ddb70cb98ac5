//! A WebSocket transport for rust-libp2p, built to the
//! [libp2p WebSockets specification](https://github.com/libp2p/specs/blob/master/websockets/README.md),
//! native on **async-std** and on **tokio**, with soketto for the handshake and frame headers and
//! futures-rustls for TLS.
//!
//! - Pick the runtime where you build the transport: `libp2p_ws::async_std` (feature `async-std`,
//!   on by default) or `libp2p_ws::tokio` (feature `tokio`; with `default-features = false` the
//!   build has no async-std at all). Each has `upgraded` (the complete stack: WebSocket, then
//!   noise and yamux negotiated by multistream-select, for `Swarm::new`), `constructor` (the same
//!   for libp2p's `SwarmBuilder::with_other_transport`) and `Transport`.
//! - [`Transport`] is the bare WebSocket transport, generic over the runtime [`provider`],
//!   yielding [`Connection`]s: byte streams carried in binary frames.
//! - [`Config`] holds every limit, timeout and policy with documented defaults; [`TlsConfig`] the
//!   certificates.
//!
//! # Layers
//!
//! ```text
//! Multiaddr --addr (pure)--> DNS, TCP connect / accept (the runtime provider)
//!   --> TLS (futures-rustls; /tls/ws, /wss) --> HTTP upgrade (soketto, bounded reads)
//!   --> Connection: WebSocket binary frames as a byte stream
//!         (a stream adapter over the sans-IO RFC 6455 core: no IO, runtime or clock inside)
//!   --> multistream-select --> noise --> multistream-select --> yamux   (`upgraded`, `constructor`)
//! ```
//!
//! Errors are typed per layer ([`Error`], [`TlsError`], [`HandshakeError`], [`FrameError`] with
//! [`ProtocolViolation`]); each says its own part and leaves the cause to `source()`.
//! Test and tooling hooks (message-level API, the handshake over any IO, the sans-IO frame core)
//! are behind the feature `unstable-internals`, in `libp2p_ws::unstable`, with no stability
//! promise.
//! Prometheus metrics (prometheus-client 0.25, as libp2p-metrics 0.18) are behind the feature
//! `metrics`: `Config::with_metrics` (the README's "Metrics" section lists them).
//!
//! Listeners only accept sockets and report addresses; every per-connection step runs inside the
//! connection's own future, bounded by the handshake timeout (and, for the complete stack, the
//! upgrade timeout), and counted by the listener's admission limits until it is done.
//!
//! # Cancel safety
//!
//! - Dropping a dial or inbound-upgrade future at any point closes its socket and frees its
//!   admission slot; nothing keeps running in the background.
//! - [`Connection`] follows the `AsyncRead`/`AsyncWrite` contract: a `poll_read` or `poll_write`
//!   that returns `Pending` has consumed nothing, so cancelling a `read` or `write` future loses no
//!   data. Bytes accepted by `poll_write` are buffered and sent by a later `poll_flush` or
//!   `poll_close`; dropping the connection without either discards them.
//! - `close` may be polled again after a cancelled attempt: it resumes where it stopped, and its
//!   timeout (`Config::with_close_timeout`) counts from the first call.
//!
//! # Addresses
//!
//! `/ip4|ip6|dns|dns4|dns6/<host>[/tcp/<port>]/{ws | wss | tls/ws | tls/sni/<name>/ws}[/http-path/<p>][/p2p/<id>]`.
//! An omitted port is 443 for TLS and 80 for plain; see [`addr`] for the whole grammar and the
//! canonical form listen addresses are reported in. DNS names are resolved inside the transport, so
//! that the name is kept for TLS (SNI and verification) and the HTTP `Host` header: do **not** wrap
//! this transport in `libp2p-dns`, which would resolve first and lose the name.
//!
//! # Security rules
//!
//! Plain `/ws` listeners are refused on addresses other than loopback unless
//! [`Config::danger_insecure_listen`] opts out (the spec requires TLS for anything a browser may
//! reach). noise still encrypts everything inside TLS, as the spec asks.
//!
//! # Example: a tokio swarm
//!
//! libp2p's `SwarmBuilder` (tokio) with this transport: one swarm listens on `/ws`, another dials
//! it and pings. async-std applications use `libp2p_ws::async_std::upgraded` (feature `async-std`) with
//! `Swarm::new` (see there).
//!
//! ```
//! use futures::StreamExt;
//! use libp2p::{ping, swarm::SwarmEvent};
//!
//! # fn main() -> Result<(), libp2p_ws::BoxError> {
//! let new_swarm = || -> Result<_, libp2p_ws::BoxError> {
//!     Ok(libp2p::SwarmBuilder::with_new_identity()
//!         .with_tokio()
//!         .with_other_transport(libp2p_ws::tokio::constructor(libp2p_ws::Config::default()))?
//!         .with_behaviour(|_| ping::Behaviour::default())?
//!         .build())
//! };
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let (mut listener, mut dialer) = (new_swarm()?, new_swarm()?);
//!     listener.listen_on("/ip4/127.0.0.1/tcp/0/ws".parse()?)?;
//!     let addr = loop {
//!         if let SwarmEvent::NewListenAddr { address, .. } = listener.select_next_some().await {
//!             break address;
//!         }
//!     };
//!     dialer.dial(addr)?;
//!     loop {
//!         tokio::select! {
//!             _ = listener.select_next_some() => {}
//!             event = dialer.select_next_some() => match event {
//!                 SwarmEvent::Behaviour(ping::Event { result: Ok(rtt), .. }) => {
//!                     println!("ping {rtt:?}");
//!                     break;
//!                 }
//!                 SwarmEvent::OutgoingConnectionError { error, .. } => return Err(error.into()),
//!                 _ => {}
//!             }
//!         }
//!     }
//!     Ok(())
//! })
//! # }
//! ```
//!
//! # Example: the bare transport
//!
//! Two transports in one process: one listens, the other dials, and bytes flow through the upgraded
//! connection.
//!
//! ```
//! use futures::{future::poll_fn, AsyncReadExt, AsyncWriteExt};
//! use libp2p_core::{
//!     transport::{DialOpts, ListenerId, PortUse, TransportEvent},
//!     Endpoint, Transport as _,
//! };
//! use std::pin::Pin;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! async_std::task::block_on(async {
//!     let mut listener = libp2p_ws::async_std::Transport::new(libp2p_ws::Config::default());
//!     listener.listen_on(ListenerId::next(), "/ip4/127.0.0.1/tcp/0/ws".parse()?)?;
//!     let addr = loop {
//!         match poll_fn(|cx| Pin::new(&mut listener).poll(cx)).await {
//!             TransportEvent::NewAddress { listen_addr, .. } => break listen_addr,
//!             _ => continue,
//!         }
//!     };
//!
//!     let mut dialer = libp2p_ws::async_std::Transport::new(libp2p_ws::Config::default());
//!     let opts = DialOpts { role: Endpoint::Dialer, port_use: PortUse::New };
//!     let dial = async_std::task::spawn(dialer.dial(addr, opts)?);
//!     let upgrade = loop {
//!         match poll_fn(|cx| Pin::new(&mut listener).poll(cx)).await {
//!             TransportEvent::Incoming { upgrade, .. } => break upgrade,
//!             _ => continue,
//!         }
//!     };
//!     let (mut server, mut client) = (upgrade.await?, dial.await?);
//!
//!     client.write_all(b"hello").await?;
//!     client.flush().await?;
//!     let mut buf = [0u8; 5];
//!     server.read_exact(&mut buf).await?;
//!     assert_eq!(&buf, b"hello");
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! # }
//! ```

// `deny`, not `forbid`: the one exception is `proto::mask`'s AVX2 path (runtime-detected).
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

#[cfg(not(any(feature = "async-std", feature = "tokio")))]
compile_error!(
    "libp2p-ws needs a runtime: enable the `async-std` or the `tokio` feature (or both)"
);

// The README's snippets compile as doc tests (`cargo test --doc`), with the dev-dependencies
// (libp2p, both runtimes).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Declares an item `pub` with the feature `unstable-internals` (for fuzz targets and tools, no
/// stability promise) and `pub(crate)` without it: wire internals that users do not need.
macro_rules! internal {
    ($(#[$meta:meta])* $kind:ident $($rest:tt)*) => {
        #[cfg(feature = "unstable-internals")]
        $(#[$meta])* pub $kind $($rest)*
        #[cfg(not(feature = "unstable-internals"))]
        $(#[$meta])* pub(crate) $kind $($rest)*
    };
}

#[cfg(feature = "acme")]
pub mod acme;
pub mod addr;
mod admission;
pub mod classify;
mod config;
pub mod dns;
mod error;
pub mod forwarded;
mod framed;
mod handshake;
pub mod http;
mod metrics;
mod proto;
pub mod provider;
pub mod proxy;
#[path = "tls.rs"]
mod tls_config;
mod tls_source;
/// Throwaway certificates (self-signed, or a test CA and leaves) for tests and local development:
/// `tls::dev` (feature `rcgen`). The TLS configuration itself is [`TlsConfig`] and
/// [`ServerCertificate`].
pub mod tls {
    #[cfg(feature = "rcgen")]
    pub use crate::tls_config::dev;
}
mod transport;
mod upgrade;

pub use config::{
    Config, FrameLimits, KeepAlive, DEFAULT_CLOSE_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IPV4_SHARE_PREFIX, DEFAULT_IPV6_SHARE_PREFIX, DEFAULT_KEEP_ALIVE,
    DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_HEAD_SIZE, DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_PENDING_HANDSHAKES, DEFAULT_MAX_PENDING_HANDSHAKES_PER_IP,
    DEFAULT_READ_BUFFER_SIZE, DEFAULT_UPGRADE_TIMEOUT, DEFAULT_WRITE_BUFFER_SIZE,
    MAX_HEAD_SIZE_LIMIT,
};
pub use error::{
    Error, FrameError, HandshakeError, ProtocolViolation, Report, SharedIoError, TimeoutStage,
    TlsError, UpgradeStep, UpgradeViolation,
};
pub use framed::Connection;
pub use proto::Role;
pub use tls_config::{ServerCertificate, TlsConfig};
pub use tls_source::{Certificate, CertificateSource, ClientHelloInfo};
pub use transport::{Dial, ListenerUpgrade, Output, Socket, TcpConnection, Transport};
pub use upgrade::{BoxError, Constructed};

/// The transport on async-std (feature `async-std`, on by default): async-std's sockets on
/// async-io's reactor. Use [`upgraded`](crate::async_std::upgraded) with `Swarm::new`.
#[cfg(feature = "async-std")]
pub mod async_std {
    crate::upgrade::runtime_module!(
        crate::provider::async_std::AsyncStd,
        "async-std",
        ::async_std::net::TcpStream,
        upgraded: [
            /// A ping node with `Swarm::new` on async-std:
            ///
            /// ```
            /// use futures::StreamExt;
            /// use libp2p::{ping, swarm::SwarmEvent, Swarm};
            ///
            /// # fn main() -> Result<(), libp2p_ws::BoxError> {
            /// async_std::task::block_on(async {
            ///     let keypair = libp2p::identity::Keypair::generate_ed25519();
            ///     let transport = libp2p_ws::async_std::upgraded(&keypair, libp2p_ws::Config::default())?;
            ///     let config = libp2p::swarm::Config::with_executor(|f| {
            ///         async_std::task::spawn(f);
            ///     });
            ///     let peer_id = keypair.public().to_peer_id();
            ///     let mut swarm = Swarm::new(transport, ping::Behaviour::default(), peer_id, config);
            ///     swarm.listen_on("/ip4/127.0.0.1/tcp/0/ws".parse()?)?;
            ///     loop {
            ///         if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            ///             println!("listening on {address}/p2p/{peer_id}");
            ///             break;
            ///         }
            ///     }
            ///     Ok(())
            /// })
            /// # }
            /// ```
        ],
        constructor: [],
    );
}

/// The transport on tokio (feature `tokio`): tokio's sockets and timers, nothing of async-std.
/// Use [`constructor`](crate::tokio::constructor) with libp2p's `SwarmBuilder`.
#[cfg(feature = "tokio")]
pub mod tokio {
    crate::upgrade::runtime_module!(
        crate::provider::tokio::Tokio,
        "tokio",
        crate::provider::tokio::TcpStream,
        upgraded: [],
        constructor: [
            /// A ping node with libp2p's `SwarmBuilder` on tokio:
            ///
            /// ```
            /// use futures::StreamExt;
            /// use libp2p::{ping, swarm::SwarmEvent};
            ///
            /// # fn main() -> Result<(), libp2p_ws::BoxError> {
            /// tokio::runtime::Runtime::new()?.block_on(async {
            ///     let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            ///         .with_tokio()
            ///         .with_other_transport(libp2p_ws::tokio::constructor(libp2p_ws::Config::default()))?
            ///         .with_behaviour(|_| ping::Behaviour::default())?
            ///         .build();
            ///     swarm.listen_on("/ip4/127.0.0.1/tcp/0/ws".parse()?)?;
            ///     loop {
            ///         if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            ///             println!("listening on {address}/p2p/{}", swarm.local_peer_id());
            ///             break;
            ///         }
            ///     }
            ///     Ok(())
            /// })
            /// # }
            /// ```
        ],
    );
}

/// Hooks for fuzzing, conformance testing and tools, with **no stability promise** (feature
/// `unstable-internals`): the HTTP upgrade over any `AsyncRead + AsyncWrite` (with bounded reads)
/// and request-target decoding, message-level reads and writes on a [`Connection`]
/// ([`Connection::poll_read_message`], [`Connection::poll_send_message`]), masking, and the
/// sans-IO frame core for fuzzing it without a socket.
#[cfg(feature = "unstable-internals")]
pub mod unstable {
    pub use crate::framed::MessageChunk;
    pub use crate::handshake::{accept, connect, decode_target};
    pub use crate::proto::{apply_mask, fuzz::FrameCore};
}
