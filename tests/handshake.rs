//! The HTTP upgrade's rules and its head limits, with raw peers over 127.0.0.1: bytes sent right
//! behind the request (or the 101) are kept, RFC 6455's MUSTs for both sides, the checks a reviewer
//! could break without a test noticing (a wrong `Sec-WebSocket-Accept`, a head limit under 8 KiB),
//! and oversized heads: requests with a 1 MiB header line or 10,000 headers are answered 431 after
//! the listener read at most its limit, and a dial to a malicious server answering with 64 MiB of
//! headers, or with too many small ones, fails after reading at most the limit. Deadlines (slow
//! peers, the pending-handshake cap) are in `handshake_timeouts.rs`. Every test runs on both
//! runtimes and bounds every wait; each prints its figures, each line naming the runtime (`figure
//! (tokio): ...`; run with `--nocapture` to see them).
//!
//! The tests that measure RSS run through [`exclusive`], beside nothing else of this binary; the
//! others through [`shared`] ([`shared_bounded`] where the body does not bound itself).

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_std::net::{TcpListener, TcpStream};
use common::{process::*, raw::*, *};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p_ws::{Config, Error, HandshakeError};

/// Every case of a table-driven test must finish within this.
const CASE: Duration = Duration::from_secs(5);

/// An upgrade request with `extra` header lines (each ending in CRLF) before the blank line.
fn request_with(extra: &str) -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// Sends `request` as a raw client; returns the status line of the answer and the raw peer.
async fn status_of<R: Runtime>(server: &Server<R>, request: &[u8]) -> (String, Raw) {
    let mut raw = Raw::new(TcpStream::connect(server.socket).await.expect("connect"));
    raw.send(request).await.expect("send request");
    let head = raw.read_head().await.unwrap_or_default();
    (head.lines().next().unwrap_or("").to_string(), raw)
}

// ----- bytes behind the request head -------------------------------------------------------------

async fn frames_sent_in_the_same_write_as_the_request_are_not_lost<R: Runtime>() {
    let mut server = Server::<R>::plain(Config::default()).await;
    let ping = frame(true, 0, 9, Some(MASK), b"early ping");
    let data = frame(true, 0, 2, Some(MASK), b"early data, in two pieces");

    // A ping right behind the request: it is answered.
    case::<R, _>("request + ping", CASE, async {
        let mut raw = Raw::new(TcpStream::connect(server.socket).await.unwrap());
        raw.send(&[UPGRADE_REQUEST, &ping].concat()).await.unwrap();
        let head = raw.read_head().await.unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let mut conn = server.next_ok().await;
        // Our side reads (the pong goes out while it does); the raw peer waits for the pong.
        let mut buf = [0u8; 8];
        let read = conn.read(&mut buf);
        let pong = raw.read_frame();
        futures::pin_mut!(read, pong);
        let pong = match futures::future::select(read, pong).await {
            futures::future::Either::Right((pong, _)) => pong.expect("pong"),
            futures::future::Either::Left((r, _)) => panic!("read returned first: {r:?}"),
        };
        println!(
            "figure ({}): a ping sent in the same write as the request was answered: opcode {}, \
             payload {:?}",
            R::NAME,
            pong.opcode,
            String::from_utf8_lossy(&pong.payload)
        );
        assert_eq!(
            (pong.opcode, pong.payload.as_slice()),
            (10, &b"early ping"[..])
        );
    })
    .await;

    // Half a data frame behind the request, the rest later: the frame is read whole.
    case::<R, _>("request + half a frame", CASE, async {
        let mut raw = Raw::new(TcpStream::connect(server.socket).await.unwrap());
        let (first, second) = data.split_at(data.len() / 2);
        raw.send(&[UPGRADE_REQUEST, first].concat()).await.unwrap();
        let head = raw.read_head().await.unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let mut conn = server.next_ok().await;
        raw.send(second).await.unwrap();
        let mut got = vec![0u8; 25];
        conn.read_exact(&mut got).await.expect("the frame is read");
        println!(
            "figure ({}): a frame split {}+{} bytes around the upgrade was read as {:?}",
            R::NAME,
            first.len(),
            second.len(),
            String::from_utf8_lossy(&got)
        );
        assert_eq!(got, b"early data, in two pieces");
    })
    .await;

    // A whole data frame and a ping behind the request: both handled, in order.
    case::<R, _>("request + data + ping", CASE, async {
        let mut raw = Raw::new(TcpStream::connect(server.socket).await.unwrap());
        raw.send(&[UPGRADE_REQUEST, &data, &ping].concat())
            .await
            .unwrap();
        raw.read_head().await.unwrap();
        let mut conn = server.next_ok().await;
        let mut got = vec![0u8; 25];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"early data, in two pieces");
        let mut buf = [0u8; 8];
        let read = conn.read(&mut buf);
        let pong = raw.read_frame();
        futures::pin_mut!(read, pong);
        match futures::future::select(read, pong).await {
            futures::future::Either::Right((pong, _)) => assert_eq!(pong.unwrap().opcode, 10),
            futures::future::Either::Left((r, _)) => panic!("read returned first: {r:?}"),
        }
    })
    .await;
}

async fn the_dialer_keeps_frames_sent_with_the_101_response<R: Runtime>() {
    let (listener, addr) = raw_listener().await;
    let (raw, conn) = futures::join!(
        raw_accept_edited(&listener, |response| {
            // The server's first frame rides in the same write as its response.
            [response.as_bytes(), &frame(true, 0, 2, None, b"hello")].concat()
        }),
        dial::<R>(Config::default(), addr)
    );
    let mut conn = conn.expect("dial succeeds");
    let mut got = [0u8; 5];
    conn.read_exact(&mut got).await.unwrap();
    println!(
        "figure ({}): dialer read {:?} sent with the 101",
        R::NAME,
        String::from_utf8_lossy(&got)
    );
    assert_eq!(&got, b"hello");
    drop(raw);
}

// ----- the dialer fails a 101 with what it did not ask for ---------------------------------------

async fn dial_fails_on_a_101_with_an_unrequested_extension_or_subprotocol_or_a_wrong_accept<
    R: Runtime,
>() {
    type Check = fn(&HandshakeError) -> bool;
    let cases: [(&str, &str, Check); 6] = [
        (
            "permessage-deflate",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
            |e| matches!(e, HandshakeError::UnsolicitedExtension { extension } if extension == "permessage-deflate"),
        ),
        (
            "two extensions, lower-case header name",
            "sec-websocket-extensions: x-webkit-deflate-frame, foo",
            |e| matches!(e, HandshakeError::UnsolicitedExtension { extension } if extension == "x-webkit-deflate-frame"),
        ),
        (
            "subprotocol chat",
            "Sec-WebSocket-Protocol: chat",
            |e| matches!(e, HandshakeError::UnsolicitedSubprotocol { protocol } if protocol == "chat"),
        ),
        (
            "extension and subprotocol",
            "Sec-WebSocket-Protocol: v2\r\nSec-WebSocket-Extensions: x-ext",
            |e| matches!(e, HandshakeError::UnsolicitedExtension { extension } if extension == "x-ext"),
        ),
        ("wrong Sec-WebSocket-Accept", "ACCEPT", |e| {
            matches!(
                e,
                HandshakeError::Protocol(libp2p_ws::UpgradeViolation::AcceptMismatch)
            )
        }),
        (
            "an empty extensions header (nothing selected)",
            "Sec-WebSocket-Extensions: ",
            |_| false,
        ),
    ];
    for (name, header_line, check) in cases {
        case::<R, _>(name, CASE, async {
            let (listener, addr) = raw_listener().await;
            let edit = |response: &str| {
                if header_line == "ACCEPT" {
                    // Change one character of the accept value (keep it valid base64).
                    let at = response.find("Sec-WebSocket-Accept: ").unwrap() + 22;
                    let mut bytes = response.as_bytes().to_vec();
                    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                    bytes
                } else {
                    response
                        .replace("\r\n\r\n", &format!("\r\n{header_line}\r\n\r\n"))
                        .into_bytes()
                }
            };
            let (raw, result) = futures::join!(
                raw_accept_edited(&listener, edit),
                dial::<R>(Config::default(), addr)
            );
            let (_raw, response) = raw;
            if name.starts_with("an empty") {
                // Control: the same server without a selected extension is accepted.
                result.expect("an empty extensions header selects nothing");
                println!("figure ({}): {name}: dial succeeded", R::NAME);
                return;
            }
            let error = match result {
                Err(Error::Handshake(e)) => e,
                other => panic!(
                    "{name}: expected a handshake error, got {:?}; response was {:?}",
                    other.map(|_| ()),
                    String::from_utf8_lossy(&response)
                ),
            };
            println!(
                "figure ({}): {name}: dial failed with {error:?}: {error}",
                R::NAME
            );
            assert!(check(&error), "{name}: {error:?}");
        })
        .await;
    }
}

// ----- the listener answers 400 to a bad key or two Host headers ---------------------------------

async fn listener_answers_400_to_a_bad_key_or_repeated_host_or_key_headers<R: Runtime>() {
    let mut server = Server::<R>::plain(Config::default()).await;
    let bad_key = |key: &str| {
        String::from_utf8(request_with(""))
            .unwrap()
            .replace("dGhlIHNhbXBsZSBub25jZQ==", key)
            .into_bytes()
    };
    type Check = fn(&HandshakeError) -> bool;
    let cases: Vec<(&str, Vec<u8>, &str, Check)> = vec![
        (
            "key of 24 characters that are not base64",
            bad_key("!!!!!!!!!!!!!!!!!!!!!!=="),
            "400",
            |e| matches!(e, HandshakeError::InvalidKey),
        ),
        (
            "key that is base64 of 16 bytes with trailing bits set",
            bad_key("dGhlIHNhbXBsZSBub25jZR=="),
            "400",
            |e| matches!(e, HandshakeError::InvalidKey),
        ),
        (
            "key with a space inside",
            bad_key("dGhlIHNhbXBs ZSBub25jZQ="),
            "400",
            |e| matches!(e, HandshakeError::InvalidKey),
        ),
        (
            "two Host headers",
            request_with("Host: evil.example\r\n"),
            "400",
            |e| matches!(e, HandshakeError::DuplicateHeader { name: "Host" }),
        ),
        (
            "two Sec-WebSocket-Key headers",
            request_with("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"),
            "400",
            |e| {
                matches!(
                    e,
                    HandshakeError::DuplicateHeader {
                        name: "Sec-WebSocket-Key"
                    }
                )
            },
        ),
        ("a valid request (control)", request_with(""), "101", |_| {
            true
        }),
    ];
    for (name, request, status, check) in cases {
        case::<R, _>(name, CASE, async {
            let (status_line, raw) = status_of(&server, &request).await;
            let outcome = server.next().await;
            println!(
                "figure ({}): {name}: answered {status_line:?}, listener: {:?}",
                R::NAME,
                outcome
                    .as_ref()
                    .map(|_| "upgraded")
                    .map_err(|e| e.to_string())
            );
            assert!(
                status_line.starts_with(&format!("HTTP/1.1 {status}")),
                "{name}: answered {status_line:?}"
            );
            match outcome {
                Ok(_) => assert_eq!(status, "101", "{name}: upgraded"),
                Err(Error::Handshake(e)) => assert!(check(&e), "{name}: {e:?}"),
                Err(e) => panic!("{name}: {e:?}"),
            }
            drop(raw);
        })
        .await;
    }
}

// ----- requests that are no upgrade get an HTTP error --------------------------------------------

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

// ----- a head limit under 8 KiB ------------------------------------------------------------------

async fn a_head_limit_of_1_kib_refuses_a_1_5_kib_head_with_431_and_takes_a_900_byte_head<
    R: Runtime,
>() {
    let limit = 1024;
    let mut server = Server::<R>::plain(Config::default().with_max_head_size(limit)).await;
    let padded = |size: usize| {
        let bare = request_with("X-Pad: \r\n").len();
        let request = request_with(&format!("X-Pad: {}\r\n", "p".repeat(size - bare)));
        assert_eq!(request.len(), size);
        request
    };
    for (name, size, status) in [
        ("a 900-byte head", 900, "101"),
        ("a 1024-byte head (exactly the limit)", 1024, "101"),
        ("a 1025-byte head", 1025, "431"),
        ("a 1.5 KiB head", 1536, "431"),
    ] {
        case::<R, _>(name, CASE, async {
            let start = Instant::now();
            let (status_line, raw) = status_of(&server, &padded(size)).await;
            let outcome = server.next().await;
            println!(
                "figure ({}): limit {limit} bytes, {name}: answered {status_line:?} after {:?}",
                R::NAME,
                start.elapsed()
            );
            assert!(
                status_line.starts_with(&format!("HTTP/1.1 {status}")),
                "{name}: answered {status_line:?}"
            );
            if status == "431" {
                assert!(
                    matches!(
                        outcome,
                        Err(Error::Handshake(HandshakeError::HeadTooLarge {
                            limit: 1024
                        }))
                    ),
                    "{name}: {:?}",
                    outcome.map(|_| ())
                );
            } else {
                outcome.expect("upgrade succeeds");
            }
            drop(raw);
        })
        .await;
    }
    // The same limit on the dialing side: a 1.5 KiB response head fails the dial.
    let (listener, addr) = raw_listener().await;
    let padding = format!("X-Pad: {}", "p".repeat(1400));
    let (raw, result) = futures::join!(
        raw_accept_edited(&listener, |r| r
            .replace("\r\n\r\n", &format!("\r\n{padding}\r\n\r\n"))
            .into_bytes()),
        dial::<R>(Config::default().with_max_head_size(limit), addr)
    );
    let error = result.expect_err("dial fails");
    println!(
        "figure ({}): dialer with limit {limit}, a {}-byte response head: {error}",
        R::NAME,
        raw.1.len()
    );
    assert!(
        matches!(
            error,
            Error::Handshake(HandshakeError::HeadTooLarge { limit: 1024 })
        ),
        "{error:?}"
    );
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
    with shared_bounded:
    frames_sent_in_the_same_write_as_the_request_are_not_lost,
    the_dialer_keeps_frames_sent_with_the_101_response,
    dial_fails_on_a_101_with_an_unrequested_extension_or_subprotocol_or_a_wrong_accept,
    listener_answers_400_to_a_bad_key_or_repeated_host_or_key_headers,
    a_head_limit_of_1_kib_refuses_a_1_5_kib_head_with_431_and_takes_a_900_byte_head,
    non_upgrade_requests_get_an_http_error_response,
);

runtime_tests!(
    with exclusive:
    oversized_request_heads_are_answered_431_after_reading_at_most_the_limit,
    dial_to_a_server_sending_64_mib_of_headers_fails_fast_after_reading_the_limit,
);

runtime_tests!(
    with shared:
    dial_to_a_server_answering_with_too_many_small_headers_fails,
);
