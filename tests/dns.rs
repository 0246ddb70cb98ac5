//! Names against a real DNS server (dnsmasq on loopback): `/dnsaddr` (TXT records, nesting, loops,
//! limits, junk, the `/p2p` filter, a silent server) and `/dns*` names that keep their name for
//! TLS through the `Dns` layer beside QUIC, as the README recommends for apps with other
//! transports.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{
    dnsmasq::{dnsaddr, dnsmasq},
    *,
};
use libp2p::{
    core::{muxing::StreamMuxerBox, Multiaddr, Transport as _},
    ping,
    swarm::Swarm,
    PeerId,
};
use libp2p_ws::{
    dns::{DnsConfig, DnsaddrError, LookupError},
    tls::dev::TestCa,
    Config, Error, ServerCertificate, TlsConfig,
};

/// How the dialing swarm is built.
#[derive(Clone, Copy, Debug)]
enum Build {
    /// `Swarm::new` over `upgraded`: this transport resolves names and `/dnsaddr` itself.
    SwarmNew,
    /// tokio `SwarmBuilder::with_other_transport(constructor_with(config, quic))`: QUIC beside
    /// this transport under its `Dns` layer.
    BuilderWithQuic,
    /// `Swarm::new` over the `Dns` layer around `upgraded` (either runtime).
    DnsLayer,
}

fn builds<R: Runtime>() -> Vec<Build> {
    if R::NAME == "tokio" {
        vec![Build::SwarmNew, Build::BuilderWithQuic, Build::DnsLayer]
    } else {
        vec![Build::SwarmNew, Build::DnsLayer]
    }
}

fn behaviour() -> ping::Behaviour {
    ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(200)))
}

fn dialer<R: Runtime>(build: Build, config: Config) -> Swarm<ping::Behaviour> {
    match build {
        Build::SwarmNew if R::NAME == "tokio" => {
            let keypair = libp2p::identity::Keypair::generate_ed25519();
            Swarm::new(
                R::upgraded(&keypair, config),
                behaviour(),
                keypair.public().to_peer_id(),
                libp2p::swarm::Config::with_tokio_executor(),
            )
        }
        Build::SwarmNew => R::ping_swarm(config, behaviour()),
        Build::DnsLayer => {
            let keypair = libp2p::identity::Keypair::generate_ed25519();
            let transport = libp2p_ws::dns::Dns::<_, R::Provider>::new(
                R::upgraded(&keypair, config.clone()),
                &config,
            )
            .boxed();
            let swarm_config = if R::NAME == "tokio" {
                libp2p::swarm::Config::with_tokio_executor()
            } else {
                libp2p::swarm::Config::with_executor(|f| {
                    async_std::task::spawn(f);
                })
            };
            Swarm::new(
                transport,
                behaviour(),
                keypair.public().to_peer_id(),
                swarm_config,
            )
        }
        Build::BuilderWithQuic => libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_other_transport(libp2p_ws::tokio::constructor_with(config, |key| {
                Ok(
                    libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key))
                        .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn))),
                )
            }))
            .expect("transports build")
            .with_behaviour(|_| behaviour())
            .expect("behaviour builds")
            .build(),
    }
}

/// A ping listener on `/tls/ws` (certificate for node.test only), `/ws` and `/tcp`, with its
/// three ports.
struct Node {
    swarm: Swarm<ping::Behaviour>,
    id: PeerId,
    tls: u16,
    ws: u16,
    tcp: u16,
}

async fn node<R: Runtime>(ca: &TestCa) -> Node {
    let (chain, key) = ca.issue(&["node.test"]).unwrap();
    let certificate = ServerCertificate::from_der(chain, key).unwrap();
    let config = Config::default().with_tls(TlsConfig::new().with_server_certificate(&certificate));
    let mut swarm = R::ping_swarm(config, behaviour());
    let mut ports = Vec::new();
    for addr in [
        "/ip4/127.0.0.1/tcp/0/tls/ws",
        "/ip4/127.0.0.1/tcp/0/ws",
        "/ip4/127.0.0.1/tcp/0",
    ] {
        swarm.listen_on(addr.parse().unwrap()).unwrap();
        let port = first_listen_addr(&mut swarm).await.to_string();
        ports.push(port.split('/').nth(4).unwrap().parse().unwrap());
    }
    Node {
        id: *swarm.local_peer_id(),
        swarm,
        tls: ports[0],
        ws: ports[1],
        tcp: ports[2],
    }
}

fn client(ca: &TestCa, server: SocketAddr) -> Config {
    Config::default()
        .with_tls(TlsConfig::new().add_root_der(ca.certificate()))
        .with_dns(
            DnsConfig::default()
                .with_name_servers([server])
                .with_timeout(Duration::from_secs(2)),
        )
}

fn addr(text: String) -> Multiaddr {
    text.parse().unwrap()
}

/// Each `/dnsaddr` entry form dials and pings: a `/dns4` name with `/tls/ws` (certificate for the
/// name only), `/ip4` with `/ws`, and our `/tcp`; a nested `/dnsaddr` two levels deep; junk
/// beside a good entry; and the `/p2p` filter picking one of two peers.
async fn dnsaddr_entries_dial_and_ping<R: Runtime>() {
    let ca = TestCa::new("dns test CA").unwrap();
    let mut a = node::<R>(&ca).await;
    let mut b = node::<R>(&ca).await;
    let (id, idb) = (a.id, b.id);
    let txt = vec![
        dnsaddr(
            "tls.test",
            format!("/dns4/node.test/tcp/{}/tls/ws/p2p/{id}", a.tls),
        ),
        dnsaddr(
            "ws.test",
            format!("/ip4/127.0.0.1/tcp/{}/ws/p2p/{id}", a.ws),
        ),
        dnsaddr("tcp.test", format!("/ip4/127.0.0.1/tcp/{}/p2p/{id}", a.tcp)),
        dnsaddr("outer.test", format!("/dnsaddr/mid.test/p2p/{id}")),
        dnsaddr("mid.test", format!("/dnsaddr/tls.test/p2p/{id}")),
        dnsaddr("junk.test", "not-a-multiaddr"),
        dnsaddr(
            "junk.test",
            format!("/ip4/127.0.0.1/tcp/{}/ws/p2p/{id}", a.ws),
        ),
        dnsaddr(
            "peers.test",
            format!("/ip4/127.0.0.1/tcp/{}/ws/p2p/{id}", a.ws),
        ),
        dnsaddr(
            "peers.test",
            format!("/ip4/127.0.0.1/tcp/{}/ws/p2p/{idb}", b.ws),
        ),
    ];
    let server = dnsmasq(&txt, &[("node.test", "127.0.0.1")]);
    for build in builds::<R>() {
        for (name, peer) in [
            ("tls.test", id),
            ("ws.test", id),
            ("tcp.test", id),
            ("outer.test", id),
            ("junk.test", id),
            ("peers.test", idb),
            ("peers.test", id),
        ] {
            let target = addr(format!("/dnsaddr/{name}/p2p/{peer}"));
            let mut dialer = dialer::<R>(build, client(&ca, server.addr));
            let listener = if peer == id {
                &mut a.swarm
            } else {
                &mut b.swarm
            };
            let pinged = within::<R, _>(
                Duration::from_secs(15),
                ping_once(listener, &mut dialer, target.clone()),
            )
            .await;
            assert_eq!(pinged, Ok(peer), "{build:?}: {target}");
            println!("{build:?}: {target} dialed and pinged");
        }
    }
}

/// `/dns4` and `/dns` names with `/tls/ws` and `/wss` keep their name for TLS through the `Dns`
/// layer beside QUIC (and through this transport alone); libp2p-dns (`with_dns_config`) resolves
/// them first, so TLS checks the IP and fails.
async fn dns_names_keep_their_name_for_tls<R: Runtime>() {
    let ca = TestCa::new("dns test CA").unwrap();
    let mut a = node::<R>(&ca).await;
    let server = dnsmasq(&[], &[("node.test", "127.0.0.1")]);
    let targets = [
        format!("/dns4/node.test/tcp/{}/tls/ws/p2p/{}", a.tls, a.id),
        format!("/dns/node.test/tcp/{}/wss/p2p/{}", a.tls, a.id),
    ];
    for build in builds::<R>() {
        for target in &targets {
            let mut dialer = dialer::<R>(build, client(&ca, server.addr));
            let pinged = within::<R, _>(
                Duration::from_secs(15),
                ping_once(&mut a.swarm, &mut dialer, addr(target.clone())),
            )
            .await;
            assert_eq!(pinged, Ok(a.id), "{build:?}: {target}");
        }
    }
    if R::NAME == "tokio" {
        // The way that loses the name: SwarmBuilder::with_dns_config (libp2p-dns) resolves the
        // name before this transport sees the address.
        use hickory_resolver::config::{
            ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
        };
        let mut udp = ConnectionConfig::new(ProtocolConfig::Udp);
        udp.port = server.addr.port();
        let servers = ResolverConfig::from_parts(
            None,
            vec![],
            vec![NameServerConfig::new(server.addr.ip(), true, vec![udp])],
        );
        let mut dialer = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_other_transport(libp2p_ws::tokio::constructor(client(&ca, server.addr)))
            .unwrap()
            .with_dns_config(servers, ResolverOpts::default())
            .with_behaviour(|_| behaviour())
            .unwrap()
            .build();
        let target = addr(targets[0].clone());
        let error = within::<R, _>(
            Duration::from_secs(15),
            ping_once(&mut a.swarm, &mut dialer, target),
        )
        .await
        .expect_err("libp2p-dns loses the name");
        assert!(
            error.contains("NameMismatch") && error.contains("127.0.0.1"),
            "{error}"
        );
        println!("with_dns_config: {error}");
    }
}

/// Loops, nesting deeper than the limit, more records than the limit (an answer too large for
/// UDP, read over TCP), a name without records, and a silent name server: each a typed error,
/// within bounds.
async fn dnsaddr_limits_and_failures_are_typed<R: Runtime>() {
    let ca = TestCa::new("dns test CA").unwrap();
    let id = PeerId::random();
    let mut txt = vec![
        dnsaddr("loop-a.test", "/dnsaddr/loop-b.test"),
        dnsaddr("loop-b.test", "/dnsaddr/loop-a.test"),
    ];
    for level in 0..6 {
        txt.push(dnsaddr(
            &format!("deep{level}.test"),
            format!("/dnsaddr/deep{}.test", level + 1),
        ));
    }
    for n in 0..70 {
        txt.push(dnsaddr(
            "many.test",
            format!("/ip4/127.0.0.1/tcp/{}/ws/p2p/{id}", 1000 + n),
        ));
    }
    let server = dnsmasq(&txt, &[]);
    let dial = |target: &str, config: Config| {
        let target = addr(target.to_string());
        async move {
            let mut transport = Transport::<R>::new(config);
            let dial = transport
                .dial(target, dial_opts())
                .expect("a /dnsaddr dial");
            within::<R, _>(Duration::from_secs(10), dial)
                .await
                .map(|_| ())
        }
    };
    type Expected = fn(&DnsaddrError) -> bool;
    let cases: [(&str, Expected); 4] = [
        ("/dnsaddr/loop-a.test", |e| {
            matches!(e, DnsaddrError::Loop { .. })
        }),
        ("/dnsaddr/deep0.test", |e| {
            matches!(e, DnsaddrError::TooDeep { limit: 4, .. })
        }),
        ("/dnsaddr/many.test", |e| {
            matches!(e, DnsaddrError::TooManyRecords { limit: 64, .. })
        }),
        ("/dnsaddr/nothing.test", |e| {
            matches!(
                e,
                DnsaddrError::Lookup {
                    source: LookupError::NoRecords { .. },
                    ..
                }
            )
        }),
    ];
    for (target, expected) in cases {
        match dial(target, client(&ca, server.addr)).await {
            Err(Error::Dnsaddr(e)) if expected(&e) => println!("{target}: {e}"),
            other => panic!("{target}: {other:?}"),
        }
    }

    // A name server that never answers (UDP and TCP): the lookup timeout bounds the dial.
    let silent_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = silent_udp.local_addr().unwrap();
    let _silent_tcp = std::net::TcpListener::bind(silent).unwrap();
    let config = client(&ca, silent).with_dns(
        DnsConfig::default()
            .with_name_servers([silent])
            .with_timeout(Duration::from_millis(700)),
    );
    let started = std::time::Instant::now();
    match dial("/dnsaddr/any.test", config).await {
        Err(Error::Dnsaddr(DnsaddrError::Lookup {
            source: LookupError::Timeout { .. } | LookupError::Failed { .. },
            ..
        })) => {}
        other => panic!("a silent server: {other:?}"),
    }
    let took = started.elapsed();
    println!("a silent name server: failed after {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

runtime_tests!(
    dnsaddr_entries_dial_and_ping,
    dns_names_keep_their_name_for_tls,
    dnsaddr_limits_and_failures_are_typed,
);

/// The ping node with `--dns-server`: dials a `/dnsaddr` name (on tokio through its recommended
/// build: QUIC beside this transport under the `Dns` layer) and pings.
fn the_ping_node_dials_by_dnsaddr<R: Runtime>() {
    use common::ping_node::{assert_pings, listening_addr, Node};
    let listener = Node::start::<R>(&["--listen", "/ip4/127.0.0.1/tcp/0/ws"]);
    let addr = listening_addr(&listener);
    let id = addr.rsplit('/').next().unwrap().to_string();
    let server = dnsmasq(&[dnsaddr("boot.test", &addr)], &[]);
    let dns_server = server.addr.to_string();
    let target = format!("/dnsaddr/boot.test/p2p/{id}");
    let dialer = Node::start::<R>(&[
        "--dns-server",
        &dns_server,
        "--dial",
        &target,
        "--count",
        "2",
    ]);
    let (ok, lines, stderr) = dialer.finish();
    assert!(ok, "{stderr}");
    assert_pings(&lines, 2);
    drop(listener);
}

ping_tests!(the_ping_node_dials_by_dnsaddr);

/// js-libp2p (the interop js peer) dials our ping node by `/dnsaddr` against the same name server:
/// a reference for the record format.
fn js_libp2p_dials_our_node_by_dnsaddr<R: Runtime>() {
    use common::ping_node::{assert_pings, listening_addr, Node};
    let interop = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("interop");
    assert!(
        interop.join("js/node_modules/@multiformats/dns").is_dir(),
        "js-libp2p is not installed: run the tests with `bash tests/run` (README), which installs it"
    );
    let listener = Node::start::<R>(&["--listen", "/ip4/127.0.0.1/tcp/0/ws"]);
    let addr = listening_addr(&listener);
    let id = addr.rsplit('/').next().unwrap().to_string();
    let server = dnsmasq(&[dnsaddr("js.test", &addr)], &[]);
    let dns_server = server.addr.to_string();
    let target = format!("/dnsaddr/js.test/p2p/{id}");
    let mut command = std::process::Command::new(interop.join("peers/js"));
    command
        .args(["--dns-server", &dns_server, "--dial", &target])
        .args(["--count", "2", "--timeout", "20"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let (ok, lines, stderr) = Node::spawn(command).finish();
    assert!(ok, "{stderr}");
    assert_pings(&lines, 2);
    drop(listener);
}

ping_tests!(js_libp2p_dials_our_node_by_dnsaddr);
