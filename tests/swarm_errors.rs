//! Errors as a swarm reports them: each case is matched back to the transport's typed `Error` with
//! `Error::find`, through `Swarm::new` and through `SwarmBuilder` (alone, and beside libp2p-tcp
//! under libp2p-dns, as apps build it), and each of our messages appears once in the text; an error
//! chain rendered with anyhow, and an upgrade failure naming its step.

mod common;

use std::{io::Write as _, net::TcpListener, time::Duration};

use common::{daemon::free_port, helpers::ip_and_port, raw::*, *};
use futures::{FutureExt as _, StreamExt};
use libp2p::{
    core::{
        transport::{ListenerId, TransportError},
        Multiaddr, Transport as _,
    },
    ping,
    swarm::{DialError, Swarm, SwarmEvent},
};
use libp2p_ws::{
    proxy::ProxyError, tls::dev::TestCa, Config, Error, HandshakeError, Report, ServerCertificate,
    TlsConfig, TlsError, UpgradeViolation,
};

/// How a test swarm is built.
#[derive(Clone, Copy, Debug)]
enum Build {
    /// `Swarm::new` over `upgraded` (either runtime).
    SwarmNew,
    /// tokio `SwarmBuilder::with_other_transport(constructor)`.
    Builder,
    /// tokio `SwarmBuilder`: `with_tcp`, then `with_other_transport(constructor)`, then `with_dns`.
    BuilderTcpDns,
}

/// The ways runtime `R` builds swarms.
fn builds<R: Runtime>() -> Vec<Build> {
    if R::NAME == "tokio" {
        vec![Build::SwarmNew, Build::Builder, Build::BuilderTcpDns]
    } else {
        vec![Build::SwarmNew]
    }
}

fn behaviour() -> ping::Behaviour {
    ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(200)))
}

fn swarm<R: Runtime>(build: Build, config: Config) -> Swarm<ping::Behaviour> {
    let idle = Duration::from_secs(30);
    match build {
        Build::SwarmNew if R::NAME == "tokio" => {
            let keypair = libp2p::identity::Keypair::generate_ed25519();
            let transport = R::upgraded(&keypair, config);
            let swarm_config =
                libp2p::swarm::Config::with_tokio_executor().with_idle_connection_timeout(idle);
            Swarm::new(
                transport,
                behaviour(),
                keypair.public().to_peer_id(),
                swarm_config,
            )
        }
        Build::SwarmNew | Build::Builder => R::ping_swarm(config, behaviour()),
        Build::BuilderTcpDns => libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .expect("tcp builds")
            .with_other_transport(libp2p_ws::tokio::constructor(config))
            .expect("transport builds")
            .with_dns()
            .expect("dns builds")
            .with_behaviour(|_| behaviour())
            .expect("behaviour builds")
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
    }
}

/// Our error's own messages: its `Display` and each of its sources'.
fn messages(error: &Error) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        out.push(e.to_string());
        current = e.source();
    }
    out
}

/// Checks that each of `ours`'s messages appears exactly once in `text`.
fn assert_each_once(ours: &Error, text: &str, what: &str) {
    for message in messages(ours) {
        assert_eq!(
            text.matches(message.as_str()).count(),
            1,
            "{what}: {message:?} should appear once in {text:?}"
        );
    }
}

/// Dials `addr` from a swarm built with `build` and `config`, with `listener` (if any) driven
/// meanwhile; returns the dial's error for `addr`, checked as the user sees it.
async fn dial_error<R: Runtime>(
    build: Build,
    config: Config,
    listener: Option<&mut Swarm<ping::Behaviour>>,
    addr: Multiaddr,
    limit: Duration,
) -> (TransportError<std::io::Error>, String) {
    let mut dialer = swarm::<R>(build, config);
    dialer.dial(addr.clone()).expect("dial starts");
    let mut idle = futures::stream::pending();
    let listener = match listener {
        Some(l) => futures::future::Either::Left(l),
        None => futures::future::Either::Right(&mut idle),
    };
    let mut listener = listener.map(|_| ()).fuse();
    let error = within::<R, _>(limit, async {
        loop {
            futures::select! {
                _ = listener.next() => {}
                event = dialer.select_next_some() => match event {
                    SwarmEvent::OutgoingConnectionError { error, .. } => break error,
                    SwarmEvent::ConnectionEstablished { .. } => panic!("{addr} connected"),
                    _ => {}
                },
            }
        }
    })
    .await;
    let rendered = error.to_string();
    let DialError::Transport(errors) = error else {
        panic!("not a transport error: {error:?}")
    };
    let (_, error) = errors
        .into_iter()
        .find(|(a, _)| *a == addr)
        .expect("an error for the address");
    (error, rendered)
}

/// Checks a dial error: ours is `expected`, and each of our messages shows once, both in the
/// swarm's own text and in `Report`'s; `Report` names the transport once.
fn check(
    build: Build,
    case: &str,
    error: &TransportError<std::io::Error>,
    swarm_text: &str,
    expected: impl Fn(&Error) -> bool,
) {
    let what = format!("{case} ({build:?})");
    println!("{what}, as the swarm prints it: {swarm_text}");
    let ours =
        Error::find(error).unwrap_or_else(|| panic!("{what}: no libp2p-ws error in {error:?}"));
    assert!(expected(ours), "{what}: unexpected {ours:?}");
    let report = Report(error).to_string();
    println!("{what}: {report}");
    assert_each_once(ours, swarm_text, &what);
    assert_each_once(ours, &report, &what);
    assert_eq!(report.matches("libp2p-ws").count(), 1, "{what}: {report}");
    assert!(
        !report.starts_with(':') && !report.contains(": :"),
        "{what}: {report}"
    );
}

fn tls_listener(ca: &TestCa, names: &[&str]) -> Config {
    let (chain, key) = ca.issue(names).expect("issue");
    let certificate = ServerCertificate::from_der(chain, key).expect("certificate");
    Config::default().with_tls(TlsConfig::new().with_server_certificate(&certificate))
}

fn trusting(ca: &TestCa) -> Config {
    Config::default().with_tls(TlsConfig::new().add_root_der(ca.certificate()))
}

fn with_port(addr: &Multiaddr, tail: &str) -> Multiaddr {
    let port = addr.to_string().split('/').nth(4).unwrap().to_string();
    format!("/ip4/127.0.0.1/tcp/{port}{tail}").parse().unwrap()
}

async fn dial_errors_are_found_and_read_once<R: Runtime>() {
    let ca = TestCa::new("swarm errors CA").unwrap();
    let limit = Duration::from_secs(15);
    for build in builds::<R>() {
        // One listener with /ws and one with /tls/ws (certificate for localhost only).
        let mut ws = swarm::<R>(build, Config::default());
        ws.listen_on("/ip4/127.0.0.1/tcp/0/ws".parse().unwrap())
            .unwrap();
        let ws_addr = first_listen_addr(&mut ws).await;
        let mut tls = swarm::<R>(build, tls_listener(&ca, &["localhost"]));
        tls.listen_on("/ip4/127.0.0.1/tcp/0/tls/ws".parse().unwrap())
            .unwrap();
        let tls_addr = first_listen_addr(&mut tls).await;

        let target = with_port(&ws_addr, "/tls/ws");
        let (error, text) =
            dial_error::<R>(build, trusting(&ca), Some(&mut ws), target, limit).await;
        check(build, "/tls/ws to a /ws port", &error, &text, |e| {
            matches!(e, Error::Tls(TlsError::NotTls { .. }))
        });

        let target = with_port(&tls_addr, "/ws");
        let (error, text) =
            dial_error::<R>(build, trusting(&ca), Some(&mut tls), target, limit).await;
        check(build, "/ws to a /tls/ws port", &error, &text, |e| {
            matches!(e, Error::Handshake(HandshakeError::AnsweredWithTls))
        });

        let target = with_port(&tls_addr, "/tls/ws");
        let (error, text) =
            dial_error::<R>(build, trusting(&ca), Some(&mut tls), target, limit).await;
        check(
            build,
            "TLS name mismatch",
            &error,
            &text,
            |e| matches!(e, Error::Tls(TlsError::NameMismatch { server_name }) if server_name == "127.0.0.1"),
        );

        let refused: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}/ws", free_port("127.0.0.1"))
            .parse()
            .unwrap();
        let (error, text) =
            dial_error::<R>(build, Config::default(), None, refused.clone(), limit).await;
        check(
            build,
            "refused port",
            &error,
            &text,
            |e| matches!(e, Error::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused),
        );

        let proxy = format!("http://127.0.0.1:{}", free_port("127.0.0.1"));
        let config = Config::default().with_proxy(proxy.parse().unwrap());
        let (error, text) = dial_error::<R>(build, config, None, refused, limit).await;
        check(build, "proxy refused", &error, &text, |e| {
            matches!(
                e,
                Error::Proxy {
                    source: ProxyError::Connect { .. },
                    ..
                }
            )
        });
    }
}

async fn listen_errors_are_found_and_read_once<R: Runtime>() {
    for build in builds::<R>() {
        // A port held by another socket (libp2p-tcp, say).
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        let mut node = swarm::<R>(build, Config::default());
        let error = node
            .listen_on(format!("/ip4/127.0.0.1/tcp/{port}/ws").parse().unwrap())
            .expect_err("the port is in use");
        let text = alternate_text(&error);
        check(
            build,
            "port in use",
            &error,
            &text,
            |e| matches!(e, Error::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse),
        );
        assert!(
            Report(&error)
                .to_string()
                .contains("do not also listen on it with libp2p-tcp"),
            "{}",
            Report(&error)
        );

        let error = node
            .listen_on("/ip4/0.0.0.0/tcp/0/ws".parse().unwrap())
            .expect_err("plain /ws beyond loopback");
        let text = alternate_text(&error);
        check(build, "insecure listen", &error, &text, |e| {
            matches!(e, Error::InsecureListen { .. })
        });
        drop(holder);
    }
}

/// What anyhow's `{:#}` prints for `error`: its message and each source's, `: `-separated.
fn alternate_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn incoming_errors_are_found_and_read_once<R: Runtime>() {
    for build in builds::<R>() {
        let mut node = swarm::<R>(build, Config::default());
        node.listen_on("/ip4/127.0.0.1/tcp/0/ws".parse().unwrap())
            .unwrap();
        let addr = first_listen_addr(&mut node).await;
        let target = ip_and_port(&addr).unwrap();
        std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(target).unwrap();
            let _ = s.write_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            );
            std::thread::sleep(Duration::from_secs(2));
        });
        let error = within::<R, _>(Duration::from_secs(10), async {
            loop {
                if let SwarmEvent::IncomingConnectionError { error, .. } =
                    node.select_next_some().await
                {
                    break error;
                }
            }
        })
        .await;
        let ours = Error::find(&error).expect("a libp2p-ws error in the ListenError");
        assert!(
            matches!(
                ours,
                Error::Handshake(HandshakeError::Protocol(UpgradeViolation::NotGet))
            ),
            "{ours:?}"
        );
        let what = format!("POST instead of GET ({build:?})");
        let report = Report(&error).to_string();
        println!("{what}: {report}");
        assert_each_once(ours, &alternate_text(&error), &what);
        assert_each_once(ours, &report, &what);
        assert!(!report.contains(": :"), "{report}");
    }
}

/// A fake forward proxy on 127.0.0.1: accepts, reads the request, answers `reply` (if any), then
/// holds every connection open in silence for `hold`.
fn fake_proxy(reply: Option<&'static [u8]>, hold: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                let _ = std::io::Read::read(&mut stream, &mut buf);
                if let Some(reply) = reply {
                    let _ = stream.write_all(reply);
                }
                std::thread::sleep(hold);
            });
        }
    });
    format!("http://{addr}")
}

/// With default settings, our typed timeouts fire before `SwarmBuilder`'s 10 s connection
/// timeout: a silent forward proxy, a proxy that opens the tunnel and then says nothing, and (on
/// the listener) a client that stalls after the HTTP upgrade, inside multistream-select and noise.
async fn our_timeouts_win_the_race_against_the_builders<R: Runtime>() {
    let hold = Duration::from_secs(14);
    let limit = Duration::from_secs(13);
    let mut cases = Vec::new();
    for build in builds::<R>() {
        let target: Multiaddr = "/ip4/127.0.0.1/tcp/9/ws".parse().unwrap();
        let silent = Config::default().with_proxy(fake_proxy(None, hold).parse().unwrap());
        let target_silent = target.clone();
        cases.push(
            async move {
                let (error, text) =
                    dial_error::<R>(build, silent, None, target_silent, limit).await;
                check(build, "a silent proxy", &error, &text, |e| {
                    matches!(
                        e,
                        Error::Proxy {
                            source: ProxyError::Timeout { .. },
                            ..
                        }
                    )
                });
            }
            .boxed(),
        );
        let reply: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
        let mute = Config::default().with_proxy(fake_proxy(Some(reply), hold).parse().unwrap());
        cases.push(
            async move {
                let (error, text) = dial_error::<R>(build, mute, None, target, limit).await;
                check(
                    build,
                    "a proxy that answers 200, then nothing",
                    &error,
                    &text,
                    |e| {
                        matches!(
                            e,
                            Error::Timeout { .. }
                                | Error::Proxy {
                                    source: ProxyError::Timeout { .. },
                                    ..
                                }
                        )
                    },
                );
            }
            .boxed(),
        );
        cases.push(
            async move {
                let mut node = swarm::<R>(build, Config::default());
                node.listen_on("/ip4/127.0.0.1/tcp/0/ws".parse().unwrap())
                    .unwrap();
                let target = ip_and_port(&first_listen_addr(&mut node).await).unwrap();
                std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(target).unwrap();
                    let _ = s.write_all(
                        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
                          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                          Sec-WebSocket-Version: 13\r\n\r\n",
                    );
                    std::thread::sleep(hold);
                });
                let error = within::<R, _>(limit, async {
                    loop {
                        if let SwarmEvent::IncomingConnectionError { error, .. } =
                            node.select_next_some().await
                        {
                            break error;
                        }
                    }
                })
                .await;
                let ours = Error::find(&error)
                    .unwrap_or_else(|| panic!("{build:?}: not our error: {}", Report(&error)));
                assert!(
                    matches!(
                        ours,
                        Error::Timeout {
                            stage: libp2p_ws::TimeoutStage::Upgrade,
                            ..
                        }
                    ),
                    "{build:?}: {ours:?}"
                );
                println!(
                    "a client stalling inside noise ({build:?}): {}",
                    Report(&error)
                );
            }
            .boxed(),
        );
    }
    futures::future::join_all(cases).await;
}

/// The complete stack keeps the upgrades' failures apart from the transport's and names the
/// step: a listener that completes the WebSocket upgrade and then answers multistream-select with
/// garbage fails the dial with `Error::Upgrade { step: Noise }`, shown once in a `{:#}` chain.
async fn an_upgrade_failure_names_its_step<R: Runtime>() {
    let (listener, addr) = raw_listener().await;
    let peer = spawn::<R, _>(async move {
        let mut raw = raw_accept(&listener).await;
        raw.send(&frame(true, 0, 2, None, b"\x13/not-multistream/9\n"))
            .await
            .unwrap();
        raw.read_to_close().await
    });
    let mut dialer = R::upgraded(
        &libp2p::identity::Keypair::generate_ed25519(),
        Config::default(),
    );
    let error = within::<R, _>(
        Duration::from_secs(10),
        dialer.dial(addr, dial_opts()).expect("dial accepted"),
    )
    .await
    .expect_err("garbage instead of multistream-select fails the dial");
    let ours = libp2p_ws::Error::from_io(&error);
    assert!(
        matches!(
            ours,
            Some(libp2p_ws::Error::Upgrade {
                step: libp2p_ws::UpgradeStep::Noise,
                ..
            })
        ),
        "{error:?}"
    );
    let rendered = format!("{:#}", anyhow::Error::new(error));
    println!("figure ({}): {rendered}", R::NAME);
    assert_eq!(rendered.matches("upgrade failed").count(), 1, "{rendered}");
    within::<R, _>(Duration::from_secs(10), peer).await;
}

/// A real failure rendered as anyhow renders a chain (`{:#}`): each message once. `listen_on` a port
/// in use on the upgraded stack (what `Swarm::new` and `SwarmBuilder` get): rust-libp2p's
/// `TransportError::Other` (empty), our `Error::Bind` (what failed), then the OS error (why).
/// (`SwarmBuilder::build` wraps every transport in its own `TransportTimeout`, whose error both
/// prints and sources its inner one: through a tokio swarm the message shows twice; that layer is
/// rust-libp2p's.)
async fn an_error_chain_shows_each_message_once<R: Runtime>() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut transport = R::upgraded(
        &libp2p::identity::Keypair::generate_ed25519(),
        Config::default(),
    );
    let error = transport
        .listen_on(
            ListenerId::next(),
            format!("/ip4/127.0.0.1/tcp/{port}/ws").parse().unwrap(),
        )
        .expect_err("the port is taken");
    let rendered = format!("{:#}", anyhow::Error::new(error));
    println!("figure ({}): {rendered}", R::NAME);
    let ours = format!("failed to listen on 127.0.0.1:{port}");
    assert_eq!(rendered.matches(&ours).count(), 1, "{rendered}");
    assert_eq!(
        rendered.matches("Address already in use").count(),
        1,
        "{rendered}"
    );
}

runtime_tests!(
    dial_errors_are_found_and_read_once,
    listen_errors_are_found_and_read_once,
    incoming_errors_are_found_and_read_once,
    our_timeouts_win_the_race_against_the_builders,
);

runtime_tests!(
    an_upgrade_failure_names_its_step,
    an_error_chain_shows_each_message_once,
);
