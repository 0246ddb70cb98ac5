//! Shared harness for the integration tests: real sockets on 127.0.0.1, every wait bounded.
#![allow(dead_code)]

pub mod raw;
use std::{future::Future, pin::Pin, time::Duration};

use futures::future::poll_fn;
use libp2p::{
    core::{
        transport::{DialOpts, ListenerId, PortUse, TransportEvent},
        Endpoint, Multiaddr, Transport as _,
    },
    identity::Keypair,
    ping,
    swarm::{Swarm, SwarmEvent},
};
use libp2p_ws::{Config, Output, Transport};

/// `len` pseudo-random bytes from `seed` (xorshift): payloads whose corruption or reordering shows.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Polls `transport` on a background task, handing every incoming upgrade to `on_incoming`, until
/// the returned sender is dropped.
pub fn drive_listener<T>(
    mut transport: T,
    mut on_incoming: impl FnMut(T::ListenerUpgrade) + Send + 'static,
) -> futures::channel::oneshot::Sender<()>
where
    T: libp2p::core::Transport + Unpin + Send + 'static,
    T::ListenerUpgrade: Send,
    T::Error: Send,
{
    use futures::FutureExt as _;
    use std::task::Poll;
    let (stop, mut stop_rx) = futures::channel::oneshot::channel::<()>();
    async_std::task::spawn(async move {
        poll_fn(|cx| loop {
            if stop_rx.poll_unpin(cx).is_ready() {
                return Poll::Ready(());
            }
            match Pin::new(&mut transport).poll(cx) {
                Poll::Ready(TransportEvent::Incoming { upgrade, .. }) => on_incoming(upgrade),
                Poll::Ready(_) => {}
                Poll::Pending => return Poll::Pending,
            }
        })
        .await
    });
    stop
}

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

/// Runs `future` on async-std with the [`WAIT`] bound; panics (fails the test) on timeout.
pub fn run<F: Future>(future: F) -> F::Output {
    init_logging();
    async_std::task::block_on(within(WAIT, future))
}

/// Logs to stderr when RUST_LOG is set.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Awaits `future` for at most `limit`; panics (fails the test) on timeout.
pub async fn within<F: Future>(limit: Duration, future: F) -> F::Output {
    async_std::future::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?}"))
}

pub fn dial_opts() -> DialOpts {
    DialOpts {
        role: Endpoint::Dialer,
        port_use: PortUse::New,
    }
}

/// The next event of a bare transport.
pub async fn next_event(
    transport: &mut Transport,
) -> TransportEvent<libp2p_ws::ListenerUpgrade, libp2p_ws::Error> {
    poll_fn(|cx| Pin::new(&mut *transport).poll(cx)).await
}

/// Listens on `addr` and returns the listener id and the first address reported.
pub async fn listen(transport: &mut Transport, addr: &str) -> (ListenerId, Multiaddr) {
    let id = ListenerId::next();
    transport
        .listen_on(id, addr.parse().expect("valid multiaddr"))
        .expect("listen_on succeeds");
    loop {
        if let TransportEvent::NewAddress { listen_addr, .. } = next_event(transport).await {
            return (id, listen_addr);
        }
    }
}

/// A listener on `listen_addr` and a dialer, connected: returns (server side, client side).
pub async fn connected_pair(
    server_config: Config,
    client_config: Config,
    listen_addr: &str,
) -> (Output, Output) {
    let mut listener = Transport::new(server_config);
    let (_, addr) = listen(&mut listener, listen_addr).await;
    let mut dialer = Transport::new(client_config);
    let dial = async_std::task::spawn(dialer.dial(addr, dial_opts()).expect("dial accepted"));
    let upgrade = loop {
        if let TransportEvent::Incoming { upgrade, .. } = next_event(&mut listener).await {
            break upgrade;
        }
    };
    let server = upgrade.await.expect("server side upgrades");
    let client = dial.await.expect("client side upgrades");
    (server, client)
}

/// A ping swarm on async-std over the full libp2p-ws stack (noise + yamux).
pub fn ping_swarm(config: Config) -> Swarm<ping::Behaviour> {
    let keypair = Keypair::generate_ed25519();
    let peer_id = keypair.public().to_peer_id();
    let transport = libp2p_ws::upgraded(&keypair, config).expect("transport builds");
    let behaviour =
        ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(200)));
    let swarm_config = libp2p::swarm::Config::with_executor(|f| {
        async_std::task::spawn(f);
    })
    .with_idle_connection_timeout(Duration::from_secs(30));
    Swarm::new(transport, behaviour, peer_id, swarm_config)
}

/// Waits for a swarm's first listen address.
pub async fn first_listen_addr<B: libp2p::swarm::NetworkBehaviour>(
    swarm: &mut Swarm<B>,
) -> Multiaddr {
    use futures::StreamExt;
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

/// Drives `listener` and `dialer` until the dialer has seen a successful ping; returns the pinged
/// peer. A failed dial or ping is returned as the error text.
pub async fn ping_once(
    listener: &mut Swarm<ping::Behaviour>,
    dialer: &mut Swarm<ping::Behaviour>,
    addr: Multiaddr,
) -> Result<libp2p::PeerId, String> {
    use futures::StreamExt;
    dialer.dial(addr).map_err(|e| e.to_string())?;
    loop {
        futures::select! {
            _ = listener.select_next_some() => {}
            event = dialer.select_next_some() => match event {
                SwarmEvent::Behaviour(ping::Event { peer, result: Ok(_), .. }) => return Ok(peer),
                SwarmEvent::Behaviour(ping::Event { result: Err(e), .. }) => return Err(e.to_string()),
                SwarmEvent::OutgoingConnectionError { error, .. } => return Err(format!("{error:?}")),
                _ => {}
            }
        }
    }
}

/// Drives a muxer in a background task; hands out outbound streams on request and inbound streams
/// as they arrive.
pub struct Muxer {
    open: futures::channel::mpsc::UnboundedSender<
        futures::channel::oneshot::Sender<std::io::Result<libp2p::core::muxing::SubstreamBox>>,
    >,
    /// Streams the remote opened.
    pub inbound: futures::channel::mpsc::UnboundedReceiver<libp2p::core::muxing::SubstreamBox>,
}

impl Muxer {
    pub fn spawn(muxer: libp2p::core::muxing::StreamMuxerBox) -> Self {
        Self::spawn_when_ready(async move { muxer })
    }

    /// Like [`Muxer::spawn`], for a muxer that is still being negotiated (the listener side of a
    /// lazy multistream-select negotiation completes only when the dialer first sends).
    pub fn spawn_when_ready(
        muxer: impl Future<Output = libp2p::core::muxing::StreamMuxerBox> + Send + 'static,
    ) -> Self {
        use futures::{channel::mpsc, StreamExt};
        use libp2p::core::muxing::StreamMuxerExt;
        use std::task::Poll;
        let (open, mut open_rx) = mpsc::unbounded::<
            futures::channel::oneshot::Sender<std::io::Result<libp2p::core::muxing::SubstreamBox>>,
        >();
        let (inbound_tx, inbound) = mpsc::unbounded();
        async_std::task::spawn(async move {
            let mut muxer = muxer.await;
            let mut pending_open = None;
            poll_fn(|cx| loop {
                match muxer.poll_unpin(cx) {
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
                match muxer.poll_inbound_unpin(cx) {
                    Poll::Ready(Ok(stream)) => {
                        let _ = inbound_tx.unbounded_send(stream);
                        continue;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
                if pending_open.is_none() {
                    match open_rx.poll_next_unpin(cx) {
                        Poll::Ready(Some(reply)) => {
                            pending_open = Some(reply);
                            continue;
                        }
                        Poll::Ready(None) | Poll::Pending => {}
                    }
                }
                if pending_open.is_some() {
                    match muxer.poll_outbound_unpin(cx) {
                        Poll::Ready(result) => {
                            if let Some(reply) = pending_open.take() {
                                let _ = reply.send(result.map_err(std::io::Error::other));
                            }
                            continue;
                        }
                        Poll::Pending => {}
                    }
                }
                return Poll::Pending;
            })
            .await
        });
        Muxer { open, inbound }
    }

    /// Opens a new outbound stream.
    pub async fn open(&self) -> libp2p::core::muxing::SubstreamBox {
        let (tx, rx) = futures::channel::oneshot::channel();
        self.open.unbounded_send(tx).expect("muxer task alive");
        rx.await.expect("muxer task replied").expect("stream opens")
    }
}

/// Two full-stack (noise + yamux) connections' muxers over libp2p-ws: (listener side, dialer side).
pub async fn muxer_pair(listen_addr: &str) -> (Muxer, Muxer) {
    let listener_key = Keypair::generate_ed25519();
    let dialer_key = Keypair::generate_ed25519();
    let mut listener = libp2p_ws::upgraded(&listener_key, Config::default()).expect("builds");
    let mut dialer = libp2p_ws::upgraded(&dialer_key, Config::default()).expect("builds");
    listener
        .listen_on(ListenerId::next(), listen_addr.parse().expect("valid"))
        .expect("listens");
    let addr = loop {
        if let TransportEvent::NewAddress { listen_addr, .. } =
            poll_fn(|cx| Pin::new(&mut listener).poll(cx)).await
        {
            break listen_addr;
        }
    };
    let dial = async_std::task::spawn(dialer.dial(addr, dial_opts()).expect("dial accepted"));
    let upgrade = loop {
        if let TransportEvent::Incoming { upgrade, .. } =
            poll_fn(|cx| Pin::new(&mut listener).poll(cx)).await
        {
            break upgrade;
        }
    };
    let expected_dialer = dialer_key.public().to_peer_id();
    let listener_muxer = Muxer::spawn_when_ready(async move {
        let (peer, muxer) = upgrade.await.expect("listener side upgrades");
        assert_eq!(peer, expected_dialer);
        muxer
    });
    let (dialer_peer, dialer_muxer) = dial.await.expect("dialer side upgrades");
    assert_eq!(dialer_peer, listener_key.public().to_peer_id());
    (listener_muxer, Muxer::spawn(dialer_muxer))
}
