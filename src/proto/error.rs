//! The framing layer's errors: [`FrameError`] (each with the close code it is answered with),
//! [`ProtocolViolation`] (one variant per rule of RFC 6455) and the close-code mapping, here
//! beside the frame core that raises them (re-exported at the crate root and in `error`).

use std::{io, time::Duration};

/// Errors of the WebSocket framing layer, each with the close code it is answered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer broke a rule of RFC 6455: see [`ProtocolViolation`].
    #[error("WebSocket protocol error")]
    Protocol(#[source] ProtocolViolation),
    /// A frame larger than the limit.
    #[error("WebSocket frame of {len} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// The declared payload length.
        len: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A message (a frame and its continuations) larger than the limit.
    #[error("WebSocket message exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The peer did not answer a keep-alive ping in time.
    #[error("the peer did not answer a WebSocket ping within {0:?}")]
    KeepAliveTimeout(Duration),
    /// The close handshake (close frames both ways, flushing and closing the socket) did not
    /// finish within the close timeout.
    #[error("WebSocket close timed out after {0:?}")]
    CloseTimeout(Duration),
    /// The peer closed the TCP connection without a WebSocket close frame.
    #[error("the connection ended without a WebSocket close frame")]
    UnexpectedEof,
    /// The connection failed earlier; every later call reports this, with the first error as its
    /// source.
    #[error("the WebSocket connection failed earlier")]
    Failed(#[source] Box<FrameError>),
    /// The socket failed; kept as the source of [`FrameError::Failed`] for later calls (the first
    /// call gets the socket's `io::Error` itself).
    #[error(transparent)]
    Io(SharedIoError),
}

/// A socket error shared by every later call on a failed connection (`io::Error` is not `Clone`).
/// Two are equal when they are the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("socket error ({kind})", kind = .0.kind())]
pub struct SharedIoError(#[source] pub(crate) std::sync::Arc<io::Error>);

impl SharedIoError {
    /// The socket error (also this error's `source()`).
    pub fn io_error(&self) -> &io::Error {
        &self.0
    }
}

impl PartialEq for SharedIoError {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedIoError {}

/// A rule of RFC 6455 that the peer broke, one variant per rule; [`ProtocolViolation::close_code`]
/// is the close code the connection is failed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// A client sent an unmasked frame (section 5.1).
    #[error("the client sent an unmasked frame")]
    UnmaskedClientFrame,
    /// A server sent a masked frame (section 5.1).
    #[error("the server sent a masked frame")]
    MaskedServerFrame,
    /// A frame with a reserved bit (RSV1-3) set; no extension was negotiated (section 5.2).
    #[error("a frame has a reserved bit set")]
    ReservedBit,
    /// A frame with a reserved opcode (3-7, 0xB-0xF; section 5.2).
    #[error("a frame has a reserved opcode")]
    ReservedOpcode,
    /// A control frame without the FIN bit (section 5.5).
    #[error("a control frame is fragmented")]
    FragmentedControl,
    /// A control frame with a payload over 125 bytes (section 5.5).
    #[error("a control frame's payload is longer than 125 bytes")]
    ControlTooLong,
    /// A control frame whose length uses the 16- or 64-bit form (section 5.2 requires the
    /// minimal encoding).
    #[error("a control frame's length is not in the 7-bit form")]
    ControlLengthNotMinimal,
    /// A continuation frame with no message to continue (section 5.4).
    #[error("a continuation frame came outside a message")]
    UnexpectedContinuation,
    /// A new text or binary frame before the previous message's last fragment (section 5.4).
    #[error("a new data frame came before the previous message ended")]
    UnfinishedMessage,
    /// A close frame with a 1-byte payload (section 5.5.1).
    #[error("a close frame has a 1-byte payload")]
    CloseFrameTooShort,
    /// A close frame with a code that must not be sent (section 7.4).
    #[error("a close frame has the invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A close frame whose reason is not valid UTF-8 (section 5.5.1).
    #[error("a close frame's reason is not valid UTF-8")]
    InvalidCloseReason,
    /// A text message that is not valid UTF-8 (section 8.1), found at its first invalid byte.
    #[error("a text message is not valid UTF-8")]
    InvalidUtf8Text,
    /// A frame header that cannot be decoded for another reason.
    #[error("an invalid frame header")]
    InvalidHeader,
}

impl ProtocolViolation {
    /// The close code the connection is failed with: 1007 for invalid UTF-8, 1002 otherwise.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolViolation::InvalidUtf8Text | ProtocolViolation::InvalidCloseReason => 1007,
            _ => 1002,
        }
    }
}

impl From<ProtocolViolation> for FrameError {
    fn from(violation: ProtocolViolation) -> Self {
        FrameError::Protocol(violation)
    }
}

impl FrameError {
    /// The close code sent to the peer when this error ends the connection.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::Protocol(violation) => violation.close_code(),
            FrameError::FrameTooLarge { .. } | FrameError::MessageTooLarge { .. } => 1009,
            FrameError::KeepAliveTimeout(_) => 1011,
            FrameError::Failed(first) => first.close_code(),
            _ => 1002,
        }
    }

    /// Recovers the `FrameError` from an `io::Error` returned by a
    /// [`Connection`](crate::Connection).
    pub fn from_io(error: &io::Error) -> Option<&FrameError> {
        error.get_ref()?.downcast_ref::<FrameError>()
    }

    /// The `io::ErrorKind` this error is reported with.
    fn kind(&self) -> io::ErrorKind {
        match self {
            FrameError::KeepAliveTimeout(_) | FrameError::CloseTimeout(_) => {
                io::ErrorKind::TimedOut
            }
            FrameError::UnexpectedEof => io::ErrorKind::UnexpectedEof,
            FrameError::Io(e) => e.0.kind(),
            FrameError::Failed(first) => first.kind(),
            _ => io::ErrorKind::InvalidData,
        }
    }

    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(self.kind(), self)
    }
}
