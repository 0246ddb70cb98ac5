//! The async-std provider: async-std's TCP types on async-io's reactor, async-io timers, DNS on
//! async-std's blocking pool, if-watch's smol backend. Works under any executor (async-io drives
//! its reactor and timers from its own thread when no async-io executor runs).

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use futures::{future::BoxFuture, FutureExt, Stream, StreamExt};

use super::{IfEvent, ResetTimer, Timer};

/// The async-std runtime provider (feature `async-std`).
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStd;

/// A listening socket: async-std's listener, accepting through one reused future.
pub struct Listener {
    accept: futures::stream::BoxStream<'static, io::Result<(TcpStream, SocketAddr)>>,
}

/// A TCP stream (async-std's).
pub(crate) type TcpStream = async_std::net::TcpStream;

/// The interface watcher (if-watch's smol backend).
pub struct IfWatcher(if_watch::smol::IfWatcher);

impl Stream for IfWatcher {
    type Item = io::Result<IfEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .0
            .poll_next_unpin(cx)
            .map(|event| event.map(|event| event.map(IfEvent::from)))
    }
}

struct AsyncIoTimer(async_io::Timer);

impl std::future::Future for AsyncIoTimer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.get_mut().0).poll(cx).map(|_| ())
    }
}

impl ResetTimer for AsyncIoTimer {
    fn reset(self: Pin<&mut Self>, at: Instant) {
        self.get_mut().0.set_at(at);
    }
}

impl super::Provider for AsyncStd {
    type Stream = TcpStream;
    type Listener = Listener;
    type IfWatcher = IfWatcher;

    fn new_listener(listener: std::net::TcpListener) -> io::Result<Listener> {
        let listener = async_std::net::TcpListener::from(listener);
        let accept = futures::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await;
            Some((accepted, listener))
        })
        .boxed();
        Ok(Listener { accept })
    }

    fn poll_accept(
        listener: &mut Listener,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        match listener.accept.poll_next_unpin(cx) {
            Poll::Ready(Some(accepted)) => Poll::Ready(accepted),
            Poll::Ready(None) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn connect(addr: SocketAddr) -> BoxFuture<'static, io::Result<TcpStream>> {
        TcpStream::connect(addr).boxed()
    }

    fn set_nodelay(stream: &TcpStream, nodelay: bool) -> io::Result<()> {
        stream.set_nodelay(nodelay)
    }

    fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
        // async-io's `poll_close` only flushes.
        stream.shutdown(std::net::Shutdown::Write)
    }

    fn nodelay(stream: &TcpStream) -> io::Result<bool> {
        stream.nodelay()
    }

    fn local_addr(stream: &TcpStream) -> io::Result<SocketAddr> {
        stream.local_addr()
    }

    fn resolve(name: String, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        async move {
            use async_std::net::ToSocketAddrs;
            Ok((name.as_str(), port).to_socket_addrs().await?.collect())
        }
        .boxed()
    }

    fn dns_resolver(config: &crate::dns::DnsConfig) -> crate::dns::Resolver {
        crate::dns::Resolver::hickory(config, super::async_std_dns::AsyncStdDns)
    }

    fn timer(at: Instant) -> Timer {
        Box::pin(AsyncIoTimer(async_io::Timer::at(at)))
    }

    fn if_watcher() -> io::Result<IfWatcher> {
        if_watch::smol::IfWatcher::new().map(IfWatcher)
    }
}
