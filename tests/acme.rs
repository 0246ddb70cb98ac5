//! Certificates from an ACME CA: Debian's `pebble` validates TLS-ALPN-01 challenges against the
//! listener's own `/tls/ws` port and issues; the listener serves what it got, a dial by the name
//! trusting pebble's root succeeds, a forced renewal replaces it while an open connection goes
//! on, a cache from a previous run is used without an order, and refusals and failed challenges
//! are reported with their reasons. Each test runs on both runtimes.

mod common;

use std::time::Duration;

use common::{
    daemon::temp_dir,
    pebble::{Pebble, PebbleOptions},
    *,
};
use futures::{channel::mpsc, AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::core::Transport as _;
use libp2p_ws::{
    acme::{AcmeCertificates, AcmeConfig, AcmeError, AcmeEvent, AcmeTask},
    Config, TlsConfig,
};

const NAME: &str = "node.acme.test";
/// An order against pebble takes well under a second here; this bounds it generously.
const ORDER: Duration = Duration::from_secs(30);

/// A `/tls/ws` listener on 127.0.0.1:`port` presenting `certificates`, polled on a task; the
/// upgrades it reports, its stop switch, and its port.
async fn listener<R: Runtime>(
    certificates: &AcmeCertificates,
    port: u16,
) -> (
    mpsc::UnboundedReceiver<ListenerUpgrade<R>>,
    futures::channel::oneshot::Sender<()>,
    u16,
) {
    listener_with::<R>(certificates, port, Config::default()).await
}

/// [`listener`] with the rest of the configuration from `config`.
async fn listener_with<R: Runtime>(
    certificates: &AcmeCertificates,
    port: u16,
    config: Config,
) -> (
    mpsc::UnboundedReceiver<ListenerUpgrade<R>>,
    futures::channel::oneshot::Sender<()>,
    u16,
) {
    let config = config
        .with_keep_alive(None)
        .with_tls(TlsConfig::new().with_acme_certificates(certificates));
    let mut transport = Transport::<R>::new(config);
    let (_, addr) = listen::<R>(&mut transport, &format!("/ip4/127.0.0.1/tcp/{port}/tls/ws")).await;
    let port = helpers::ip_and_port(&addr).expect("TCP").port();
    let (tx, rx) = mpsc::unbounded();
    let stop = drive_listener::<R, _>(transport, move |upgrade| {
        let _ = tx.unbounded_send(upgrade);
    });
    (rx, stop, port)
}

/// pebble validating against `port`.
fn pebble(port: u16) -> Pebble {
    Pebble::start(PebbleOptions {
        tls_port: port,
        validity_secs: None,
        blocklist: vec!["refused.acme.test".into()],
    })
}

/// The ACME configuration of the tests: pebble's directory, fast retries.
fn acme(pebble: &Pebble, names: &[&str]) -> AcmeConfig {
    AcmeConfig::new(pebble.directory.clone(), names.iter().copied())
        .add_directory_root_pem_file(&pebble.directory_ca)
        .expect("the directory's CA loads")
        .with_retry(Duration::from_millis(500), Duration::from_secs(2))
        .with_request_timeout(Duration::from_secs(10))
}

async fn next<R: Runtime>(task: &mut AcmeTask) -> AcmeEvent {
    within::<R, _>(ORDER, task.next())
        .await
        .expect("the task never ends")
}

/// A dialer that trusts pebble's issuing root only.
fn dialer<R: Runtime>(pebble: &Pebble) -> Transport<R> {
    let root = temp_dir("pebble-root").join("root.pem");
    std::fs::write(&root, pebble.issuing_root_pem()).expect("write");
    let tls = TlsConfig::new()
        .with_webpki_roots(false)
        .add_root_pem_file(&root)
        .expect("pebble's root loads");
    Transport::<R>::new(Config::default().with_keep_alive(None).with_tls(tls))
}

/// Dials `NAME` at `port` (SNI, so the certificate is checked for the name) and returns both
/// sides after a round trip.
async fn dial_by_name<R: Runtime>(
    dialer: &mut Transport<R>,
    incoming: &mut mpsc::UnboundedReceiver<ListenerUpgrade<R>>,
    port: u16,
) -> Result<(Output<R>, Output<R>), libp2p_ws::Error> {
    let addr = format!("/ip4/127.0.0.1/tcp/{port}/tls/sni/{NAME}/ws")
        .parse()
        .expect("addr");
    let dial = spawn::<R, _>(dialer.dial(addr, dial_opts()).expect("dial accepted"));
    // The first connection the listener reports is this dial: the CA's validations were not.
    let upgrade = within::<R, _>(WAIT, incoming.next())
        .await
        .expect("incoming");
    let server = spawn::<R, _>(upgrade);
    let mut client = dial.await?;
    let mut server = server.await.expect("server side");
    round_trip::<R>(&mut client, &mut server, 1).await;
    Ok((server, client))
}

async fn round_trip<R: Runtime>(client: &mut Output<R>, server: &mut Output<R>, seed: u64) {
    let data = pattern(seed, 4096);
    client.write_all(&data).await.expect("write");
    client.flush().await.expect("flush");
    let mut got = vec![0; data.len()];
    server.read_exact(&mut got).await.expect("read");
    assert_eq!(got, data);
}

/// Obtains a certificate for `NAME` by TLS-ALPN-01 on the listener's port, dials it by name,
/// renews it (a window longer than its life) while the connection stays open, and dials again.
async fn a_certificate_is_obtained_on_the_listeners_port_renewed_and_dialed_by_name<R: Runtime>() {
    let port = daemon::free_port("127.0.0.1");
    let pebble = pebble(port);
    let (certificates, mut task) = acme(&pebble, &[NAME])
        .with_renew_before(Duration::from_secs(100 * 365 * 86_400))
        .start::<R::Provider>()
        .expect("starts");
    let mut registry = prometheus_client::registry::Registry::default();
    let config = Config::default().with_metrics(&mut registry);
    let (mut incoming, _stop, _) = listener_with::<R>(&certificates, port, config).await;
    let mut dialer = dialer::<R>(&pebble);
    // Before the first certificate the listener has none to present: TLS is refused.
    assert!(certificates.current().is_none());

    let started = std::time::Instant::now();
    let obtained = match next::<R>(&mut task).await {
        AcmeEvent::Obtained(info) => info,
        other => panic!("expected a certificate, got {other:?}"),
    };
    assert_eq!(obtained.names, [NAME]);
    assert!(obtained.not_after > std::time::SystemTime::now() + Duration::from_secs(86_400));
    eprintln!(
        "{}: certificate obtained in {:?}",
        R::NAME,
        started.elapsed()
    );
    let first = certificates.current().expect("in use").chain()[0].clone();
    // The expiry gauge reads the certificate in use.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
    let series = format!(r#"libp2p_websocket_tls_certificate_expiry_seconds{{name="{NAME}"}} "#);
    let seconds: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("{series} in\n{text}"))
        .parse()
        .expect("a number");
    let left = obtained
        .not_after
        .duration_since(std::time::SystemTime::now())
        .expect("not expired")
        .as_secs_f64();
    assert!((seconds - left).abs() < 60.0, "{seconds} vs {left}");
    let (mut server, mut client) = dial_by_name::<R>(&mut dialer, &mut incoming, port)
        .await
        .expect("the dial by name verifies the ACME certificate");

    // The window is longer than the certificate's life: the task renews at once (after the
    // first retry delay, the least time between two orders).
    let renewing = std::time::Instant::now();
    match next::<R>(&mut task).await {
        AcmeEvent::Renewed(info) => assert_eq!(info.names, [NAME]),
        other => panic!("expected a renewal, got {other:?}"),
    }
    eprintln!(
        "{}: renewed {:?} later (0.5 s of it the least time between orders)",
        R::NAME,
        renewing.elapsed()
    );
    let second = certificates.current().expect("in use").chain()[0].clone();
    assert_ne!(first, second, "the renewal presents a new certificate");
    // The connection opened before the renewal goes on; a new one gets the new certificate.
    round_trip::<R>(&mut client, &mut server, 2).await;
    dial_by_name::<R>(&mut dialer, &mut incoming, port)
        .await
        .expect("a dial after the renewal");
}

/// A cache directory from a previous run: the second run uses its certificate without an order
/// (pebble is gone by then, so an order would fail), and the account key file is 0600.
async fn a_cached_certificate_is_used_without_an_order<R: Runtime>() {
    let port = daemon::free_port("127.0.0.1");
    let cache = temp_dir("acme-cache");
    let pebble = pebble(port);
    {
        let (certificates, mut task) = acme(&pebble, &[NAME])
            .with_cache_dir(&cache)
            .start::<R::Provider>()
            .expect("starts");
        let (_incoming, _stop, _) = listener::<R>(&certificates, port).await;
        match next::<R>(&mut task).await {
            AcmeEvent::Obtained(_) => {}
            other => panic!("expected a certificate, got {other:?}"),
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cache.join("account.key"))
            .expect("account key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let mut dialer = dialer::<R>(&pebble);
    drop(pebble);

    let (certificates, mut task) = AcmeConfig::new("https://localhost:1/dir", [NAME])
        .with_cache_dir(&cache)
        .start::<R::Provider>()
        .expect("starts");
    match next::<R>(&mut task).await {
        AcmeEvent::Loaded(info) => assert_eq!(info.names, [NAME]),
        other => panic!("expected the cached certificate, got {other:?}"),
    }
    let (mut incoming, _stop, port) = listener::<R>(&certificates, 0).await;
    dial_by_name::<R>(&mut dialer, &mut incoming, port)
        .await
        .expect("the cached certificate verifies");
    let _ = std::fs::remove_dir_all(&cache);
}

/// A name the CA will not issue for: the order fails with the CA's problem document, and is
/// retried after the first backoff.
async fn a_refusing_ca_is_reported_with_its_reason<R: Runtime>() {
    let port = daemon::free_port("127.0.0.1");
    let pebble = pebble(port);
    let (certificates, mut task) = acme(&pebble, &["refused.acme.test"])
        .start::<R::Provider>()
        .expect("starts");
    let (_incoming, _stop, _) = listener::<R>(&certificates, port).await;
    match next::<R>(&mut task).await {
        AcmeEvent::Failed {
            error: AcmeError::Refused { kind, detail, .. },
            retry_in,
        } => {
            assert_eq!(
                kind, "urn:ietf:params:acme:error:rejectedIdentifier",
                "{detail}"
            );
            assert_eq!(retry_in, Duration::from_millis(500));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    match next::<R>(&mut task).await {
        AcmeEvent::Failed { retry_in, .. } => assert_eq!(retry_in, Duration::from_secs(1)),
        other => panic!("expected a second refusal, got {other:?}"),
    }
    assert!(certificates.current().is_none());
}

/// pebble validates against a port where nothing answers TLS-ALPN-01 (a plain `/ws` listener):
/// the challenge fails, with the CA's reason.
async fn a_failed_challenge_is_reported<R: Runtime>() {
    let mut plain = Transport::<R>::new(Config::default());
    let (_, addr) = listen::<R>(&mut plain, "/ip4/127.0.0.1/tcp/0/ws").await;
    let port = helpers::ip_and_port(&addr).expect("TCP").port();
    let _plain = drive_listener::<R, _>(plain, |_| {});
    let pebble = pebble(port);
    let (certificates, mut task) = acme(&pebble, &[NAME])
        .start::<R::Provider>()
        .expect("starts");
    match next::<R>(&mut task).await {
        AcmeEvent::Failed {
            error:
                AcmeError::ChallengeFailed {
                    name,
                    status,
                    detail,
                },
            ..
        } => {
            assert_eq!(name, NAME);
            assert_eq!(status, "invalid");
            assert!(!detail.is_empty());
        }
        other => panic!("expected a failed challenge, got {other:?}"),
    }
    assert!(certificates.current().is_none());
}

/// TLS-ALPN-01 on a shared port (`/tcp` and `/tls/ws` on one socket): the validation's
/// ClientHello is routed to TLS like any other, answered, and not reported; then a dial by name.
async fn a_certificate_is_obtained_on_a_shared_port<R: Runtime>() {
    let port = daemon::free_port("127.0.0.1");
    let pebble = pebble(port);
    let (certificates, mut task) = acme(&pebble, &[NAME])
        .start::<R::Provider>()
        .expect("starts");
    let config = Config::default()
        .with_keep_alive(None)
        .with_tls(TlsConfig::new().with_acme_certificates(&certificates));
    let mut transport = Transport::<R>::new(config);
    listen::<R>(&mut transport, &format!("/ip4/127.0.0.1/tcp/{port}")).await;
    listen::<R>(&mut transport, &format!("/ip4/127.0.0.1/tcp/{port}/tls/ws")).await;
    let (tx, mut incoming) = mpsc::unbounded();
    let _stop = drive_listener::<R, _>(transport, move |upgrade| {
        let _ = tx.unbounded_send(upgrade);
    });
    match next::<R>(&mut task).await {
        AcmeEvent::Obtained(info) => assert_eq!(info.names, [NAME]),
        other => panic!("expected a certificate, got {other:?}"),
    }
    let mut dialer = dialer::<R>(&pebble);
    dial_by_name::<R>(&mut dialer, &mut incoming, port)
        .await
        .expect("the dial by name on the shared port");
}

runtime_tests!(with run_long:
    a_certificate_is_obtained_on_a_shared_port,
    a_certificate_is_obtained_on_the_listeners_port_renewed_and_dialed_by_name,
    a_cached_certificate_is_used_without_an_order,
    a_refusing_ca_is_reported_with_its_reason,
    a_failed_challenge_is_reported,
);

/// The ACME tests' bound: an order or two, pebble's start.
fn run_long<R: Runtime, F: std::future::Future>(future: F) -> F::Output {
    init_logging();
    R::block_on(within::<R, _>(Duration::from_secs(90), future))
}
