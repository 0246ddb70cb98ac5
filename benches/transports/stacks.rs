//! The stacks under comparison ([`Stack`]), the layers measured on each ([`Layer`]: the full stack,
//! noise alone, the bare transport), what the dialer asks of a stream ([`Mode`]), and the
//! transports that build each stack on either side of a pair (with the certificates of the wss
//! stack, [`Env`]).

use std::time::Duration;

use anyhow::Result;
use futures::{AsyncRead, AsyncWrite};
use libp2p::{
    core::{
        muxing::StreamMuxerBox,
        transport::Boxed,
        upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo, Version},
        ConnectedPoint, Transport,
    },
    identity::Keypair,
    PeerId,
};

use crate::{async_std_tcp::AsyncStdTcp, runtime::Rt};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stack {
    /// libp2p-ws, plain `/ws`.
    Ws,
    /// libp2p-ws, `/tls/ws`.
    Wss,
    /// libp2p-ws on its tokio backend (`libp2p_ws::tokio`), plain `/ws`, on a tokio
    /// current-thread runtime.
    WsTokio,
    /// rust-libp2p's `libp2p::websocket` over `libp2p::tcp` (tokio).
    Websocket,
    /// rust-libp2p's `libp2p::tcp` (tokio).
    Tcp,
    /// async-std's TcpStream (the socket and reactor libp2p-ws runs on), bare or with noise + yamux
    /// from rust-libp2p: the runtime baseline, TCP on async-io instead of tokio.
    TcpAsyncStd,
    /// libp2p-ws's plain `/tcp` on its tokio backend (`libp2p_ws::tokio::upgraded` dialing a
    /// `/tcp` address), on a tokio current-thread runtime: beside libp2p-tcp.
    TcpOurs,
    /// libp2p-ws's plain `/tcp` on async-std (`libp2p_ws::async_std::upgraded`).
    TcpOursAsyncStd,
    /// libp2p-ws tokio, plain `/ws` on a shared port: the listener listens on `/tcp/0`, then on
    /// `/tcp/<that port>/ws` (one socket, each connection classified by its first bytes); the
    /// dialer dials the `/ws` address. Against `WsTokio` (a `/ws` listener alone on its port).
    WsShared,
    /// libp2p-ws tokio, plain `/ws` like `WsTokio`, with metrics on (`Config::with_metrics`):
    /// against `WsTokio`, the cost of counting.
    Metrics,
}

impl Stack {
    pub(crate) fn id(self) -> &'static str {
        match self {
            Stack::Ws => "ws",
            Stack::Wss => "wss",
            Stack::WsTokio => "ws-tokio",
            Stack::Websocket => "websocket",
            Stack::Tcp => "tcp",
            Stack::TcpAsyncStd => "tcp-async-std",
            Stack::TcpOurs => "tcp-ours",
            Stack::TcpOursAsyncStd => "tcp-ours-async-std",
            Stack::WsShared => "ws-shared",
            Stack::Metrics => "metrics",
        }
    }

    /// The stacks of the full-stack section (and of the instruction counts), in report order:
    /// the one list a new stack is added to.
    pub(crate) const FULL: [Stack; 9] = [
        Stack::Ws,
        Stack::Wss,
        Stack::WsTokio,
        Stack::Websocket,
        Stack::Tcp,
        Stack::TcpAsyncStd,
        Stack::TcpOurs,
        Stack::TcpOursAsyncStd,
        Stack::Metrics,
    ];

    pub(crate) fn from_id(id: &str) -> Option<Stack> {
        Stack::FULL
            .into_iter()
            .chain([Stack::WsShared])
            .find(|s| s.id() == id)
    }

    pub(crate) fn runtime(self) -> Rt {
        match self {
            Stack::Ws | Stack::Wss | Stack::TcpAsyncStd | Stack::TcpOursAsyncStd => Rt::AsyncIo,
            Stack::WsTokio
            | Stack::Websocket
            | Stack::Tcp
            | Stack::TcpOurs
            | Stack::WsShared
            | Stack::Metrics => Rt::Tokio,
        }
    }

    pub(crate) fn listen_addr(self) -> &'static str {
        match self {
            Stack::Ws | Stack::WsTokio | Stack::Websocket | Stack::Metrics => {
                "/ip4/127.0.0.1/tcp/0/ws"
            }
            Stack::Wss => "/ip4/127.0.0.1/tcp/0/tls/ws",
            Stack::Tcp | Stack::TcpAsyncStd | Stack::TcpOurs | Stack::TcpOursAsyncStd => {
                "/ip4/127.0.0.1/tcp/0"
            }
            // The first of its two listen addresses (see `listen_shared`).
            Stack::WsShared => "/ip4/127.0.0.1/tcp/0",
        }
    }

    pub(crate) fn label(self, layer: Layer) -> &'static str {
        match (self, layer) {
            (Stack::Ws, Layer::Full) => "libp2p-ws (ws+noise+yamux)",
            (Stack::Wss, Layer::Full) => "libp2p-ws wss (tls+ws+noise+yamux)",
            (Stack::WsTokio, Layer::Full) => "libp2p-ws tokio (ws+noise+yamux)",
            (Stack::Websocket, Layer::Full) => "libp2p-websocket (ws+noise+yamux)",
            (Stack::Tcp, Layer::Full) => "libp2p-tcp (tcp+noise+yamux)",
            (Stack::Ws, Layer::Noise) => "libp2p-ws (ws+noise)",
            (Stack::Websocket, Layer::Noise) => "libp2p-websocket (ws+noise)",
            (Stack::Tcp, Layer::Noise) => "libp2p-tcp (tcp+noise)",
            (Stack::Ws, Layer::Raw) => "libp2p-ws (ws only)",
            (Stack::Wss, Layer::Raw) => "libp2p-ws wss (tls+ws only)",
            (Stack::Websocket, Layer::Raw) => "libp2p-websocket (ws only)",
            (Stack::Tcp, Layer::Raw) => "raw tcp (tokio, libp2p-tcp)",
            (Stack::TcpAsyncStd, Layer::Full) => "tcp on async-std (tcp+noise+yamux)",
            (Stack::TcpAsyncStd, Layer::Raw) => "raw tcp (async-std)",
            (Stack::TcpOurs, Layer::Full) => "libp2p-ws tokio /tcp (tcp+noise+yamux)",
            (Stack::TcpOursAsyncStd, Layer::Full) => {
                "libp2p-ws /tcp on async-std (tcp+noise+yamux)"
            }
            (Stack::WsShared, Layer::Full) => "libp2p-ws tokio /ws, port shared with /tcp",
            (Stack::Metrics, Layer::Full) => "libp2p-ws tokio with metrics (ws+noise+yamux)",
            _ => "?",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layer {
    /// noise + yamux on top.
    Full,
    /// noise only, no multiplexer.
    Noise,
    /// The bare transport.
    Raw,
}

impl Layer {
    pub(crate) fn id(self) -> &'static str {
        match self {
            Layer::Full => "full",
            Layer::Noise => "noise",
            Layer::Raw => "raw",
        }
    }
}

/// What the dialer asks for with the first byte of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    DialerUploads = 1,
    ListenerUploads = 2,
    Echo = 3,
}

impl Mode {
    pub(crate) fn id(self) -> &'static str {
        match self {
            Mode::DialerUploads => "dialer_uploads",
            Mode::ListenerUploads => "listener_uploads",
            Mode::Echo => "echo",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Listener,
    Dialer,
}

/// A byte stream: a bare or noise-encrypted connection, or a yamux stream.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
pub(crate) type RawStream = Box<dyn Io>;
pub(crate) type Muxed = (PeerId, StreamMuxerBox);

/// Certificates for the wss stack.
pub(crate) struct Env {
    tls_listener: libp2p_ws::Config,
    tls_dialer: libp2p_ws::Config,
}

impl Env {
    pub(crate) fn new() -> Result<Env> {
        let ca = libp2p_ws::tls::dev::TestCa::new("libp2p-ws bench CA")?;
        let (chain, key) = ca.issue(&["localhost", "127.0.0.1"])?;
        let certificate = libp2p_ws::ServerCertificate::from_der(chain, key)?;
        Ok(Env {
            tls_listener: libp2p_ws::Config::default()
                .with_tls(libp2p_ws::TlsConfig::new().with_server_certificate(&certificate)),
            tls_dialer: libp2p_ws::Config::default()
                .with_tls(libp2p_ws::TlsConfig::new().add_root_der(ca.certificate())),
        })
    }

    pub(crate) fn ws_config(&self, stack: Stack, side: Side) -> libp2p_ws::Config {
        match (stack, side) {
            (Stack::Wss, Side::Listener) => self.tls_listener.clone(),
            (Stack::Wss, Side::Dialer) => self.tls_dialer.clone(),
            _ => libp2p_ws::Config::default(),
        }
    }
}

pub(crate) fn tokio_tcp() -> libp2p::tcp::tokio::Transport {
    libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default().nodelay(true))
}

/// rust-libp2p's usual stack over `transport`, upgraded like `libp2p_ws::upgraded` does it.
pub(crate) fn rust_libp2p_upgraded<T>(transport: T, keypair: &Keypair) -> Boxed<Muxed>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    transport
        .upgrade(Version::V1Lazy)
        .authenticate(libp2p::noise::Config::new(keypair).expect("noise config"))
        .multiplex(libp2p::yamux::Config::default())
        .timeout(Duration::from_secs(20))
        .boxed()
}

/// noise directly on the bare connection (no multistream-select, no multiplexer).
pub(crate) fn noise_only<T>(transport: T, keypair: &Keypair) -> Boxed<RawStream>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    let noise = libp2p::noise::Config::new(keypair).expect("noise config");
    transport
        .and_then(move |io, endpoint: ConnectedPoint| {
            let noise = noise.clone();
            async move {
                let info = noise
                    .protocol_info()
                    .next()
                    .expect("noise has a protocol name");
                let (_, out) = if endpoint.is_dialer() {
                    noise.upgrade_outbound(io, info).await?
                } else {
                    noise.upgrade_inbound(io, info).await?
                };
                Ok::<_, libp2p::noise::Error>(Box::new(out) as RawStream)
            }
        })
        .boxed()
}

pub(crate) fn full_transport(stack: Stack, side: Side, env: Option<&Env>) -> Boxed<Muxed> {
    let keypair = Keypair::generate_ed25519();
    match stack {
        Stack::Ws | Stack::Wss => {
            let config = env.map_or_else(libp2p_ws::Config::default, |e| e.ws_config(stack, side));
            libp2p_ws::async_std::upgraded(&keypair, config).expect("libp2p-ws transport")
        }
        Stack::WsTokio | Stack::TcpOurs | Stack::WsShared => {
            libp2p_ws::tokio::upgraded(&keypair, libp2p_ws::Config::default())
                .expect("libp2p-ws transport")
        }
        Stack::TcpOursAsyncStd => {
            libp2p_ws::async_std::upgraded(&keypair, libp2p_ws::Config::default())
                .expect("libp2p-ws transport")
        }
        Stack::Metrics => {
            // The registry is dropped; the families it held count on (what is measured is the
            // counting, not a scrape).
            let mut registry = prometheus_client::registry::Registry::default();
            let config = libp2p_ws::Config::default().with_metrics(&mut registry);
            libp2p_ws::tokio::upgraded(&keypair, config).expect("libp2p-ws transport")
        }
        Stack::Websocket => {
            rust_libp2p_upgraded(libp2p::websocket::Config::new(tokio_tcp()), &keypair)
        }
        Stack::Tcp => rust_libp2p_upgraded(tokio_tcp(), &keypair),
        Stack::TcpAsyncStd => rust_libp2p_upgraded(AsyncStdTcp::default(), &keypair),
    }
}

pub(crate) fn bare_transport(
    stack: Stack,
    layer: Layer,
    side: Side,
    env: &Env,
) -> Boxed<RawStream> {
    let keypair = Keypair::generate_ed25519();
    let boxed = |c, _| Box::new(c) as RawStream;
    match (stack, layer) {
        (Stack::Ws | Stack::Wss, Layer::Raw) => {
            libp2p_ws::async_std::Transport::new(env.ws_config(stack, side))
                .map(boxed)
                .boxed()
        }
        (Stack::Ws | Stack::Wss, Layer::Noise) => noise_only(
            libp2p_ws::async_std::Transport::new(env.ws_config(stack, side)),
            &keypair,
        ),
        (Stack::Websocket, Layer::Raw) => libp2p::websocket::Config::new(tokio_tcp())
            .map(|c, _| Box::new(c) as RawStream)
            .boxed(),
        (Stack::Websocket, Layer::Noise) => {
            noise_only(libp2p::websocket::Config::new(tokio_tcp()), &keypair)
        }
        (Stack::Tcp, Layer::Raw) => tokio_tcp().map(|c, _| Box::new(c) as RawStream).boxed(),
        (Stack::Tcp, Layer::Noise) => noise_only(tokio_tcp(), &keypair),
        (Stack::TcpAsyncStd, Layer::Raw) => AsyncStdTcp::default().boxed(),
        _ => unreachable!("{stack:?} {layer:?}"),
    }
}
