//! The read path of a [`Connection`]: filling the read buffer, keep-alive while idle, payload
//! straight into the caller's buffer, and the bounded decode loop of `poll_read`.

use std::{
    io::{self, IoSliceMut},
    pin::Pin,
    task::{ready, Context, Poll},
    time::Instant,
};

use futures::{AsyncRead, AsyncWrite};

use super::{
    Connection, DIRECT_READ_MIN, MAX_BYTES_PER_POLL, MAX_FRAMES_PER_POLL, SMALL_READ_BUFFER,
};
use crate::{
    error::FrameError,
    proto::{Event, KeepAliveAction},
};

/// What a read step ended with: data (or EOF) for the caller, or go round again.
enum Step {
    Done(usize),
    Again,
}

/// A fresh small read buffer (zeroed): [`SMALL_READ_BUFFER`], or `full_size` if that is smaller.
///
/// Allocated and then zeroed rather than by `vec![0; n]`: that asks the allocator for zeroed
/// memory (`calloc`), which glibc serves past its per-thread cache, several hundred instructions
/// for 1 KiB, where `malloc` takes the cache. This buffer comes and goes with every pause in the
/// flow (it is freed while the socket is empty). `black_box` keeps the compiler from turning the
/// pair back into a zeroed allocation.
fn small_buffer(full_size: usize) -> Box<[u8]> {
    let len = SMALL_READ_BUFFER.min(full_size);
    let mut buf = Vec::with_capacity(len);
    buf.resize(std::hint::black_box(len), 0);
    buf.into_boxed_slice()
}

impl<T> Connection<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    /// Reads more bytes from the socket into the read buffer; the number read, 0 on EOF. `grow`: payload is
    /// read through the buffer (a small remainder of a frame, or a caller reading in small pieces),
    /// so data is flowing: an empty small buffer is replaced by a full-size one, which takes the rest
    /// of the frame and the frames behind it in one read.
    fn poll_fill(&mut self, cx: &mut Context<'_>, grow: bool) -> Poll<io::Result<usize>> {
        let full_size = self.limits.read_buffer_size();
        if self.rbuf.is_empty() {
            self.rbuf = small_buffer(full_size);
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

    /// Reads payload of the current frame (`remaining` bytes left) into `out`: what the read
    /// buffer holds first, then, for a caller reading in large pieces (`out` at least
    /// [`DIRECT_READ_MIN`]), the rest straight from the socket in the same call, so the start of a
    /// frame that came in behind the previous one costs no extra call, and the end of a frame is
    /// read into `out` too, with the read buffer (kept small) taking what follows. A caller
    /// reading in small pieces reads through the read buffer, grown to its full size.
    fn poll_payload(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut [u8],
        remaining: u64,
    ) -> Poll<io::Result<Step>> {
        let want = out
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let mut n = 0;
        if self.rpos < self.rend {
            n = want.min(self.rend - self.rpos);
            out[..n].copy_from_slice(&self.rbuf[self.rpos..self.rpos + n]);
            self.rpos += n;
        }
        if n < want && out.len() >= DIRECT_READ_MIN {
            match self.poll_direct(cx, &mut out[n..want]) {
                Poll::Ready(Ok(m)) => n += m,
                // The bytes copied above go out first; the failure (recorded) comes with the
                // next call.
                Poll::Ready(Err(_)) | Poll::Pending if n > 0 => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    ready!(self.poll_idle(cx))?;
                    return Poll::Ready(Ok(Step::Again));
                }
            }
        } else if n == 0 {
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
        }
        match self.core.payload(&mut out[..n]) {
            Ok(_) => Poll::Ready(Ok(Step::Done(n))),
            Err(e) => Poll::Ready(Err(self.fail(cx, e))),
        }
    }

    /// Payload straight from the socket into `out` (the read buffer is empty); whatever the
    /// socket holds beyond it (the next frame's header, usually) lands in the read buffer in the
    /// same call, which saves a read per frame on a plain socket. At least one byte, or the
    /// failure (recorded: end of stream inside a frame, or the socket's error).
    fn poll_direct(&mut self, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        debug_assert_eq!(self.rpos, self.rend);
        if self.rbuf.is_empty() {
            self.rbuf = small_buffer(self.limits.read_buffer_size());
        }
        self.rpos = 0;
        self.rend = 0;
        let want = out.len();
        let mut bufs = [IoSliceMut::new(out), IoSliceMut::new(&mut self.rbuf[..])];
        match ready!(Pin::new(&mut self.io).poll_read_vectored(cx, &mut bufs)) {
            Ok(0) => Poll::Ready(Err(self.fail(cx, FrameError::UnexpectedEof))),
            Ok(n) => {
                self.core.on_receive(Instant::now());
                self.rend = n.saturating_sub(want);
                Poll::Ready(Ok(n.min(want)))
            }
            Err(e) => Poll::Ready(Err(self.fail_io(e))),
        }
    }

    pub(super) fn poll_read_inner(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
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
}
