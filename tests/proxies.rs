//! Dialing through real forward proxies, each started by its test on loopback:
//! tinyproxy (HTTP CONNECT, with and without basic auth) and microsocks (SOCKS5, with and without
//! username/password, `socks5h` names resolved by the proxy), over `/ws`, `/tls/ws`, `/tcp` and
//! `/dns/.../tls/ws`; `NO_PROXY`; a proxy that refuses, a 407, SOCKS failure codes, and a proxy
//! that never answers. The proxies connect out from their own loopback address (tinyproxy from
//! 127.0.0.2, microsocks from 127.0.0.3), so the listener's view of the dialer shows that the
//! connection went through the proxy. Each test runs on both runtimes.

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use common::{daemon::*, *};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::core::{multiaddr::Protocol, transport::TransportEvent, Multiaddr, Transport as _};
use libp2p_ws::{
    proxy::{Credentials, Proxy, ProxyEnv, ProxyError},
    tls::dev::TestCa,
    Config, Error, ServerCertificate, TlsConfig, TlsError,
};

/// A certificate for the origin's names, from `ca`.
fn origin_certificate(ca: &TestCa) -> ServerCertificate {
    let (chain, key) = ca
        .issue(&["localhost", "127.0.0.1", PROXY_ONLY_NAME])
        .expect("issue");
    ServerCertificate::from_der(chain, key).expect("usable certificate")
}

/// The origin: a `/ws` and a `/tls/ws` listener on 127.0.0.1, each connection's remote IP sent
/// to the test after its upgrade and the bytes it reads echoed back.
struct Origin {
    ws_port: u16,
    tls_port: u16,
    tcp_port: u16,
    remotes: futures::channel::mpsc::UnboundedReceiver<IpAddr>,
    _stop: futures::channel::oneshot::Sender<()>,
}

fn port_of(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a /tcp port")
}

fn ip_of(addr: &Multiaddr) -> IpAddr {
    addr.iter()
        .find_map(|p| match p {
            Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
            Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
            _ => None,
        })
        .expect("an IP address")
}

async fn origin<R: Runtime>(ca: &TestCa) -> Origin {
    let config = Config::default()
        .with_tls(TlsConfig::new().with_server_certificate(&origin_certificate(ca)));
    let mut listener = Transport::<R>::new(config);
    let (_, ws) = listen::<R>(&mut listener, "/ip4/127.0.0.1/tcp/0/ws").await;
    let (_, tls) = listen::<R>(&mut listener, "/ip4/127.0.0.1/tcp/0/tls/ws").await;
    let (_, tcp) = listen::<R>(&mut listener, "/ip4/127.0.0.1/tcp/0").await;
    let (tx, remotes) = futures::channel::mpsc::unbounded();
    let (stop, mut stop_rx) = futures::channel::oneshot::channel::<()>();
    R::spawn_detached(async move {
        use futures::FutureExt;
        loop {
            let event = futures::select! {
                _ = stop_rx => return,
                event = next_event::<R>(&mut listener).fuse() => event,
            };
            if let TransportEvent::Incoming {
                upgrade,
                send_back_addr,
                ..
            } = event
            {
                let tx = tx.clone();
                R::spawn_detached(async move {
                    if let Ok(mut conn) = upgrade.await {
                        let _ = tx.unbounded_send(ip_of(&send_back_addr));
                        let mut buf = [0u8; 5];
                        if conn.read_exact(&mut buf).await.is_ok() {
                            let _ = conn.write_all(&buf).await;
                            let _ = conn.flush().await;
                        }
                    }
                });
            }
        }
    });
    Origin {
        ws_port: port_of(&ws),
        tls_port: port_of(&tls),
        tcp_port: port_of(&tcp),
        remotes,
        _stop: stop,
    }
}

impl Origin {
    /// `template` with `{ws}`, `{tls}` and `{tcp}` replaced by the listeners' ports.
    fn addr(&self, template: &str) -> Multiaddr {
        template
            .replace("{ws}", &self.ws_port.to_string())
            .replace("{tcp}", &self.tcp_port.to_string())
            .replace("{tls}", &self.tls_port.to_string())
            .parse()
            .expect("valid multiaddr")
    }
}

/// A client config that trusts `ca` and dials through `proxy`.
fn via(ca: &TestCa, proxy: &str) -> Config {
    Config::default()
        .with_tls(TlsConfig::new().add_root_der(ca.certificate()))
        .with_proxy(proxy.parse().expect("proxy URL"))
}

async fn dial<R: Runtime>(config: Config, addr: Multiaddr) -> Result<Output<R>, Error> {
    let mut transport = Transport::<R>::new(config);
    transport
        .dial(addr, dial_opts())
        .expect("dial accepted")
        .await
}

/// Dials `addr`, echoes five bytes through the connection, and returns the address the origin
/// saw the connection come from.
async fn dial_and_echo<R: Runtime>(origin: &mut Origin, config: Config, template: &str) -> IpAddr {
    use futures::StreamExt;
    let addr = origin.addr(template);
    let mut conn = dial::<R>(config, addr.clone())
        .await
        .unwrap_or_else(|e| panic!("dial {addr} ({}): {:#}", R::NAME, anyhow::Error::new(e)));
    conn.write_all(b"hello").await.expect("write");
    conn.flush().await.expect("flush");
    let mut echo = [0u8; 5];
    conn.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"hello");
    origin
        .remotes
        .next()
        .await
        .expect("the origin saw the connection")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn proxy_error<T: std::fmt::Debug>(result: Result<T, Error>) -> ProxyError {
    match result {
        Err(Error::Proxy { source, .. }) => source,
        Err(other) => panic!(
            "expected a proxy error, got {:#}",
            anyhow::Error::new(other)
        ),
        Ok(_) => panic!("expected a proxy error, the dial succeeded"),
    }
}

/// HTTP CONNECT without auth: `/ws`, `/tls/ws` (TLS and its certificate check end to end with
/// the origin) and `/dns/localhost/.../tls/ws` (the name goes to the proxy, SNI and `Host` are the
/// name) all arrive at the origin from the proxy's address.
async fn http_connect_carries_ws_tls_ws_and_dns<R: Runtime>() {
    let ca = TestCa::new("proxy test CA").unwrap();
    let proxy = tinyproxy(None);
    let mut origin = origin::<R>(&ca).await;
    let url = format!("http://{}", proxy.addr);
    for template in [
        "/ip4/127.0.0.1/tcp/{ws}/ws",
        "/ip4/127.0.0.1/tcp/{tls}/tls/ws",
        "/dns/localhost/tcp/{tls}/tls/ws",
        "/dns4/localhost/tcp/{tls}/wss",
        "/ip4/127.0.0.1/tcp/{tcp}",
    ] {
        let from = dial_and_echo::<R>(&mut origin, via(&ca, &url), template).await;
        assert_eq!(
            from,
            ip(TINYPROXY_SOURCE),
            "{template} came through tinyproxy"
        );
    }
    let log = proxy.read("tinyproxy.log");
    assert!(
        log.contains("CONNECT"),
        "tinyproxy logged the tunnels: {log}"
    );
    // Certificate verification is still with the origin: a client that does not trust the CA
    // fails on the origin's certificate, through the tunnel.
    let untrusting = Config::default().with_proxy(url.parse().unwrap());
    match dial::<R>(untrusting, origin.addr("/dns/localhost/tcp/{tls}/tls/ws")).await {
        Err(Error::Tls(TlsError::UnknownIssuer { server_name })) => {
            assert_eq!(server_name, "localhost")
        }
        Err(e) => panic!("expected UnknownIssuer, got {:#}", anyhow::Error::new(e)),
        Ok(_) => panic!("expected UnknownIssuer, the dial succeeded"),
    }
}

/// HTTP CONNECT with basic auth: the right credentials open the tunnel; none, or wrong ones, get
/// a 407 that says which.
async fn http_connect_with_basic_auth<R: Runtime>() {
    let ca = TestCa::new("proxy test CA").unwrap();
    let proxy = tinyproxy(Some(("alice", "s3cret")));
    let mut origin = origin::<R>(&ca).await;
    let good = format!("http://alice:s3cret@{}", proxy.addr);
    let from = dial_and_echo::<R>(
        &mut origin,
        via(&ca, &good),
        "/ip4/127.0.0.1/tcp/{tls}/tls/ws",
    )
    .await;
    assert_eq!(from, ip(TINYPROXY_SOURCE));

    let none = format!("http://{}", proxy.addr);
    let result = dial::<R>(via(&ca, &none), origin.addr("/ip4/127.0.0.1/tcp/{ws}/ws")).await;
    match proxy_error(result) {
        ProxyError::AuthRequired {
            status: 407,
            sent_credentials: false,
            challenge,
        } => assert!(challenge.unwrap_or_default().starts_with("Basic")),
        other => panic!("expected a 407, got {other:?}"),
    }
    let wrong = format!("http://alice:wrong@{}", proxy.addr);
    let result = dial::<R>(via(&ca, &wrong), origin.addr("/ip4/127.0.0.1/tcp/{ws}/ws")).await;
    let error = proxy_error(result);
    assert!(
        matches!(
            error,
            ProxyError::AuthRequired {
                sent_credentials: true,
                ..
            }
        ),
        "{error:?}"
    );
    // tinyproxy answers wrong credentials with 401 (others with 407).
    assert!(
        error.to_string().contains("refused the credentials"),
        "{error}"
    );
}

/// SOCKS5 without and with username/password, over `/ws` and `/tls/ws`; a missing or wrong
/// password is a typed error.
async fn socks5_with_and_without_auth<R: Runtime>() {
    let ca = TestCa::new("proxy test CA").unwrap();
    let mut origin = origin::<R>(&ca).await;
    {
        let proxy = microsocks(None);
        for scheme in ["socks5", "socks5h"] {
            let url = format!("{scheme}://{}", proxy.addr);
            for template in [
                "/ip4/127.0.0.1/tcp/{ws}/ws",
                "/ip4/127.0.0.1/tcp/{tls}/tls/ws",
                "/dns/localhost/tcp/{tls}/tls/ws",
                "/ip4/127.0.0.1/tcp/{tcp}",
                "/dns/localhost/tcp/{tcp}",
            ] {
                let from = dial_and_echo::<R>(&mut origin, via(&ca, &url), template).await;
                assert_eq!(from, ip(MICROSOCKS_SOURCE), "{scheme} {template}");
            }
        }
    }
    let proxy = microsocks(Some(("bob", "pa55")));
    let good = format!("socks5h://bob:pa55@{}", proxy.addr);
    let from = dial_and_echo::<R>(
        &mut origin,
        via(&ca, &good),
        "/dns/localhost/tcp/{tls}/tls/ws",
    )
    .await;
    assert_eq!(from, ip(MICROSOCKS_SOURCE));
    let none = format!("socks5h://{}", proxy.addr);
    let error =
        proxy_error(dial::<R>(via(&ca, &none), origin.addr("/ip4/127.0.0.1/tcp/{ws}/ws")).await);
    assert!(
        matches!(
            error,
            ProxyError::SocksNoAcceptableMethod {
                offered_credentials: false
            }
        ),
        "{error:?}"
    );
    let wrong = format!("socks5h://bob:nope@{}", proxy.addr);
    let error =
        proxy_error(dial::<R>(via(&ca, &wrong), origin.addr("/ip4/127.0.0.1/tcp/{ws}/ws")).await);
    assert!(matches!(error, ProxyError::SocksAuthFailed), "{error:?}");
}

/// `socks5h` sends names to the proxy: a name only the proxy can resolve is dialed (TLS verified
/// for that name), while a direct dial and a `socks5` dial (which resolve here) fail on DNS. So no
/// local lookup happened for the `socks5h` dial.
async fn socks5h_resolves_names_at_the_proxy<R: Runtime>() {
    let ca = TestCa::new("proxy test CA").unwrap();
    let mut origin = origin::<R>(&ca).await;
    let proxy = microsocks(None);
    let template = format!("/dns/{PROXY_ONLY_NAME}/tcp/{{tls}}/tls/ws");
    let url = format!("socks5h://{}", proxy.addr);
    let from = dial_and_echo::<R>(&mut origin, via(&ca, &url), &template).await;
    assert_eq!(from, ip(MICROSOCKS_SOURCE));

    let direct = Config::default().with_tls(TlsConfig::new().add_root_der(ca.certificate()));
    let local = format!("socks5://{}", proxy.addr);
    for (how, config) in [("direct", direct), ("socks5", via(&ca, &local))] {
        match dial::<R>(config, origin.addr(&template)).await {
            Err(Error::Dns { name, .. }) => assert_eq!(name, PROXY_ONLY_NAME),
            Err(e) => panic!(
                "{how}: expected a DNS error, got {:#}",
                anyhow::Error::new(e)
            ),
            Ok(_) => panic!("{how}: {PROXY_ONLY_NAME} resolved here; the test proves nothing"),
        }
    }
}

/// A proxy that cannot reach the target says so: SOCKS5 reply code 5 (connection refused) from
/// microsocks, an HTTP error status from tinyproxy.
async fn proxies_report_unreachable_targets<R: Runtime>() {
    let closed = free_port("127.0.0.1");
    let target: Multiaddr = format!("/ip4/127.0.0.1/tcp/{closed}/ws").parse().unwrap();
    let socks = microsocks(None);
    let error = proxy_error(
        dial::<R>(
            Config::default().with_proxy(format!("socks5://{}", socks.addr).parse().unwrap()),
            target.clone(),
        )
        .await,
    );
    assert!(
        matches!(error, ProxyError::SocksFailure { code: 5 }),
        "{error:?}"
    );
    assert!(error.to_string().contains("connection refused"), "{error}");
    let http = tinyproxy(None);
    let error = proxy_error(
        dial::<R>(
            Config::default().with_proxy(format!("http://{}", http.addr).parse().unwrap()),
            target,
        )
        .await,
    );
    assert!(
        matches!(
            error,
            ProxyError::Rejected {
                status: 500..=599,
                ..
            }
        ),
        "{error:?}"
    );
}

/// `NO_PROXY` (as curl reads it) sends the hosts it names directly; the rest go through
/// `HTTPS_PROXY`/`HTTP_PROXY`.
async fn no_proxy_bypasses_the_proxy<R: Runtime>() {
    let ca = TestCa::new("proxy test CA").unwrap();
    let proxy = tinyproxy(None);
    let mut origin = origin::<R>(&ca).await;
    let url = format!("http://{}", proxy.addr);
    let env = ProxyEnv::from_lookup(|name| match name {
        "HTTPS_PROXY" | "HTTP_PROXY" => Some(url.clone()),
        "NO_PROXY" => Some("example.com, .localhost".into()),
        _ => None,
    })
    .unwrap();
    let config = Config::default()
        .with_tls(TlsConfig::new().add_root_der(ca.certificate()))
        .with_proxy_env(env);
    for (template, expected) in [
        ("/dns/localhost/tcp/{tls}/tls/ws", "127.0.0.1"),
        ("/dns/localhost/tcp/{ws}/ws", "127.0.0.1"),
        ("/ip4/127.0.0.1/tcp/{tls}/tls/ws", TINYPROXY_SOURCE),
        ("/ip4/127.0.0.1/tcp/{ws}/ws", TINYPROXY_SOURCE),
    ] {
        let from = dial_and_echo::<R>(&mut origin, config.clone(), template).await;
        assert_eq!(from, ip(expected), "{template}");
    }
    // A CIDR in NO_PROXY.
    let env = ProxyEnv::from_lookup(|name| match name {
        "ALL_PROXY" => Some(url.clone()),
        "NO_PROXY" => Some("127.0.0.0/8".into()),
        _ => None,
    })
    .unwrap();
    let config = Config::default().with_proxy_env(env);
    let from = dial_and_echo::<R>(&mut origin, config, "/ip4/127.0.0.1/tcp/{ws}/ws").await;
    assert_eq!(from, ip("127.0.0.1"));
}

/// A proxy port where nothing listens: a typed error naming the proxy, with the OS's refusal.
async fn a_refusing_proxy_is_a_typed_error<R: Runtime>() {
    let port = free_port("127.0.0.1");
    let url = format!("http://127.0.0.1:{port}");
    match dial::<R>(
        Config::default().with_proxy(url.parse().unwrap()),
        "/ip4/127.0.0.1/tcp/9/ws".parse().unwrap(),
    )
    .await
    {
        Err(error @ Error::Proxy { .. }) => {
            let text = format!("{:#}", anyhow::Error::new(error));
            assert!(text.contains(&url), "names the proxy: {text}");
            assert!(text.contains("could not connect to the proxy"), "{text}");
        }
        Err(e) => panic!("expected a proxy error, got {:#}", anyhow::Error::new(e)),
        Ok(_) => panic!("the dial succeeded"),
    }
}

/// A proxy that accepts and never answers: the dial fails at the handshake timeout with a typed
/// proxy timeout, for HTTP CONNECT and SOCKS5 alike.
async fn a_silent_proxy_is_bounded_by_the_handshake_timeout<R: Runtime>() {
    // The kernel completes the connections (backlog); nobody ever reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = silent.local_addr().unwrap();
    let limit = Duration::from_millis(600);
    for scheme in ["http", "socks5h"] {
        let config = Config::default()
            .with_handshake_timeout(limit)
            .with_proxy(format!("{scheme}://{addr}").parse().unwrap());
        let start = Instant::now();
        let error =
            proxy_error(dial::<R>(config, "/dns/localhost/tcp/9/tls/ws".parse().unwrap()).await);
        let took = start.elapsed();
        assert!(
            matches!(error, ProxyError::Timeout { after } if after == limit),
            "{scheme}: {error:?}"
        );
        assert!(took >= limit && took < limit * 4, "{scheme}: took {took:?}");
    }
    drop(silent);
}

/// A proxy whose answer never ends its head is cut off at the head size limit.
async fn an_endless_proxy_head_is_bounded<R: Runtime>() {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let feeder = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = server.accept().unwrap();
        let mut request = [0u8; 256];
        let _ = conn.read(&mut request);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\n");
        let line = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        for _ in 0..1000 {
            if conn.write_all(line).is_err() {
                break;
            }
        }
    });
    let config = Config::default()
        .with_max_head_size(1024)
        .with_proxy(format!("http://{addr}").parse().unwrap());
    let error = proxy_error(dial::<R>(config, "/ip4/127.0.0.1/tcp/9/ws".parse().unwrap()).await);
    assert!(
        matches!(error, ProxyError::HeadTooLarge { limit: 1024 }),
        "{error:?}"
    );
    feeder.join().unwrap();
}

/// Credentials given in code rather than in the URL work the same.
async fn credentials_given_in_code<R: Runtime>() {
    let ca = TestCa::new("proxy test CA").unwrap();
    let proxy = tinyproxy(Some(("carol", "c0de")));
    let mut origin = origin::<R>(&ca).await;
    let config = Config::default()
        .with_tls(TlsConfig::new().add_root_der(ca.certificate()))
        .with_proxy(
            Proxy::parse(&format!("http://{}", proxy.addr))
                .unwrap()
                .with_credentials(Credentials::new("carol", "c0de")),
        );
    let from = dial_and_echo::<R>(&mut origin, config, "/ip4/127.0.0.1/tcp/{ws}/ws").await;
    assert_eq!(from, ip(TINYPROXY_SOURCE));
}

runtime_tests!(
    http_connect_carries_ws_tls_ws_and_dns,
    http_connect_with_basic_auth,
    socks5_with_and_without_auth,
    socks5h_resolves_names_at_the_proxy,
    proxies_report_unreachable_targets,
    no_proxy_bypasses_the_proxy,
    a_refusing_proxy_is_a_typed_error,
    a_silent_proxy_is_bounded_by_the_handshake_timeout,
    an_endless_proxy_head_is_bounded,
    credentials_given_in_code,
);
