//! Listeners behind real reverse proxies, each started by its test on loopback:
//! haproxy with `send-proxy` and `send-proxy-v2`, nginx terminating TLS (a test CA) with
//! `X-Forwarded-For`/`X-Forwarded-Proto` (http) and with `proxy_protocol` (stream), in front of a
//! loopback `/ws` listener that trusts only the proxy's own source address. Clients come from
//! other loopback addresses (a raw client bound to 127.0.0.2, or our dialer through microsocks,
//! which connects out from 127.0.0.3), and the listener's `send_back_addr` must be that address.
//! The same headers from an untrusted client are ignored; malformed ones are refused. Each test
//! runs on both runtimes.

mod common;

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use common::{daemon::*, *};
use libp2p::core::{multiaddr::Protocol, transport::TransportEvent, Multiaddr, Transport as _};
use libp2p_ws::{
    forwarded::{ProxyProtocol, ReverseProxy},
    tls::dev::{chain_pem, key_pem, TestCa},
    Config, TlsConfig,
};

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// What the listener reported for one connection: its `send_back_addr` and how its upgrade ended.
struct Seen {
    send_back_addr: Multiaddr,
    upgrade: Result<(), String>,
}

/// A `/ws` listener on 127.0.0.1 trusting `trusted` as reverse proxies with PROXY protocol
/// `mode`; reports every connection.
struct Listener {
    port: u16,
    seen: futures::channel::mpsc::UnboundedReceiver<Seen>,
    /// Each `Incoming` event's `send_back_addr`, when the event comes (before the upgrade ends).
    incoming: futures::channel::mpsc::UnboundedReceiver<Multiaddr>,
    _stop: futures::channel::oneshot::Sender<()>,
}

async fn start_listener<R: Runtime>(trusted: &str, mode: ProxyProtocol) -> Listener {
    start_listener_with::<R>(Config::default(), trusted, mode).await
}

async fn start_listener_with<R: Runtime>(
    config: Config,
    trusted: &str,
    mode: ProxyProtocol,
) -> Listener {
    let config = config
        .with_handshake_timeout(Duration::from_secs(5))
        .with_reverse_proxy(
            ReverseProxy::new([trusted.parse().unwrap()]).with_proxy_protocol(mode),
        );
    let mut transport = Transport::<R>::new(config);
    let (_, addr) = listen::<R>(&mut transport, "/ip4/127.0.0.1/tcp/0/ws").await;
    let port = addr
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();
    let (tx, seen) = futures::channel::mpsc::unbounded();
    let (incoming_tx, incoming) = futures::channel::mpsc::unbounded();
    let (stop, mut stop_rx) = futures::channel::oneshot::channel::<()>();
    R::spawn_detached(async move {
        use futures::FutureExt;
        loop {
            let event = futures::select! {
                _ = stop_rx => return,
                event = next_event::<R>(&mut transport).fuse() => event,
            };
            if let TransportEvent::Incoming {
                upgrade,
                send_back_addr,
                ..
            } = event
            {
                let _ = incoming_tx.unbounded_send(send_back_addr.clone());
                let tx = tx.clone();
                R::spawn_detached(async move {
                    let result = upgrade.await;
                    let upgrade = match result {
                        Ok(conn) => {
                            // Hold the connection until the client is done with it.
                            std::mem::forget(conn);
                            Ok(())
                        }
                        Err(e) => Err(format!("{:?}", e)),
                    };
                    let _ = tx.unbounded_send(Seen {
                        send_back_addr,
                        upgrade,
                    });
                });
            }
        }
    });
    Listener {
        port,
        seen,
        incoming,
        _stop: stop,
    }
}

impl Listener {
    async fn next(&mut self) -> Seen {
        use futures::StreamExt;
        self.seen.next().await.expect("the listener reports")
    }
}

/// A blocking raw client from `source`: connects to `to`, sends `preamble` then the upgrade
/// request with `extra` headers, and returns the response head (or what arrived before the
/// close) and its own port. Runs on a thread, so the listener keeps running.
async fn raw_upgrade<R: Runtime>(
    source: &str,
    to: SocketAddr,
    preamble: Vec<u8>,
    extra: &str,
) -> (String, u16) {
    let source: IpAddr = source.parse().unwrap();
    let extra = extra.to_string();
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::new(source, 0).into()).unwrap();
        socket.connect(&to.into()).unwrap();
        let mut stream: TcpStream = socket.into();
        let port = stream.local_addr().unwrap().port();
        stream
            .set_read_timeout(Some(Duration::from_secs(8)))
            .unwrap();
        let mut request = preamble;
        request.extend_from_slice(UPGRADE.as_bytes());
        request.extend_from_slice(extra.as_bytes());
        request.extend_from_slice(b"\r\n");
        stream.write_all(&request).unwrap();
        let mut response = Vec::new();
        let mut buf = [0u8; 1024];
        while !response.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
        // The listener's upgrade ends when it has sent its answer: closing now changes nothing.
        let _ = tx.send((String::from_utf8_lossy(&response).into_owned(), port));
    });
    rx.await.expect("the raw client finishes")
}

fn expected(ip: &str, port: u16, tls: bool) -> Multiaddr {
    let security = if tls { "tls/ws" } else { "ws" };
    format!("/ip4/{ip}/tcp/{port}/{security}").parse().unwrap()
}

/// haproxy `send-proxy` (v1) and `send-proxy-v2`: the listener (PROXY protocol required)
/// reports the raw client's own address and port, 127.0.0.2, not haproxy's 127.0.0.11.
async fn haproxy_send_proxy_v1_and_v2<R: Runtime>() {
    for send in ["send-proxy", "send-proxy-v2"] {
        let mut listener =
            start_listener::<R>(&format!("{HAPROXY_SOURCE}/32"), ProxyProtocol::Required).await;
        let proxy = haproxy(listener.port, send);
        let (response, port) = raw_upgrade::<R>("127.0.0.2", proxy.addr, Vec::new(), "").await;
        assert!(response.starts_with("HTTP/1.1 101"), "{send}: {response}");
        let seen = listener.next().await;
        assert_eq!(seen.upgrade, Ok(()), "{send}");
        assert_eq!(
            seen.send_back_addr,
            expected("127.0.0.2", port, false),
            "{send}"
        );
    }
}

/// nginx terminating TLS: over its http proxy (X-Forwarded-For, X-Forwarded-Proto: https) the
/// listener reports the client as `/tls/ws` with port 0 (the header has none); over its stream
/// proxy (PROXY v1) as `/ws` with the client's port. The client is our dialer, through microsocks
/// (connecting from 127.0.0.3), verifying nginx's certificate from the test CA.
async fn nginx_tls_with_x_forwarded_for_and_proxy_protocol<R: Runtime>() {
    let ca = TestCa::new("reverse proxy test CA").unwrap();
    let (chain, key) = ca.issue(&["localhost"]).unwrap();
    let socks = microsocks(None);
    let client = Config::default()
        .with_tls(TlsConfig::new().add_root_der(ca.certificate()))
        .with_proxy(format!("socks5h://{}", socks.addr).parse().unwrap());

    let mut http_listener =
        start_listener::<R>(&format!("{NGINX_SOURCE}/32"), ProxyProtocol::Off).await;
    let (nginx_http, _) = nginx(http_listener.port, &chain_pem(&chain), &key_pem(&key));
    let addr: Multiaddr = format!("/dns/localhost/tcp/{}/tls/ws", nginx_http.addr.port())
        .parse()
        .unwrap();
    let conn = Transport::<R>::new(client.clone())
        .dial(addr, dial_opts())
        .unwrap()
        .await
        .unwrap_or_else(|e| panic!("dial through nginx (http): {:#}", anyhow::Error::new(e)));
    let seen = http_listener.next().await;
    assert_eq!(seen.upgrade, Ok(()));
    assert_eq!(seen.send_back_addr, expected(MICROSOCKS_SOURCE, 0, true));
    drop(conn);
    drop(nginx_http);

    let mut stream_listener =
        start_listener::<R>(&format!("{NGINX_SOURCE}/32"), ProxyProtocol::Required).await;
    let (nginx_stream, stream_addr) =
        nginx(stream_listener.port, &chain_pem(&chain), &key_pem(&key));
    let addr: Multiaddr = format!("/dns/localhost/tcp/{}/tls/ws", stream_addr.port())
        .parse()
        .unwrap();
    let conn = Transport::<R>::new(client)
        .dial(addr, dial_opts())
        .unwrap()
        .await
        .unwrap_or_else(|e| panic!("dial through nginx (stream): {:#}", anyhow::Error::new(e)));
    let seen = stream_listener.next().await;
    assert_eq!(seen.upgrade, Ok(()));
    let reported = seen.send_back_addr.to_string();
    assert!(
        reported.starts_with(&format!("/ip4/{MICROSOCKS_SOURCE}/tcp/"))
            && reported.ends_with("/ws")
            && !reported.ends_with("/tcp/0/ws"),
        "{reported}"
    );
    drop(conn);
    drop(nginx_stream);
}

/// The same headers sent directly by a client that is not a trusted proxy are ignored: a PROXY
/// header, `Forwarded`, `X-Forwarded-For`, `X-Real-IP` and `X-Forwarded-Proto` from 127.0.0.2
/// leave its own address (and `/ws`).
async fn headers_from_an_untrusted_client_are_ignored<R: Runtime>() {
    let mut listener =
        start_listener::<R>(&format!("{HAPROXY_SOURCE}/32"), ProxyProtocol::Optional).await;
    let to: SocketAddr = ([127, 0, 0, 1], listener.port).into();
    let (response, port) = raw_upgrade::<R>(
        "127.0.0.2",
        to,
        b"PROXY TCP4 6.6.6.6 127.0.0.1 6666 443\r\n".to_vec(),
        "Forwarded: for=7.7.7.7;proto=https\r\nX-Forwarded-For: 8.8.8.8\r\nX-Real-IP: 9.9.9.9\r\nX-Forwarded-Proto: https\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    let seen = listener.next().await;
    assert_eq!(seen.upgrade, Ok(()));
    assert_eq!(seen.send_back_addr, expected("127.0.0.2", port, false));
    // From the trusted address, the one believed header (X-Forwarded-For by default) names the
    // client; its Forwarded header is not read.
    let (response, _) = raw_upgrade::<R>(
        HAPROXY_SOURCE,
        to,
        Vec::new(),
        "Forwarded: for=\"7.7.7.7:77\";proto=https\r\nX-Forwarded-For: 8.8.8.8\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    assert_eq!(
        listener.next().await.send_back_addr,
        expected("8.8.8.8", 0, false)
    );
}

/// From a trusted proxy, a malformed forwarding header is answered 400 and the upgrade fails
/// with `HandshakeError::Forwarded`; a malformed PROXY header, or none where it is required,
/// closes the connection without an upgrade.
async fn malformed_headers_from_a_trusted_proxy_are_refused<R: Runtime>() {
    let mut listener =
        start_listener::<R>(&format!("{HAPROXY_SOURCE}/32"), ProxyProtocol::Optional).await;
    let to: SocketAddr = ([127, 0, 0, 1], listener.port).into();
    let (response, _) = raw_upgrade::<R>(
        HAPROXY_SOURCE,
        to,
        Vec::new(),
        "X-Forwarded-For: 1.2.3.4, evil\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    let seen = listener.next().await;
    let error = seen.upgrade.expect_err("refused");
    assert!(
        error.contains("Forwarded") && error.contains("X-Forwarded-For"),
        "{error}"
    );

    let (response, _) = raw_upgrade::<R>(
        HAPROXY_SOURCE,
        to,
        b"PROXY TCP4 1.2.3.4 nonsense\r\n".to_vec(),
        "",
    )
    .await;
    assert_eq!(response, "", "closed without an answer");

    let mut required =
        start_listener::<R>(&format!("{HAPROXY_SOURCE}/32"), ProxyProtocol::Required).await;
    let to: SocketAddr = ([127, 0, 0, 1], required.port).into();
    let (response, _) = raw_upgrade::<R>(HAPROXY_SOURCE, to, Vec::new(), "").await;
    assert_eq!(response, "", "closed without an answer");
    // Neither reached an Incoming event; a good one afterwards is the next thing reported.
    let (response, port) = raw_upgrade::<R>(
        HAPROXY_SOURCE,
        to,
        b"PROXY TCP4 127.0.0.5 127.0.0.1 5555 80\r\n".to_vec(),
        "",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    assert_ne!(port, 5555);
    assert_eq!(
        required.next().await.send_back_addr,
        expected("127.0.0.5", 5555, false)
    );
}

/// A connection from `source` to `to` that sends `bytes` and then nothing (blocking connect and
/// write: loopback, into the socket buffer).
fn stalled(source: &str, to: SocketAddr, bytes: &[u8]) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(source.parse().unwrap(), 0).into())
        .unwrap();
    socket.connect(&to.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.write_all(bytes).unwrap();
    stream
}

/// Whether the listener closes `stream` within `limit` (read on a thread).
async fn closed_within(mut stream: TcpStream, limit: Duration) -> bool {
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        stream.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 64];
        let closed = match stream.read(&mut buf) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        };
        let _ = tx.send(closed);
    });
    rx.await.unwrap()
}

/// The per-address pending-handshake limit applies to the client a trusted proxy names, not to
/// the proxy: with one pending handshake per address, the proxy's address holds three, the
/// second naming 127.0.0.5 is closed at once, and one naming 127.0.0.6 is admitted.
async fn per_address_limits_apply_to_the_client_a_proxy_names<R: Runtime>() {
    let config = Config::default().with_max_pending_handshakes_per_ip(1);
    let mut listener = start_listener_with::<R>(
        config,
        &format!("{HAPROXY_SOURCE}/32"),
        ProxyProtocol::Required,
    )
    .await;
    let to: SocketAddr = ([127, 0, 0, 1], listener.port).into();
    let partial = |client: &str, port: u16| {
        format!("PROXY TCP4 {client} 127.0.0.1 {port} 80\r\nGET / HTTP/1.1\r\nHost: x\r\n")
            .into_bytes()
    };
    use futures::StreamExt;
    // A WebSocket listener reports a connection once its request head is in: these stalled
    // requests are reported when they time out, in the order they came.
    let _first = stalled(HAPROXY_SOURCE, to, &partial("127.0.0.5", 5001));
    R::sleep(Duration::from_millis(500)).await;
    let second = stalled(HAPROXY_SOURCE, to, &partial("127.0.0.5", 5002));
    assert!(
        closed_within(second, Duration::from_secs(3)).await,
        "the second pending handshake of 127.0.0.5 is closed at once"
    );
    let _third = stalled(HAPROXY_SOURCE, to, &partial("127.0.0.6", 5003));
    assert_eq!(
        listener.incoming.next().await.unwrap(),
        expected("127.0.0.5", 5001, false)
    );
    assert_eq!(
        listener.incoming.next().await.unwrap(),
        expected("127.0.0.6", 5003, false),
        "the next Incoming is 127.0.0.6's (127.0.0.5's second never got one)"
    );
}

/// Blocking raw TLS clients from `source` through nginx's http proxy at `to` (for "localhost",
/// with `tls`), one per entry of `extras`: each sends the upgrade request with those extra header
/// lines and reads the response head. All stay open until the last has its answer. Runs on a
/// thread, so the listener keeps running; returns the answers' heads.
async fn tls_upgrades(
    source: &str,
    to: SocketAddr,
    tls: std::sync::Arc<futures_rustls::rustls::ClientConfig>,
    extras: Vec<String>,
) -> Vec<String> {
    use futures_rustls::rustls::{pki_types::ServerName, ClientConnection, StreamOwned};
    let source: IpAddr = source.parse().unwrap();
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        let mut open = Vec::new();
        let mut answers = Vec::new();
        for extra in extras {
            let tcp = raw::connect_from(source, to).expect("connect to nginx");
            tcp.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
            let session =
                ClientConnection::new(tls.clone(), ServerName::try_from("localhost").unwrap())
                    .expect("a TLS session");
            let mut stream = StreamOwned::new(session, tcp);
            let request = format!("{UPGRADE}{extra}\r\n");
            let mut response = Vec::new();
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut buf = [0u8; 1024];
                while !response.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => response.extend_from_slice(&buf[..n]),
                    }
                }
            }
            answers.push(String::from_utf8_lossy(&response).into_owned());
            open.push(stream);
        }
        let _ = tx.send(answers);
    });
    rx.await.expect("the TLS clients finish")
}

/// nginx's http proxy passes a client's own `Forwarded` header on untouched (unless told to clear
/// it, as the README's configuration now does; this nginx is not), and the listener believes only
/// `X-Forwarded-For`, which nginx sets: a raw client on 127.0.0.5 sending
/// `Forwarded: for=6.6.6.6;proto=https` is reported as itself (it was `/ip4/6.6.6.6/tcp/0/tls/ws`),
/// and of 60 upgrades from it, each naming another `for=`, 16 (its share) are held inside noise
/// and the others are answered 503 before any `101` (all 60 were held). With the README's
/// configuration (clearing `Forwarded`) the client is reported as itself too.
async fn nginx_a_client_forwarded_header_steers_nothing<R: Runtime>() {
    let ca = TestCa::new("reverse proxy test CA").unwrap();
    let (chain, key) = ca.issue(&["localhost"]).unwrap();
    let (chain, key) = (chain_pem(&chain), key_pem(&key));
    let tls = TlsConfig::new()
        .add_root_der(ca.certificate())
        .client_config()
        .unwrap();
    let forged = "Forwarded: for=6.6.6.6;proto=https\r\n".to_string();
    let mut reported = Vec::new();
    for clear_unset in [false, true] {
        let mut listener =
            start_listener::<R>(&format!("{NGINX_SOURCE}/32"), ProxyProtocol::Off).await;
        let (nginx, _) = nginx_with(listener.port, &chain, &key, clear_unset);
        let answers =
            tls_upgrades("127.0.0.5", nginx.addr, tls.clone(), vec![forged.clone()]).await;
        assert!(answers[0].starts_with("HTTP/1.1 101"), "{}", answers[0]);
        let seen = listener.next().await;
        println!(
            "figure ({}): clear_unset {clear_unset}: reported as {}",
            R::NAME,
            seen.send_back_addr
        );
        reported.push((clear_unset, seen.send_back_addr));
    }

    // The share: the full stack, so that upgraded connections stay pending inside noise.
    let config =
        Config::default().with_reverse_proxy(ReverseProxy::new([format!("{NGINX_SOURCE}/32")
            .parse()
            .unwrap()]));
    let mut transport = R::upgraded(&libp2p::identity::Keypair::generate_ed25519(), config);
    let (_, addr) = listen_any(&mut transport, "/ip4/127.0.0.1/tcp/0/ws").await;
    let port = raw::socket_addr(&addr).port();
    let _stop = drive_listener::<R, _>(transport, |upgrade| {
        R::spawn_detached(async move {
            let _ = upgrade.await;
        })
    });
    let (nginx, _) = nginx_with(port, &chain, &key, false);
    let extras = (0..60)
        .map(|i| {
            format!(
                "Forwarded: for=6.6.{}.{};proto=https\r\n",
                i / 200,
                i % 200 + 1
            )
        })
        .collect();
    let answers = tls_upgrades("127.0.0.5", nginx.addr, tls, extras).await;
    let upgraded = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 101"))
        .count();
    let refused = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 503"))
        .count();
    println!(
        "figure ({}): 60 upgrades from one client through nginx, each with its own Forwarded: {upgraded} held (101), {refused} answered 503",
        R::NAME
    );
    for (clear_unset, addr) in reported {
        assert_eq!(
            addr,
            expected("127.0.0.5", 0, true),
            "clear_unset {clear_unset}"
        );
    }
    assert_eq!(upgraded, 16, "held to the client's share");
    assert_eq!(
        refused,
        44,
        "the others refused before a 101: {:?}",
        answers.last()
    );
}

/// With PROXY protocol off, a connection that starts with a PROXY header (v1 or v2) is closed
/// without an answer, as `ProxyProtocol::Off` documents (a v1 header was answered `400 Bad
/// Request`), whether it comes from a client (a port that serves one kind) or from a trusted
/// proxy (classified first).
async fn a_proxy_header_where_none_is_read_is_closed_unanswered<R: Runtime>() {
    let listener = start_listener::<R>(&format!("{HAPROXY_SOURCE}/32"), ProxyProtocol::Off).await;
    let to: SocketAddr = ([127, 0, 0, 1], listener.port).into();
    let v1 = b"PROXY TCP4 6.6.6.6 127.0.0.1 6666 443\r\n".to_vec();
    let v2 = raw::proxy_v2(([6, 6, 6, 6], 6666).into(), to);
    for source in ["127.0.0.2", HAPROXY_SOURCE] {
        for (version, preamble) in [("v1", &v1), ("v2", &v2)] {
            let (response, _) = raw_upgrade::<R>(source, to, preamble.clone(), "").await;
            assert_eq!(
                response, "",
                "{version} from {source}: closed without an answer"
            );
        }
    }
    let (response, _) = raw_upgrade::<R>("127.0.0.2", to, Vec::new(), "").await;
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
}

/// Behind real haproxy (`send-proxy-v2`, room for 400 connections), one client on 127.0.0.5 opens
/// 300 connections and sends nothing: haproxy sends each one's PROXY header at once, and the
/// listener charges the client's share as it reads the header, so at most 16 places are held (it
/// held 256, the whole listener, and every other client behind the proxy was refused); a second
/// client still upgrades through the same haproxy.
async fn haproxy_a_silent_client_holds_only_its_share<R: Runtime>() {
    let listener =
        start_listener::<R>(&format!("{HAPROXY_SOURCE}/32"), ProxyProtocol::Required).await;
    let proxy = haproxy_with(listener.port, "send-proxy-v2", 400);
    let to = proxy.addr;
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        let sockets: Vec<_> = (0..300)
            .filter_map(|_| raw::connect_from([127, 0, 0, 5].into(), to).ok())
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        let _ = tx.send((
            sockets.iter().filter(|s| raw::still_open(s)).count(),
            sockets,
        ));
    });
    let (held, sockets) = rx.await.expect("the client thread reports");
    println!(
        "figure ({}): one silent client behind haproxy send-proxy-v2 holds {held} of 300 places",
        R::NAME
    );
    let (response, _) = raw_upgrade::<R>("127.0.0.6", to, Vec::new(), "").await;
    drop(sockets);
    assert!(held <= 16, "one client held {held} places");
    assert!(
        response.starts_with("HTTP/1.1 101"),
        "another client: {response}"
    );
}

runtime_tests!(
    haproxy_a_silent_client_holds_only_its_share,
    nginx_a_client_forwarded_header_steers_nothing,
    a_proxy_header_where_none_is_read_is_closed_unanswered,
    per_address_limits_apply_to_the_client_a_proxy_names,
    haproxy_send_proxy_v1_and_v2,
    nginx_tls_with_x_forwarded_for_and_proxy_protocol,
    headers_from_an_untrusted_client_are_ignored,
    malformed_headers_from_a_trusted_proxy_are_refused,
);
