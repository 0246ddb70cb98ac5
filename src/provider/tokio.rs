//! The tokio provider: tokio's TCP types, tokio timers, DNS through `tokio::net::lookup_host`
//! (tokio's blocking pool), if-watch's tokio backend. Everything it returns is polled inside a
//! tokio runtime with IO and time enabled; sockets are registered with the runtime on first use.

use std::{
    io::{self, IoSlice, IoSliceMut},
    net::SocketAddr,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Instant,
};

use ::tokio::io::{AsyncRead as _, AsyncWrite as _, ReadBuf};
use futures::{future::BoxFuture, AsyncRead, AsyncWrite, FutureExt, Stream, StreamExt};

use super::{IfEvent, ResetTimer, Timer};

/// The tokio runtime provider (feature `tokio`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

/// A listening socket: a bound standard listener until the first accept registers it with the
/// running tokio runtime (so `listen_on` works outside a runtime too).
pub enum Listener {
    /// Not yet registered with a runtime.
    Bound(Option<std::net::TcpListener>),
    /// Registered.
    Registered(::tokio::net::TcpListener),
}

/// A TCP stream: tokio's, with `futures`' `AsyncRead`/`AsyncWrite` (vectored reads included).
#[derive(Debug)]
pub struct TcpStream(::tokio::net::TcpStream);

impl TcpStream {
    /// The tokio stream.
    pub fn get_ref(&self) -> &::tokio::net::TcpStream {
        &self.0
    }

    /// Unwraps the tokio stream.
    pub fn into_inner(self) -> ::tokio::net::TcpStream {
        self.0
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut read = ReadBuf::new(buf);
        ready!(Pin::new(&mut self.get_mut().0).poll_read(cx, &mut read))?;
        Poll::Ready(Ok(read.filled().len()))
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = &self.get_mut().0;
        loop {
            ready!(stream.poll_read_ready(cx))?;
            match stream.try_read_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// The interface watcher (if-watch's tokio backend).
pub struct IfWatcher(if_watch::tokio::IfWatcher);

impl Stream for IfWatcher {
    type Item = io::Result<IfEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .0
            .poll_next_unpin(cx)
            .map(|event| event.map(|event| event.map(IfEvent::from)))
    }
}

impl ResetTimer for ::tokio::time::Sleep {
    fn reset(self: Pin<&mut Self>, at: Instant) {
        ::tokio::time::Sleep::reset(self, ::tokio::time::Instant::from_std(at));
    }
}

/// The timer given outside a tokio runtime: it never fires.
struct Never;

impl std::future::Future for Never {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl ResetTimer for Never {
    fn reset(self: Pin<&mut Self>, _: Instant) {}
}

/// The error for a tokio-provider socket used outside a tokio runtime.
fn no_runtime() -> io::Error {
    io::Error::other(
        "the tokio provider needs a tokio runtime with IO and time enabled: poll the transport \
         inside one (libp2p's SwarmBuilder::with_tokio does)",
    )
}

impl super::Provider for Tokio {
    type Stream = TcpStream;
    type Listener = Listener;
    type IfWatcher = IfWatcher;

    fn new_listener(listener: std::net::TcpListener) -> io::Result<Listener> {
        Ok(Listener::Bound(Some(listener)))
    }

    fn poll_accept(
        listener: &mut Listener,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        if let Listener::Bound(bound) = listener {
            if ::tokio::runtime::Handle::try_current().is_err() {
                return Poll::Ready(Err(no_runtime()));
            }
            let std = bound.take().ok_or_else(no_runtime)?;
            *listener = Listener::Registered(::tokio::net::TcpListener::from_std(std)?);
        }
        let Listener::Registered(listener) = listener else {
            unreachable!("registered above")
        };
        listener
            .poll_accept(cx)
            .map_ok(|(stream, remote)| (TcpStream(stream), remote))
    }

    fn connect(addr: SocketAddr) -> BoxFuture<'static, io::Result<TcpStream>> {
        async move {
            if ::tokio::runtime::Handle::try_current().is_err() {
                return Err(no_runtime());
            }
            ::tokio::net::TcpStream::connect(addr).await.map(TcpStream)
        }
        .boxed()
    }

    fn set_nodelay(stream: &TcpStream, nodelay: bool) -> io::Result<()> {
        stream.0.set_nodelay(nodelay)
    }

    fn nodelay(stream: &TcpStream) -> io::Result<bool> {
        stream.0.nodelay()
    }

    fn local_addr(stream: &TcpStream) -> io::Result<SocketAddr> {
        stream.0.local_addr()
    }

    fn resolve(name: String, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        async move {
            if ::tokio::runtime::Handle::try_current().is_err() {
                return Err(no_runtime());
            }
            Ok(::tokio::net::lookup_host((name.as_str(), port))
                .await?
                .collect())
        }
        .boxed()
    }

    fn dns_resolver(config: &crate::dns::DnsConfig) -> crate::dns::Resolver {
        crate::dns::Resolver::hickory(
            config,
            hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
        )
    }

    fn timer(at: Instant) -> Timer {
        if ::tokio::runtime::Handle::try_current().is_err() {
            // Creating a tokio timer outside a runtime would panic; a timer that never fires keeps
            // the connection usable (without keep-alive or close timeouts) and says why.
            tracing::warn!("{}", no_runtime());
            return Box::pin(Never);
        }
        Box::pin(::tokio::time::sleep_until(
            ::tokio::time::Instant::from_std(at),
        ))
    }

    fn if_watcher() -> io::Result<IfWatcher> {
        if ::tokio::runtime::Handle::try_current().is_err() {
            return Err(no_runtime());
        }
        if_watch::tokio::IfWatcher::new().map(IfWatcher)
    }
}
