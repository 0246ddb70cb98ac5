//! A shared port's errors over real sockets on 127.0.0.1: a slow first byte times out, garbage is
//! closed at once, a plain HTTP request gets its 4xx, and each wrong door (`/ws` dialed where the
//! port speaks TLS, `/tls/ws` where it does not, WebSocket where only `/tcp` is served, ...) is
//! answered at once with a typed error that says what to dial. The sharing itself is tested in
//! `tests/shared_port.rs`; the harness is `common::shared_port`. Each test prints its figures.

mod common;

use std::time::{Duration, Instant};

use common::{shared_port::*, *};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::Multiaddr;
use libp2p_ws::{tls::dev::TestCa, Config, Error, HandshakeError, TlsError};

/// A raw TCP client: connects to `addr`, sends `bytes`, and measures how long until the server
/// closes the connection (what it answered before that is returned).
async fn raw_until_closed<R: Runtime>(addr: &Multiaddr, bytes: &[u8]) -> (Duration, Vec<u8>) {
    let mut conn = dial::<R>(Config::default(), &tcp_form(addr))
        .await
        .expect("TCP connect");
    let start = Instant::now();
    if !bytes.is_empty() {
        conn.write_all(bytes).await.unwrap();
        conn.flush().await.unwrap();
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return (start.elapsed(), answer),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
}

/// `addr` without its WebSocket part: the plain TCP address of the same port.
fn tcp_form(addr: &Multiaddr) -> Multiaddr {
    addr.iter().take(2).collect()
}

async fn a_slow_first_byte_times_out_and_garbage_closes<R: Runtime>() {
    let timeout = Duration::from_millis(500);
    let config = Config::default().with_handshake_timeout(timeout);
    let mut node = Node::start::<R>(config);
    let tcp = node.listen("/ip4/127.0.0.1/tcp/0").await.unwrap();
    let port = port_of(&tcp.1);
    let ws = node
        .listen(&format!("/ip4/127.0.0.1/tcp/{port}/ws"))
        .await
        .unwrap();

    let (took, answer) = raw_until_closed::<R>(&ws.1, b"").await;
    println!(
        "{} shared port, nothing sent: closed after {took:?} (handshake timeout {timeout:?})",
        R::NAME
    );
    assert!(
        took >= timeout - Duration::from_millis(50) && took < timeout * 4,
        "{took:?}"
    );
    assert!(answer.is_empty());

    let (took, _) = raw_until_closed::<R>(&ws.1, b"\x13/multi").await;
    println!(
        "{} shared port, half a multistream header: closed after {took:?}",
        R::NAME
    );
    assert!(
        took >= timeout - Duration::from_millis(50) && took < timeout * 4,
        "{took:?}"
    );

    for garbage in [
        &b"\x00\x01\x02garbage"[..],
        b"\x16\x05",
        b"get / HTTP/1.1\r\n",
        b"\x13/multistream/9",
    ] {
        let (took, answer) = raw_until_closed::<R>(&ws.1, garbage).await;
        println!(
            "{} shared port, garbage {garbage:?}: closed after {took:?}",
            R::NAME
        );
        assert!(
            took < timeout / 2,
            "garbage is closed at once, not at the timeout: {took:?}"
        );
        assert!(answer.is_empty(), "{answer:?}");
    }

    // A plain HTTP request on a port that serves /ws still gets its 4xx.
    let (took, answer) =
        raw_until_closed::<R>(&ws.1, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    let head = String::from_utf8_lossy(&answer);
    println!(
        "{} shared port, plain HTTP GET: {:?} after {took:?}",
        R::NAME,
        head.lines().next()
    );
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    // It is answered, not reported: the next connection the listener reports is the upgrade
    // request for a path it does not serve.
    let upgrade = "GET /elsewhere HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                   Connection: upgrade\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let (_, answer) = raw_until_closed::<R>(&ws.1, upgrade.as_bytes()).await;
    assert!(answer.starts_with(b"HTTP/1.1 404"), "{answer:?}");
    let reported = node.connection().await;
    assert!(
        matches!(&reported, (id, Err(e)) if *id == ws.0 && e.contains("answered 404")),
        "{reported:?}"
    );
}

async fn wrong_doors_answer_at_once_and_say_what_to_dial<R: Runtime>() {
    let ca = TestCa::new("shared port CA").unwrap();
    let client = client_config(&ca);
    // Each case: what the port serves, what is dialed, what the error must say.
    let cases: [(&[&str], &str, &str); 6] = [
        (
            &["ws"],
            "tls/ws",
            "does not speak TLS on this port (it answered in plain text); dial /ws",
        ),
        (
            &["tls/ws"],
            "ws",
            "the server answered with TLS; dial /tls/ws",
        ),
        (&[""], "ws", "dial /tcp"),
        (
            &[""],
            "tls/ws",
            "does not seem to speak TLS: dial /ws or /tcp",
        ),
        (&["", "ws"], "tls/ws", "dial /ws"),
        (
            &["", "tls/ws"],
            "ws",
            "the server answered with TLS; dial /tls/ws",
        ),
    ];
    for (served, dialed, says) in cases {
        let mut node = Node::start::<R>(server_config(&ca));
        let mut port = 0;
        for kind in served {
            let suffix = if kind.is_empty() {
                String::new()
            } else {
                format!("/{kind}")
            };
            let (_, addr) = node
                .listen(&format!("/ip4/127.0.0.1/tcp/{port}{suffix}"))
                .await
                .unwrap();
            port = port_of(&addr);
        }
        let target: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}/{dialed}")
            .parse()
            .unwrap();
        let start = Instant::now();
        let error = dial::<R>(client.clone(), &target)
            .await
            .expect_err("wrong door");
        let took = start.elapsed();
        println!(
            "{} port serving {served:?}, dialed /{dialed}: {took:?}: {error}",
            R::NAME
        );
        assert!(error.to_string().contains(says), "{error}");
        assert!(
            matches!(
                error,
                Error::Handshake(
                    HandshakeError::AnsweredWithTls | HandshakeError::AnsweredWithMultistream
                ) | Error::Tls(TlsError::NotTls { .. } | TlsError::ClosedOnHello { .. })
            ),
            "typed: {error:?}"
        );
        assert!(
            took < Duration::from_secs(2),
            "at once, not after the 10 s timeout: {took:?}"
        );
        if served.len() == 1 {
            // A port of one kind reports the connection to its listener; the upgrade fails.
            let (_, result) = node.connection().await;
            println!("  listener side: {result:?}");
            assert!(result.is_err());
        }
    }
}

runtime_tests!(
    a_slow_first_byte_times_out_and_garbage_closes,
    wrong_doors_answer_at_once_and_say_what_to_dial,
);
