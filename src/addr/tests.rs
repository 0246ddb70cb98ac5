//! Unit tests of the address grammar and its canonical forms.

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn parse(s: &str) -> Result<WsAddr, AddrError> {
    WsAddr::parse(
        &s.parse::<Multiaddr>()
            .expect("test address parses as a multiaddr"),
    )
}

fn ip4(s: &str) -> Host {
    Host::Ip(s.parse().unwrap())
}

#[test]
fn spec_address_table() {
    let tls = Security::Tls { sni: None };
    let cases: Vec<(&str, Host, u16, Security, &str)> = vec![
        (
            "/ip4/192.0.2.0/tcp/1234/ws",
            ip4("192.0.2.0"),
            1234,
            Security::Plain,
            "/",
        ),
        (
            "/ip4/192.0.2.0/tcp/1234/tls/ws",
            ip4("192.0.2.0"),
            1234,
            tls.clone(),
            "/",
        ),
        (
            "/ip4/192.0.2.0/tcp/1234/tls/sni/foo.example.com/ws",
            ip4("192.0.2.0"),
            1234,
            Security::Tls {
                sni: Some("foo.example.com".into()),
            },
            "/",
        ),
        (
            "/ip4/192.0.2.0/ws",
            ip4("192.0.2.0"),
            80,
            Security::Plain,
            "/",
        ),
        (
            "/ip4/192.0.2.0/tls/ws",
            ip4("192.0.2.0"),
            443,
            tls.clone(),
            "/",
        ),
        (
            "/ip4/192.0.2.0/wss",
            ip4("192.0.2.0"),
            443,
            tls.clone(),
            "/",
        ),
        (
            "/dns/example.com/wss",
            Host::Dns {
                name: "example.com".into(),
                family: DnsFamily::Any,
            },
            443,
            tls.clone(),
            "/",
        ),
        (
            "/dns/example.com/wss/http-path/path%2Fto%2Fendpoint",
            Host::Dns {
                name: "example.com".into(),
                family: DnsFamily::Any,
            },
            443,
            tls.clone(),
            "/path/to/endpoint",
        ),
    ];
    for (input, host, port, security, path) in cases {
        let parsed = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(parsed.host, host, "{input}");
        assert_eq!(parsed.port, port, "{input}");
        assert_eq!(parsed.security, security, "{input}");
        assert_eq!(parsed.path, path, "{input}");
        assert_eq!(parsed.peer_id, None, "{input}");
    }
}

#[test]
fn more_accepted_forms() {
    let a = parse("/ip6/::1/tcp/8080/ws").unwrap();
    assert_eq!(a.host, Host::Ip(Ipv6Addr::LOCALHOST.into()));
    let a = parse("/dns4/localhost/tcp/1/wss").unwrap();
    assert_eq!(
        a.host,
        Host::Dns {
            name: "localhost".into(),
            family: DnsFamily::V4
        }
    );
    let a = parse("/dns6/localhost/ws").unwrap();
    assert_eq!(a.port, 80);
    let id = PeerId::random();
    let a = parse(&format!("/ip4/1.2.3.4/tcp/5/ws/p2p/{id}")).unwrap();
    assert_eq!(a.peer_id, Some(id));
    let a = parse(&format!("/ip4/1.2.3.4/tcp/5/ws/http-path/a%2Fb/p2p/{id}")).unwrap();
    assert_eq!((a.path.as_str(), a.peer_id), ("/a/b", Some(id)));
    let a = parse("/ip4/1.2.3.4/tcp/5/x-parity-ws/%2Flegacy").unwrap();
    assert_eq!(a.path, "/legacy");
    let a = parse("/ip4/1.2.3.4/tcp/5/x-parity-wss/%2Flegacy").unwrap();
    assert!(a.is_secure());
}

#[test]
fn rejected_forms() {
    let cases = [
        ("/dnsaddr/example.com/ws", AddrError::UnsupportedHost),
        ("/unix/%2Ftmp%2Fsock/ws", AddrError::UnsupportedHost),
        ("/ip4/1.2.3.4/udp/1/quic-v1", AddrError::NotWebSocket),
        ("/ip4/1.2.3.4/udp/1/ws", AddrError::NotWebSocket),
        ("/ip4/1.2.3.4/tcp/1", AddrError::NotWebSocket),
        ("/ip4/1.2.3.4/tcp/1/tls", AddrError::TlsWithoutWs),
        ("/ip4/1.2.3.4/tcp/1/tls/wss", AddrError::TlsWithoutWs),
        ("/ip4/1.2.3.4/tcp/1/tls/sni/a/http", AddrError::TlsWithoutWs),
        (
            "/ip4/1.2.3.4/tcp/1/ws/p2p-circuit",
            AddrError::Trailing("p2p-circuit".into()),
        ),
        (
            "/ip4/1.2.3.4/tcp/1/ws/tcp/2",
            AddrError::Trailing("tcp".into()),
        ),
        (
            "/ip4/1.2.3.4/tcp/1/x-parity-ws/%2Fa/http-path/b",
            AddrError::TwoPaths,
        ),
    ];
    for (input, err) in cases {
        assert_eq!(parse(input), Err(err), "{input}");
    }
    let id = PeerId::random();
    let relayed = format!("/ip4/1.2.3.4/tcp/1/ws/p2p/{id}/p2p-circuit");
    assert!(matches!(parse(&relayed), Err(AddrError::Trailing(_))));
    let listen: Multiaddr = format!("/ip4/1.2.3.4/tcp/1/ws/p2p/{id}").parse().unwrap();
    assert_eq!(
        WsAddr::parse_listen(&listen),
        Err(AddrError::PeerIdInListenAddress)
    );
    assert_eq!(
        WsAddr::parse(&Multiaddr::empty()),
        Err(AddrError::UnsupportedHost)
    );
}

#[test]
fn canonical_form() {
    let cases = [
        ("/ip4/192.0.2.0/wss", "/ip4/192.0.2.0/tcp/443/tls/ws"),
        ("/ip4/192.0.2.0/ws", "/ip4/192.0.2.0/tcp/80/ws"),
        (
            "/dns/example.com/wss/http-path/path%2Fto%2Fendpoint",
            "/dns/example.com/tcp/443/tls/ws/http-path/path%2Fto%2Fendpoint",
        ),
        (
            "/ip4/1.2.3.4/tcp/5/tls/sni/x.y/ws",
            "/ip4/1.2.3.4/tcp/5/tls/sni/x.y/ws",
        ),
        (
            "/ip4/1.2.3.4/tcp/5/x-parity-ws/%2Fa",
            "/ip4/1.2.3.4/tcp/5/ws/http-path/a",
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(parse(input).unwrap().to_multiaddr().to_string(), expected);
    }
    let listen = parse("/ip4/0.0.0.0/tcp/0/ws/http-path/a%2Fb").unwrap();
    assert_eq!(
        listen
            .with_ip(Ipv4Addr::new(10, 0, 0, 1).into(), 4000)
            .to_string(),
        "/ip4/10.0.0.1/tcp/4000/ws/http-path/a%2Fb"
    );
}

#[test]
fn hand_built_addresses_print_without_panicking() {
    let mut addr = parse("/ip4/1.2.3.4/tcp/5/ws").unwrap();
    addr.path = String::new();
    assert_eq!(addr.to_multiaddr().to_string(), "/ip4/1.2.3.4/tcp/5/ws");
    addr.path = "no-slash".into();
    assert_eq!(
        addr.to_multiaddr().to_string(),
        "/ip4/1.2.3.4/tcp/5/ws/http-path/no-slash"
    );
}

#[test]
fn names_and_headers() {
    let a = parse("/ip4/127.0.0.1/tcp/443/tls/sni/example.com/ws").unwrap();
    assert_eq!(a.server_name(), "example.com");
    assert_eq!(a.host_header(), "example.com");
    let a = parse("/dns/example.com/tcp/8443/wss").unwrap();
    assert_eq!(a.server_name(), "example.com");
    assert_eq!(a.host_header(), "example.com:8443");
    let a = parse("/ip6/::1/tcp/80/ws").unwrap();
    assert_eq!(a.server_name(), "::1");
    assert_eq!(a.host_header(), "[::1]");
    let a = parse("/ip6/::1/tcp/81/ws").unwrap();
    assert_eq!(a.host_header(), "[::1]:81");
    let a = parse("/ip4/127.0.0.1/tcp/443/ws").unwrap();
    assert_eq!(a.host_header(), "127.0.0.1:443");
    let a = parse("/ip4/127.0.0.1/ws/http-path/a%20b%3Fc").unwrap();
    assert_eq!(a.path, "/a b?c");
    assert_eq!(a.request_target(), "/a%20b%3Fc");
}

fn parse_any(s: &str) -> Result<Addr, AddrError> {
    Addr::parse(&s.parse::<Multiaddr>().expect("test address parses"))
}

#[test]
fn plain_tcp_addresses() {
    let id = PeerId::random();
    let cases: Vec<(String, Host, u16, Option<PeerId>)> = vec![
        (
            "/ip4/192.0.2.0/tcp/4001".into(),
            ip4("192.0.2.0"),
            4001,
            None,
        ),
        ("/ip4/0.0.0.0/tcp/0".into(), ip4("0.0.0.0"), 0, None),
        (
            "/ip6/::1/tcp/4001".into(),
            Host::Ip(Ipv6Addr::LOCALHOST.into()),
            4001,
            None,
        ),
        (
            "/dns4/example.com/tcp/1".into(),
            Host::Dns {
                name: "example.com".into(),
                family: DnsFamily::V4,
            },
            1,
            None,
        ),
        (
            format!("/ip4/1.2.3.4/tcp/5/p2p/{id}"),
            ip4("1.2.3.4"),
            5,
            Some(id),
        ),
    ];
    for (input, host, port, peer_id) in cases {
        let parsed = parse_any(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(parsed.kind(), Kind::Tcp, "{input}");
        assert_eq!(
            parsed,
            Addr::Tcp(TcpAddr {
                host,
                port,
                peer_id
            }),
            "{input}"
        );
        assert_eq!(
            parsed.to_multiaddr().to_string(),
            input,
            "canonical {input}"
        );
    }
    assert_eq!(parse_any("/ip4/1.2.3.4/tcp/5/ws").unwrap().kind(), Kind::Ws);
    assert_eq!(
        parse_any("/ip4/1.2.3.4/tcp/5/tls/ws").unwrap().kind(),
        Kind::TlsWs
    );
    assert_eq!(parse_any("/ip4/1.2.3.4/wss").unwrap().kind(), Kind::TlsWs);
    let listen = parse_any("/ip4/0.0.0.0/tcp/0").unwrap();
    assert_eq!(
        listen
            .with_ip(Ipv4Addr::new(10, 0, 0, 1).into(), 4001)
            .to_string(),
        "/ip4/10.0.0.1/tcp/4001"
    );
    let listen: Multiaddr = format!("/ip4/1.2.3.4/tcp/1/p2p/{id}").parse().unwrap();
    assert_eq!(
        Addr::parse_listen(&listen),
        Err(AddrError::PeerIdInListenAddress)
    );
    assert_eq!(Kind::Tcp.to_string(), "/tcp");
    assert_eq!(Kind::TlsWs.to_string(), "/tls/ws");
}

#[test]
fn not_served_by_either_kind() {
    let cases = [
        ("/ip4/1.2.3.4", AddrError::NotWebSocket),
        ("/ip4/1.2.3.4/udp/1", AddrError::NotWebSocket),
        ("/ip4/1.2.3.4/udp/1/quic-v1", AddrError::NotWebSocket),
        ("/dnsaddr/example.com/tcp/1", AddrError::UnsupportedHost),
        ("/unix/%2Ftmp%2Fsock", AddrError::UnsupportedHost),
        ("/ip4/1.2.3.4/tcp/1/tls", AddrError::TlsWithoutWs),
        (
            "/ip4/1.2.3.4/tcp/1/p2p-circuit",
            AddrError::Trailing("p2p-circuit".into()),
        ),
        (
            "/ip4/1.2.3.4/tcp/1/tcp/2",
            AddrError::Trailing("tcp".into()),
        ),
        (
            "/ip4/1.2.3.4/tcp/1/http",
            AddrError::Trailing("http".into()),
        ),
    ];
    for (input, err) in cases {
        assert_eq!(parse_any(input), Err(err), "{input}");
    }
    let id = PeerId::random();
    let relayed = format!("/ip4/1.2.3.4/tcp/1/p2p/{id}/p2p-circuit");
    assert!(matches!(parse_any(&relayed), Err(AddrError::Trailing(_))));
    assert_eq!(
        Addr::parse(&Multiaddr::empty()),
        Err(AddrError::UnsupportedHost)
    );
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn host() -> impl Strategy<Value = Host> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|b| Host::Ip(Ipv4Addr::from(b).into())),
            any::<[u8; 16]>().prop_map(|b| Host::Ip(Ipv6Addr::from(b).into())),
            ("[a-z][a-z0-9-]{0,20}(\\.[a-z]{2,6}){0,2}", 0..3u8).prop_map(|(name, f)| {
                Host::Dns {
                    name,
                    family: [DnsFamily::Any, DnsFamily::V4, DnsFamily::V6][f as usize],
                }
            }),
        ]
    }

    fn security() -> impl Strategy<Value = Security> {
        prop_oneof![
            Just(Security::Plain),
            Just(Security::Tls { sni: None }),
            "[a-z]{1,10}\\.[a-z]{2,4}".prop_map(|s| Security::Tls { sni: Some(s) }),
        ]
    }

    proptest! {
        #[test]
        fn parse_print_parse(
            host in host(),
            port in any::<u16>(),
            security in security(),
            path in "(/[^/\\x00]{0,12}){0,3}",
            with_peer in any::<bool>(),
        ) {
            let path = if path.is_empty() { "/".to_string() } else { path };
            let addr = WsAddr {
                host, port, security, path,
                peer_id: with_peer.then(PeerId::random),
            };
            let printed = addr.to_multiaddr();
            let reparsed = WsAddr::parse(&printed).expect("canonical form parses");
            prop_assert_eq!(&reparsed, &addr);
            // The text form parses back to the same multiaddr.
            let text: Multiaddr = printed.to_string().parse().expect("text form parses");
            prop_assert_eq!(WsAddr::parse(&text).expect("text form is a ws addr"), addr);
        }

        #[test]
        fn tcp_parse_print_parse(host in host(), port in any::<u16>(), with_peer in any::<bool>()) {
            let addr = TcpAddr { host, port, peer_id: with_peer.then(PeerId::random) };
            let printed = addr.to_multiaddr();
            prop_assert_eq!(Addr::parse(&printed).expect("canonical form parses"), Addr::Tcp(addr.clone()));
            let text: Multiaddr = printed.to_string().parse().expect("text form parses");
            prop_assert_eq!(Addr::parse(&text).expect("text form parses"), Addr::Tcp(addr));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(addr) = Multiaddr::try_from(bytes) {
                let _ = WsAddr::parse(&addr);
                let _ = Addr::parse(&addr);
            }
        }
    }
}
