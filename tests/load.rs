//! Load over the full stack (noise + yamux over libp2p-ws): 10,000 sequential
//! connect/upgrade/stream/close cycles leak neither file descriptors nor memory, and
//! go-libp2p-style stress (many connections x many streams x many messages, all at once) echoes
//! every byte intact. Every test runs on both runtimes over real sockets on 127.0.0.1 and bounds
//! every wait. Each test prints the figures it measures, each line naming the runtime (`figure
//! (tokio): ...`; run with `--nocapture` to see them).
//!
//! The cycles test counts file descriptors and RSS, so it runs through [`exclusive`], beside
//! nothing else of this binary; the stress tests through [`shared`].
//!
//! Environment knob: `HARDENING_CYCLES`, the cycles in `sequential_cycles_leak_nothing` (default
//! 10,000; about 15 s per runtime in a debug build).

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::Poll,
    time::{Duration, Instant},
};

use common::{process::*, *};
use futures::{
    channel::{mpsc, oneshot},
    future::poll_fn,
    AsyncReadExt, AsyncWriteExt, StreamExt,
};
use libp2p::core::{
    muxing::{StreamMuxerBox, StreamMuxerExt, SubstreamBox},
    Multiaddr, Transport as _,
};
use libp2p::identity::Keypair;
use libp2p_ws::Config;

// =================================================================================================
// Many sequential cycles over the full stack
// =================================================================================================

type Muxed = (libp2p::PeerId, StreamMuxerBox);

/// A full-stack (noise + yamux) listener whose connections echo every inbound stream; each
/// connection's task ends (dropping it) when the remote closes, and reports on `closed`.
struct EchoPeer {
    addr: Multiaddr,
    closed: mpsc::UnboundedReceiver<()>,
    _stop: oneshot::Sender<()>,
}

impl EchoPeer {
    /// On runtime `R`.
    async fn start<R: Runtime>(config: Config) -> EchoPeer {
        let key = Keypair::generate_ed25519();
        let mut transport = R::upgraded(&key, config);
        let (_, addr) = listen_any(&mut transport, "/ip4/127.0.0.1/tcp/0/ws").await;
        let (closed_tx, closed) = mpsc::unbounded();
        let stop = drive_listener::<R, _>(transport, move |upgrade| {
            let closed_tx = closed_tx.clone();
            R::spawn_detached(async move {
                if let Ok((_, muxer)) = upgrade.await {
                    serve_echo::<R>(muxer).await;
                }
                let _ = closed_tx.unbounded_send(());
            });
        });
        EchoPeer {
            addr,
            closed,
            _stop: stop,
        }
    }
}

/// Echoes every inbound stream until the connection ends.
async fn serve_echo<R: Runtime>(muxer: StreamMuxerBox) {
    let mut muxer = Muxer::spawn::<R>(muxer);
    while let Some(stream) = muxer.inbound.next().await {
        R::spawn_detached(echo_stream(stream));
    }
}

/// Echoes length-prefixed messages until EOF.
async fn echo_stream(stream: SubstreamBox) {
    let (mut r, mut w) = stream.split();
    let mut len = [0u8; 4];
    let mut buf = Vec::new();
    loop {
        if r.read_exact(&mut len).await.is_err() {
            break;
        }
        buf.resize(u32::from_be_bytes(len) as usize, 0);
        if r.read_exact(&mut buf).await.is_err() {
            break;
        }
        if w.write_all(&len).await.is_err()
            || w.write_all(&buf).await.is_err()
            || w.flush().await.is_err()
        {
            break;
        }
    }
    let _ = w.close().await;
}

/// Sends `count` messages (sizes 1..=max_len, seeded) on `stream` and checks each echo byte by byte.
async fn exchange(stream: SubstreamBox, seed: u64, count: usize, max_len: usize) -> usize {
    let mut stream = stream;
    let mut verified = 0;
    let mut echo = Vec::new();
    for i in 0..count as u64 {
        let len = 1 + (seed.wrapping_mul(31).wrapping_add(i * 7919) as usize % max_len);
        let message = pattern(seed ^ (i << 32), len);
        stream.write_all(&(len as u32).to_be_bytes()).await.unwrap();
        stream.write_all(&message).await.unwrap();
        stream.flush().await.unwrap();
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).await.unwrap();
        assert_eq!(u32::from_be_bytes(prefix) as usize, len);
        echo.resize(len, 0);
        stream.read_exact(&mut echo).await.unwrap();
        assert!(echo == message, "stream {seed} message {i}: echo differs");
        verified += len;
    }
    stream.close().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    verified
}

/// Streams allowed open at once per connection: yamux's ACK backlog (and well under its limit of
/// 512 streams).
const MAX_STREAMS_IN_FLIGHT: usize = 256;

/// Drives `muxer` while `work` runs with the `streams` streams it opens (at most
/// [`MAX_STREAMS_IN_FLIGHT`] not yet reported done through the counter); then closes the connection.
async fn with_outbound_streams<F, Fut, T>(mut muxer: StreamMuxerBox, streams: usize, work: F) -> T
where
    F: FnOnce(mpsc::UnboundedReceiver<SubstreamBox>, Arc<AtomicUsize>) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let (tx, rx) = mpsc::unbounded();
    let done = Arc::new(AtomicUsize::new(0));
    let work = work(rx, done.clone());
    futures::pin_mut!(work);
    let mut opened = 0;
    let result = poll_fn(|cx| {
        loop {
            match muxer.poll_unpin(cx) {
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => panic!("connection failed: {e}"),
                Poll::Pending => break,
            }
        }
        while opened < streams && opened - done.load(Ordering::Relaxed) < MAX_STREAMS_IN_FLIGHT {
            match muxer.poll_outbound_unpin(cx) {
                Poll::Ready(Ok(stream)) => {
                    opened += 1;
                    let _ = tx.unbounded_send(stream);
                }
                Poll::Ready(Err(e)) => panic!("opening a stream failed: {e}"),
                Poll::Pending => break,
            }
        }
        work.as_mut().poll(cx)
    })
    .await;
    muxer.close().await.expect("connection closes");
    result
}

async fn dial_full_stack(
    transport: &mut libp2p::core::transport::Boxed<Muxed>,
    addr: &Multiaddr,
) -> StreamMuxerBox {
    let (_, muxer) = transport
        .dial(addr.clone(), dial_opts())
        .expect("dial accepted")
        .await
        .expect("full-stack dial succeeds");
    muxer
}

async fn sequential_cycles_leak_nothing<R: Runtime>() {
    let cycles = env_usize("HARDENING_CYCLES", 10_000);
    within::<R, _>(Duration::from_secs(600), async {
        let mut peer = EchoPeer::start::<R>(Config::default()).await;
        let mut dialer = R::upgraded(&Keypair::generate_ed25519(), Config::default());
        let cycle =
            |i: u64, dialer: &mut libp2p::core::transport::Boxed<Muxed>, addr: Multiaddr| {
                let dial = dialer.dial(addr, dial_opts()).expect("dial accepted");
                async move {
                    let (_, muxer) = dial.await.expect("full-stack dial succeeds");
                    with_outbound_streams(muxer, 1, |mut streams, _| async move {
                        let stream = streams.next().await.unwrap();
                        exchange(stream, i, 2, 1024).await
                    })
                    .await
                }
            };
        let warmup = 20;
        for i in 0..warmup {
            cycle(i, &mut dialer, peer.addr.clone()).await;
            peer.closed.next().await.unwrap();
        }
        let fds_before = settle_fds::<R>(0).await;
        let rss_before = rss();
        let start = Instant::now();
        for i in 0..cycles as u64 {
            cycle(i, &mut dialer, peer.addr.clone()).await;
            // The listener side has seen the close and dropped its connection too.
            peer.closed.next().await.unwrap();
        }
        let elapsed = start.elapsed();
        let fds_after = settle_fds::<R>(fds_before).await;
        let rss_after = rss();
        println!(
            "figure ({}): {cycles} sequential connect + noise/yamux upgrade + stream + close \
             cycles in {elapsed:?} ({:?} each): fds {fds_before} -> {fds_after}, RSS {:.2} -> \
             {:.2} MiB ({:+.3} MiB)",
            R::NAME,
            elapsed / cycles as u32,
            mib(rss_before),
            mib(rss_after),
            mib(rss_after - rss_before)
        );
        assert_eq!(fds_after, fds_before, "leaked file descriptors");
        assert!(
            rss_after - rss_before < 16 * 1024 * 1024,
            "RSS grew by {} bytes",
            rss_after - rss_before
        );
        let _ = dial_full_stack;
    })
    .await;
}

// =================================================================================================
// Stress over the full stack (noise + yamux), every byte verified
// =================================================================================================

/// `conns` connections x `streams` streams each x `messages` messages per stream, all at once (at most
/// [`MAX_STREAMS_IN_FLIGHT`] streams open at a time per connection).
async fn stress<R: Runtime>(conns: usize, streams: usize, messages: usize) {
    let peer = EchoPeer::start::<R>(Config::default()).await;
    let mut dialer = R::upgraded(&Keypair::generate_ed25519(), Config::default());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let muxer = dial_full_stack(&mut dialer, &peer.addr).await;
        tasks.push(spawn::<R, _>(with_outbound_streams(
            muxer,
            streams,
            move |rx, done| {
                rx.take(streams)
                    .enumerate()
                    .map(move |(i, stream)| {
                        let done = done.clone();
                        async move {
                            let bytes =
                                exchange(stream, (c * 100_000 + i) as u64 + 1, messages, 2048)
                                    .await;
                            done.fetch_add(1, Ordering::Relaxed);
                            bytes
                        }
                    })
                    .buffer_unordered(MAX_STREAMS_IN_FLIGHT)
                    .fold(0usize, |sum, bytes| async move { sum + bytes })
            },
        )));
    }
    let mut verified = 0;
    for task in tasks {
        verified += task.await;
    }
    println!(
        "figure ({}): stress {conns} conn x {streams} streams x {messages} messages: {} messages, \
         {:.2} MiB echoed and verified in {:?}",
        R::NAME,
        conns * streams * messages,
        mib(verified as i64),
        start.elapsed()
    );
}

async fn stress_1_conn_100_streams_100_messages<R: Runtime>() {
    within::<R, _>(Duration::from_secs(120), stress::<R>(1, 100, 100)).await;
}

async fn stress_50_conns_10_streams_50_messages<R: Runtime>() {
    within::<R, _>(Duration::from_secs(120), stress::<R>(50, 10, 50)).await;
}

async fn stress_1_conn_1000_streams_10_messages<R: Runtime>() {
    within::<R, _>(Duration::from_secs(120), stress::<R>(1, 1000, 10)).await;
}

runtime_tests!(
    with exclusive:
    sequential_cycles_leak_nothing,
);

runtime_tests!(
    with shared:
    stress_1_conn_100_streams_100_messages,
    stress_50_conns_10_streams_50_messages,
    stress_1_conn_1000_streams_10_messages,
);
