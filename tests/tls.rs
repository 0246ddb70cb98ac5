//! Secure WebSockets with an rcgen-made CA: round trips, SNI, typed verification errors, certificate
//! reload, trusting the OS certificate store (native roots), and the spec's loopback rule for plain
//! /ws listeners.

mod common;

use std::{process::Command, time::Instant};

use common::*;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::core::{
    transport::{ListenerId, TransportError, TransportEvent},
    Transport as _,
};
use libp2p_ws::{tls::dev::TestCa, Config, Error, ServerCertificate, TlsConfig, TlsError};

fn server_config(certificate: &ServerCertificate) -> Config {
    Config::default().with_tls(TlsConfig::new().with_server_certificate(certificate))
}

fn client_trusting(ca: &TestCa) -> Config {
    Config::default().with_tls(TlsConfig::new().add_root_der(ca.certificate()))
}

fn certificate(ca: &TestCa, names: &[&str]) -> ServerCertificate {
    let (chain, key) = ca.issue(names).expect("issue");
    ServerCertificate::from_der(chain, key).expect("usable certificate")
}

/// Dials `target` (with `{port}` replaced) at a TLS listener; returns the dial result.
async fn dial_tls<R: Runtime>(
    server: Config,
    client: Config,
    target: &str,
) -> Result<Output<R>, Error> {
    let mut listener = Transport::<R>::new(server);
    let (_, addr) = listen::<R>(&mut listener, "/ip4/127.0.0.1/tcp/0/tls/ws").await;
    let port = addr.to_string().split('/').nth(4).unwrap().to_string();
    let mut dialer = Transport::<R>::new(client);
    let dial = dialer
        .dial(
            target.replace("{port}", &port).parse().unwrap(),
            dial_opts(),
        )
        .unwrap();
    // Keep the listener accepting while the dial runs.
    let accept = spawn::<R, _>(async move {
        loop {
            if let TransportEvent::Incoming { upgrade, .. } = next_event::<R>(&mut listener).await {
                let _ = upgrade.await;
            }
        }
    });
    let result = dial.await;
    accept.cancel().await;
    result
}

async fn wss_and_tls_ws_ping_over_noise_and_yamux<R: Runtime>() {
    let ca = TestCa::new("tls test CA").unwrap();
    let cert = certificate(&ca, &["localhost", "127.0.0.1"]);
    for listen_addr in ["/ip4/127.0.0.1/tcp/0/tls/ws", "/ip4/127.0.0.1/tcp/0/wss"] {
        let mut listener = ping_swarm::<R>(server_config(&cert));
        let mut dialer = ping_swarm::<R>(client_trusting(&ca));
        listener.listen_on(listen_addr.parse().unwrap()).unwrap();
        let addr = first_listen_addr(&mut listener).await;
        assert!(
            addr.to_string().ends_with("/tls/ws"),
            "canonical form: {addr}"
        );
        let peer = ping_once(&mut listener, &mut dialer, addr.clone())
            .await
            .expect("ping over TLS");
        assert_eq!(peer, *listener.local_peer_id());
        // The /wss spelling of the same address works too.
        let wss: libp2p::Multiaddr = addr.to_string().replace("/tls/ws", "/wss").parse().unwrap();
        let mut dialer = ping_swarm::<R>(client_trusting(&ca));
        ping_once(&mut listener, &mut dialer, wss)
            .await
            .expect("ping over /wss");
    }
}

async fn sni_names_the_certificate_when_dialing_an_ip<R: Runtime>() {
    let ca = TestCa::new("sni CA").unwrap();
    let cert = certificate(&ca, &["localhost"]);
    dial_tls::<R>(
        server_config(&cert),
        client_trusting(&ca),
        "/ip4/127.0.0.1/tcp/{port}/tls/sni/localhost/ws",
    )
    .await
    .expect("SNI localhost matches the certificate");
    // Without SNI the IP is verified, and the certificate does not name it.
    let error = dial_tls::<R>(
        server_config(&cert),
        client_trusting(&ca),
        "/ip4/127.0.0.1/tcp/{port}/tls/ws",
    )
    .await
    .expect_err("127.0.0.1 is not in the certificate");
    assert!(
        matches!(error, Error::Tls(TlsError::NameMismatch { .. })),
        "{error:?}"
    );
}

async fn verification_failures_are_typed_and_fast<R: Runtime>() {
    let ca = TestCa::new("verification CA").unwrap();
    let other_ca = TestCa::new("some other CA").unwrap();

    let start = Instant::now();
    let error = dial_tls::<R>(
        server_config(&certificate(&ca, &["other.example"])),
        client_trusting(&ca),
        "/dns/localhost/tcp/{port}/wss",
    )
    .await
    .expect_err("name mismatch");
    println!("name mismatch after {:?}: {error}", start.elapsed());
    assert!(
        matches!(error, Error::Tls(TlsError::NameMismatch { .. })),
        "{error:?}"
    );

    let start = Instant::now();
    let error = dial_tls::<R>(
        server_config(&certificate(&ca, &["localhost"])),
        client_trusting(&other_ca),
        "/dns/localhost/tcp/{port}/wss",
    )
    .await
    .expect_err("unknown issuer");
    println!("unknown issuer after {:?}: {error}", start.elapsed());
    assert!(
        matches!(error, Error::Tls(TlsError::UnknownIssuer { .. })),
        "{error:?}"
    );

    let (chain, key) = ca.issue_expired(&["localhost"]).unwrap();
    let expired = ServerCertificate::from_der(chain, key).unwrap();
    let start = Instant::now();
    let error = dial_tls::<R>(
        server_config(&expired),
        client_trusting(&ca),
        "/dns/localhost/tcp/{port}/wss",
    )
    .await
    .expect_err("expired");
    println!("expired after {:?}: {error}", start.elapsed());
    assert!(
        matches!(error, Error::Tls(TlsError::Expired { .. })),
        "{error:?}"
    );

    // The default client trusts only the Mozilla roots.
    let error = dial_tls::<R>(
        server_config(&certificate(&ca, &["localhost"])),
        Config::default(),
        "/dns/localhost/tcp/{port}/wss",
    )
    .await
    .expect_err("test CA is not a Mozilla root");
    assert!(
        matches!(error, Error::Tls(TlsError::UnknownIssuer { .. })),
        "{error:?}"
    );
}

async fn danger_option_accepts_any_certificate<R: Runtime>() {
    let ca = TestCa::new("untrusted CA").unwrap();
    let client = Config::default().with_tls(TlsConfig::new().danger_accept_invalid_certificates());
    dial_tls::<R>(
        server_config(&certificate(&ca, &["nothing.example"])),
        client,
        "/ip4/127.0.0.1/tcp/{port}/wss",
    )
    .await
    .expect("verification skipped");
}

async fn reload_swaps_the_certificate_for_new_connections_only<R: Runtime>() {
    let old_ca = TestCa::new("old CA").unwrap();
    let new_ca = TestCa::new("new CA").unwrap();
    let cert = certificate(&old_ca, &["localhost"]);
    let mut listener = Transport::<R>::new(server_config(&cert));
    let (_, addr) = listen::<R>(&mut listener, "/ip4/127.0.0.1/tcp/0/tls/sni/localhost/ws").await;
    let (upgrades_tx, upgrades) = futures::channel::mpsc::unbounded();
    spawn::<R, _>(async move {
        loop {
            if let TransportEvent::Incoming { upgrade, .. } = next_event::<R>(&mut listener).await {
                let _ = upgrades_tx.unbounded_send(upgrade);
            }
        }
    });
    let mut upgrades = futures::StreamExt::fuse(upgrades);
    let dial = |ca: &TestCa| {
        Transport::<R>::new(client_trusting(ca))
            .dial(addr.clone(), dial_opts())
            .unwrap()
    };

    // Before the reload: the old certificate.
    let (mut old_client, mut old_server) = futures::join!(dial(&old_ca), async {
        futures::StreamExt::select_next_some(&mut upgrades)
            .await
            .await
    });
    let (old_client, old_server) = (
        old_client.as_mut().expect("old cert trusted"),
        old_server.as_mut().unwrap(),
    );

    let (chain, key) = new_ca.issue(&["localhost"]).unwrap();
    cert.reload(chain, key).unwrap();

    // After: a new dial sees the new certificate...
    let (new_client, _) = futures::join!(dial(&new_ca), async {
        let _ = futures::StreamExt::select_next_some(&mut upgrades)
            .await
            .await;
    });
    new_client.expect("new certificate presented");
    let (stale, _) = futures::join!(dial(&old_ca), async {
        let _ = futures::StreamExt::select_next_some(&mut upgrades)
            .await
            .await;
    });
    let error = stale.expect_err("old certificate no longer presented");
    assert!(
        matches!(error, Error::Tls(TlsError::UnknownIssuer { .. })),
        "{error:?}"
    );

    // ...while the connection opened before keeps working.
    old_client.write_all(b"still here").await.unwrap();
    old_client.flush().await.unwrap();
    let mut buf = [0u8; 10];
    old_server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
}

#[test]
fn reload_from_pem_files_and_bad_files_keep_the_old_certificate() {
    let ca = TestCa::new("pem CA").unwrap();
    let dir = std::env::temp_dir().join(format!("libp2p-ws-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (chain, key) = ca.issue(&["localhost"]).unwrap();
    std::fs::write(
        dir.join("chain.pem"),
        libp2p_ws::tls::dev::chain_pem(&chain),
    )
    .unwrap();
    std::fs::write(dir.join("key.pem"), libp2p_ws::tls::dev::key_pem(&key)).unwrap();
    let cert =
        ServerCertificate::from_pem_files(dir.join("chain.pem"), dir.join("key.pem")).unwrap();
    assert_eq!(cert.chain(), chain);

    std::fs::write(dir.join("garbage.pem"), "not a certificate").unwrap();
    let error = cert
        .reload_from_pem_files(dir.join("garbage.pem"), dir.join("key.pem"))
        .expect_err("garbage is refused");
    assert!(
        matches!(error, TlsError::NoCertificates { .. }),
        "{error:?}"
    );
    assert_eq!(cert.chain(), chain, "the old certificate stays");

    let (chain2, key2) = ca.issue(&["localhost"]).unwrap();
    std::fs::write(
        dir.join("chain.pem"),
        libp2p_ws::tls::dev::chain_pem(&chain2),
    )
    .unwrap();
    std::fs::write(dir.join("key.pem"), libp2p_ws::tls::dev::key_pem(&key2)).unwrap();
    cert.reload_from_pem_files(dir.join("chain.pem"), dir.join("key.pem"))
        .unwrap();
    assert_eq!(cert.chain(), chain2);
    // A key that does not belong to the chain is refused.
    std::fs::write(dir.join("key.pem"), libp2p_ws::tls::dev::key_pem(&key)).unwrap();
    assert!(cert
        .reload_from_pem_files(dir.join("chain.pem"), dir.join("key.pem"))
        .is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn tls_listen_without_certificate_says_how_to_configure_one<R: Runtime>() {
    let mut transport = Transport::<R>::new(Config::default());
    let error = transport
        .listen_on(
            ListenerId::next(),
            "/ip4/127.0.0.1/tcp/0/tls/ws".parse().unwrap(),
        )
        .expect_err("no certificate");
    match error {
        TransportError::Other(error @ Error::NoServerCertificate { .. }) => {
            assert!(
                error
                    .to_string()
                    .contains("ServerCertificate::from_pem_files"),
                "{error}"
            )
        }
        other => panic!("{other:?}"),
    }
}

async fn plain_ws_listening_is_loopback_only_unless_opted_out<R: Runtime>() {
    let mut strict = Transport::<R>::new(Config::default());
    let error = strict
        .listen_on(ListenerId::next(), "/ip4/0.0.0.0/tcp/0/ws".parse().unwrap())
        .expect_err("0.0.0.0 is refused");
    match error {
        TransportError::Other(error @ Error::InsecureListen { .. }) => {
            assert!(
                error.to_string().contains("danger_insecure_listen"),
                "{error}"
            )
        }
        other => panic!("{other:?}"),
    }
    listen::<R>(&mut strict, "/ip4/127.0.0.1/tcp/0/ws").await;
    listen::<R>(&mut strict, "/dns4/localhost/tcp/0/ws").await;

    // Opted out: 0.0.0.0 works and reports every IPv4 interface address.
    let mut relaxed = Transport::<R>::new(Config::default().danger_insecure_listen(true));
    relaxed
        .listen_on(ListenerId::next(), "/ip4/0.0.0.0/tcp/0/ws".parse().unwrap())
        .expect("opted out");
    let mut reported = Vec::new();
    let non_loopback = loop {
        let event = within::<R, _>(
            std::time::Duration::from_secs(5),
            next_event::<R>(&mut relaxed),
        )
        .await;
        if let TransportEvent::NewAddress { listen_addr, .. } = event {
            reported.push(listen_addr.to_string());
            let ip: std::net::Ipv4Addr = listen_addr
                .to_string()
                .split('/')
                .nth(2)
                .unwrap()
                .parse()
                .unwrap();
            if !ip.is_loopback() {
                break ip;
            }
        }
    };
    println!("0.0.0.0 reported {reported:?}");
    let on_interface = format!("/ip4/{non_loopback}/tcp/0/ws");
    let error = strict
        .listen_on(ListenerId::next(), on_interface.parse().unwrap())
        .expect_err("interface address is refused");
    assert!(
        matches!(error, TransportError::Other(Error::InsecureListen { .. })),
        "{error:?}"
    );
    relaxed
        .listen_on(ListenerId::next(), on_interface.parse().unwrap())
        .expect("opted out");
}

/// A certificate source of the application's own picks the certificate per connection by SNI (and
/// sees the ALPN offer); refusing a name refuses the handshake.
async fn a_certificate_source_picks_the_certificate_per_server_name<R: Runtime>() {
    use std::sync::{Arc, Mutex};

    use libp2p_ws::{Certificate, CertificateSource, ClientHelloInfo};

    #[derive(Debug)]
    struct ByName {
        certificates: Vec<(&'static str, Certificate)>,
        asked: Mutex<Vec<(Option<String>, usize)>>,
    }

    impl CertificateSource for ByName {
        fn certificate(&self, hello: &ClientHelloInfo<'_>) -> Option<Certificate> {
            let mut asked = self.asked.lock().unwrap();
            asked.push((hello.server_name().map(str::to_string), hello.alpn().len()));
            let name = hello.server_name()?;
            self.certificates
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| c.clone())
        }
    }

    let ca = TestCa::new("source CA").unwrap();
    let issue = |name| {
        let (chain, key) = ca.issue(&[name]).unwrap();
        Certificate::from_der(chain, key).unwrap()
    };
    let source = Arc::new(ByName {
        certificates: vec![("a.test", issue("a.test")), ("b.test", issue("b.test"))],
        asked: Mutex::new(Vec::new()),
    });
    let server =
        Config::default().with_tls(TlsConfig::new().with_certificate_source(source.clone()));
    for name in ["a.test", "b.test"] {
        let target = format!("/ip4/127.0.0.1/tcp/{{port}}/tls/sni/{name}/ws");
        dial_tls::<R>(server.clone(), client_trusting(&ca), &target)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let error = dial_tls::<R>(
        server.clone(),
        client_trusting(&ca),
        "/ip4/127.0.0.1/tcp/{port}/tls/sni/c.test/ws",
    )
    .await
    .expect_err("the source has no certificate for c.test");
    println!("refused by the source: {error}");
    assert!(matches!(error, Error::Tls(_)), "{error:?}");
    let asked = source.asked.lock().unwrap().clone();
    let names: Vec<_> = asked.iter().map(|(n, _)| n.as_deref()).collect();
    assert_eq!(names, [Some("a.test"), Some("b.test"), Some("c.test")]);
}

/// `TlsConfig::with_native_roots(true)` trusts the OS store: a server whose CA is only in the store
/// (`SSL_CERT_FILE`, which rustls-native-certs reads) is verified with native roots on, refused
/// without. The environment is per process, so the dialing half runs in a child copy of this test
/// binary.
#[test]
fn native_roots_trust_the_os_store() {
    const CHILD: &str = "LIBP2P_WS_NATIVE_ROOTS_CHILD";
    if std::env::var_os(CHILD).is_some() {
        return native_roots_child();
    }
    let ca = TestCa::new("native roots CA").unwrap();
    let (chain, key) = ca.issue(&["localhost"]).unwrap();
    let dir = std::env::temp_dir().join(format!("libp2p-ws-native-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.certificate_pem()).unwrap();
    std::fs::write(
        dir.join("chain.pem"),
        libp2p_ws::tls::dev::chain_pem(&chain),
    )
    .unwrap();
    std::fs::write(dir.join("key.pem"), libp2p_ws::tls::dev::key_pem(&key)).unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "native_roots_trust_the_os_store", "--nocapture"])
        .env(CHILD, &dir)
        .env("SSL_CERT_FILE", dir.join("ca.pem"))
        .env_remove("SSL_CERT_DIR")
        .output()
        .expect("the test binary runs");
    std::fs::remove_dir_all(&dir).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the child failed");
    assert!(
        stdout.contains("native roots: verified, without: refused"),
        "{stdout}"
    );
}

fn native_roots_child() {
    let dir = std::path::PathBuf::from(std::env::var_os("LIBP2P_WS_NATIVE_ROOTS_CHILD").unwrap());
    let certificate =
        ServerCertificate::from_pem_files(dir.join("chain.pem"), dir.join("key.pem")).unwrap();
    run::<AsyncStd, _>(native_roots_case::<AsyncStd>(certificate.clone()));
    run::<Tokio, _>(native_roots_case::<Tokio>(certificate));
    println!("native roots: verified, without: refused");
}

async fn native_roots_case<R: Runtime>(certificate: ServerCertificate) {
    let server = Config::default().with_tls(TlsConfig::new().with_server_certificate(&certificate));
    let mut listener = Transport::<R>::new(server);
    let (_, addr) = listen::<R>(&mut listener, "/ip4/127.0.0.1/tcp/0/tls/sni/localhost/ws").await;
    let stop = drive_listener::<R, _>(listener, |upgrade| {
        R::spawn_detached(async move {
            if let Ok(mut conn) = upgrade.await {
                let mut buf = [0u8; 2];
                if conn.read_exact(&mut buf).await.is_ok() {
                    let _ = conn.write_all(&buf).await;
                    let _ = conn.flush().await;
                }
            }
        })
    });
    for native in [true, false] {
        let tls = TlsConfig::new()
            .with_webpki_roots(false)
            .with_native_roots(native);
        let result = Transport::<R>::new(Config::default().with_tls(tls))
            .dial(addr.clone(), dial_opts())
            .unwrap()
            .await;
        match (native, result) {
            (true, Ok(mut conn)) => {
                conn.write_all(b"ok").await.unwrap();
                conn.flush().await.unwrap();
                let mut buf = [0u8; 2];
                conn.read_exact(&mut buf).await.unwrap();
                assert_eq!(&buf, b"ok");
            }
            (false, Err(libp2p_ws::Error::Tls(libp2p_ws::TlsError::UnknownIssuer { .. }))) => {}
            (native, other) => panic!("{}: native roots {native}: {other:?}", R::NAME),
        }
    }
    drop(stop);
}

runtime_tests!(
    a_certificate_source_picks_the_certificate_per_server_name,
    wss_and_tls_ws_ping_over_noise_and_yamux,
    sni_names_the_certificate_when_dialing_an_ip,
    verification_failures_are_typed_and_fast,
    danger_option_accepts_any_certificate,
    reload_swaps_the_certificate_for_new_connections_only,
    plain_ws_listening_is_loopback_only_unless_opted_out,
    tls_listen_without_certificate_says_how_to_configure_one,
);
