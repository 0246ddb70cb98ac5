//! Back-pressure: a peer that never reads blocks our writer after a bounded
//! amount, with bounded memory, and every byte arrives once it reads; `close` towards it gives up
//! at the close timeout; a ping flood from a peer that never reads (so never takes our pongs) keeps
//! our buffers bounded. Every test runs on both runtimes over real sockets on 127.0.0.1 and bounds
//! every wait. Each test prints the figures it measures, each line naming the runtime (`figure
//! (tokio): ...`; run with `--nocapture` to see them).
//!
//! The tests measure RSS, so they run through [`exclusive`], one at a time.
//!
//! Environment knob: `HARDENING_BACKPRESSURE_BYTES`, the bytes written in
//! `writer_is_backpressured_by_a_peer_that_never_reads` (default 1 GiB).

mod common;

use std::{
    io,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{process::*, raw::*, *};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p_ws::Config;

// =================================================================================================
// Backpressure: a peer that never reads
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

runtime_tests!(
    with exclusive:
    writer_is_backpressured_by_a_peer_that_never_reads,
    ping_flood_from_a_peer_that_never_reads_stays_bounded,
);
