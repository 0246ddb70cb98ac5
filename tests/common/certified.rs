//! The ping example with a certificate it obtains itself from Debian's `pebble`: by ACME
//! (TLS-ALPN-01 on its `/tls/ws` listener's port) or by AutoTLS (DNS-01 through the test broker,
//! a wildcard listener announcing its concrete addresses). For the tests of the ping node's
//! contract (`ping_example.rs`) and of other TLS stacks verifying it
//! (`certificates_in_browsers.rs`).

use std::{path::PathBuf, time::Instant};

use libp2p::identity::Keypair;

use super::{
    broker::Broker,
    daemon::{free_port, temp_dir},
    pebble::{Pebble, PebbleOptions},
    ping_node::{assert_pings, ping_binary, Node},
    Runtime,
};

/// A ping node whose certificate is in use; dropped, it kills the node, the broker and pebble,
/// and removes its dir.
pub struct CertifiedNode {
    pub node: Node,
    pub port: u16,
    /// Its peer id.
    pub peer: String,
    /// The name its certificate is for: the ACME name, or the AutoTLS name on 127.0.0.1.
    pub name: String,
    /// Its `certificate` line, after the word (`<name> <not-after>`).
    pub certificate: String,
    /// Its `listening` lines so far, after the word.
    pub announced: Vec<String>,
    /// Pebble's issuing root, as a PEM file.
    pub root: PathBuf,
    pub dir: PathBuf,
    pub broker: Option<Broker>,
    pub pebble: Pebble,
}

/// pebble validating on `port`.
pub fn pebble(port: u16) -> Pebble {
    Pebble::start(PebbleOptions {
        tls_port: port,
        validity_secs: None,
        blocklist: Vec::new(),
    })
}

/// Starts the AutoTLS ping node (identity `keypair`, kept in `dir`): a `/tcp` listener (the
/// broker dials it back) and a wildcard `/tls/sni/*.libp2p.direct/ws` listener on `port`, pebble
/// as the CA and `broker`, both trusted through `--acme-ca`, and pebble-challtestsrv as its name
/// server (where it sees the broker's TXT record).
pub fn spawn_autotls<R: Runtime>(
    pebble: &Pebble,
    broker: &Broker,
    keypair: &Keypair,
    port: u16,
    dir: &std::path::Path,
) -> Node {
    let identity = dir.join("identity.key");
    std::fs::write(&identity, keypair.to_protobuf_encoding().unwrap()).unwrap();
    Node::start::<R>(&[
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
        "--dns-server",
        &pebble.dns.to_string(),
    ])
}

impl CertifiedNode {
    /// The node listening on `/ip4/127.0.0.1/tcp/<port>/tls/ws` with `--acme` for `name`, once
    /// its `listening` and `certificate` lines are out.
    pub fn acme<R: Runtime>(name: &str) -> CertifiedNode {
        let port = free_port("127.0.0.1");
        let pebble = pebble(port);
        let dir = temp_dir("certified-acme");
        ping_binary();
        let started = Instant::now();
        let node = Node::start::<R>(&[
            "--listen",
            &format!("/ip4/127.0.0.1/tcp/{port}/tls/ws"),
            "--acme",
            &pebble.directory,
            "--acme-domain",
            name,
            "--acme-ca",
            &pebble.directory_ca.display().to_string(),
            "--acme-cache",
            &dir.join("cache").display().to_string(),
        ]);
        let (announced, certificate) = lines_until(&node, |announced, certificate| {
            !announced.is_empty() && certificate.is_some()
        });
        eprintln!(
            "{}: ACME certificate in use after {:?}",
            R::NAME,
            started.elapsed()
        );
        let peer = announced[0].rsplit('/').next().unwrap().to_string();
        CertifiedNode::new(
            node,
            port,
            peer,
            name.into(),
            certificate,
            announced,
            dir,
            None,
            pebble,
        )
    }

    /// The AutoTLS node (identity `keypair`), once its certificate is in use and its wildcard
    /// listener has announced both concrete forms (after the `/tcp` listener's line).
    pub fn autotls<R: Runtime>(keypair: &Keypair) -> CertifiedNode {
        let port = free_port("127.0.0.1");
        let pebble = pebble(port);
        let broker = Broker::start(&pebble, "localhost");
        let dir = temp_dir("certified-autotls");
        ping_binary();
        let started = Instant::now();
        let node = spawn_autotls::<R>(&pebble, &broker, keypair, port, &dir);
        let (announced, certificate) = lines_until(&node, |announced, certificate| {
            announced.len() == 3 && certificate.is_some()
        });
        eprintln!(
            "{}: AutoTLS certificate in use after {:?}",
            R::NAME,
            started.elapsed()
        );
        let peer = keypair.public().to_peer_id();
        let name = format!(
            "127-0-0-1.{}.libp2p.direct",
            libp2p_ws::acme::base36_peer_id(&peer)
        );
        let peer = peer.to_string();
        CertifiedNode::new(
            node,
            port,
            peer,
            name,
            certificate,
            announced,
            dir,
            Some(broker),
            pebble,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        node: Node,
        port: u16,
        peer: String,
        name: String,
        certificate: String,
        announced: Vec<String>,
        dir: PathBuf,
        broker: Option<Broker>,
        pebble: Pebble,
    ) -> CertifiedNode {
        let root = dir.join("pebble-root.pem");
        std::fs::write(&root, pebble.issuing_root_pem()).unwrap();
        CertifiedNode {
            node,
            port,
            peer,
            name,
            certificate,
            announced,
            root,
            dir,
            broker,
            pebble,
        }
    }

    /// `/dns4/<name>/tcp/<port>/tls/ws/p2p/<id>`.
    pub fn by_dns4(&self) -> String {
        format!(
            "/dns4/{}/tcp/{}/tls/ws/p2p/{}",
            self.name, self.port, self.peer
        )
    }

    /// `/ip4/127.0.0.1/tcp/<port>/tls/sni/<name>/ws/p2p/<id>`.
    pub fn by_sni(&self) -> String {
        format!(
            "/ip4/127.0.0.1/tcp/{}/tls/sni/{}/ws/p2p/{}",
            self.port, self.name, self.peer
        )
    }

    /// A dialer's stdout pings this node once, under a `connected` line naming its peer id.
    pub fn assert_pinged(&self, lines: &[String]) {
        assert_pings(lines, 1);
        let connected = lines.iter().find(|l| l.starts_with("connected ")).unwrap();
        assert_eq!(
            connected.split(' ').nth(1),
            Some(self.peer.as_str()),
            "{connected}"
        );
    }
}

/// The node's `listening` and `certificate` lines until `done` says so; `connected` lines (the
/// AutoTLS broker's dial-back) are skipped, any other line fails.
fn lines_until(
    node: &Node,
    done: impl Fn(&[String], &Option<String>) -> bool,
) -> (Vec<String>, String) {
    let (mut announced, mut certificate) = (Vec::new(), None);
    while !done(&announced, &certificate) {
        let line = node.next_line();
        if let Some(rest) = line.strip_prefix("listening ") {
            announced.push(rest.to_string());
        } else if let Some(rest) = line.strip_prefix("certificate ") {
            certificate = Some(rest.to_string());
        } else if !line.starts_with("connected ") {
            panic!("unexpected line {line:?}");
        }
    }
    (announced, certificate.unwrap())
}

impl Drop for CertifiedNode {
    fn drop(&mut self) {
        let _ = self.node.child.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
