//! The ping example as a process, for the tests of its command line (`tests/ping_example.rs`) and
//! of ping nodes behind proxies (`tests/ping_behind_proxies.rs`): the example is built (cargo build
//! --example ping) before the first test of a binary runs, so a stale binary is never tested; each
//! node's stdout lines are read with a bounded wait, and a node is killed when dropped.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use super::Runtime;

/// Instantiates each named test (`fn name<R: Runtime>()`) once per runtime, as the tests
/// `name::async_std` and `name::tokio`.
#[macro_export]
macro_rules! ping_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn async_std() {
                super::$name::<$crate::common::AsyncStd>()
            }

            #[test]
            fn tokio() {
                super::$name::<$crate::common::Tokio>()
            }
        }
    )*};
}

/// Every wait on a ping process (a line, its exit) is bounded by this.
pub const WAIT: Duration = Duration::from_secs(30);

/// Builds the ping example (once per test binary) and returns its path.
pub fn ping_binary() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        // Without the variables cargo test set for this test binary (CARGO_PKG_NAME,
        // CARGO_MANIFEST_DIR, ...): ring's build script reruns when one of them changes, so
        // inheriting them made this build and the next `cargo test` each rebuild ring and
        // everything above it (over a minute here).
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_MANIFEST_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                ]
                .contains(&name.as_ref())
            {
                command.env_remove(name.as_ref());
            }
        }
        let status = command
            .args(["build", "--quiet", "--example", "ping"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build --example ping failed");
    });
    // target/<profile>/deps/<test binary>-<hash> -> target/<profile>/examples/ping
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

/// A running ping process and its stdout lines.
pub struct Node {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Node {
    /// Starts the ping example on runtime `R` with `args`.
    pub fn start<R: Runtime>(args: &[&str]) -> Node {
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
    pub fn spawn(mut command: Command) -> Node {
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

    /// The node's next stdout line, within [`WAIT`].
    pub fn next_line(&self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .expect("a line within the timeout")
    }

    /// Waits for exit (bounded); returns (success, stdout lines, stderr).
    pub fn finish(self) -> (bool, Vec<String>, String) {
        self.finish_within(WAIT)
    }

    /// [`finish`](Node::finish) with another bound on the exit, for a process that takes longer
    /// than [`WAIT`] by design (a browser that starts, loads a page and dials).
    pub fn finish_within(mut self, limit: Duration) -> (bool, Vec<String>, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ping did not exit within {limit:?}");
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

/// The node's `listening` line's address (its next line must be one).
pub fn listening_addr(node: &Node) -> String {
    let line = node.next_line();
    line.strip_prefix("listening ")
        .unwrap_or_else(|| panic!("expected a listening line, got {line:?}"))
        .to_string()
}

/// The node's next `connected` line (other lines skipped), within [`WAIT`] each.
pub fn next_connected(node: &Node) -> String {
    loop {
        let line = node.next_line();
        if line.starts_with("connected ") {
            return line;
        }
    }
}

/// `lines` hold `count` `ping` lines, each with a round-trip time, and a `connected` line.
pub fn assert_pings(lines: &[String], count: usize) {
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

/// The TCP port of a multiaddr's text (`/ip4/<ip>/tcp/<port>/...`).
pub fn port_of(addr: &str) -> &str {
    addr.split('/').nth(4).expect("a port")
}
