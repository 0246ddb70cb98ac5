//! Prometheus metrics over real sockets: a `/ws` and a `/tls/ws` connection both ways move bytes
//! and close, a dial to a closed port fails, a request for a wrong path fails its handshake; the
//! registry's text then holds the exact counts, the pending handshakes are back to 0, the TLS
//! certificate's expiry is reported, and `promtool check metrics` (Debian's `prometheus`
//! package) accepts the text. Each test runs on both runtimes.

mod common;

use std::{
    io::{Read, Write},
    process::{Command, Stdio},
};

use common::{daemon::require, *};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::core::Transport as _;
use libp2p_ws::{tls::dev::TestCa, Config, ServerCertificate, TlsConfig};
use prometheus_client::{encoding::text::encode, registry::Registry};

const UP: usize = 10_000;
const DOWN: usize = 5_000;

/// The value of the sample `series` (name and labels exactly as encoded) in `text`, if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

fn expect(text: &str, series: &str, expected: f64) {
    assert_eq!(value(text, series), Some(expected), "{series} in\n{text}");
}

/// Moves [`UP`] bytes from the dialer to the listener and [`DOWN`] back; the dialer closes, the
/// listener reads to the end and closes too.
async fn exchange<R: Runtime>(mut server: Output<R>, mut client: Output<R>) {
    let up = pattern(1, UP);
    let down = pattern(2, DOWN);
    let writer = spawn::<R, _>(async move {
        client.write_all(&up).await.expect("client write");
        client.flush().await.expect("client flush");
        let mut back = vec![0; DOWN];
        client.read_exact(&mut back).await.expect("client read");
        client.close().await.expect("client close");
        back
    });
    let mut got = vec![0; UP];
    server.read_exact(&mut got).await.expect("server read");
    assert_eq!(got, pattern(1, UP));
    server.write_all(&down).await.expect("server write");
    server.flush().await.expect("server flush");
    let mut rest = Vec::new();
    server
        .read_to_end(&mut rest)
        .await
        .expect("server reads to EOF");
    assert!(rest.is_empty());
    let _ = server.close().await;
    assert_eq!(writer.await, down);
}

/// Asks the listener at `addr` (host:port) for a path it does not serve; returns the status line.
fn wrong_path(addr: std::net::SocketAddr) -> String {
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.write_all(
        b"GET /wrong HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("write");
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `text` (OpenMetrics, what prometheus-client writes) in the Prometheus text format that
/// promtool 2.x parses: there a counter's `# HELP` and `# TYPE` name its samples' `_total` name
/// (OpenMetrics names the family without it), and there is no `# EOF`. Nothing else changes.
fn prometheus_format(text: &str) -> String {
    let counters: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::new();
    for line in text.lines().filter(|l| *l != "# EOF") {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Upgrades to WebSocket at `addr` (path `/`), then hangs up before multistream-select: the
/// complete stack's upgrade fails above the transport.
fn upgrade_then_hang_up(addr: std::net::SocketAddr) -> String {
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("write");
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).expect("read") == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Runs `promtool check metrics` (its parser and linter) on `text`, in the Prometheus text
/// format; panics with its output if it objects.
fn promtool_accepts(text: &str) {
    require("promtool");
    let text = &prometheus_format(text);
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool ends");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\non\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn connections_bytes_closes_and_failures_are_counted<R: Runtime>() {
    let mut registry = Registry::default();
    let base = Config::default()
        .with_keep_alive(None)
        .with_metrics(&mut registry);
    let ca = TestCa::new("metrics test CA").expect("CA");
    let (chain, key) = ca.issue(&["127.0.0.1"]).expect("issue");
    let cert = ServerCertificate::from_der(chain, key).expect("certificate");

    // One /ws and one /tls/ws connection, each counted once in each direction.
    let (server, client) =
        connected_pair::<R>(base.clone(), base.clone(), "/ip4/127.0.0.1/tcp/0/ws").await;
    exchange::<R>(server, client).await;
    let tls_server = base
        .clone()
        .with_tls(TlsConfig::new().with_server_certificate(&cert));
    let tls_client = base
        .clone()
        .with_tls(TlsConfig::new().add_root_der(ca.certificate()));
    let (server, client) =
        connected_pair::<R>(tls_server, tls_client, "/ip4/127.0.0.1/tcp/0/tls/ws").await;
    exchange::<R>(server, client).await;

    // A dial to a closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let mut dialer = Transport::<R>::new(base.clone());
    let addr = format!("/ip4/127.0.0.1/tcp/{port}/ws")
        .parse()
        .expect("addr");
    assert!(dialer
        .dial(addr, dial_opts())
        .expect("dial accepted")
        .await
        .is_err());

    // A handshake that fails: a path the listener does not serve (answered 404).
    let mut listener = Transport::<R>::new(base.clone());
    let (_, listen_addr) = listen::<R>(&mut listener, "/ip4/127.0.0.1/tcp/0/ws").await;
    let socket = helpers::ip_and_port(&listen_addr).expect("a TCP address");
    let (tx, status) = futures::channel::oneshot::channel();
    std::thread::spawn(move || tx.send(wrong_path(socket)));
    let upgrade = next_incoming(&mut listener).await;
    assert!(upgrade.await.is_err(), "the wrong path fails");
    let status = status.await.expect("client thread");
    assert!(status.contains("404"), "{status}");

    let mut text = String::new();
    encode(&mut text, &registry).expect("encodes");
    let m = "libp2p_websocket_";
    for kind in ["ws", "tls_ws"] {
        for direction in ["inbound", "outbound"] {
            let labels = format!(r#"{{direction="{direction}",kind="{kind}"}}"#);
            expect(&text, &format!("{m}connections_opened_total{labels}"), 1.0);
            expect(&text, &format!("{m}connections_closed_total{labels}"), 1.0);
            expect(
                &text,
                &format!("{m}handshake_duration_seconds_count{labels}"),
                1.0,
            );
        }
        let (inbound, outbound) = (
            format!(r#"{{direction="inbound",kind="{kind}"}}"#),
            format!(r#"{{direction="outbound",kind="{kind}"}}"#),
        );
        expect(
            &text,
            &format!("{m}received_bytes_total{inbound}"),
            UP as f64,
        );
        expect(&text, &format!("{m}sent_bytes_total{outbound}"), UP as f64);
        expect(&text, &format!("{m}sent_bytes_total{inbound}"), DOWN as f64);
        expect(
            &text,
            &format!("{m}received_bytes_total{outbound}"),
            DOWN as f64,
        );
    }
    // Each side sent 1000 (the dialer's close, the listener's echo); each listener received one.
    expect(
        &text,
        &format!(r#"{m}close_codes_sent_total{{code="1000"}}"#),
        4.0,
    );
    let received = value(
        &text,
        &format!(r#"{m}close_codes_received_total{{code="1000"}}"#),
    );
    assert!(received >= Some(2.0), "{received:?} in\n{text}");
    expect(
        &text,
        &format!(r#"{m}dial_failures_total{{kind="ws",reason="connection_refused"}}"#),
        1.0,
    );
    expect(
        &text,
        &format!(r#"{m}inbound_handshake_failures_total{{kind="ws",stage="http",reason="404"}}"#),
        1.0,
    );
    expect(&text, &format!("{m}pending_handshakes"), 0.0);
    let expiry = value(
        &text,
        &format!(r#"{m}tls_certificate_expiry_seconds{{name="127.0.0.1"}}"#),
    )
    .unwrap_or_else(|| panic!("no certificate expiry in\n{text}"));
    assert!(expiry > 86_400.0, "{expiry}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with(m), "{line}");
    }
    promtool_accepts(&text);
}

async fn admission_refusals_are_counted_by_reason<R: Runtime>() {
    let mut registry = Registry::default();
    let config = Config::default()
        .with_max_pending_handshakes_per_ip(1)
        .with_metrics(&mut registry);
    let mut listener = Transport::<R>::new(config);
    let (_, listen_addr) = listen::<R>(&mut listener, "/ip4/127.0.0.1/tcp/0/ws").await;
    let socket = helpers::ip_and_port(&listen_addr).expect("a TCP address");
    // The first socket holds the address's one place (it sends nothing); the second is refused.
    let first = std::net::TcpStream::connect(socket).expect("connect");
    let pending = next_incoming(&mut listener).await;
    let second = std::net::TcpStream::connect(socket).expect("connect");
    let (tx, refused) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        let mut second = second;
        let mut buf = [0; 1];
        let _ = tx.send(second.read(&mut buf));
    });
    // Poll the listener until the second socket was accepted and closed.
    let polling = spawn::<R, _>(async move {
        let _ = timeout::<R, _>(
            std::time::Duration::from_secs(2),
            next_incoming(&mut listener),
        )
        .await;
        listener
    });
    assert!(matches!(refused.await.expect("thread"), Ok(0) | Err(_)));
    let listener = polling.await;
    let mut text = String::new();
    encode(&mut text, &registry).expect("encodes");
    expect(
        &text,
        r#"libp2p_websocket_admission_refusals_total{reason="address_full"}"#,
        1.0,
    );
    expect(&text, "libp2p_websocket_pending_handshakes", 1.0);
    drop((pending, first, listener));
    let mut text = String::new();
    encode(&mut text, &registry).expect("encodes");
    expect(&text, "libp2p_websocket_pending_handshakes", 0.0);
}

async fn the_complete_stack_counts_its_upgrades_and_their_failures<R: Runtime>() {
    let mut registry = Registry::default();
    let config = Config::default().with_metrics(&mut registry);
    let mut listener = R::upgraded(
        &libp2p::identity::Keypair::generate_ed25519(),
        config.clone(),
    );
    let mut dialer = R::upgraded(&libp2p::identity::Keypair::generate_ed25519(), config);
    let (_, addr) = listen_any(&mut listener, "/ip4/127.0.0.1/tcp/0/ws").await;
    let socket = helpers::ip_and_port(&addr).expect("a TCP address");
    let dial = spawn::<R, _>(dialer.dial(addr, dial_opts()).expect("dial accepted"));
    let upgrade = next_incoming(&mut listener).await;
    // Both muxers driven (a V1Lazy listener finishes when the dialer's yamux speaks).
    let listener_muxer =
        Muxer::spawn_when_ready::<R>(async move { upgrade.await.expect("listener upgrades").1 });
    let dialer_muxer = Muxer::spawn::<R>(dial.await.expect("dialer upgrades").1);
    let _stream = listener_muxer.open().await;

    // A WebSocket connection that hangs up before noise: counted as established, then failed.
    let (tx, status) = futures::channel::oneshot::channel();
    std::thread::spawn(move || tx.send(upgrade_then_hang_up(socket)));
    let upgrade = next_incoming(&mut listener).await;
    assert!(upgrade.await.is_err(), "the upgrade fails");
    let status = status.await.expect("client thread");
    assert!(status.contains("101"), "{status}");

    let mut text = String::new();
    encode(&mut text, &registry).expect("encodes");
    let m = "libp2p_websocket_";
    let (inbound, outbound) = (
        r#"{direction="inbound",kind="ws"}"#,
        r#"{direction="outbound",kind="ws"}"#,
    );
    expect(
        &text,
        &format!("{m}upgrade_duration_seconds_count{inbound}"),
        1.0,
    );
    expect(
        &text,
        &format!("{m}upgrade_duration_seconds_count{outbound}"),
        1.0,
    );
    expect(&text, &format!("{m}connections_opened_total{inbound}"), 2.0);
    expect(
        &text,
        &format!("{m}connections_opened_total{outbound}"),
        1.0,
    );
    expect(&text, &format!("{m}connections_closed_total{inbound}"), 1.0);
    expect(
        &text,
        &format!(
            r#"{m}inbound_handshake_failures_total{{kind="ws",stage="upgrade",reason="noise"}}"#
        ),
        1.0,
    );
    expect(&text, &format!("{m}pending_handshakes"), 0.0);
    promtool_accepts(&text);
    drop((listener_muxer, dialer_muxer));
}

runtime_tests!(
    connections_bytes_closes_and_failures_are_counted,
    the_complete_stack_counts_its_upgrades_and_their_failures,
    admission_refusals_are_counted_by_reason,
);
