//! The ping example's command-line contract, run as separate processes.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use libp2p_ws::tls::dev::{chain_pem, key_pem, TestCa};

mod common;

const WAIT: Duration = Duration::from_secs(30);

fn ping_binary() -> PathBuf {
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
        "{} missing: cargo test builds examples",
        path.display()
    );
    path
}

struct Node {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Node {
    fn start(args: &[&str]) -> Node {
        let mut child = Command::new(ping_binary())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
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
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let lines: Vec<String> = self.lines.try_iter().collect();
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

#[test]
fn demo_pings_over_ws_and_wss() {
    let (ok, lines, stderr) = Node::start(&[]).finish();
    assert!(ok, "demo failed: {stderr}");
    assert_pings(&lines, 6);
    assert!(lines
        .iter()
        .any(|l| l.starts_with("listening ") && l.contains("/ws/p2p/")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("listening ") && l.contains("/tls/ws/p2p/")));
}

#[test]
fn a_second_process_pings_a_listener() {
    let listener = Node::start(&["--listen", "/ip4/127.0.0.1/tcp/0/ws"]);
    let addr = listening_addr(&listener);
    let (ok, lines, stderr) = Node::start(&["--dial", &addr, "--count", "3"]).finish();
    assert!(ok, "dialer failed: {stderr}");
    assert_pings(&lines, 3);
}

#[test]
fn every_address_form_works_on_the_command_line() {
    let ca = TestCa::new("ping example CA").unwrap();
    let (chain, key) = ca.issue(&["localhost"]).unwrap();
    let dir = std::env::temp_dir().join(format!("libp2p-ws-ping-{}", std::process::id()));
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
        let listener = Node::start(&["--listen", listen, "--cert", cert_path, "--key", key_path]);
        let addr = listening_addr(&listener);
        let port = addr.split('/').nth(4).unwrap();
        let peer = addr.rsplit('/').next().unwrap();
        let target = format!("{}/p2p/{peer}", dial.replace("{port}", port));
        let (ok, lines, stderr) =
            Node::start(&["--dial", &target, "--count", "2", "--ca", ca_path]).finish();
        assert!(ok, "{listen} <- {target} failed: {stderr}");
        assert_pings(&lines, 2);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_dial_prints_an_error_and_exits_non_zero() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("/ip4/127.0.0.1/tcp/{port}/ws");
    let (ok, _, stderr) =
        Node::start(&["--dial", &target, "--count", "1", "--timeout", "5"]).finish();
    assert!(!ok);
    assert!(stderr.lines().any(|l| l.starts_with("error: ")), "{stderr}");
}

#[test]
fn bad_listen_address_is_an_error() {
    let (ok, _, stderr) = Node::start(&["--listen", "/ip4/0.0.0.0/tcp/0/ws"]).finish();
    assert!(!ok, "plain ws on 0.0.0.0 must be refused");
    assert!(
        stderr.contains("error: ") && stderr.contains("insecure"),
        "{stderr}"
    );
}

/// Hardening item 8 with a real half-open peer: the listener process is paused with SIGSTOP, so its
/// kernel still ACKs our frames but nothing answers; keep-alive must notice within its deadline.
#[test]
fn keep_alive_detects_a_paused_listener_process() {
    use futures::AsyncReadExt as _;
    use libp2p::core::Transport as _;
    use libp2p_ws::{async_std::Transport, Config, FrameError, KeepAlive};

    let listener = Node::start(&["--listen", "/ip4/127.0.0.1/tcp/0/ws"]);
    let addr: libp2p::Multiaddr = listening_addr(&listener).parse().unwrap();
    let keep_alive = KeepAlive {
        interval: Duration::from_millis(300),
        timeout: Duration::from_millis(500),
    };
    let deadline = keep_alive.interval + keep_alive.timeout;
    let pid = listener.child.id() as libc::pid_t;

    let (alive_for, detected_after, error) = common::run(async {
        let config = Config::default().with_keep_alive(Some(keep_alive));
        let mut conn = Transport::new(config)
            .dial(addr, common::dial_opts())
            .expect("dial accepted")
            .await
            .expect("upgrade to the ping node");
        let mut buf = [0u8; 64];

        // While the node runs, it answers our pings: the connection outlives several deadlines.
        // (The node waits for our multistream-select header, so it sends no data of its own.)
        let alive_for = 3 * deadline;
        if let Ok(r) = async_std::future::timeout(alive_for, conn.read(&mut buf)).await {
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
