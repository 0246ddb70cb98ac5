//! The shared-port harness (`tests/shared_port.rs`): TLS configs from
//! a test CA, and a bare transport polled by a background task that listens and stops listening on
//! command and reports what it sees.

use std::{pin::Pin, task::Poll};

use futures::{
    channel::{mpsc, oneshot},
    future::poll_fn,
    AsyncWriteExt, FutureExt, StreamExt,
};
use libp2p::{
    core::{
        transport::{ListenerId, TransportError, TransportEvent},
        Transport as _,
    },
    Multiaddr,
};
use libp2p_ws::{addr::Kind, tls::dev::TestCa, Config, Error, ServerCertificate, TlsConfig};

use super::{dial_opts, Output, Runtime, Transport};

/// A listener config with TLS: a certificate from `ca` for localhost, 127.0.0.1 and ::1.
pub fn server_config(ca: &TestCa) -> Config {
    let (chain, key) = ca.issue(&["localhost", "127.0.0.1", "::1"]).expect("issue");
    let certificate = ServerCertificate::from_der(chain, key).expect("usable certificate");
    Config::default().with_tls(
        TlsConfig::new()
            .with_server_certificate(&certificate)
            .add_root_der(ca.certificate()),
    )
}

/// A dialer config trusting `ca`.
pub fn client_config(ca: &TestCa) -> Config {
    Config::default().with_tls(TlsConfig::new().add_root_der(ca.certificate()))
}

/// The TCP port of `addr`.
pub fn port_of(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a TCP port")
}

/// What the background listener reports.
#[derive(Debug)]
pub enum Seen {
    Address(ListenerId, Multiaddr),
    Closed(ListenerId),
    Connection(ListenerId, Result<Kind, String>),
}

/// What the background listener is told to do.
pub enum Command {
    Listen(ListenerId, Multiaddr, oneshot::Sender<Result<(), String>>),
    Remove(ListenerId, oneshot::Sender<bool>),
}

/// A bare transport polled by a background task: listens and stops listening on command, and
/// reports addresses, closed listeners and each inbound connection's upgrade result (by kind).
pub struct Node {
    commands: mpsc::UnboundedSender<Command>,
    seen: mpsc::UnboundedReceiver<Seen>,
    _stop: oneshot::Sender<()>,
}

impl Node {
    /// Starts the background listener of a bare transport with `config`.
    pub fn start<R: Runtime>(config: Config) -> Node {
        let mut transport = Transport::<R>::new(config);
        let (commands, mut commands_rx) = mpsc::unbounded::<Command>();
        let (seen_tx, seen) = mpsc::unbounded();
        let (stop, mut stop_rx) = oneshot::channel::<()>();
        R::spawn_detached(async move {
            poll_fn(|cx| loop {
                if stop_rx.poll_unpin(cx).is_ready() {
                    return Poll::Ready(());
                }
                if let Poll::Ready(Some(command)) = commands_rx.poll_next_unpin(cx) {
                    match command {
                        Command::Listen(id, addr, reply) => {
                            let result = transport.listen_on(id, addr).map_err(|e| match e {
                                TransportError::MultiaddrNotSupported(a) => {
                                    format!("not supported: {a}")
                                }
                                TransportError::Other(e) => e.to_string(),
                            });
                            let _ = reply.send(result);
                        }
                        Command::Remove(id, reply) => {
                            let _ = reply.send(transport.remove_listener(id));
                        }
                    }
                    continue;
                }
                let event = match Pin::new(&mut transport).poll(cx) {
                    Poll::Ready(event) => event,
                    Poll::Pending => return Poll::Pending,
                };
                let seen = match event {
                    TransportEvent::NewAddress {
                        listener_id,
                        listen_addr,
                    } => Seen::Address(listener_id, listen_addr),
                    TransportEvent::AddressExpired { .. } => continue,
                    TransportEvent::ListenerClosed { listener_id, .. } => Seen::Closed(listener_id),
                    TransportEvent::Incoming {
                        listener_id,
                        upgrade,
                        ..
                    } => {
                        let seen_tx = seen_tx.clone();
                        R::spawn_detached(async move {
                            let result = upgrade.await.map(|c| c.kind()).map_err(|e| e.to_string());
                            let _ = seen_tx.unbounded_send(Seen::Connection(listener_id, result));
                        });
                        continue;
                    }
                    TransportEvent::ListenerError { .. } => continue,
                };
                let _ = seen_tx.unbounded_send(seen);
            })
            .await
        });
        Node {
            commands,
            seen,
            _stop: stop,
        }
    }

    /// The next thing the listener reports.
    pub async fn next(&mut self) -> Seen {
        self.seen.next().await.expect("listener task alive")
    }

    /// Listens on `addr`; returns the listener and the address it reports.
    pub async fn listen(&mut self, addr: &str) -> Result<(ListenerId, Multiaddr), String> {
        let id = ListenerId::next();
        let (reply, result) = oneshot::channel();
        self.commands
            .unbounded_send(Command::Listen(id, addr.parse().unwrap(), reply))
            .unwrap();
        result.await.unwrap()?;
        loop {
            match self.next().await {
                Seen::Address(got, addr) if got == id => return Ok((id, addr)),
                other => println!("  (meanwhile: {other:?})"),
            }
        }
    }

    /// Removes listener `id` and waits until it is reported closed.
    pub async fn remove(&mut self, id: ListenerId) {
        let (reply, result) = oneshot::channel();
        self.commands
            .unbounded_send(Command::Remove(id, reply))
            .unwrap();
        assert!(result.await.unwrap(), "listener {id:?} was there");
        loop {
            match self.next().await {
                Seen::Closed(got) if got == id => return,
                other => println!("  (meanwhile: {other:?})"),
            }
        }
    }

    /// The next inbound connection's listener and upgrade result.
    pub async fn connection(&mut self) -> (ListenerId, Result<Kind, String>) {
        loop {
            match self.next().await {
                Seen::Connection(id, result) => return (id, result),
                other => println!("  (meanwhile: {other:?})"),
            }
        }
    }
}

/// Dials `addr` with a bare transport of `config`.
pub async fn dial<R: Runtime>(config: Config, addr: &Multiaddr) -> Result<Output<R>, Error> {
    Transport::<R>::new(config)
        .dial(addr.clone(), dial_opts())
        .expect("dial accepted")
        .await
}

/// Sends the multistream-select header (what a `/tcp` dialer sends first).
pub async fn send_multistream_header<S: futures::AsyncWrite + Unpin>(conn: &mut S) {
    conn.write_all(b"\x13/multistream/1.0.0\n").await.unwrap();
    conn.flush().await.unwrap();
}

/// Listens on `/tcp`, `/ws` and `/tls/ws` of one port of `ip` (the first on port 0, the others on
/// the port it got), returning the three listeners and addresses.
pub async fn listen_three(node: &mut Node, ip: &str) -> [(ListenerId, Multiaddr); 3] {
    let tcp = node
        .listen(&format!("{ip}/tcp/0"))
        .await
        .expect("listen /tcp");
    let port = port_of(&tcp.1);
    let ws = node
        .listen(&format!("{ip}/tcp/{port}/ws"))
        .await
        .expect("listen /ws");
    let tls = node
        .listen(&format!("{ip}/tcp/{port}/tls/ws"))
        .await
        .expect("listen /tls/ws");
    [tcp, ws, tls]
}
