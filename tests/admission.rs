//! Admission under floods, over real sockets: pending handshakes are counted until noise and yamux
//! complete, one address cannot take every slot, and a listener whose accept fails (no fds left)
//! backs off instead of spinning. Flooders connect from 127.0.0.2 and up, so the victim's dial from
//! 127.0.0.1 is a distinct address.

mod common;

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use common::*;
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p_ws::Config;

/// A blocking TCP connection from `source` (a loopback address) to `target`.
fn connect_from(source: Ipv4Addr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(IpAddr::V4(source), 0).into())?;
    socket.connect_timeout(&target.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}

/// An HTTP upgrade request for `/` at `target`.
fn upgrade_request(target: SocketAddr) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// 300 silent sockets from one address and 1,800 from 30 others (each of those through the HTTP
/// upgrade, then silent inside noise) hold handshakes open; a dial from 127.0.0.1 still completes
/// its upgrade and a ping within 3 s, and the listener's memory stays bounded.
async fn a_victim_dial_gets_through_a_slowloris_from_many_addresses<R: Runtime>() {
    let mut listener = ping_swarm::<R>(Config::default());
    let mut victim = ping_swarm::<R>(Config::default());
    listener
        .listen_on("/ip4/127.0.0.1/tcp/0/ws".parse().unwrap())
        .unwrap();
    let addr = first_listen_addr(&mut listener).await;
    let target = raw::socket_addr(&addr);
    let rss_before = helpers::rss_kib().unwrap_or(0);

    // The flood runs on a thread of its own (blocking connects) while the listener is polled.
    let (done_tx, mut done) = futures::channel::mpsc::unbounded();
    let flooder = std::thread::spawn(move || {
        let mut sockets = Vec::new();
        let mut failed = 0;
        for i in 0..300 {
            match connect_from(Ipv4Addr::new(127, 0, 0, 2), target) {
                Ok(s) => sockets.push(s),
                Err(_) => failed += 1,
            }
            let _ = i;
        }
        let request = upgrade_request(target);
        for host in 3..33u8 {
            for _ in 0..60 {
                match connect_from(Ipv4Addr::new(127, 0, 0, host), target) {
                    Ok(mut s) => {
                        let _ = s.write_all(request.as_bytes());
                        sockets.push(s);
                    }
                    Err(_) => failed += 1,
                }
            }
        }
        let _ = done_tx.unbounded_send((sockets.len(), failed));
        sockets
    });
    let (opened, failed) = loop {
        futures::select! {
            _ = listener.select_next_some() => {}
            result = done.next() => break result.expect("the flooder reports"),
        }
    };
    let rss_flooded = helpers::rss_kib().unwrap_or(0);

    let start = Instant::now();
    within::<R, _>(Duration::from_secs(3), async {
        victim.dial(addr.clone()).unwrap();
        loop {
            futures::select! {
                _ = listener.select_next_some() => {}
                event = victim.select_next_some() => match event {
                    SwarmEvent::Behaviour(libp2p::ping::Event { result: Ok(_), .. }) => break,
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        panic!("the victim's dial failed: {error}")
                    }
                    _ => {}
                }
            }
        }
    })
    .await;
    let took = start.elapsed();
    println!(
        "figure ({}): {opened} flood sockets open ({failed} refused by the kernel); victim pinged \
         after {took:?}; listener process RSS {} KiB before, {} KiB with the flood",
        R::NAME,
        rss_before,
        rss_flooded
    );
    drop(flooder.join().expect("flooder thread"));
    assert!(opened >= 2000, "the flood opened only {opened} sockets");
}

/// A connection that finished the HTTP upgrade but not noise still counts as pending: with room for
/// four, a fifth socket is closed at once, without a `101`.
async fn connections_inside_noise_count_as_pending<R: Runtime>() {
    let config = Config::default()
        .with_max_pending_handshakes(4)
        .with_max_pending_handshakes_per_ip(4);
    let mut transport = R::upgraded(&libp2p::identity::Keypair::generate_ed25519(), config);
    let (_, addr) = listen_any(&mut transport, "/ip4/127.0.0.1/tcp/0/ws").await;
    let target = raw::socket_addr(&addr);
    let stop = drive_listener::<R, _>(transport, |upgrade| {
        R::spawn_detached(async move {
            let _ = upgrade.await;
        })
    });
    let request = upgrade_request(target);
    let check = move || {
        let mut upgraded = Vec::new();
        for _ in 0..4 {
            let mut s = connect_from(Ipv4Addr::LOCALHOST, target).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut head = [0u8; 12];
            s.read_exact(&mut head).unwrap();
            assert_eq!(&head, b"HTTP/1.1 101", "the first four are upgraded");
            upgraded.push(s);
        }
        // All four now sit inside noise, silent. The fifth finds no room.
        let mut fifth = connect_from(Ipv4Addr::LOCALHOST, target).unwrap();
        let _ = fifth.write_all(request.as_bytes());
        fifth
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let answer = fifth.read(&mut buf);
        (answer.map(|n| buf[..n].to_vec()), start.elapsed(), upgraded)
    };
    let (answer, took, _upgraded) = within::<R, _>(
        Duration::from_secs(15),
        futures::future::lazy(|_| ()).then(|_| async {
            let (tx, rx) = futures::channel::oneshot::channel();
            std::thread::spawn(move || {
                let _ = tx.send(check());
            });
            rx.await.expect("the client thread reports")
        }),
    )
    .await;
    drop(stop);
    println!(
        "figure ({}): the fifth socket got {answer:?} after {took:?}",
        R::NAME
    );
    match answer {
        Ok(bytes) => assert!(bytes.is_empty(), "the fifth socket was answered: {bytes:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(took < Duration::from_secs(2), "closed only after {took:?}");
}

use futures::FutureExt as _;

runtime_tests!(
    a_victim_dial_gets_through_a_slowloris_from_many_addresses,
    connections_inside_noise_count_as_pending,
);
