//! Real proxy daemons (tinyproxy, microsocks, haproxy, nginx) for the proxy tests: each started
//! by the test on loopback with a configuration written to a temp dir of its own, and killed (and
//! its dir removed) when dropped.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// How long a daemon may take to accept connections.
const START_LIMIT: Duration = Duration::from_secs(10);

/// A port the OS just gave out on `ip` (bound and released: free unless something takes it
/// meanwhile, which the daemon's start would then report).
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A temp dir of this test's own.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "libp2p-ws-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Whether `program` is installed (`.ci/run` installs them); the tests fail when not, naming it.
pub fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed: run .ci/run, or apt-get install it (see README, \"Dialing through a proxy\")"
    );
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    name: String,
    child: Child,
    dir: PathBuf,
    /// The address it accepts on.
    pub addr: SocketAddr,
}

impl Daemon {
    /// Starts `command` (which writes its output to files in `dir`) and waits until `addr`
    /// accepts TCP connections, or fails the test with the daemon's output.
    pub fn start(name: &str, mut command: Command, dir: PathBuf, addr: SocketAddr) -> Daemon {
        let log = std::fs::File::create(dir.join("output.log")).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut daemon = Daemon {
            name: name.to_string(),
            child,
            dir,
            addr,
        };
        daemon.wait_accepting();
        daemon
    }

    /// The daemon's dir (configuration, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the daemon wrote to `file` in its dir (empty when there is no such file).
    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// Polls a connect to the daemon's address (every 10 ms, at most [`START_LIMIT`]): the only
    /// sign of readiness all four daemons give.
    fn wait_accepting(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited at start ({status}): {}",
                    self.name,
                    self.read("output.log")
                );
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                start.elapsed() < START_LIMIT,
                "{} did not accept on {} within {START_LIMIT:?}: {}",
                self.name,
                self.addr,
                self.read("output.log")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("{} output kept in {}", self.name, self.dir.display());
        }
    }
}

/// Where tinyproxy connects out from.
pub const TINYPROXY_SOURCE: &str = "127.0.0.2";
/// Where microsocks connects out from.
pub const MICROSOCKS_SOURCE: &str = "127.0.0.3";
/// A name only the SOCKS proxy can resolve (it runs with an /etc/hosts of its own).
pub const PROXY_ONLY_NAME: &str = "only-the-proxy.libp2p-ws.test";

/// tinyproxy on 127.0.0.1 (the config the README shows), with basic auth when `auth` is given.
pub fn tinyproxy(auth: Option<(&str, &str)>) -> Daemon {
    require("tinyproxy");
    let dir = temp_dir("tinyproxy");
    let port = free_port("127.0.0.1");
    let mut config = format!(
        "Port {port}\nListen 127.0.0.1\nBind {TINYPROXY_SOURCE}\nTimeout 30\nMaxClients 16\n\
         Allow 127.0.0.1\nDisableViaHeader Yes\nLogLevel Info\nLogFile \"{}\"\n",
        dir.join("tinyproxy.log").display()
    );
    if let Some((user, pass)) = auth {
        config.push_str(&format!("BasicAuth {user} {pass}\n"));
    }
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(&conf, config).expect("config");
    let mut command = Command::new("tinyproxy");
    command.arg("-d").arg("-c").arg(&conf);
    Daemon::start("tinyproxy", command, dir, ([127, 0, 0, 1], port).into())
}

/// microsocks on 127.0.0.1, with username/password when `auth` is given. It runs in a mount
/// namespace of its own with an /etc/hosts that names [`PROXY_ONLY_NAME`], which this process
/// cannot resolve.
pub fn microsocks(auth: Option<(&str, &str)>) -> Daemon {
    require("microsocks");
    require("unshare");
    let dir = temp_dir("microsocks");
    let port = free_port("127.0.0.1");
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1 localhost {PROXY_ONLY_NAME}\n::1 localhost\n"),
    )
    .expect("hosts");
    let mut args = format!("-i 127.0.0.1 -p {port} -b {MICROSOCKS_SOURCE}");
    if let Some((user, pass)) = auth {
        args.push_str(&format!(" -u {user} -P {pass}"));
    }
    let mut command = Command::new("unshare");
    command.args([
        "--mount",
        "sh",
        "-c",
        &format!(
            "mount --bind {} /etc/hosts && exec microsocks {args}",
            hosts.display()
        ),
    ]);
    Daemon::start("microsocks", command, dir, ([127, 0, 0, 1], port).into())
}
