//! Shared harness for the integration tests: real sockets on 127.0.0.1, every wait bounded, and
//! every test body written once and run on each runtime ([`Runtime`], [`runtime_tests!`]).
#![allow(dead_code)]

pub mod broker;
pub mod certified;
pub mod daemon;
pub mod dnsmasq;
pub mod helpers;
pub mod pebble;
pub mod ping_node;
pub mod process;
pub mod raw;
pub mod shared_port;
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::{future::poll_fn, FutureExt as _};
use libp2p::{
    core::{
        transport::{ListenerId, TransportEvent},
        Multiaddr, Transport as _,
    },
    identity::Keypair,
    ping,
    swarm::{Swarm, SwarmEvent},
};
use libp2p_ws::{provider::Provider, Config};

/// A runtime the tests run on: its provider, and how the tests block on, spawn and time futures.
pub trait Runtime: Send + Sync + 'static {
    /// The transport's provider for this runtime.
    type Provider: Provider;
    /// For messages.
    const NAME: &'static str;
    /// Runs `future` to completion.
    fn block_on<F: Future>(future: F) -> F::Output;
    /// Spawns `future` on the running runtime (detached).
    fn spawn_detached(future: impl Future<Output = ()> + Send + 'static);
    /// Waits `duration` with the runtime's timer.
    fn sleep(duration: Duration) -> futures::future::BoxFuture<'static, ()>;
    /// The full stack (noise + yamux) on this runtime.
    fn upgraded(
        keypair: &Keypair,
        config: Config,
    ) -> libp2p::core::transport::Boxed<(libp2p::PeerId, libp2p::core::muxing::StreamMuxerBox)>;
    /// A ping swarm over the full stack, built the way users of this runtime build one.
    fn ping_swarm(config: Config, behaviour: ping::Behaviour) -> Swarm<ping::Behaviour>;
}

/// async-std: `libp2p_ws::async_std`, `Swarm::new` with async-std's executor.
pub struct AsyncStd;

impl Runtime for AsyncStd {
    type Provider = libp2p_ws::async_std::Provider;
    const NAME: &'static str = "async-std";

    fn block_on<F: Future>(future: F) -> F::Output {
        // Boxed: a test's future (transports, TLS streams) is over 100 KB in a debug build, and
        // the executor's block_on moves it through several frames of the test thread's 2 MiB.
        async_std::task::block_on(Box::pin(future))
    }

    fn spawn_detached(future: impl Future<Output = ()> + Send + 'static) {
        async_std::task::spawn(future);
    }

    fn sleep(duration: Duration) -> futures::future::BoxFuture<'static, ()> {
        async_std::task::sleep(duration).boxed()
    }

    fn upgraded(
        keypair: &Keypair,
        config: Config,
    ) -> libp2p::core::transport::Boxed<(libp2p::PeerId, libp2p::core::muxing::StreamMuxerBox)>
    {
        libp2p_ws::async_std::upgraded(keypair, config).expect("transport builds")
    }

    fn ping_swarm(config: Config, behaviour: ping::Behaviour) -> Swarm<ping::Behaviour> {
        let keypair = Keypair::generate_ed25519();
        let peer_id = keypair.public().to_peer_id();
        let transport = Self::upgraded(&keypair, config);
        let swarm_config = libp2p::swarm::Config::with_executor(|f| {
            async_std::task::spawn(f);
        })
        .with_idle_connection_timeout(Duration::from_secs(30));
        Swarm::new(transport, behaviour, peer_id, swarm_config)
    }
}

/// tokio (a current-thread runtime, as `SwarmBuilder` users often run): `libp2p_ws::tokio`,
/// swarms built with `SwarmBuilder::with_tokio().with_other_transport(constructor)`.
pub struct Tokio;

impl Runtime for Tokio {
    type Provider = libp2p_ws::tokio::Provider;
    const NAME: &'static str = "tokio";

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(Box::pin(future))
    }

    fn spawn_detached(future: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(future);
    }

    fn sleep(duration: Duration) -> futures::future::BoxFuture<'static, ()> {
        tokio::time::sleep(duration).boxed()
    }

    fn upgraded(
        keypair: &Keypair,
        config: Config,
    ) -> libp2p::core::transport::Boxed<(libp2p::PeerId, libp2p::core::muxing::StreamMuxerBox)>
    {
        libp2p_ws::tokio::upgraded(keypair, config).expect("transport builds")
    }

    fn ping_swarm(config: Config, behaviour: ping::Behaviour) -> Swarm<ping::Behaviour> {
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_other_transport(libp2p_ws::tokio::constructor(config))
            .expect("transport builds")
            .with_behaviour(|_| behaviour)
            .expect("behaviour builds")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
            .build()
    }
}

/// Instantiates each named test body (`async fn name<R: Runtime>()`) once per runtime, as the
/// tests `name::async_std` and `name::tokio`, each bounded by [`WAIT`] (through [`run`]).
///
/// `runtime_tests!(with runner: name, ...)` runs each instance through `runner::<R, _>(future)`
/// instead, a function of the invoking file with [`run`]'s signature (for tests that take a lock
/// first, or bound their own time).
#[macro_export]
macro_rules! runtime_tests {
    (@runner [$($runner:tt)*] $(,)?) => {};
    (@runner [$($runner:tt)*] $name:ident $(, $rest:ident)* $(,)?) => {
        mod $name {
            #[test]
            fn async_std() {
                $($runner)*::<$crate::common::AsyncStd, _>(super::$name::<$crate::common::AsyncStd>())
            }

            #[test]
            fn tokio() {
                $($runner)*::<$crate::common::Tokio, _>(super::$name::<$crate::common::Tokio>())
            }
        }
        $crate::runtime_tests!(@runner [$($runner)*] $($rest),*);
    };
    (with $runner:ident: $($name:ident),* $(,)?) => {
        $crate::runtime_tests!(@runner [super::$runner] $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        $crate::runtime_tests!(@runner [$crate::common::run] $($name),*);
    };
}

/// The bare transport on runtime `R`.
pub type Transport<R> = libp2p_ws::Transport<<R as Runtime>::Provider>;
/// An upgraded connection on runtime `R`.
pub type Output<R> = libp2p_ws::Output<<<R as Runtime>::Provider as Provider>::Stream>;
/// The inbound upgrade future on runtime `R`.
pub type ListenerUpgrade<R> =
    libp2p_ws::ListenerUpgrade<<<R as Runtime>::Provider as Provider>::Stream>;

/// A spawned task's result; dropping it detaches the task, [`Task::cancel`] stops it.
pub struct Task<T> {
    result: futures::channel::oneshot::Receiver<T>,
    abort: futures::future::AbortHandle,
}

impl<T> Task<T> {
    /// Stops the task (its future is dropped at its next poll).
    pub async fn cancel(self) {
        self.abort.abort();
    }
}

impl<T> Future for Task<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        self.result
            .poll_unpin(cx)
            .map(|result| result.expect("the spawned task panicked or was cancelled"))
    }
}

/// Spawns `future` on runtime `R`.
pub fn spawn<R: Runtime, F>(future: F) -> Task<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    let (tx, result) = futures::channel::oneshot::channel();
    let (future, abort) = futures::future::abortable(future);
    R::spawn_detached(async move {
        if let Ok(output) = future.await {
            let _ = tx.send(output);
        }
    });
    Task { result, abort }
}

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
pub fn drive_listener<R: Runtime, T>(
    mut transport: T,
    mut on_incoming: impl FnMut(T::ListenerUpgrade) + Send + 'static,
) -> futures::channel::oneshot::Sender<()>
where
    T: libp2p::core::Transport + Unpin + Send + 'static,
    T::ListenerUpgrade: Send,
    T::Error: Send,
{
    let (stop, mut stop_rx) = futures::channel::oneshot::channel::<()>();
    R::spawn_detached(async move {
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

/// Runs `future` on runtime `R` with the [`WAIT`] bound; panics (fails the test) on timeout.
pub fn run<R: Runtime, F: Future>(future: F) -> F::Output {
    init_logging();
    R::block_on(within::<R, _>(WAIT, future))
}

/// Logs to stderr when RUST_LOG is set.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Awaits `future` for at most `limit` (runtime `R`'s timer); `None` when the time ran out.
pub async fn timeout<R: Runtime, F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let future = std::pin::pin!(future);
    match futures::future::select(future, R::sleep(limit)).await {
        futures::future::Either::Left((output, _)) => Some(output),
        futures::future::Either::Right(_) => None,
    }
}

/// Awaits `future` for at most `limit`; panics (fails the test, naming the runtime) on timeout.
pub async fn within<R: Runtime, F: Future>(limit: Duration, future: F) -> F::Output {
    timeout::<R, _>(limit, future)
        .await
        .unwrap_or_else(|| panic!("timed out after {limit:?} on {}", R::NAME))
}

pub use helpers::dial_opts;

/// The next event of a bare transport.
pub async fn next_event<R: Runtime>(
    transport: &mut Transport<R>,
) -> TransportEvent<ListenerUpgrade<R>, libp2p_ws::Error> {
    poll_fn(|cx| Pin::new(&mut *transport).poll(cx)).await
}

/// Listens on `addr` and returns the listener id and the first address reported.
pub async fn listen<R: Runtime>(
    transport: &mut Transport<R>,
    addr: &str,
) -> (ListenerId, Multiaddr) {
    listen_any(transport, addr).await
}

/// Listens on `addr` with any transport (bare or upgraded) and returns the listener id and the
/// first address it reports.
pub async fn listen_any<T>(transport: &mut T, addr: &str) -> (ListenerId, Multiaddr)
where
    T: libp2p::core::Transport + Unpin,
    T::Error: std::fmt::Debug,
{
    let id = ListenerId::next();
    transport
        .listen_on(id, addr.parse().expect("valid multiaddr"))
        .expect("listen_on succeeds");
    loop {
        if let TransportEvent::NewAddress { listen_addr, .. } =
            poll_fn(|cx| Pin::new(&mut *transport).poll(cx)).await
        {
            return (id, listen_addr);
        }
    }
}

/// The next incoming connection's upgrade on any transport (other events are skipped).
pub async fn next_incoming<T: libp2p::core::Transport + Unpin>(
    transport: &mut T,
) -> T::ListenerUpgrade {
    loop {
        if let TransportEvent::Incoming { upgrade, .. } =
            poll_fn(|cx| Pin::new(&mut *transport).poll(cx)).await
        {
            return upgrade;
        }
    }
}

/// A listener on `listen_addr` and a dialer, connected: returns (server side, client side).
pub async fn connected_pair<R: Runtime>(
    server_config: Config,
    client_config: Config,
    listen_addr: &str,
) -> (Output<R>, Output<R>) {
    let mut listener = Transport::<R>::new(server_config);
    let (_, addr) = listen::<R>(&mut listener, listen_addr).await;
    let mut dialer = Transport::<R>::new(client_config);
    let dial = spawn::<R, _>(dialer.dial(addr, dial_opts()).expect("dial accepted"));
    let server = next_incoming(&mut listener)
        .await
        .await
        .expect("server side upgrades");
    let client = dial.await.expect("client side upgrades");
    (server, client)
}

/// A ping swarm on runtime `R` over the full libp2p-ws stack (noise + yamux).
pub fn ping_swarm<R: Runtime>(config: Config) -> Swarm<ping::Behaviour> {
    let behaviour =
        ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(200)));
    R::ping_swarm(config, behaviour)
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
    pub fn spawn<R: Runtime>(muxer: libp2p::core::muxing::StreamMuxerBox) -> Self {
        Self::spawn_when_ready::<R>(async move { muxer })
    }

    /// Like [`Muxer::spawn`], for a muxer that is still being negotiated (the listener side of a
    /// lazy multistream-select negotiation completes only when the dialer first sends).
    pub fn spawn_when_ready<R: Runtime>(
        muxer: impl Future<Output = libp2p::core::muxing::StreamMuxerBox> + Send + 'static,
    ) -> Self {
        use futures::{channel::mpsc, StreamExt};
        use libp2p::core::muxing::StreamMuxerExt;
        let (open, mut open_rx) = mpsc::unbounded::<
            futures::channel::oneshot::Sender<std::io::Result<libp2p::core::muxing::SubstreamBox>>,
        >();
        let (inbound_tx, inbound) = mpsc::unbounded();
        R::spawn_detached(async move {
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
pub async fn muxer_pair<R: Runtime>(listen_addr: &str) -> (Muxer, Muxer) {
    let listener_key = Keypair::generate_ed25519();
    let dialer_key = Keypair::generate_ed25519();
    let mut listener = R::upgraded(&listener_key, Config::default());
    let mut dialer = R::upgraded(&dialer_key, Config::default());
    let (_, addr) = listen_any(&mut listener, listen_addr).await;
    let dial = spawn::<R, _>(dialer.dial(addr, dial_opts()).expect("dial accepted"));
    let upgrade = next_incoming(&mut listener).await;
    let expected_dialer = dialer_key.public().to_peer_id();
    let listener_muxer = Muxer::spawn_when_ready::<R>(async move {
        let (peer, muxer) = upgrade.await.expect("listener side upgrades");
        assert_eq!(peer, expected_dialer);
        muxer
    });
    let (dialer_peer, dialer_muxer) = dial.await.expect("dialer side upgrades");
    assert_eq!(dialer_peer, listener_key.public().to_peer_id());
    (listener_muxer, Muxer::spawn::<R>(dialer_muxer))
}
