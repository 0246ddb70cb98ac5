//! The ping example's command-line contract, run as separate processes, on each runtime
//! (`--runtime async-std|tokio`): its `listening`, `connected` and `ping` lines, every address
//! form, errors, keep-alive against a paused process, listen addresses sharing a port, EMFILE
//! backoff, and a tokio node's threads. The process harness is `common::ping_node`; the same
//! nodes behind forward and reverse proxies are tested in `tests/ping_behind_proxies.rs`.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    certified::CertifiedNode,
    ping_node::{assert_pings, listening_addr, ping_binary, port_of, Node},
    Runtime, Tokio,
};
use libp2p_ws::tls::dev::{chain_pem, key_pem, TestCa};

mod common;

fn demo_pings_over_ws_and_wss<R: Runtime>() {
    let (ok, lines, stderr) = Node::start::<R>(&[]).finish();
    assert!(ok, "demo failed: {stderr}");
    assert_pings(&lines, 6);
    assert!(lines
        .iter()
        .any(|l| l.starts_with("listening ") && l.contains("/ws/p2p/")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("listening ") && l.contains("/tls/ws/p2p/")));
}

fn a_second_process_pings_a_listener<R: Runtime>() {
    let listener = Node::start::<R>(&["--listen", "/ip4/127.0.0.1/tcp/0/ws"]);
    let addr = listening_addr(&listener);
    let (ok, lines, stderr) = Node::start::<R>(&["--dial", &addr, "--count", "3"]).finish();
    assert!(ok, "dialer failed: {stderr}");
    assert_pings(&lines, 3);
}

fn every_address_form_works_on_the_command_line<R: Runtime>() {
    let ca = TestCa::new("ping example CA").unwrap();
    let (chain, key) = ca.issue(&["localhost"]).unwrap();
    let dir =
        std::env::temp_dir().join(format!("libp2p-ws-ping-{}-{}", R::NAME, std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path, ca_path) = (
        dir.join("chain.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    std::fs::write(&cert_path, chain_pem(&chain)).unwrap();
    std::fs::write(&key_path, key_pem(&key)).unwrap();
    std::fs::write(&ca_path, ca.certificate_pem()).unwrap();
    let (cert_path, key_path, ca_path) = (
        cert_path.to_str().unwrap(),
        key_path.to_str().unwrap(),
        ca_path.to_str().unwrap(),
    );

    let cases = [
        (
            "/dns4/localhost/tcp/0/ws/http-path/some%2Fpath",
            "/dns/localhost/tcp/{port}/ws/http-path/some%2Fpath",
        ),
        (
            "/ip4/127.0.0.1/tcp/0/tls/sni/localhost/ws",
            "/dns/localhost/tcp/{port}/wss",
        ),
        (
            "/ip4/127.0.0.1/tcp/0/wss",
            "/ip4/127.0.0.1/tcp/{port}/tls/sni/localhost/ws",
        ),
        (
            "/ip4/127.0.0.1/tcp/0/tls/ws",
            "/dns4/localhost/tcp/{port}/tls/ws",
        ),
    ];
    for (listen, dial) in cases {
        let listener =
            Node::start::<R>(&["--listen", listen, "--cert", cert_path, "--key", key_path]);
        let addr = listening_addr(&listener);
        let port = addr.split('/').nth(4).unwrap();
        let peer = addr.rsplit('/').next().unwrap();
        let target = format!("{}/p2p/{peer}", dial.replace("{port}", port));
        let (ok, lines, stderr) =
            Node::start::<R>(&["--dial", &target, "--count", "2", "--ca", ca_path]).finish();
        assert!(ok, "{listen} <- {target} failed: {stderr}");
        assert_pings(&lines, 2);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn failed_dial_prints_an_error_and_exits_non_zero<R: Runtime>() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("/ip4/127.0.0.1/tcp/{port}/ws");
    let (ok, _, stderr) =
        Node::start::<R>(&["--dial", &target, "--count", "1", "--timeout", "5"]).finish();
    assert!(!ok);
    assert!(stderr.lines().any(|l| l.starts_with("error: ")), "{stderr}");
}

/// The error lines name each failure once, on both runtimes (rust-libp2p's layers under
/// `SwarmBuilder` repeat their inner errors; the node prints each distinct message once), and a
/// bind that fails because the port is taken says why.
fn error_lines_say_each_message_once<R: Runtime>() {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let target = format!("/ip4/127.0.0.1/tcp/{}/ws", free());
    let proxy = format!("http://127.0.0.1:{}", free());
    let args = [
        "--dial",
        &target,
        "--proxy",
        &proxy,
        "--count",
        "1",
        "--timeout",
        "5",
    ];
    let (ok, _, stderr) = Node::start::<R>(&args).finish();
    assert!(!ok);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    for message in [
        &format!("dialing through the proxy {proxy} failed"),
        "could not connect to the proxy",
        "libp2p-ws",
    ] {
        assert_eq!(
            line.matches(message).count(),
            1,
            "{message:?} once in {line:?}"
        );
    }

    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}/ws");
    let (ok, _, stderr) = Node::start::<R>(&["--listen", &listen]).finish();
    assert!(!ok);
    assert!(
        stderr.contains("error: cannot listen on")
            && stderr.contains("do not also listen on it with libp2p-tcp")
            && !stderr.contains(": :"),
        "{stderr}"
    );

    let (ok, _, stderr) =
        Node::start::<R>(&["--dial", "/ip4/127.0.0.1/tcp/1/wss/http-path"]).finish();
    assert!(!ok);
    assert!(
        stderr.contains("error: ") && stderr.contains("/http-path needs a value"),
        "{stderr}"
    );
}

fn bad_listen_address_is_an_error<R: Runtime>() {
    let (ok, _, stderr) = Node::start::<R>(&["--listen", "/ip4/0.0.0.0/tcp/0/ws"]).finish();
    assert!(!ok, "plain ws on 0.0.0.0 must be refused");
    assert!(
        stderr.contains("error: ") && stderr.contains("insecure"),
        "{stderr}"
    );
}

/// A real half-open peer: the listener process is paused with SIGSTOP, so its
/// kernel still ACKs our frames but nothing answers; keep-alive must notice within its deadline.
fn keep_alive_detects_a_paused_listener_process<R: Runtime>() {
    use futures::AsyncReadExt as _;
    use libp2p::core::Transport as _;
    use libp2p_ws::{Config, FrameError, KeepAlive};

    let listener = Node::start::<R>(&["--listen", "/ip4/127.0.0.1/tcp/0/ws"]);
    let addr: libp2p::Multiaddr = listening_addr(&listener).parse().unwrap();
    let keep_alive = KeepAlive {
        interval: Duration::from_millis(300),
        timeout: Duration::from_millis(500),
    };
    let deadline = keep_alive.interval + keep_alive.timeout;
    let pid = listener.child.id() as libc::pid_t;

    let (alive_for, detected_after, error) = common::run::<R, _>(async {
        let config = Config::default().with_keep_alive(Some(keep_alive));
        let mut conn = common::Transport::<R>::new(config)
            .dial(addr, common::dial_opts())
            .expect("dial accepted")
            .await
            .expect("upgrade to the ping node");
        let mut buf = [0u8; 64];

        // While the node runs, it answers our pings: the connection outlives several deadlines.
        // (The node waits for our multistream-select header, so it sends no data of its own.)
        let alive_for = 3 * deadline;
        if let Some(r) = common::timeout::<R, _>(alive_for, conn.read(&mut buf)).await {
            panic!("the connection ended while the node was running: {r:?}");
        }

        // Paused: the socket stays open, no FIN or RST, no pong.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
        let start = Instant::now();
        let error = loop {
            match conn.read(&mut buf).await {
                Ok(0) => panic!("clean EOF from a paused process"),
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        (alive_for, start.elapsed(), error)
    });
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0, "SIGCONT");

    println!(
        "alive for {alive_for:?} while running; paused process detected after {detected_after:?} \
         (deadline {deadline:?}): {error}"
    );
    assert!(
        matches!(
            FrameError::from_io(&error),
            Some(FrameError::KeepAliveTimeout(_))
        ),
        "{error:?}"
    );
    assert!(
        detected_after < deadline + Duration::from_secs(2),
        "{detected_after:?}"
    );
}

fn several_listen_addresses_share_one_port<R: Runtime>() {
    // A port that was free a moment ago (the OS hands out ephemeral ports in turn).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listener = Node::start::<R>(&[
        "--listen",
        &format!("/ip4/127.0.0.1/tcp/{port}"),
        "--listen",
        &format!("/ip4/127.0.0.1/tcp/{port}/ws"),
    ]);
    let addrs = [listening_addr(&listener), listening_addr(&listener)];
    println!("{}: one node, one port: {addrs:?}", R::NAME);
    assert!(
        addrs.iter().all(|a| port_of(a) == port.to_string()),
        "{addrs:?}"
    );
    assert!(addrs.iter().any(|a| a.contains("/ws/p2p/")), "{addrs:?}");
    assert!(addrs.iter().any(|a| !a.contains("/ws/")), "{addrs:?}");
    for addr in &addrs {
        let (ok, lines, stderr) = Node::start::<R>(&["--dial", addr, "--count", "1"]).finish();
        assert!(ok, "dialing {addr} failed: {stderr}");
        assert_pings(&lines, 1);
    }

    // Port 0 twice: two sockets, as asked.
    let listener = Node::start::<R>(&[
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--listen",
        "/ip4/127.0.0.1/tcp/0/ws",
    ]);
    let addrs = [listening_addr(&listener), listening_addr(&listener)];
    println!("{}: two port-0 listen addresses: {addrs:?}", R::NAME);
    assert_ne!(port_of(&addrs[0]), port_of(&addrs[1]), "{addrs:?}");
}

ping_tests!(
    error_lines_say_each_message_once,
    several_listen_addresses_share_one_port,
    demo_pings_over_ws_and_wss,
    a_second_process_pings_a_listener,
    every_address_form_works_on_the_command_line,
    failed_dial_prints_an_error_and_exits_non_zero,
    bad_listen_address_is_an_error,
    keep_alive_detects_a_paused_listener_process,
);

/// Threads of a process, by name (`/proc/<pid>/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process runs")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect();
    names.sort();
    names
}

/// A tokio node (listening on /ws and /tls/ws, dialing by DNS over /tls/ws) runs no thread that
/// tokio did not start: no async-io reactor, no async-std executor or blocking pool. libp2p-core's
/// `futures-timer` thread is the one exception (rust-libp2p's own, not ours).
#[test]
fn a_tokio_node_runs_only_tokio_threads() {
    let ca = TestCa::new("thread test CA").unwrap();
    let (chain, key) = ca.issue(&["localhost"]).unwrap();
    let dir = std::env::temp_dir().join(format!("libp2p-ws-threads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let paths = ["chain.pem", "key.pem", "ca.pem"].map(|f| dir.join(f));
    std::fs::write(&paths[0], chain_pem(&chain)).unwrap();
    std::fs::write(&paths[1], key_pem(&key)).unwrap();
    std::fs::write(&paths[2], ca.certificate_pem()).unwrap();
    let [cert, key, ca] = paths.each_ref().map(|p| p.to_str().unwrap());

    let listener = Node::start::<Tokio>(&[
        "--listen",
        "/ip4/127.0.0.1/tcp/0/ws",
        "--listen",
        "/ip4/127.0.0.1/tcp/0/tls/ws",
        "--cert",
        cert,
        "--key",
        key,
    ]);
    let addrs = [listening_addr(&listener), listening_addr(&listener)];
    let tls = addrs
        .iter()
        .find(|a| a.contains("/tls/ws/"))
        .expect("a /tls/ws address");
    let port = tls.split('/').nth(4).unwrap();
    let peer = tls.rsplit('/').next().unwrap();
    let target = format!("/dns4/localhost/tcp/{port}/tls/ws/p2p/{peer}");
    let dialer = Node::start::<Tokio>(&["--dial", &target, "--ca", ca, "--count", "1000000"]);
    for _ in 0..2 {
        let line = dialer.next_line();
        assert!(
            line.starts_with("connected ") || line.starts_with("ping "),
            "{line}"
        );
    }
    let allowed = |name: &str| {
        name.starts_with("tokio-runtime-w")
            || name.starts_with("tokio-rt-worker")
            || name == "futures-timer"
            || name == "ping"
    };
    for (role, node) in [("listener", &listener), ("dialer", &dialer)] {
        let names = thread_names(node.child.id());
        println!("{role} threads: {names:?}");
        let foreign: Vec<_> = names.iter().filter(|n| !allowed(n)).collect();
        assert!(
            foreign.is_empty(),
            "{role} runs threads tokio did not start: {foreign:?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// CPU ticks (user + system) a process has used, from /proc/<pid>/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process runs");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A listener out of file descriptors (RLIMIT_NOFILE 48) whose `accept` fails
/// with EMFILE pauses instead of spinning, logs the error rate-limited, and serves again once the
/// flood is gone.
fn accept_errors_back_off_and_the_listener_recovers<R: Runtime>() {
    use std::{io::Write as _, os::unix::process::CommandExt as _};
    let log = std::env::temp_dir().join(format!(
        "libp2p-ws-emfile-{}-{}",
        R::NAME,
        std::process::id()
    ));
    let mut command = Command::new(ping_binary());
    command
        .args(["--runtime", R::NAME, "--listen", "/ip4/127.0.0.1/tcp/0/ws"])
        .env("RUST_LOG", "libp2p_ws=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 48,
                rlim_max: 48,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let listener = Node::spawn(command);
    let addr = listening_addr(&listener);
    let port: u16 = addr.split('/').nth(4).unwrap().parse().unwrap();
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    // 8 addresses x 12 upgraded, silent connections: twice the 48 fds (the rest wait in the
    // listen backlog, which holds 128).
    let mut flood = Vec::new();
    for host in 2..10u8 {
        for _ in 0..12 {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket
                .bind(&std::net::SocketAddr::from(([127, 0, 0, host], 0)).into())
                .unwrap();
            socket
                .connect_timeout(&target.into(), Duration::from_secs(5))
                .unwrap();
            let mut stream: std::net::TcpStream = socket.into();
            let _ = stream.write_all(request.as_bytes());
            flood.push(stream);
        }
    }
    let pid = listener.child.id();
    std::thread::sleep(Duration::from_millis(500)); // let the listener reach its fd limit
    let before = cpu_ticks(pid);
    let window = Duration::from_secs(3);
    std::thread::sleep(window);
    let used = cpu_ticks(pid) - before;
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let emfile_lines = logged
        .lines()
        .filter(|l| l.contains("accepting a connection failed"))
        .count();
    println!(
        "figure ({}): {used} CPU ticks (1/100 s) in {window:?} out of fds; {emfile_lines} accept-error \
         log lines, {} bytes of log",
        R::NAME,
        logged.len()
    );
    assert!(emfile_lines >= 1, "the accept error is logged: {logged}");
    assert!(
        used < 60,
        "the listener spins on accept errors: {used} ticks in {window:?}"
    );
    assert!(
        emfile_lines <= 10,
        "accept errors are not rate-limited: {emfile_lines} lines"
    );

    // The flood leaves: fds free up, and the listener serves a new peer again.
    drop(flood);
    let (ok, lines, stderr) =
        Node::start::<R>(&["--dial", &addr, "--count", "1", "--timeout", "25"]).finish();
    assert!(ok, "the listener did not recover: {stderr}");
    assert_pings(&lines, 1);
    let _ = std::fs::remove_file(&log);
}

/// `GET path` on `127.0.0.1:port` (blocking, bounded): the whole answer.
fn http_get(port: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    answer
}

/// `--metrics`: the listener's port answers `/healthz` and `/metrics` beside the upgrades, a
/// real Prometheus (Debian's) scrapes the page, and a probe is not a failed connection.
fn metrics_are_served_on_the_listeners_port_and_prometheus_scrapes_them<R: Runtime>() {
    let listener = Node::start::<R>(&["--listen", "/ip4/127.0.0.1/tcp/0/ws", "--metrics"]);
    let addr = listening_addr(&listener);
    let port = port_of(&addr).to_string();
    let health = http_get(&port, "/healthz");
    assert!(
        health.starts_with("HTTP/1.1 200 OK\r\n") && health.ends_with("ok\n"),
        "{health}"
    );
    let (ok, lines, stderr) = Node::start::<R>(&["--dial", &addr, "--count", "1"]).finish();
    assert!(ok, "dialer failed: {stderr}");
    assert_pings(&lines, 1);
    let page = http_get(&port, "/metrics");
    assert!(
        page.contains(
            r#"libp2p_websocket_connections_opened_total{direction="inbound",kind="ws"} 1"#
        ),
        "{page}"
    );
    assert!(
        page.contains(r#"libp2p_websocket_http_responses_total{kind="ws",status="200"} 1"#),
        "{page}"
    );

    let dir = std::env::temp_dir().join(format!(
        "ping-prometheus-{}-{}",
        R::NAME,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ping\n    \
             static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let web_port = web.local_addr().unwrap().port().to_string();
    drop(web);
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian's prometheus package; bash tests/run installs it)");
    let query = "/api/v1/query?query=libp2p_websocket_connections_opened_total";
    let deadline = Instant::now() + Duration::from_secs(40);
    let scraped = loop {
        let answer = std::net::TcpStream::connect(format!("127.0.0.1:{web_port}"))
            .map(|_| http_get(&web_port, query))
            .unwrap_or_default();
        if answer.contains(r#""direction":"inbound""#) || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        scraped.contains(r#""job":"ping""#) && scraped.contains(r#""kind":"ws""#),
        "{scraped}"
    );
    drop(listener);
}

ping_tests!(accept_errors_back_off_and_the_listener_recovers);
ping_tests!(metrics_are_served_on_the_listeners_port_and_prometheus_scrapes_them);

/// `--acme`: the node obtains its `/tls/ws` certificate from Debian's `pebble` (TLS-ALPN-01 on
/// the listener's port), prints `certificate <name> <not-after>`, and a second process that
/// trusts only pebble's root pings it by that name (`/tls/sni/<name>/ws`).
fn an_acme_certificate_is_obtained_and_a_second_process_pings_by_the_name<R: Runtime>() {
    let listener = CertifiedNode::acme::<R>("ping.acme.test");
    assert_eq!(
        listener.announced,
        [format!(
            "/ip4/127.0.0.1/tcp/{}/tls/ws/p2p/{}",
            listener.port, listener.peer
        )]
    );
    let (name, not_after) = listener
        .certificate
        .split_once(' ')
        .expect("a name and a date");
    assert_eq!(name, "ping.acme.test");
    let shape: String = not_after
        .chars()
        .map(|c| if c.is_ascii_digit() { 'd' } else { c })
        .collect();
    assert_eq!(shape, "dddd-dd-ddTdd:dd:ddZ", "{not_after}");
    assert!(not_after > "2027", "{not_after}");
    let root = listener.root.display().to_string();
    let (ok, lines, stderr) =
        Node::start::<R>(&["--dial", &listener.by_sni(), "--ca", &root, "--count", "1"]).finish();
    assert!(ok, "dialer failed: {stderr}");
    listener.assert_pinged(&lines);
}

ping_tests!(an_acme_certificate_is_obtained_and_a_second_process_pings_by_the_name);

/// `--autotls`: the node authenticates its peer id to the broker, which dials it back and sets
/// the DNS-01 record; pebble issues `*.<peer>.libp2p.direct`; the wildcard listener announces
/// both concrete forms (nothing before), and a second process dials the `/dns4` one by name
/// (resolved by pebble-challtestsrv, trusting pebble's root only) and pings.
fn autotls_obtains_a_wildcard_certificate_and_announces_concrete_addresses<R: Runtime>() {
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let node = CertifiedNode::autotls::<R>(&keypair);
    let (port, peer) = (node.port, &node.peer);
    let domain = node.name.strip_prefix("127-0-0-1.").unwrap();
    assert!(
        node.certificate.starts_with(&format!("*.{domain} ")),
        "{}",
        node.certificate
    );
    // The /tcp listener first; the wildcard listener only once the certificate is in use.
    assert_eq!(
        node.announced[0],
        format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}")
    );
    let mut wildcard = node.announced[1..].to_vec();
    wildcard.sort();
    assert_eq!(wildcard, [node.by_dns4(), node.by_sni()]);
    let broker = node.broker.as_ref().unwrap();
    assert_eq!(
        *broker.seen.registered.lock().unwrap(),
        [keypair.public().to_peer_id()]
    );

    let (ok, lines, stderr) = Node::start::<R>(&[
        "--dial",
        &node.by_dns4(),
        "--ca",
        &node.root.display().to_string(),
        "--dns-server",
        &node.pebble.dns.to_string(),
        "--count",
        "1",
    ])
    .finish();
    assert!(ok, "dialer failed: {stderr}");
    node.assert_pinged(&lines);
}

/// A broker that checks the Peer ID signature against another host name refuses it; the node
/// reports the broker's refusal (on stderr, and retries).
fn autotls_reports_a_broker_that_refuses_its_peer_id_authentication<R: Runtime>() {
    use common::{broker::Broker, certified, daemon};
    let port = daemon::free_port("127.0.0.1");
    let pebble = certified::pebble(port);
    let broker = Broker::start(&pebble, "registration.libp2p.direct");
    let dir = daemon::temp_dir("ping-autotls-refused");
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let mut node = certified::spawn_autotls::<R>(&pebble, &broker, &keypair, port, &dir);
    let _ = listening_addr(&node);
    let deadline = Instant::now() + Duration::from_secs(20);
    while broker
        .seen
        .refused
        .load(std::sync::atomic::Ordering::SeqCst)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the broker saw no authentication"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = node.child.kill();
    let mut stderr = String::new();
    use std::io::Read;
    node.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("AutoTLS broker") && stderr.contains("refused (401)"),
        "{stderr}"
    );
    assert!(broker.seen.registered.lock().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

ping_tests!(
    autotls_obtains_a_wildcard_certificate_and_announces_concrete_addresses,
    autotls_reports_a_broker_that_refuses_its_peer_id_authentication,
);

/// `--identity <file>`: the first run makes the key and writes it (0600), the second reads it:
/// both runs listen with the same peer id.
fn the_identity_file_keeps_the_peer_id_across_runs<R: Runtime>() {
    let dir = common::daemon::temp_dir("ping-identity");
    let file = dir.join("identity.key");
    let file_arg = file.display().to_string();
    let peer_of = |node: &Node| {
        let addr = listening_addr(node);
        addr.rsplit('/').next().unwrap().to_string()
    };
    let args = [
        "--identity",
        &file_arg,
        "--listen",
        "/ip4/127.0.0.1/tcp/0/ws",
    ];
    let first = Node::start::<R>(&args);
    let peer = peer_of(&first);
    drop(first);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let second = Node::start::<R>(&args);
    assert_eq!(peer_of(&second), peer);
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

ping_tests!(the_identity_file_keeps_the_peer_id_across_runs);
