//! Hardening (issue 6): strangers attacking a listener, malicious servers attacking a dialer, and
//! load. Every test runs on both runtimes (`name::async_std`, `name::tokio`) over real sockets on
//! 127.0.0.1, bounds every wait, and prints the figures it measures, each line naming the runtime
//! (`figure (tokio): ...`; run with `--nocapture` to see them).
//!
//! Tests that measure process-wide figures (RSS, open file descriptors, elapsed time against a
//! deadline) run through [`exclusive`] so that no other test of this binary runs beside them; the
//! others run through [`shared`].
//!
//! Environment knobs (the defaults keep the debug-build run short):
//! - `HARDENING_CYCLES`: connect/upgrade/stream/close cycles in `sequential_cycles_leak_nothing`
//!   (default 10,000, the issue's figure; about 15 s per runtime in a debug build).
//! - `HARDENING_BACKPRESSURE_BYTES`: bytes written in `writer_is_backpressured_by_a_peer_that_never_reads`
//!   (default 1 GiB).

mod common;

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, RwLock,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use async_std::net::{TcpListener, TcpStream};
use common::{raw::*, *};
use futures::{
    channel::{mpsc, oneshot},
    future::{poll_fn, Either},
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt,
};
use libp2p::core::{
    muxing::{StreamMuxerBox, StreamMuxerExt, SubstreamBox},
    transport::{ListenerId, TransportEvent},
    Multiaddr, Transport as _,
};
use libp2p::identity::Keypair;
use libp2p_ws::{
    tls::dev::TestCa, Config, Error, FrameError, HandshakeError, KeepAlive, ServerCertificate,
    TlsConfig,
};

// ----- test isolation ----------------------------------------------------------------------------

// Both instances of a test (`name::async_std`, `name::tokio`) go through the same lock: an
// exclusive test runs beside nothing else of this binary, on either runtime. Each test body bounds
// its own time (`within`), so the wait for the lock does not count against it.

static LOCK: RwLock<()> = RwLock::new(());

/// Runs a test that does not measure process-wide figures on runtime `R`: it may run beside others
/// of its kind.
fn shared<R: Runtime, F: Future>(test: F) -> F::Output {
    let _shared = LOCK.read().unwrap_or_else(|e| e.into_inner());
    init_logging();
    R::block_on(test)
}

/// Runs a test that measures RSS, file descriptors or deadlines on runtime `R`, alone.
fn exclusive<R: Runtime, F: Future>(test: F) -> F::Output {
    let _alone = LOCK.write().unwrap_or_else(|e| e.into_inner());
    init_logging();
    R::block_on(test)
}

// ----- process figures ---------------------------------------------------------------------------

/// Resident set size of this process, in bytes.
fn rss() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: i64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Open file descriptors of this process.
fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Waits (bounded) until the fd count is back at `baseline`; returns the final count.
async fn settle_fds<R: Runtime>(baseline: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = fd_count();
        if now <= baseline || Instant::now() >= deadline {
            return now;
        }
        R::sleep(Duration::from_millis(20)).await;
    }
}

fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts the bytes read through it.
struct Counting<T> {
    inner: T,
    read: Arc<AtomicUsize>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counting<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = futures::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.read.fetch_add(n, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

// =================================================================================================
// 1. Slowloris
// =================================================================================================

async fn slowloris_sockets_are_dropped_at_the_handshake_timeout_and_real_dials_still_succeed<
    R: Runtime,
>() {
    const SOCKETS: usize = 500;
    let timeout = Duration::from_secs(3);
    within::<R, _>(Duration::from_secs(30), async {
        // Enough handshake slots for every attacker: see the pending-handshake test for the cap.
        let config = Config::default()
            .with_handshake_timeout(timeout)
            .with_max_pending_handshakes(SOCKETS + 16)
            .with_max_pending_handshakes_per_ip(SOCKETS + 16);
        let mut server = Server::<R>::plain(config).await;
        let socket = server.socket;
        let attackers_started = Instant::now();

        let (connected_tx, mut connected) = mpsc::unbounded::<()>();
        let spawn_attacker = || {
            let connected_tx = connected_tx.clone();
            spawn::<R, _>(async move {
                let mut s = TcpStream::connect(socket).await.expect("connect");
                let opened = Instant::now();
                let _ = connected_tx.unbounded_send(());
                let mut sent = 0;
                let mut buf = [0u8; 512];
                let mut answered = 0;
                loop {
                    // One byte of the upgrade request per second, until the server hangs up.
                    if s.write_all(&UPGRADE_REQUEST[sent..sent + 1]).await.is_err() {
                        break;
                    }
                    sent += 1;
                    match common::timeout::<R, _>(Duration::from_secs(1), s.read(&mut buf)).await {
                        Some(Ok(0)) | Some(Err(_)) => break,
                        Some(Ok(n)) => answered += n,
                        None => continue,
                    }
                }
                (opened.elapsed(), Instant::now(), sent, answered)
            })
        };
        // In batches, each accepted before the next connects (the listen backlog is finite).
        let mut attackers = Vec::new();
        for _ in 0..SOCKETS / 100 {
            attackers.extend((0..100).map(|_| spawn_attacker()));
            for _ in 0..100 {
                connected.next().await.expect("attacker connected");
                server.incoming.next().await.expect("attacker accepted");
            }
        }
        let connecting_took = attackers_started.elapsed();

        // All attackers are connected and dribbling: a real dial must still go through.
        let start = Instant::now();
        let mut client = dial::<R>(Config::default(), server.addr.clone())
            .await
            .expect("real dial succeeds");
        let mut accepted = server.next_ok().await;
        client.write_all(b"still serving").await.unwrap();
        client.flush().await.unwrap();
        let mut buf = [0u8; 13];
        accepted.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"still serving");
        let dial_done = Instant::now();
        println!(
            "figure ({}): {SOCKETS} slowloris sockets connected and accepted in \
             {connecting_took:?}; then a real dial + round trip took {:?}",
            R::NAME,
            start.elapsed()
        );

        let mut lifetimes = Vec::new();
        let mut first_close = None::<Instant>;
        for attacker in attackers {
            let (lifetime, closed_at, sent, answered) = attacker.await;
            assert_eq!(answered, 0, "the server answered a partial request");
            assert!(
                sent < UPGRADE_REQUEST.len(),
                "the request completed: raise nothing, lower the rate"
            );
            first_close = Some(first_close.map_or(closed_at, |f: Instant| f.min(closed_at)));
            lifetimes.push(lifetime);
        }
        lifetimes.sort();
        let (min, median, max) = (lifetimes[0], lifetimes[SOCKETS / 2], lifetimes[SOCKETS - 1]);
        println!(
            "figure ({}): slowloris: {SOCKETS} sockets at 1 byte/s, handshake timeout \
             {timeout:?}: dropped after min {min:?}, median {median:?}, max {max:?}",
            R::NAME
        );
        assert!(
            dial_done < first_close.unwrap(),
            "the real dial finished only after attackers were dropped"
        );
        assert!(
            min >= timeout - Duration::from_millis(100),
            "dropped before the timeout: {min:?}"
        );
        assert!(
            max <= timeout + Duration::from_secs(3),
            "dropped late: {max:?}"
        );

        let mut timeouts = 0;
        for _ in 0..SOCKETS {
            match server.next().await {
                Err(Error::Timeout { after, .. }) if after == timeout => timeouts += 1,
                other => panic!("expected a handshake timeout, got {:?}", other.map(|_| ())),
            }
        }
        println!(
            "figure ({}): listener reported {timeouts} handshake timeouts",
            R::NAME
        );
    })
    .await;
}

async fn pending_handshake_cap_closes_excess_sockets_at_once_and_frees_slots_at_the_timeout<
    R: Runtime,
>() {
    within::<R, _>(Duration::from_secs(20), async {
        let cap = 8;
        let timeout = Duration::from_millis(1500);
        let config = Config::default()
            .with_handshake_timeout(timeout)
            .with_max_pending_handshakes(cap);
        let mut server = Server::<R>::plain(config).await;
        let mut silent = Vec::new();
        for _ in 0..cap {
            silent.push(TcpStream::connect(server.socket).await.unwrap());
            server.incoming.next().await.expect("accepted");
        }
        // The next socket finds every slot taken: it is closed at once, without an answer.
        let start = Instant::now();
        let mut extra = TcpStream::connect(server.socket).await.unwrap();
        let mut buf = [0u8; 64];
        let n = within::<R, _>(Duration::from_secs(1), extra.read(&mut buf))
            .await
            .unwrap_or(0);
        println!(
            "figure ({}): with {cap}/{cap} handshake slots taken, an extra socket was closed \
             after {:?}",
            R::NAME,
            start.elapsed()
        );
        assert_eq!(n, 0);
        // Once the silent sockets time out, slots are free again and a real dial succeeds.
        for _ in 0..cap {
            assert!(matches!(server.next().await, Err(Error::Timeout { .. })));
        }
        dial::<R>(Config::default(), server.addr.clone())
            .await
            .expect("dial after the slots freed up");
        server.next_ok().await;
        println!(
            "figure ({}): after the {cap} silent sockets timed out ({timeout:?}), a dial succeeded",
            R::NAME
        );
        drop(silent);
    })
    .await;
}

// =================================================================================================
// 2. TLS listener: no ClientHello, garbage ClientHello
// =================================================================================================

async fn tls_listener_drops_silent_sockets_at_the_timeout_and_garbage_at_once<R: Runtime>() {
    within::<R, _>(Duration::from_secs(30), async {
        let ca = TestCa::new("hardening CA").unwrap();
        let (chain, key) = ca.issue(&["localhost"]).unwrap();
        let cert = ServerCertificate::from_der(chain, key).unwrap();
        let timeout = Duration::from_millis(1500);
        let config = Config::default()
            .with_handshake_timeout(timeout)
            .with_tls(TlsConfig::new().with_server_certificate(&cert));
        let mut server = Server::<R>::start(config, "/ip4/127.0.0.1/tcp/0/tls/ws").await;
        let socket = server.socket;

        // (what is sent, expected to be closed before the timeout)
        let mut oversized_record = vec![0x16, 0x03, 0x01, 0xff, 0xff];
        oversized_record.extend_from_slice(&[0u8; 64]);
        let mut truncated_hello = vec![
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        truncated_hello.extend_from_slice(&[0u8; 16]);
        let attacks: Vec<(&str, Vec<u8>, bool)> = vec![
            ("nothing (silent TCP)", vec![], false),
            (
                "an HTTP request instead of a ClientHello",
                UPGRADE_REQUEST.to_vec(),
                true,
            ),
            (
                "a TLS record header declaring 65535 bytes",
                oversized_record,
                true,
            ),
            ("random bytes", pattern(7, 4096), true),
            (
                "a truncated ClientHello, then silence",
                truncated_hello,
                false,
            ),
        ];
        for (what, bytes, at_once) in attacks {
            let start = Instant::now();
            let mut s = TcpStream::connect(socket).await.unwrap();
            if !bytes.is_empty() {
                let _ = s.write_all(&bytes).await;
            }
            let mut reply = Vec::new();
            let _ = within::<R, _>(Duration::from_secs(10), s.read_to_end(&mut reply)).await;
            let closed_after = start.elapsed();
            let error = server.next().await.expect_err("the handshake fails");
            println!(
                "figure ({}): TLS listener, {what}: closed after {closed_after:?} ({} bytes \
                 answered): {error}",
                R::NAME,
                reply.len()
            );
            if at_once {
                assert!(closed_after < timeout, "{what}: not closed at once");
                // An HTTP request is recognised as a wrong door (and answered with a TLS alert).
                assert!(
                    matches!(error, Error::Tls(_) | Error::NotServed { .. }),
                    "{what}: {error:?}"
                );
            } else {
                assert!(
                    closed_after >= timeout - Duration::from_millis(100),
                    "{what}: closed early"
                );
                assert!(
                    closed_after < timeout + Duration::from_secs(3),
                    "{what}: closed late"
                );
                assert!(matches!(error, Error::Timeout { .. }), "{what}: {error:?}");
            }
        }

        // The listener still serves real TLS clients.
        let dialer = Config::default().with_tls(TlsConfig::new().add_root_der(ca.certificate()));
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}/tls/sni/localhost/ws", socket.port())
            .parse()
            .unwrap();
        dial::<R>(dialer, addr)
            .await
            .expect("a real TLS dial succeeds");
        server.next_ok().await;
    })
    .await;
}

// =================================================================================================
// 3. Oversized request heads; non-upgrade requests get HTTP errors
// =================================================================================================

fn long_header_line_request() -> Vec<u8> {
    let mut req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: ".to_vec();
    req.resize(req.len() + 1024 * 1024, b'a');
    req.extend_from_slice(b"\r\n\r\n");
    req
}

fn ten_thousand_headers_request() -> Vec<u8> {
    let mut req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
    for i in 0..10_000 {
        req.extend_from_slice(format!("X-Header-{i}: value\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req
}

async fn oversized_request_heads_are_answered_431_after_reading_at_most_the_limit<R: Runtime>() {
    within::<R, _>(Duration::from_secs(20), async {
        let inputs = [
            ("a 1 MiB header line", long_header_line_request()),
            ("10,000 headers", ten_thousand_headers_request()),
        ];

        // Through the transport: the answer is 431 and memory does not follow the input.
        let mut server = Server::<R>::plain(Config::default()).await;
        for (what, request) in &inputs {
            let request = request.clone();
            let mut s = TcpStream::connect(server.socket).await.unwrap();
            let (mut reader, mut writer) = (s.clone(), s.clone());
            let mut answer = Vec::with_capacity(4096);
            let before = rss();
            let writing = spawn::<R, _>(async move {
                let _ = writer.write_all(&request).await;
            });
            let _ = reader.read_to_end(&mut answer).await;
            let answer = String::from_utf8_lossy(&answer).into_owned();
            let error = server.next().await.expect_err("handshake fails");
            writing.await;
            let grown = rss() - before;
            println!(
                "figure ({}): {what} ({} bytes sent): answered {:?}, RSS grew {:.3} MiB; \
                 listener: {error}",
                R::NAME,
                inputs.iter().find(|(w, _)| w == what).unwrap().1.len(),
                answer.lines().next().unwrap_or(""),
                mib(grown)
            );
            assert!(answer.starts_with("HTTP/1.1 431"), "{what}: {answer}");
            assert!(
                matches!(error, Error::Handshake(HandshakeError::HeadTooLarge { .. })),
                "{what}: {error:?}"
            );
            assert!(grown < 1024 * 1024, "{what}: RSS grew {grown} bytes");
            let _ = s.close().await;
        }

        // Directly over an accepted socket, counting what the server side reads.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        for (what, request) in &inputs {
            let request = request.clone();
            let client = spawn::<R, _>(async move {
                let mut s = TcpStream::connect(local).await.unwrap();
                let _ = s.write_all(&request).await;
                let mut answer = Vec::new();
                let _ = s.read_to_end(&mut answer).await;
                answer
            });
            let (tcp, _) = listener.accept().await.unwrap();
            let read = Arc::new(AtomicUsize::new(0));
            let mut counting = Counting {
                inner: tcp,
                read: read.clone(),
            };
            let limit = libp2p_ws::DEFAULT_MAX_HEAD_SIZE;
            let result = libp2p_ws::unstable::accept(&mut counting, limit, "/").await;
            drop(counting);
            let answer = client.await;
            let read = read.load(Ordering::Relaxed);
            println!(
                "figure ({}): {what}: the server read {read} bytes (limit {limit}) and failed \
                 with {:?}",
                R::NAME,
                result.as_ref().err()
            );
            assert!(
                matches!(result, Err(HandshakeError::HeadTooLarge { .. })),
                "{result:?}"
            );
            assert!(read <= limit, "{what}: read {read} bytes");
            assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"));
        }
    })
    .await;
}

async fn non_upgrade_requests_get_an_http_error_response<R: Runtime>() {
    within::<R, _>(WAIT, async {
        let server = Server::<R>::plain(Config::default()).await;
        let cases: [(&str, &[u8], &str); 5] = [
            ("plain GET", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "426"),
            (
                "upgrade on another path",
                b"GET /other HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                "404",
            ),
            (
                "POST",
                b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                "405",
            ),
            ("garbage", b"\x00\x01\x02 nonsense\r\n\r\n", "400"),
            (
                "wrong WebSocket version",
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
                "4",
            ),
        ];
        for (what, request, status) in cases {
            let mut raw = Raw::new(TcpStream::connect(server.socket).await.unwrap());
            raw.send(request).await.unwrap();
            let answer = raw.read_to_close().await;
            let status_line = answer.lines().next().unwrap_or("").to_string();
            println!(
                "figure ({}): {what}: answered {status_line:?}, then closed",
                R::NAME
            );
            assert!(
                status_line.starts_with(&format!("HTTP/1.1 {status}")),
                "{what}: {answer:?}"
            );
        }
    })
    .await;
}

// =================================================================================================
// 4. A malicious server answering with 64 MiB of headers
// =================================================================================================

async fn endless_headers_server(listener: TcpListener) -> u64 {
    let (mut s, _) = listener.accept().await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        head.extend_from_slice(&buf[..n]);
    }
    let mut written = 0u64;
    let status =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    if s.write_all(status).await.is_err() {
        return written;
    }
    written += status.len() as u64;
    let mut chunk = Vec::new();
    while chunk.len() < 64 * 1024 {
        chunk.extend_from_slice(
            b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        );
    }
    while written < 64 * 1024 * 1024 {
        match s.write_all(&chunk).await {
            Ok(()) => written += chunk.len() as u64,
            Err(_) => break,
        }
    }
    written
}

async fn dial_to_a_server_sending_64_mib_of_headers_fails_fast_after_reading_the_limit<
    R: Runtime,
>() {
    within::<R, _>(Duration::from_secs(20), async {
        // Through the transport.
        let (listener, addr) = raw_listener().await;
        let server = spawn::<R, _>(endless_headers_server(listener));
        let start = Instant::now();
        let error = dial::<R>(Config::default(), addr)
            .await
            .expect_err("dial fails");
        let elapsed = start.elapsed();
        let written = server.await;
        println!(
            "figure ({}): dial to a server sending 64 MiB of headers failed after {elapsed:?} \
             ({error}); the server got {:.2} MiB into the socket before we hung up",
            R::NAME,
            mib(written as i64)
        );
        assert!(
            matches!(error, Error::Handshake(HandshakeError::HeadTooLarge { .. })),
            "{error:?}"
        );
        assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");

        // Directly, counting what the client side reads.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let server = spawn::<R, _>(endless_headers_server(listener));
        let read = Arc::new(AtomicUsize::new(0));
        let mut counting = Counting {
            inner: TcpStream::connect(local).await.unwrap(),
            read: read.clone(),
        };
        let limit = libp2p_ws::DEFAULT_MAX_HEAD_SIZE;
        let result = libp2p_ws::unstable::connect(&mut counting, limit, "127.0.0.1", "/").await;
        drop(counting);
        server.await;
        let read = read.load(Ordering::Relaxed);
        println!(
            "figure ({}): client handshake read {read} bytes (limit {limit}): {:?}",
            R::NAME,
            result.as_ref().err()
        );
        assert!(
            matches!(result, Err(HandshakeError::HeadTooLarge { .. })),
            "{result:?}"
        );
        assert!(read <= limit);
    })
    .await;
}

async fn dial_to_a_server_answering_with_too_many_small_headers_fails<R: Runtime>() {
    within::<R, _>(WAIT, async {
        let (listener, addr) = raw_listener().await;
        let server = spawn::<R, _>(async move {
            let mut raw = Raw::new(listener.accept().await.unwrap().0);
            raw.read_head().await.unwrap();
            let mut response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\n"
                .to_vec();
            for i in 0..200 {
                response.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
            }
            response.extend_from_slice(b"\r\n");
            let _ = raw.send(&response).await;
            response.len()
        });
        let error = dial::<R>(Config::default(), addr)
            .await
            .expect_err("dial fails");
        let size = server.await;
        println!(
            "figure ({}): dial to a server answering with 200 headers ({size} bytes, under the \
             size limit): {error}",
            R::NAME
        );
        assert!(
            matches!(error, Error::Handshake(HandshakeError::HeadTooLarge { .. })),
            "{error:?}"
        );
    })
    .await;
}

async fn dial_to_a_server_dribbling_its_response_fails_at_the_handshake_timeout<R: Runtime>() {
    within::<R, _>(WAIT, async {
        let (listener, addr) = raw_listener().await;
        let server = spawn::<R, _>(async move {
            let mut raw = Raw::new(listener.accept().await.unwrap().0);
            raw.read_head().await.unwrap();
            let mut response = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
            response.extend(std::iter::repeat_n(b"X-Slow: yes\r\n".iter().copied(), 100).flatten());
            let mut sent = 0;
            for byte in response {
                if raw.send(&[byte]).await.is_err() {
                    break;
                }
                sent += 1;
                R::sleep(Duration::from_millis(20)).await;
            }
            sent
        });
        let timeout = Duration::from_secs(1);
        let start = Instant::now();
        let error = dial::<R>(Config::default().with_handshake_timeout(timeout), addr)
            .await
            .expect_err("dial fails");
        let elapsed = start.elapsed();
        let sent = server.await;
        println!(
            "figure ({}): dial to a server dribbling its response (1 byte / 20 ms) failed after \
             {elapsed:?} ({sent} bytes sent): {error}",
            R::NAME
        );
        assert!(
            matches!(error, Error::Timeout { after, .. } if after == timeout),
            "{error:?}"
        );
        assert!(elapsed < timeout + Duration::from_secs(2), "{elapsed:?}");
    })
    .await;
}

// =================================================================================================
// 5. Oversized frames and messages
// =================================================================================================

async fn oversized_frames_and_messages_close_with_1009_without_allocating<R: Runtime>() {
    within::<R, _>(Duration::from_secs(30), async {
        let limits = libp2p_ws::FrameLimits::default();
        let mut server = Server::<R>::plain(Config::default()).await;

        // (what, bytes the raw client sends)
        let mut over_message = Vec::new();
        let chunk = vec![0x5a; limits.max_frame_size()];
        let frames = limits.max_message_size() / limits.max_frame_size();
        for i in 0..frames {
            over_message.extend(frame(
                false,
                0,
                if i == 0 { 2 } else { 0 },
                Some(MASK),
                &chunk,
            ));
        }
        over_message.extend(frame(true, 0, 0, Some(MASK), b"!"));
        let attacks: Vec<(&str, Vec<u8>)> = vec![
            (
                "a frame header declaring 2^63-1 bytes",
                header(true, 0, 2, Some(MASK), (1 << 63) - 1),
            ),
            (
                "a frame one byte over max_frame_size",
                header(true, 0, 2, Some(MASK), limits.max_frame_size() as u64 + 1),
            ),
            (
                "a message one byte over max_message_size, in max-size frames",
                over_message,
            ),
        ];
        drop(chunk);
        for (what, bytes) in attacks {
            let (mut conn, mut raw) = server_and_raw_client(&mut server).await;
            let before = rss();
            let sent = bytes.len();
            let writer = spawn::<R, _>(async move {
                let _ = raw.send(&bytes).await;
                raw
            });
            let error = read_until_error(&mut conn).await;
            let mut raw = writer.await;
            let code = raw.close_code().await.expect("close frame");
            let grown = rss() - before;
            let frame_error = FrameError::from_io(&error).cloned();
            println!(
                "figure ({}): server, {what} ({sent} bytes sent): closed with {code:?}, error \
                 {frame_error:?}, RSS grew {:.3} MiB",
                R::NAME,
                mib(grown)
            );
            assert_eq!(code, Some(1009), "{what}");
            assert!(
                matches!(
                    frame_error,
                    Some(FrameError::FrameTooLarge { .. } | FrameError::MessageTooLarge { .. })
                ),
                "{what}: {error}"
            );
            assert!(grown < 1024 * 1024, "{what}: RSS grew {grown} bytes");
            drop(conn);
        }

        // The same on the dialing side: a server declaring a 2^63-1 byte frame.
        let (mut conn, mut raw) = client_and_raw_server::<R>(Config::default()).await;
        let before = rss();
        raw.send(&header(true, 0, 2, None, (1 << 63) - 1))
            .await
            .unwrap();
        let error = read_until_error(&mut conn).await;
        let close = raw.read_frame().await.unwrap();
        let grown = rss() - before;
        assert!(close.masked, "a client's close frame is masked");
        let code = u16::from_be_bytes([close.payload[0], close.payload[1]]);
        println!(
            "figure ({}): client, a frame header declaring 2^63-1 bytes: closed with {code}, RSS \
             grew {:.3} MiB",
            R::NAME,
            mib(grown)
        );
        assert_eq!(code, 1009);
        assert!(matches!(
            FrameError::from_io(&error),
            Some(FrameError::FrameTooLarge { .. })
        ));
        assert!(grown < 1024 * 1024);
    })
    .await;
}

// =================================================================================================
// 6. RFC 6455 MUST cases
// =================================================================================================

type Check = fn(&FrameError) -> bool;

fn protocol(e: &FrameError) -> bool {
    matches!(e, FrameError::Protocol(_))
}

fn invalid_utf8(e: &FrameError) -> bool {
    matches!(
        e,
        FrameError::Protocol(
            libp2p_ws::ProtocolViolation::InvalidUtf8Text
                | libp2p_ws::ProtocolViolation::InvalidCloseReason
        )
    )
}

async fn rfc6455_violations_close_with_the_right_code_and_a_typed_error<R: Runtime>() {
    within::<R, _>(WAIT, async {
        let mut server = Server::<R>::plain(Config::default()).await;
        let m = Some(MASK);
        let mut server_cases: Vec<(String, Vec<u8>, u16, Check)> = vec![
            (
                "unmasked client frame".into(),
                frame(true, 0, 2, None, b"hi"),
                1002,
                |e| *e == FrameError::Protocol(libp2p_ws::ProtocolViolation::UnmaskedClientFrame),
            ),
            (
                "fragmented ping".into(),
                frame(false, 0, 9, m, b"p"),
                1002,
                protocol,
            ),
            (
                "fragmented close".into(),
                frame(false, 0, 8, m, &close_payload(1000, b"")),
                1002,
                protocol,
            ),
            (
                "ping with a 126-byte payload".into(),
                frame(true, 0, 9, m, &[7; 126]),
                1002,
                protocol,
            ),
            (
                "pong with a 126-byte payload".into(),
                frame(true, 0, 10, m, &[7; 126]),
                1002,
                protocol,
            ),
            (
                "continuation without a message".into(),
                frame(true, 0, 0, m, b"x"),
                1002,
                protocol,
            ),
            (
                "new message inside a fragmented one".into(),
                [frame(false, 0, 2, m, b"a"), frame(true, 0, 2, m, b"b")].concat(),
                1002,
                protocol,
            ),
            (
                "close with a 1-byte payload".into(),
                frame(true, 0, 8, m, &[3]),
                1002,
                protocol,
            ),
            (
                "close reason not UTF-8".into(),
                frame(true, 0, 8, m, &close_payload(1000, &[0xff, 0xfe])),
                1007,
                invalid_utf8,
            ),
            (
                "text message not UTF-8".into(),
                frame(true, 0, 1, m, b"caf\xe9!"),
                1007,
                invalid_utf8,
            ),
            (
                "fragmented text message ending inside a character".into(),
                [frame(false, 0, 1, m, b"caf\xc3"), frame(true, 0, 0, m, b"")].concat(),
                1007,
                invalid_utf8,
            ),
        ];
        for rsv in [4u8, 2, 1] {
            server_cases.push((
                format!("RSV bits {rsv:03b}"),
                frame(true, rsv, 2, m, b"x"),
                1002,
                protocol,
            ));
        }
        for opcode in [3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15] {
            server_cases.push((
                format!("reserved opcode {opcode}"),
                frame(true, 0, opcode, m, b""),
                1002,
                protocol,
            ));
        }
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            server_cases.push((
                format!("close code {code}"),
                frame(true, 0, 8, m, &close_payload(code, b"")),
                1002,
                protocol,
            ));
        }
        for (what, bytes, expected, check) in server_cases {
            let (mut conn, mut raw) = server_and_raw_client(&mut server).await;
            raw.send(&bytes).await.unwrap();
            let error = read_until_error(&mut conn).await;
            let code = raw.close_code().await.expect("close frame");
            let frame_error = FrameError::from_io(&error);
            println!(
                "figure ({}): server <- {what}: closed with {code:?}, {frame_error:?}",
                R::NAME
            );
            assert_eq!(code, Some(expected), "{what}");
            assert!(frame_error.is_some_and(check), "{what}: {error}");
            assert_eq!(frame_error.unwrap().close_code(), expected);
            // Every later call fails too, without panicking.
            let mut buf = [0u8; 8];
            assert!(conn.read(&mut buf).await.is_err());
            assert!(conn.write_all(b"x").await.is_err());
        }

        let client_cases: Vec<(&str, Vec<u8>, u16, Check)> = vec![
            (
                "masked server frame",
                frame(true, 0, 2, m, b"hi"),
                1002,
                |e| *e == FrameError::Protocol(libp2p_ws::ProtocolViolation::MaskedServerFrame),
            ),
            (
                "fragmented ping",
                frame(false, 0, 9, None, b""),
                1002,
                protocol,
            ),
            (
                "ping with a 126-byte payload",
                frame(true, 0, 9, None, &[1; 126]),
                1002,
                protocol,
            ),
            ("RSV1 set", frame(true, 4, 2, None, b"x"), 1002, protocol),
            (
                "reserved opcode 3",
                frame(true, 0, 3, None, b""),
                1002,
                protocol,
            ),
            (
                "reserved control opcode 11",
                frame(true, 0, 11, None, b""),
                1002,
                protocol,
            ),
            (
                "continuation without a message",
                frame(true, 0, 0, None, b"x"),
                1002,
                protocol,
            ),
        ];
        for (what, bytes, expected, check) in client_cases {
            let (mut conn, mut raw) = client_and_raw_server::<R>(Config::default()).await;
            raw.send(&bytes).await.unwrap();
            let error = read_until_error(&mut conn).await;
            let close = raw.read_frame().await.expect("close frame");
            assert_eq!(close.opcode, 8);
            assert!(close.masked, "{what}: a client's close frame is masked");
            let code = u16::from_be_bytes([close.payload[0], close.payload[1]]);
            let frame_error = FrameError::from_io(&error);
            println!(
                "figure ({}): client <- {what}: closed with {code}, {frame_error:?}",
                R::NAME
            );
            assert_eq!(code, expected, "{what}");
            assert!(frame_error.is_some_and(check), "{what}: {error}");
        }
    })
    .await;
}

async fn pings_are_answered_and_valid_close_frames_echoed<R: Runtime>() {
    within::<R, _>(WAIT, async {
        let mut server = Server::<R>::plain(Config::default()).await;
        let (mut conn, mut raw) = server_and_raw_client(&mut server).await;
        raw.send(&frame(true, 0, 9, Some(MASK), b"are you there"))
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let pong = {
            let read = conn.read(&mut buf);
            let pong = raw.read_frame();
            futures::pin_mut!(read, pong);
            match futures::future::select(read, pong).await {
                Either::Right((pong, _)) => pong.unwrap(),
                Either::Left((r, _)) => panic!("read returned first: {r:?}"),
            }
        };
        println!(
            "figure ({}): ping answered with opcode {} payload {:?}",
            R::NAME,
            pong.opcode,
            String::from_utf8_lossy(&pong.payload)
        );
        assert_eq!((pong.opcode, pong.fin, pong.masked), (10, true, false));
        assert_eq!(pong.payload, b"are you there");

        // A fragmented message with a ping in the middle is still read whole.
        raw.send(
            &[
                frame(false, 0, 1, Some(MASK), b"frag"),
                frame(true, 0, 9, Some(MASK), b""),
                frame(true, 0, 0, Some(MASK), b"mented"),
            ]
            .concat(),
        )
        .await
        .unwrap();
        let mut got = [0u8; 10];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"fragmented");

        raw.send(&frame(true, 0, 8, Some(MASK), &close_payload(4000, b"bye")))
            .await
            .unwrap();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 0, "close is EOF");
        assert_eq!(
            raw.close_code().await.unwrap(),
            Some(4000),
            "close code echoed"
        );
        conn.close().await.unwrap();
    })
    .await;
}

// =================================================================================================
// 7. Backpressure: a peer that never reads
// =================================================================================================

/// Writes `chunk` repeatedly until a write makes no progress for `stall`; returns the bytes taken.
async fn write_until_blocked<R: Runtime>(
    conn: &mut Output<R>,
    chunk: &[u8],
    stall: Duration,
    cap: u64,
) -> u64 {
    let mut sent = 0u64;
    loop {
        match timeout::<R, _>(stall, conn.write(chunk)).await {
            Some(Ok(n)) => sent += n as u64,
            Some(Err(e)) => panic!("write failed: {e}"),
            None => return sent,
        }
        assert!(sent < cap, "wrote {sent} bytes without being blocked");
    }
}

async fn writer_is_backpressured_by_a_peer_that_never_reads<R: Runtime>() {
    let total = env_usize("HARDENING_BACKPRESSURE_BYTES", 1 << 30) as u64;
    within::<R, _>(Duration::from_secs(150), async {
        let close_timeout = Duration::from_secs(1);
        let config = Config::default().with_close_timeout(close_timeout);
        let mut server = Server::<R>::plain(config).await;
        let chunk = vec![0xa5u8; 64 * 1024];

        let (mut conn, mut raw) = server_and_raw_client(&mut server).await;
        let before = rss();
        let blocked_at =
            write_until_blocked::<R>(&mut conn, &chunk, Duration::from_millis(500), total).await;
        let grown = rss() - before;
        println!(
            "figure ({}): peer not reading: writes blocked after {:.2} MiB of {:.0} MiB; RSS grew \
             {:.3} MiB; buffered {} bytes",
            R::NAME,
            mib(blocked_at as i64),
            mib(total as i64),
            mib(grown),
            conn.websocket()
                .expect("a WebSocket connection")
                .buffered_capacity()
        );
        assert!(
            blocked_at < 64 * 1024 * 1024,
            "not backpressured: {blocked_at} bytes taken"
        );
        assert!(grown < 4 * 1024 * 1024, "RSS grew {grown} bytes");

        // The peer starts reading: the writer resumes and every byte arrives.
        let start = Instant::now();
        let reader = spawn::<R, _>(async move {
            let mut payload = 0u64;
            loop {
                let (_, opcode, mask, len) = raw.read_header().await.unwrap();
                assert!(mask.is_none());
                if opcode == 8 {
                    raw.skip(len).await.unwrap();
                    return payload;
                }
                assert_eq!(opcode, 2);
                raw.skip(len).await.unwrap();
                payload += len;
            }
        });
        let mut sent = blocked_at;
        let peak = Arc::new(AtomicUsize::new(0));
        while sent < total {
            let n = (total - sent).min(chunk.len() as u64) as usize;
            sent += conn.write(&chunk[..n]).await.unwrap() as u64;
            peak.fetch_max(
                conn.websocket()
                    .expect("a WebSocket connection")
                    .buffered_capacity(),
                Ordering::Relaxed,
            );
        }
        conn.close().await.unwrap();
        let received = reader.await;
        let grown = rss() - before;
        println!(
            "figure ({}): after the peer started reading: {:.0} MiB delivered in {:?}, peak \
             connection buffer {} bytes, RSS grew {:.3} MiB",
            R::NAME,
            mib(received as i64),
            start.elapsed(),
            peak.load(Ordering::Relaxed),
            mib(grown)
        );
        assert_eq!(received, total);
        assert!(grown < 8 * 1024 * 1024, "RSS grew {grown} bytes");
        // Unsent bytes stay under the write buffer size; the buffer's allocation may reach about four
        // times that (a new frame is opened behind a partly sent one, and the Vec grows by doubling).
        let write_buffer = Config::default().frame_limits().write_buffer_size();
        let peak = peak.load(Ordering::Relaxed);
        assert!(
            peak <= 4 * (write_buffer + 14) + 1024,
            "write buffer grew to {peak} bytes"
        );

        // Closing towards a peer that never reads gives up at the close timeout.
        let (mut conn, raw) = server_and_raw_client(&mut server).await;
        write_until_blocked::<R>(&mut conn, &chunk, Duration::from_millis(300), total).await;
        let start = Instant::now();
        let result = within::<R, _>(Duration::from_secs(10), conn.close()).await;
        let elapsed = start.elapsed();
        println!(
            "figure ({}): close towards a peer that never reads gave up after {elapsed:?}: \
             {result:?}",
            R::NAME
        );
        assert_eq!(
            result.expect_err("close times out").kind(),
            io::ErrorKind::TimedOut
        );
        assert!(elapsed >= close_timeout && elapsed < close_timeout + Duration::from_secs(2));
        drop(raw);
    })
    .await;
}

async fn ping_flood_from_a_peer_that_never_reads_stays_bounded<R: Runtime>() {
    within::<R, _>(Duration::from_secs(60), async {
        let mut server = Server::<R>::plain(Config::default()).await;
        let (mut conn, mut raw) = server_and_raw_client(&mut server).await;
        const PINGS: usize = 100_000;
        let ping = frame(true, 0, 9, Some(MASK), &[0x42; 125]);
        let mut flood = Vec::with_capacity(ping.len() * 1000);
        for _ in 0..1000 {
            flood.extend_from_slice(&ping);
        }
        let marker = frame(true, 0, 2, Some(MASK), b"end");
        let before = rss();
        let start = Instant::now();
        let writer = spawn::<R, _>(async move {
            for _ in 0..PINGS / 1000 {
                raw.send(&flood).await.unwrap();
            }
            raw.send(&marker).await.unwrap();
            raw
        });
        // We read everything (answering pings) while the peer reads nothing.
        let mut buf = [0u8; 3];
        let mut peak = 0;
        let read = async {
            loop {
                let n = conn.read(&mut buf).await.unwrap();
                peak = peak.max(
                    conn.websocket()
                        .expect("a WebSocket connection")
                        .buffered_capacity(),
                );
                if n > 0 {
                    return n;
                }
            }
        };
        let n = within::<R, _>(Duration::from_secs(50), read).await;
        assert_eq!(&buf[..n], b"end");
        let grown = rss() - before;
        let raw = writer.await;
        println!(
            "figure ({}): {PINGS} pings ({:.1} MiB) from a peer that never reads, read in {:?}: \
             connection buffers peaked at {peak} bytes, RSS grew {:.3} MiB",
            R::NAME,
            mib((PINGS * ping.len()) as i64),
            start.elapsed(),
            mib(grown)
        );
        assert!(peak <= 64 * 1024, "buffers grew to {peak} bytes");
        assert!(grown < 2 * 1024 * 1024, "RSS grew {grown} bytes");
        drop(raw);
    })
    .await;
}

// =================================================================================================
// 8. Half-open connections: keep-alive
// =================================================================================================

async fn keep_alive_detects_a_vanished_peer_within_the_deadline<R: Runtime>() {
    within::<R, _>(Duration::from_secs(20), async {
        let keep_alive = KeepAlive {
            interval: Duration::from_millis(400),
            timeout: Duration::from_millis(600),
        };
        let deadline = keep_alive.interval + keep_alive.timeout;
        let config = Config::default().with_keep_alive(Some(keep_alive));
        let mut server = Server::<R>::plain(config.clone()).await;

        // Our listener, a raw client that upgrades and then never answers anything.
        let (mut conn, mut raw) = server_and_raw_client(&mut server).await;
        let start = Instant::now();
        let error = read_until_error(&mut conn).await;
        let elapsed = start.elapsed();
        let ping = raw.read_frame().await.unwrap();
        let code = raw.close_code().await.unwrap();
        println!(
            "figure ({}): server: silent peer detected after {elapsed:?} (deadline {deadline:?}): \
             {error}; sent opcode {} then close {code:?}",
            R::NAME,
            ping.opcode
        );
        assert_eq!(ping.opcode, 9, "a ping first");
        assert_eq!(code, Some(1011));
        assert!(matches!(
            FrameError::from_io(&error),
            Some(FrameError::KeepAliveTimeout(_))
        ));
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(
            elapsed >= deadline - Duration::from_millis(50),
            "{elapsed:?}"
        );
        assert!(elapsed < deadline + Duration::from_secs(2), "{elapsed:?}");

        // Our dialer, a raw server that upgrades and then goes silent.
        let (mut conn, raw) = client_and_raw_server::<R>(config.clone()).await;
        let start = Instant::now();
        let error = read_until_error(&mut conn).await;
        let elapsed = start.elapsed();
        println!(
            "figure ({}): client: silent server detected after {elapsed:?}: {error}",
            R::NAME
        );
        assert!(matches!(
            FrameError::from_io(&error),
            Some(FrameError::KeepAliveTimeout(_))
        ));
        assert!(elapsed < deadline + Duration::from_secs(2), "{elapsed:?}");
        drop(raw);

        // A peer that answers pings keeps the connection for several deadlines.
        let (mut conn, mut raw) = server_and_raw_client(&mut server).await;
        let answering = async {
            let mut pings = 0;
            loop {
                let f = raw.read_frame().await.unwrap();
                if f.opcode == 9 {
                    pings += 1;
                    raw.send(&frame(true, 0, 10, Some(MASK), &f.payload))
                        .await
                        .unwrap();
                }
                if pings == 4 {
                    return pings;
                }
            }
        };
        let mut buf = [0u8; 8];
        let read = conn.read(&mut buf);
        futures::pin_mut!(answering, read);
        match futures::future::select(read, answering).await {
            Either::Right((pings, _)) => println!(
                "figure ({}): peer answering pings: alive after {pings} pings ({:?})",
                R::NAME,
                start.elapsed()
            ),
            Either::Left((r, _)) => {
                panic!("the connection ended although the peer answered pings: {r:?}")
            }
        }
    })
    .await;
}

// =================================================================================================
// 9. Abrupt resets
// =================================================================================================

async fn resets_mid_handshake_and_mid_transfer_give_typed_errors_and_release_fds<R: Runtime>() {
    within::<R, _>(Duration::from_secs(30), async {
        let config = Config::default().with_handshake_timeout(Duration::from_secs(5));
        let mut server = Server::<R>::plain(config.clone()).await;
        // Warm up (lazily created runtime threads and descriptors), then take the baseline.
        let (conn, raw) = server_and_raw_client(&mut server).await;
        drop((conn, raw));
        let baseline = settle_fds::<R>(0).await;

        // Client resets in the middle of the upgrade request.
        let mut raw = Raw::new(TcpStream::connect(server.socket).await.unwrap());
        raw.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr")
            .await
            .unwrap();
        server.incoming.next().await.unwrap();
        let start = Instant::now();
        raw.reset();
        let error = server.next().await.expect_err("upgrade fails");
        println!(
            "figure ({}): listener, client RST mid-handshake: failed after {:?}: {error:?}",
            R::NAME,
            start.elapsed()
        );
        assert!(matches!(error, Error::Handshake(_)), "{error:?}");

        // Server resets in the middle of the upgrade response.
        let (listener, addr) = raw_listener().await;
        let dialing = spawn::<R, _>(dial::<R>(config.clone(), addr));
        let (s, _) = listener.accept().await.unwrap();
        let mut raw = Raw::new(s);
        raw.read_head().await.unwrap();
        raw.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgr")
            .await
            .unwrap();
        raw.reset();
        let error = dialing.await.expect_err("dial fails");
        println!(
            "figure ({}): dialer, server RST mid-handshake: {error:?}",
            R::NAME
        );
        assert!(matches!(error, Error::Handshake(_)), "{error:?}");
        drop(listener);

        // Resets in the middle of a frame, on either side, while we read.
        let (mut conn, mut raw) = server_and_raw_client(&mut server).await;
        raw.send(&header(true, 0, 2, Some(MASK), 1000))
            .await
            .unwrap();
        raw.send(&[0u8; 10]).await.unwrap();
        raw.reset();
        check_reset::<R>(&mut conn, "listener reading, client RST mid-frame").await;
        drop(conn);

        let (mut conn, mut raw) = client_and_raw_server::<R>(config.clone()).await;
        raw.send(&header(true, 0, 2, None, 1000)).await.unwrap();
        raw.send(&[0u8; 10]).await.unwrap();
        raw.reset();
        check_reset::<R>(&mut conn, "dialer reading, server RST mid-frame").await;
        drop(conn);

        // Resets while we write.
        let (mut conn, raw) = server_and_raw_client(&mut server).await;
        raw.reset();
        check_write_reset::<R>(&mut conn, "listener writing, client RST").await;
        drop(conn);
        let (mut conn, raw) = client_and_raw_server::<R>(config.clone()).await;
        raw.reset();
        check_write_reset::<R>(&mut conn, "dialer writing, server RST").await;
        drop(conn);

        let after = settle_fds::<R>(baseline).await;
        println!(
            "figure ({}): file descriptors: {baseline} before, {after} after",
            R::NAME
        );
        assert_eq!(after, baseline, "leaked file descriptors");
    })
    .await;
}

async fn check_reset<R: Runtime>(conn: &mut Output<R>, what: &str) {
    let mut buf = [0u8; 4096];
    let error = loop {
        match conn.read(&mut buf).await {
            Ok(0) => panic!("{what}: clean EOF after a reset"),
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    let typed = FrameError::from_io(&error);
    println!(
        "figure ({}): {what}: {:?} / {typed:?}: {error}",
        R::NAME,
        error.kind()
    );
    assert!(
        error.kind() == io::ErrorKind::ConnectionReset || typed == Some(&FrameError::UnexpectedEof),
        "{what}: {error:?}"
    );
    poll_after_error(conn, what).await;
}

async fn check_write_reset<R: Runtime>(conn: &mut Output<R>, what: &str) {
    let chunk = vec![1u8; 64 * 1024];
    let mut sent = 0;
    let error = loop {
        match conn.write_all(&chunk).await.and(conn.flush().await) {
            Ok(()) => sent += chunk.len(),
            Err(e) => break e,
        }
        assert!(sent < 64 * 1024 * 1024, "{what}: writes never failed");
    };
    println!(
        "figure ({}): {what}: write failed after {sent} bytes: {:?}: {error}",
        R::NAME,
        error.kind()
    );
    assert!(
        matches!(
            error.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "{what}: {error:?}"
    );
    poll_after_error(conn, what).await;
}

/// Every call after an error fails or ends; none panics or hangs.
async fn poll_after_error<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut S, what: &str) {
    let mut buf = [0u8; 16];
    for _ in 0..3 {
        assert!(
            conn.read(&mut buf).await.is_err(),
            "{what}: read after error"
        );
        assert!(
            conn.write(b"more").await.is_err(),
            "{what}: write after error"
        );
        assert!(conn.flush().await.is_err(), "{what}: flush after error");
        let _ = conn.close().await;
    }
}

// =================================================================================================
// 10. Many sequential cycles over the full stack
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
        transport
            .listen_on(
                ListenerId::next(),
                "/ip4/127.0.0.1/tcp/0/ws".parse().unwrap(),
            )
            .unwrap();
        let addr = loop {
            if let TransportEvent::NewAddress { listen_addr, .. } =
                poll_fn(|cx| Pin::new(&mut transport).poll(cx)).await
            {
                break listen_addr;
            }
        };
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
// 11. Stress over the full stack (noise + yamux), every byte verified
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

// =================================================================================================
// The message-level API used by the Autobahn peer (conformance/)
// =================================================================================================

async fn message_api_reports_kinds_boundaries_and_empty_messages<R: Runtime>() {
    within::<R, _>(WAIT, async {
        let mut server = Server::<R>::plain(Config::default()).await;
        let (mut conn, mut raw) = server_and_raw_client(&mut server).await;
        raw.send(
            &[
                frame(true, 0, 1, Some(MASK), b""),
                frame(false, 0, 2, Some(MASK), b"a"),
                frame(true, 0, 10, Some(MASK), b"pong in between"),
                frame(false, 0, 0, Some(MASK), b""),
                frame(true, 0, 0, Some(MASK), b"bc"),
                frame(true, 0, 1, Some(MASK), "héllo".as_bytes()),
            ]
            .concat(),
        )
        .await
        .unwrap();
        let mut buf = [0u8; 3];
        let mut chunks = Vec::new();
        while chunks.len() < 6 {
            let chunk = poll_fn(|cx| {
                conn.websocket_mut()
                    .expect("a WebSocket connection")
                    .poll_read_message(cx, &mut buf)
            })
            .await
            .unwrap()
            .expect("not the end");
            chunks.push((chunk.text, buf[..chunk.len].to_vec(), chunk.end));
        }
        let expected: Vec<(bool, Vec<u8>, bool)> = vec![
            (true, b"".to_vec(), true),
            (false, b"a".to_vec(), false),
            (false, b"".to_vec(), false),
            (false, b"bc".to_vec(), true),
            (true, "hé".as_bytes().to_vec(), false),
            (true, "llo".as_bytes().to_vec(), true),
        ];
        assert_eq!(chunks, expected);

        poll_fn(|cx| {
            conn.websocket_mut()
                .expect("a WebSocket connection")
                .poll_send_message(cx, true, "héllo".as_bytes())
        })
        .await
        .unwrap();
        poll_fn(|cx| {
            conn.websocket_mut()
                .expect("a WebSocket connection")
                .poll_send_message(cx, false, &[7u8; 70_000])
        })
        .await
        .unwrap();
        conn.flush().await.unwrap();
        let text = raw.read_frame().await.unwrap();
        assert_eq!((text.opcode, text.fin, text.masked), (1, true, false));
        assert_eq!(text.payload, "héllo".as_bytes());
        let binary = raw.read_frame().await.unwrap();
        assert_eq!(
            (binary.opcode, binary.fin, binary.payload.len()),
            (2, true, 70_000)
        );

        raw.send(&frame(true, 0, 8, Some(MASK), &close_payload(1000, b"")))
            .await
            .unwrap();
        let end = poll_fn(|cx| {
            conn.websocket_mut()
                .expect("a WebSocket connection")
                .poll_read_message(cx, &mut buf)
        })
        .await
        .unwrap();
        assert_eq!(end, None, "close is the end");
        println!(
            "figure ({}): message API: 6 chunks with kinds and boundaries, 2 messages sent, close \
             seen",
            R::NAME
        );
    })
    .await;
}

runtime_tests!(
    with exclusive:
    slowloris_sockets_are_dropped_at_the_handshake_timeout_and_real_dials_still_succeed,
    pending_handshake_cap_closes_excess_sockets_at_once_and_frees_slots_at_the_timeout,
    tls_listener_drops_silent_sockets_at_the_timeout_and_garbage_at_once,
    oversized_request_heads_are_answered_431_after_reading_at_most_the_limit,
    dial_to_a_server_sending_64_mib_of_headers_fails_fast_after_reading_the_limit,
    oversized_frames_and_messages_close_with_1009_without_allocating,
    writer_is_backpressured_by_a_peer_that_never_reads,
    ping_flood_from_a_peer_that_never_reads_stays_bounded,
    keep_alive_detects_a_vanished_peer_within_the_deadline,
    resets_mid_handshake_and_mid_transfer_give_typed_errors_and_release_fds,
    sequential_cycles_leak_nothing,
);

runtime_tests!(
    with shared:
    non_upgrade_requests_get_an_http_error_response,
    dial_to_a_server_answering_with_too_many_small_headers_fails,
    dial_to_a_server_dribbling_its_response_fails_at_the_handshake_timeout,
    rfc6455_violations_close_with_the_right_code_and_a_typed_error,
    pings_are_answered_and_valid_close_frames_echoed,
    stress_1_conn_100_streams_100_messages,
    stress_50_conns_10_streams_50_messages,
    stress_1_conn_1000_streams_10_messages,
    message_api_reports_kinds_boundaries_and_empty_messages,
);
