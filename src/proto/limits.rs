//! The limits of one upgraded connection ([`FrameLimits`], [`KeepAlive`]) and their defaults:
//! what the frame core and the stream adapter need of the configuration, here on the ground
//! floor. The transport's [`Config`] sets them through its framing setters (and re-exports them
//! where users find them: the crate root and `config`).
//!
//! [`Config`]: crate::Config

use std::time::Duration;

/// Default for [`FrameLimits::with_max_frame_size`] (and `Config::with_max_frame_size`): 1 MiB.
/// Noise sends at most 65,537 bytes per write, yamux 16 KiB frames; peers that write larger frames
/// are still well inside this.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 1024 * 1024;
/// Default for [`FrameLimits::with_max_message_size`] (and `Config::with_max_message_size`): 4 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;
/// Default for [`FrameLimits::with_write_buffer_size`] (and `Config`'s setter): 64 KiB.
pub const DEFAULT_WRITE_BUFFER_SIZE: usize = 64 * 1024;
/// Default for [`FrameLimits::with_read_buffer_size`] (and `Config`'s setter): 16 KiB.
pub const DEFAULT_READ_BUFFER_SIZE: usize = 16 * 1024;
/// Default for [`FrameLimits::with_close_timeout`] (and `Config::with_close_timeout`): 5 seconds.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`FrameLimits::with_keep_alive`] (and `Config::with_keep_alive`): a ping after 30
/// seconds without incoming data, answered within 20 seconds.
pub const DEFAULT_KEEP_ALIVE: KeepAlive = KeepAlive {
    interval: Duration::from_secs(30),
    timeout: Duration::from_secs(20),
};

/// WebSocket keep-alive: detects half-open connections with ping frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// Send a ping after this long without receiving anything.
    pub interval: Duration,
    /// Fail the connection if nothing arrives this long after the ping.
    pub timeout: Duration,
}

/// Smallest read or write buffer size accepted by [`FrameLimits`]: 1 KiB. A frame header and the
/// largest control frame take at most 139 bytes; a read buffer of zero bytes would make a valid
/// frame read as end of stream, a write buffer of zero bytes would make `write_all` spin.
const MIN_BUFFER_SIZE: usize = 1024;
/// Largest read or write buffer size accepted by [`FrameLimits`]: 16 MiB.
const MAX_BUFFER_SIZE: usize = 16 * 1024 * 1024;
/// Shortest keep-alive interval and timeout accepted by [`FrameLimits`]: 10 ms. Zero would send a
/// ping for every pong (interval) or fail every connection at its first ping (timeout).
const MIN_KEEP_ALIVE: Duration = Duration::from_millis(10);
/// Longest keep-alive interval or timeout, and longest close timeout, accepted by [`FrameLimits`]:
/// one day. Deadlines are computed as `Instant + Duration`, which must not overflow.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The limits of one upgraded connection (the framing layer); a copy lives in each connection.
///
/// Every value is valid by construction: start from [`FrameLimits::default`] and change values with
/// the `with_*` methods, which clamp what would break a connection (each method documents its
/// range). [`Config`](crate::Config)'s framing setters delegate to these methods.
///
/// ```
/// use std::time::Duration;
/// let limits = libp2p_ws::FrameLimits::default()
///     .with_max_frame_size(64 * 1024)
///     .with_write_buffer_size(0) // clamped to 1 KiB
///     .with_close_timeout(Duration::from_secs(1));
/// assert_eq!(limits.write_buffer_size(), 1024);
/// assert_eq!(limits.max_frame_size(), 64 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    max_frame_size: usize,
    max_message_size: usize,
    write_buffer_size: usize,
    read_buffer_size: usize,
    keep_alive: Option<KeepAlive>,
    close_timeout: Duration,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            write_buffer_size: DEFAULT_WRITE_BUFFER_SIZE,
            read_buffer_size: DEFAULT_READ_BUFFER_SIZE,
            keep_alive: Some(DEFAULT_KEEP_ALIVE),
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
        }
    }
}

impl FrameLimits {
    /// Largest frame payload accepted; larger frames close the connection with code 1009.
    /// Clamped to at least 1 byte (0 would refuse every frame with a payload).
    /// Default: [`DEFAULT_MAX_FRAME_SIZE`].
    pub fn with_max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes.max(1);
        self
    }

    /// Largest message (a frame and its continuation frames) accepted; larger messages close the
    /// connection with code 1009. Clamped to at least 1 byte (0 would refuse every message with a
    /// payload). Default: [`DEFAULT_MAX_MESSAGE_SIZE`].
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes.max(1);
        self
    }

    /// Outgoing bytes buffered before writes wait for the socket; also the largest frame this side
    /// sends. Clamped to 1 KiB ..= 16 MiB (0 would make `write_all` spin without progress).
    /// Default: [`DEFAULT_WRITE_BUFFER_SIZE`].
    pub fn with_write_buffer_size(mut self, bytes: usize) -> Self {
        self.write_buffer_size = bytes.clamp(MIN_BUFFER_SIZE, MAX_BUFFER_SIZE);
        self
    }

    /// Largest size of the read buffer. The buffer starts at 1 KiB (frame headers and small
    /// frames), grows to this size once payload has to be read through it in pieces under 4 KiB
    /// (larger payload reads go straight from the socket into the caller's buffer), and is released
    /// whenever the socket has nothing more to read. Clamped to 1 KiB ..= 16 MiB (it must hold a
    /// frame header and a whole control frame, 139 bytes; 0 would make a valid frame read as end of
    /// stream). Default: [`DEFAULT_READ_BUFFER_SIZE`].
    pub fn with_read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = bytes.clamp(MIN_BUFFER_SIZE, MAX_BUFFER_SIZE);
        self
    }

    /// Keep-alive pings, or `None` to turn them off. The interval and the timeout are each clamped
    /// to 10 ms ..= 1 day (0 would ping in a loop or fail at once; the upper bound keeps deadlines
    /// representable). Default: [`DEFAULT_KEEP_ALIVE`].
    pub fn with_keep_alive(mut self, keep_alive: Option<KeepAlive>) -> Self {
        self.keep_alive = keep_alive.map(|ka| KeepAlive {
            interval: ka.interval.clamp(MIN_KEEP_ALIVE, MAX_DURATION),
            timeout: ka.timeout.clamp(MIN_KEEP_ALIVE, MAX_DURATION),
        });
        self
    }

    /// How long closing a connection may take in all, counted from the first `poll_close` call:
    /// sending the close frame, flushing (TLS included) and closing the socket, also after the
    /// connection failed. Clamped to at most 1 day; 0 gives up at once on a peer that is not ready.
    /// Default: [`DEFAULT_CLOSE_TIMEOUT`].
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout.min(MAX_DURATION);
        self
    }

    /// Largest frame payload accepted.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Largest message (frame plus continuations) accepted.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Outgoing bytes buffered before `poll_write` waits for the socket (one frame at most this big).
    pub fn write_buffer_size(&self) -> usize {
        self.write_buffer_size
    }

    /// Largest size of the read buffer.
    pub fn read_buffer_size(&self) -> usize {
        self.read_buffer_size
    }

    /// Keep-alive pings, if enabled.
    pub fn keep_alive(&self) -> Option<KeepAlive> {
        self.keep_alive
    }

    /// How long `poll_close` may take in all.
    pub fn close_timeout(&self) -> Duration {
        self.close_timeout
    }
}
