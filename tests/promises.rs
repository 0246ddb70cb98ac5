//! Documented behaviour that no test caught when changed (issue 11, "promised but untested"): the
//! upgrade timeout against a peer stalling inside noise, `TCP_NODELAY` on both sides, trusting the
//! OS certificate store, and a listener's `AddressExpired` events. Each runs on both runtimes.

mod common;

use std::{
    pin::Pin,
    process::Command,
    time::{Duration, Instant},
};

use common::{raw::*, *};
use futures::{future::poll_fn, AsyncReadExt, AsyncWriteExt};
use libp2p::core::{
    transport::{ListenerId, TransportEvent},
    Transport as _,
};
use libp2p_ws::{provider::Provider, tls::dev::TestCa, Config, ServerCertificate, TlsConfig};

/// The upgraded stack's `with_upgrade_timeout` bounds noise and yamux: a listener that completes the
/// WebSocket handshake and then says nothing fails the dial at the upgrade timeout, not never.
async fn upgrade_timeout_bounds_a_peer_stalling_inside_noise<R: Runtime>() {
    // The peer: a bare WebSocket listener that upgrades and then holds the connection silently.
    let mut bare = Transport::<R>::new(Config::default());
    let (_, addr) = listen::<R>(&mut bare, "/ip4/127.0.0.1/tcp/0/ws").await;
    let (held_tx, held) = std::sync::mpsc::channel();
    let stop = drive_listener::<R, _>(bare, move |upgrade| {
        let held_tx = held_tx.clone();
        R::spawn_detached(async move {
            if let Ok(conn) = upgrade.await {
                let _ = held_tx.send(conn);
            }
        })
    });

    let limit = Duration::from_millis(800);
    let mut dialer = R::upgraded(
        &libp2p::identity::Keypair::generate_ed25519(),
        Config::default().with_upgrade_timeout(limit),
    );
    let start = Instant::now();
    let result = within::<R, _>(
        Duration::from_secs(10),
        dialer.dial(addr, dial_opts()).expect("dial accepted"),
    )
    .await;
    let took = start.elapsed();
    drop(stop);
    drop(held);
    println!("figure ({}): stalled inside noise, the dial failed after {took:?} (upgrade timeout {limit:?})", R::NAME);
    let error = result.expect_err("a stalled peer fails the dial");
    assert!(
        format!("{error:?}").contains("Timeout"),
        "a timeout, not another failure: {error:?}"
    );
    assert!(took >= limit && took < limit * 3, "{took:?}");
}

/// `TCP_NODELAY` is set on both sides of a connection by default, and on neither when turned off.
async fn nodelay_is_set_on_both_sides<R: Runtime>() {
    for nodelay in [true, false] {
        let config = Config::default().with_nodelay(nodelay);
        let (server, client) =
            connected_pair::<R>(config.clone(), config, "/ip4/127.0.0.1/tcp/0/ws").await;
        for (side, conn) in [("listener", &server), ("dialer", &client)] {
            let set = <R::Provider as Provider>::nodelay(conn.tcp()).expect("getsockopt");
            assert_eq!(set, nodelay, "{side} with with_nodelay({nodelay})");
        }
    }
}

/// The listener on 0.0.0.0 reports each interface address as it comes and goes: adding a loopback
/// address gives `NewAddress`, removing it `AddressExpired` (needs root, which CI has).
async fn a_wildcard_listener_reports_addresses_coming_and_going<R: Runtime>() {
    let extra = match R::NAME {
        "tokio" => "127.0.0.78",
        _ => "127.0.0.77",
    };
    let ip = |args: &[&str]| {
        let status = Command::new("ip")
            .args(args)
            .status()
            .expect("the ip command runs");
        assert!(status.success(), "ip {args:?} (this test needs root)");
    };
    let _ = Command::new("ip")
        .args(["addr", "del", &format!("{extra}/32"), "dev", "lo"])
        .output();
    let mut transport = Transport::<R>::new(Config::default().danger_insecure_listen(true));
    let id = ListenerId::next();
    transport
        .listen_on(id, "/ip4/0.0.0.0/tcp/0/ws".parse().unwrap())
        .unwrap();
    let wanted =
        |event: &TransportEvent<ListenerUpgrade<R>, libp2p_ws::Error>, expired: bool| match event {
            TransportEvent::NewAddress { listen_addr, .. } if !expired => listen_addr
                .to_string()
                .starts_with(&format!("/ip4/{extra}/tcp/")),
            TransportEvent::AddressExpired { listen_addr, .. } if expired => listen_addr
                .to_string()
                .starts_with(&format!("/ip4/{extra}/tcp/")),
            _ => false,
        };
    // The current addresses come first; 127.0.0.1 must be among them.
    let mut saw_loopback = false;
    let added = async {
        loop {
            let event = poll_fn(|cx| Pin::new(&mut transport).poll(cx)).await;
            if let TransportEvent::NewAddress { listen_addr, .. } = &event {
                if listen_addr.to_string().starts_with("/ip4/127.0.0.1/tcp/") && !saw_loopback {
                    saw_loopback = true;
                    ip(&["addr", "add", &format!("{extra}/32"), "dev", "lo"]);
                }
            }
            if wanted(&event, false) {
                break;
            }
        }
    };
    within::<R, _>(Duration::from_secs(10), added).await;
    ip(&["addr", "del", &format!("{extra}/32"), "dev", "lo"]);
    let expired = async {
        loop {
            let event = poll_fn(|cx| Pin::new(&mut transport).poll(cx)).await;
            if wanted(&event, true) {
                break;
            }
        }
    };
    within::<R, _>(Duration::from_secs(10), expired).await;
    assert!(transport.remove_listener(id));
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

/// A real failure rendered as anyhow renders a chain (`{:#}`): each message once. `listen_on` a port
/// in use on the upgraded stack (what `Swarm::new` and `SwarmBuilder` get): rust-libp2p's
/// `TransportError::Other` (empty), our `Error::Bind` (what failed), then the OS error (why).
/// (`SwarmBuilder::build` wraps every transport in its own `TransportTimeout`, whose error both
/// prints and sources its inner one: through a tokio swarm the message shows twice; that layer is
/// rust-libp2p's.)
async fn an_error_chain_shows_each_message_once<R: Runtime>() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut transport = R::upgraded(
        &libp2p::identity::Keypair::generate_ed25519(),
        Config::default(),
    );
    let error = transport
        .listen_on(
            ListenerId::next(),
            format!("/ip4/127.0.0.1/tcp/{port}/ws").parse().unwrap(),
        )
        .expect_err("the port is taken");
    let rendered = format!("{:#}", anyhow::Error::new(error));
    println!("figure ({}): {rendered}", R::NAME);
    let ours = format!("failed to listen on 127.0.0.1:{port}");
    assert_eq!(rendered.matches(&ours).count(), 1, "{rendered}");
    assert_eq!(
        rendered.matches("Address already in use").count(),
        1,
        "{rendered}"
    );
}

/// The complete stack keeps the upgrades' failures apart from the transport's and names the
/// step: a listener that completes the WebSocket upgrade and then answers multistream-select with
/// garbage fails the dial with `Error::Upgrade { step: Noise }`, shown once in a `{:#}` chain.
async fn an_upgrade_failure_names_its_step<R: Runtime>() {
    let (listener, addr) = raw_listener().await;
    let peer = spawn::<R, _>(async move {
        let mut raw = raw_accept(&listener).await;
        raw.send(&frame(true, 0, 2, None, b"\x13/not-multistream/9\n"))
            .await
            .unwrap();
        raw.read_to_close().await
    });
    let mut dialer = R::upgraded(
        &libp2p::identity::Keypair::generate_ed25519(),
        Config::default(),
    );
    let error = within::<R, _>(
        Duration::from_secs(10),
        dialer.dial(addr, dial_opts()).expect("dial accepted"),
    )
    .await
    .expect_err("garbage instead of multistream-select fails the dial");
    let ours = libp2p_ws::Error::from_io(&error);
    assert!(
        matches!(
            ours,
            Some(libp2p_ws::Error::Upgrade {
                step: libp2p_ws::UpgradeStep::Noise,
                ..
            })
        ),
        "{error:?}"
    );
    let rendered = format!("{:#}", anyhow::Error::new(error));
    println!("figure ({}): {rendered}", R::NAME);
    assert_eq!(rendered.matches("upgrade failed").count(), 1, "{rendered}");
    within::<R, _>(Duration::from_secs(10), peer).await;
}

runtime_tests!(
    an_upgrade_failure_names_its_step,
    an_error_chain_shows_each_message_once,
    upgrade_timeout_bounds_a_peer_stalling_inside_noise,
    nodelay_is_set_on_both_sides,
    a_wildcard_listener_reports_addresses_coming_and_going,
);
