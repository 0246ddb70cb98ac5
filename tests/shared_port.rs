//! One TCP port for `/tcp`, `/ws` and `/tls/ws` over real sockets on 127.0.0.1 (and ::1): our
//! dialer and rust-libp2p's (`libp2p-tcp`, `libp2p-websocket`) on a shared port, the read-ahead
//! handed on, listeners removed one by one, and the `Config::with_port_sharing` switch; and the
//! port's errors: a slow first byte times out, garbage is closed at once, a plain HTTP request gets
//! its 4xx, and each wrong door (`/ws` dialed where the port speaks TLS, `/tls/ws` where it does
//! not, WebSocket where only `/tcp` is served, ...) is answered at once with a typed error that says
//! what to dial. The harness is `common::shared_port`. Each test runs on both runtimes and prints
//! its figures.

mod common;

use std::time::{Duration, Instant};

use common::{shared_port::*, *};
use futures::{channel::oneshot, AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{
    core::{transport::TransportEvent, Transport as _},
    Multiaddr,
};
use libp2p_ws::{addr::Kind, tls::dev::TestCa, Config, Error, HandshakeError, TlsError};

// =================================================================================================
// Sharing
// =================================================================================================

async fn three_kinds_share_one_port_and_each_reaches_its_listener<R: Runtime>() {
    let ca = TestCa::new("shared port CA").unwrap();
    for ip in ["/ip4/127.0.0.1", "/ip6/::1"] {
        let mut node = Node::start::<R>(server_config(&ca));
        let listeners = listen_three(&mut node, ip).await;
        let port = port_of(&listeners[0].1);
        for ((id, addr), (kind, suffix)) in listeners.iter().zip([
            (Kind::Tcp, format!("/tcp/{port}")),
            (Kind::Ws, format!("/tcp/{port}/ws")),
            (Kind::TlsWs, format!("/tcp/{port}/tls/ws")),
        ]) {
            assert_eq!(
                addr.to_string(),
                format!("{ip}{suffix}"),
                "reported address"
            );
            let start = Instant::now();
            let mut conn = dial::<R>(client_config(&ca), addr)
                .await
                .unwrap_or_else(|e| panic!("dial {addr}: {e}"));
            if kind == Kind::Tcp {
                // A /tcp dial is only TCP: the listener sorts it by what the dialer sends first.
                send_multistream_header(&mut conn).await;
            }
            let (got, result) = node.connection().await;
            println!(
                "{} {addr}: our dialer reached listener {got:?} as {:?} in {:?}",
                R::NAME,
                result,
                start.elapsed()
            );
            assert_eq!(got, *id, "{addr} goes to its own listener");
            assert_eq!(result, Ok(kind), "{addr}");
            assert_eq!(conn.kind(), kind);
            conn.close().await.ok();
        }
    }
}

async fn bytes_read_to_classify_are_handed_on<R: Runtime>() {
    let ca = TestCa::new("shared port CA").unwrap();
    let mut listener = Transport::<R>::new(server_config(&ca));
    let (_, tcp_addr) = listen::<R>(&mut listener, "/ip4/127.0.0.1/tcp/0").await;
    let port = port_of(&tcp_addr);
    let (_, _) = listen::<R>(&mut listener, &format!("/ip4/127.0.0.1/tcp/{port}/ws")).await;
    // A /tcp client sends the multistream header and more in one write, then the rest later.
    let mut client = dial::<R>(Config::default(), &tcp_addr)
        .await
        .expect("dial /tcp");
    let first = b"\x13/multistream/1.0.0\n\x07/noise\nhello";
    client.write_all(first).await.unwrap();
    client.flush().await.unwrap();
    let upgrade = loop {
        if let TransportEvent::Incoming { upgrade, .. } = next_event::<R>(&mut listener).await {
            break upgrade;
        }
    };
    let mut server = upgrade.await.expect("server side");
    assert_eq!(server.kind(), Kind::Tcp);
    client.write_all(b", world").await.unwrap();
    client.flush().await.unwrap();
    let mut got = vec![0u8; first.len() + 7];
    server.read_exact(&mut got).await.unwrap();
    println!(
        "{} /tcp server read {} bytes, the first 20 of them read ahead",
        R::NAME,
        got.len()
    );
    assert_eq!(&got[..first.len()], first, "nothing lost or reordered");
    assert_eq!(&got[first.len()..], b", world");
    // And back.
    server.write_all(b"pong").await.unwrap();
    server.flush().await.unwrap();
    let mut back = [0u8; 4];
    client.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"pong");
}

async fn full_stack_pings_on_each_kind_of_one_port<R: Runtime>() {
    let ca = TestCa::new("shared port CA").unwrap();
    let mut listener = ping_swarm::<R>(server_config(&ca));
    listener
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let tcp = first_listen_addr(&mut listener).await;
    let port = port_of(&tcp);
    for suffix in ["ws", "tls/ws"] {
        listener
            .listen_on(
                format!("/ip4/127.0.0.1/tcp/{port}/{suffix}")
                    .parse()
                    .unwrap(),
            )
            .unwrap();
    }
    let mut addrs = vec![tcp];
    while addrs.len() < 3 {
        addrs.push(first_listen_addr(&mut listener).await);
    }
    for addr in addrs {
        let mut dialer = ping_swarm::<R>(client_config(&ca));
        let start = Instant::now();
        let peer = ping_once(&mut listener, &mut dialer, addr.clone())
            .await
            .unwrap_or_else(|e| panic!("ping over {addr}: {e}"));
        assert_eq!(peer, *listener.local_peer_id());
        println!(
            "{} ping (noise + yamux) over {addr} in {:?}",
            R::NAME,
            start.elapsed()
        );
    }
}

/// Dials `addr` with rust-libp2p 0.57's own transports (libp2p-tcp, and libp2p-websocket over it,
/// trusting `ca`) on a tokio runtime of its own thread, and pings once.
fn rust_libp2p_ping(addr: Multiaddr, ca: &TestCa) -> oneshot::Receiver<Result<Duration, String>> {
    use libp2p::{
        core::{muxing::StreamMuxerBox, upgrade},
        noise, ping, swarm, tcp, websocket, yamux, Swarm,
    };
    let (tx, rx) = oneshot::channel();
    let root = ca.certificate().to_vec();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = runtime.block_on(async move {
            let keypair = libp2p::identity::Keypair::generate_ed25519();
            let mut tls = websocket::tls::Config::builder();
            tls.add_trust(&websocket::tls::Certificate::new(root))
                .map_err(|e| e.to_string())?;
            let mut ws = websocket::Config::new(tcp::tokio::Transport::new(tcp::Config::default()));
            ws.set_tls_config(tls.finish());
            let transport = ws
                .or_transport(tcp::tokio::Transport::new(tcp::Config::default()))
                .upgrade(upgrade::Version::V1Lazy)
                .authenticate(noise::Config::new(&keypair).unwrap())
                .multiplex(yamux::Config::default())
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
                .boxed();
            let behaviour =
                ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(200)));
            let config = swarm::Config::with_tokio_executor();
            let mut swarm = Swarm::new(transport, behaviour, keypair.public().to_peer_id(), config);
            let start = Instant::now();
            swarm.dial(addr).map_err(|e| e.to_string())?;
            let wait = async {
                loop {
                    match swarm.select_next_some().await {
                        swarm::SwarmEvent::Behaviour(ping::Event { result: Ok(_), .. }) => {
                            return Ok(start.elapsed())
                        }
                        swarm::SwarmEvent::Behaviour(ping::Event { result: Err(e), .. }) => {
                            return Err(e.to_string())
                        }
                        swarm::SwarmEvent::OutgoingConnectionError { error, .. } => {
                            return Err(error.to_string())
                        }
                        _ => {}
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .map_err(|_| "timed out".to_string())?
        });
        let _ = tx.send(result);
    });
    rx
}

async fn rust_libp2p_tcp_and_websocket_dial_each_kind_of_one_port<R: Runtime>() {
    let ca = TestCa::new("shared port CA").unwrap();
    let mut listener = ping_swarm::<R>(server_config(&ca));
    listener
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let tcp = first_listen_addr(&mut listener).await;
    let port = port_of(&tcp);
    for suffix in ["ws", "tls/ws"] {
        listener
            .listen_on(
                format!("/ip4/127.0.0.1/tcp/{port}/{suffix}")
                    .parse()
                    .unwrap(),
            )
            .unwrap();
    }
    let mut addrs = vec![tcp];
    while addrs.len() < 3 {
        addrs.push(first_listen_addr(&mut listener).await);
    }
    for addr in addrs {
        let mut result = rust_libp2p_ping(addr.clone(), &ca);
        let outcome = loop {
            futures::select! {
                _ = listener.select_next_some() => {}
                outcome = result => break outcome.expect("dialer thread"),
            }
        };
        let took = outcome.unwrap_or_else(|e| panic!("rust-libp2p over {addr}: {e}"));
        println!(
            "{}: rust-libp2p (libp2p-tcp / libp2p-websocket) pinged over {addr} in {took:?}",
            R::NAME
        );
    }
}

async fn listeners_are_removed_one_by_one<R: Runtime>() {
    let ca = TestCa::new("shared port CA").unwrap();
    let mut node = Node::start::<R>(server_config(&ca));
    let [tcp, ws, tls] = listen_three(&mut node, "/ip4/127.0.0.1").await;
    let client = client_config(&ca);

    node.remove(ws.0).await;
    let start = Instant::now();
    let error = dial::<R>(client.clone(), &ws.1)
        .await
        .expect_err("/ws is gone");
    println!(
        "{} /ws removed: dial fails in {:?}: {error}",
        R::NAME,
        start.elapsed()
    );
    assert!(
        matches!(error, Error::Handshake(HandshakeError::AnsweredWithTls)),
        "the port still speaks TLS and says so: {error}"
    );
    for (id, addr, kind) in [(tcp.0, &tcp.1, Kind::Tcp), (tls.0, &tls.1, Kind::TlsWs)] {
        let mut conn = dial::<R>(client.clone(), addr).await.expect("still served");
        if kind == Kind::Tcp {
            send_multistream_header(&mut conn).await;
        }
        assert_eq!(node.connection().await, (id, Ok(kind)), "{addr}");
    }

    node.remove(tcp.0).await;
    let start = Instant::now();
    let result = dial::<R>(client.clone(), &tcp.1).await;
    // The dial itself is only TCP; the closed connection shows on the first read.
    let closed = match result {
        Ok(mut conn) => {
            conn.write_all(b"\x13/multistream/1.0.0\n").await.ok();
            let mut buf = [0u8; 1];
            matches!(conn.read(&mut buf).await, Ok(0) | Err(_))
        }
        Err(_) => true,
    };
    println!(
        "{} /tcp removed: connection closed after {:?}",
        R::NAME,
        start.elapsed()
    );
    assert!(closed, "a /tcp connection is closed once /tcp is removed");
    // The port now serves one kind, so the refused connection was reported to it, and failed.
    let (id, result) = node.connection().await;
    assert_eq!(id, tls.0);
    assert!(result.is_err(), "{result:?}");
    let _conn = dial::<R>(client.clone(), &tls.1)
        .await
        .expect("/tls/ws still served");
    assert_eq!(node.connection().await, (tls.0, Ok(Kind::TlsWs)));

    node.remove(tls.0).await;
    let start = Instant::now();
    let error = dial::<R>(client, &tls.1).await.expect_err("socket closed");
    println!(
        "{} last listener removed: {error} after {:?}",
        R::NAME,
        start.elapsed()
    );
    assert!(matches!(error, Error::Connect { .. }), "{error}");
}

async fn sharing_can_be_turned_off_and_port_zero_is_never_shared<R: Runtime>() {
    let mut node = Node::start::<R>(Config::default().with_port_sharing(false));
    let (_, tcp) = node.listen("/ip4/127.0.0.1/tcp/0").await.unwrap();
    let port = port_of(&tcp);
    let error = node
        .listen(&format!("/ip4/127.0.0.1/tcp/{port}/ws"))
        .await
        .expect_err("second bind of the port");
    println!("{} sharing off, /ws on the /tcp port: {error}", R::NAME);
    assert!(error.contains("failed to listen on"), "{error}");

    let mut node = Node::start::<R>(Config::default());
    let (_, a) = node.listen("/ip4/127.0.0.1/tcp/0").await.unwrap();
    let (_, b) = node.listen("/ip4/127.0.0.1/tcp/0/ws").await.unwrap();
    println!("{} two port-0 listeners: {a} and {b}", R::NAME);
    assert_ne!(port_of(&a), port_of(&b), "two port-0 binds are two sockets");
    // The same kind twice on one port is still refused.
    let error = node
        .listen(&format!("/ip4/127.0.0.1/tcp/{}", port_of(&a)))
        .await
        .expect_err("/tcp twice");
    assert!(error.contains("failed to listen on"), "{error}");
}

// =================================================================================================
// Errors: slow first bytes, garbage, wrong doors
// =================================================================================================

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
    three_kinds_share_one_port_and_each_reaches_its_listener,
    bytes_read_to_classify_are_handed_on,
    full_stack_pings_on_each_kind_of_one_port,
    rust_libp2p_tcp_and_websocket_dial_each_kind_of_one_port,
    listeners_are_removed_one_by_one,
    sharing_can_be_turned_off_and_port_zero_is_never_shared,
    a_slow_first_byte_times_out_and_garbage_closes,
    wrong_doors_answer_at_once_and_say_what_to_dial,
);
