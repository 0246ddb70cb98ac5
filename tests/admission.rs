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
use libp2p_ws::{
    forwarded::{ProxyProtocol, ReverseProxy},
    Config,
};

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

/// The trusted reverse proxy of the tests below (the raw PROXY headers come from it).
const PROXY: &str = "127.0.0.11";

/// A `/ws` listener (bare transport, default limits: 256 pending, 16 per client) that trusts
/// [`PROXY`] and requires a PROXY header, polled in the background until the sender is dropped.
async fn listener_behind_a_proxy<R: Runtime>() -> (SocketAddr, futures::channel::oneshot::Sender<()>)
{
    let config = Config::default().with_reverse_proxy(
        ReverseProxy::new([format!("{PROXY}/32").parse().unwrap()])
            .with_proxy_protocol(ProxyProtocol::Required),
    );
    let mut transport = Transport::<R>::new(config);
    let (_, addr) = listen::<R>(&mut transport, "/ip4/127.0.0.1/tcp/0/ws").await;
    let stop = drive_listener::<R, _>(transport, |upgrade| {
        R::spawn_detached(async move {
            let _ = upgrade.await;
        })
    });
    (raw::socket_addr(&addr), stop)
}

/// Opens a connection from [`PROXY`] to `target` for each client of `clients`, each sending the
/// PROXY v2 header naming it and then `after`, on a thread (while the listener runs); returns how
/// many the listener still holds open 1 s after the last one was opened.
async fn places_held(target: SocketAddr, clients: Vec<SocketAddr>, after: &'static [u8]) -> usize {
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        let mut sockets = Vec::new();
        for client in clients {
            let Ok(mut s) = raw::connect_from(PROXY.parse().unwrap(), target) else {
                continue;
            };
            let mut bytes = raw::proxy_v2(client, target);
            bytes.extend_from_slice(after);
            if s.write_all(&bytes).is_ok() {
                sockets.push(s);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        let _ = tx.send(sockets.iter().filter(|s| raw::still_open(s)).count());
    });
    rx.await.expect("the client thread reports")
}

/// One client behind a trusted proxy opens 300 connections and sends nothing after the PROXY
/// header: it is charged to its own share when the header is read, so it holds at most 16 places
/// (it held 256 of 300, the whole listener, when the charge waited for its first bytes).
async fn a_client_named_by_a_proxy_header_is_charged_when_the_header_is_read<R: Runtime>() {
    let (target, _stop) = listener_behind_a_proxy::<R>().await;
    let clients = (0..300u16)
        .map(|i| SocketAddr::from(([127, 0, 0, 5], 10_000 + i)))
        .collect();
    let held = places_held(target, clients, b"").await;
    println!("figure ({}): one client behind a PROXY header, silent after it, holds {held} of 300 places", R::NAME);
    assert!(held <= 16, "one client held {held} places");
    assert!(held > 0, "its share was not admitted at all");
}

/// Clients a proxy names by PROXY v2 headers with IPv6 addresses share per /64: 300 addresses of
/// one /64 hold 16 places (they held 256 of 300 when each address was a share of its own), while
/// 20 clients of 20 other /64s hold one each.
async fn ipv6_clients_behind_a_proxy_share_per_64<R: Runtime>() {
    let (target, _stop) = listener_behind_a_proxy::<R>().await;
    let v6 = |s: String| SocketAddr::new(s.parse::<IpAddr>().unwrap(), 4000);
    // Classified (a request line follows the header), so the test shows the keying alone.
    const LINE: &[u8] = b"GET / HTTP/1.1\r\n";
    let one_64 = (1..=300u32)
        .map(|i| v6(format!("2001:db8:1:2::{i:x}")))
        .collect();
    let held = places_held(target, one_64, LINE).await;
    println!(
        "figure ({}): 300 IPv6 addresses of one /64 behind a PROXY header hold {held} places",
        R::NAME
    );
    assert!(held <= 16, "one /64 held {held} places");
    let many_64s = (1..=20u32)
        .map(|i| v6(format!("2001:db8:2:{i:x}::1")))
        .collect();
    let held = places_held(target, many_64s, LINE).await;
    assert_eq!(held, 20, "each /64 its own share");
}

/// A client that trickles its first bytes until the classification is nearly due, then completes
/// the HTTP upgrade and stalls inside noise, is closed by the upgrade timeout counted from accept
/// (4 s here), on each path: a port serving one kind, and those that classify before the
/// `Incoming` event: a shared port (`/tcp` and `/ws`), a trusted proxy's PROXY header, and a
/// trusted proxy's forwarding header (the HTTP upgrade then runs before the event too). On the
/// last three the timer used to start at the event: 4 s after the classification, at about 6.6 s.
async fn a_stall_inside_noise_ends_at_the_upgrade_deadline_from_accept<R: Runtime>() {
    let config = Config::default()
        .with_handshake_timeout(Duration::from_secs(3))
        .with_upgrade_timeout(Duration::from_secs(4))
        .with_reverse_proxy(
            ReverseProxy::new([format!("{PROXY}/32").parse().unwrap()])
                .with_proxy_protocol(ProxyProtocol::Optional),
        );
    let mut transport = R::upgraded(&libp2p::identity::Keypair::generate_ed25519(), config);
    let (_, tcp) = listen_any(&mut transport, "/ip4/127.0.0.1/tcp/0").await;
    let port = shared_port::port_of(&tcp);
    listen_any(&mut transport, &format!("/ip4/127.0.0.1/tcp/{port}/ws")).await;
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let (errors_tx, mut errors) = futures::channel::mpsc::unbounded();
    let errors_shared = errors_tx.clone();
    let _stop = drive_listener::<R, _>(transport, move |upgrade| {
        let errors_tx = errors_shared.clone();
        R::spawn_detached(async move {
            if let Err(e) = upgrade.await {
                let _ = errors_tx.unbounded_send(e.to_string());
            }
        })
    });
    // And a port that serves one kind, without reverse proxies (its timer started at the upgrade
    // future's first poll, right after accept, already).
    let single_config = Config::default()
        .with_handshake_timeout(Duration::from_secs(3))
        .with_upgrade_timeout(Duration::from_secs(4));
    let mut single = R::upgraded(
        &libp2p::identity::Keypair::generate_ed25519(),
        single_config,
    );
    let (_, single_addr) = listen_any(&mut single, "/ip4/127.0.0.1/tcp/0/ws").await;
    let single_target = raw::socket_addr(&single_addr);
    let errors_single = errors_tx.clone();
    let _stop_single = drive_listener::<R, _>(single, move |upgrade| {
        let errors_tx = errors_single.clone();
        R::spawn_detached(async move {
            if let Err(e) = upgrade.await {
                let _ = errors_tx.unbounded_send(e.to_string());
            }
        })
    });
    let paths: [(&str, &str, SocketAddr, &[u8], &str); 4] = [
        ("one kind per port", "127.0.0.3", single_target, b"", ""),
        ("shared port", "127.0.0.2", target, b"", ""),
        (
            "PROXY header",
            PROXY,
            target,
            b"PROXY TCP4 127.0.0.5 127.0.0.1 5555 80\r\n",
            "",
        ),
        (
            "forwarding header",
            PROXY,
            target,
            b"",
            "X-Forwarded-For: 127.0.0.6\r\n",
        ),
    ];
    let clients: Vec<_> = paths
        .into_iter()
        .map(|(name, source, target, preamble, header)| {
            let (tx, rx) = futures::channel::oneshot::channel();
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut s = raw::connect_from(source.parse().unwrap(), target).unwrap();
                s.write_all(preamble).unwrap();
                for (byte, at) in [(b"G", 0), (b"E", 900), (b"T", 1800)] {
                    std::thread::sleep(Duration::from_millis(at).saturating_sub(start.elapsed()));
                    s.write_all(byte).unwrap();
                }
                std::thread::sleep(Duration::from_millis(2600).saturating_sub(start.elapsed()));
                let request = upgrade_request(target);
                let request = request.replacen("\r\n\r\n", &format!("\r\n{header}\r\n"), 1);
                s.write_all(&request.as_bytes()[3..]).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send((name, got.starts_with(b"HTTP/1.1 101"), start.elapsed()));
            });
            rx
        })
        .collect();
    let mut ends = Vec::new();
    for client in clients {
        let (name, upgraded, closed) = client.await.expect("the client thread reports");
        println!(
            "figure ({}): {name}: classified at 2.6 s, closed {closed:?} after accept",
            R::NAME
        );
        ends.push((name, upgraded, closed));
    }
    for (name, upgraded, closed) in ends {
        assert!(upgraded, "{name}: the HTTP upgrade completed");
        assert!(
            closed > Duration::from_millis(3500) && closed < Duration::from_millis(5500),
            "{name}: closed {closed:?} after accept, not at the 4 s upgrade deadline"
        );
    }
    for _ in 0..4 {
        let error = within::<R, _>(Duration::from_secs(5), errors.next())
            .await
            .unwrap();
        println!("  upgrade error: {error}");
    }
}

runtime_tests!(
    a_victim_dial_gets_through_a_slowloris_from_many_addresses,
    connections_inside_noise_count_as_pending,
    a_client_named_by_a_proxy_header_is_charged_when_the_header_is_read,
    ipv6_clients_behind_a_proxy_share_per_64,
    a_stall_inside_noise_ends_at_the_upgrade_deadline_from_accept,
);
