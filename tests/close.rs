//! `close` is bounded by `close_timeout` on every path: over TLS, where rustls
//! takes the close frame into its own buffer and the wait moves to the flush and `close_notify`;
//! over plain TCP; and after the connection already failed. The peer stops reading, so nothing can
//! leave. Each case prints the time `close` took (`--nocapture`). Each test runs on both runtimes.

mod common;

use std::{
    future::poll_fn,
    io,
    time::{Duration, Instant},
};

use common::{raw::case, *};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p_ws::{
    tls::dev::TestCa, Config, FrameError, ProtocolViolation, ServerCertificate, TlsConfig,
};

const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Every case must finish within this (a close that never returns fails with the case's name).
const CASE: Duration = Duration::from_secs(15);

/// How long a write or flush may make no progress before the socket counts as full.
const STALL: Duration = Duration::from_millis(300);

/// Writes 16 KiB pieces, flushing each, until two flushes in a row make no progress for [`STALL`]:
/// the peer's receive buffer and our send buffer are full. The last piece is then still in the
/// socket layer: over TLS in rustls's buffer (which still has room), over TCP in our write buffer.
/// Returns the bytes written.
async fn fill_until_stalled<R: Runtime>(conn: &mut Output<R>) -> u64 {
    let piece = pattern(7, 16 * 1024);
    let mut written = 0u64;
    loop {
        conn.write_all(&piece).await.expect("write");
        written += piece.len() as u64;
        let mut stalled = 0;
        while stalled < 2 {
            match timeout::<R, _>(STALL, conn.flush()).await {
                Some(result) => {
                    result.expect("flush");
                    break;
                }
                None => stalled += 1,
            }
        }
        if stalled == 2 {
            return written;
        }
        assert!(
            written < 256 * 1024 * 1024,
            "the peer's socket never filled"
        );
    }
}

/// A listener and a dialer, plain or TLS, connected; `(listener side, dialer side)`.
async fn pair<R: Runtime>(tls: bool, ca: &TestCa) -> (Output<R>, Output<R>) {
    let base = Config::default()
        .with_close_timeout(CLOSE_TIMEOUT)
        .with_keep_alive(None);
    if tls {
        let (chain, key) = ca.issue(&["127.0.0.1"]).expect("issue");
        let cert = ServerCertificate::from_der(chain, key).expect("certificate");
        let server = base
            .clone()
            .with_tls(TlsConfig::new().with_server_certificate(&cert));
        let client = base.with_tls(TlsConfig::new().add_root_der(ca.certificate()));
        connected_pair::<R>(server, client, "/ip4/127.0.0.1/tcp/0/tls/ws").await
    } else {
        connected_pair::<R>(base.clone(), base, "/ip4/127.0.0.1/tcp/0/ws").await
    }
}

#[derive(Debug, Clone, Copy)]
enum Path {
    /// `close` on a healthy connection.
    Healthy,
    /// `close` after reading a protocol violation failed the connection.
    AfterFailure,
}

async fn close_gives_up_at_close_timeout_when_the_peer_stops_reading<R: Runtime>() {
    let ca = TestCa::new("close test CA").expect("CA");
    // (case, TLS, the listener closes, path, close times out). After a failure, a plain TCP
    // close has nothing left to wait for (the failure dropped the unsent bytes), so it returns
    // at once; TLS still has to send close_notify.
    let cases = [
        ("TLS, the dialer closes", true, false, Path::Healthy, true),
        ("TLS, the listener closes", true, true, Path::Healthy, true),
        (
            "TLS, the dialer closes after a failure",
            true,
            false,
            Path::AfterFailure,
            true,
        ),
        (
            "TLS, the listener closes after a failure",
            true,
            true,
            Path::AfterFailure,
            true,
        ),
        (
            "plain TCP, the dialer closes",
            false,
            false,
            Path::Healthy,
            true,
        ),
        (
            "plain TCP, the listener closes",
            false,
            true,
            Path::Healthy,
            true,
        ),
        (
            "plain TCP, the dialer closes after a failure",
            false,
            false,
            Path::AfterFailure,
            false,
        ),
        (
            "plain TCP, the listener closes after a failure",
            false,
            true,
            Path::AfterFailure,
            false,
        ),
    ];
    for (name, tls, listener_closes, path, times_out) in cases {
        case::<R, _>(name, CASE, async {
            let (listener_side, dialer_side) = pair::<R>(tls, &ca).await;
            let (mut ours, mut peer) = if listener_closes {
                (listener_side, dialer_side)
            } else {
                (dialer_side, listener_side)
            };
            // The peer never reads from here on.
            let written = fill_until_stalled::<R>(&mut ours).await;
            if let Path::AfterFailure = path {
                // The peer sends a text message that is not UTF-8: reading it fails our side
                // (which queues a close frame behind the stalled data).
                poll_fn(|cx| {
                    peer.websocket_mut()
                        .expect("a WebSocket connection")
                        .poll_send_message(cx, true, b"caf\xe9")
                })
                .await
                .unwrap();
                peer.flush().await.unwrap();
                let mut buf = [0u8; 16];
                let error = ours.read(&mut buf).await.expect_err("invalid UTF-8");
                assert_eq!(
                    FrameError::from_io(&error),
                    Some(&FrameError::Protocol(ProtocolViolation::InvalidUtf8Text)),
                    "{name}: {error}"
                );
            }
            let start = Instant::now();
            let result = ours.close().await;
            let elapsed = start.elapsed();
            println!(
                "figure ({}): {name}: {:.1} MiB written before the socket stalled; close() \
                 returned after {elapsed:?} (close_timeout {CLOSE_TIMEOUT:?}): {result:?}",
                R::NAME,
                written as f64 / (1024.0 * 1024.0)
            );
            if !times_out {
                result.expect("nothing left to wait for");
                assert!(
                    elapsed < CLOSE_TIMEOUT / 2,
                    "{name}: close took {elapsed:?}"
                );
                return;
            }
            let error = result.expect_err("close cannot complete");
            assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{name}: {error}");
            assert!(
                elapsed >= CLOSE_TIMEOUT - Duration::from_millis(20)
                    && elapsed < CLOSE_TIMEOUT + Duration::from_secs(1),
                "{name}: close took {elapsed:?}"
            );
            // Later calls fail at once; nothing hangs or panics.
            let again = Instant::now();
            let second = ours.close().await;
            assert!(second.is_err(), "{name}: second close {second:?}");
            assert!(again.elapsed() < Duration::from_millis(200), "{name}");
            assert!(ours.write_all(b"x").await.is_err(), "{name}");
            drop(peer);
        })
        .await;
    }
}

async fn close_with_a_reading_peer_completes_well_within_close_timeout<R: Runtime>() {
    let ca = TestCa::new("close test CA").expect("CA");
    for (name, tls) in [("TLS", true), ("plain TCP", false)] {
        case::<R, _>(name, CASE, async {
            let (mut listener_side, mut dialer_side) = pair::<R>(tls, &ca).await;
            dialer_side.write_all(b"bye").await.unwrap();
            let start = Instant::now();
            let closing = spawn::<R, _>(async move {
                let result = dialer_side.close().await;
                (result, start.elapsed())
            });
            let mut got = Vec::new();
            listener_side.read_to_end(&mut got).await.unwrap();
            let (result, elapsed) = closing.await;
            println!(
                "figure ({}): {name}: close() towards a reading peer took {elapsed:?}",
                R::NAME
            );
            result.expect("close completes");
            assert_eq!(got, b"bye");
            assert!(elapsed < CLOSE_TIMEOUT / 2, "{name}: {elapsed:?}");
        })
        .await;
    }
}

/// Like [`run`] without its overall bound, with room for all the cases (each bounded by
/// [`CASE`]).
fn run_long<R: Runtime, F: std::future::Future>(future: F) -> F::Output {
    init_logging();
    R::block_on(future)
}

runtime_tests!(with run_long: close_gives_up_at_close_timeout_when_the_peer_stops_reading);
runtime_tests!(close_with_a_reading_peer_completes_well_within_close_timeout);
