//! Listeners behind real reverse proxies (issue 14), each started by its test on loopback:
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
    // And the same from the trusted address is believed (Forwarded first).
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
        expected("7.7.7.7", 77, true)
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
    let _first = stalled(HAPROXY_SOURCE, to, &partial("127.0.0.5", 5001));
    assert_eq!(
        listener.incoming.next().await.unwrap(),
        expected("127.0.0.5", 5001, false)
    );
    let second = stalled(HAPROXY_SOURCE, to, &partial("127.0.0.5", 5002));
    assert!(
        closed_within(second, Duration::from_secs(3)).await,
        "the second pending handshake of 127.0.0.5 is closed at once"
    );
    let _third = stalled(HAPROXY_SOURCE, to, &partial("127.0.0.6", 5003));
    assert_eq!(
        listener.incoming.next().await.unwrap(),
        expected("127.0.0.6", 5003, false),
        "the next Incoming is 127.0.0.6's (127.0.0.5's second never got one)"
    );
}

runtime_tests!(
    per_address_limits_apply_to_the_client_a_proxy_names,
    haproxy_send_proxy_v1_and_v2,
    nginx_tls_with_x_forwarded_for_and_proxy_protocol,
    headers_from_an_untrusted_client_are_ignored,
    malformed_headers_from_a_trusted_proxy_are_refused,
);
