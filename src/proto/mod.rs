//! The sans-IO WebSocket core (RFC 6455 after the upgrade): every protocol decision, no IO, no
//! runtime, no clock.
//!
//! - [`recv`]: frame headers decoded and checked (opcodes, masking by role, fragmentation, limits,
//!   control frames, close payloads), payload unmasked and UTF-8-checked as it arrives.
//! - [`send`]: frames encoded into one write buffer (coalescing, masking, pong policy, the close
//!   frame once).
//! - [`keep_alive`]: given `now`, when to ping and when the peer is gone.
//! - [`Core`] ties them together with the connection's close and failure state: what to answer to a
//!   control frame, what a failure sends.
//!
//! The stream adapter ([`crate::Connection`]) owns the socket, the read buffer, the timers and the
//! clock; it moves bytes between the socket and this core and turns its results into
//! `AsyncRead`/`AsyncWrite` results. The unit tests here drive the core byte by byte and at
//! simulated times; the fuzz target `frames` drives it with arbitrary input.

pub(crate) mod error;
#[cfg(any(test, feature = "unstable-internals"))]
pub(crate) mod fuzz;
pub(crate) mod keep_alive;
pub(crate) mod limits;
pub(crate) mod mask;
pub(crate) mod recv;
pub(crate) mod send;
pub(crate) mod utf8;

#[cfg(test)]
mod tests;

use std::time::Instant;

use self::{error::FrameError, limits::FrameLimits};

pub(crate) use keep_alive::Action as KeepAliveAction;
use keep_alive::KeepAliveState;
#[cfg(feature = "unstable-internals")]
pub use mask::apply_mask;
pub(crate) use mask::mask_into;
use recv::{Control, Decoded, Receiver};
use send::Sender;

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
pub(crate) const HEADER_SLOT: usize = 14;
/// Largest control frame payload (RFC 6455 section 5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// What [`Core::decode`] found and did at the start of the buffered bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// More bytes are needed.
    NeedMore,
    /// A data frame's header (`consumed` bytes); `len` payload bytes follow, for
    /// [`Core::payload`].
    Data { consumed: usize, len: u64 },
    /// A control frame (`consumed` bytes) was handled: a pong queued for a ping (see
    /// [`Sender::pong`]), nothing for a pong, the close answered for a close frame (then
    /// [`Core::peer_closed`] is set: reads end).
    Control { consumed: usize, queued: bool },
}

/// The protocol state of one WebSocket connection.
#[derive(Debug)]
pub(crate) struct Core {
    role: Role,
    pub(crate) recv: Receiver,
    pub(crate) send: Sender,
    keep_alive: KeepAliveState,
    /// The peer sent a close frame (or ended the stream between messages): reads return EOF.
    peer_closed: bool,
    /// The code of the peer's close frame (1005 for one without a code), once received.
    peer_close_code: Option<u16>,
    /// The first error; every later call reports it.
    failed: Option<FrameError>,
}

impl Core {
    /// A connection established at `now`.
    pub(crate) fn new(role: Role, limits: &FrameLimits, now: Instant) -> Self {
        Core {
            role,
            recv: Receiver::new(role, limits.max_frame_size(), limits.max_message_size()),
            send: Sender::new(role, limits.write_buffer_size()),
            keep_alive: KeepAliveState::new(limits.keep_alive(), now),
            peer_closed: false,
            peer_close_code: None,
            failed: None,
        }
    }

    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// The peer closed: reads return EOF.
    pub(crate) fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// The code of the peer's close frame (1005 for one without a code), once received.
    pub(crate) fn peer_close_code(&self) -> Option<u16> {
        self.peer_close_code
    }

    /// The stream ended (TCP EOF) with no bytes pending: clean between messages, an error inside
    /// one.
    pub(crate) fn on_eof(&mut self) -> Result<(), FrameError> {
        if self.recv.at_message_boundary() {
            self.peer_closed = true;
            Ok(())
        } else {
            Err(FrameError::UnexpectedEof)
        }
    }

    /// `Err` (the first error, wrapped in [`FrameError::Failed`]) once the connection failed.
    pub(crate) fn check(&self) -> Result<(), FrameError> {
        match &self.failed {
            Some(first) => Err(FrameError::Failed(Box::new(first.clone()))),
            None => Ok(()),
        }
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Records the first error and queues a close frame with its close code (unless ours was
    /// sent already); the caller tries once to send it, then releases its buffers.
    pub(crate) fn fail(&mut self, error: FrameError) -> FrameError {
        if self.failed.is_none() {
            tracing::debug!(role = ?self.role, error = ?error, "WebSocket connection failed");
            self.send.close(error.close_code());
            self.failed = Some(error.clone());
        }
        error
    }

    /// Records a socket error as the first error (nothing can be sent any more).
    pub(crate) fn fail_io(&mut self, error: std::sync::Arc<std::io::Error>) {
        if self.failed.is_none() {
            self.failed = Some(FrameError::Io(error::SharedIoError(error)));
            self.send.release();
        }
    }

    /// Decodes and handles the frame at the start of `buf`; see [`Event`].
    pub(crate) fn decode(&mut self, buf: &[u8]) -> Result<Event, FrameError> {
        Ok(match self.recv.decode(buf)? {
            Decoded::NeedMore => Event::NeedMore,
            Decoded::Data { consumed, len } => Event::Data { consumed, len },
            Decoded::Control { consumed, control } => {
                let queued = match control {
                    Control::Ping(payload) => self.send.pong(payload.as_slice()),
                    // Its arrival counted as traffic for the keep-alive.
                    Control::Pong => false,
                    Control::Close(code) => {
                        self.peer_closed = true;
                        self.peer_close_code = Some(code.unwrap_or(1005));
                        // Echo the peer's code (RFC 6455 section 5.5.1); 1000 when it sent none.
                        self.send.close(code.unwrap_or(1000))
                    }
                };
                Event::Control { consumed, queued }
            }
        })
    }

    /// Takes payload bytes of the current data frame; see [`Receiver::payload`].
    pub(crate) fn payload(&mut self, data: &mut [u8]) -> Result<bool, FrameError> {
        self.recv.payload(data)
    }

    /// Bytes arrived at `now`.
    pub(crate) fn on_receive(&mut self, now: Instant) {
        self.keep_alive.on_receive(now);
    }

    /// Runs the keep-alive at `now`: queues a ping when one is due and reports what was decided
    /// ([`KeepAliveAction::TimedOut`] is for the caller to fail the connection with).
    pub(crate) fn keep_alive(&mut self, now: Instant) -> KeepAliveAction {
        let action = self.keep_alive.poll(now);
        if action == KeepAliveAction::Ping {
            self.send.ping();
        }
        action
    }
}
