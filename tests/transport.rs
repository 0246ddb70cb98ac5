//! The core transport over real sockets: swarms on async-std and tokio, bulk data, many streams,
//! failures, listener removal, and `TCP_NODELAY` on both sides.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{
    core::{
        transport::{ListenerId, TransportEvent},
        Transport as _,
    },
    ping,
    swarm::SwarmEvent,
};
use libp2p_ws::{provider::Provider, Config, Error};

async fn two_swarms_ping_over_ws<R: Runtime>() {
    let mut listener = ping_swarm::<R>(Config::default());
    let mut dialer = ping_swarm::<R>(Config::default());
    listener
        .listen_on("/ip4/127.0.0.1/tcp/0/ws".parse().unwrap())
        .unwrap();
    let addr = first_listen_addr(&mut listener).await;
    assert!(addr.to_string().ends_with("/ws"), "{addr}");
    let pinged = ping_once(&mut listener, &mut dialer, addr)
        .await
        .expect("ping succeeds");
    assert_eq!(pinged, *listener.local_peer_id());
}

#[test]
fn tokio_multi_thread_swarm_builder_pings() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let build = || {
            libp2p::SwarmBuilder::with_new_identity()
                .with_tokio()
                .with_other_transport(libp2p_ws::tokio::constructor(Config::default()))
                .expect("transport")
                .with_behaviour(|_| {
                    ping::Behaviour::new(
                        ping::Config::new().with_interval(Duration::from_millis(200)),
                    )
                })
                .expect("behaviour")
                .build()
        };
        let mut listener = build();
        let mut dialer = build();
        listener
            .listen_on("/ip4/127.0.0.1/tcp/0/ws".parse().unwrap())
            .unwrap();
        let test = async {
            let addr = first_listen_addr(&mut listener).await;
            ping_once(&mut listener, &mut dialer, addr).await
        };
        let pinged = tokio::time::timeout(WAIT, test)
            .await
            .expect("in time")
            .expect("ping succeeds");
        assert_eq!(pinged, *listener.local_peer_id());
    });
}

/// A simple, order-sensitive checksum (FNV-1a).
fn checksum(hash: &mut u64, data: &[u8]) {
    for b in data {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x100000001b3);
    }
}

async fn one_yamux_stream_carries_64_mib_intact<R: Runtime>() {
    let (server, client) = muxer_pair::<R>("/ip4/127.0.0.1/tcp/0/ws").await;
    const TOTAL: usize = 64 * 1024 * 1024;
    let sender = spawn::<R, _>(async move {
        let mut stream = client.open().await;
        let mut hash = 0xcbf29ce484222325u64;
        let mut sent = 0;
        let mut seed = 1;
        while sent < TOTAL {
            let chunk = pattern(seed, 256 * 1024);
            checksum(&mut hash, &chunk);
            stream.write_all(&chunk).await.unwrap();
            sent += chunk.len();
            seed += 1;
        }
        stream.close().await.unwrap();
        (hash, client)
    });
    let mut inbound = server.inbound;
    let mut stream = inbound.next().await.expect("inbound stream");
    let mut hash = 0xcbf29ce484222325u64;
    let mut received = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        checksum(&mut hash, &buf[..n]);
        received += n;
    }
    let (sent_hash, _client) = sender.await;
    assert_eq!(received, TOTAL);
    assert_eq!(hash, sent_hash, "checksum differs");
}

async fn hundred_concurrent_streams_each_echo_64_kib<R: Runtime>() {
    let (server, client) = muxer_pair::<R>("/ip4/127.0.0.1/tcp/0/ws").await;
    let mut inbound = server.inbound;
    spawn::<R, _>(async move {
        while let Some(stream) = inbound.next().await {
            spawn::<R, _>(async move {
                let (mut r, mut w) = stream.split();
                futures::io::copy(&mut r, &mut w).await.unwrap();
                w.close().await.unwrap();
            });
        }
    });
    let client = std::sync::Arc::new(client);
    let tasks: Vec<_> = (0..100u64)
        .map(|i| {
            let client = client.clone();
            spawn::<R, _>(async move {
                let stream = client.open().await;
                let data = pattern(i + 7, 64 * 1024);
                let (mut r, mut w) = stream.split();
                let writer = async {
                    w.write_all(&data).await.unwrap();
                    w.close().await.unwrap();
                };
                let mut echoed = Vec::new();
                let reader = r.read_to_end(&mut echoed);
                let (_, read) = futures::join!(writer, reader);
                read.unwrap();
                assert_eq!(echoed, data, "stream {i} echoed different bytes");
            })
        })
        .collect();
    futures::future::join_all(tasks).await;
}

async fn dial_to_closed_port_fails_fast_with_connect_error<R: Runtime>() {
    // Bind and drop to find a port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut dialer = Transport::<R>::new(Config::default());
    let start = Instant::now();
    let addr = format!("/ip4/127.0.0.1/tcp/{port}/ws").parse().unwrap();
    let error = dialer
        .dial(addr, dial_opts())
        .unwrap()
        .await
        .expect_err("nothing listens");
    let elapsed = start.elapsed();
    println!("dial to a closed port failed after {elapsed:?}: {error}");
    match error {
        Error::Connect { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused)
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}

async fn dial_to_listener_that_never_upgrades_fails_at_the_timeout<R: Runtime>() {
    let silent = async_std::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap();
    let port = silent.local_addr().unwrap().port();
    let accepted = spawn::<R, _>(async move {
        let (socket, _) = silent.accept().await.unwrap();
        // Hold the socket open without answering.
        R::sleep(Duration::from_secs(10)).await;
        drop(socket);
    });
    let timeout = Duration::from_millis(500);
    let mut dialer = Transport::<R>::new(Config::default().with_handshake_timeout(timeout));
    let start = Instant::now();
    let addr = format!("/ip4/127.0.0.1/tcp/{port}/ws").parse().unwrap();
    let error = dialer
        .dial(addr, dial_opts())
        .unwrap()
        .await
        .expect_err("never upgrades");
    println!("dial failed after {:?}: {error}", start.elapsed());
    assert!(
        matches!(error, Error::Timeout { after, .. } if after == timeout),
        "{error:?}"
    );
    drop(accepted);
}

async fn remove_listener_closes_the_socket<R: Runtime>() {
    let mut listener = Transport::<R>::new(Config::default());
    let (id, addr) = listen::<R>(&mut listener, "/ip4/127.0.0.1/tcp/0/ws").await;
    assert!(listener.remove_listener(id));
    loop {
        match next_event::<R>(&mut listener).await {
            TransportEvent::ListenerClosed {
                listener_id,
                reason,
            } => {
                assert_eq!(listener_id, id);
                assert!(reason.is_ok());
                break;
            }
            _ => continue,
        }
    }
    assert!(!listener.remove_listener(id), "already removed");
    let mut dialer = Transport::<R>::new(Config::default());
    let error = dialer
        .dial(addr, dial_opts())
        .unwrap()
        .await
        .expect_err("listener is gone");
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
}

async fn bytes_flow_both_ways_and_close_is_a_clean_eof<R: Runtime>() {
    let (mut server, mut client) = connected_pair::<R>(
        Config::default(),
        Config::default(),
        "/ip4/127.0.0.1/tcp/0/ws",
    )
    .await;
    client.write_all(b"ping from client").await.unwrap();
    client.flush().await.unwrap();
    let mut buf = [0u8; 16];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping from client");
    server.write_all(b"pong").await.unwrap();
    server.close().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"pong");
    // After the close handshake, writing fails instead of panicking.
    assert!(client.write_all(b"late").await.is_err());
}

async fn listening_twice_on_distinct_ids_reports_both_and_swarm_sees_new_listen_addr<R: Runtime>() {
    let mut swarm = ping_swarm::<R>(Config::default());
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0/ws".parse().unwrap())
        .unwrap();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0/ws/http-path/x".parse().unwrap())
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            seen.push(address.to_string());
        }
    }
    assert!(seen.iter().any(|a| a.ends_with("/ws")));
    assert!(seen.iter().any(|a| a.ends_with("/ws/http-path/x")));
    let _ = ListenerId::next();
}

/// `TCP_NODELAY` is set on both sides of a connection by default, and on neither when turned off.
async fn nodelay_is_set_on_both_sides<R: Runtime>() {
    for nodelay in [true, false] {
        let config = Config::default().with_nodelay(nodelay);
        let (server, client) =
            connected_pair::<R>(config.clone(), config, "/ip4/127.0.0.1/tcp/0/ws").await;
        for (side, conn) in [("listener", &server), ("dialer", &client)] {
            let set = <R::Provider as Provider>::nodelay(conn.tcp()).expect("getsockopt");
            assert_eq!(set, nodelay, "{side} with with_nodelay({nodelay})");
        }
    }
}

runtime_tests!(
    two_swarms_ping_over_ws,
    one_yamux_stream_carries_64_mib_intact,
    hundred_concurrent_streams_each_echo_64_kib,
    dial_to_closed_port_fails_fast_with_connect_error,
    dial_to_listener_that_never_upgrades_fails_at_the_timeout,
    remove_listener_closes_the_socket,
    bytes_flow_both_ways_and_close_is_a_clean_eof,
    listening_twice_on_distinct_ids_reports_both_and_swarm_sees_new_listen_addr,
);

runtime_tests!(nodelay_is_set_on_both_sides,);
