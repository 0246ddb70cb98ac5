//! Every address form of the spec over real sockets: DNS names resolved inside the transport,
//! /http-path listeners, /p2p checks and the omitted-port forms on ports 80 and 443.

mod common;

use common::*;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{core::transport::TransportEvent, core::Transport as _, swarm::DialError};
use libp2p_ws::{
    async_std::Transport, tls::dev::TestCa, Config, Error, HandshakeError, ServerCertificate,
    TlsConfig,
};

/// Listens on `listen`, dials `dial` (with `{port}` replaced by the listener's port), and checks
/// that bytes flow.
async fn round_trip(server: Config, client: Config, listen: &str, dial: &str) -> Result<(), Error> {
    let mut listener = Transport::new(server);
    let (_, addr) = listen_and_report(&mut listener, listen).await;
    let port = addr
        .iter()
        .find_map(|p| match p {
            libp2p::core::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("listen address has a port");
    let target = dial.replace("{port}", &port.to_string());
    let mut dialer = Transport::new(client);
    let dial = async_std::task::spawn(dialer.dial(target.parse().unwrap(), dial_opts()).unwrap());
    let server_side = async_std::task::spawn(async move {
        loop {
            if let TransportEvent::Incoming { upgrade, .. } = next_event(&mut listener).await {
                return upgrade.await;
            }
        }
    });
    let mut client = dial.await?;
    let mut server = server_side.await?;
    client.write_all(b"hi").await.unwrap();
    client.flush().await.unwrap();
    let mut buf = [0u8; 2];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hi");
    Ok(())
}

async fn listen_and_report(
    transport: &mut Transport,
    addr: &str,
) -> (libp2p::core::transport::ListenerId, libp2p::Multiaddr) {
    listen(transport, addr).await
}

fn ipv6_loopback_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn dns_localhost_is_resolved_inside_the_transport() {
    run(async {
        round_trip(
            Config::default(),
            Config::default(),
            "/ip4/127.0.0.1/tcp/0/ws",
            "/dns/localhost/tcp/{port}/ws",
        )
        .await
        .expect("/dns/localhost dials");
        round_trip(
            Config::default(),
            Config::default(),
            "/ip4/127.0.0.1/tcp/0/ws",
            "/dns4/localhost/tcp/{port}/ws",
        )
        .await
        .expect("/dns4/localhost dials");
    });
}

fn localhost_has_ipv6() -> bool {
    use std::net::ToSocketAddrs;
    ("localhost", 0)
        .to_socket_addrs()
        .map(|mut addrs| addrs.any(|a| a.is_ipv6()))
        .unwrap_or(false)
}

#[test]
fn ipv6_loopback_round_trip() {
    if !ipv6_loopback_available() {
        println!(
            "SKIPPED /ip6/::1 round trip: this machine has no IPv6 loopback (binding [::1] failed)"
        );
        return;
    }
    run(async {
        round_trip(
            Config::default(),
            Config::default(),
            "/ip6/::1/tcp/0/ws",
            "/ip6/::1/tcp/{port}/ws",
        )
        .await
        .expect("/ip6/::1 dials");
    });
}

#[test]
fn dns6_resolves_only_ipv6() {
    run(async {
        if ipv6_loopback_available() && localhost_has_ipv6() {
            round_trip(
                Config::default(),
                Config::default(),
                "/ip6/::1/tcp/0/ws",
                "/dns6/localhost/tcp/{port}/ws",
            )
            .await
            .expect("/dns6/localhost dials");
        } else {
            println!(
                "SKIPPED the /dns6/localhost round trip: localhost has no IPv6 address on this machine \
                 (no '::1 localhost' in /etc/hosts); checking that /dns6 refuses the IPv4 answers instead"
            );
            let mut dialer = Transport::new(Config::default());
            let error = dialer
                .dial("/dns6/localhost/tcp/1/ws".parse().unwrap(), dial_opts())
                .unwrap()
                .await
                .expect_err("no IPv6 address");
            assert!(matches!(error, Error::Dns { .. }), "{error:?}");
        }
    });
}

#[test]
fn dns4_name_that_only_has_v6_fails_with_a_dns_error() {
    run(async {
        let mut dialer = Transport::new(Config::default());
        // "ip6-localhost" resolves to ::1 only on Debian; if it does not resolve at all this still
        // is a DNS error.
        let error = dialer
            .dial("/dns4/ip6-localhost/tcp/1/ws".parse().unwrap(), dial_opts())
            .unwrap()
            .await
            .expect_err("no IPv4 address");
        assert!(matches!(error, Error::Dns { .. }), "{error:?}");
    });
}

#[test]
fn http_path_listener_serves_its_path_and_answers_404_to_others() {
    run(async {
        round_trip(
            Config::default(),
            Config::default(),
            "/ip4/127.0.0.1/tcp/0/ws/http-path/a%2Fb",
            "/ip4/127.0.0.1/tcp/{port}/ws/http-path/a%2Fb",
        )
        .await
        .expect("right path upgrades");

        let error = round_trip(
            Config::default(),
            Config::default(),
            "/ip4/127.0.0.1/tcp/0/ws/http-path/a%2Fb",
            "/ip4/127.0.0.1/tcp/{port}/ws/http-path/wrong",
        )
        .await
        .expect_err("wrong path is refused");
        println!("wrong path: {error}");
        assert!(
            matches!(
                error,
                Error::Handshake(HandshakeError::Rejected { status: 404 })
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("404"));
    });
}

#[test]
fn listen_address_with_path_is_reported_dialable_as_printed() {
    run(async {
        let mut listener = ping_swarm(Config::default());
        let mut dialer = ping_swarm(Config::default());
        listener
            .listen_on(
                "/dns4/localhost/tcp/0/ws/http-path/p2p%20node"
                    .parse()
                    .unwrap(),
            )
            .unwrap();
        let addr = first_listen_addr(&mut listener).await;
        assert!(
            addr.to_string().starts_with("/ip4/127.0.0.1/tcp/"),
            "{addr}"
        );
        assert!(
            addr.to_string().ends_with("/ws/http-path/p2p%20node"),
            "{addr}"
        );
        let printed: libp2p::Multiaddr = addr.to_string().parse().unwrap();
        ping_once(&mut listener, &mut dialer, printed)
            .await
            .expect("dials as printed");
    });
}

#[test]
fn wrong_peer_id_is_reported_as_a_mismatch() {
    run(async {
        let mut listener = ping_swarm(Config::default());
        let mut dialer = ping_swarm(Config::default());
        listener
            .listen_on("/ip4/127.0.0.1/tcp/0/ws".parse().unwrap())
            .unwrap();
        let addr = first_listen_addr(&mut listener).await;
        let wrong = libp2p::PeerId::random();
        let error = ping_once(
            &mut listener,
            &mut dialer,
            addr.with(libp2p::core::multiaddr::Protocol::P2p(wrong)),
        )
        .await
        .expect_err("wrong peer id");
        println!("wrong peer id: {error}");
        assert!(
            error.contains("WrongPeerId") && error.contains(&wrong.to_string()),
            "{error}"
        );
        let _ = DialError::Aborted; // the swarm reports DialError::WrongPeerId { obtained, address }
    });
}

#[test]
fn unsupported_addresses_are_left_to_other_transports() {
    let mut transport = Transport::new(Config::default());
    for addr in [
        "/ip4/127.0.0.1/tcp/1",
        "/ip4/127.0.0.1/udp/1/quic-v1",
        "/dnsaddr/example.com",
        "/ip4/127.0.0.1/tcp/1/ws/p2p-circuit",
        "/unix/%2Ftmp%2Fx",
    ] {
        let result = transport.dial(addr.parse().unwrap(), dial_opts());
        assert!(
            matches!(
                result,
                Err(libp2p::core::transport::TransportError::MultiaddrNotSupported(_))
            ),
            "{addr}"
        );
        let result = transport.listen_on(
            libp2p::core::transport::ListenerId::next(),
            addr.parse().unwrap(),
        );
        assert!(
            matches!(
                result,
                Err(libp2p::core::transport::TransportError::MultiaddrNotSupported(_))
            ),
            "{addr}"
        );
    }
}

/// Ports 80 and 443 on 127.0.0.1 with the port left out of the dialed address. One test, so the two
/// low ports are never bound twice at once within this binary.
#[test]
fn omitted_ports_default_to_80_and_443() {
    for port in [80, 443] {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            panic!(
                "cannot bind 127.0.0.1:{port} ({e}); this test needs root or CAP_NET_BIND_SERVICE and \
                 a free port {port}"
            );
        }
    }
    run(async {
        round_trip(
            Config::default(),
            Config::default(),
            "/ip4/127.0.0.1/tcp/80/ws",
            "/ip4/127.0.0.1/ws",
        )
        .await
        .expect("/ip4/127.0.0.1/ws dials port 80");
        round_trip(
            Config::default(),
            Config::default(),
            "/ip4/127.0.0.1/ws",
            "/dns4/localhost/ws",
        )
        .await
        .expect("listening on /ip4/127.0.0.1/ws binds port 80");

        let ca = TestCa::new("addresses test CA").unwrap();
        let (chain, key) = ca.issue(&["localhost", "127.0.0.1"]).unwrap();
        let certificate = ServerCertificate::from_der(chain, key).unwrap();
        let server =
            || Config::default().with_tls(TlsConfig::new().with_server_certificate(&certificate));
        let client = || Config::default().with_tls(TlsConfig::new().add_root_der(ca.certificate()));
        for dial in [
            "/ip4/127.0.0.1/wss",
            "/ip4/127.0.0.1/tls/ws",
            "/dns/localhost/wss",
        ] {
            round_trip(server(), client(), "/ip4/127.0.0.1/tcp/443/tls/ws", dial)
                .await
                .unwrap_or_else(|e| panic!("{dial} reaches port 443: {e}"));
        }
    });
}
