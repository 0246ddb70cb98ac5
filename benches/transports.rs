//! Transport benchmark: libp2p-ws against rust-libp2p's WebSocket transport (`libp2p::websocket`)
//! and TCP transport (`libp2p::tcp`), side by side in one run, over loopback.
//!
//! ```sh
//! cargo bench --bench transports              # full: 1 GiB transfers, 5 runs, 10,000 idle conns
//! cargo bench --bench transports -- --quick   # CI smoke run (also BENCH_QUICK=1)
//! cargo test --bench transports -- --quick    # the same in the dev profile
//! ```
//!
//! Without `--bench` (which `cargo bench` passes) or `--full`, the quick mode runs: `cargo test
//! --all-targets` must not spend minutes here.
//!
//! What is measured (each figure is the median over the runs):
//!
//! - single-stream throughput in both directions (dialer uploads, listener uploads) of the full
//!   stacks (WebSocket or TCP, then noise and yamux negotiated by multistream-select), of noise alone
//!   (no multiplexer) and of the bare layer (WebSocket alone, TCP alone). The receiver times from
//!   its first read to the last byte; the bytes of the first read are not counted. "tcp on
//!   async-std" (rust-libp2p's noise + yamux over async-std's TcpStream) is the runtime baseline: it
//!   separates what async-io costs against tokio from what the WebSocket layer costs. "libp2p-ws
//!   tokio" is libp2p-ws on its tokio backend (`libp2p_ws::tokio::upgraded`), on the same tokio
//!   current-thread runtime as libp2p-tcp: the like-for-like comparison for tokio users. "libp2p-ws
//!   tokio /tcp" and "libp2p-ws /tcp on async-std" are the crate's own plain `/tcp` (the same
//!   `upgraded()` transports dialing a `/tcp` address), beside libp2p-tcp and tcp on async-std;
//! - aggregate throughput of 16 concurrent yamux streams (dialer uploads);
//! - connection setup: `dial` until the dialer holds the upgraded connection (mean over sequential
//!   connections), the same until a first 1-byte stream round trip has completed (so the listener
//!   side is upgraded too), and sequential connections per second (dial, round trip, close); one
//!   row is `/ws` on a port shared with `/tcp` (libp2p-ws tokio listening on `/tcp/0`, then on
//!   `/tcp/<port>/ws`), against the unshared `/ws` of "libp2p-ws tokio";
//! - RSS per idle upgraded connection endpoint: for each stack, two fresh child processes (listener
//!   and dialer, so that 10,000 connections fit in the file descriptor limit and every stack starts
//!   from a fresh allocator) hold N connections, each used once for a stream round trip and then
//!   idle, every muxer polled; (RSS with N - RSS with N/100 warm-up connections) / added connections,
//!   averaged over the two ends;
//! - many connections as a node runs them (`multi`, in `transports/multi.rs`): 16 connections, one
//!   stream each (dialer uploads 128 MiB per stream), both swarms built with libp2p's
//!   `SwarmBuilder` on one tokio multi-thread runtime with as many workers as CPUs (not pinned), for
//!   libp2p-tcp (`with_tcp`) and libp2p-ws tokio (`with_other_transport`): aggregate throughput
//!   and process CPU time (getrusage, all threads) per byte moved.
//!
//! Each peer of a pair runs on its own thread pinned to its own core (when there are two), on its own
//! single-threaded runtime: tokio `current_thread` for the rust-libp2p stacks and libp2p-ws tokio,
//! `async_io::block_on` for libp2p-ws on async-std (whose sockets live on async-io's reactor, driven
//! from the blocked-on thread). The `multi` section is the exception (see above).
//!
//! Environment overrides: `BENCH_QUICK=1`, `BENCH_MIB` (transfer size), `BENCH_RUNS`,
//! `BENCH_SETUP_CONNS`, `BENCH_IDLE_CONNS`, `BENCH_RSS_RUNS`, `BENCH_MULTI_CONNS` (16),
//! `BENCH_MULTI_MIB` (per connection; 128, quick 1), and filters (comma-separated): `BENCH_ONLY`
//! (sections `full,noise,raw,streams,setup,rss,multi`), `BENCH_STACKS`
//! (`ws,wss,ws-tokio,websocket,tcp,tcp-async-std,tcp-ours,tcp-ours-async-std,ws-shared`),
//! `BENCH_DIRECTIONS` (`dialer,listener`).

#[path = "transports/multi.rs"]
mod multi;

use std::{
    cell::Cell,
    collections::BTreeMap,
    fmt::Display,
    future::Future,
    io::{BufRead, BufReader},
    net::SocketAddr,
    pin::{pin, Pin},
    process::{Command, Stdio},
    sync::{mpsc::SyncSender, OnceLock},
    task::Poll,
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use futures::{
    channel::mpsc,
    future::{poll_fn, select, Either, LocalBoxFuture},
    stream::FuturesUnordered,
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt, StreamExt, TryStreamExt,
};
use libp2p::{
    core::{
        muxing::{StreamMuxerBox, StreamMuxerExt, SubstreamBox},
        transport::{Boxed, DialOpts, ListenerId, PortUse, TransportEvent},
        upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo, Version},
        ConnectedPoint, Endpoint, Multiaddr, Transport,
    },
    identity::Keypair,
    multiaddr::Protocol,
    PeerId,
};

/// Every handshake, dial and accept is bounded by this.
const WAIT: Duration = Duration::from_secs(20);
/// Closing a connection after a measurement is bounded by this (errors are ignored).
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Size of each write and of the read buffer.
const CHUNK: usize = 256 * 1024;
/// Concurrent dials while opening the idle connections of the RSS measurement.
const RSS_PARALLEL_DIALS: usize = 64;
const ACK: u8 = 0xa5;
const ECHO_REPLY: u8 = 0x5a;
const MIB: u64 = 1024 * 1024;

// ----- what is measured --------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stack {
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
}

impl Stack {
    fn id(self) -> &'static str {
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
        }
    }

    fn from_id(id: &str) -> Option<Stack> {
        [
            Stack::Ws,
            Stack::Wss,
            Stack::WsTokio,
            Stack::Websocket,
            Stack::Tcp,
            Stack::TcpAsyncStd,
            Stack::TcpOurs,
            Stack::TcpOursAsyncStd,
            Stack::WsShared,
        ]
        .into_iter()
        .find(|s| s.id() == id)
    }

    fn runtime(self) -> Rt {
        match self {
            Stack::Ws | Stack::Wss | Stack::TcpAsyncStd | Stack::TcpOursAsyncStd => Rt::AsyncIo,
            Stack::WsTokio | Stack::Websocket | Stack::Tcp | Stack::TcpOurs | Stack::WsShared => {
                Rt::Tokio
            }
        }
    }

    fn listen_addr(self) -> &'static str {
        match self {
            Stack::Ws | Stack::WsTokio | Stack::Websocket => "/ip4/127.0.0.1/tcp/0/ws",
            Stack::Wss => "/ip4/127.0.0.1/tcp/0/tls/ws",
            Stack::Tcp | Stack::TcpAsyncStd | Stack::TcpOurs | Stack::TcpOursAsyncStd => {
                "/ip4/127.0.0.1/tcp/0"
            }
            // The first of its two listen addresses (see `listen_shared`).
            Stack::WsShared => "/ip4/127.0.0.1/tcp/0",
        }
    }

    fn label(self, layer: Layer) -> &'static str {
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
            (Stack::Websocket, Layer::Raw) => "libp2p-websocket (ws only)",
            (Stack::Tcp, Layer::Raw) => "raw tcp (tokio, libp2p-tcp)",
            (Stack::TcpAsyncStd, Layer::Full) => "tcp on async-std (tcp+noise+yamux)",
            (Stack::TcpAsyncStd, Layer::Raw) => "raw tcp (async-std)",
            (Stack::TcpOurs, Layer::Full) => "libp2p-ws tokio /tcp (tcp+noise+yamux)",
            (Stack::TcpOursAsyncStd, Layer::Full) => {
                "libp2p-ws /tcp on async-std (tcp+noise+yamux)"
            }
            (Stack::WsShared, Layer::Full) => "libp2p-ws tokio /ws, port shared with /tcp",
            _ => "?",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layer {
    /// noise + yamux on top.
    Full,
    /// noise only, no multiplexer.
    Noise,
    /// The bare transport.
    Raw,
}

impl Layer {
    fn id(self) -> &'static str {
        match self {
            Layer::Full => "full",
            Layer::Noise => "noise",
            Layer::Raw => "raw",
        }
    }
}

/// What the dialer asks for with the first byte of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    DialerUploads = 1,
    ListenerUploads = 2,
    Echo = 3,
}

impl Mode {
    fn id(self) -> &'static str {
        match self {
            Mode::DialerUploads => "dialer_uploads",
            Mode::ListenerUploads => "listener_uploads",
            Mode::Echo => "echo",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Listener,
    Dialer,
}

#[derive(Clone, Debug)]
struct Settings {
    quick: bool,
    bytes: u64,
    runs: usize,
    setup_conns: usize,
    idle_conns: usize,
    warm_conns: usize,
    rss_runs: usize,
    streams: usize,
    /// The multi section: connections, and bytes uploaded on each.
    multi_conns: usize,
    multi_bytes: u64,
    sections: Vec<String>,
    stacks: Option<Vec<String>>,
    directions: Option<Vec<String>>,
}

impl Settings {
    fn from_env(quick: bool) -> Settings {
        let quick = quick || std::env::var("BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
        let num = |name: &str, default: u64| -> u64 {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (mib, runs, setup, idle, rss_runs, multi_mib) = if quick {
            (8, 1, 20, 200, 1, 1)
        } else {
            (1024, 5, 200, 10_000, 3, 128)
        };
        let idle_conns = (num("BENCH_IDLE_CONNS", idle) as usize).max(2);
        let list = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        };
        Settings {
            quick,
            bytes: num("BENCH_MIB", mib).max(1) * MIB,
            runs: (num("BENCH_RUNS", runs) as usize).max(1),
            setup_conns: (num("BENCH_SETUP_CONNS", setup) as usize).max(1),
            idle_conns,
            warm_conns: (idle_conns / 100).clamp(1, 100),
            rss_runs: (num("BENCH_RSS_RUNS", rss_runs) as usize).max(1),
            streams: 16,
            multi_conns: (num("BENCH_MULTI_CONNS", 16) as usize).max(1),
            multi_bytes: num("BENCH_MULTI_MIB", multi_mib).max(1) * MIB,
            sections: std::env::var("BENCH_ONLY")
                .unwrap_or_else(|_| "full,noise,raw,streams,setup,rss,multi".into())
                .split(',')
                .map(|s| s.trim().to_string())
                .collect(),
            stacks: list("BENCH_STACKS"),
            directions: list("BENCH_DIRECTIONS"),
        }
    }

    fn section(&self, name: &str) -> bool {
        self.sections.iter().any(|s| s == name)
    }

    fn wants(&self, stack: Stack, mode: Mode) -> bool {
        let listed = |list: &Option<Vec<String>>, id: &str| {
            list.as_ref().is_none_or(|l| l.iter().any(|s| s == id))
        };
        let direction = match mode {
            Mode::DialerUploads => "dialer",
            Mode::ListenerUploads => "listener",
            Mode::Echo => "echo",
        };
        listed(&self.stacks, stack.id())
            && (mode == Mode::Echo || listed(&self.directions, direction))
    }

    /// Bound on one transfer: generous (at least 10 MB/s, at least a minute).
    fn transfer_timeout(&self) -> Duration {
        Duration::from_secs(60.max(self.bytes / 10_000_000))
    }
}

// ----- runtimes, threads, timeouts ---------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rt {
    Tokio,
    AsyncIo,
}

thread_local! {
    static RUNTIME: Cell<Rt> = const { Cell::new(Rt::AsyncIo) };
}

/// Runs `future` to completion on this thread: a tokio current-thread runtime, or async-io's
/// `block_on` (which drives the async-io reactor from this thread while it waits).
fn block_on<F: Future>(rt: Rt, future: F) -> F::Output {
    RUNTIME.with(|c| c.set(rt));
    match rt {
        Rt::Tokio => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(future),
        Rt::AsyncIo => async_io::block_on(future),
    }
}

async fn sleep(duration: Duration) {
    match RUNTIME.with(Cell::get) {
        Rt::Tokio => tokio::time::sleep(duration).await,
        Rt::AsyncIo => {
            async_io::Timer::after(duration).await;
        }
    }
}

/// `future`, or an error naming `what` after `limit`.
async fn within<F: Future>(limit: Duration, what: impl Display, future: F) -> Result<F::Output> {
    let future = pin!(future);
    let timer = pin!(sleep(limit));
    match select(future, timer).await {
        Either::Left((output, _)) => Ok(output),
        Either::Right(_) => bail!("timed out after {limit:?}: {what}"),
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a plain bitmask that sched_getaffinity fills; CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// The two CPUs the listener and the dialer are pinned to, if there are at least two.
fn pinning() -> Option<(usize, usize)> {
    static CPUS: OnceLock<Option<(usize, usize)>> = OnceLock::new();
    *CPUS.get_or_init(|| match allowed_cpus()[..] {
        [a, b, ..] => Some((a, b)),
        _ => None,
    })
}

fn pin_current_thread(cpu: usize) {
    // SAFETY: as above; sched_setaffinity(0, ..) applies to the calling thread only.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    if !ok {
        eprintln!("warning: could not pin a thread to CPU {cpu}");
    }
}

/// Raises RLIMIT_NOFILE to at least `want` if possible; returns the soft limit in force.
fn raise_nofile(want: libc::rlim_t) -> libc::rlim_t {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur >= want {
            return lim.rlim_cur;
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return want;
        }
        // Not allowed to raise the hard limit: take all of it.
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            return lim.rlim_max;
        }
        lim.rlim_cur
    }
}

/// Runs a listener and a dialer, each on its own (pinned) thread with its own runtime. The
/// listener sends its address through the channel it is given; the dialer gets it.
fn joined<T>(handle: thread::ScopedJoinHandle<'_, Result<T>>, name: &str) -> Result<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err(anyhow!("the {name} thread panicked")))
        .with_context(|| format!("{name} side"))
}

fn pair<A, B, L, D, FL, FD>(rt: Rt, listener: L, dialer: D) -> Result<(A, B)>
where
    L: FnOnce(SyncSender<Multiaddr>) -> FL + Send,
    FL: Future<Output = Result<A>>,
    A: Send,
    D: FnOnce(Multiaddr) -> FD + Send,
    FD: Future<Output = Result<B>>,
    B: Send,
{
    let cpus = pinning();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    thread::scope(|scope| {
        let listener = thread::Builder::new()
            .name("listener".into())
            .spawn_scoped(scope, move || {
                if let Some((cpu, _)) = cpus {
                    pin_current_thread(cpu);
                }
                block_on(rt, listener(tx))
            })
            .context("spawning the listener thread")?;
        let dialer = thread::Builder::new()
            .name("dialer".into())
            .spawn_scoped(scope, move || {
                if let Some((_, cpu)) = cpus {
                    pin_current_thread(cpu);
                }
                let addr = rx
                    .recv_timeout(WAIT)
                    .map_err(|_| anyhow!("the listener never reported its address"))?;
                block_on(rt, dialer(addr))
            })
            .context("spawning the dialer thread")?;
        let dialer = joined(dialer, "dialer");
        let listener = joined(listener, "listener");
        match (listener, dialer) {
            (Ok(l), Ok(d)) => Ok((l, d)),
            (Err(l), Ok(_)) => Err(l),
            (Ok(_), Err(d)) => Err(d),
            (Err(l), Err(d)) => Err(anyhow!("{l:#}; {d:#}")),
        }
    })
}

// ----- transports --------------------------------------------------------------------------------

/// A byte stream: a bare or noise-encrypted connection, or a yamux stream.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type RawStream = Box<dyn Io>;
type Muxed = (PeerId, StreamMuxerBox);

/// Certificates for the wss stack.
struct Env {
    tls_listener: libp2p_ws::Config,
    tls_dialer: libp2p_ws::Config,
}

impl Env {
    fn new() -> Result<Env> {
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

    fn ws_config(&self, stack: Stack, side: Side) -> libp2p_ws::Config {
        match (stack, side) {
            (Stack::Wss, Side::Listener) => self.tls_listener.clone(),
            (Stack::Wss, Side::Dialer) => self.tls_dialer.clone(),
            _ => libp2p_ws::Config::default(),
        }
    }
}

fn tokio_tcp() -> libp2p::tcp::tokio::Transport {
    libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default().nodelay(true))
}

/// rust-libp2p's usual stack over `transport`, upgraded like `libp2p_ws::upgraded` does it.
fn rust_libp2p_upgraded<T>(transport: T, keypair: &Keypair) -> Boxed<Muxed>
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
fn noise_only<T>(transport: T, keypair: &Keypair) -> Boxed<RawStream>
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

fn full_transport(stack: Stack, side: Side, env: Option<&Env>) -> Boxed<Muxed> {
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
        Stack::Websocket => {
            rust_libp2p_upgraded(libp2p::websocket::Config::new(tokio_tcp()), &keypair)
        }
        Stack::Tcp => rust_libp2p_upgraded(tokio_tcp(), &keypair),
        Stack::TcpAsyncStd => rust_libp2p_upgraded(AsyncStdTcp::default(), &keypair),
    }
}

fn bare_transport(stack: Stack, layer: Layer, side: Side, env: &Env) -> Boxed<RawStream> {
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

/// Bare TCP on async-std (the socket libp2p-ws runs on) as a minimal libp2p transport: one
/// listener, `TCP_NODELAY`, the baseline for the WebSocket layer.
#[derive(Default)]
struct AsyncStdTcp {
    listener: Option<(
        ListenerId,
        async_io::Async<std::net::TcpListener>,
        Multiaddr,
    )>,
    announced: bool,
}

fn tcp_multiaddr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::from(addr.ip()).with(Protocol::Tcp(addr.port()))
}

fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port)), None) => Some((ip, port).into()),
        _ => None,
    }
}

impl Transport for AsyncStdTcp {
    type Output = RawStream;
    type Error = std::io::Error;
    type ListenerUpgrade = futures::future::Ready<std::io::Result<RawStream>>;
    type Dial = futures::future::BoxFuture<'static, std::io::Result<RawStream>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), libp2p::core::transport::TransportError<Self::Error>> {
        use libp2p::core::transport::TransportError;
        let socket = socket_addr(&addr).ok_or(TransportError::MultiaddrNotSupported(addr))?;
        let listener = async_io::Async::<std::net::TcpListener>::bind(socket)
            .map_err(TransportError::Other)?;
        let local = listener
            .get_ref()
            .local_addr()
            .map_err(TransportError::Other)?;
        self.listener = Some((id, listener, tcp_multiaddr(local)));
        Ok(())
    }

    fn remove_listener(&mut self, _: ListenerId) -> bool {
        self.listener.take().is_some()
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _: DialOpts,
    ) -> Result<Self::Dial, libp2p::core::transport::TransportError<Self::Error>> {
        let socket = socket_addr(&addr)
            .ok_or(libp2p::core::transport::TransportError::MultiaddrNotSupported(addr))?;
        Ok(async move {
            let stream = async_std::net::TcpStream::connect(socket).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as RawStream)
        }
        .boxed())
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = self.get_mut();
        let Some((id, listener, local)) = &this.listener else {
            return Poll::Pending;
        };
        if !this.announced {
            this.announced = true;
            return Poll::Ready(TransportEvent::NewAddress {
                listener_id: *id,
                listen_addr: local.clone(),
            });
        }
        loop {
            match listener.get_ref().accept() {
                Ok((stream, remote)) => {
                    let upgrade = stream
                        .set_nodelay(true)
                        .map(|()| Box::new(async_std::net::TcpStream::from(stream)) as RawStream);
                    return Poll::Ready(TransportEvent::Incoming {
                        listener_id: *id,
                        upgrade: futures::future::ready(upgrade),
                        local_addr: local.clone(),
                        send_back_addr: tcp_multiaddr(remote),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Err(error) = futures::ready!(listener.poll_readable(cx)) {
                        return Poll::Ready(TransportEvent::ListenerError {
                            listener_id: *id,
                            error,
                        });
                    }
                }
                Err(error) => {
                    return Poll::Ready(TransportEvent::ListenerError {
                        listener_id: *id,
                        error,
                    })
                }
            }
        }
    }
}

fn dial_opts() -> DialOpts {
    DialOpts {
        role: Endpoint::Dialer,
        port_use: PortUse::New,
    }
}

async fn listen<O>(transport: &mut Boxed<O>, addr: &str) -> Result<Multiaddr> {
    transport
        .listen_on(ListenerId::next(), addr.parse()?)
        .map_err(|e| anyhow!("listen_on {addr}: {e}"))?;
    within(WAIT, "waiting for the listen address", async {
        loop {
            match poll_fn(|cx| Pin::new(&mut *transport).poll(cx)).await {
                TransportEvent::NewAddress { listen_addr, .. } => return Ok(listen_addr),
                TransportEvent::ListenerError { error, .. } => bail!("listener error: {error}"),
                TransportEvent::ListenerClosed { reason, .. } => {
                    bail!("listener closed: {reason:?}")
                }
                _ => {}
            }
        }
    })
    .await?
}

/// The `WsShared` listener: `/tcp` on port 0, then `/ws` on the port it got (one socket, shared
/// by the two listeners); returns the `/ws` address, which the dialer dials.
async fn listen_shared<O>(transport: &mut Boxed<O>) -> Result<Multiaddr> {
    let tcp = listen(transport, "/ip4/127.0.0.1/tcp/0").await?;
    let port = tcp
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .with_context(|| format!("no port in {tcp}"))?;
    let ws = listen(transport, &format!("/ip4/127.0.0.1/tcp/{port}/ws")).await?;
    ensure!(
        ws.iter().any(|p| p == Protocol::Ws("/".into()))
            && ws.iter().any(|p| p == Protocol::Tcp(port)),
        "the shared /ws listener reported {ws}, not /ws on port {port}"
    );
    Ok(ws)
}

async fn dial<O>(transport: &mut Boxed<O>, addr: &Multiaddr) -> Result<O> {
    let dial = transport
        .dial(addr.clone(), dial_opts())
        .map_err(|e| anyhow!("dial {addr}: {e}"))?;
    within(WAIT, "dialing", dial)
        .await?
        .with_context(|| format!("dialing {addr}"))
}

type Upgrade<O> = Pin<Box<dyn Future<Output = std::io::Result<O>> + Send>>;

/// Accepts `count` connections and runs `handler` on each (concurrently); returns the results.
async fn serve<O, H, F, R>(
    transport: &mut Boxed<O>,
    count: usize,
    wait: Duration,
    mut handler: H,
) -> Result<Vec<R>>
where
    H: FnMut(Upgrade<O>) -> F,
    F: Future<Output = Result<R>>,
{
    let mut running = FuturesUnordered::new();
    let mut accepted = 0;
    let mut results = Vec::with_capacity(count);
    while results.len() < count {
        // Nothing accepted yet: the dialer should be quick; a transfer may take `wait`.
        let limit = if running.is_empty() { WAIT } else { wait };
        let event = within(limit, "waiting for connections", async {
            poll_fn(|cx| {
                if accepted < count {
                    if let Poll::Ready(event) = Pin::new(&mut *transport).poll(cx) {
                        return Poll::Ready(Either::Left(event));
                    }
                }
                match running.poll_next_unpin(cx) {
                    Poll::Ready(Some(result)) => Poll::Ready(Either::Right(result)),
                    _ => Poll::Pending,
                }
            })
            .await
        })
        .await?;
        match event {
            Either::Left(TransportEvent::Incoming { upgrade, .. }) => {
                accepted += 1;
                running.push(handler(upgrade));
            }
            Either::Left(TransportEvent::ListenerError { error, .. }) => {
                bail!("listener error: {error}")
            }
            Either::Left(TransportEvent::ListenerClosed { reason, .. }) => {
                bail!("listener closed: {reason:?}")
            }
            Either::Left(_) => {}
            Either::Right(result) => results.push(result?),
        }
    }
    Ok(results)
}

// ----- the stream protocol -----------------------------------------------------------------------

/// What a receiver saw: the first read (its bytes are not counted) and the last byte.
#[derive(Clone, Copy, Debug)]
struct Received {
    first: Instant,
    first_bytes: u64,
    last: Instant,
    bytes: u64,
}

/// Aggregate throughput of concurrent receivers, in MB/s.
fn throughput(received: &[Received]) -> Result<f64> {
    let start = received
        .iter()
        .min_by_key(|r| r.first)
        .context("nothing was received")?;
    let end = received.iter().map(|r| r.last).max().expect("not empty");
    let bytes: u64 = received.iter().map(|r| r.bytes).sum::<u64>() - start.first_bytes;
    let secs = end.duration_since(start.first).as_secs_f64().max(1e-9);
    Ok(bytes as f64 / secs / 1e6)
}

async fn send<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    bytes: u64,
) -> Result<()> {
    let chunk = vec![0x42u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        stream.write_all(&chunk[..n]).await.context("writing")?;
        left -= n as u64;
    }
    stream.flush().await.context("flushing")?;
    let mut ack = [0u8; 1];
    stream
        .read_exact(&mut ack)
        .await
        .context("reading the ack")?;
    ensure!(ack[0] == ACK, "bad ack {}", ack[0]);
    Ok(())
}

async fn receive<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    bytes: u64,
) -> Result<Received> {
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    let mut first = None;
    while got < bytes {
        let want = (bytes - got).min(CHUNK as u64) as usize;
        let n = stream.read(&mut buf[..want]).await.context("reading")?;
        ensure!(n > 0, "end of stream after {got} of {bytes} bytes");
        got += n as u64;
        first.get_or_insert((Instant::now(), n as u64));
    }
    let last = Instant::now();
    stream.write_all(&[ACK]).await.context("writing the ack")?;
    stream.flush().await.context("flushing the ack")?;
    wait_for_close(stream).await;
    let (first, first_bytes) = first.unwrap_or((last, 0));
    Ok(Received {
        first,
        first_bytes,
        last,
        bytes,
    })
}

/// Waits (bounded) until the peer closes: whoever wrote the last byte lets the other side close
/// first, so that closing cannot overtake bytes still in flight.
async fn wait_for_close<S: AsyncRead + Unpin + ?Sized>(stream: &mut S) {
    let mut byte = [0u8; 1];
    let _ = within(
        CLOSE_WAIT,
        "waiting for the peer to close",
        stream.read(&mut byte),
    )
    .await;
}

/// The dialer's side of a stream: asks for `mode`, then sends, receives or waits for the echo.
async fn stream_dialer<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    mode: Mode,
    bytes: u64,
) -> Result<Option<Received>> {
    stream
        .write_all(&[mode as u8])
        .await
        .context("writing the mode")?;
    stream.flush().await.context("flushing the mode")?;
    match mode {
        Mode::DialerUploads => send(stream, bytes).await.map(|()| None),
        Mode::ListenerUploads => receive(stream, bytes).await.map(Some),
        Mode::Echo => {
            let mut reply = [0u8; 1];
            stream
                .read_exact(&mut reply)
                .await
                .context("reading the echo")?;
            ensure!(reply[0] == ECHO_REPLY, "bad echo {}", reply[0]);
            Ok(None)
        }
    }
}

/// The listener's side of a stream.
async fn stream_listener<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    bytes: u64,
) -> Result<Option<Received>> {
    let mut mode = [0u8; 1];
    stream
        .read_exact(&mut mode)
        .await
        .context("reading the mode")?;
    match mode[0] {
        1 => receive(stream, bytes).await.map(Some),
        2 => send(stream, bytes).await.map(|()| None),
        3 => {
            stream.write_all(&[ECHO_REPLY]).await?;
            stream.flush().await?;
            wait_for_close(stream).await;
            Ok(None)
        }
        other => bail!("unknown mode {other}"),
    }
}

// ----- driving muxers ----------------------------------------------------------------------------

/// Polls `muxer` until it fails or closes (returns why); inbound streams go to `inbound`, or are
/// dropped.
async fn drive(
    muxer: &mut StreamMuxerBox,
    inbound: Option<&mpsc::UnboundedSender<SubstreamBox>>,
) -> String {
    poll_fn(|cx| loop {
        match muxer.poll_unpin(cx) {
            Poll::Ready(Ok(_)) => continue,
            Poll::Ready(Err(e)) => return Poll::Ready(format!("muxer failed: {e}")),
            Poll::Pending => {}
        }
        match muxer.poll_inbound_unpin(cx) {
            Poll::Ready(Ok(stream)) => {
                if let Some(inbound) = inbound {
                    let _ = inbound.unbounded_send(stream);
                }
            }
            Poll::Ready(Err(e)) => return Poll::Ready(format!("muxer closed: {e}")),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

/// Runs `work` while driving `muxer`.
async fn drive_while<F: Future>(
    muxer: &mut StreamMuxerBox,
    inbound: Option<&mpsc::UnboundedSender<SubstreamBox>>,
    work: F,
) -> Result<F::Output> {
    let work = pin!(work);
    let driver = pin!(drive(muxer, inbound));
    match select(work, driver).await {
        Either::Left((output, _)) => Ok(output),
        // The peer may have closed right after its last bytes (the ack): those are read already.
        Either::Right((why, work)) => within(CLOSE_WAIT, why, work).await,
    }
}

async fn open_outbound(muxer: &mut StreamMuxerBox) -> Result<SubstreamBox> {
    within(
        WAIT,
        "opening a stream",
        poll_fn(|cx| loop {
            match muxer.poll_unpin(cx) {
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(anyhow!("muxer failed: {e}"))),
                Poll::Pending => {}
            }
            return muxer
                .poll_outbound_unpin(cx)
                .map_err(|e| anyhow!("opening a stream: {e}"));
        }),
    )
    .await?
}

/// A connection as the measurements use it.
trait Conn: Send + 'static {
    /// Opens `streams` streams and runs the dialer's side of `mode` on each, concurrently.
    async fn dialer(&mut self, streams: usize, mode: Mode, bytes: u64) -> Result<Vec<Received>>;
    /// Accepts `streams` streams and runs the listener's side on each, concurrently.
    async fn listener(&mut self, streams: usize, bytes: u64) -> Result<Vec<Received>>;
    /// Closes the connection (bounded; errors ignored).
    async fn close(self);
}

impl Conn for Muxed {
    async fn dialer(&mut self, streams: usize, mode: Mode, bytes: u64) -> Result<Vec<Received>> {
        let muxer = &mut self.1;
        let mut opened = Vec::with_capacity(streams);
        for _ in 0..streams {
            opened.push(open_outbound(muxer).await?);
        }
        let work = opened
            .into_iter()
            .map(|mut s| async move {
                let result = stream_dialer(&mut s, mode, bytes).await;
                // Close rather than drop: a dropped yamux stream may be reset before its last
                // frames leave.
                let _ = s.close().await;
                result
            })
            .collect::<FuturesUnordered<_>>()
            .try_collect::<Vec<_>>();
        Ok(drive_while(muxer, None, work)
            .await??
            .into_iter()
            .flatten()
            .collect())
    }

    async fn listener(&mut self, streams: usize, bytes: u64) -> Result<Vec<Received>> {
        let (tx, mut rx) = mpsc::unbounded();
        let work = async {
            let mut accepted = Vec::with_capacity(streams);
            while accepted.len() < streams {
                accepted.push(rx.next().await.context("inbound streams ended")?);
            }
            accepted
                .into_iter()
                .map(|mut s: SubstreamBox| async move {
                    let result = stream_listener(&mut s, bytes).await;
                    let _ = s.close().await;
                    result
                })
                .collect::<FuturesUnordered<_>>()
                .try_collect::<Vec<_>>()
                .await
        };
        Ok(drive_while(&mut self.1, Some(&tx), work)
            .await??
            .into_iter()
            .flatten()
            .collect())
    }

    async fn close(self) {
        let _ = within(CLOSE_WAIT, "closing", self.1.close()).await;
    }
}

impl Conn for RawStream {
    async fn dialer(&mut self, streams: usize, mode: Mode, bytes: u64) -> Result<Vec<Received>> {
        ensure!(streams == 1, "a bare connection is one stream");
        Ok(stream_dialer(self, mode, bytes)
            .await?
            .into_iter()
            .collect())
    }

    async fn listener(&mut self, streams: usize, bytes: u64) -> Result<Vec<Received>> {
        ensure!(streams == 1, "a bare connection is one stream");
        Ok(stream_listener(self, bytes).await?.into_iter().collect())
    }

    async fn close(mut self) {
        let _ = within(CLOSE_WAIT, "closing", AsyncWriteExt::close(&mut self)).await;
    }
}

// ----- measurements ------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Plan {
    Transfer {
        mode: Mode,
        streams: usize,
        bytes: u64,
    },
    Setup {
        count: usize,
    },
}

#[derive(Debug, Default)]
struct Outcome {
    received: Vec<Received>,
    /// Per connection: dial -> dialer upgraded, dial -> first stream round trip done.
    setups: Vec<(Duration, Duration)>,
    /// Wall time of all the setups.
    elapsed: Duration,
}

/// One measurement over a pair of libp2p transports made by `make`.
fn measure<O: Conn>(
    rt: Rt,
    listen_addr: &str,
    shared: bool,
    make: &(dyn Fn(Side) -> Boxed<O> + Sync),
    plan: Plan,
    timeout: Duration,
) -> Result<Outcome> {
    let (count, streams, bytes) = match plan {
        Plan::Transfer { streams, bytes, .. } => (1, streams, bytes),
        Plan::Setup { count } => (count, 1, 0),
    };
    let (listener, dialer) = pair(
        rt,
        |tx| async move {
            let mut transport = make(Side::Listener);
            let addr = if shared {
                listen_shared(&mut transport).await?
            } else {
                listen(&mut transport, listen_addr).await?
            };
            tx.send(addr).ok();
            let results = serve(
                &mut transport,
                count,
                timeout + WAIT,
                |upgrade| async move {
                    let mut conn = within(WAIT, "listener upgrade", upgrade)
                        .await?
                        .context("listener upgrade")?;
                    let result =
                        within(timeout, "listener side", conn.listener(streams, bytes)).await;
                    conn.close().await;
                    result?
                },
            )
            .await?;
            Ok(results.into_iter().flatten().collect::<Vec<_>>())
        },
        |addr| async move {
            let mut transport = make(Side::Dialer);
            let mut outcome = Outcome::default();
            match plan {
                Plan::Transfer {
                    mode,
                    streams,
                    bytes,
                } => {
                    let mut conn = dial(&mut transport, &addr).await?;
                    let result =
                        within(timeout, "dialer side", conn.dialer(streams, mode, bytes)).await;
                    conn.close().await;
                    outcome.received = result??;
                }
                Plan::Setup { count } => {
                    let start = Instant::now();
                    for _ in 0..count {
                        let t0 = Instant::now();
                        let mut conn = dial(&mut transport, &addr).await?;
                        let upgraded = t0.elapsed();
                        within(WAIT, "first stream", conn.dialer(1, Mode::Echo, 0)).await??;
                        let first_stream = t0.elapsed();
                        conn.close().await;
                        outcome.setups.push((upgraded, first_stream));
                    }
                    outcome.elapsed = start.elapsed();
                }
            }
            Ok(outcome)
        },
    )?;
    let mut outcome = dialer;
    outcome.received.extend(listener);
    Ok(outcome)
}

fn measure_stack(
    stack: Stack,
    layer: Layer,
    plan: Plan,
    env: &Env,
    timeout: Duration,
) -> Result<Outcome> {
    let rt = stack.runtime();
    match (stack, layer, plan) {
        (_, Layer::Full, _) => measure(
            rt,
            stack.listen_addr(),
            stack == Stack::WsShared,
            &|side| full_transport(stack, side, Some(env)),
            plan,
            timeout,
        ),
        (_, layer, _) => measure(
            rt,
            stack.listen_addr(),
            false,
            &|side| bare_transport(stack, layer, side, env),
            plan,
            timeout,
        ),
    }
}

// ----- RSS of idle connections (two child processes) ---------------------------------------------

fn vm_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")
}

/// glibc's heap: (bytes in use, bytes free but kept), to tell live memory from fragmentation.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_usage() -> (u64, u64) {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    ((info.uordblks + info.hblkhd) as u64, info.fordblks as u64)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_usage() -> (u64, u64) {
    (0, 0)
}

type Held = FuturesUnordered<LocalBoxFuture<'static, String>>;

fn hold(mut conn: Muxed) -> LocalBoxFuture<'static, String> {
    async move { drive(&mut conn.1, None).await }.boxed_local()
}

/// Drives the held connections for `duration`; fails if one ends.
async fn settle(held: &mut Held, duration: Duration) -> Result<()> {
    let next = held.next();
    let timer = pin!(sleep(duration));
    match select(next, timer).await {
        Either::Left((Some(why), _)) => bail!("an idle connection ended: {why}"),
        _ => Ok(()),
    }
}

/// One end of the RSS measurement, in its own process (so that 10,000 connections fit in the
/// file descriptor limit, and so that each stack starts from a fresh allocator).
///
/// Commands come on stdin, one per line; replies go to stdout:
/// - `dial N` (dialer): open N more connections (at most `RSS_PARALLEL_DIALS` in flight), each used
///   for one stream round trip, which also completes the listener's lazy upgrade; replies
///   `dialed <held>` when all are held;
/// - `measure N`: once N connections are held, drive them for a second, reply
///   `rss <RSS KiB> <held> <heap bytes in use> <heap bytes free>`;
/// - `stop`: from now on connections may close (the other end is about to exit); replies
///   `stopped`.
///
/// The listener first prints `addr <multiaddr>`. Every held muxer is polled until the process
/// exits, which it does when stdin closes.
async fn rss_node(
    role: Side,
    stack: Stack,
    addr: Option<Multiaddr>,
    mut commands: mpsc::UnboundedReceiver<String>,
) -> Result<()> {
    enum Event {
        Listener(TransportEvent<Upgrade<Muxed>, std::io::Error>),
        Established(Result<Muxed>),
        Lost(String),
        Command(Option<String>),
    }
    let mut transport = match stack {
        // The dialer keeps `RSS_PARALLEL_DIALS` handshakes in flight from 127.0.0.1, more than
        // libp2p-ws's default per-address admission limit (16) lets one address hold: the listener
        // would close the surplus at once (the flood protection doing its job) and the dial fail.
        // The limit has no bearing on idle memory, so it is raised to the dialer's parallelism.
        Stack::Ws | Stack::WsTokio => {
            let keypair = Keypair::generate_ed25519();
            let config =
                libp2p_ws::Config::default().with_max_pending_handshakes_per_ip(RSS_PARALLEL_DIALS);
            if stack == Stack::Ws {
                libp2p_ws::async_std::upgraded(&keypair, config)
            } else {
                libp2p_ws::tokio::upgraded(&keypair, config)
            }
            .expect("libp2p-ws transport")
        }
        _ => full_transport(stack, role, None),
    };
    let addr = match role {
        Side::Listener => {
            let addr = listen(&mut transport, stack.listen_addr()).await?;
            println!("addr {addr}");
            addr
        }
        Side::Dialer => addr.context("the dialer needs an address")?,
    };
    let mut held = Held::new();
    let mut pending = FuturesUnordered::<LocalBoxFuture<'static, Result<Muxed>>>::new();
    let (mut to_dial, mut requested, mut established) = (0usize, 0usize, 0usize);
    let (mut dial_goal, mut measure_goal) = (None::<usize>, None::<usize>);
    let mut stopping = false;
    loop {
        while to_dial > 0 && pending.len() < RSS_PARALLEL_DIALS {
            let dial = transport
                .dial(addr.clone(), dial_opts())
                .map_err(|e| anyhow!("dial: {e}"))?;
            pending.push(
                async move {
                    within(WAIT, "dial and first stream", async {
                        let mut conn = dial.await.context("dial")?;
                        conn.dialer(1, Mode::Echo, 0).await?;
                        Ok(conn)
                    })
                    .await?
                }
                .boxed_local(),
            );
            to_dial -= 1;
        }
        if dial_goal.is_some_and(|goal| established >= goal) {
            dial_goal = None;
            println!("dialed {established}");
        }
        if measure_goal.is_some_and(|goal| established >= goal) {
            measure_goal = None;
            settle(&mut held, Duration::from_secs(1)).await?;
            let (heap_used, heap_free) = heap_usage();
            println!(
                "rss {} {established} {heap_used} {heap_free}",
                vm_rss_kib()?
            );
        }
        let busy =
            to_dial > 0 || !pending.is_empty() || dial_goal.is_some() || measure_goal.is_some();
        let next = poll_fn(|cx| {
            // Commands first, so that `stop` is seen before the connections it announces close.
            if let Poll::Ready(command) = commands.poll_next_unpin(cx) {
                return Poll::Ready(Event::Command(command));
            }
            if let Poll::Ready(event) = Pin::new(&mut transport).poll(cx) {
                return Poll::Ready(Event::Listener(event));
            }
            if let Poll::Ready(Some(result)) = pending.poll_next_unpin(cx) {
                return Poll::Ready(Event::Established(result));
            }
            if let Poll::Ready(Some(why)) = held.poll_next_unpin(cx) {
                return Poll::Ready(Event::Lost(why));
            }
            Poll::Pending
        });
        let event = if busy {
            within(WAIT, "establishing idle connections", next)
                .await
                .with_context(|| format!("{established} held, {} in progress", pending.len()))?
        } else {
            next.await
        };
        match event {
            Event::Listener(TransportEvent::Incoming { upgrade, .. }) => pending.push(
                async move {
                    within(WAIT, "accept and first stream", async {
                        let mut conn = upgrade.await.context("listener upgrade")?;
                        conn.listener(1, 0).await?;
                        Ok(conn)
                    })
                    .await?
                }
                .boxed_local(),
            ),
            Event::Listener(TransportEvent::ListenerError { error, .. }) => {
                bail!("listener error: {error}")
            }
            Event::Listener(_) => {}
            Event::Established(conn) => {
                held.push(hold(conn?));
                established += 1;
            }
            Event::Lost(_) if stopping => {}
            Event::Lost(why) => bail!("an idle connection ended: {why}"),
            Event::Command(None) => return Ok(()),
            Event::Command(Some(line)) if line == "stop" => {
                // The other end may close its connections from now on.
                stopping = true;
                println!("stopped");
            }
            Event::Command(Some(line)) => {
                let mut words = line.split_whitespace();
                let (command, n) = (words.next(), words.next().and_then(|n| n.parse().ok()));
                match (command, n) {
                    (Some("dial"), Some(n)) if role == Side::Dialer => {
                        to_dial += n;
                        requested += n;
                        dial_goal = Some(requested);
                    }
                    (Some("measure"), Some(n)) => measure_goal = Some(n),
                    _ => bail!("unknown command {line:?}"),
                }
            }
        }
    }
}

/// The child process's main: `--rss-child <listener|dialer> <stack> <connections> [<address>]`.
fn rss_child(args: &[String]) -> Result<()> {
    let role = match args.first().map(String::as_str) {
        Some("listener") => Side::Listener,
        Some("dialer") => Side::Dialer,
        other => bail!("bad role {other:?}"),
    };
    let stack = args
        .get(1)
        .and_then(|s| Stack::from_id(s))
        .context("bad stack")?;
    let total: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .context("bad count")?;
    let addr = args.get(3).map(|a| a.parse()).transpose()?;
    let limit = raise_nofile((total + 1024) as libc::rlim_t);
    ensure!(
        limit as usize >= total + 256,
        "RLIMIT_NOFILE is {limit} and cannot be raised: too low for {total} connections"
    );
    let (tx, commands) = mpsc::unbounded();
    thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(|l| l.ok()) {
            if tx.unbounded_send(line).is_err() {
                break;
            }
        }
    });
    block_on(stack.runtime(), rss_node(role, stack, addr, commands))
}

/// A child process of the bench binary, spoken to line by line.
struct ChildProcess {
    name: String,
    process: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ChildProcess {
    fn spawn(name: String, args: &[String]) -> Result<ChildProcess> {
        let exe = std::env::current_exe().context("locating the bench binary")?;
        let mut process = Command::new(exe)
            .arg("--rss-child")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdout = process.stdout.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ChildProcess {
            name,
            stdin: process.stdin.take(),
            process,
            lines,
        })
    }

    fn send(&mut self, command: &str) -> Result<()> {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("open until drop");
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("{} exited", self.name))
    }

    /// The first line starting with `prefix`, without it.
    fn expect(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.to_string());
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    bail!("{}: no {prefix:?} within {timeout:?}", self.name)
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("{} exited before {prefix:?}", self.name)
                }
            }
        }
    }

    /// Asks for `rss <KiB> <held> <heap bytes in use> <heap bytes free>` once `held` connections are
    /// held; [`ChildProcess::memory`] reads the reply.
    fn measure(&mut self, held: usize) -> Result<()> {
        self.send(&format!("measure {held}"))
    }

    fn memory(&mut self) -> Result<Memory> {
        let reply = self.expect("rss ", WAIT * 2)?;
        let numbers: Vec<u64> = reply
            .split_whitespace()
            .map(|v| v.parse())
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: bad reply {reply:?}", self.name))?;
        match numbers[..] {
            [rss_kib, _, heap_used, heap_free] => Ok(Memory {
                rss: rss_kib * 1024,
                heap_used,
                heap_free,
            }),
            _ => bail!("{}: bad reply {reply:?}", self.name),
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Closing stdin makes the child exit; kill it if it does not.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.process.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Memory of one process, in bytes.
#[derive(Clone, Copy, Debug)]
struct Memory {
    rss: u64,
    heap_used: u64,
    heap_free: u64,
}

/// Per idle endpoint, in bytes, of one side.
#[derive(Clone, Copy, Debug)]
struct PerEndpoint {
    rss: f64,
    heap_used: f64,
    heap_free: f64,
}

/// RSS (and glibc heap) per idle endpoint of `stack`: (listener side, dialer side).
fn measure_rss(stack: Stack, settings: &Settings) -> Result<(PerEndpoint, PerEndpoint)> {
    let (total, warm) = (settings.idle_conns, settings.warm_conns);
    let count = total.to_string();
    let mut listener = ChildProcess::spawn(
        format!("RSS listener ({})", stack.id()),
        &["listener".into(), stack.id().into(), count.clone()],
    )?;
    let addr = listener.expect("addr ", WAIT)?;
    let mut dialer = ChildProcess::spawn(
        format!("RSS dialer ({})", stack.id()),
        &["dialer".into(), stack.id().into(), count, addr],
    )?;
    dialer.send(&format!("dial {warm}"))?;
    dialer.expect("dialed ", WAIT * 2)?;
    // Both ends settle and measure at the same time.
    listener.measure(warm)?;
    dialer.measure(warm)?;
    let (listener_base, dialer_base) = (listener.memory()?, dialer.memory()?);
    let start = Instant::now();
    dialer.send(&format!("dial {}", total - warm))?;
    dialer.expect("dialed ", Duration::from_secs(60 + total as u64 / 20))?;
    let took = start.elapsed();
    listener.measure(total)?;
    dialer.measure(total)?;
    let (listener_after, dialer_after) = (listener.memory()?, dialer.memory()?);
    // Both stop watching their connections before either exits and closes them.
    listener.send("stop")?;
    dialer.send("stop")?;
    listener.expect("stopped", WAIT)?;
    dialer.expect("stopped", WAIT)?;
    let added = (total - warm) as f64;
    let delta = |a: u64, b: u64| (b as f64 - a as f64) / added;
    let per_endpoint = |base: Memory, after: Memory| PerEndpoint {
        rss: delta(base.rss, after.rss),
        heap_used: delta(base.heap_used, after.heap_used),
        heap_free: delta(base.heap_free, after.heap_free),
    };
    eprintln!(
        "  rss {}: {} connections in {:.1} s; RSS listener {} -> {} KiB, dialer {} -> {} KiB",
        stack.id(),
        total - warm,
        took.as_secs_f64(),
        listener_base.rss / 1024,
        listener_after.rss / 1024,
        dialer_base.rss / 1024,
        dialer_after.rss / 1024,
    );
    Ok((
        per_endpoint(listener_base, listener_after),
        per_endpoint(dialer_base, dialer_after),
    ))
}

// ----- the run and the report --------------------------------------------------------------------

#[derive(Default)]
struct Figures(BTreeMap<String, Vec<f64>>);

impl Figures {
    fn add(&mut self, key: String, value: f64) {
        self.0.entry(key).or_default().push(value);
    }

    fn median(&self, key: &str) -> Option<f64> {
        let mut values = self.0.get(key)?.clone();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        Some(if values.len() % 2 == 1 {
            values[mid]
        } else {
            (values[mid - 1] + values[mid]) / 2.0
        })
    }
}

fn tput_key(layer: Layer, stack: Stack, mode: Mode) -> String {
    format!("throughput.{}.{}.{}", layer.id(), stack.id(), mode.id())
}

fn run(settings: &Settings) -> Result<()> {
    let env = Env::new()?;
    let timeout = settings.transfer_timeout();
    let mut figures = Figures::default();
    let bench_start = Instant::now();
    let directions = [Mode::DialerUploads, Mode::ListenerUploads];

    let mut transfers: Vec<(Layer, Stack, Mode)> = Vec::new();
    if settings.section("full") {
        for stack in [
            Stack::Ws,
            Stack::Wss,
            Stack::WsTokio,
            Stack::Websocket,
            Stack::Tcp,
            Stack::TcpAsyncStd,
            Stack::TcpOurs,
            Stack::TcpOursAsyncStd,
        ] {
            transfers.extend(directions.map(|mode| (Layer::Full, stack, mode)));
        }
    }
    if settings.section("noise") {
        for stack in [Stack::Ws, Stack::Websocket, Stack::Tcp] {
            transfers.push((Layer::Noise, stack, Mode::DialerUploads));
        }
    }
    if settings.section("raw") {
        for stack in [Stack::Ws, Stack::Websocket, Stack::Tcp, Stack::TcpAsyncStd] {
            transfers.extend(directions.map(|mode| (Layer::Raw, stack, mode)));
        }
    }
    transfers.retain(|&(_, stack, mode)| settings.wants(stack, mode));
    let mut stream_stacks = Vec::new();
    if settings.section("streams") {
        stream_stacks.extend([
            Stack::Ws,
            Stack::WsTokio,
            Stack::Websocket,
            Stack::Tcp,
            Stack::TcpAsyncStd,
        ]);
    }
    stream_stacks.retain(|&stack| settings.wants(stack, Mode::DialerUploads));
    let mut setups: Vec<(Layer, Stack)> = Vec::new();
    if settings.section("setup") {
        for stack in [
            Stack::Ws,
            Stack::Wss,
            Stack::WsTokio,
            Stack::Websocket,
            Stack::Tcp,
            Stack::TcpOurs,
            Stack::WsShared,
        ] {
            setups.push((Layer::Full, stack));
        }
        for stack in [Stack::Ws, Stack::Websocket, Stack::Tcp, Stack::TcpAsyncStd] {
            setups.push((Layer::Raw, stack));
        }
    }
    setups.retain(|&(_, stack)| settings.wants(stack, Mode::Echo));
    let mut multi_stacks = Vec::new();
    if settings.section("multi") {
        multi_stacks.extend(multi::STACKS);
    }
    multi_stacks.retain(|&stack| settings.wants(stack, Mode::DialerUploads));
    let multi_bytes = settings.multi_bytes * settings.multi_conns as u64;
    let multi_timeout = Duration::from_secs(60.max(multi_bytes / 10_000_000));

    for run in 1..=settings.runs {
        // Stacks alternate within each run, so that drift on the machine hits all alike.
        for &(layer, stack, mode) in &transfers {
            let plan = Plan::Transfer {
                mode,
                streams: 1,
                bytes: settings.bytes,
            };
            let outcome = measure_stack(stack, layer, plan, &env, timeout)
                .with_context(|| format!("{} {}", stack.label(layer), mode.id()))?;
            let mbps = throughput(&outcome.received)?;
            eprintln!(
                "run {run}/{}: {:<38} {:<16} {mbps:8.1} MB/s",
                settings.runs,
                stack.label(layer),
                mode.id()
            );
            figures.add(tput_key(layer, stack, mode), mbps);
        }
        for &stack in &stream_stacks {
            let plan = Plan::Transfer {
                mode: Mode::DialerUploads,
                streams: settings.streams,
                bytes: settings.bytes / settings.streams as u64,
            };
            let outcome =
                measure_stack(stack, Layer::Full, plan, &env, timeout).with_context(|| {
                    format!("{} {} streams", stack.label(Layer::Full), settings.streams)
                })?;
            let mbps = throughput(&outcome.received)?;
            eprintln!(
                "run {run}/{}: {:<38} {:<16} {mbps:8.1} MB/s",
                settings.runs,
                stack.label(Layer::Full),
                format!("{} streams", settings.streams),
            );
            figures.add(format!("streams.{}", stack.id()), mbps);
        }
        for &(layer, stack) in &setups {
            let plan = Plan::Setup {
                count: settings.setup_conns,
            };
            let outcome = measure_stack(stack, layer, plan, &env, WAIT)
                .with_context(|| format!("{} setup", stack.label(layer)))?;
            let n = outcome.setups.len() as f64;
            let upgraded = outcome
                .setups
                .iter()
                .map(|s| s.0.as_secs_f64())
                .sum::<f64>()
                / n;
            let first = outcome
                .setups
                .iter()
                .map(|s| s.1.as_secs_f64())
                .sum::<f64>()
                / n;
            let per_sec = n / outcome.elapsed.as_secs_f64();
            eprintln!(
                "run {run}/{}: {:<38} setup {:.3} ms, with first stream {:.3} ms, {per_sec:.0} conn/s",
                settings.runs,
                stack.label(layer),
                upgraded * 1e3,
                first * 1e3
            );
            let key = format!("{}.{}", layer.id(), stack.id());
            figures.add(format!("setup.{key}"), upgraded * 1e3);
            figures.add(format!("setup_first_stream.{key}"), first * 1e3);
            figures.add(format!("conns_per_sec.{key}"), per_sec);
        }
        for &stack in &multi_stacks {
            let outcome = multi::measure(
                stack,
                settings.multi_conns,
                settings.multi_bytes,
                multi_timeout,
            )
            .with_context(|| {
                format!(
                    "{} {} connections on a multi-thread runtime",
                    stack.label(Layer::Full),
                    settings.multi_conns
                )
            })?;
            let cpu = outcome.cpu.as_secs_f64();
            let wall = outcome.wall.as_secs_f64();
            eprintln!(
                "run {run}/{}: {:<38} {:<16} {:8.1} MB/s, {cpu:.2} CPU-s in {wall:.2} s, {:.3} CPU-ns/B",
                settings.runs,
                stack.label(Layer::Full),
                format!("{} conns (mt)", settings.multi_conns),
                outcome.mbps,
                outcome.cpu_ns_per_byte(),
            );
            let id = stack.id();
            figures.add(format!("aggregate.{id}"), outcome.mbps);
            figures.add(format!("cpu_seconds.{id}"), cpu);
            figures.add(format!("cpu_per_byte.{id}"), outcome.cpu_ns_per_byte());
            figures.add(format!("cpu_busy.{id}"), cpu / wall.max(1e-9));
        }
    }
    let throughput_time = bench_start.elapsed();

    if settings.section("rss") {
        for _ in 0..settings.rss_runs {
            for stack in [Stack::Ws, Stack::WsTokio, Stack::Websocket, Stack::Tcp] {
                if !settings.wants(stack, Mode::Echo) {
                    continue;
                }
                let (listener, dialer) = measure_rss(stack, settings)
                    .with_context(|| format!("RSS of {}", stack.label(Layer::Full)))?;
                let kib = |v: f64| v / 1024.0;
                let both = kib(listener.rss + dialer.rss) / 2.0;
                eprintln!(
                    "rss: {:<38} {both:.2} KiB per idle connection endpoint (listener {:.2}, dialer {:.2}; glibc heap in use {:.2} / {:.2}, free {:.2} / {:.2})",
                    stack.label(Layer::Full),
                    kib(listener.rss),
                    kib(dialer.rss),
                    kib(listener.heap_used),
                    kib(dialer.heap_used),
                    kib(listener.heap_free),
                    kib(dialer.heap_free),
                );
                let id = stack.id();
                figures.add(format!("rss.{id}"), both);
                figures.add(format!("rss_listener.{id}"), kib(listener.rss));
                figures.add(format!("rss_dialer.{id}"), kib(dialer.rss));
                figures.add(
                    format!("heap_in_use_listener.{id}"),
                    kib(listener.heap_used),
                );
                figures.add(format!("heap_in_use_dialer.{id}"), kib(dialer.heap_used));
                figures.add(format!("heap_free_listener.{id}"), kib(listener.heap_free));
                figures.add(format!("heap_free_dialer.{id}"), kib(dialer.heap_free));
            }
        }
    }

    report(settings, &figures);
    eprintln!(
        "bench took {:.1} s ({:.1} s transfers and setups, {:.1} s RSS)",
        bench_start.elapsed().as_secs_f64(),
        throughput_time.as_secs_f64(),
        (bench_start.elapsed() - throughput_time).as_secs_f64()
    );
    Ok(())
}

fn fmt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "–".into(), |v| format!("{v:.decimals$}"))
}

fn report(settings: &Settings, f: &Figures) {
    let cpus = pinning().map_or_else(
        || "not pinned (fewer than 2 CPUs)".to_string(),
        |(a, b)| format!("listener on CPU {a}, dialer on CPU {b}"),
    );
    println!();
    println!(
        "## Transport benchmark ({} mode): {} MiB per transfer, medians of {} run(s), {} idle connections for RSS; {cpus}{}",
        if settings.quick { "quick" } else { "full" },
        settings.bytes / MIB,
        settings.runs,
        settings.idle_conns,
        if cfg!(debug_assertions) { "; DEV PROFILE (numbers are meaningless)" } else { "" }
    );
    println!();
    println!("| stack | dialer uploads (MB/s) | listener uploads (MB/s) | {} streams (MB/s) | setup (ms) | setup + first stream (ms) | conn/s | RSS per idle endpoint (KiB) |", settings.streams);
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let rows: [(Layer, Stack); 16] = [
        (Layer::Full, Stack::Ws),
        (Layer::Full, Stack::Wss),
        (Layer::Full, Stack::WsTokio),
        (Layer::Full, Stack::Websocket),
        (Layer::Full, Stack::Tcp),
        (Layer::Full, Stack::TcpAsyncStd),
        (Layer::Full, Stack::TcpOurs),
        (Layer::Full, Stack::TcpOursAsyncStd),
        (Layer::Full, Stack::WsShared),
        (Layer::Noise, Stack::Ws),
        (Layer::Noise, Stack::Websocket),
        (Layer::Noise, Stack::Tcp),
        (Layer::Raw, Stack::Ws),
        (Layer::Raw, Stack::Websocket),
        (Layer::Raw, Stack::Tcp),
        (Layer::Raw, Stack::TcpAsyncStd),
    ];
    for (layer, stack) in rows {
        let key = format!("{}.{}", layer.id(), stack.id());
        let full = layer == Layer::Full;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            stack.label(layer),
            fmt(f.median(&tput_key(layer, stack, Mode::DialerUploads)), 0),
            fmt(f.median(&tput_key(layer, stack, Mode::ListenerUploads)), 0),
            fmt(
                full.then(|| f.median(&format!("streams.{}", stack.id())))
                    .flatten(),
                0
            ),
            fmt(f.median(&format!("setup.{key}")), 3),
            fmt(f.median(&format!("setup_first_stream.{key}")), 3),
            fmt(f.median(&format!("conns_per_sec.{key}")), 0),
            fmt(
                full.then(|| f.median(&format!("rss.{}", stack.id())))
                    .flatten(),
                2
            ),
        );
    }

    if f.median("rss.ws").is_some() || f.median("rss.ws-tokio").is_some() {
        println!();
        println!("| idle endpoint (KiB) | RSS | RSS listener | RSS dialer | glibc heap in use, listener | glibc heap in use, dialer |");
        println!("|---|---:|---:|---:|---:|---:|");
        for stack in [Stack::Ws, Stack::WsTokio, Stack::Websocket, Stack::Tcp] {
            let id = stack.id();
            let get = |what: &str| fmt(f.median(&format!("{what}.{id}")), 2);
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                stack.label(Layer::Full),
                get("rss"),
                get("rss_listener"),
                get("rss_dialer"),
                get("heap_in_use_listener"),
                get("heap_in_use_dialer"),
            );
        }
    }

    if multi::STACKS
        .iter()
        .any(|s| f.median(&format!("aggregate.{}", s.id())).is_some())
    {
        println!();
        println!(
            "| {} connections x 1 stream, dialer uploads {} MiB each; tokio multi-thread ({} workers, not pinned); SwarmBuilder | aggregate (MB/s) | process CPU (s) | CPU per byte (ns/B) | CPUs busy |",
            settings.multi_conns,
            settings.multi_bytes / MIB,
            multi::workers(),
        );
        println!("|---|---:|---:|---:|---:|");
        for stack in multi::STACKS {
            let id = stack.id();
            let get = |what: &str, decimals| fmt(f.median(&format!("{what}.{id}")), decimals);
            println!(
                "| {} | {} | {} | {} | {} |",
                stack.label(Layer::Full),
                get("aggregate", 0),
                get("cpu_seconds", 2),
                get("cpu_per_byte", 3),
                get("cpu_busy", 2),
            );
        }
    }

    // Ratios of medians; where there are two directions, the worse one counts.
    let tput = |layer, a, b| -> Option<(f64, f64, f64)> {
        let up = f.median(&tput_key(layer, a, Mode::DialerUploads))?
            / f.median(&tput_key(layer, b, Mode::DialerUploads))?;
        let down = f.median(&tput_key(layer, a, Mode::ListenerUploads))?
            / f.median(&tput_key(layer, b, Mode::ListenerUploads))?;
        Some((up.min(down), up, down))
    };
    let simple = |a: &str, b: &str| Some(f.median(a)? / f.median(b)?);
    struct Ratio {
        name: &'static str,
        value: Option<f64>,
        detail: String,
        target: &'static str,
        met: Option<bool>,
    }
    let mut ratios = Vec::new();
    let tput_ratio = |name, layer, a, b, min: f64, target| {
        let r = tput(layer, a, b);
        Ratio {
            name,
            value: r.map(|r| r.0),
            detail: r.map_or_else(String::new, |(_, up, down)| {
                format!("dialer uploads {up:.3}, listener uploads {down:.3}")
            }),
            target,
            met: r.map(|r| r.0 >= min),
        }
    };
    let mut throughput_ratio = |name, layer, a, b, min: f64, target| {
        ratios.push(tput_ratio(name, layer, a, b, min, target));
    };
    throughput_ratio(
        "throughput_ws_vs_tcp",
        Layer::Full,
        Stack::Ws,
        Stack::Tcp,
        0.95,
        ">= 0.95",
    );
    throughput_ratio(
        "throughput_ws_vs_websocket",
        Layer::Full,
        Stack::Ws,
        Stack::Websocket,
        1.3,
        ">= 1.3",
    );
    throughput_ratio(
        "raw_throughput_ws_vs_websocket",
        Layer::Raw,
        Stack::Ws,
        Stack::Websocket,
        2.5,
        ">= 2.5",
    );
    throughput_ratio(
        "raw_throughput_ws_vs_tcp",
        Layer::Raw,
        Stack::Ws,
        Stack::Tcp,
        0.6,
        ">= 0.6",
    );
    let setup = simple("setup.full.ws", "setup.full.tcp");
    ratios.push(Ratio {
        name: "setup_ws_vs_tcp",
        value: setup,
        detail: "mean dial -> upgraded (noise+yamux), lower is better".into(),
        target: "<= 1.1",
        met: setup.map(|v| v <= 1.1),
    });
    let rss_tcp = simple("rss.ws", "rss.tcp");
    ratios.push(Ratio {
        name: "rss_ws_vs_tcp",
        value: rss_tcp,
        detail: "RSS per idle upgraded endpoint, lower is better".into(),
        target: "<= 1.15",
        met: rss_tcp.map(|v| v <= 1.15),
    });
    ratios.push(Ratio {
        name: "rss_ws_vs_websocket",
        value: simple("rss.ws", "rss.websocket"),
        detail: "RSS per idle upgraded endpoint, lower is better".into(),
        target: "(reported)",
        met: None,
    });
    // The tokio backend against libp2p-tcp, both on tokio.
    ratios.push(tput_ratio(
        "throughput_ws_tokio_vs_tcp",
        Layer::Full,
        Stack::WsTokio,
        Stack::Tcp,
        0.95,
        ">= 0.95",
    ));
    let at_least = |name, a: &str, b: &str, detail: String, min: f64, target| {
        let value = simple(a, b);
        Ratio {
            name,
            value,
            detail,
            target,
            met: value.map(|v| v >= min),
        }
    };
    let at_most = |name, a: &str, b: &str, detail: &str, max: f64, target| {
        let value = simple(a, b);
        Ratio {
            name,
            value,
            detail: detail.into(),
            target,
            met: value.map(|v| v <= max),
        }
    };
    ratios.push(at_least(
        "streams_ws_tokio_vs_tcp",
        "streams.ws-tokio",
        "streams.tcp",
        format!(
            "{} concurrent yamux streams, dialer uploads",
            settings.streams
        ),
        0.95,
        ">= 0.95",
    ));
    ratios.push(at_most(
        "setup_ws_tokio_vs_tcp",
        "setup.full.ws-tokio",
        "setup.full.tcp",
        "mean dial -> upgraded (noise+yamux), lower is better",
        1.1,
        "<= 1.1",
    ));
    ratios.push(at_most(
        "rss_ws_tokio_vs_tcp",
        "rss.ws-tokio",
        "rss.tcp",
        "RSS per idle upgraded endpoint, lower is better",
        1.1,
        "<= 1.1",
    ));
    ratios.push(at_least(
        "aggregate_ws_tokio_vs_tcp",
        "aggregate.ws-tokio",
        "aggregate.tcp",
        format!(
            "{} connections x 1 stream, tokio multi-thread ({} workers), SwarmBuilder",
            settings.multi_conns,
            multi::workers()
        ),
        0.95,
        ">= 0.95",
    ));
    ratios.push(at_most(
        "cpu_per_byte_ws_tokio_vs_tcp",
        "cpu_per_byte.ws-tokio",
        "cpu_per_byte.tcp",
        "process CPU time per byte in the multi section, lower is better",
        1.05,
        "<= 1.05",
    ));
    // The async-std backend against the same runtime without WebSocket: the layer's own cost.
    ratios.push(tput_ratio(
        "throughput_ws_vs_tcp_async_std",
        Layer::Full,
        Stack::Ws,
        Stack::TcpAsyncStd,
        0.95,
        ">= 0.95",
    ));
    ratios.push(at_least(
        "streams_ws_vs_tcp_async_std",
        "streams.ws",
        "streams.tcp-async-std",
        format!(
            "{} concurrent yamux streams, dialer uploads",
            settings.streams
        ),
        0.95,
        ">= 0.95",
    ));
    // libp2p-ws's own /tcp (tokio backend) against libp2p-tcp: the same TCP + noise + yamux, so
    // whatever differs is the transport's (first-bytes classification included on the listener).
    ratios.push(tput_ratio(
        "throughput_tcp_ours_vs_tcp",
        Layer::Full,
        Stack::TcpOurs,
        Stack::Tcp,
        0.97,
        ">= 0.97",
    ));
    // /ws on a port shared with /tcp (the listener reads the first bytes to pick the listener)
    // against /ws alone on its port, both libp2p-ws tokio.
    ratios.push(at_most(
        "setup_shared_vs_unshared",
        "setup.full.ws-shared",
        "setup.full.ws-tokio",
        "mean dial -> upgraded over /ws, shared port (/tcp + /ws) vs /ws alone, lower is better",
        1.05,
        "<= 1.05",
    ));

    println!();
    println!("| ratio | value | detail | target | met |");
    println!("|---|---:|---|---|---|");
    for r in &ratios {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.name,
            fmt(r.value, 3),
            r.detail,
            r.target,
            match r.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "–",
            }
        );
    }
    let direction = |a: Stack, b: Stack, mode| {
        Some(
            f.median(&tput_key(Layer::Full, a, mode))?
                / f.median(&tput_key(Layer::Full, b, mode))?,
        )
    };
    let extra = [
        ("streams_ws_vs_tcp", simple("streams.ws", "streams.tcp")),
        (
            "streams_ws_vs_websocket",
            simple("streams.ws", "streams.websocket"),
        ),
        (
            "setup_ws_vs_websocket",
            simple("setup.full.ws", "setup.full.websocket"),
        ),
        (
            "setup_first_stream_ws_vs_tcp",
            simple("setup_first_stream.full.ws", "setup_first_stream.full.tcp"),
        ),
        (
            "conns_per_sec_ws_vs_tcp",
            simple("conns_per_sec.full.ws", "conns_per_sec.full.tcp"),
        ),
        (
            "raw_setup_ws_vs_websocket",
            simple("setup.raw.ws", "setup.raw.websocket"),
        ),
        (
            "throughput_ws_tokio_vs_tcp_dialer_uploads",
            direction(Stack::WsTokio, Stack::Tcp, Mode::DialerUploads),
        ),
        (
            "throughput_ws_tokio_vs_tcp_listener_uploads",
            direction(Stack::WsTokio, Stack::Tcp, Mode::ListenerUploads),
        ),
        (
            "throughput_ws_vs_tcp_async_std_dialer_uploads",
            direction(Stack::Ws, Stack::TcpAsyncStd, Mode::DialerUploads),
        ),
        (
            "throughput_ws_vs_tcp_async_std_listener_uploads",
            direction(Stack::Ws, Stack::TcpAsyncStd, Mode::ListenerUploads),
        ),
        (
            "setup_first_stream_ws_tokio_vs_tcp",
            simple(
                "setup_first_stream.full.ws-tokio",
                "setup_first_stream.full.tcp",
            ),
        ),
        (
            "conns_per_sec_ws_tokio_vs_tcp",
            simple("conns_per_sec.full.ws-tokio", "conns_per_sec.full.tcp"),
        ),
        (
            "streams_ws_tokio_vs_ws",
            simple("streams.ws-tokio", "streams.ws"),
        ),
        (
            "cpu_busy_ws_tokio_vs_tcp",
            simple("cpu_busy.ws-tokio", "cpu_busy.tcp"),
        ),
        (
            "throughput_tcp_ours_vs_tcp_dialer_uploads",
            direction(Stack::TcpOurs, Stack::Tcp, Mode::DialerUploads),
        ),
        (
            "throughput_tcp_ours_vs_tcp_listener_uploads",
            direction(Stack::TcpOurs, Stack::Tcp, Mode::ListenerUploads),
        ),
        (
            "throughput_tcp_ours_async_std_vs_tcp_async_std_dialer_uploads",
            direction(
                Stack::TcpOursAsyncStd,
                Stack::TcpAsyncStd,
                Mode::DialerUploads,
            ),
        ),
        (
            "throughput_tcp_ours_async_std_vs_tcp_async_std_listener_uploads",
            direction(
                Stack::TcpOursAsyncStd,
                Stack::TcpAsyncStd,
                Mode::ListenerUploads,
            ),
        ),
        (
            "setup_tcp_ours_vs_tcp",
            simple("setup.full.tcp-ours", "setup.full.tcp"),
        ),
        (
            "setup_first_stream_shared_vs_unshared",
            simple(
                "setup_first_stream.full.ws-shared",
                "setup_first_stream.full.ws-tokio",
            ),
        ),
    ];
    println!();
    println!(
        "Also: {}",
        extra
            .iter()
            .map(|(name, v)| format!("{name} {}", fmt(*v, 3)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    println!();
    for r in &ratios {
        if let Some(value) = r.value {
            println!("{{\"ratio\": \"{}\", \"value\": {value:.4}}}", r.name);
        }
    }
    for (key, _) in f.0.iter() {
        let unit = match key.split('.').next() {
            Some("throughput" | "streams" | "aggregate") => "MB/s",
            Some("cpu_seconds") => "s",
            Some("cpu_per_byte") => "ns/B",
            Some("cpu_busy") => "CPUs",
            Some("setup" | "setup_first_stream") => "ms",
            Some("conns_per_sec") => "conn/s",
            Some(
                "rss"
                | "rss_listener"
                | "rss_dialer"
                | "heap_in_use_listener"
                | "heap_in_use_dialer"
                | "heap_free_listener"
                | "heap_free_dialer",
            ) => "KiB",
            _ => "",
        };
        if let Some(value) = f.median(key) {
            println!("{{\"figure\": \"{key}\", \"value\": {value:.4}, \"unit\": \"{unit}\"}}");
        }
    }
    for (name, value) in extra {
        if let Some(value) = value {
            println!(
                "{{\"figure\": \"ratio.{name}\", \"value\": {value:.4}, \"unit\": \"ratio\"}}"
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--rss-child") {
        let code = match rss_child(&args[i + 1..]) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        };
        // Skip tearing down thousands of connections.
        std::process::exit(code);
    }
    // `cargo bench` passes `--bench`; `cargo test` (e.g. `--all-targets`) passes nothing, and gets
    // the quick mode rather than minutes of 1 GiB transfers in the dev profile. `--full` forces the
    // full run (e.g. when starting the binary directly). Other arguments are ignored.
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let quick = has("--quick") || !(has("--bench") || has("--full"));
    let settings = Settings::from_env(quick);
    raise_nofile(4096);
    if let Err(e) = run(&settings) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
