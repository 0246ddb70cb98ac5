//! Plain HTTP on a WebSocket port: requests that are not upgrades (health checks, the metrics
//! page, a user handler) on `/ws`, `/tls/ws` and a shared port are answered with HTTP/1.1 and a
//! `Content-Length`, and never reported to the listener as connections; upgrades on the same
//! port still work. Both runtimes, real sockets on 127.0.0.1, raw HTTP clients on threads.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{raw::*, shared_port::server_config, *};
use futures::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::rustls::{pki_types::ServerName, ClientConfig, ClientConnection, StreamOwned};
use libp2p_ws::{
    http::{Http, Request, Response, StatusCode},
    tls::dev::TestCa,
    Config, TlsConfig,
};

/// Sends `request` to `to` (over TLS for "localhost" with `tls`) on a thread and returns all it
/// read until the server closed.
async fn exchange(to: SocketAddr, request: String, tls: Option<Arc<ClientConfig>>) -> String {
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        let tcp = TcpStream::connect(to).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = Vec::new();
        match tls {
            Some(tls) => {
                let name = ServerName::try_from("localhost").unwrap();
                let conn = ClientConnection::new(tls, name).unwrap();
                let mut stream = StreamOwned::new(conn, tcp);
                stream.write_all(request.as_bytes()).unwrap();
                let _ = stream.read_to_end(&mut answer);
            }
            None => {
                let mut tcp = tcp;
                tcp.write_all(request.as_bytes()).unwrap();
                let _ = tcp.read_to_end(&mut answer);
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&answer).into_owned());
    });
    rx.await.unwrap()
}

fn get(method: &str, path: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: probe\r\n\r\n")
}

fn responders() -> Http {
    Http::new()
        .with_health()
        .with_handler(|request: Request<()>| {
            let agent = request
                .headers()
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            Response::builder()
                .status(StatusCode::ACCEPTED)
                .header("content-type", "text/plain")
                .body(format!("{} for {agent}", request.uri().path()).into_bytes())
                .unwrap()
        })
}

/// After the probes, a real dial: it must be the first connection the listener reports (a
/// reported probe would come first, as an error).
async fn next_report_is_a_real_dial<R: Runtime>(server: &mut Server<R>, dialer: Config) {
    let mut client = dial::<R>(dialer, server.addr.clone()).await.expect("dial");
    let mut accepted = server.next_ok().await;
    client.write_all(b"ping").await.unwrap();
    client.flush().await.unwrap();
    let mut buf = [0u8; 4];
    accepted.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

async fn health_and_handler_answer_on_ws_and_are_not_reported<R: Runtime>() {
    within::<R, _>(Duration::from_secs(30), async {
        let config = Config::default().with_http(responders());
        let mut server = Server::<R>::plain(config).await;
        let health = exchange(server.socket, get("GET", "/healthz"), None).await;
        assert_eq!(
            health,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncache-control: \
             no-store\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"
        );
        let head = exchange(server.socket, get("HEAD", "/healthz"), None).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.ends_with("content-length: 3\r\nconnection: close\r\n\r\n"),
            "{head}"
        );
        let post = exchange(server.socket, get("POST", "/healthz"), None).await;
        assert!(
            post.starts_with("HTTP/1.1 405 Method Not Allowed\r\nallow: GET, HEAD\r\n"),
            "{post}"
        );
        let handled = exchange(server.socket, get("GET", "/status?x=1"), None).await;
        assert!(
            handled.starts_with("HTTP/1.1 202 Accepted\r\n"),
            "{handled}"
        );
        assert!(handled.ends_with("\r\n\r\n/status for probe"), "{handled}");
        // A request with a body is answered from its head (the body is not read).
        let body = "x".repeat(32 * 1024);
        let upload = format!(
            "POST /upload HTTP/1.1\r\nHost: localhost\r\nUser-Agent: probe\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let uploaded = exchange(server.socket, upload, None).await;
        assert!(
            uploaded.ends_with("\r\n\r\n/upload for probe"),
            "{uploaded}"
        );
        next_report_is_a_real_dial(&mut server, Config::default()).await;
    })
    .await;
}

async fn without_responders_a_probe_gets_426_and_is_not_reported<R: Runtime>() {
    within::<R, _>(Duration::from_secs(30), async {
        let mut server = Server::<R>::plain(Config::default()).await;
        for (method, path, status) in [
            ("GET", "/", "426 Upgrade Required"),
            ("GET", "/healthz", "426 Upgrade Required"),
            ("HEAD", "/", "405 Method Not Allowed"),
        ] {
            let answer = exchange(server.socket, get(method, path), None).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}")),
                "{answer}"
            );
        }
        next_report_is_a_real_dial(&mut server, Config::default()).await;
    })
    .await;
}

async fn health_answers_over_tls_and_on_a_shared_port<R: Runtime>() {
    within::<R, _>(Duration::from_secs(30), async {
        let ca = TestCa::new("http test CA").unwrap();
        let tls = TlsConfig::new()
            .add_root_der(ca.certificate())
            .client_config()
            .unwrap();
        let config = server_config(&ca).with_http(Http::new().with_health_at("/up"));
        let mut server = Server::<R>::start(config.clone(), "/ip4/127.0.0.1/tcp/0/tls/ws").await;
        let up = exchange(server.socket, get("GET", "/up"), Some(tls.clone())).await;
        assert!(
            up.starts_with("HTTP/1.1 200 OK\r\n") && up.ends_with("ok\n"),
            "{up}"
        );
        let dialer = common::shared_port::client_config(&ca);
        next_report_is_a_real_dial(&mut server, dialer).await;

        // One port serving /tcp and /ws: the probe is routed to /ws and answered there.
        let mut node = common::shared_port::Node::start::<R>(config);
        let tcp = node.listen("/ip4/127.0.0.1/tcp/0").await.unwrap();
        let port = common::shared_port::port_of(&tcp.1);
        node.listen(&format!("/ip4/127.0.0.1/tcp/{port}/ws"))
            .await
            .unwrap();
        let to: SocketAddr = ([127, 0, 0, 1], port).into();
        let up = exchange(to, get("GET", "/up"), None).await;
        assert!(
            up.starts_with("HTTP/1.1 200 OK\r\n") && up.ends_with("ok\n"),
            "{up}"
        );
    })
    .await;
}

async fn the_metrics_page_serves_the_shared_registry<R: Runtime>() {
    within::<R, _>(Duration::from_secs(30), async {
        let mut registry = prometheus_client::registry::Registry::default();
        let config = Config::default().with_metrics(&mut registry);
        let registry = Arc::new(Mutex::new(registry));
        let config = config.with_http(Http::new().with_health().with_metrics(registry));
        let mut server = Server::<R>::plain(config).await;
        exchange(server.socket, get("GET", "/healthz"), None).await;
        // An upgrade whose request comes 400 ms after the connect: the handshake time counts
        // from the accept, not from when the listener reported it (after the request head).
        let to = server.socket;
        let (tx, rx) = futures::channel::oneshot::channel();
        std::thread::spawn(move || {
            let mut tcp = TcpStream::connect(to).unwrap();
            std::thread::sleep(Duration::from_millis(400));
            tcp.write_all(UPGRADE_REQUEST).unwrap();
            let mut head = [0u8; 12];
            tcp.read_exact(&mut head).unwrap();
            let _ = tx.send(head);
            std::thread::sleep(Duration::from_secs(2));
        });
        assert_eq!(&rx.await.unwrap(), b"HTTP/1.1 101");
        let _upgraded = server.next_ok().await;
        let page = exchange(server.socket, get("GET", "/metrics"), None).await;
        assert!(
            page.starts_with(
                "HTTP/1.1 200 OK\r\ncontent-type: application/openmetrics-text; version=1.0.0; \
                 charset=utf-8\r\n"
            ),
            "{page}"
        );
        // The health check before it was counted, by kind and status.
        assert!(
            page.contains("libp2p_websocket_http_responses_total{kind=\"ws\",status=\"200\"} 1"),
            "{page}"
        );
        assert!(page.ends_with("# EOF\n"), "{page}");
        let sum = page
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "libp2p_websocket_handshake_duration_seconds_sum{direction=\"inbound\",kind=\"ws\"} ",
                )
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no inbound handshake time: {page}"));
        assert!(sum >= 0.4, "the handshake time counts from the accept: {sum}");
    })
    .await;
}

runtime_tests!(
    health_and_handler_answer_on_ws_and_are_not_reported,
    without_responders_a_probe_gets_426_and_is_not_reported,
    health_answers_over_tls_and_on_a_shared_port,
    the_metrics_page_serves_the_shared_registry,
);
