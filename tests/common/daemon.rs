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

/// Whether `program` is installed (`bash tests/run`, the README's test command, installs them);
/// the tests fail when not, naming the command.
pub fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed: run the tests with `bash tests/run` (README), which installs it (as root, on Debian)"
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

    /// Waits until `addr` (another address of the daemon's) accepts TCP connections too.
    pub fn wait_for(&mut self, addr: SocketAddr) {
        let first = std::mem::replace(&mut self.addr, addr);
        self.wait_accepting();
        self.addr = first;
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
    /// SIGTERM (so that nginx's master stops its workers too), then SIGKILL if it is still there
    /// after 5 s.
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
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

/// Where haproxy connects to the origin from (the listener trusts it).
pub const HAPROXY_SOURCE: &str = "127.0.0.11";
/// Where nginx connects to the origin from (the listener trusts it).
pub const NGINX_SOURCE: &str = "127.0.0.12";

/// haproxy in TCP mode on 127.0.0.1 in front of the origin at 127.0.0.1:`origin`, sending a PROXY
/// header (`send` is `send-proxy` or `send-proxy-v2`), from [`HAPROXY_SOURCE`] (the config the
/// README shows).
pub fn haproxy(origin: u16, send: &str) -> Daemon {
    haproxy_with(origin, send, 64)
}

/// [`haproxy`] with room for `maxconn` connections at once (the README's configuration: 64).
pub fn haproxy_with(origin: u16, send: &str, maxconn: u32) -> Daemon {
    require("haproxy");
    let dir = temp_dir("haproxy");
    let port = free_port("127.0.0.1");
    let config = format!(
        "global\n    maxconn {maxconn}\n\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\n\
         frontend libp2p\n    bind 127.0.0.1:{port}\n    default_backend node\n\n\
         backend node\n    server node1 127.0.0.1:{origin} {send} source {HAPROXY_SOURCE}\n"
    );
    let conf = dir.join("haproxy.cfg");
    std::fs::write(&conf, config).expect("config");
    let mut command = Command::new("haproxy");
    command.arg("-db").arg("-f").arg(&conf);
    Daemon::start("haproxy", command, dir, ([127, 0, 0, 1], port).into())
}

/// nginx terminating TLS (`cert_pem`, `key_pem`) in front of the `/ws` origin at
/// 127.0.0.1:`origin`, connecting from [`NGINX_SOURCE`]: an `http` server that proxies the
/// WebSocket upgrade with `X-Forwarded-For` and `X-Forwarded-Proto` (clearing a client's own
/// `Forwarded` and `X-Real-IP`) (at `daemon.addr`), and a
/// `stream` server that sends a PROXY header (at the returned address). The config the README shows.
pub fn nginx(origin: u16, cert_pem: &str, key_pem: &str) -> (Daemon, SocketAddr) {
    nginx_with(origin, cert_pem, key_pem, true)
}

/// [`nginx`], clearing the forwarding headers it does not set (`Forwarded`, `X-Real-IP`) only when
/// `clear_unset` (otherwise it passes a client's own on untouched, as nginx does by default).
pub fn nginx_with(
    origin: u16,
    cert_pem: &str,
    key_pem: &str,
    clear_unset: bool,
) -> (Daemon, SocketAddr) {
    require("nginx");
    let dir = temp_dir("nginx");
    let https = free_port("127.0.0.1");
    let stream = free_port("127.0.0.1");
    std::fs::write(dir.join("cert.pem"), cert_pem).expect("cert");
    std::fs::write(dir.join("key.pem"), key_pem).expect("key");
    let d = dir.display();
    let clear = if clear_unset {
        "proxy_set_header Forwarded \"\";\n            proxy_set_header X-Real-IP \"\";"
    } else {
        "# Forwarded and X-Real-IP pass through"
    };
    let config = format!(
        r#"load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 512; }}

http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}

    server {{
        listen 127.0.0.1:{https} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        location / {{
            proxy_pass http://127.0.0.1:{origin};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            {clear}
            proxy_bind {NGINX_SOURCE};
            proxy_read_timeout 1h;
        }}
    }}
}}

stream {{
    server {{
        listen 127.0.0.1:{stream} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        proxy_pass 127.0.0.1:{origin};
        proxy_protocol on;
        proxy_bind {NGINX_SOURCE};
    }}
}}
"#
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config).expect("config");
    let mut command = Command::new("nginx");
    command
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"]);
    let stream_addr: SocketAddr = ([127, 0, 0, 1], stream).into();
    let mut daemon = Daemon::start("nginx", command, dir, ([127, 0, 0, 1], https).into());
    daemon.wait_for(stream_addr);
    (daemon, stream_addr)
}
