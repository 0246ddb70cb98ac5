//! The only module that names the async runtime (async-std and its reactor, async-io).
//!
//! Everything else reaches sockets, timers, DNS and interface events through the items below. A
//! smol or tokio backend is a second file with the same items, selected by a cargo feature.

use std::{
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::{stream::BoxStream, Stream, StreamExt};

/// A TCP stream.
pub type TcpStream = async_std::net::TcpStream;

/// A resettable timer (async-io's, which async-std also uses). Works under any executor: async-io
/// drives timers from its own thread when no async-io executor is running.
pub type Timer = async_io::Timer;

/// Accepted sockets of a listener, with the peer's address.
pub type Incoming = BoxStream<'static, io::Result<(TcpStream, SocketAddr)>>;

/// Binds a TCP listener. Returns the stream of accepted sockets and the bound address (with the real
/// port when port 0 was asked for). Dropping the stream closes the socket.
pub fn bind(addr: SocketAddr) -> io::Result<(Incoming, SocketAddr)> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let listener = async_std::net::TcpListener::from(listener);
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await;
        Some((accepted, listener))
    })
    .boxed();
    Ok((incoming, local))
}

/// Connects to `addr`.
pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect(addr).await
}

/// Sets `TCP_NODELAY`.
pub fn set_nodelay(stream: &TcpStream, nodelay: bool) -> io::Result<()> {
    stream.set_nodelay(nodelay)
}

/// Resolves a DNS name with the system resolver (async-std runs `getaddrinfo` on its blocking pool).
pub async fn resolve(name: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    use async_std::net::ToSocketAddrs;
    Ok((name, port).to_socket_addrs().await?.collect())
}

/// Resolves a DNS name without an executor (for `listen_on`, which is synchronous).
pub fn resolve_blocking(name: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    Ok((name, port).to_socket_addrs()?.collect())
}

/// Runs `future` for at most `after`; `None` when the time ran out.
pub async fn timeout<F: Future>(after: Duration, future: F) -> Option<F::Output> {
    async_std::future::timeout(after, future).await.ok()
}

/// A change of the machine's interface addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfEvent {
    /// An address appeared.
    Up(IpAddr),
    /// An address went away.
    Down(IpAddr),
}

/// Watches the machine's interface addresses (if-watch's async-io backend).
pub struct IfWatcher(if_watch::smol::IfWatcher);

impl IfWatcher {
    /// Starts watching; the current addresses are reported first, as `Up` events.
    pub fn new() -> io::Result<Self> {
        if_watch::smol::IfWatcher::new().map(IfWatcher)
    }
}

impl Stream for IfWatcher {
    type Item = io::Result<IfEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().0.poll_next_unpin(cx).map(|event| {
            event.map(|event| {
                event.map(|event| match event {
                    if_watch::IfEvent::Up(net) => IfEvent::Up(net.addr()),
                    if_watch::IfEvent::Down(net) => IfEvent::Down(net.addr()),
                })
            })
        })
    }
}
