//! A small public face of the sans-IO core (feature `unstable-internals`), so that fuzz targets
//! and tools drive the frame rules directly, without a socket or a runtime.

use std::time::Instant;

use super::{error::FrameError, limits::FrameLimits};
use super::{send::Masks, Core, Event, Role};

/// The receive and send rules of one WebSocket connection over in-memory bytes: feed it what the
/// peer sent, collect the data it carried and what the core queued for the peer (pongs, close
/// frames). The same core as [`crate::Connection`], without the stream adapter.
#[derive(Debug)]
pub struct FrameCore {
    core: Core,
    /// Received bytes not consumed yet (an incomplete header or control frame).
    input: Vec<u8>,
}

/// What [`FrameCore::receive`] did with the bytes it was given.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Received {
    /// Frames decoded (data frame headers and control frames).
    pub frames: usize,
    /// Data messages that ended.
    pub messages: usize,
}

impl FrameCore {
    /// The core of the given end with the given limits.
    pub fn new(role: Role, limits: FrameLimits) -> Self {
        FrameCore {
            core: Core::new(role, &limits, Instant::now()),
            input: Vec::new(),
        }
    }

    /// Takes a client's masking keys from a generator seeded with `seed`, for reproducible bytes
    /// (tests, tools). A real connection takes fresh random keys, as RFC 6455 section 10.3 asks.
    pub fn with_mask_seed(mut self, seed: u64) -> Self {
        self.core.send.set_masks(Masks::seeded(seed));
        self
    }

    /// Takes bytes the peer sent: decodes every complete frame, appends data payload to `data`
    /// as it arrives (a piece of payload that breaks a rule, such as invalid UTF-8, is not
    /// appended), answers control frames. After an error (or the peer's close) nothing more is
    /// taken.
    pub fn receive(&mut self, bytes: &[u8], data: &mut Vec<u8>) -> Result<Received, FrameError> {
        self.core.check()?;
        let mut seen = Received::default();
        if self.core.peer_closed() {
            return Ok(seen);
        }
        self.input.extend_from_slice(bytes);
        let mut pos = 0;
        let result = loop {
            if self.core.peer_closed() {
                break Ok(());
            }
            if let Some(remaining) = self.core.recv.payload_remaining() {
                let n = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(self.input.len() - pos);
                if n == 0 {
                    break Ok(());
                }
                let start = data.len();
                data.extend_from_slice(&self.input[pos..pos + n]);
                pos += n;
                match self.core.payload(&mut data[start..]) {
                    Ok(end) => seen.messages += usize::from(end),
                    Err(e) => {
                        // The piece that broke a rule is not delivered.
                        data.truncate(start);
                        break Err(e);
                    }
                }
                continue;
            }
            match self.core.decode(&self.input[pos..]) {
                Ok(Event::NeedMore) => break Ok(()),
                Ok(Event::Data { consumed, len }) => {
                    pos += consumed;
                    seen.frames += 1;
                    if len == 0 && self.core.recv.at_message_boundary() {
                        seen.messages += 1;
                    }
                }
                Ok(Event::Control { consumed, .. }) => {
                    pos += consumed;
                    seen.frames += 1;
                }
                Err(e) => break Err(e),
            }
        };
        self.input.drain(..pos);
        match result {
            Ok(()) => Ok(seen),
            Err(e) => Err(self.core.fail(e)),
        }
    }

    /// The peer ended the stream (TCP EOF): fine between messages, an error inside one.
    pub fn end_of_stream(&mut self) -> Result<(), FrameError> {
        self.core.check()?;
        if !self.input.is_empty() {
            return Err(self.core.fail(FrameError::UnexpectedEof));
        }
        self.core.on_eof().map_err(|e| self.core.fail(e))
    }

    /// Gathers application bytes into frames (as `poll_write` does); returns how many it took
    /// (0 when a frame's worth waits: [`FrameCore::take_sent`] first).
    pub fn write(&mut self, data: &[u8]) -> usize {
        if self.core.send.close_queued() || self.core.has_failed() {
            return 0;
        }
        self.core.send.write(data)
    }

    /// Queues our close frame with `code` (once).
    pub fn close(&mut self, code: u16) {
        self.core.send.close(code);
    }

    /// The peer's close frame arrived (or the stream ended between messages).
    pub fn peer_closed(&self) -> bool {
        self.core.peer_closed()
    }

    /// Finishes the open frame and returns every byte queued for the peer, as the socket would
    /// take them.
    pub fn take_sent(&mut self) -> Vec<u8> {
        self.core.send.finalize();
        let sent = self.core.send.pending().to_vec();
        self.core.send.advance(sent.len());
        sent
    }
}
