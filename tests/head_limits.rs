//! Oversized HTTP heads (issue 6, hardening): requests with a 1 MiB header line or 10,000 headers
//! are answered 431 after the listener read at most its limit, and a dial to a malicious server
//! answering with 64 MiB of headers, or with too many small ones, fails after reading at most the
//! limit. Every test runs on both runtimes over real sockets on 127.0.0.1 and bounds every wait.
//! Each test prints the figures it measures, each line naming the runtime (`figure (tokio): ...`;
//! run with `--nocapture` to see them).
//!
//! The tests that measure RSS run through [`exclusive`], beside nothing else of this binary; the
//! others through [`shared`].

mod common;

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use async_std::net::{TcpListener, TcpStream};
use common::{process::*, raw::*, *};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p_ws::{Config, Error, HandshakeError};

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
// Oversized request heads
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

// =================================================================================================
// A malicious server answering with 64 MiB of headers
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

runtime_tests!(
    with exclusive:
    oversized_request_heads_are_answered_431_after_reading_at_most_the_limit,
    dial_to_a_server_sending_64_mib_of_headers_fails_fast_after_reading_the_limit,
);

runtime_tests!(
    with shared:
    dial_to_a_server_answering_with_too_many_small_headers_fails,
);
