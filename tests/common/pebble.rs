//! A real ACME CA on loopback for the ACME tests: Debian's `pebble`, with `pebble-challtestsrv`
//! as its DNS server (every name resolves to 127.0.0.1), its directory served with a certificate
//! of a test CA of ours, and its TLS-ALPN-01 validations sent to the port the test names.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::Command,
    sync::Arc,
};

use libp2p_ws::tls::dev::{chain_pem, key_pem, TestCa};

use super::daemon::{free_port, require, temp_dir, Daemon};

/// pebble and its DNS server, killed when dropped.
pub struct Pebble {
    /// The directory URL.
    pub directory: String,
    /// The PEM file of the CA that signed the directory's certificate (trust it to reach the
    /// directory).
    pub directory_ca: PathBuf,
    /// The test CA itself.
    pub ca: TestCa,
    /// pebble-challtestsrv's DNS server (every A query answers 127.0.0.1; TXT records as set).
    pub dns: SocketAddr,
    /// pebble-challtestsrv's management API (`/set-txt`).
    pub dns_management: SocketAddr,
    management: SocketAddr,
    _pebble: Daemon,
    _dns: Daemon,
}

/// Which validations pebble's VA makes.
pub struct PebbleOptions {
    /// The port pebble's TLS-ALPN-01 validations connect to.
    pub tls_port: u16,
    /// The life of the certificates it issues (`None`: pebble's default, 5 years).
    pub validity_secs: Option<u64>,
    /// Names pebble refuses to issue for.
    pub blocklist: Vec<String>,
}

impl Pebble {
    /// Starts challtestsrv (DNS only) and pebble (no sleeps before validations, no refused
    /// nonces unless `PEBBLE_WFE_NONCEREJECT` says otherwise).
    pub fn start(options: PebbleOptions) -> Pebble {
        require("pebble");
        require("pebble-challtestsrv");
        let dns_dir = temp_dir("challtestsrv");
        let dns_port = free_port("127.0.0.1");
        let dns_management = free_port("127.0.0.1");
        let mut dns = Command::new("pebble-challtestsrv");
        dns.args([
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
            "-dns01",
            &format!("127.0.0.1:{dns_port}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{dns_management}"),
        ]);
        // challtestsrv's DNS is UDP and TCP; its management port is the readiness sign.
        let dns = Daemon::start(
            "pebble-challtestsrv",
            dns,
            dns_dir,
            SocketAddr::from(([127, 0, 0, 1], dns_management)),
        );

        let dir = temp_dir("pebble");
        let ca = TestCa::new("pebble directory test CA").expect("CA");
        let (chain, key) = ca.issue(&["localhost", "127.0.0.1"]).expect("issue");
        std::fs::write(dir.join("cert.pem"), chain_pem(&chain)).expect("write");
        std::fs::write(dir.join("key.pem"), key_pem(&key)).expect("write");
        let directory_ca = dir.join("directory-ca.pem");
        std::fs::write(&directory_ca, ca.certificate_pem()).expect("write");
        let port = free_port("127.0.0.1");
        let management = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
        let mut config = serde_json_like(&[
            ("listenAddress", format!("\"127.0.0.1:{port}\"")),
            ("managementListenAddress", format!("\"{management}\"")),
            (
                "certificate",
                format!("\"{}\"", dir.join("cert.pem").display()),
            ),
            (
                "privateKey",
                format!("\"{}\"", dir.join("key.pem").display()),
            ),
            ("httpPort", "5002".into()),
            ("tlsPort", options.tls_port.to_string()),
            ("ocspResponderURL", "\"\"".into()),
            ("externalAccountBindingRequired", "false".into()),
            (
                "domainBlocklist",
                format!(
                    "[{}]",
                    options
                        .blocklist
                        .iter()
                        .map(|n| format!("\"{n}\""))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
        ]);
        if let Some(validity) = options.validity_secs {
            config = config.replacen(
                '{',
                &format!("{{\"certificateValidityPeriod\": {validity},"),
                1,
            );
        }
        std::fs::write(dir.join("pebble.json"), format!("{{\"pebble\": {config}}}"))
            .expect("write");
        let mut pebble = Command::new("pebble");
        pebble
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{dns_port}"))
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env(
                "PEBBLE_WFE_NONCEREJECT",
                std::env::var("PEBBLE_WFE_NONCEREJECT").unwrap_or_else(|_| "0".into()),
            );
        let mut pebble = Daemon::start(
            "pebble",
            pebble,
            dir,
            SocketAddr::from(([127, 0, 0, 1], port)),
        );
        pebble.wait_for(management);
        Pebble {
            directory: format!("https://localhost:{port}/dir"),
            directory_ca,
            ca,
            dns: SocketAddr::from(([127, 0, 0, 1], dns_port)),
            dns_management: SocketAddr::from(([127, 0, 0, 1], dns_management)),
            management,
            _pebble: pebble,
            _dns: dns,
        }
    }

    /// The root that signs the certificates pebble issues (PEM), from its management interface.
    pub fn issuing_root_pem(&self) -> String {
        let body = self.management_get("/roots/0");
        String::from_utf8(body).expect("PEM text")
    }

    /// A GET to pebble's management interface over TLS (its certificate is the directory's).
    fn management_get(&self, path: &str) -> Vec<u8> {
        use futures_rustls::rustls::{self, pki_types::ServerName, ClientConfig, RootCertStore};
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.certificate()).expect("root");
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        let name = ServerName::try_from("localhost").expect("name");
        let mut tls = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut tcp = TcpStream::connect(self.management).expect("connect");
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("read timeout");
        let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let at = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        let head = String::from_utf8_lossy(&response[..at]).to_string();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        response[at + 4..].to_vec()
    }
}

/// A JSON object of already-encoded values.
fn serde_json_like(members: &[(&str, String)]) -> String {
    let members: Vec<String> = members
        .iter()
        .map(|(name, value)| format!("\"{name}\": {value}"))
        .collect();
    format!("{{{}}}", members.join(", "))
}
