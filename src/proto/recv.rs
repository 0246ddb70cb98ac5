//! The receive side of RFC 6455: frame headers decoded and checked against the role and the
//! limits, data frames' payloads unmasked, counted and UTF-8-checked, control frames taken whole.
//!
//! No buffers of its own: [`Receiver::decode`] looks at the bytes the caller has buffered, and
//! [`Receiver::payload`] works on payload bytes wherever the caller put them (its read buffer or
//! the application's buffer), so the stream adapter can read payload straight into the caller's
//! memory.

use soketto::{
    base::{Codec, Header, OpCode},
    Parsing,
};

use super::error::{FrameError, ProtocolViolation};
use super::{mask::apply_mask, utf8::Utf8Check, Role, MAX_CONTROL_PAYLOAD};

/// What [`Receiver::decode`] found at the start of the buffered bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// The next frame's header (or a control frame's payload) is not complete yet.
    NeedMore,
    /// A data frame's header, `consumed` bytes long. Its payload (`len` bytes, possibly 0) follows
    /// and goes through [`Receiver::payload`].
    Data { consumed: usize, len: u64 },
    /// A whole control frame, `consumed` bytes long.
    Control { consumed: usize, control: Control },
}

/// A complete, valid control frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// A ping with its (unmasked) payload.
    Ping(ControlPayload),
    /// A pong.
    Pong,
    /// A close frame with its code, if it carried one (its reason was checked and dropped).
    Close(Option<u16>),
}

/// A control frame's payload: at most 125 bytes, kept inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct ControlPayload {
    bytes: [u8; MAX_CONTROL_PAYLOAD],
    len: u8,
}

impl ControlPayload {
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for ControlPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ControlPayload")
            .field(&self.as_slice())
            .finish()
    }
}

/// The payload of the data frame being received.
#[derive(Debug)]
struct Payload {
    remaining: u64,
    mask: Option<[u8; 4]>,
    mask_offset: usize,
}

/// Receive state of one WebSocket connection.
#[derive(Debug)]
pub(crate) struct Receiver {
    role: Role,
    max_message_size: usize,
    codec: Codec,
    /// The data frame whose payload is being received.
    frame: Option<Payload>,
    /// Inside a fragmented message: a continuation frame must follow.
    in_message: bool,
    message_len: u64,
    /// The message being received is a text message (opcode 1).
    text: bool,
    utf8: Utf8Check,
}

impl Receiver {
    pub(crate) fn new(role: Role, max_frame_size: usize, max_message_size: usize) -> Self {
        let mut codec = Codec::new();
        codec.set_max_data_size(max_frame_size);
        Receiver {
            role,
            max_message_size,
            codec,
            frame: None,
            in_message: false,
            message_len: 0,
            text: false,
            utf8: Utf8Check::default(),
        }
    }

    /// Payload bytes of the current data frame still to come through [`Receiver::payload`];
    /// `None` between frames (then [`Receiver::decode`] reads the next header).
    pub(crate) fn payload_remaining(&self) -> Option<u64> {
        self.frame.as_ref().map(|f| f.remaining)
    }

    /// The current (or last) message is a text message.
    #[cfg(any(test, feature = "unstable-internals"))]
    pub(crate) fn is_text(&self) -> bool {
        self.text
    }

    /// Between messages: no payload pending and no fragment expected. A TCP EOF here is a clean
    /// end of the stream; anywhere else it cuts a message.
    pub(crate) fn at_message_boundary(&self) -> bool {
        self.frame.is_none() && !self.in_message
    }

    /// Decodes the frame at the start of `buf` (bytes received and not yet consumed). Only called
    /// between frames (`payload_remaining() == None`). The caller consumes the returned number of
    /// bytes; a data frame's payload then goes through [`Receiver::payload`].
    pub(crate) fn decode(&mut self, buf: &[u8]) -> Result<Decoded, FrameError> {
        debug_assert!(
            self.frame.is_none(),
            "decode called inside a frame's payload"
        );
        if buf.len() >= 2 && matches!(buf[0] & 0x0f, 8..=10) && buf[1] & 0x7f >= 126 {
            // soketto accepts a control frame whose (at most 125-byte) length uses the 16- or
            // 64-bit form; section 5.2 requires the minimal encoding.
            return Err(ProtocolViolation::ControlLengthNotMinimal.into());
        }
        let (header, offset) = match self.codec.decode_header(buf) {
            Ok(Parsing::Done { value, offset }) => (value, offset),
            Ok(Parsing::NeedMore(_)) => return Ok(Decoded::NeedMore),
            Err(e) => return Err(header_error(e)),
        };
        match (self.role, header.is_masked()) {
            (Role::Server, false) => return Err(ProtocolViolation::UnmaskedClientFrame.into()),
            (Role::Client, true) => return Err(ProtocolViolation::MaskedServerFrame.into()),
            _ => {}
        }
        match header.opcode() {
            OpCode::Continue | OpCode::Text | OpCode::Binary => {
                self.on_data_header(&header, offset)
            }
            opcode => {
                let len = header.payload_len();
                if buf.len() < offset + len {
                    return Ok(Decoded::NeedMore);
                }
                let mut payload = ControlPayload {
                    bytes: [0; MAX_CONTROL_PAYLOAD],
                    len: u8::try_from(len).map_err(|_| ProtocolViolation::ControlTooLong)?,
                };
                payload.bytes[..len].copy_from_slice(&buf[offset..offset + len]);
                if header.is_masked() {
                    apply_mask(&mut payload.bytes[..len], header.mask().to_be_bytes(), 0);
                }
                let control = match opcode {
                    OpCode::Ping => Control::Ping(payload),
                    OpCode::Pong => Control::Pong,
                    OpCode::Close => Control::Close(validate_close_payload(payload.as_slice())?),
                    _ => return Err(ProtocolViolation::ReservedOpcode.into()),
                };
                Ok(Decoded::Control {
                    consumed: offset + len,
                    control,
                })
            }
        }
    }

    fn on_data_header(&mut self, header: &Header, offset: usize) -> Result<Decoded, FrameError> {
        let len = header.payload_len() as u64;
        let continuation = header.opcode() == OpCode::Continue;
        if continuation && !self.in_message {
            return Err(ProtocolViolation::UnexpectedContinuation.into());
        }
        if !continuation && self.in_message {
            return Err(ProtocolViolation::UnfinishedMessage.into());
        }
        if !continuation {
            self.text = header.opcode() == OpCode::Text;
            self.message_len = 0;
        }
        self.message_len += len;
        if self.message_len > self.max_message_size as u64 {
            return Err(FrameError::MessageTooLarge {
                limit: self.max_message_size,
            });
        }
        self.in_message = !header.is_fin();
        if len > 0 {
            self.frame = Some(Payload {
                remaining: len,
                mask: header.is_masked().then(|| header.mask().to_be_bytes()),
                mask_offset: 0,
            });
        } else if header.is_fin() && self.text {
            self.utf8.finish()?;
        }
        Ok(Decoded::Data {
            consumed: offset,
            len,
        })
    }

    /// Takes the next `data.len()` payload bytes of the current frame (at most
    /// `payload_remaining()`): unmasks them in place and checks text for UTF-8. Returns whether
    /// these bytes end the message.
    pub(crate) fn payload(&mut self, data: &mut [u8]) -> Result<bool, FrameError> {
        let Some(frame) = self.frame.as_mut() else {
            debug_assert!(data.is_empty(), "payload outside a frame");
            return Ok(false);
        };
        debug_assert!(data.len() as u64 <= frame.remaining);
        if let Some(mask) = frame.mask {
            frame.mask_offset = apply_mask(data, mask, frame.mask_offset);
        }
        frame.remaining = frame.remaining.saturating_sub(data.len() as u64);
        let message_end = frame.remaining == 0 && !self.in_message;
        if frame.remaining == 0 {
            self.frame = None;
        }
        if self.text {
            self.utf8.feed(data)?;
            if message_end {
                self.utf8.finish()?;
            }
        }
        Ok(message_end)
    }
}

/// Checks a close frame's payload: empty, or a valid code and a UTF-8 reason (section 5.5.1).
pub(crate) fn validate_close_payload(payload: &[u8]) -> Result<Option<u16>, ProtocolViolation> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolViolation::CloseFrameTooShort),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err(ProtocolViolation::InvalidCloseCode(code));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(ProtocolViolation::InvalidCloseReason);
            }
            Ok(Some(code))
        }
    }
}

fn header_error(e: soketto::base::Error) -> FrameError {
    use soketto::base::Error as E;
    match e {
        E::PayloadTooLarge { actual, maximum } => FrameError::FrameTooLarge {
            len: actual,
            limit: usize::try_from(maximum).unwrap_or(usize::MAX),
        },
        E::ReservedOpCode | E::UnknownOpCode => ProtocolViolation::ReservedOpcode.into(),
        E::FragmentedControl => ProtocolViolation::FragmentedControl.into(),
        E::InvalidControlFrameLen => ProtocolViolation::ControlTooLong.into(),
        E::InvalidReservedBit(_) => ProtocolViolation::ReservedBit.into(),
        _ => ProtocolViolation::InvalidHeader.into(),
    }
}
