//! Frame and message size limits, and the work one read call does, over real sockets on 127.0.0.1
//! against raw peers: frame headers declaring up to 2^63-1 bytes and messages over the limit close
//! with 1009 without allocating; frames and messages exactly at their limits pass and one byte over
//! closes with 1009; one read call does bounded work however fast a peer streams empty frames or
//! pings, and the upgrade timeout still fires against such a peer. The frame rules themselves are
//! in `frames.rs`. Every test runs on both runtimes and bounds every wait; each case of a table runs
//! under a time bound that names it. Each test prints the figures it measures, each line naming the
//! runtime (`figure (tokio): ...`; run with `--nocapture` to see them).
//!
//! The test that measures RSS runs through [`exclusive`], beside nothing else of this binary; the
//! others through [`shared`] (the flood tests with each case on a [`on_watchdog`] thread, which
//! bounds it).

mod common;

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{process::*, raw::*, *};
use futures::{future::poll_fn, AsyncRead, AsyncReadExt, AsyncWriteExt};
use libp2p::core::Transport as _;
use libp2p::identity::Keypair;
use libp2p_ws::{Config, FrameError};

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
// Oversized frames and messages
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
// Sizes at and one byte over the limits
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
// One read call does bounded work
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

runtime_tests!(
    with exclusive:
    oversized_frames_and_messages_close_with_1009_without_allocating,
);

runtime_tests!(
    with shared:
    frames_and_messages_at_their_limit_pass_and_one_byte_over_closes_with_1009,
    a_flood_of_empty_frames_or_pings_cannot_hold_a_read_call,
    the_upgrade_timeout_fires_against_a_peer_streaming_empty_frames,
);
