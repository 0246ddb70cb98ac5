//! The stream adapter: an upgraded WebSocket connection as an `AsyncRead + AsyncWrite` byte stream.
//!
//! Every protocol decision is the sans-IO core's ([`crate::proto`]); this module owns the socket,
//! the read buffer, the timers and the clock, and moves bytes between them. The throughput is won
//! here:
//!
//! - writes are coalesced by the core into one frame per flush (or per `write_buffer_size` bytes),
//!   header in front of the payload in the same buffer, so each frame leaves in one `write`; large
//!   server-side writes go out in one vectored write of header and caller's buffer;
//! - reads parse headers from a small read buffer and copy payload straight into the caller's buffer
//!   (large reads bypass the read buffer entirely); both buffers are released while idle.
//!
//! Rules of the byte stream (documented in the crate docs):
//! - binary and text frames both carry stream bytes (as in rust-libp2p's transport); text messages
//!   must be valid UTF-8 (RFC 6455 section 8.1), checked as they arrive, so that the first invalid
//!   byte fails the connection with 1007; frame and message sizes are bounded;
//! - pings are answered with pongs (only the latest unanswered ping, so a ping flood cannot grow the
//!   buffer); keep-alive pings detect half-open connections;
//! - a close frame from the peer ends the read side (EOF) and is answered; a TCP EOF between frames
//!   is a clean EOF too, inside a frame it is an error;
//! - a protocol violation closes with the matching close code (1002, 1007, 1009) and every later
//!   call returns an error (never a panic);
//! - one read call handles at most 64 frames (or 8 KiB) without returning data, then wakes its task
//!   and returns `Pending`, so a flood of empty frames or pings cannot monopolise a thread;
//! - `close` is bounded as a whole by the close timeout, TLS flush and close included.

use std::{
    io::{self, IoSlice, IoSliceMut},
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Instant,
};

use futures::{AsyncRead, AsyncWrite};

use crate::{
    config::FrameLimits,
    error::{FrameError, SharedIoError},
    proto::{Core, Event, KeepAliveAction, Role},
    provider::{Timer, TimerFn},
};

/// Reads at least this large go straight from the socket into the caller's buffer (one vectored
/// read: the caller's buffer up to the frame's end, then the read buffer for what follows).
const DIRECT_READ_MIN: usize = 4096;
/// Server-side writes at least this large skip the write buffer (one vectored write of header and
/// payload); smaller ones are gathered into frames of up to the write buffer size.
const DIRECT_WRITE_MIN: usize = 4096;
/// The read buffer's first size: room for frame headers, control frames (at most 139 bytes each)
/// and the small frames exchanged while a connection is quiet or upgrading. It grows to
/// `read_buffer_size` once payload has to be read through it (frames larger than what one small read
/// took, read in pieces under [`DIRECT_READ_MIN`]); larger payload reads go to the caller's buffer
/// and only what the socket holds past the frame's end lands here.
/// Keeping it small keeps short-lived, zero-filled allocations (and the resident pages they leave
/// behind) out of idle connections.
const SMALL_READ_BUFFER: usize = 1024;
/// Most frames one read call processes without returning data (headers of empty data frames,
/// control frames). Past it, the call wakes its task and returns `Pending`, so that a peer streaming
/// empty frames or pings cannot keep one poll running: the task's timers (keep-alive, the upgrade
/// timeout, the muxer's) and other tasks on its thread get their turn.
const MAX_FRAMES_PER_POLL: usize = 64;
/// Most bytes one read call takes from the socket without returning data; past it, the call yields
/// like [`MAX_FRAMES_PER_POLL`].
const MAX_BYTES_PER_POLL: usize = 8 * 1024;

/// An upgraded WebSocket connection used as a byte stream.
///
/// Everything written is sent in binary frames; everything received in data frames is read back as
/// bytes. Call `flush` (or `close`) to send what was written; `close` sends a close frame.
pub struct Connection<T> {
    io: T,
    core: Core,
    limits: FrameLimits,

    /// Read buffer: `rbuf[rpos..rend]` holds received bytes not yet consumed. Empty while idle.
    rbuf: Box<[u8]>,
    rpos: usize,
    rend: usize,
    /// Set by [`Connection::poll_read_message`]: stop at empty data frames too.
    report_empty_frames: bool,

    /// The keep-alive timer and the deadline it is armed for.
    keep_alive_timer: Option<Timer>,
    armed_for: Option<Instant>,
    /// Bounds `poll_close` as a whole; started by its first call.
    close_timer: Option<Timer>,
    /// Makes the keep-alive and close timers (the runtime's, through its provider).
    timers: TimerFn,
    /// The close timer fired: every later `poll_close` fails at once.
    close_timed_out: bool,
}

/// A piece of an incoming WebSocket data message, from [`Connection::poll_read_message`].
#[cfg(any(test, feature = "unstable-internals"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessageChunk {
    /// Payload bytes written to the buffer (0 for an empty frame).
    pub len: usize,
    /// The message is a text message (opcode 1); its payload is checked to be valid UTF-8.
    pub text: bool,
    /// These bytes end the message.
    pub end: bool,
}

impl<T> std::fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.core.role())
            .field("peer_closed", &self.core.peer_closed())
            .field("close_sent", &self.core.send.close_sent())
            .field("failed", &self.core.has_failed())
            .finish_non_exhaustive()
    }
}

/// What a read step ended with: data (or EOF) for the caller, or go round again.
enum Step {
    Done(usize),
    Again,
}

impl<T> Connection<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps a socket on which the HTTP upgrade has completed. `leftover` holds bytes read past the
    /// end of the HTTP head (the start of the first frames), if any.
    pub fn new(io: T, role: Role, limits: FrameLimits, leftover: &[u8]) -> Self {
        let mut conn = Connection {
            io,
            core: Core::new(role, &limits, Instant::now()),
            limits,
            rbuf: Box::default(),
            rpos: 0,
            rend: 0,
            report_empty_frames: false,
            keep_alive_timer: None,
            armed_for: None,
            close_timer: None,
            timers: default_timers,
            close_timed_out: false,
        };
        if !leftover.is_empty() {
            let size = SMALL_READ_BUFFER
                .min(limits.read_buffer_size())
                .max(leftover.len());
            let mut buf = vec![0; size].into_boxed_slice();
            buf[..leftover.len()].copy_from_slice(leftover);
            conn.rbuf = buf;
            conn.rend = leftover.len();
        }
        conn
    }

    /// Uses `timers` for the keep-alive and close timers (the transport passes its provider's;
    /// the default is the default provider's).
    pub fn with_timers(mut self, timers: TimerFn) -> Self {
        self.timers = timers;
        self
    }

    /// Which end of the WebSocket this is.
    pub fn role(&self) -> Role {
        self.core.role()
    }

    /// The underlying socket.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Bytes of buffer memory this connection holds right now (read plus write buffer).
    #[cfg(any(test, feature = "unstable-internals"))]
    pub fn buffered_capacity(&self) -> usize {
        self.rbuf.len() + self.core.send.capacity()
    }

    /// Message-level reading, for tools that need WebSocket message boundaries (conformance
    /// testing, proxies) rather than a byte stream.
    ///
    /// Reads payload like `poll_read` (with the same checks, limits, control frame handling and
    /// keep-alive), but also returns for every empty data frame, and says which kind of message the
    /// bytes belong to and whether they end it. A read never spans two frames. `Ok(None)` is the end
    /// of the stream (the peer's close frame, or a TCP EOF between messages). `buf` must not be
    /// empty. Text payloads are checked for UTF-8 as in `poll_read`; a chunk can end inside a character.
    #[cfg(any(test, feature = "unstable-internals"))]
    pub fn poll_read_message(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<Option<MessageChunk>>> {
        if buf.is_empty() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "poll_read_message needs a non-empty buffer",
            )));
        }
        self.report_empty_frames = true;
        let result = self.poll_read_inner(cx, buf);
        self.report_empty_frames = false;
        let len = ready!(result)?;
        if len == 0 && self.core.peer_closed() {
            return Poll::Ready(Ok(None));
        }
        Poll::Ready(Ok(Some(MessageChunk {
            len,
            text: self.core.recv.is_text(),
            end: self.core.recv.at_message_boundary(),
        })))
    }

    /// Queues one complete message of the given kind as a single frame, after everything written
    /// so far (which is sent first); `flush` sends it. Unlike `poll_write`, the frame is not bounded
    /// by the write buffer size: the caller bounds `payload`.
    #[cfg(any(test, feature = "unstable-internals"))]
    pub fn poll_send_message(
        &mut self,
        cx: &mut Context<'_>,
        text: bool,
        payload: &[u8],
    ) -> Poll<io::Result<()>> {
        self.check_writable()?;
        self.core.send.finalize();
        if let Err(e) = ready!(self.poll_drain(cx)) {
            return Poll::Ready(Err(self.fail_io(e)));
        }
        self.core.send.message(text, payload);
        Poll::Ready(Ok(()))
    }

    fn check_failed(&self) -> io::Result<()> {
        self.core.check().map_err(FrameError::into_io)
    }

    /// Data may be written: not failed, and our close frame not queued.
    fn check_writable(&self) -> io::Result<()> {
        self.check_failed()?;
        if self.core.send.close_sent() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the WebSocket connection is closing",
            ));
        }
        Ok(())
    }

    /// Records the first error, tries once to tell the peer with the close frame the core queued,
    /// releases buffers.
    fn fail(&mut self, cx: &mut Context<'_>, error: FrameError) -> io::Error {
        if !self.core.has_failed() {
            let error = self.core.fail(error.clone());
            let _ = self.poll_drain(cx);
            self.release_buffers();
            return error.into_io();
        }
        error.into_io()
    }

    /// Records a socket error as the first error; the caller gets an error of the same kind and
    /// message.
    fn fail_io(&mut self, error: io::Error) -> io::Error {
        if self.core.has_failed() {
            return error;
        }
        let kind = error.kind();
        let shared = Arc::new(error);
        self.core.fail_io(shared.clone());
        self.release_buffers();
        io::Error::new(kind, FrameError::Io(SharedIoError(shared)))
    }

    fn release_buffers(&mut self) {
        self.rbuf = Box::default();
        self.rpos = 0;
        self.rend = 0;
        self.core.send.release();
    }

    // ----- reading -----------------------------------------------------------------------------

    /// Reads more bytes from the socket into the read buffer; the number read, 0 on EOF. `grow`: payload is
    /// read through the buffer (a small remainder of a frame, or a caller reading in small pieces),
    /// so data is flowing: an empty small buffer is replaced by a full-size one, which takes the rest
    /// of the frame and the frames behind it in one read.
    fn poll_fill(&mut self, cx: &mut Context<'_>, grow: bool) -> Poll<io::Result<usize>> {
        let full_size = self.limits.read_buffer_size();
        if self.rbuf.is_empty() {
            self.rbuf = vec![0; SMALL_READ_BUFFER.min(full_size)].into_boxed_slice();
        } else if grow && self.rpos == self.rend && self.rbuf.len() < full_size {
            self.rbuf = vec![0; full_size].into_boxed_slice();
        }
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        } else if self.rend == self.rbuf.len() {
            if self.rpos == 0 {
                // Cannot happen with the minimum buffer size (1 KiB; a header plus a control frame
                // is at most 139 bytes); refuse rather than read into an empty slice and mistake it
                // for EOF.
                return Poll::Ready(Err(FrameError::Protocol(
                    crate::error::ProtocolViolation::InvalidHeader,
                )
                .into_io()));
            }
            self.rbuf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
        }
        let n = ready!(Pin::new(&mut self.io).poll_read(cx, &mut self.rbuf[self.rend..]))?;
        if n > 0 {
            self.rend += n;
            self.core.on_receive(Instant::now());
        }
        Poll::Ready(Ok(n))
    }

    /// Called when the socket has nothing to read: runs keep-alive and releases an empty read buffer.
    /// `Ready(Ok)` means something changed and the caller should try again.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.rpos == self.rend && !self.rbuf.is_empty() {
            self.rbuf = Box::default();
            self.rpos = 0;
            self.rend = 0;
        }
        match self.core.keep_alive(Instant::now()) {
            KeepAliveAction::Off => Poll::Pending,
            KeepAliveAction::Ping => {
                let _ = self.poll_drain(cx);
                Poll::Ready(Ok(()))
            }
            KeepAliveAction::TimedOut(after) => {
                Poll::Ready(Err(self.fail(cx, FrameError::KeepAliveTimeout(after))))
            }
            KeepAliveAction::WaitUntil(deadline) => {
                let timers = self.timers;
                let timer = self
                    .keep_alive_timer
                    .get_or_insert_with(|| timers(deadline));
                // Re-arm only when the deadline moved earlier: a timer armed for an earlier
                // deadline fires, the deadline is recomputed and the timer re-armed then. So a
                // busy connection resets its timer about once per interval, not on every read.
                match self.armed_for {
                    Some(armed) if armed <= deadline => {}
                    _ => {
                        timer.as_mut().reset(deadline);
                        self.armed_for = Some(deadline);
                    }
                }
                ready!(timer.as_mut().poll(cx));
                self.armed_for = None;
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Reads payload of the current frame (`remaining` bytes left) into `out`.
    fn poll_payload(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut [u8],
        remaining: u64,
    ) -> Poll<io::Result<Step>> {
        let want = out
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = if self.rpos < self.rend {
            let n = want.min(self.rend - self.rpos);
            out[..n].copy_from_slice(&self.rbuf[self.rpos..self.rpos + n]);
            self.rpos += n;
            n
        } else if want >= DIRECT_READ_MIN {
            // The payload goes straight into the caller's buffer; whatever the socket holds
            // beyond this frame (the next frame's header, usually) lands in the read buffer
            // in the same call, which saves a read per frame on a plain socket.
            if self.rbuf.is_empty() {
                self.rbuf = vec![0; SMALL_READ_BUFFER.min(self.limits.read_buffer_size())]
                    .into_boxed_slice();
            }
            self.rpos = 0;
            self.rend = 0;
            let mut bufs = [
                IoSliceMut::new(&mut out[..want]),
                IoSliceMut::new(&mut self.rbuf[..]),
            ];
            match Pin::new(&mut self.io).poll_read_vectored(cx, &mut bufs) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(self.fail(cx, FrameError::UnexpectedEof)))
                }
                Poll::Ready(Ok(n)) => {
                    self.core.on_receive(Instant::now());
                    self.rend = n.saturating_sub(want);
                    n.min(want)
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail_io(e))),
                Poll::Pending => {
                    ready!(self.poll_idle(cx))?;
                    return Poll::Ready(Ok(Step::Again));
                }
            }
        } else {
            return match self.poll_fill(cx, true) {
                Poll::Ready(Ok(0)) => Poll::Ready(Err(self.fail(cx, FrameError::UnexpectedEof))),
                // Payload arrived: the next turn returns it.
                Poll::Ready(Ok(_)) => Poll::Ready(Ok(Step::Again)),
                Poll::Ready(Err(e)) => Poll::Ready(Err(self.fail_io(e))),
                Poll::Pending => {
                    ready!(self.poll_idle(cx))?;
                    Poll::Ready(Ok(Step::Again))
                }
            };
        };
        match self.core.payload(&mut out[..n]) {
            Ok(_) => Poll::Ready(Ok(Step::Done(n))),
            Err(e) => Poll::Ready(Err(self.fail(cx, e))),
        }
    }

    fn poll_read_inner(&mut self, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        self.check_failed()?;
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if !self.core.send.pending().is_empty() {
            // A pong, ping or close reply may be waiting; send it along.
            if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
                return Poll::Ready(Err(self.fail_io(e)));
            }
        }
        // Work done in this call without returning data (see MAX_FRAMES_PER_POLL).
        let mut frames = 0;
        let mut bytes = 0;
        loop {
            if self.core.peer_closed() {
                return Poll::Ready(Ok(0));
            }
            if let Some(remaining) = self.core.recv.payload_remaining() {
                match ready!(self.poll_payload(cx, out, remaining))? {
                    Step::Done(n) => return Poll::Ready(Ok(n)),
                    Step::Again => continue,
                }
            }

            if frames >= MAX_FRAMES_PER_POLL || bytes >= MAX_BYTES_PER_POLL {
                // Cooperative yield: come back at once, after the task's other work.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match self.core.decode(&self.rbuf[self.rpos..self.rend]) {
                Ok(Event::Data { consumed, len }) => {
                    self.rpos += consumed;
                    if len == 0 && self.report_empty_frames {
                        return Poll::Ready(Ok(0));
                    }
                    frames += 1;
                    continue;
                }
                Ok(Event::Control { consumed, queued }) => {
                    self.rpos += consumed;
                    if queued {
                        let _ = self.poll_drain(cx);
                    }
                    frames += 1;
                    continue;
                }
                Ok(Event::NeedMore) => {}
                Err(e) => return Poll::Ready(Err(self.fail(cx, e))),
            }
            match self.poll_fill(cx, false) {
                Poll::Ready(Ok(0)) => {
                    if self.rpos < self.rend {
                        return Poll::Ready(Err(self.fail(cx, FrameError::UnexpectedEof)));
                    }
                    // TCP EOF: clean between messages, an error inside one.
                    if let Err(e) = self.core.on_eof() {
                        return Poll::Ready(Err(self.fail(cx, e)));
                    }
                    return Poll::Ready(Ok(0));
                }
                Poll::Ready(Ok(n)) => bytes += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail_io(e))),
                Poll::Pending => ready!(self.poll_idle(cx))?,
            }
        }
    }

    // ----- writing -----------------------------------------------------------------------------

    /// Sends complete frames from the write buffer (up to the open frame, if any).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let pending = self.core.send.pending();
            if pending.is_empty() {
                // Lets the core compact its buffer and accept a new pong.
                self.core.send.advance(0);
                return Poll::Ready(Ok(()));
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.core.send.advance(n);
        }
    }

    fn poll_write_inner(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check_writable()?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if let Some(n) = self.try_write_direct(cx, buf) {
            return Poll::Ready(n);
        }
        loop {
            let n = self.core.send.write(buf);
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            // A full frame is gathered: send it first.
            self.core.send.finalize();
            if let Err(e) = ready!(self.poll_drain(cx)) {
                return Poll::Ready(Err(self.fail_io(e)));
            }
        }
    }

    /// A large write on the server side (nothing to mask) with nothing else waiting: sends it as
    /// one frame straight from the caller's buffer, header and payload in one vectored write,
    /// instead of copying it into the write buffer first. Only what the socket did not take is
    /// copied (it completes the frame, so it goes out before anything written later). `None` when
    /// this does not apply or the socket is not ready: the caller buffers as usual.
    fn try_write_direct(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<io::Result<usize>> {
        if buf.len() < DIRECT_WRITE_MIN {
            return None;
        }
        let payload = &buf[..buf.len().min(self.limits.write_buffer_size())];
        let (head, head_len) = self.core.send.direct_header(payload.len())?;
        let bufs = [IoSlice::new(&head[..head_len]), IoSlice::new(payload)];
        let written = match Pin::new(&mut self.io).poll_write_vectored(cx, &bufs) {
            Poll::Pending => return None,
            Poll::Ready(Ok(0)) => {
                return Some(Err(self.fail_io(io::ErrorKind::WriteZero.into())));
            }
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Some(Err(self.fail_io(e))),
        };
        if written < head_len + payload.len() {
            self.core
                .send
                .direct_rest(&head[..head_len], payload, written);
        }
        Some(Ok(payload.len()))
    }

    fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_failed()?;
        self.core.send.finalize();
        if let Err(e) = ready!(self.poll_drain(cx)) {
            return Poll::Ready(Err(self.fail_io(e)));
        }
        if let Err(e) = ready!(Pin::new(&mut self.io).poll_flush(cx)) {
            return Poll::Ready(Err(self.fail_io(e)));
        }
        self.core.send.release_if_idle();
        Poll::Ready(Ok(()))
    }

    /// Closes the connection. Every step (sending the close frame and what was written before it,
    /// flushing the socket, closing it: for TLS, sending `close_notify`; after a failure, only
    /// closing the socket) runs under one timer, started by the first call and set to
    /// `close_timeout`. Once it has fired, every later call fails at once.
    fn poll_close_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let timeout = self.limits.close_timeout();
        if self.close_timed_out {
            return Poll::Ready(Err(FrameError::CloseTimeout(timeout).into_io()));
        }
        if self.close_timer.is_none() {
            self.close_timer = Some((self.timers)(Instant::now() + timeout));
        }
        if let Poll::Ready(result) = self.poll_close_steps(cx) {
            return Poll::Ready(result);
        }
        let timer = self.close_timer.as_mut().expect("started above");
        ready!(timer.as_mut().poll(cx));
        tracing::debug!(role = ?self.core.role(), "peer did not complete the close in time");
        self.close_timed_out = true;
        let error = FrameError::CloseTimeout(timeout);
        if !self.core.has_failed() {
            self.core.fail(error.clone());
            self.release_buffers();
        }
        Poll::Ready(Err(error.into_io()))
    }

    fn poll_close_steps(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.core.has_failed() {
            // `fail` already tried to send a close frame; only the socket is left to close.
            return Pin::new(&mut self.io).poll_close(cx);
        }
        // Queues our close frame after everything written (once).
        self.core.send.close(1000);
        if let Err(e) = ready!(self.poll_drain(cx)) {
            return Poll::Ready(Err(self.fail_io(e)));
        }
        if let Err(e) = ready!(Pin::new(&mut self.io).poll_flush(cx)) {
            return Poll::Ready(Err(self.fail_io(e)));
        }
        self.core.send.release();
        self.rbuf = Box::default();
        Pin::new(&mut self.io).poll_close(cx)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Connection<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_read_inner(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Connection<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_inner(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_inner(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close_inner(cx)
    }
}

/// The default provider's timers, for connections built without [`Connection::with_timers`].
#[cfg(feature = "async-std")]
fn default_timers(at: Instant) -> Timer {
    <crate::provider::async_std::AsyncStd as crate::provider::Provider>::timer(at)
}

/// The default provider's timers, for connections built without [`Connection::with_timers`].
#[cfg(all(feature = "tokio", not(feature = "async-std")))]
fn default_timers(at: Instant) -> Timer {
    <crate::provider::tokio::Tokio as crate::provider::Provider>::timer(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::apply_mask;

    /// One masked binary frame as a client sends it (payload shorter than 64 KiB).
    fn masked_frame(payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let len = u16::try_from(payload.len()).expect("short payload");
        let mut wire = vec![0x82, 0x80 | 126];
        wire.extend_from_slice(&len.to_be_bytes());
        wire.extend_from_slice(&mask);
        let body = wire.len();
        wire.extend_from_slice(payload);
        apply_mask(&mut wire[body..], mask, 0);
        wire
    }

    /// A socket that takes at most a few bytes per write (cycling through `caps`, spanning buffers
    /// in vectored writes) and is sometimes not ready: every partial-write path of the writer.
    struct Trickle {
        wire: Vec<u8>,
        caps: &'static [usize],
        calls: usize,
    }

    impl Trickle {
        fn next_cap(&mut self, cx: &mut Context<'_>) -> Option<usize> {
            self.calls += 1;
            let cap = self.caps[self.calls % self.caps.len()];
            if cap == 0 {
                cx.waker().wake_by_ref();
                return None;
            }
            Some(cap)
        }
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let Some(mut cap) = this.next_cap(cx) else {
                return Poll::Pending;
            };
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(cap);
                this.wire.extend_from_slice(&buf[..take]);
                n += take;
                cap -= take;
            }
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn partial_writes_of_direct_and_buffered_frames_keep_the_stream_intact() {
        use futures::{executor::block_on, io::Cursor, AsyncReadExt, AsyncWriteExt};
        let limits = FrameLimits::default();
        // Large writes (sent straight from the caller's buffer) and small ones (gathered), with
        // flushes between some of them.
        let sizes = [10_000, 100, 3, 70_000, 4096, 5000, 4095, 200_000, 1];
        const CAPS: [&[usize]; 3] = [
            &[usize::MAX],
            &[1, 5, 0, 13, 3000],
            &[2, 0, 9000, 7, 65_536, 0],
        ];
        for caps in CAPS {
            for role in [Role::Server, Role::Client] {
                let io = Trickle {
                    wire: Vec::new(),
                    caps,
                    calls: 0,
                };
                let mut conn = Connection::new(io, role, limits, &[]);
                let mut sent = Vec::new();
                for (i, &size) in sizes.iter().enumerate() {
                    let data: Vec<u8> = (0..size).map(|j| (i * 31 + j * 7) as u8).collect();
                    block_on(conn.write_all(&data)).expect("write");
                    if i % 2 == 0 {
                        block_on(conn.flush()).expect("flush");
                    }
                    sent.extend_from_slice(&data);
                }
                block_on(conn.close()).expect("close");
                let wire = std::mem::take(&mut conn.io.wire);

                let peer = match role {
                    Role::Server => Role::Client,
                    Role::Client => Role::Server,
                };
                let mut reader = Connection::new(Cursor::new(wire), peer, limits, &[]);
                let mut got = Vec::new();
                block_on(reader.read_to_end(&mut got)).expect("read back");
                assert!(
                    got == sent,
                    "{role:?} with write caps {caps:?}: stream differs"
                );
            }
        }
    }

    #[test]
    fn read_buffer_stays_small_for_large_reads_and_grows_for_small_ones() {
        use futures::{executor::block_on, io::Cursor, AsyncReadExt};
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let wire = masked_frame(&payload);
        let limits = FrameLimits::default();
        for (piece, peak_capacity) in [
            (64 * 1024, SMALL_READ_BUFFER),
            (100, limits.read_buffer_size()),
        ] {
            let mut conn = Connection::new(Cursor::new(wire.clone()), Role::Server, limits, &[]);
            let (mut got, mut buf, mut peak) = (Vec::new(), vec![0; piece], 0);
            while got.len() < payload.len() {
                let n = block_on(conn.read(&mut buf)).expect("read");
                assert!(n > 0, "EOF after {} bytes", got.len());
                got.extend_from_slice(&buf[..n]);
                peak = peak.max(conn.buffered_capacity());
            }
            assert_eq!(got, payload, "reads of {piece}");
            assert_eq!(peak, peak_capacity, "reads of {piece}");
        }
    }

    /// An in-memory socket: reads serve `input` (at most `piece` bytes per read), writes are counted
    /// and dropped.
    struct Mem {
        input: Vec<u8>,
        pos: usize,
        piece: usize,
        written: usize,
    }

    impl AsyncRead for Mem {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let n = buf.len().min(this.piece).min(this.input.len() - this.pos);
            buf[..n].copy_from_slice(&this.input[this.pos..this.pos + n]);
            this.pos += n;
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Mem {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().written += buf.len();
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl futures::task::ArcWake for CountingWaker {
        fn wake_by_ref(arc_self: &std::sync::Arc<Self>) {
            arc_self
                .0
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A frame as a client (masked, `role` Server reads it) or a server (unmasked) sends it.
    fn small_frame(sender: Role, first: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut wire = vec![first];
        match sender {
            Role::Client => {
                let mask = [9, 8, 7, 6];
                wire.push(0x80 | payload.len() as u8);
                wire.extend_from_slice(&mask);
                let body = wire.len();
                wire.extend_from_slice(payload);
                apply_mask(&mut wire[body..], mask, 0);
            }
            Role::Server => {
                wire.push(payload.len() as u8);
                wire.extend_from_slice(payload);
            }
        }
        wire
    }

    #[test]
    fn one_read_call_yields_after_the_per_poll_bound_and_wakes_its_task() {
        use std::sync::{atomic::Ordering, Arc};
        const FLOOD: usize = 10_000;
        for reader in [Role::Server, Role::Client] {
            let sender = match reader {
                Role::Server => Role::Client,
                Role::Client => Role::Server,
            };
            // (what, the flood, the data frame behind it)
            let floods = [
                ("empty binary frames", small_frame(sender, 0x82, b""), None),
                ("empty pings", small_frame(sender, 0x89, b""), None),
                ("125-byte pings", small_frame(sender, 0x89, &[7; 125]), None),
                (
                    "empty continuation frames",
                    small_frame(sender, 0x00, b""),
                    Some(small_frame(sender, 0x02, b"")),
                ),
            ];
            for (what, unit, start) in floods {
                let mut input = start.clone().unwrap_or_default();
                for _ in 0..FLOOD {
                    input.extend_from_slice(&unit);
                }
                let end = if start.is_some() { 0x80 } else { 0x82 };
                input.extend_from_slice(&small_frame(sender, end, b"end"));
                for piece in [usize::MAX, 1000, 3] {
                    let io = Mem {
                        input: input.clone(),
                        pos: 0,
                        piece,
                        written: 0,
                    };
                    let limits = FrameLimits::default().with_keep_alive(None);
                    let mut conn = Connection::new(io, reader, limits, &[]);
                    let counter = Arc::new(CountingWaker(0.into()));
                    let waker = futures::task::waker(counter.clone());
                    let mut cx = Context::from_waker(&waker);
                    let mut buf = [0u8; 16];
                    let mut got = Vec::new();
                    let (mut polls, mut pendings) = (0, 0);
                    while got.len() < 3 {
                        polls += 1;
                        match Pin::new(&mut conn).poll_read(&mut cx, &mut buf) {
                            Poll::Ready(result) => {
                                let n = result.expect("read");
                                assert!(n > 0, "{reader:?} reading {what}: EOF");
                                got.extend_from_slice(&buf[..n]);
                            }
                            Poll::Pending => {
                                pendings += 1;
                                // Yielding is not waiting: the task must be woken to come back.
                                assert_eq!(
                                    counter.0.load(Ordering::Relaxed),
                                    pendings,
                                    "{reader:?} reading {what} in pieces of {piece}: Pending without a wake"
                                );
                            }
                        }
                        assert!(polls <= FLOOD, "{reader:?} reading {what}: no progress");
                    }
                    assert_eq!(got, b"end", "{reader:?} reading {what}");
                    let frames = FLOOD + usize::from(start.is_some());
                    let per_poll = frames.div_ceil(polls);
                    if piece == usize::MAX {
                        eprintln!(
                            "figure: {reader:?} reading {FLOOD} {what}: {polls} polls, {pendings} \
                             yields (at most {per_poll} frames per poll)"
                        );
                    }
                    assert!(
                        pendings >= frames / MAX_FRAMES_PER_POLL,
                        "{reader:?} reading {what} in pieces of {piece}: only {pendings} yields for \
                         {frames} frames"
                    );
                    assert!(per_poll <= MAX_FRAMES_PER_POLL);
                    if what.contains("pings") {
                        assert!(conn.get_ref().written > 0, "pings are answered");
                    }
                }
            }
        }
    }
}
