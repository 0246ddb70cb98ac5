//! What the transport yields: [`Output`], a WebSocket connection over a [`Socket`] (plain TCP or
//! TLS) or a plain [`TcpConnection`] (which first hands on the bytes a listener read ahead to
//! classify it, its [`Prefix`]).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite};

use crate::{addr::Kind, classify::MAX_PREFIX, framed::Connection, metrics::Meter};

/// The socket under an upgraded connection: plain TCP or TLS over TCP. `S` is the runtime's TCP
/// stream ([`Provider::Stream`](crate::provider::Provider::Stream)).
#[derive(Debug)]
#[non_exhaustive]
pub enum Socket<S> {
    /// Plain TCP (`/ws`).
    Plain(S),
    /// TLS over TCP (`/tls/ws`, `/wss`).
    Tls(Box<futures_rustls::TlsStream<S>>),
}

impl<S> Socket<S> {
    /// The TCP stream under the connection.
    pub fn tcp(&self) -> &S {
        match self {
            Socket::Plain(s) => s,
            Socket::Tls(s) => s.get_ref().0,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Socket<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read_vectored(cx, bufs),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_read_vectored(cx, bufs),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Socket<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_close(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// The bytes a listener read from a connection to classify it, not yet handed on.
#[derive(Clone, Copy, Default)]
pub(super) struct Prefix {
    pub(super) buf: [u8; MAX_PREFIX],
    start: u8,
    pub(super) end: u8,
}

impl Prefix {
    /// A prefix holding `bytes` (at most [`MAX_PREFIX`] of them).
    pub(super) fn from_bytes(bytes: &[u8]) -> Self {
        let mut prefix = Prefix::default();
        let n = bytes.len().min(MAX_PREFIX);
        prefix.buf[..n].copy_from_slice(&bytes[..n]);
        prefix.end = n as u8;
        prefix
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf[self.start as usize..self.end as usize]
    }

    fn read(&mut self, out: &mut [u8]) -> usize {
        let rest = self.bytes();
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.start += n as u8;
        n
    }
}

/// A plain TCP connection (`/tcp`): the runtime's TCP stream, after the few bytes a listener read
/// to classify it (which it hands on first, so none are lost).
pub struct TcpConnection<S> {
    io: S,
    pub(super) prefix: Prefix,
    /// Counts bytes and the close (a no-op without metrics).
    meter: Meter,
}

impl<S> TcpConnection<S> {
    /// A connection with nothing read ahead.
    pub fn new(io: S) -> Self {
        TcpConnection {
            io,
            prefix: Prefix::default(),
            meter: Meter::default(),
        }
    }

    pub(super) fn with_prefix(io: S, prefix: Prefix) -> Self {
        TcpConnection {
            io,
            prefix,
            meter: Meter::default(),
        }
    }

    /// The TCP stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// How many bytes read ahead (to classify the connection) are still to be handed out.
    pub fn read_ahead(&self) -> usize {
        self.prefix.bytes().len()
    }
}

impl<S> std::fmt::Debug for TcpConnection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConnection")
            .field("read_ahead", &self.read_ahead())
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TcpConnection<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.prefix.start < this.prefix.end && !buf.is_empty() {
            let n = this.prefix.read(buf);
            this.meter.received(n);
            return Poll::Ready(Ok(n));
        }
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.meter.received(n);
        }
        result
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.prefix.start < this.prefix.end {
            if let Some(buf) = bufs.iter_mut().find(|b| !b.is_empty()) {
                let n = this.prefix.read(buf);
                this.meter.received(n);
                return Poll::Ready(Ok(n));
            }
        }
        let result = Pin::new(&mut this.io).poll_read_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            this.meter.received(n);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TcpConnection<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.meter.sent(n);
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            this.meter.sent(n);
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

/// What the transport yields: a WebSocket connection used as a byte stream (`/ws`, `/tls/ws`) or a
/// plain TCP connection (`/tcp`). Either is an `AsyncRead + AsyncWrite` byte stream.
#[derive(Debug)]
#[non_exhaustive]
// One per connection, moved once: the WebSocket variant stays inline so that its reads and writes
// take no extra indirection.
#[allow(clippy::large_enum_variant)]
pub enum Output<S> {
    /// A WebSocket connection (`/ws`, `/tls/ws`).
    WebSocket(Connection<Socket<S>>),
    /// A plain TCP connection (`/tcp`).
    Tcp(TcpConnection<S>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Output<S> {
    /// Which of the three forms the connection speaks.
    pub fn kind(&self) -> Kind {
        match self {
            Output::WebSocket(c) => match c.get_ref() {
                Socket::Plain(_) => Kind::Ws,
                Socket::Tls(_) => Kind::TlsWs,
            },
            Output::Tcp(_) => Kind::Tcp,
        }
    }

    /// Counts the connection's bytes, close codes and close with `meter`.
    pub(crate) fn set_meter(&mut self, meter: Meter) {
        match self {
            Output::WebSocket(c) => c.set_meter(meter),
            Output::Tcp(c) => c.meter = meter,
        }
    }

    /// The TCP stream under the connection.
    pub fn tcp(&self) -> &S {
        match self {
            Output::WebSocket(c) => c.get_ref().tcp(),
            Output::Tcp(c) => c.get_ref(),
        }
    }

    /// The WebSocket connection, if it is one.
    pub fn websocket(&self) -> Option<&Connection<Socket<S>>> {
        match self {
            Output::WebSocket(c) => Some(c),
            Output::Tcp(_) => None,
        }
    }

    /// The WebSocket connection, mutably, if it is one.
    pub fn websocket_mut(&mut self) -> Option<&mut Connection<Socket<S>>> {
        match self {
            Output::WebSocket(c) => Some(c),
            Output::Tcp(_) => None,
        }
    }

    /// The WebSocket connection, if it is one.
    pub fn into_websocket(self) -> Option<Connection<Socket<S>>> {
        match self {
            Output::WebSocket(c) => Some(c),
            Output::Tcp(_) => None,
        }
    }

    /// The plain TCP connection, if it is one.
    pub fn into_tcp(self) -> Option<TcpConnection<S>> {
        match self {
            Output::Tcp(c) => Some(c),
            Output::WebSocket(_) => None,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Output<S> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Output::WebSocket(c) => Pin::new(c).poll_read(cx, buf),
            Output::Tcp(c) => Pin::new(c).poll_read(cx, buf),
        }
    }

    #[inline]
    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Output::WebSocket(c) => Pin::new(c).poll_read_vectored(cx, bufs),
            Output::Tcp(c) => Pin::new(c).poll_read_vectored(cx, bufs),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Output<S> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Output::WebSocket(c) => Pin::new(c).poll_write(cx, buf),
            Output::Tcp(c) => Pin::new(c).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Output::WebSocket(c) => Pin::new(c).poll_write_vectored(cx, bufs),
            Output::Tcp(c) => Pin::new(c).poll_write_vectored(cx, bufs),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Output::WebSocket(c) => Pin::new(c).poll_flush(cx),
            Output::Tcp(c) => Pin::new(c).poll_flush(cx),
        }
    }

    #[inline]
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Output::WebSocket(c) => Pin::new(c).poll_close(cx),
            Output::Tcp(c) => Pin::new(c).poll_close(cx),
        }
    }
}
