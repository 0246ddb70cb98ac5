//! The many-connections section (`multi`): nodes as applications run them.
//!
//! Two swarms, both built with libp2p's `SwarmBuilder` on a tokio multi-thread runtime with as
//! many workers as the process has CPUs (not pinned): a listener and a dialer that opens `conns`
//! connections to it (separate dials, so separate connections, each with its own task as the swarm
//! spawns it) and one stream per connection, over which the dialer uploads `bytes` each. libp2p-tcp
//! is `SwarmBuilder::with_tcp` (nodelay, noise, yamux); libp2p-ws is
//! `with_other_transport(libp2p_ws::tokio::constructor(..))`. A small behaviour of ours opens the
//! one outbound stream on each connection and hands every negotiated stream (a `libp2p::Stream`)
//! to the bench, which runs each stream's transfer in its own tokio task.
//!
//! Measured once all streams are open: the aggregate throughput of the receivers (first read to
//! last byte, as elsewhere in the bench) and the CPU time of the whole process (getrusage, user +
//! system, all threads) from the start of the transfers until every stream is done, per byte moved.

use std::{
    convert::Infallible,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use futures::{channel::mpsc, AsyncWriteExt, StreamExt};
use libp2p::{
    core::{transport::PortUse, upgrade::ReadyUpgrade, Endpoint, Multiaddr},
    swarm::{
        dial_opts::{DialOpts, PeerCondition},
        handler::{ConnectionEvent, FullyNegotiatedInbound, FullyNegotiatedOutbound},
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, Stream, StreamProtocol, SubstreamProtocol, Swarm, SwarmEvent, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    PeerId,
};

use crate::{
    protocol::{stream_dialer, stream_listener, throughput, Received},
    runtime::{allowed_cpus, within, Rt, RUNTIME},
    stacks::{Mode, Stack},
    WAIT,
};

const PROTOCOL: StreamProtocol = StreamProtocol::new("/libp2p-ws-bench/1.0.0");

/// The stacks of the section (libp2p-tcp first: the reference).
pub(crate) const STACKS: [Stack; 2] = [Stack::Tcp, Stack::WsTokio];

/// What one measurement of the section found.
pub(crate) struct Outcome {
    /// Aggregate throughput of the receivers, MB/s.
    pub(crate) mbps: f64,
    /// Process CPU time (user + system) during the transfers.
    pub(crate) cpu: Duration,
    /// Wall time of the transfers (from starting them until every stream is done).
    pub(crate) wall: Duration,
    /// Bytes moved (the payload of all streams).
    pub(crate) bytes: u64,
}

impl Outcome {
    /// CPU nanoseconds per byte moved (= CPU seconds per GB).
    pub(crate) fn cpu_ns_per_byte(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e9 / self.bytes as f64
    }
}

/// The number of tokio workers: one per CPU this process may run on.
pub(crate) fn workers() -> usize {
    allowed_cpus().len().max(1)
}

/// User + system CPU time of the whole process (all threads).
fn process_cpu_time() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given a valid pointer to.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Measures `stack` with `conns` connections, one stream each, `bytes` uploaded on each.
pub(crate) fn measure(
    stack: Stack,
    conns: usize,
    bytes: u64,
    timeout: Duration,
) -> Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers())
        .enable_all()
        // The bench's timers (`within`) look up the runtime of the thread they run on.
        .on_thread_start(|| RUNTIME.with(|c| c.set(Rt::Tokio)))
        .build()
        .context("building the tokio multi-thread runtime")?;
    let previous = RUNTIME.with(|c| c.replace(Rt::Tokio));
    let result = runtime.block_on(run(stack, conns, bytes, timeout));
    RUNTIME.with(|c| c.set(previous));
    // The swarms' tasks are still there (the connections stay open until now): drop them.
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn run(stack: Stack, conns: usize, bytes: u64, timeout: Duration) -> Result<Outcome> {
    let (listener_streams, mut inbound) = mpsc::unbounded();
    let (dialer_streams, mut outbound) = mpsc::unbounded();
    let mut listener = swarm(stack, Behaviour::new(false, listener_streams))?;
    let mut dialer = swarm(stack, Behaviour::new(true, dialer_streams))?;
    listener
        .listen_on(stack.listen_addr().parse()?)
        .context("listen_on")?;
    let addr = within(WAIT, "waiting for the listen address", async {
        loop {
            match listener.select_next_some().await {
                SwarmEvent::NewListenAddr { address, .. } => return Ok(address),
                SwarmEvent::ListenerError { error, .. } => bail!("listener error: {error}"),
                _ => {}
            }
        }
    })
    .await??;
    let peer = *listener.local_peer_id();
    for _ in 0..conns {
        dialer
            .dial(
                DialOpts::peer_id(peer)
                    .addresses(vec![addr.clone()])
                    // Every dial is a new connection, even to a peer already connected.
                    .condition(PeerCondition::Always)
                    .build(),
            )
            .context("dial")?;
    }
    let listener = tokio::spawn(drive(listener));
    let dialer = tokio::spawn(drive(dialer));
    let (senders, receivers) = match within(WAIT, "opening the connections and streams", async {
        let (mut senders, mut receivers) = (Vec::new(), Vec::new());
        while senders.len() < conns || receivers.len() < conns {
            futures::select! {
                stream = outbound.next() => senders.push(stream.context("the dialer stopped")?),
                stream = inbound.next() => receivers.push(stream.context("the listener stopped")?),
            }
        }
        anyhow::Ok((senders, receivers))
    })
    .await
    {
        Ok(streams) => streams?,
        Err(e) => {
            // A swarm that stopped says why.
            for (name, task) in [("listener", listener), ("dialer", dialer)] {
                if !task.is_finished() {
                    task.abort();
                } else if let Ok(Err(why)) = task.await {
                    return Err(e.context(format!("the {name} swarm stopped: {why:#}")));
                }
            }
            return Err(e);
        }
    };

    let cpu_start = process_cpu_time();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(2 * conns);
    for mut stream in senders {
        tasks.push(tokio::spawn(async move {
            let result = stream_dialer(&mut stream, Mode::DialerUploads, bytes).await;
            // Close rather than drop: a dropped yamux stream may be reset before its last frames
            // leave.
            let _ = stream.close().await;
            result
        }));
    }
    for mut stream in receivers {
        tasks.push(tokio::spawn(async move {
            let result = stream_listener(&mut stream, bytes).await;
            let _ = stream.close().await;
            result
        }));
    }
    let received: Vec<Received> = within(timeout, "the transfers", async {
        let mut received = Vec::new();
        for task in tasks {
            received.extend(
                task.await
                    .map_err(|e| anyhow!("a transfer task failed: {e}"))??,
            );
        }
        anyhow::Ok(received)
    })
    .await??;
    let wall = start.elapsed();
    let cpu = process_cpu_time().saturating_sub(cpu_start);
    listener.abort();
    dialer.abort();
    anyhow::ensure!(
        received.len() == conns,
        "{} of {conns} streams received",
        received.len()
    );
    Ok(Outcome {
        mbps: throughput(&received)?,
        cpu,
        wall,
        bytes: bytes * conns as u64,
    })
}

/// A swarm of `stack` built the way applications build theirs.
fn swarm(stack: Stack, behaviour: Behaviour) -> Result<Swarm<Behaviour>> {
    let builder = libp2p::SwarmBuilder::with_new_identity().with_tokio();
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(60));
    Ok(match stack {
        Stack::Tcp => builder
            .with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )?
            .with_behaviour(|_| behaviour)?
            .with_swarm_config(idle)
            .build(),
        Stack::WsTokio => builder
            .with_other_transport(libp2p_ws::tokio::constructor(libp2p_ws::Config::default()))
            .map_err(|e| anyhow!("{e}"))?
            .with_behaviour(|_| behaviour)?
            .with_swarm_config(idle)
            .build(),
        other => bail!("the multi section has no {other:?} stack"),
    })
}

/// Drives a swarm until it fails (connection errors end it: nothing should fail here).
async fn drive(mut swarm: Swarm<Behaviour>) -> Result<()> {
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::OutgoingConnectionError { error, .. } => bail!("dial failed: {error}"),
            SwarmEvent::IncomingConnectionError { error, .. } => {
                bail!("incoming connection failed: {error}")
            }
            SwarmEvent::ListenerError { error, .. } => bail!("listener error: {error}"),
            _ => {}
        }
    }
}

/// Opens one stream on each outbound connection (when `open`), accepts the streams of the
/// protocol on every connection, and sends each negotiated stream to the bench.
struct Behaviour {
    open: bool,
    streams: mpsc::UnboundedSender<Stream>,
}

impl Behaviour {
    fn new(open: bool, streams: mpsc::UnboundedSender<Stream>) -> Behaviour {
        Behaviour { open, streams }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler {
            open: false,
            streams: self.streams.clone(),
        })
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler {
            open: self.open,
            streams: self.streams.clone(),
        })
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        e: THandlerOutEvent<Self>,
    ) {
        match e {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

struct Handler {
    /// An outbound stream is still to be requested.
    open: bool,
    streams: mpsc::UnboundedSender<Stream>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ())
    }

    fn connection_keep_alive(&self) -> bool {
        // Open until the bench drops the swarm.
        true
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        if std::mem::take(&mut self.open) {
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ()),
            });
        }
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, e: Self::FromBehaviour) {
        match e {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            })
            | ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                ..
            }) => {
                let _ = self.streams.unbounded_send(stream);
            }
            ConnectionEvent::DialUpgradeError(e) => {
                // The bench times out waiting for the stream and says so; this says why.
                eprintln!("multi: opening the stream failed: {:?}", e.error);
            }
            _ => {}
        }
    }
}
