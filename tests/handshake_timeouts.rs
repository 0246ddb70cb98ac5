//! Deadlines against strangers who hold a handshake open: slowloris sockets against the listener's
//! handshake timeout, the cap on pending handshakes, TLS clients that send no or a garbage
//! ClientHello, a server dribbling its upgrade response to our dialer, and the upgrade timeout
//! against a peer stalling inside noise. The upgrade's rules and head limits are in
//! `handshake.rs`, admission under floods in `admission.rs`. Every test runs
//! on both runtimes over real sockets on 127.0.0.1 and bounds every wait. Each test prints the
//! figures it measures, each line naming the runtime (`figure (tokio): ...`; run with `--nocapture`
//! to see them).
//!
//! The tests that time handshakes against deadlines run through [`exclusive`], beside nothing else
//! of this binary; the others through [`shared`] ([`shared_bounded`] where the body does not bound
//! itself).

mod common;

use std::time::{Duration, Instant};

use async_std::net::TcpStream;
use common::{process::*, raw::*, *};
use futures::{channel::mpsc, AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::core::{Multiaddr, Transport as _};
use libp2p_ws::{tls::dev::TestCa, Config, Error, ServerCertificate, TlsConfig};

// =================================================================================================
// Slowloris
// =================================================================================================

async fn slowloris_sockets_are_dropped_at_the_handshake_timeout_and_real_dials_still_succeed<
    R: Runtime,
>() {
    const SOCKETS: usize = 500;
    let timeout = Duration::from_secs(3);
    within::<R, _>(Duration::from_secs(30), async {
        // Enough handshake slots for every attacker: see the pending-handshake test for the cap.
        let config = Config::default()
            .with_handshake_timeout(timeout)
            .with_max_pending_handshakes(SOCKETS + 16)
            .with_max_pending_handshakes_per_ip(SOCKETS + 16);
        let mut server = Server::<R>::plain(config).await;
        let socket = server.socket;
        let attackers_started = Instant::now();

        let (connected_tx, mut connected) = mpsc::unbounded::<()>();
        let spawn_attacker = || {
            let connected_tx = connected_tx.clone();
            spawn::<R, _>(async move {
                let mut s = TcpStream::connect(socket).await.expect("connect");
                let opened = Instant::now();
                let _ = connected_tx.unbounded_send(());
                let mut sent = 0;
                let mut buf = [0u8; 512];
                let mut answered = 0;
                loop {
                    // One byte of the upgrade request per second, until the server hangs up.
                    if s.write_all(&UPGRADE_REQUEST[sent..sent + 1]).await.is_err() {
                        break;
                    }
                    sent += 1;
                    match common::timeout::<R, _>(Duration::from_secs(1), s.read(&mut buf)).await {
                        Some(Ok(0)) | Some(Err(_)) => break,
                        Some(Ok(n)) => answered += n,
                        None => continue,
                    }
                }
                (opened.elapsed(), Instant::now(), sent, answered)
            })
        };
        // In batches, each connected before the next connects (the listen backlog is finite; the
        // port accepts as they come, and reports each only at its timeout).
        let mut attackers = Vec::new();
        for _ in 0..SOCKETS / 100 {
            attackers.extend((0..100).map(|_| spawn_attacker()));
            for _ in 0..100 {
                connected.next().await.expect("attacker connected");
            }
        }
        let connecting_took = attackers_started.elapsed();

        // All attackers are connected and dribbling: a real dial must still go through.
        let start = Instant::now();
        let mut client = dial::<R>(Config::default(), server.addr.clone())
            .await
            .expect("real dial succeeds");
        let mut accepted = server.next_ok().await;
        client.write_all(b"still serving").await.unwrap();
        client.flush().await.unwrap();
        let mut buf = [0u8; 13];
        accepted.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"still serving");
        let dial_done = Instant::now();
        println!(
            "figure ({}): {SOCKETS} slowloris sockets connected and accepted in \
             {connecting_took:?}; then a real dial + round trip took {:?}",
            R::NAME,
            start.elapsed()
        );

        let mut lifetimes = Vec::new();
        let mut first_close = None::<Instant>;
        for attacker in attackers {
            let (lifetime, closed_at, sent, answered) = attacker.await;
            assert_eq!(answered, 0, "the server answered a partial request");
            assert!(
                sent < UPGRADE_REQUEST.len(),
                "the request completed: raise nothing, lower the rate"
            );
            first_close = Some(first_close.map_or(closed_at, |f: Instant| f.min(closed_at)));
            lifetimes.push(lifetime);
        }
        lifetimes.sort();
        let (min, median, max) = (lifetimes[0], lifetimes[SOCKETS / 2], lifetimes[SOCKETS - 1]);
        println!(
            "figure ({}): slowloris: {SOCKETS} sockets at 1 byte/s, handshake timeout \
             {timeout:?}: dropped after min {min:?}, median {median:?}, max {max:?}",
            R::NAME
        );
        assert!(
            dial_done < first_close.unwrap(),
            "the real dial finished only after attackers were dropped"
        );
        assert!(
            min >= timeout - Duration::from_millis(100),
            "dropped before the timeout: {min:?}"
        );
        assert!(
            max <= timeout + Duration::from_secs(3),
            "dropped late: {max:?}"
        );

        let mut timeouts = 0;
        for _ in 0..SOCKETS {
            match server.next().await {
                Err(Error::Timeout { after, .. }) if after == timeout => timeouts += 1,
                other => panic!("expected a handshake timeout, got {:?}", other.map(|_| ())),
            }
        }
        println!(
            "figure ({}): listener reported {timeouts} handshake timeouts",
            R::NAME
        );
    })
    .await;
}

async fn pending_handshake_cap_closes_excess_sockets_at_once_and_frees_slots_at_the_timeout<
    R: Runtime,
>() {
    within::<R, _>(Duration::from_secs(20), async {
        let cap = 8;
        let timeout = Duration::from_millis(1500);
        let config = Config::default()
            .with_handshake_timeout(timeout)
            .with_max_pending_handshakes(cap);
        let mut server = Server::<R>::plain(config).await;
        let mut silent = Vec::new();
        for _ in 0..cap {
            // Accepted in order: the port reports a silent socket only when it times out.
            silent.push(TcpStream::connect(server.socket).await.unwrap());
        }
        // The next socket finds every slot taken: it is closed at once, without an answer.
        let start = Instant::now();
        let mut extra = TcpStream::connect(server.socket).await.unwrap();
        let mut buf = [0u8; 64];
        let n = within::<R, _>(Duration::from_secs(1), extra.read(&mut buf))
            .await
            .unwrap_or(0);
        println!(
            "figure ({}): with {cap}/{cap} handshake slots taken, an extra socket was closed \
             after {:?}",
            R::NAME,
            start.elapsed()
        );
        assert_eq!(n, 0);
        // Once the silent sockets time out, slots are free again and a real dial succeeds.
        for _ in 0..cap {
            assert!(matches!(server.next().await, Err(Error::Timeout { .. })));
        }
        dial::<R>(Config::default(), server.addr.clone())
            .await
            .expect("dial after the slots freed up");
        server.next_ok().await;
        println!(
            "figure ({}): after the {cap} silent sockets timed out ({timeout:?}), a dial succeeded",
            R::NAME
        );
        drop(silent);
    })
    .await;
}

// =================================================================================================
// TLS listener: no ClientHello, garbage ClientHello
// =================================================================================================

async fn tls_listener_drops_silent_sockets_at_the_timeout_and_garbage_at_once<R: Runtime>() {
    within::<R, _>(Duration::from_secs(30), async {
        let ca = TestCa::new("hardening CA").unwrap();
        let (chain, key) = ca.issue(&["localhost"]).unwrap();
        let cert = ServerCertificate::from_der(chain, key).unwrap();
        let timeout = Duration::from_millis(1500);
        let config = Config::default()
            .with_handshake_timeout(timeout)
            .with_tls(TlsConfig::new().with_server_certificate(&cert));
        let mut server = Server::<R>::start(config, "/ip4/127.0.0.1/tcp/0/tls/ws").await;
        let socket = server.socket;

        // (what is sent, expected to be closed before the timeout)
        let mut oversized_record = vec![0x16, 0x03, 0x01, 0xff, 0xff];
        oversized_record.extend_from_slice(&[0u8; 64]);
        let mut truncated_hello = vec![
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        truncated_hello.extend_from_slice(&[0u8; 16]);
        let attacks: Vec<(&str, Vec<u8>, bool)> = vec![
            ("nothing (silent TCP)", vec![], false),
            (
                "an HTTP request instead of a ClientHello",
                UPGRADE_REQUEST.to_vec(),
                true,
            ),
            (
                "a TLS record header declaring 65535 bytes",
                oversized_record,
                true,
            ),
            ("random bytes", pattern(7, 4096), true),
            (
                "a truncated ClientHello, then silence",
                truncated_hello,
                false,
            ),
        ];
        for (what, bytes, at_once) in attacks {
            let start = Instant::now();
            let mut s = TcpStream::connect(socket).await.unwrap();
            if !bytes.is_empty() {
                let _ = s.write_all(&bytes).await;
            }
            let mut reply = Vec::new();
            let _ = within::<R, _>(Duration::from_secs(10), s.read_to_end(&mut reply)).await;
            let closed_after = start.elapsed();
            let error = server.next().await.expect_err("the handshake fails");
            println!(
                "figure ({}): TLS listener, {what}: closed after {closed_after:?} ({} bytes \
                 answered): {error}",
                R::NAME,
                reply.len()
            );
            if at_once {
                assert!(closed_after < timeout, "{what}: not closed at once");
                // An HTTP request is recognised as a wrong door (and answered with a TLS alert).
                assert!(
                    matches!(error, Error::Tls(_) | Error::NotServed { .. }),
                    "{what}: {error:?}"
                );
            } else {
                assert!(
                    closed_after >= timeout - Duration::from_millis(100),
                    "{what}: closed early"
                );
                assert!(
                    closed_after < timeout + Duration::from_secs(3),
                    "{what}: closed late"
                );
                assert!(matches!(error, Error::Timeout { .. }), "{what}: {error:?}");
            }
        }

        // The listener still serves real TLS clients.
        let dialer = Config::default().with_tls(TlsConfig::new().add_root_der(ca.certificate()));
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}/tls/sni/localhost/ws", socket.port())
            .parse()
            .unwrap();
        dial::<R>(dialer, addr)
            .await
            .expect("a real TLS dial succeeds");
        server.next_ok().await;
    })
    .await;
}

// =================================================================================================
// A server dribbling its upgrade response
// =================================================================================================

async fn dial_to_a_server_dribbling_its_response_fails_at_the_handshake_timeout<R: Runtime>() {
    within::<R, _>(WAIT, async {
        let (listener, addr) = raw_listener().await;
        let server = spawn::<R, _>(async move {
            let mut raw = Raw::new(listener.accept().await.unwrap().0);
            raw.read_head().await.unwrap();
            let mut response = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
            response.extend(std::iter::repeat_n(b"X-Slow: yes\r\n".iter().copied(), 100).flatten());
            let mut sent = 0;
            for byte in response {
                if raw.send(&[byte]).await.is_err() {
                    break;
                }
                sent += 1;
                R::sleep(Duration::from_millis(20)).await;
            }
            sent
        });
        let timeout = Duration::from_secs(1);
        let start = Instant::now();
        let error = dial::<R>(Config::default().with_handshake_timeout(timeout), addr)
            .await
            .expect_err("dial fails");
        let elapsed = start.elapsed();
        let sent = server.await;
        println!(
            "figure ({}): dial to a server dribbling its response (1 byte / 20 ms) failed after \
             {elapsed:?} ({sent} bytes sent): {error}",
            R::NAME
        );
        assert!(
            matches!(error, Error::Timeout { after, .. } if after == timeout),
            "{error:?}"
        );
        assert!(elapsed < timeout + Duration::from_secs(2), "{elapsed:?}");
    })
    .await;
}

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

runtime_tests!(
    with exclusive:
    slowloris_sockets_are_dropped_at_the_handshake_timeout_and_real_dials_still_succeed,
    pending_handshake_cap_closes_excess_sockets_at_once_and_frees_slots_at_the_timeout,
    tls_listener_drops_silent_sockets_at_the_timeout_and_garbage_at_once,
);

runtime_tests!(
    with shared:
    dial_to_a_server_dribbling_its_response_fails_at_the_handshake_timeout,
);

runtime_tests!(
    with shared_bounded:
    upgrade_timeout_bounds_a_peer_stalling_inside_noise,
);
