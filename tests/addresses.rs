//! Every address form of the spec over real sockets: DNS names resolved inside the transport,
//! /http-path listeners, /p2p checks, the omitted-port forms on ports 80 and 443, and a wildcard
//! listener's addresses coming and going with the interfaces.

mod common;

use std::{pin::Pin, process::Command, time::Duration};

use common::*;
use futures::{future::poll_fn, AsyncReadExt, AsyncWriteExt};
use libp2p::{
    core::transport::{ListenerId, TransportEvent},
    core::Transport as _,
    swarm::DialError,
};
use libp2p_ws::{tls::dev::TestCa, Config, Error, HandshakeError, ServerCertificate, TlsConfig};

/// Listens on `listen`, dials `dial` (with `{port}` replaced by the listener's port), and checks
/// that bytes flow.
async fn round_trip<R: Runtime>(
    server: Config,
    client: Config,
    listen: &str,
    dial: &str,
) -> Result<(), Error> {
    let mut listener = Transport::<R>::new(server);
    let (_, addr) = common::listen::<R>(&mut listener, listen).await;
    let port = addr
        .iter()
        .find_map(|p| match p {
            libp2p::core::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("listen address has a port");
    let target = dial.replace("{port}", &port.to_string());
    let mut dialer = Transport::<R>::new(client);
    let dial = spawn::<R, _>(dialer.dial(target.parse().unwrap(), dial_opts()).unwrap());
    let server_side = spawn::<R, _>(async move {
        loop {
            if let TransportEvent::Incoming { upgrade, .. } = next_event::<R>(&mut listener).await {
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

async fn dns_localhost_is_resolved_inside_the_transport<R: Runtime>() {
    round_trip::<R>(
        Config::default(),
        Config::default(),
        "/ip4/127.0.0.1/tcp/0/ws",
        "/dns/localhost/tcp/{port}/ws",
    )
    .await
    .expect("/dns/localhost dials");
    round_trip::<R>(
        Config::default(),
        Config::default(),
        "/ip4/127.0.0.1/tcp/0/ws",
        "/dns4/localhost/tcp/{port}/ws",
    )
    .await
    .expect("/dns4/localhost dials");
}

/// Names that `.ci/run` puts in /etc/hosts, so that the family rules of /dns4 and /dns6 are tested
/// on every machine (not only where `localhost` or `ip6-localhost` happen to resolve both ways).
const DUAL: &str = "dual.libp2p-ws.test"; // 127.0.0.1 and ::1
const V4_ONLY: &str = "v4.libp2p-ws.test"; // 127.0.0.1
const V6_ONLY: &str = "v6.libp2p-ws.test"; // ::1

/// The test's preconditions: the names above resolve as `.ci/run` sets them up, and [::1] binds.
fn require_test_names() {
    use std::net::ToSocketAddrs;
    let families = |name: &str| {
        let addrs: Vec<_> = (name, 0)
            .to_socket_addrs()
            .map(|a| a.collect())
            .unwrap_or_default();
        (
            addrs.iter().any(|a: &std::net::SocketAddr| a.is_ipv4()),
            addrs.iter().any(|a| a.is_ipv6()),
        )
    };
    let ok = families(DUAL) == (true, true)
        && families(V4_ONLY) == (true, false)
        && families(V6_ONLY) == (false, true)
        && std::net::TcpListener::bind("[::1]:0").is_ok();
    assert!(
        ok,
        "this test needs IPv6 loopback and these /etc/hosts entries (bash .ci/run adds them):\n\
         127.0.0.1 {DUAL} {V4_ONLY}\n::1 {DUAL} {V6_ONLY}"
    );
}

async fn ipv6_loopback_round_trip<R: Runtime>() {
    require_test_names();
    round_trip::<R>(
        Config::default(),
        Config::default(),
        "/ip6/::1/tcp/0/ws",
        "/ip6/::1/tcp/{port}/ws",
    )
    .await
    .expect("/ip6/::1 dials");
}

/// /dns4 and /dns6 of a name with both families reach only the listener of their family.
async fn dns4_and_dns6_dial_only_their_family<R: Runtime>() {
    require_test_names();
    for (listen, family, other) in [
        ("/ip4/127.0.0.1/tcp/0/ws", "dns4", "dns6"),
        ("/ip6/::1/tcp/0/ws", "dns6", "dns4"),
    ] {
        round_trip::<R>(
            Config::default(),
            Config::default(),
            listen,
            &format!("/{family}/{DUAL}/tcp/{{port}}/ws"),
        )
        .await
        .unwrap_or_else(|e| panic!("/{family}/{DUAL} reaches the listener on {listen}: {e}"));
        // The same port in the other family has no listener: the dial must not fall back to it.
        let error = round_trip::<R>(
            Config::default(),
            Config::default(),
            listen,
            &format!("/{other}/{DUAL}/tcp/{{port}}/ws"),
        )
        .await
        .expect_err("the other family has no listener");
        assert!(
            matches!(error, Error::Connect { ref addr, .. } if addr.is_ipv4() == (other == "dns4")),
            "/{other}/{DUAL} with a listener on {listen} only: {error:?}"
        );
    }
}

/// A name without an address of the asked family is a DNS error, before any connect.
async fn dns_family_without_addresses_is_a_dns_error<R: Runtime>() {
    require_test_names();
    for addr in [
        format!("/dns6/{V4_ONLY}/tcp/1/ws"),
        format!("/dns4/{V6_ONLY}/tcp/1/ws"),
    ] {
        let mut dialer = Transport::<R>::new(Config::default());
        let error = dialer
            .dial(addr.parse().unwrap(), dial_opts())
            .unwrap()
            .await
            .expect_err("no address of the family");
        assert!(matches!(error, Error::Dns { .. }), "{addr}: {error:?}");
    }
}

async fn http_path_listener_serves_its_path_and_answers_404_to_others<R: Runtime>() {
    round_trip::<R>(
        Config::default(),
        Config::default(),
        "/ip4/127.0.0.1/tcp/0/ws/http-path/a%2Fb",
        "/ip4/127.0.0.1/tcp/{port}/ws/http-path/a%2Fb",
    )
    .await
    .expect("right path upgrades");

    let error = round_trip::<R>(
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
}

async fn listen_address_with_path_is_reported_dialable_as_printed<R: Runtime>() {
    let mut listener = ping_swarm::<R>(Config::default());
    let mut dialer = ping_swarm::<R>(Config::default());
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
}

async fn wrong_peer_id_is_reported_as_a_mismatch<R: Runtime>() {
    let mut listener = ping_swarm::<R>(Config::default());
    let mut dialer = ping_swarm::<R>(Config::default());
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
}

async fn unsupported_addresses_are_left_to_other_transports<R: Runtime>() {
    let mut transport = Transport::<R>::new(Config::default());
    // Plain `/ip4/127.0.0.1/tcp/1` is served now (see tests/shared_port.rs); TCP with anything
    // after it that is neither WebSocket nor /p2p is not.
    for addr in [
        "/ip4/127.0.0.1/tcp/1/p2p-circuit",
        "/ip4/127.0.0.1/tcp/1/http",
        "/ip4/127.0.0.1/udp/1",
        "/ip4/127.0.0.1/udp/1/quic-v1",
        // `/dnsaddr/<name>[/p2p/<id>]` is dialed (tests/dns.rs); anything else after the name is
        // not.
        "/dnsaddr/example.com/tcp/1",
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
    // Nothing listens on a /dnsaddr.
    let result = transport.listen_on(
        libp2p::core::transport::ListenerId::next(),
        "/dnsaddr/example.com".parse().unwrap(),
    );
    assert!(matches!(
        result,
        Err(libp2p::core::transport::TransportError::MultiaddrNotSupported(_))
    ));
}

/// Ports 80 and 443 on 127.0.0.1 with the port left out of the dialed address. One test, so the two
/// low ports are never bound twice at once within this binary.
async fn omitted_ports_default_to_80_and_443<R: Runtime>() {
    for port in [80, 443] {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            panic!(
                "cannot bind 127.0.0.1:{port} ({e}); this test needs root or CAP_NET_BIND_SERVICE and \
                 a free port {port}"
            );
        }
    }
    {
        round_trip::<R>(
            Config::default(),
            Config::default(),
            "/ip4/127.0.0.1/tcp/80/ws",
            "/ip4/127.0.0.1/ws",
        )
        .await
        .expect("/ip4/127.0.0.1/ws dials port 80");
        round_trip::<R>(
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
            round_trip::<R>(server(), client(), "/ip4/127.0.0.1/tcp/443/tls/ws", dial)
                .await
                .unwrap_or_else(|e| panic!("{dial} reaches port 443: {e}"));
        }
    }
}

/// The listener on 0.0.0.0 reports each interface address as it comes and goes: adding a loopback
/// address gives `NewAddress`, removing it `AddressExpired` (needs root, which CI has).
async fn a_wildcard_listener_reports_addresses_coming_and_going<R: Runtime>() {
    let extra = match R::NAME {
        "tokio" => "127.0.0.78",
        _ => "127.0.0.77",
    };
    let ip = |args: &[&str]| {
        let status = Command::new("ip")
            .args(args)
            .status()
            .expect("the ip command runs");
        assert!(status.success(), "ip {args:?} (this test needs root)");
    };
    let _ = Command::new("ip")
        .args(["addr", "del", &format!("{extra}/32"), "dev", "lo"])
        .output();
    let mut transport = Transport::<R>::new(Config::default().danger_insecure_listen(true));
    let id = ListenerId::next();
    transport
        .listen_on(id, "/ip4/0.0.0.0/tcp/0/ws".parse().unwrap())
        .unwrap();
    let wanted =
        |event: &TransportEvent<ListenerUpgrade<R>, libp2p_ws::Error>, expired: bool| match event {
            TransportEvent::NewAddress { listen_addr, .. } if !expired => listen_addr
                .to_string()
                .starts_with(&format!("/ip4/{extra}/tcp/")),
            TransportEvent::AddressExpired { listen_addr, .. } if expired => listen_addr
                .to_string()
                .starts_with(&format!("/ip4/{extra}/tcp/")),
            _ => false,
        };
    // The current addresses come first; 127.0.0.1 must be among them.
    let mut saw_loopback = false;
    let added = async {
        loop {
            let event = poll_fn(|cx| Pin::new(&mut transport).poll(cx)).await;
            if let TransportEvent::NewAddress { listen_addr, .. } = &event {
                if listen_addr.to_string().starts_with("/ip4/127.0.0.1/tcp/") && !saw_loopback {
                    saw_loopback = true;
                    ip(&["addr", "add", &format!("{extra}/32"), "dev", "lo"]);
                }
            }
            if wanted(&event, false) {
                break;
            }
        }
    };
    within::<R, _>(Duration::from_secs(10), added).await;
    ip(&["addr", "del", &format!("{extra}/32"), "dev", "lo"]);
    let expired = async {
        loop {
            let event = poll_fn(|cx| Pin::new(&mut transport).poll(cx)).await;
            if wanted(&event, true) {
                break;
            }
        }
    };
    within::<R, _>(Duration::from_secs(10), expired).await;
    assert!(transport.remove_listener(id));
}

runtime_tests!(
    dns_localhost_is_resolved_inside_the_transport,
    ipv6_loopback_round_trip,
    dns4_and_dns6_dial_only_their_family,
    dns_family_without_addresses_is_a_dns_error,
    http_path_listener_serves_its_path_and_answers_404_to_others,
    listen_address_with_path_is_reported_dialable_as_printed,
    wrong_peer_id_is_reported_as_a_mismatch,
    unsupported_addresses_are_left_to_other_transports,
);

// One test for both runtimes, so the two low ports are never bound twice at once in this binary.
#[test]
fn omitted_ports_default_to_80_and_443_on_both_runtimes() {
    run::<AsyncStd, _>(omitted_ports_default_to_80_and_443::<AsyncStd>());
    run::<Tokio, _>(omitted_ports_default_to_80_and_443::<Tokio>());
}

runtime_tests!(a_wildcard_listener_reports_addresses_coming_and_going,);
