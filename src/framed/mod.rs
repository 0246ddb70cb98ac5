//! The stream adapter: an upgraded WebSocket connection as an `AsyncRead + AsyncWrite` byte stream.
//!
//! Every protocol decision is the sans-IO core's ([`crate::proto`]); this module owns the socket,
//! the read buffer, the timers and the clock, and moves bytes between them. The throughput is won
//! here:
//!
//! - writes are coalesced by the core into one frame per flush (or per `write_buffer_size` bytes),
//!   header in front of the payload in the same buffer, so each frame leaves in one `write`; large
//!   writes go out in one vectored write of header and payload: the caller's buffer on the server
//!   side, on the client side its masked copy in a buffer on the stack (up to 20 KiB);
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
//!
//! Here: the [`Connection`], its constructor, accessors, message-level calls and failure handling,
//! and its `AsyncRead`/`AsyncWrite` impls; the read path is in `read`, the write and close paths
//! in `write`.

mod read;
#[cfg(test)]
mod tests;
mod write;

#[cfg(any(test, feature = "unstable-internals"))]
use std::task::ready;
use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use futures::{AsyncRead, AsyncWrite};

use crate::{
    config::FrameLimits,
    error::{FrameError, SharedIoError},
    metrics::Meter,
    proto::{Core, Role},
    provider::{self, Timer, TimerFn},
};

/// Reads at least this large go straight from the socket into the caller's buffer (one vectored
/// read: the caller's buffer up to the frame's end, then the read buffer for what follows).
const DIRECT_READ_MIN: usize = 4096;
/// Writes at least this large skip the write buffer (one vectored write of header and payload;
/// on the client side up to [`DIRECT_MASKED_MAX`]); smaller ones are gathered into frames of up to
/// the write buffer size.
const DIRECT_WRITE_MIN: usize = 4096;
/// The largest client-side write that skips the write buffer: it is masked into a buffer of this
/// size on the stack. Room for a 16 KiB muxer frame (yamux's) with its noise framing, the usual
/// write on a libp2p connection; larger writes are gathered into the write buffer.
const DIRECT_MASKED_MAX: usize = 20 * 1024;
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
    /// Counts payload bytes, close codes and the close (a no-op without metrics).
    meter: Meter,
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
            .field("close_queued", &self.core.send.close_queued())
            .field("failed", &self.core.has_failed())
            .finish_non_exhaustive()
    }
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
            timers: provider::default_timer,
            close_timed_out: false,
            meter: Meter::default(),
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

    /// Uses the runtime provider `P`'s timers for the keep-alive and close timers (the default is
    /// the default runtime's: async-std's when its feature is on, else tokio's). The transport
    /// passes its own provider.
    pub fn with_provider<P: provider::Provider>(self) -> Self {
        self.with_timers(P::timer)
    }

    /// Uses `timers` for the keep-alive and close timers.
    pub(crate) fn with_timers(mut self, timers: TimerFn) -> Self {
        self.timers = timers;
        self
    }

    /// Counts this connection's payload bytes, close codes and close with `meter`.
    pub(crate) fn set_meter(&mut self, meter: Meter) {
        self.meter = meter;
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
        if self.core.send.close_queued() {
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
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Connection<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = this.poll_read_inner(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.meter.received(n);
        }
        result
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Connection<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = this.poll_write_inner(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.meter.sent(n);
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_inner(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close_inner(cx)
    }
}

impl<T> Drop for Connection<T> {
    fn drop(&mut self) {
        self.meter
            .close_codes(self.core.send.close_code(), self.core.peer_close_code());
    }
}
