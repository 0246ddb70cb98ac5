//! Keep-alive over real sockets on 127.0.0.1: it detects a peer that vanished (a half-open
//! connection), on our listener and on our dialer, within its deadline, fails a silent raw peer
//! within 25% of the deadline, and keeps a peer that answers pings. Runs on both runtimes and bounds
//! every wait. Each test prints the figures it measures, each line naming the runtime (`figure
//! (tokio): ...`; run with `--nocapture` to see them). (`ping_example.rs` stops a whole node.)
//!
//! The tests time against deadlines, so they run through [`exclusive`].

mod common;

use std::{
    io,
    time::{Duration, Instant},
};

use common::{process::*, raw::*, *};
use futures::{future::Either, AsyncReadExt};
use libp2p_ws::{Config, FrameError, KeepAlive};

/// Every case of a table-driven test must finish within this.
const CASE: Duration = Duration::from_secs(10);

// =================================================================================================
// Half-open connections: keep-alive
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
// A silent peer fails within 25% of the deadline
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

runtime_tests!(
    with exclusive:
    keep_alive_detects_a_vanished_peer_within_the_deadline,
    keep_alive_fails_a_silent_peer_within_25_percent_of_its_deadline,
);
