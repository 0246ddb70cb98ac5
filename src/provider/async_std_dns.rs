//! hickory-resolver's runtime on async-std: tasks spawned on async-std, async-io's timers, UDP on
//! async-io's reactor, async-std's TCP. (hickory ships a tokio runtime only.)

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};

use futures::{AsyncRead, AsyncWrite, FutureExt};
use hickory_resolver::net::runtime::{DnsTcpStream, DnsUdpSocket, RuntimeProvider, Spawn, Time};

/// hickory's runtime provider over async-std.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AsyncStdDns;

/// Spawns hickory's background tasks (its connections to name servers) on async-std.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Spawner;

impl Spawn for Spawner {
    fn spawn_bg(&mut self, future: impl Future<Output = ()> + Send + 'static) {
        async_std::task::spawn(future);
    }
}

/// async-io's timers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AsyncIoTime;

#[async_trait::async_trait]
impl Time for AsyncIoTime {
    async fn delay_for(duration: Duration) {
        async_io::Timer::after(duration).await;
    }

    async fn timeout<F: 'static + Future + Send>(
        duration: Duration,
        future: F,
    ) -> Result<F::Output, io::Error> {
        futures::select_biased! {
            output = future.fuse() => Ok(output),
            _ = async_io::Timer::after(duration).fuse() => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "future timed out"))
            }
        }
    }
}

/// A UDP socket on async-io's reactor.
pub(crate) struct Udp(async_io::Async<std::net::UdpSocket>);

impl DnsUdpSocket for Udp {
    type Time = AsyncIoTime;

    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        loop {
            match self.0.get_ref().recv_from(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.0.poll_readable(cx))?;
                }
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.0.get_ref().send_to(buf, target) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.0.poll_writable(cx))?;
                }
                result => return Poll::Ready(result),
            }
        }
    }
}

/// async-std's TCP stream, for hickory (answers that do not fit in UDP).
pub(crate) struct Tcp(async_std::net::TcpStream);

impl DnsTcpStream for Tcp {
    type Time = AsyncIoTime;
}

impl AsyncRead for Tcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_close(cx)
    }
}

impl RuntimeProvider for AsyncStdDns {
    type Handle = Spawner;
    type Timer = AsyncIoTime;
    type Udp = Udp;
    type Tcp = Tcp;

    fn create_handle(&self) -> Spawner {
        Spawner
    }

    fn connect_tcp(
        &self,
        server_addr: SocketAddr,
        bind_addr: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Tcp, io::Error>>>> {
        Box::pin(async move {
            if bind_addr.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "binding a DNS TCP connection to a local address is not supported",
                ));
            }
            let connect = async_std::net::TcpStream::connect(server_addr);
            let stream = match timeout {
                Some(after) => AsyncIoTime::timeout(after, connect).await??,
                None => connect.await?,
            };
            stream.set_nodelay(true)?;
            Ok(Tcp(stream))
        })
    }

    fn bind_udp(
        &self,
        local_addr: SocketAddr,
        _server_addr: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Udp, io::Error>>>> {
        Box::pin(async move { async_io::Async::<std::net::UdpSocket>::bind(local_addr).map(Udp) })
    }
}
