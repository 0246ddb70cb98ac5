//! The send side of RFC 6455: frames encoded into one write buffer.
//!
//! - Bytes written by the application are gathered into one open binary frame, with room kept in
//!   front of its payload for the header ([`HEADER_SLOT`]); [`Sender::finalize`] writes the header
//!   there and masks the payload, so each frame leaves in one socket write.
//! - Control frames queue behind what was written; only one pong waits at a time (a ping flood
//!   cannot grow the buffer), and nothing is queued after our close frame.
//! - A large write can skip the buffer: [`Sender::direct_header`] (server) encodes the header for
//!   a vectored write of header and caller's payload, [`Sender::direct_header_masked`] (client)
//!   the masked header and its key, for the caller to mask the payload with outside the buffer.
//!
//! The caller sends [`Sender::pending`] and reports progress with [`Sender::advance`].

use soketto::base::{Codec, Header, OpCode};

use super::{
    mask::{apply_mask, extend_masked},
    Role, HEADER_SLOT, MAX_CONTROL_PAYLOAD,
};

/// Send state and write buffer of one WebSocket connection.
#[derive(Debug)]
pub(crate) struct Sender {
    role: Role,
    codec: Codec,
    /// Largest payload of a frame gathered from writes (the write buffer size).
    frame_size: usize,
    /// `buf[pos..]` is waiting for the socket. Empty while idle.
    buf: Vec<u8>,
    pos: usize,
    /// Start of the frame being filled by [`Sender::write`] (a `HEADER_SLOT` gap, then payload).
    open: Option<usize>,
    /// The open frame's masking key (clients): its payload is masked as it is copied in.
    open_mask: Option<u32>,
    /// A pong is queued and not yet sent.
    pong_queued: bool,
    /// Our close frame is queued: nothing may follow it.
    close_queued: bool,
    /// The code of the close frame queued (for the metrics).
    close_code: Option<u16>,
    /// Where the client's masking keys come from.
    masks: Masks,
}

/// Where a client's masking keys come from: the thread's random generator, or (for tests and
/// tools that need reproducible bytes) a generator of its own, seeded. RFC 6455 section 10.3
/// asks for keys an intermediary cannot predict; only [`Masks::Random`] gives them.
#[derive(Debug, Clone, Default)]
pub(crate) enum Masks {
    /// A fresh key from `rand::thread_rng` for each frame.
    #[default]
    Random,
    /// Keys from a generator seeded by the caller: the same seed gives the same keys.
    #[cfg_attr(not(any(test, feature = "unstable-internals")), allow(dead_code))]
    Seeded(Box<rand::rngs::StdRng>),
}

impl Masks {
    /// Keys from a generator seeded with `seed`.
    #[cfg(any(test, feature = "unstable-internals"))]
    pub(crate) fn seeded(seed: u64) -> Self {
        use rand::SeedableRng;
        Masks::Seeded(Box::new(rand::rngs::StdRng::seed_from_u64(seed)))
    }

    fn next(&mut self) -> u32 {
        match self {
            Masks::Random => rand::random::<u32>(),
            Masks::Seeded(rng) => rand::Rng::gen(&mut **rng),
        }
    }
}

impl Sender {
    pub(crate) fn new(role: Role, frame_size: usize) -> Self {
        Sender {
            role,
            codec: Codec::new(),
            frame_size,
            buf: Vec::new(),
            pos: 0,
            open: None,
            open_mask: None,
            pong_queued: false,
            close_queued: false,
            close_code: None,
            masks: Masks::Random,
        }
    }

    /// Takes the masking keys from `masks` from now on.
    #[cfg(any(test, feature = "unstable-internals"))]
    pub(crate) fn set_masks(&mut self, masks: Masks) {
        self.masks = masks;
    }

    /// Our close frame is queued (or sent): no more data or control frames.
    pub(crate) fn close_queued(&self) -> bool {
        self.close_queued
    }

    /// The code of our close frame, once queued.
    pub(crate) fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// Bytes of buffer memory held.
    #[cfg(any(test, feature = "unstable-internals"))]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Complete frames waiting for the socket (not the open frame).
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.pos..self.open.unwrap_or(self.buf.len())]
    }

    /// Nothing is waiting for the socket or being gathered.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// The socket took `n` bytes of [`Sender::pending`]. Once everything pending is sent, the
    /// buffer is compacted and a new pong may be queued.
    pub(crate) fn advance(&mut self, n: usize) {
        let end = self.open.unwrap_or(self.buf.len());
        self.pos = (self.pos + n).min(end);
        if self.pos < end {
            if self.pos >= self.frame_size {
                // A socket that never quite catches up: drop the sent prefix now, or the buffer
                // would keep growing behind it (unsent bytes stay bounded, the allocation would
                // not). At most one move of the unsent bytes per frame's worth sent.
                self.buf.drain(..self.pos);
                self.open = self.open.map(|start| start - self.pos);
                self.pos = 0;
            }
            return;
        }
        self.pong_queued = false;
        match self.open {
            None => {
                self.buf.clear();
                self.pos = 0;
            }
            Some(start) if self.pos > 0 => {
                self.buf.drain(..self.pos);
                self.open = Some(start - self.pos);
                self.pos = 0;
            }
            Some(_) => {}
        }
    }

    /// Gathers `data` into the open binary frame (opening one if needed); returns how many bytes
    /// it took: 0 when the buffer holds a full frame's worth already (finalize and send first).
    /// Must not be called after our close frame.
    pub(crate) fn write(&mut self, data: &[u8]) -> usize {
        debug_assert!(!self.close_queued);
        let limit = self.frame_size + HEADER_SLOT;
        let pending = self.buf.len() - self.pos + if self.open.is_none() { HEADER_SLOT } else { 0 };
        let room = limit.saturating_sub(pending);
        if room == 0 || data.is_empty() {
            return 0;
        }
        let n = room.min(data.len());
        let start = match self.open {
            Some(start) => start,
            None => {
                let start = self.buf.len();
                // Room for the whole write at once (one allocation, not a small one then a
                // reallocation for the payload).
                self.buf.reserve(HEADER_SLOT + n);
                self.buf.extend_from_slice(&[0; HEADER_SLOT]);
                self.open = Some(start);
                self.open_mask = self.new_mask();
                start
            }
        };
        match self.open_mask {
            Some(mask) => {
                // Masked as it is copied: one pass over the bytes, not a copy and then a mask.
                let offset = self.buf.len() - start - HEADER_SLOT;
                extend_masked(&mut self.buf, &data[..n], mask.to_be_bytes(), offset);
            }
            None => self.buf.extend_from_slice(&data[..n]),
        }
        n
    }

    /// Turns the open frame (if any) into a complete frame: its header in front of its payload
    /// (masked already, by [`Sender::write`]).
    pub(crate) fn finalize(&mut self) {
        let Some(start) = self.open.take() else {
            return;
        };
        let mask = self.open_mask.take();
        let payload_start = start + HEADER_SLOT;
        let payload_len = self.buf.len() - payload_start;
        if payload_len == 0 {
            self.buf.truncate(start);
            return;
        }
        let mut header = Header::new(OpCode::Binary);
        header.set_fin(true).set_payload_len(payload_len);
        if let Some(mask) = mask {
            header.set_masked(true).set_mask(mask);
        }
        let encoded = self.codec.encode_header(&header);
        let header_start = payload_start - encoded.len();
        self.buf[header_start..payload_start].copy_from_slice(encoded);
        if start == self.pos {
            self.pos = header_start;
        } else {
            // Earlier frames are still waiting: close the gap between them and this one.
            let gap = header_start - start;
            self.buf.copy_within(header_start.., start);
            self.buf.truncate(self.buf.len() - gap);
        }
    }

    /// A mask for the next frame: clients mask everything they send, servers nothing (RFC 6455
    /// section 5.3; a fresh key per frame, from [`Masks`]).
    fn new_mask(&mut self) -> Option<u32> {
        (self.role == Role::Client).then(|| self.masks.next())
    }

    /// Queues one complete message of the given kind as a single frame, after everything written
    /// so far. Not bounded by the frame size: the caller bounds `payload`.
    #[cfg(any(test, feature = "unstable-internals"))]
    pub(crate) fn message(&mut self, text: bool, payload: &[u8]) {
        debug_assert!(!self.close_queued);
        self.finalize();
        let mut header = Header::new(if text { OpCode::Text } else { OpCode::Binary });
        header.set_fin(true).set_payload_len(payload.len());
        let mask = self.new_mask();
        if let Some(mask) = mask {
            header.set_masked(true).set_mask(mask);
        }
        self.buf
            .extend_from_slice(self.codec.encode_header(&header));
        let body = self.buf.len();
        self.buf.extend_from_slice(payload);
        if let Some(mask) = mask {
            apply_mask(&mut self.buf[body..], mask.to_be_bytes(), 0);
        }
    }

    /// Appends a control frame after everything written so far.
    fn control(&mut self, opcode: OpCode, payload: &[u8]) {
        debug_assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
        self.finalize();
        let mut header = Header::new(opcode);
        header.set_fin(true).set_payload_len(payload.len());
        let mut body = [0u8; MAX_CONTROL_PAYLOAD];
        body[..payload.len()].copy_from_slice(payload);
        if let Some(mask) = self.new_mask() {
            header.set_masked(true).set_mask(mask);
            apply_mask(&mut body[..payload.len()], mask.to_be_bytes(), 0);
        }
        self.buf
            .extend_from_slice(self.codec.encode_header(&header));
        self.buf.extend_from_slice(&body[..payload.len()]);
    }

    /// Answers a ping: queues a pong with its payload, unless one is already waiting (then the
    /// waiting one answers this ping too) or our close frame is queued. Returns whether it queued.
    pub(crate) fn pong(&mut self, payload: &[u8]) -> bool {
        if self.close_queued || self.pong_queued {
            return false;
        }
        self.control(OpCode::Pong, payload);
        self.pong_queued = true;
        true
    }

    /// Queues a keep-alive ping (empty payload), unless our close frame is queued.
    pub(crate) fn ping(&mut self) -> bool {
        if self.close_queued {
            return false;
        }
        self.control(OpCode::Ping, b"");
        true
    }

    /// Queues our close frame with `code`, after everything written so far, once; later calls do
    /// nothing. Returns whether it queued.
    pub(crate) fn close(&mut self, code: u16) -> bool {
        if self.close_queued {
            return false;
        }
        self.control(OpCode::Close, &code.to_be_bytes());
        self.close_queued = true;
        self.close_queued = true;
        self.close_code = Some(code);
        true
    }

    /// For a server-side write that can skip the buffer (nothing else waiting or gathered): the
    /// encoded header of a binary frame of `len` bytes, in front of which nothing else must go.
    /// `None` on the client side (the payload must be masked in a buffer) or when frames wait.
    pub(crate) fn direct_header(&mut self, len: usize) -> Option<([u8; HEADER_SLOT], usize)> {
        if self.role != Role::Server || self.open.is_some() || !self.is_empty() || self.close_queued
        {
            return None;
        }
        let mut header = Header::new(OpCode::Binary);
        header.set_fin(true).set_payload_len(len);
        let mut head = [0u8; HEADER_SLOT];
        let encoded = self.codec.encode_header(&header);
        let len = encoded.len();
        head[..len].copy_from_slice(encoded);
        Some((head, len))
    }

    /// For a client-side write that can skip the buffer (nothing else waiting or gathered): the
    /// encoded header of a masked binary frame of `len` bytes and its masking key (a fresh one,
    /// from [`Masks`]), for the caller to mask the payload with outside the buffer. `None` on the
    /// server side or when frames wait.
    pub(crate) fn direct_header_masked(
        &mut self,
        len: usize,
    ) -> Option<([u8; HEADER_SLOT], usize, [u8; 4])> {
        if self.role != Role::Client || self.open.is_some() || !self.is_empty() || self.close_queued
        {
            return None;
        }
        let mask = self.masks.next();
        let mut header = Header::new(OpCode::Binary);
        header
            .set_fin(true)
            .set_payload_len(len)
            .set_masked(true)
            .set_mask(mask);
        let mut head = [0u8; HEADER_SLOT];
        let encoded = self.codec.encode_header(&header);
        let len = encoded.len();
        head[..len].copy_from_slice(encoded);
        Some((head, len, mask.to_be_bytes()))
    }

    /// The socket took `written` bytes of a direct frame (`head`, then `payload`): buffers the
    /// rest, which completes the frame before anything written later.
    pub(crate) fn direct_rest(&mut self, head: &[u8], payload: &[u8], written: usize) {
        debug_assert!(self.is_empty());
        self.buf.clear();
        self.pos = 0;
        if written < head.len() {
            self.buf.extend_from_slice(&head[written..]);
            self.buf.extend_from_slice(payload);
        } else {
            self.buf
                .extend_from_slice(&payload[(written - head.len()).min(payload.len())..]);
        }
    }

    /// Frees the buffer when nothing is waiting (after a flush), so idle connections hold none.
    pub(crate) fn release_if_idle(&mut self) {
        if self.is_empty() && self.open.is_none() && self.buf.capacity() > 0 {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    /// Drops everything queued and frees the buffer (the connection failed or closed).
    pub(crate) fn release(&mut self) {
        self.buf = Vec::new();
        self.pos = 0;
        self.open = None;
        self.open_mask = None;
    }
}
