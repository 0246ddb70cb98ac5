//! Abrupt resets: a TCP reset in the middle of the upgrade or of a frame, on
//! either side, while we read or write, gives a typed error, every later call fails without a panic
//! or a hang, and no file descriptor leaks. Runs on both runtimes over real sockets on 127.0.0.1
//! and bounds every wait. Each test prints the figures it measures, each line naming the runtime
//! (`figure (tokio): ...`; run with `--nocapture` to see them).
//!
//! The test counts this process's file descriptors, so it runs through [`exclusive`].

mod common;

use std::{
    io,
    time::{Duration, Instant},
};

use async_std::net::TcpStream;
use common::{process::*, raw::*, *};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p_ws::{Config, Error, FrameError};

// =================================================================================================
// Abrupt resets
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
        // The listener reports a connection once its request head is in; give it the time to
        // accept this one and read the start.
        R::sleep(Duration::from_millis(300)).await;
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

runtime_tests!(
    with exclusive:
    resets_mid_handshake_and_mid_transfer_give_typed_errors_and_release_fds,
);
