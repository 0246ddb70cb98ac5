//! The upgraded connection: WebSocket binary frames <-> an `AsyncRead + AsyncWrite` byte stream.
//!
//! Frame headers are encoded and decoded with soketto's sans-IO codec ([`soketto::base::Codec`]); the
//! stream adapter, buffering and masking are ours, because that is where the throughput is won:
//!
//! - writes are coalesced into one frame per flush (or per `write_buffer_size` bytes), and the header
//!   is written in front of the payload in the same buffer, so each frame leaves in one `write`;
//! - reads parse headers from a small read buffer and copy payload straight into the caller's buffer
//!   (large reads bypass the read buffer entirely); both buffers are released while idle;
//! - masking and unmasking work eight bytes at a time.
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
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};

use futures::{AsyncRead, AsyncWrite};
use soketto::{
    base::{Codec, Header, OpCode},
    Parsing,
};

use crate::{
    config::FrameLimits,
    error::FrameError,
    provider::{Timer, TimerFn},
};

/// Which end of the WebSocket this is: clients mask what they send, servers must not. (Exhaustive:
/// a WebSocket has exactly these two ends.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that sent the HTTP upgrade request (the dialer).
    Client,
    /// The side that answered it (the listener).
    Server,
}

/// Room kept in front of an open frame's payload for its header (2 + 8 + 4 bytes at most).
const HEADER_SLOT: usize = 14;
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
/// Largest control frame payload (RFC 6455 section 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;
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
    role: Role,
    limits: FrameLimits,
    codec: Codec,

    /// Read buffer: `rbuf[rpos..rend]` holds received bytes not yet consumed. Empty while idle.
    rbuf: Box<[u8]>,
    rpos: usize,
    rend: usize,
    /// The data frame whose payload is being read.
    frame: Option<Payload>,
    /// Inside a fragmented message (a continuation frame must follow).
    in_message: bool,
    message_len: u64,
    /// The message being read is a text message (opcode 1).
    rx_text: bool,
    /// UTF-8 check of the text message being read.
    utf8: Utf8Check,
    /// Set by [`Connection::poll_read_message`]: stop at empty data frames too.
    report_empty_frames: bool,
    /// An empty data frame was read while `report_empty_frames` was set.
    empty_frame: bool,

    /// Write buffer: `wbuf[wpos..]` is waiting for the socket. Empty while idle.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Start of the frame being filled by `poll_write` (a `HEADER_SLOT` gap, then payload).
    open: Option<usize>,
    /// A pong is in `wbuf` and not yet sent.
    pong_queued: bool,

    /// The peer sent a close frame: reads return EOF.
    peer_closed: bool,
    /// We queued a close frame: no more data may be written.
    close_sent: bool,
    /// The first error; every later call reports it.
    failed: Option<String>,

    keep_alive: KeepAliveState,
    /// Bounds `poll_close` as a whole; started by its first call.
    close_timer: Option<Timer>,
    /// Makes the keep-alive and close timers (the runtime's, through its provider).
    timers: TimerFn,
    /// The close timer fired: every later `poll_close` fails at once.
    close_timed_out: bool,
}

/// A piece of an incoming WebSocket data message, from [`Connection::poll_read_message`].
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

struct Payload {
    remaining: u64,
    mask: Option<[u8; 4]>,
    mask_offset: usize,
}

struct KeepAliveState {
    last_rx: Instant,
    ping_sent: Option<Instant>,
    timer: Option<Timer>,
    armed_for: Option<Instant>,
}

impl<T> std::fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("peer_closed", &self.peer_closed)
            .field("close_sent", &self.close_sent)
            .field("failed", &self.failed)
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
        let mut codec = Codec::new();
        codec.set_max_data_size(limits.max_frame_size());
        let mut conn = Connection {
            io,
            role,
            limits,
            codec,
            rbuf: Box::default(),
            rpos: 0,
            rend: 0,
            frame: None,
            in_message: false,
            message_len: 0,
            rx_text: false,
            utf8: Utf8Check::default(),
            report_empty_frames: false,
            empty_frame: false,
            wbuf: Vec::new(),
            wpos: 0,
            open: None,
            pong_queued: false,
            peer_closed: false,
            close_sent: false,
            failed: None,
            keep_alive: KeepAliveState {
                last_rx: Instant::now(),
                ping_sent: None,
                timer: None,
                armed_for: None,
            },
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
        self.role
    }

    /// The underlying socket.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Bytes of buffer memory this connection holds right now (read plus write buffer).
    pub fn buffered_capacity(&self) -> usize {
        self.rbuf.len() + self.wbuf.capacity()
    }

    /// Message-level reading, for tools that need WebSocket message boundaries (conformance
    /// testing, proxies) rather than a byte stream.
    ///
    /// Reads payload like `poll_read` (with the same checks, limits, control frame handling and
    /// keep-alive), but also returns for every empty data frame, and says which kind of message the
    /// bytes belong to and whether they end it. A read never spans two frames. `Ok(None)` is the end
    /// of the stream (the peer's close frame, or a TCP EOF between messages). `buf` must not be
    /// empty. Text payloads are checked for UTF-8 as in `poll_read`; a chunk can end inside a character.
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
        self.empty_frame = false;
        let len = ready!(result)?;
        if len == 0 && self.peer_closed {
            return Poll::Ready(Ok(None));
        }
        Poll::Ready(Ok(Some(MessageChunk {
            len,
            text: self.rx_text,
            end: self.frame.is_none() && !self.in_message,
        })))
    }

    /// Queues one complete message of the given kind as a single frame, after everything written
    /// so far (which is sent first); `flush` sends it. Unlike `poll_write`, the frame is not bounded
    /// by the write buffer size: the caller bounds `payload`.
    pub fn poll_send_message(
        &mut self,
        cx: &mut Context<'_>,
        text: bool,
        payload: &[u8],
    ) -> Poll<io::Result<()>> {
        self.check_failed()?;
        if self.close_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the WebSocket connection is closing",
            )));
        }
        self.finalize();
        if let Err(e) = ready!(self.poll_drain(cx)) {
            return Poll::Ready(Err(self.fail_io(e)));
        }
        let mut header = Header::new(if text { OpCode::Text } else { OpCode::Binary });
        header.set_fin(true).set_payload_len(payload.len());
        let mask = (self.role == Role::Client).then(rand::random::<u32>);
        if let Some(mask) = mask {
            header.set_masked(true).set_mask(mask);
        }
        self.wbuf
            .extend_from_slice(self.codec.encode_header(&header));
        let body = self.wbuf.len();
        self.wbuf.extend_from_slice(payload);
        if let Some(mask) = mask {
            apply_mask(&mut self.wbuf[body..], mask.to_be_bytes(), 0);
        }
        Poll::Ready(Ok(()))
    }

    fn check_failed(&self) -> io::Result<()> {
        match &self.failed {
            Some(reason) => Err(FrameError::Failed(reason.clone()).into_io()),
            None => Ok(()),
        }
    }

    /// Records the first error, tries once to tell the peer with a close frame, releases buffers.
    fn fail(&mut self, cx: &mut Context<'_>, error: FrameError) -> io::Error {
        if self.failed.is_none() {
            tracing::debug!(role = ?self.role, %error, "WebSocket connection failed");
            if !self.close_sent {
                let code = error.close_code().to_be_bytes();
                self.queue_control(OpCode::Close, &code);
                self.close_sent = true;
                let _ = self.poll_drain(cx);
            }
            self.failed = Some(error.to_string());
            self.rbuf = Box::default();
            self.wbuf = Vec::new();
        }
        error.into_io()
    }

    fn fail_io(&mut self, error: io::Error) -> io::Error {
        if self.failed.is_none() {
            self.failed = Some(error.to_string());
            self.rbuf = Box::default();
            self.wbuf = Vec::new();
        }
        error
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
                // Cannot happen with the minimum buffer size (a header plus a control frame is at most
                // 139 bytes); refuse rather than read into an empty slice and mistake it for EOF.
                return Poll::Ready(Err(
                    FrameError::Protocol("frame header does not fit").into_io()
                ));
            }
            self.rbuf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
        }
        let n = ready!(Pin::new(&mut self.io).poll_read(cx, &mut self.rbuf[self.rend..]))?;
        if n > 0 {
            self.rend += n;
            self.keep_alive.last_rx = Instant::now();
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
        match self.poll_keep_alive(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.fail(cx, e))),
        }
    }

    fn poll_keep_alive(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FrameError>> {
        let Some(ka) = self.limits.keep_alive() else {
            return Poll::Pending;
        };
        let state = &mut self.keep_alive;
        let deadline = match state.ping_sent {
            Some(sent) if state.last_rx > sent => {
                state.ping_sent = None;
                state.last_rx + ka.interval
            }
            Some(sent) => sent + ka.timeout,
            None => state.last_rx + ka.interval,
        };
        let now = Instant::now();
        if now >= deadline {
            if state.ping_sent.is_some() {
                return Poll::Ready(Err(FrameError::KeepAliveTimeout(ka.timeout)));
            }
            state.ping_sent = Some(now);
            self.queue_control(OpCode::Ping, b"");
            let _ = self.poll_drain(cx);
            return Poll::Ready(Ok(()));
        }
        let state = &mut self.keep_alive;
        let timers = self.timers;
        let timer = state.timer.get_or_insert_with(|| timers(deadline));
        // Re-arm only when the deadline moved earlier: a timer armed for an earlier deadline fires,
        // the deadline is recomputed and the timer re-armed then. So a busy connection resets its
        // timer about once per interval, not on every read.
        match state.armed_for {
            Some(armed) if armed <= deadline => {}
            _ => {
                timer.as_mut().reset(deadline);
                state.armed_for = Some(deadline);
            }
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(_) => {
                state.armed_for = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Handles one complete control frame.
    fn on_control(
        &mut self,
        cx: &mut Context<'_>,
        opcode: OpCode,
        payload: &[u8],
    ) -> Result<(), FrameError> {
        match opcode {
            OpCode::Ping => {
                if !self.close_sent && !self.pong_queued {
                    self.queue_control(OpCode::Pong, payload);
                    self.pong_queued = true;
                    let _ = self.poll_drain(cx);
                }
            }
            OpCode::Pong => {} // `last_rx` was updated when it arrived.
            OpCode::Close => {
                let code = validate_close_payload(payload)?;
                self.peer_closed = true;
                if !self.close_sent {
                    // Echo the peer's code (RFC 6455 section 5.5.1); 1000 when it sent none.
                    let reply = code.unwrap_or(1000).to_be_bytes();
                    self.queue_control(OpCode::Close, &reply);
                    self.close_sent = true;
                    let _ = self.poll_drain(cx);
                }
            }
            _ => return Err(FrameError::Protocol("unexpected opcode")),
        }
        Ok(())
    }

    /// Validates a decoded header against the role and the limits, and starts reading its payload.
    /// Returns `false` for a control frame whose payload is not fully buffered yet.
    fn on_header(
        &mut self,
        cx: &mut Context<'_>,
        header: &Header,
        offset: usize,
    ) -> Result<bool, FrameError> {
        match (self.role, header.is_masked()) {
            (Role::Server, false) => return Err(FrameError::UnmaskedClientFrame),
            (Role::Client, true) => return Err(FrameError::MaskedServerFrame),
            _ => {}
        }
        let len = header.payload_len();
        let mask = header.is_masked().then(|| header.mask().to_be_bytes());
        match header.opcode() {
            OpCode::Continue | OpCode::Text | OpCode::Binary => {
                let continuation = header.opcode() == OpCode::Continue;
                if continuation && !self.in_message {
                    return Err(FrameError::Protocol("continuation frame outside a message"));
                }
                if !continuation && self.in_message {
                    return Err(FrameError::Protocol(
                        "new data frame before the previous message ended",
                    ));
                }
                if !continuation {
                    self.rx_text = header.opcode() == OpCode::Text;
                }
                self.message_len = if continuation { self.message_len } else { 0 } + len as u64;
                if self.message_len > self.limits.max_message_size() as u64 {
                    return Err(FrameError::MessageTooLarge {
                        limit: self.limits.max_message_size(),
                    });
                }
                self.in_message = !header.is_fin();
                self.rpos += offset;
                if len == 0 && header.is_fin() && self.rx_text {
                    self.utf8.finish()?;
                }
                if len > 0 {
                    self.frame = Some(Payload {
                        remaining: len as u64,
                        mask,
                        mask_offset: 0,
                    });
                } else if self.report_empty_frames {
                    self.empty_frame = true;
                }
                Ok(true)
            }
            opcode => {
                if self.rend - self.rpos < offset + len {
                    return Ok(false);
                }
                let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
                let start = self.rpos + offset;
                payload[..len].copy_from_slice(&self.rbuf[start..start + len]);
                if let Some(mask) = mask {
                    apply_mask(&mut payload[..len], mask, 0);
                }
                self.rpos = start + len;
                self.on_control(cx, opcode, &payload[..len])?;
                Ok(true)
            }
        }
    }

    fn poll_read_inner(&mut self, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        self.check_failed()?;
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.wpos < self.wbuf.len() && self.open.is_none() {
            // A pong, ping or close reply may be waiting; send it along.
            if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
                return Poll::Ready(Err(self.fail_io(e)));
            }
        }
        // Work done in this call without returning data (see MAX_FRAMES_PER_POLL).
        let mut frames = 0;
        let mut bytes = 0;
        loop {
            if self.peer_closed {
                return Poll::Ready(Ok(0));
            }
            if let Some(remaining) = self.frame.as_ref().map(|f| f.remaining) {
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
                            self.keep_alive.last_rx = Instant::now();
                            self.rend = n.saturating_sub(want);
                            n.min(want)
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail_io(e))),
                        Poll::Pending => {
                            ready!(self.poll_idle(cx))?;
                            continue;
                        }
                    }
                } else {
                    match self.poll_fill(cx, true) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(self.fail(cx, FrameError::UnexpectedEof)))
                        }
                        // Payload arrived: the next turn returns it.
                        Poll::Ready(Ok(_)) => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail_io(e))),
                        Poll::Pending => {
                            ready!(self.poll_idle(cx))?;
                            continue;
                        }
                    }
                };
                let mut message_end = false;
                if let Some(frame) = self.frame.as_mut() {
                    if let Some(mask) = frame.mask {
                        frame.mask_offset = apply_mask(&mut out[..n], mask, frame.mask_offset);
                    }
                    frame.remaining -= n as u64;
                    if frame.remaining == 0 {
                        self.frame = None;
                        message_end = !self.in_message;
                    }
                }
                if self.rx_text {
                    let checked = self.utf8.feed(&out[..n]).and_then(|()| {
                        if message_end {
                            self.utf8.finish()
                        } else {
                            Ok(())
                        }
                    });
                    if let Err(e) = checked {
                        return Poll::Ready(Err(self.fail(cx, e)));
                    }
                }
                return Poll::Ready(Ok(n));
            }

            if frames >= MAX_FRAMES_PER_POLL || bytes >= MAX_BYTES_PER_POLL {
                // Cooperative yield: come back at once, after the task's other work.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let head = &self.rbuf[self.rpos..self.rend];
            if head.len() >= 2 && matches!(head[0] & 0x0f, 8..=10) && head[1] & 0x7f >= 126 {
                // soketto accepts a control frame whose (at most 125-byte) length uses the 16- or
                // 64-bit form; RFC 6455 section 5.2 requires the minimal encoding.
                let e = FrameError::Protocol("control frame length not in the 7-bit form");
                return Poll::Ready(Err(self.fail(cx, e)));
            }
            let decoded = self.codec.decode_header(head);
            let complete = match decoded {
                Ok(Parsing::Done { value, offset }) => match self.on_header(cx, &value, offset) {
                    Ok(complete) => complete,
                    Err(e) => return Poll::Ready(Err(self.fail(cx, e))),
                },
                Ok(Parsing::NeedMore(_)) => false,
                Err(e) => return Poll::Ready(Err(self.fail(cx, frame_error(e)))),
            };
            if complete {
                if std::mem::take(&mut self.empty_frame) {
                    return Poll::Ready(Ok(0));
                }
                frames += 1;
                continue;
            }
            match self.poll_fill(cx, false) {
                Poll::Ready(Ok(0)) => {
                    if self.rpos == self.rend && !self.in_message {
                        // TCP EOF between frames: a clean end of stream.
                        self.peer_closed = true;
                        return Poll::Ready(Ok(0));
                    }
                    return Poll::Ready(Err(self.fail(cx, FrameError::UnexpectedEof)));
                }
                Poll::Ready(Ok(n)) => bytes += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail_io(e))),
                Poll::Pending => ready!(self.poll_idle(cx))?,
            }
        }
    }

    // ----- writing -----------------------------------------------------------------------------

    /// Turns the open frame (if any) into a complete frame: header in front, payload masked.
    fn finalize(&mut self) {
        let Some(start) = self.open.take() else {
            return;
        };
        let payload_start = start + HEADER_SLOT;
        let payload_len = self.wbuf.len() - payload_start;
        if payload_len == 0 {
            self.wbuf.truncate(start);
            return;
        }
        let mut header = Header::new(OpCode::Binary);
        header.set_fin(true).set_payload_len(payload_len);
        if self.role == Role::Client {
            let mask: u32 = rand::random();
            header.set_masked(true).set_mask(mask);
            apply_mask(&mut self.wbuf[payload_start..], mask.to_be_bytes(), 0);
        }
        let encoded = self.codec.encode_header(&header);
        let header_start = payload_start - encoded.len();
        self.wbuf[header_start..payload_start].copy_from_slice(encoded);
        if start == self.wpos {
            self.wpos = header_start;
        } else {
            // Earlier frames are still waiting: close the gap between them and this one.
            let gap = header_start - start;
            self.wbuf.copy_within(header_start.., start);
            self.wbuf.truncate(self.wbuf.len() - gap);
        }
    }

    /// Appends a control frame after everything written so far.
    fn queue_control(&mut self, opcode: OpCode, payload: &[u8]) {
        debug_assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        self.finalize();
        let mut header = Header::new(opcode);
        header.set_fin(true).set_payload_len(payload.len());
        let mut body = [0u8; MAX_CONTROL_PAYLOAD];
        body[..payload.len()].copy_from_slice(payload);
        if self.role == Role::Client {
            let mask: u32 = rand::random();
            header.set_masked(true).set_mask(mask);
            apply_mask(&mut body[..payload.len()], mask.to_be_bytes(), 0);
        }
        self.wbuf
            .extend_from_slice(self.codec.encode_header(&header));
        self.wbuf.extend_from_slice(&body[..payload.len()]);
    }

    /// Sends complete frames from the write buffer (up to the open frame, if any).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let end = self.open.unwrap_or(self.wbuf.len());
        while self.wpos < end {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..end]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.pong_queued = false;
        match self.open {
            None => {
                self.wbuf.clear();
                self.wpos = 0;
            }
            Some(start) if self.wpos > 0 => {
                self.wbuf.drain(..self.wpos);
                self.open = Some(start - self.wpos);
                self.wpos = 0;
            }
            Some(_) => {}
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_inner(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check_failed()?;
        if self.close_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the WebSocket connection is closing",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if let Some(n) = self.try_write_direct(cx, buf) {
            return Poll::Ready(n);
        }
        let limit = self.limits.write_buffer_size() + HEADER_SLOT;
        loop {
            let pending =
                self.wbuf.len() - self.wpos + if self.open.is_none() { HEADER_SLOT } else { 0 };
            let room = limit.saturating_sub(pending);
            if room == 0 {
                self.finalize();
                if let Err(e) = ready!(self.poll_drain(cx)) {
                    return Poll::Ready(Err(self.fail_io(e)));
                }
                continue;
            }
            if self.open.is_none() {
                self.open = Some(self.wbuf.len());
                self.wbuf.extend_from_slice(&[0; HEADER_SLOT]);
            }
            let n = room.min(buf.len());
            self.wbuf.extend_from_slice(&buf[..n]);
            return Poll::Ready(Ok(n));
        }
    }

    /// A large write on the server side (nothing to mask) with nothing else waiting: sends it as
    /// one frame straight from the caller's buffer, header and payload in one vectored write,
    /// instead of copying it into the write buffer first. Only what the socket did not take is
    /// copied (it completes the frame, so it goes out before anything written later). `None` when
    /// this does not apply or the socket is not ready: the caller buffers as usual.
    fn try_write_direct(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<io::Result<usize>> {
        if self.role != Role::Server
            || buf.len() < DIRECT_WRITE_MIN
            || self.open.is_some()
            || self.wpos < self.wbuf.len()
        {
            return None;
        }
        let payload = &buf[..buf.len().min(self.limits.write_buffer_size())];
        let mut header = Header::new(OpCode::Binary);
        header.set_fin(true).set_payload_len(payload.len());
        let mut head = [0u8; HEADER_SLOT];
        let encoded = self.codec.encode_header(&header);
        let head_len = encoded.len();
        head[..head_len].copy_from_slice(encoded);
        let bufs = [IoSlice::new(&head[..head_len]), IoSlice::new(payload)];
        let written = match Pin::new(&mut self.io).poll_write_vectored(cx, &bufs) {
            Poll::Pending => return None,
            Poll::Ready(Ok(0)) => {
                return Some(Err(self.fail_io(io::ErrorKind::WriteZero.into())));
            }
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Some(Err(self.fail_io(e))),
        };
        self.wbuf.clear();
        self.wpos = 0;
        if written < head_len {
            self.wbuf.extend_from_slice(&head[written..head_len]);
            self.wbuf.extend_from_slice(payload);
        } else {
            self.wbuf.extend_from_slice(&payload[written - head_len..]);
        }
        Some(Ok(payload.len()))
    }

    fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_failed()?;
        self.finalize();
        if let Err(e) = ready!(self.poll_drain(cx)) {
            return Poll::Ready(Err(self.fail_io(e)));
        }
        if let Err(e) = ready!(Pin::new(&mut self.io).poll_flush(cx)) {
            return Poll::Ready(Err(self.fail_io(e)));
        }
        if self.wbuf.capacity() > 0 {
            self.wbuf = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Closes the connection. Every step (sending the close frame and what was written before it,
    /// flushing the socket, closing it: for TLS, sending `close_notify`; after a failure, only
    /// closing the socket) runs under one timer, started by the first call and set to
    /// `close_timeout`. Once it has fired, every later call fails at once.
    fn poll_close_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let timeout = self.limits.close_timeout();
        if self.close_timed_out {
            return Poll::Ready(Err(close_timeout_error(timeout)));
        }
        if self.close_timer.is_none() {
            self.close_timer = Some((self.timers)(Instant::now() + timeout));
        }
        if let Poll::Ready(result) = self.poll_close_steps(cx) {
            return Poll::Ready(result);
        }
        let timer = self.close_timer.as_mut().expect("started above");
        ready!(timer.as_mut().poll(cx));
        tracing::debug!(role = ?self.role, "peer did not complete the close in time");
        self.close_timed_out = true;
        Poll::Ready(Err(self.fail_io(close_timeout_error(timeout))))
    }

    fn poll_close_steps(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.failed.is_some() {
            // `fail` already tried to send a close frame; only the socket is left to close.
            return Pin::new(&mut self.io).poll_close(cx);
        }
        if !self.close_sent {
            self.finalize();
            self.queue_control(OpCode::Close, &1000u16.to_be_bytes());
            self.close_sent = true;
        }
        if let Err(e) = ready!(self.poll_drain(cx)) {
            return Poll::Ready(Err(self.fail_io(e)));
        }
        if let Err(e) = ready!(Pin::new(&mut self.io).poll_flush(cx)) {
            return Poll::Ready(Err(self.fail_io(e)));
        }
        self.wbuf = Vec::new();
        self.rbuf = Box::default();
        Pin::new(&mut self.io).poll_close(cx)
    }
}

fn close_timeout_error(timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("WebSocket close timed out after {timeout:?}"),
    )
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

/// XORs `data` with the 4-byte `mask`, starting `offset` bytes into the mask cycle; returns the
/// offset for the byte after `data`. Works on eight bytes at a time.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) -> usize {
    let mut key = mask;
    key.rotate_left(offset % 4);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let (chunks, rest) = data.as_chunks_mut::<8>();
    for chunk in chunks {
        *chunk = (u64::from_ne_bytes(*chunk) ^ wide).to_ne_bytes();
    }
    for (i, byte) in rest.iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
    (offset + data.len()) % 4
}

/// Incremental UTF-8 check of a text message that arrives in pieces split anywhere, even inside a
/// character (RFC 6455 section 8.1). Fails at the first byte that cannot start or continue a valid
/// sequence, without waiting for the end of the message.
#[derive(Debug, Default)]
struct Utf8Check {
    /// The start of a character split by the end of the previous piece.
    partial: [u8; 4],
    partial_len: usize,
}

impl Utf8Check {
    const ERROR: FrameError = FrameError::InvalidUtf8("a text message");

    /// Checks the next piece of the message.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), FrameError> {
        if self.partial_len > 0 {
            // Complete the split character with the first bytes of this piece.
            let have = self.partial_len;
            let take = (4 - have).min(bytes.len());
            let mut joined = self.partial;
            joined[have..have + take].copy_from_slice(&bytes[..take]);
            let consumed = match std::str::from_utf8(&joined[..have + take]) {
                Ok(_) => take,
                Err(e) if e.valid_up_to() > 0 => e.valid_up_to() - have,
                Err(e) if e.error_len().is_some() => return Err(Self::ERROR),
                Err(_) => {
                    // Still incomplete: this piece was too short to finish the character.
                    self.partial = joined;
                    self.partial_len = have + take;
                    return Ok(());
                }
            };
            self.partial_len = 0;
            bytes = &bytes[consumed..];
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(Self::ERROR),
            Err(e) => {
                let rest = &bytes[e.valid_up_to()..];
                self.partial[..rest.len()].copy_from_slice(rest);
                self.partial_len = rest.len();
                Ok(())
            }
        }
    }

    /// The message ended: it must not end inside a character.
    fn finish(&mut self) -> Result<(), FrameError> {
        let split = std::mem::take(&mut self.partial_len);
        if split == 0 {
            Ok(())
        } else {
            Err(Self::ERROR)
        }
    }
}

/// Checks a close frame's payload: empty, or a valid code and a UTF-8 reason.
fn validate_close_payload(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol("close frame with a 1-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(FrameError::Protocol(
                    "close frame with an invalid close code",
                ));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(FrameError::InvalidUtf8("the close reason"));
            }
            Ok(Some(code))
        }
    }
}

fn frame_error(e: soketto::base::Error) -> FrameError {
    use soketto::base::Error as E;
    match e {
        E::PayloadTooLarge { actual, maximum } => FrameError::FrameTooLarge {
            len: actual,
            limit: usize::try_from(maximum).unwrap_or(usize::MAX),
        },
        E::ReservedOpCode | E::UnknownOpCode => FrameError::Protocol("reserved opcode"),
        E::FragmentedControl => FrameError::Protocol("fragmented control frame"),
        E::InvalidControlFrameLen => {
            FrameError::Protocol("control frame payload longer than 125 bytes")
        }
        E::InvalidReservedBit(_) => FrameError::Protocol("reserved bit set"),
        _ => FrameError::Protocol("invalid frame header"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_matches_bytewise_reference_at_every_offset_and_length() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            for offset in 0..4 {
                let data: Vec<u8> = (0..len as u8).collect();
                let mut fast = data.clone();
                let next = apply_mask(&mut fast, mask, offset);
                let slow: Vec<u8> = data
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[(i + offset) % 4])
                    .collect();
                assert_eq!(fast, slow, "len {len} offset {offset}");
                assert_eq!(next, (offset + len) % 4);
            }
        }
    }

    #[test]
    fn masking_in_pieces_equals_masking_at_once() {
        let mask = [1, 2, 3, 4];
        let data: Vec<u8> = (0..=255).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, mask, 0);
        let mut pieces = data.clone();
        let mut offset = 0;
        for chunk in pieces.chunks_mut(7) {
            offset = apply_mask(chunk, mask, offset);
        }
        assert_eq!(whole, pieces);
    }

    /// Feeds `bytes` in pieces of `step` bytes; `Ok` only if every piece and the end pass.
    fn check_utf8_in_pieces(bytes: &[u8], step: usize) -> Result<(), FrameError> {
        let mut check = Utf8Check::default();
        for piece in bytes.chunks(step) {
            check.feed(piece)?;
        }
        check.finish()
    }

    #[test]
    fn utf8_check_agrees_with_std_at_every_split() {
        let samples: &[&[u8]] = &[
            "κόσμε".as_bytes(),
            "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
            "\u{10FFFF}\u{FFFD}\u{0800}\u{007F}\u{0080}".as_bytes(),
            b"",
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", // a surrogate
            b"\xf4\x90\x80\x80",                                               // above U+10FFFF
            b"\xc0\xaf",                                                       // overlong
            b"\xce\xba\xe1", // ends inside a character
            b"\x80",         // lone continuation byte
            b"abc\xff",
        ];
        for sample in samples {
            let want = std::str::from_utf8(sample).is_ok();
            for step in 1..=sample.len().max(1) {
                let got = check_utf8_in_pieces(sample, step);
                assert_eq!(got.is_ok(), want, "{sample:?} in pieces of {step}: {got:?}");
                if let Err(e) = got {
                    assert_eq!(e.close_code(), 1007);
                }
            }
        }
    }

    #[test]
    fn utf8_check_fails_at_the_first_invalid_byte() {
        // Fail fast: the invalid byte is seen before the message ends (Autobahn 6.4.x).
        let mut check = Utf8Check::default();
        check.feed("κόσμε".as_bytes()).unwrap();
        check.feed(b"\xf4").unwrap(); // could still start a valid character
        assert!(check.feed(b"\x90").is_err()); // F4 90: above U+10FFFF
    }

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

    #[test]
    fn control_frames_with_an_extended_length_are_protocol_errors() {
        use futures::{executor::block_on, AsyncReadExt};
        for opcode in [0x88u8, 0x89, 0x8a] {
            for (form, len_bytes) in [(126u8, vec![0, 5]), (127, vec![0, 0, 0, 0, 0, 0, 0, 5])] {
                let mut input = vec![opcode, 0x80 | form];
                input.extend_from_slice(&len_bytes);
                input.extend_from_slice(&[1, 2, 3, 4]);
                let payload: &[u8] = if opcode == 0x88 {
                    &[0x03, 0xe8, b'b', b'y', b'e']
                } else {
                    b"hello"
                };
                let mut masked = payload.to_vec();
                apply_mask(&mut masked, [1, 2, 3, 4], 0);
                input.extend_from_slice(&masked);
                let io = Mem {
                    input,
                    pos: 0,
                    piece: usize::MAX,
                    written: 0,
                };
                let mut conn = Connection::new(io, Role::Server, FrameLimits::default(), &[]);
                let mut buf = [0u8; 16];
                let error = block_on(conn.read(&mut buf)).expect_err("protocol error");
                let frame_error = FrameError::from_io(&error).cloned();
                assert!(
                    matches!(frame_error, Some(FrameError::Protocol(_))),
                    "opcode {opcode:#x}, length form {form}: {error}"
                );
                assert_eq!(frame_error.unwrap().close_code(), 1002);
            }
        }
    }

    #[test]
    fn close_payloads() {
        assert_eq!(validate_close_payload(&[]), Ok(None));
        assert_eq!(validate_close_payload(&[0x03, 0xe8]), Ok(Some(1000)));
        assert!(validate_close_payload(&[0x03]).is_err());
        assert!(validate_close_payload(&[0x03, 0xed]).is_err()); // 1005 must not be sent
        assert!(validate_close_payload(&[0x03, 0xe8, 0xff]).is_err());
        assert_eq!(
            validate_close_payload(&[0x0f, 0xa0, b'o', b'k']),
            Ok(Some(4000))
        );
    }
}
