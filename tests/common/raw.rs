//! Raw peers for the integration tests: a listener driven in the background ([`Server`]), a
//! hand-driven TCP peer that speaks bytes and frames ([`Raw`]), frame builders, and bounded
//! table-driven cases ([`case`]), and a stream that counts what is read through it ([`Counting`]).
//!
//! What is under test (the listener, the dialer, their connections, the tasks that drive them)
//! runs on the test's runtime `R`. The raw peers are test tooling: their sockets are async-std's
//! (async-io's reactor, which serves them whatever runtime polls them), and the tasks that drive
//! them are spawned on `R` like everything else (a peer that must run in parallel with our side,
//! such as `frame_limits`' flood, gets a thread of its own and says so). [`Ours`] names which
//! side of a connection is ours, for the tests that run each case against both.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use async_std::net::{TcpListener, TcpStream};
use futures::{
    channel::{mpsc, oneshot},
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt,
};
use libp2p::core::{Multiaddr, Transport as _};
use libp2p_ws::{Config, Error};

use super::{dial_opts, Output, Runtime, Transport};

/// Runs one case of a table-driven test for at most `limit` (runtime `R`'s timer); a case that
/// takes longer fails the test with its name and the runtime.
pub async fn case<R: Runtime, F: Future>(name: &str, limit: Duration, future: F) -> F::Output {
    super::timeout::<R, _>(limit, future)
        .await
        .unwrap_or_else(|| {
            panic!(
                "case {name:?} did not finish within {limit:?} on {}",
                R::NAME
            )
        })
}

// ----- a listener driven in the background -------------------------------------------------------

/// A bare WebSocket listener on runtime `R`, polled by a background task; stops when dropped.
pub struct Server<R: Runtime> {
    pub addr: Multiaddr,
    pub socket: SocketAddr,
    /// One entry per accepted TCP connection that got a handshake slot.
    pub incoming: mpsc::UnboundedReceiver<Instant>,
    /// The outcome of every inbound handshake, in completion order.
    pub conns: mpsc::UnboundedReceiver<Result<Output<R>, Error>>,
    _stop: oneshot::Sender<()>,
}

impl<R: Runtime> Server<R> {
    pub async fn start(config: Config, listen_addr: &str) -> Server<R> {
        let mut transport = Transport::<R>::new(config);
        let (_, addr) = super::listen::<R>(&mut transport, listen_addr).await;
        let socket = socket_addr(&addr);
        let (incoming_tx, incoming) = mpsc::unbounded();
        let (conns_tx, conns) = mpsc::unbounded();
        let stop = super::drive_listener::<R, _>(transport, move |upgrade| {
            let _ = incoming_tx.unbounded_send(Instant::now());
            let conns_tx = conns_tx.clone();
            R::spawn_detached(async move {
                let _ = conns_tx.unbounded_send(upgrade.await);
            });
        });
        Server {
            addr,
            socket,
            incoming,
            conns,
            _stop: stop,
        }
    }

    pub async fn plain(config: Config) -> Server<R> {
        Self::start(config, "/ip4/127.0.0.1/tcp/0/ws").await
    }

    pub async fn next(&mut self) -> Result<Output<R>, Error> {
        self.conns.next().await.expect("listener task alive")
    }

    pub async fn next_ok(&mut self) -> Output<R> {
        self.next().await.expect("inbound upgrade succeeds")
    }
}

/// The IP address and TCP port of a listen address (whatever follows them).
pub fn socket_addr(addr: &Multiaddr) -> SocketAddr {
    super::helpers::ip_and_port(addr).expect("an IP address and a TCP port")
}

/// Dials `addr` with a bare transport on runtime `R`.
pub async fn dial<R: Runtime>(config: Config, addr: Multiaddr) -> Result<Output<R>, Error> {
    Transport::<R>::new(config)
        .dial(addr, dial_opts())
        .expect("dial accepted")
        .await
}

// ----- raw peers ---------------------------------------------------------------------------------

pub const UPGRADE_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame header; `len` is what the header declares, whatever follows.
pub fn header(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, len: u64) -> Vec<u8> {
    let mut v = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f)];
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        v.push(m | len as u8);
    } else if len <= 0xffff {
        v.push(m | 126);
        v.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        v.push(m | 127);
        v.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(k) = mask {
        v.extend_from_slice(&k);
    }
    v
}

/// A complete frame, masked when `mask` is given.
pub fn frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut v = header(fin, rsv, opcode, mask, payload.len() as u64);
    let start = v.len();
    v.extend_from_slice(payload);
    if let Some(k) = mask {
        for (i, b) in v[start..].iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    v
}

pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut v = code.to_be_bytes().to_vec();
    v.extend_from_slice(reason);
    v
}

#[derive(Debug)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

/// A hand-driven TCP peer that speaks raw bytes and frames.
pub struct Raw {
    pub s: TcpStream,
    pub buf: Vec<u8>,
    pub scratch: Vec<u8>,
}

impl Raw {
    pub fn new(s: TcpStream) -> Raw {
        Raw {
            s,
            buf: Vec::new(),
            scratch: vec![0; 64 * 1024],
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.s.write_all(bytes).await?;
        self.s.flush().await
    }

    pub async fn read_more(&mut self) -> io::Result<()> {
        let n = self.s.read(&mut self.scratch).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&self.scratch[..n]);
        Ok(())
    }

    pub async fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.read_more().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    pub async fn read_head(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Ok(String::from_utf8_lossy(&head).into_owned());
            }
            if self.buf.len() > 64 * 1024 {
                return Err(io::Error::other("head too large"));
            }
            self.read_more().await?;
        }
    }

    /// Everything until EOF or an error (as a string, lossily).
    pub async fn read_to_close(&mut self) -> String {
        loop {
            match self.read_more().await {
                Ok(()) => {}
                Err(_) => return String::from_utf8_lossy(&self.buf).into_owned(),
            }
        }
    }

    pub async fn read_header(&mut self) -> io::Result<(bool, u8, Option<[u8; 4]>, u64)> {
        let b = self.take(2).await?;
        let (fin, opcode, masked) = (b[0] & 0x80 != 0, b[0] & 0x0f, b[1] & 0x80 != 0);
        let len = match b[1] & 0x7f {
            126 => u16::from_be_bytes(self.take(2).await?.try_into().unwrap()) as u64,
            127 => u64::from_be_bytes(self.take(8).await?.try_into().unwrap()),
            n => n as u64,
        };
        let mask = if masked {
            Some(self.take(4).await?.try_into().unwrap())
        } else {
            None
        };
        Ok((fin, opcode, mask, len))
    }

    pub async fn read_frame(&mut self) -> io::Result<RawFrame> {
        let (fin, opcode, mask, len) = self.read_header().await?;
        assert!(len <= 16 * 1024 * 1024, "frame of {len} bytes");
        let mut payload = self.take(len as usize).await?;
        if let Some(k) = mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= k[i % 4];
            }
        }
        Ok(RawFrame {
            fin,
            opcode,
            masked: mask.is_some(),
            payload,
        })
    }

    /// Discards `n` payload bytes.
    pub async fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let from_buf = n.min(self.buf.len() as u64) as usize;
        self.buf.drain(..from_buf);
        n -= from_buf as u64;
        while n > 0 {
            let want = n.min(self.scratch.len() as u64) as usize;
            let k = self.s.read(&mut self.scratch[..want]).await?;
            if k == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            n -= k as u64;
        }
        Ok(())
    }

    /// Reads frames until a close frame; returns its code (`None` for an empty close payload).
    pub async fn close_code(&mut self) -> io::Result<Option<u16>> {
        loop {
            let f = self.read_frame().await?;
            if f.opcode == 8 {
                return Ok((f.payload.len() >= 2)
                    .then(|| u16::from_be_bytes([f.payload[0], f.payload[1]])));
            }
        }
    }

    /// Resets the connection: SO_LINGER 0, then close (the kernel sends RST).
    pub fn reset(self) {
        use std::os::fd::{AsRawFd, BorrowedFd};
        // SAFETY: the descriptor belongs to `self.s`, which outlives the borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(self.s.as_raw_fd()) };
        socket2::SockRef::from(&fd)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER");
        drop(self);
    }
}

/// A raw client that has completed the upgrade against `socket`.
pub async fn raw_client(socket: SocketAddr) -> Raw {
    let mut raw = Raw::new(TcpStream::connect(socket).await.expect("connect"));
    raw.send(UPGRADE_REQUEST).await.expect("send request");
    let head = raw.read_head().await.expect("response head");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    raw
}

/// A raw TCP listener and the `/ws` address to dial it.
pub async fn raw_listener() -> (TcpListener, Multiaddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (
        listener,
        format!("/ip4/127.0.0.1/tcp/{port}/ws").parse().unwrap(),
    )
}

/// Accepts one connection on a raw listener and answers its upgrade (with the crate's own
/// server handshake), leaving a raw server peer.
pub async fn raw_accept(listener: &TcpListener) -> Raw {
    let (mut s, _) = listener.accept().await.expect("accept");
    let leftover = libp2p_ws::unstable::accept(&mut s, 8192, "/")
        .await
        .expect("upgrade");
    let mut raw = Raw::new(s);
    raw.buf = leftover;
    raw
}

/// Accepts one connection on a raw listener and answers its upgrade with the crate's own server
/// handshake, but passes the 101 response through `edit` first (to add headers, spoil the accept
/// value, or send frames in the same write). Returns the raw server peer and the bytes sent.
pub async fn raw_accept_edited(
    listener: &TcpListener,
    edit: impl FnOnce(&str) -> Vec<u8>,
) -> (Raw, Vec<u8>) {
    let (s, _) = listener.accept().await.expect("accept");
    let mut capture = Capture { s, out: Vec::new() };
    let leftover = libp2p_ws::unstable::accept(&mut capture, 8192, "/")
        .await
        .expect("upgrade");
    let response = edit(&String::from_utf8(capture.out).expect("ASCII response"));
    let mut raw = Raw::new(capture.s);
    raw.buf = leftover;
    raw.send(&response).await.expect("send response");
    (raw, response)
}

/// Reads from the socket, keeps what is written.
struct Capture {
    s: TcpStream,
    out: Vec<u8>,
}

impl futures::AsyncRead for Capture {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.s).poll_read(cx, buf)
    }
}

impl futures::AsyncWrite for Capture {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Our client (on runtime `R`) connected to a raw server.
pub async fn client_and_raw_server<R: Runtime>(config: Config) -> (Output<R>, Raw) {
    let (listener, addr) = raw_listener().await;
    let (raw, conn) = futures::join!(raw_accept(&listener), dial::<R>(config, addr));
    (conn.expect("dial succeeds"), raw)
}

/// Our server connected to a raw client.
pub async fn server_and_raw_client<R: Runtime>(server: &mut Server<R>) -> (Output<R>, Raw) {
    let raw = raw_client(server.socket).await;
    (server.next_ok().await, raw)
}

/// Reads from `conn` (our connection, on any runtime) until it fails; a clean EOF fails the test.
pub async fn read_until_error<S: AsyncRead + Unpin>(conn: &mut S) -> io::Error {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) => panic!("clean EOF where an error was expected"),
            Ok(_) => continue,
            Err(e) => return e,
        }
    }
}

// ----- PROXY headers and held sockets ------------------------------------------------------------

/// A PROXY protocol v2 header (command PROXY, TCP) naming `source` as the client that connected
/// to `destination`; an IPv4 address beside an IPv6 one is written IPv4-mapped.
pub fn proxy_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(0x21);
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            header.push(0x11);
            header.extend_from_slice(&12u16.to_be_bytes());
            header.extend_from_slice(&s.ip().octets());
            header.extend_from_slice(&d.ip().octets());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(a) => a.ip().to_ipv6_mapped().octets(),
                SocketAddr::V6(a) => a.ip().octets(),
            };
            header.push(0x21);
            header.extend_from_slice(&36u16.to_be_bytes());
            header.extend_from_slice(&v6(s));
            header.extend_from_slice(&v6(d));
        }
    }
    header.extend_from_slice(&source.port().to_be_bytes());
    header.extend_from_slice(&destination.port().to_be_bytes());
    header
}

/// A blocking TCP connection from `source` (a loopback address) to `target`.
pub fn connect_from(
    source: std::net::IpAddr,
    target: SocketAddr,
) -> io::Result<std::net::TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::STREAM,
        None,
    )?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&target.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}

/// Whether the peer still holds `stream` open: nothing says it closed (no EOF, no reset) when
/// looked at without waiting. Leaves the stream non-blocking.
pub fn still_open(stream: &std::net::TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    }
}

/// Which side of the connection is ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ours {
    /// Our listener, a raw client (which masks what it sends).
    Listener,
    /// Our dialer, a raw server.
    Dialer,
}

impl Ours {
    /// The mask the raw peer must use.
    pub fn mask(self) -> Option<[u8; 4]> {
        match self {
            Ours::Listener => Some(MASK),
            Ours::Dialer => None,
        }
    }

    /// Our connection (with `config`, on runtime `R`) and the raw peer.
    pub async fn connect<R: Runtime>(self, config: Config) -> (Output<R>, Raw) {
        match self {
            Ours::Listener => {
                // The listener stops when `server` is dropped; the connection lives on.
                let mut server = Server::<R>::plain(config).await;
                server_and_raw_client(&mut server).await
            }
            Ours::Dialer => client_and_raw_server::<R>(config).await,
        }
    }
}

/// Both sides, in the order the tests run them.
pub const BOTH: [Ours; 2] = [Ours::Listener, Ours::Dialer];

/// Counts the bytes read through it.
pub struct Counting<T> {
    /// The stream read through.
    pub inner: T,
    /// Bytes read so far.
    pub read: Arc<AtomicUsize>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counting<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = futures::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.read.fetch_add(n, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}
