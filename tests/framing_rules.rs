//! The framing layer's rules over real sockets on 127.0.0.1, against raw peers: one read call does
//! bounded work however fast a peer streams empty frames or pings (issue 11, item 3); control frames
//! must use the 7-bit length form (item 7); and the limits a reviewer could loosen without a test
//! noticing: messages and frames exactly at and one byte over their limits, a TCP end of stream
//! inside a frame, the keep-alive deadline. Each test prints its figures (`--nocapture`); each case
//! of a table runs under a time bound that names it. Each test runs on both runtimes.

mod common;

use std::{
    future::Future,
    io,
    net::Shutdown,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{raw::*, *};
use futures::{future::poll_fn, AsyncRead, AsyncReadExt, AsyncWriteExt};
use libp2p::core::Transport as _;
use libp2p::identity::Keypair;
use libp2p_ws::{Config, FrameError, KeepAlive};

/// Every case of a table-driven test must finish within this.
const CASE: Duration = Duration::from_secs(10);

/// Runs `body` on runtime `R` on a thread of its own, and waits at most `limit` for it (on the
/// calling test's thread and timer). A poll that never returns cannot be interrupted by a timer on
/// the same task, so this is how a test fails (naming the case) instead of hanging when one read
/// call spins.
async fn on_watchdog<R: Runtime, T: Send + 'static>(
    name: &str,
    limit: Duration,
    body: impl Future<Output = T> + Send + 'static,
) -> T {
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(R::block_on(body));
    });
    match timeout::<R, _>(limit, rx).await {
        Some(Ok(value)) => value,
        None => panic!(
            "case {name:?} did not finish within {limit:?} on {}: a poll that never returns keeps \
             its timers from firing",
            R::NAME
        ),
        Some(Err(futures::channel::oneshot::Canceled)) => {
            panic!("case {name:?} panicked on {} (see above)", R::NAME)
        }
    }
}

/// Which side of the connection is ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ours {
    /// Our listener, a raw client (which masks what it sends).
    Listener,
    /// Our dialer, a raw server.
    Dialer,
}

impl Ours {
    /// The mask the raw peer must use.
    fn mask(self) -> Option<[u8; 4]> {
        match self {
            Ours::Listener => Some(MASK),
            Ours::Dialer => None,
        }
    }

    /// Our connection (with `config`, on runtime `R`) and the raw peer.
    async fn connect<R: Runtime>(self, config: Config) -> (Output<R>, Raw) {
        match self {
            Ours::Listener => {
                // The listener stops when `server` is dropped; the connection lives on.
                let mut server = Server::<R>::plain(config).await;
                server_and_raw_client(&mut server).await
            }
            Ours::Dialer => client_and_raw_server::<R>(config).await,
        }
    }
}

const BOTH: [Ours; 2] = [Ours::Listener, Ours::Dialer];

/// Writes `unit` (repeated to 64 KiB per write) as fast as the socket takes it, for at most
/// `for_at_most`, until the connection fails; counts the bytes sent. The raw peer floods from a
/// thread of its own, in parallel with our side whichever runtime that is on.
fn flood(raw: &Raw, unit: Vec<u8>, for_at_most: Duration, sent: Arc<AtomicU64>) {
    let mut s = raw.s.clone();
    let chunk: Vec<u8> = unit
        .iter()
        .copied()
        .cycle()
        .take(unit.len() * (65536 / unit.len()))
        .collect();
    std::thread::spawn(move || {
        async_std::task::block_on(async move {
            let start = Instant::now();
            while start.elapsed() < for_at_most {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        })
    });
}

/// Thread CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

// =================================================================================================
// Item 3: one read call does bounded work
// =================================================================================================

async fn a_flood_of_empty_frames_or_pings_cannot_hold_a_read_call<R: Runtime>() {
    let wait = Duration::from_millis(500);
    for ours in BOTH {
        let mask = ours.mask();
        // (what, the first frame, the frame repeated)
        let floods: [(&str, Vec<u8>, Vec<u8>); 3] = [
            ("empty binary frames", vec![], frame(true, 0, 2, mask, b"")),
            ("empty pings", vec![], frame(true, 0, 9, mask, b"")),
            (
                "empty continuation frames",
                frame(false, 0, 2, mask, b""),
                frame(false, 0, 0, mask, b""),
            ),
        ];
        for (what, first, unit) in floods {
            let name = format!("our {ours:?} reading a flood of {what}");
            let case_name = name.clone();
            let unit_len = unit.len() as u64;
            let (elapsed, polls, longest, cpu, sent, result) =
                on_watchdog::<R, _>(&name, CASE, async move {
                    let config = Config::default().with_keep_alive(None);
                    let (mut conn, mut raw) = ours.connect::<R>(config).await;
                    raw.send(&first).await.unwrap();
                    let sent = Arc::new(AtomicU64::new(0));
                    flood(&raw, unit, Duration::from_secs(5), sent.clone());
                    // Nothing but empty frames arrives: the read must stay pending and let the
                    // timeout beside it fire.
                    let mut buf = [0u8; 64];
                    let (mut polls, mut longest) = (0u32, Duration::ZERO);
                    let (start, cpu_start) = (Instant::now(), thread_cpu());
                    let read = poll_fn(|cx| {
                        polls += 1;
                        // CPU time, not wall time: a preempted poll is not a long one.
                        let t = thread_cpu();
                        let r = Pin::new(&mut conn).poll_read(cx, &mut buf);
                        longest = longest.max(thread_cpu() - t);
                        r
                    });
                    let result = timeout::<R, _>(wait, read).await;
                    let (elapsed, cpu) = (start.elapsed(), thread_cpu() - cpu_start);
                    drop(conn);
                    drop(raw);
                    let result = result.map(|r| r.map_err(|e| e.to_string()));
                    (
                        elapsed,
                        polls,
                        longest,
                        cpu,
                        sent.load(Ordering::Relaxed),
                        result,
                    )
                })
                .await;
            println!(
                "figure ({}): {case_name}: the {wait:?} timeout beside the read fired after \
                 {elapsed:?}; {polls} polls, the longest {longest:?} of CPU; reader thread CPU \
                 {cpu:?}; about {} frames flooded",
                R::NAME,
                sent / unit_len
            );
            assert!(
                result.is_none(),
                "{case_name}: the read returned {result:?}"
            );
            assert!(
                elapsed < wait + Duration::from_secs(1),
                "{case_name}: the timeout fired late: {elapsed:?}"
            );
            assert!(polls > 1, "{case_name}: the read never yielded");
            assert!(
                longest < Duration::from_millis(20),
                "{case_name}: one poll used {longest:?} of CPU"
            );
        }
    }
}

async fn the_upgrade_timeout_fires_against_a_peer_streaming_empty_frames<R: Runtime>() {
    let timeout = Duration::from_secs(1);
    for ours in BOTH {
        let name = format!("our {ours:?} upgrading (noise) against empty frames");
        let (elapsed, error) = on_watchdog::<R, _>(&name, CASE, async move {
            let key = Keypair::generate_ed25519();
            let config = Config::default()
                .with_upgrade_timeout(timeout)
                .with_keep_alive(None);
            let mut transport = R::upgraded(&key, config);
            let sent = Arc::new(AtomicU64::new(0));
            match ours {
                Ours::Dialer => {
                    let (listener, addr) = raw_listener().await;
                    let start = Instant::now();
                    let dial = transport.dial(addr, dial_opts()).unwrap();
                    let dialing = spawn::<R, _>(dial);
                    let raw = raw_accept(&listener).await;
                    flood(
                        &raw,
                        frame(true, 0, 2, None, b""),
                        Duration::from_secs(5),
                        sent,
                    );
                    let result = dialing.await;
                    drop(raw);
                    (
                        start.elapsed(),
                        result.map(|_| ()).map_err(|e| e.to_string()),
                    )
                }
                Ours::Listener => {
                    let (_, addr) = listen_any(&mut transport, "/ip4/127.0.0.1/tcp/0/ws").await;
                    let socket = common::raw::socket_addr(&addr);
                    let start = Instant::now();
                    let mut raw =
                        Raw::new(async_std::net::TcpStream::connect(socket).await.unwrap());
                    raw.send(UPGRADE_REQUEST).await.unwrap();
                    let upgrade = next_incoming(&mut transport).await;
                    let upgrading = spawn::<R, _>(upgrade);
                    let head = raw.read_head().await.unwrap();
                    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
                    flood(
                        &raw,
                        frame(true, 0, 2, Some(MASK), b""),
                        Duration::from_secs(5),
                        sent,
                    );
                    let result = upgrading.await;
                    drop(raw);
                    (
                        start.elapsed(),
                        result.map(|_| ()).map_err(|e| e.to_string()),
                    )
                }
            }
        })
        .await;
        println!(
            "figure ({}): {name}: the {timeout:?} upgrade timeout ended it after {elapsed:?}: \
             {error:?}",
            R::NAME
        );
        assert!(error.is_err(), "{name}: the upgrade succeeded");
        assert!(
            elapsed < timeout + Duration::from_secs(1),
            "{name}: took {elapsed:?}"
        );
    }
}

// =================================================================================================
// Item 7: control frames use the 7-bit length form
// =================================================================================================

/// A control frame whose (short) length is written in the 16- or 64-bit form.
fn control_with_long_length(
    opcode: u8,
    form: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = vec![0x80 | opcode, if mask.is_some() { 0x80 } else { 0 } | form];
    match form {
        126 => v.extend_from_slice(&(payload.len() as u16).to_be_bytes()),
        _ => v.extend_from_slice(&(payload.len() as u64).to_be_bytes()),
    }
    if let Some(k) = mask {
        v.extend_from_slice(&k);
    }
    let body = v.len();
    v.extend_from_slice(payload);
    if let Some(k) = mask {
        for (i, b) in v[body..].iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    v
}

async fn control_frames_with_a_16_or_64_bit_length_close_with_1002<R: Runtime>() {
    for ours in BOTH {
        for (what, opcode, payload) in [
            ("ping", 9u8, b"ping".to_vec()),
            ("pong", 10, b"pong".to_vec()),
            ("close", 8, close_payload(1000, b"bye")),
        ] {
            for form in [126u8, 127] {
                let name = format!("our {ours:?} <- {what} with a {form}-form length");
                case::<R, _>(&name, CASE, async {
                    let (mut conn, mut raw) = ours.connect::<R>(Config::default()).await;
                    raw.send(&control_with_long_length(
                        opcode,
                        form,
                        ours.mask(),
                        &payload,
                    ))
                    .await
                    .unwrap();
                    let error = read_until_error(&mut conn).await;
                    let code = raw.close_code().await.expect("a close frame");
                    let typed = FrameError::from_io(&error);
                    println!(
                        "figure ({}): {name}: closed with {code:?}, {typed:?}",
                        R::NAME
                    );
                    assert_eq!(code, Some(1002), "{name}");
                    assert!(
                        matches!(typed, Some(FrameError::Protocol(_))),
                        "{name}: {error}"
                    );
                })
                .await;
            }
        }
    }
}

// =================================================================================================
// Promised but untested: sizes at and one byte over the limits
// =================================================================================================

async fn frames_and_messages_at_their_limit_pass_and_one_byte_over_closes_with_1009<R: Runtime>() {
    const FRAME: usize = 1000;
    const MESSAGE: usize = 2500;
    let config = Config::default()
        .with_max_frame_size(FRAME)
        .with_max_message_size(MESSAGE);
    for ours in BOTH {
        let m = ours.mask();
        let data = |n: usize| pattern(n as u64, n);
        // (what, the frames, Ok(bytes read) or Err(close code))
        let cases: Vec<(&str, Vec<u8>, Result<usize, u16>)> = vec![
            (
                "a frame of exactly max_frame_size",
                frame(true, 0, 2, m, &data(FRAME)),
                Ok(FRAME),
            ),
            (
                "a frame one byte over max_frame_size",
                frame(true, 0, 2, m, &data(FRAME + 1)),
                Err(1009),
            ),
            (
                "a message of exactly max_message_size (3 frames)",
                [
                    frame(false, 0, 2, m, &data(FRAME)),
                    frame(false, 0, 0, m, &data(FRAME)),
                    frame(true, 0, 0, m, &data(MESSAGE - 2 * FRAME)),
                ]
                .concat(),
                Ok(MESSAGE),
            ),
            (
                "a message one byte over max_message_size (3 frames)",
                [
                    frame(false, 0, 2, m, &data(FRAME)),
                    frame(false, 0, 0, m, &data(FRAME)),
                    frame(true, 0, 0, m, &data(MESSAGE - 2 * FRAME + 1)),
                ]
                .concat(),
                Err(1009),
            ),
        ];
        for (what, bytes, expected) in cases {
            let name = format!("our {ours:?} <- {what}");
            case::<R, _>(&name, CASE, async {
                let (mut conn, mut raw) = ours.connect::<R>(config.clone()).await;
                raw.send(&bytes).await.unwrap();
                match expected {
                    Ok(len) => {
                        let mut got = vec![0u8; len];
                        conn.read_exact(&mut got).await.expect("read at the limit");
                        println!("figure ({}): {name}: read all {len} bytes", R::NAME);
                        // The connection is still usable: a clean close follows.
                        raw.send(&frame(true, 0, 8, m, &close_payload(1000, b"")))
                            .await
                            .unwrap();
                        let mut rest = [0u8; 1];
                        assert_eq!(conn.read(&mut rest).await.unwrap(), 0, "{name}");
                    }
                    Err(code) => {
                        let error = read_until_error(&mut conn).await;
                        let got = raw.close_code().await.expect("a close frame");
                        let typed = FrameError::from_io(&error).cloned();
                        println!(
                            "figure ({}): {name}: closed with {got:?}, {typed:?}",
                            R::NAME
                        );
                        assert_eq!(got, Some(code), "{name}");
                        assert!(
                            matches!(
                                typed,
                                Some(
                                    FrameError::FrameTooLarge { .. }
                                        | FrameError::MessageTooLarge { .. }
                                )
                            ),
                            "{name}: {error}"
                        );
                    }
                }
            })
            .await;
        }
    }
}

// =================================================================================================
// Promised but untested: a TCP end of stream inside a frame is an error
// =================================================================================================

/// Reads until the first error or end of stream; returns the bytes read and how it ended.
async fn read_to_end_or_error<S: AsyncRead + Unpin>(
    conn: &mut S,
    piece: usize,
) -> (usize, io::Result<()>) {
    let mut buf = vec![0u8; piece];
    let mut total = 0;
    loop {
        match conn.read(&mut buf).await {
            Ok(0) => return (total, Ok(())),
            Ok(n) => total += n,
            Err(e) => return (total, Err(e)),
        }
    }
}

async fn a_tcp_end_of_stream_inside_a_frame_is_an_error_never_a_clean_end<R: Runtime>() {
    for ours in BOTH {
        let m = ours.mask();
        let whole = frame(true, 0, 2, m, &pattern(1, 10_000));
        let header_len = whole.len() - 10_000;
        // (what, bytes before the TCP FIN, a clean end expected)
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            (
                "FIN inside a 10,000-byte payload",
                whole[..header_len + 4000].to_vec(),
                false,
            ),
            (
                "FIN after the first header byte",
                whole[..1].to_vec(),
                false,
            ),
            ("FIN inside the extended length", whole[..3].to_vec(), false),
            (
                "FIN inside a ping's payload",
                frame(true, 0, 9, m, b"0123456789")[..8].to_vec(),
                false,
            ),
            (
                "FIN between the frames of a fragmented message",
                frame(false, 0, 2, m, b"first part"),
                false,
            ),
            ("FIN after a whole frame (control)", whole.clone(), true),
        ];
        for (what, bytes, clean) in cases {
            // Small reads go through the read buffer, large ones straight into the caller's
            // buffer: both paths must see the truncation.
            for piece in [100, 64 * 1024] {
                let name = format!("our {ours:?}, reads of {piece}: {what}");
                case::<R, _>(&name, CASE, async {
                    let (mut conn, mut raw) = ours.connect::<R>(Config::default()).await;
                    raw.send(&bytes).await.unwrap();
                    raw.s.shutdown(Shutdown::Write).unwrap();
                    let (read, outcome) = read_to_end_or_error(&mut conn, piece).await;
                    println!(
                        "figure ({}): {name}: {read} bytes, then {outcome:?}",
                        R::NAME
                    );
                    if clean {
                        outcome.expect("a clean end of stream");
                        assert_eq!(read, 10_000, "{name}");
                    } else {
                        let error = outcome.expect_err("an error, not a clean end of stream");
                        assert_eq!(
                            FrameError::from_io(&error),
                            Some(&FrameError::UnexpectedEof),
                            "{name}: {error}"
                        );
                        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{name}");
                    }
                })
                .await;
            }
        }
    }
}

// =================================================================================================
// Promised but untested: the keep-alive deadline within 25%
// =================================================================================================

async fn keep_alive_fails_a_silent_peer_within_25_percent_of_its_deadline<R: Runtime>() {
    let keep_alive = KeepAlive {
        interval: Duration::from_millis(300),
        timeout: Duration::from_millis(500),
    };
    let deadline = keep_alive.interval + keep_alive.timeout;
    let (low, high) = (deadline.mul_f64(0.75), deadline.mul_f64(1.25));
    for ours in BOTH {
        let name = format!("our {ours:?}, silent peer");
        case::<R, _>(&name, CASE, async {
            let config = Config::default().with_keep_alive(Some(keep_alive));
            let (mut conn, mut raw) = ours.connect::<R>(config).await;
            let start = Instant::now();
            let error = read_until_error(&mut conn).await;
            let elapsed = start.elapsed();
            let ping = raw.read_frame().await.expect("a ping");
            println!(
                "figure ({}): {name}: keep-alive {keep_alive:?} failed the connection after \
                 {elapsed:?} (deadline {deadline:?}, allowed {low:?}..{high:?}): {error}",
                R::NAME
            );
            assert_eq!(ping.opcode, 9, "{name}: a ping first");
            assert!(
                matches!(
                    FrameError::from_io(&error),
                    Some(FrameError::KeepAliveTimeout(_))
                ),
                "{name}: {error}"
            );
            assert!(
                elapsed >= low && elapsed <= high,
                "{name}: failed after {elapsed:?}, outside {low:?}..{high:?}"
            );
        })
        .await;
    }
}

/// Like [`run`] without its overall bound, for the tests whose every case runs under
/// [`on_watchdog`] (which bounds it).
fn run_watched<R: Runtime, F: Future>(future: F) -> F::Output {
    init_logging();
    R::block_on(future)
}

runtime_tests!(
    with run_watched:
    a_flood_of_empty_frames_or_pings_cannot_hold_a_read_call,
    the_upgrade_timeout_fires_against_a_peer_streaming_empty_frames,
);

runtime_tests!(
    control_frames_with_a_16_or_64_bit_length_close_with_1002,
    frames_and_messages_at_their_limit_pass_and_one_byte_over_closes_with_1009,
    a_tcp_end_of_stream_inside_a_frame_is_an_error_never_a_clean_end,
    keep_alive_fails_a_silent_peer_within_25_percent_of_its_deadline,
);
