//! The write path of a [`Connection`]: draining the core's frames, buffered and direct writes,
//! flush, and the bounded close.

use std::{
    io::{self, IoSlice},
    mem::MaybeUninit,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Instant,
};

use futures::{AsyncRead, AsyncWrite};

use super::{Connection, DIRECT_MASKED_MAX, DIRECT_WRITE_MIN};
use crate::{
    error::FrameError,
    proto::{mask_into, Role},
};

impl<T> Connection<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    /// Sends complete frames from the write buffer (up to the open frame, if any).
    pub(super) fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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

    pub(super) fn poll_write_inner(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
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

    /// A large write with nothing else waiting: sends it as one frame, header and payload in one
    /// vectored write, instead of gathering it into the write buffer first. On the server side
    /// the payload goes straight from the caller's buffer; on the client side it is masked (in the
    /// same pass as the copy the buffer would have cost) into a buffer on the stack, for writes of
    /// up to [`DIRECT_MASKED_MAX`], so a connection streaming such writes never allocates its
    /// write buffer. Only what the socket did not take is copied into the write buffer (it
    /// completes the frame, so it goes out before anything written later). `None` when this does
    /// not apply or the socket is not ready: the caller buffers as usual.
    fn try_write_direct(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<io::Result<usize>> {
        if buf.len() < DIRECT_WRITE_MIN {
            return None;
        }
        let payload = &buf[..buf.len().min(self.limits.write_buffer_size())];
        match self.core.role() {
            Role::Server => {
                let (head, head_len) = self.core.send.direct_header(payload.len())?;
                self.write_frame_direct(cx, &head[..head_len], payload)
            }
            Role::Client => {
                if payload.len() > DIRECT_MASKED_MAX {
                    return None;
                }
                let (head, head_len, mask) = self.core.send.direct_header_masked(payload.len())?;
                let mut stack = [MaybeUninit::<u8>::uninit(); DIRECT_MASKED_MAX];
                let masked = mask_into(&mut stack, payload, mask);
                self.write_frame_direct(cx, &head[..head_len], masked)
            }
        }
    }

    /// One vectored write of a frame's `head` and `payload`; what the socket did not take goes to
    /// the write buffer. Returns the payload's length, or `None` when the socket is not ready.
    fn write_frame_direct(
        &mut self,
        cx: &mut Context<'_>,
        head: &[u8],
        payload: &[u8],
    ) -> Option<io::Result<usize>> {
        let bufs = [IoSlice::new(head), IoSlice::new(payload)];
        let written = match Pin::new(&mut self.io).poll_write_vectored(cx, &bufs) {
            Poll::Pending => return None,
            Poll::Ready(Ok(0)) => {
                return Some(Err(self.fail_io(io::ErrorKind::WriteZero.into())));
            }
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Some(Err(self.fail_io(e))),
        };
        if written < head.len() + payload.len() {
            self.core.send.direct_rest(head, payload, written);
        }
        Some(Ok(payload.len()))
    }

    pub(super) fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
    pub(super) fn poll_close_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
