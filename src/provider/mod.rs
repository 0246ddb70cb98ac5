//! The runtime provider: the one seam between the transport and an async runtime.
//!
//! Everything that touches the operating system or the clock goes through [`Provider`]: TCP
//! listening, accepting and connecting, `TCP_NODELAY`, DNS resolution, timers and interface
//! watching. The rest of the crate is generic over it, so that a third runtime is one more file
//! in this folder (rust-libp2p's `libp2p-tcp` provider and quinn's `Runtime` are the models).
//!
//! Two providers ship, each behind its cargo feature (they can be enabled together):
//! - `AsyncStd` (`libp2p_ws::async_std::Provider`) (feature `async-std`, on by default): async-std's
//!   TCP types on async-io's reactor, async-io timers, if-watch's smol backend;
//! - `Tokio` (`libp2p_ws::tokio::Provider`) (feature `tokio`): tokio's TCP types, tokio timers, DNS
//!   through tokio's blocking pool, if-watch's tokio backend. Everything it returns must be
//!   polled inside a tokio runtime (as libp2p's `SwarmBuilder::with_tokio` does); sockets and
//!   watchers are registered with the runtime lazily, on first use, so `listen_on` may be called
//!   from anywhere.

#[cfg(feature = "async-std")]
pub(crate) mod async_std;
#[cfg(feature = "async-std")]
mod async_std_dns;
#[cfg(feature = "tokio")]
pub(crate) mod tokio;

use std::{
    fmt::Debug,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{future::BoxFuture, AsyncRead, AsyncWrite, Stream};

/// A runtime for the transport: sockets, DNS, timers and interface events.
///
/// Implemented by `libp2p_ws::async_std::Provider` and `libp2p_ws::tokio::Provider`. Everything the
/// transport needs from a runtime is here, so another runtime (smol, say) is one more
/// implementation; its methods are also usable directly (the Autobahn peer connects through one).
pub trait Provider: Clone + Debug + Send + Sync + Unpin + 'static {
    /// A connected TCP stream.
    type Stream: AsyncRead + AsyncWrite + Debug + Send + Unpin + 'static;
    /// A listening TCP socket.
    type Listener: Send + Unpin + 'static;
    /// A stream of interface address changes.
    type IfWatcher: Stream<Item = io::Result<IfEvent>> + Send + Unpin + 'static;

    /// Wraps a bound, non-blocking standard listener. Must not need a running runtime (the
    /// listener may be registered lazily in [`Provider::poll_accept`]).
    fn new_listener(listener: std::net::TcpListener) -> io::Result<Self::Listener>;

    /// Accepts the next connection, with the peer's address.
    fn poll_accept(
        listener: &mut Self::Listener,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(Self::Stream, SocketAddr)>>;

    /// Connects to `addr`.
    fn connect(addr: SocketAddr) -> BoxFuture<'static, io::Result<Self::Stream>>;

    /// Sets `TCP_NODELAY`.
    fn set_nodelay(stream: &Self::Stream, nodelay: bool) -> io::Result<()>;

    /// Closes the write half of `stream` now (sends a FIN), for runtimes whose `poll_close` does
    /// not. The default does nothing (tokio's `poll_close` shuts the write half down itself).
    fn shutdown_write(stream: &Self::Stream) -> io::Result<()> {
        let _ = stream;
        Ok(())
    }

    /// Whether `TCP_NODELAY` is set.
    fn nodelay(stream: &Self::Stream) -> io::Result<bool>;

    /// The local address of a connected stream.
    fn local_addr(stream: &Self::Stream) -> io::Result<SocketAddr>;

    /// Resolves `name` with the system resolver, off the executor's threads.
    fn resolve(name: String, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>>;

    /// Builds the DNS resolver for `/dnsaddr` and configured name servers: hickory-resolver over
    /// this runtime's sockets ([`Resolver::hickory`](crate::dns::Resolver::hickory) with a
    /// hickory runtime provider). Must not need a running runtime.
    fn dns_resolver(config: &crate::dns::DnsConfig) -> crate::dns::Resolver;

    /// A timer that fires at `at` and can be reset.
    fn timer(at: Instant) -> Timer;

    /// Starts watching the machine's interface addresses; the current ones come first as `Up`.
    /// Called from inside a poll of the listener, so within the runtime.
    fn if_watcher() -> io::Result<Self::IfWatcher>;
}

/// A change of the machine's interface addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IfEvent {
    /// An address appeared.
    Up(IpAddr),
    /// An address went away.
    Down(IpAddr),
}

impl From<if_watch::IfEvent> for IfEvent {
    fn from(event: if_watch::IfEvent) -> Self {
        match event {
            if_watch::IfEvent::Up(net) => IfEvent::Up(net.addr()),
            if_watch::IfEvent::Down(net) => IfEvent::Down(net.addr()),
        }
    }
}

/// A resettable one-shot timer of some runtime.
pub trait ResetTimer: Future<Output = ()> + Send {
    /// Makes the timer fire at `at` instead (also after it has fired).
    fn reset(self: Pin<&mut Self>, at: Instant);
}

/// A boxed [`ResetTimer`]: what [`Provider::timer`] returns. One allocation per timer; resetting
/// reuses it.
pub type Timer = Pin<Box<dyn ResetTimer>>;

/// A constructor of timers: how a [`Connection`](crate::Connection) gets its keep-alive and close
/// timers without naming a runtime (a provider's [`Provider::timer`]).
pub(crate) type TimerFn = fn(Instant) -> Timer;

/// The default runtime's timers (async-std's when its feature is on, else tokio's), for a
/// [`Connection`](crate::Connection) built without
/// [`with_provider`](crate::Connection::with_provider). The one place outside a runtime's own file
/// that picks a runtime.
#[cfg(feature = "async-std")]
pub(crate) fn default_timer(at: Instant) -> Timer {
    <async_std::AsyncStd as Provider>::timer(at)
}

/// The default runtime's timers (async-std's when its feature is on, else tokio's), for a
/// [`Connection`](crate::Connection) built without
/// [`with_provider`](crate::Connection::with_provider). The one place outside a runtime's own file
/// that picks a runtime.
#[cfg(all(feature = "tokio", not(feature = "async-std")))]
pub(crate) fn default_timer(at: Instant) -> Timer {
    <tokio::Tokio as Provider>::timer(at)
}

/// Runs `future` for at most `after`; `None` when the time ran out.
pub(crate) async fn timeout<P: Provider, F: Future>(
    after: Duration,
    future: F,
) -> Option<F::Output> {
    timeout_at::<P, F>(Instant::now() + after, future).await
}

/// Runs `future` until `deadline` at most; `None` when the time ran out. The future is polled
/// before the timer, so of two nested timeouts with one deadline the inner one reports.
pub(crate) async fn timeout_at<P: Provider, F: Future>(
    deadline: Instant,
    future: F,
) -> Option<F::Output> {
    let mut timer = None;
    let mut future = std::pin::pin!(future);
    futures::future::poll_fn(move |cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        let timer = timer.get_or_insert_with(|| P::timer(deadline));
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}
