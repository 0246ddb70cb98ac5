//! [`Config`]: limits, timeouts, TLS and policy, with documented defaults.

use std::time::Duration;

use crate::tls::TlsConfig;

/// Default for [`Config::with_handshake_timeout`]: 10 seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`Config::with_upgrade_timeout`]: 20 seconds.
pub const DEFAULT_UPGRADE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default for [`Config::with_max_head_size`]: 8 KiB, what most HTTP servers allow.
pub const DEFAULT_MAX_HEAD_SIZE: usize = 8 * 1024;
/// The largest head size accepted: soketto's server reads at most 8 KiB of request head.
pub const MAX_HEAD_SIZE_LIMIT: usize = 8 * 1024;
/// Default for [`Config::with_max_frame_size`]: 1 MiB. Noise sends at most 65,537 bytes per write,
/// yamux 16 KiB frames; peers that write larger frames are still well inside this.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 1024 * 1024;
/// Default for [`Config::with_max_message_size`]: 4 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;
/// Default for [`Config::with_max_pending_handshakes`]: 256 per listener.
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 256;
/// Default for [`Config::with_max_pending_handshakes_per_ip`]: 16 per client address and listener.
pub const DEFAULT_MAX_PENDING_HANDSHAKES_PER_IP: usize = 16;
/// Default for [`Config::with_write_buffer_size`]: 64 KiB.
pub const DEFAULT_WRITE_BUFFER_SIZE: usize = 64 * 1024;
/// Default for [`Config::with_read_buffer_size`]: 16 KiB.
pub const DEFAULT_READ_BUFFER_SIZE: usize = 16 * 1024;
/// Default for [`Config::with_close_timeout`]: 5 seconds.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default keep-alive: a ping after 30 seconds without incoming data, answered within 20 seconds.
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

/// The limits of one upgraded connection (the framing layer); a copy lives in each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest frame payload accepted.
    pub max_frame_size: usize,
    /// Largest message (frame plus continuations) accepted.
    pub max_message_size: usize,
    /// Outgoing bytes buffered before `poll_write` waits for the socket (one frame at most this big).
    pub write_buffer_size: usize,
    /// Largest size of the read buffer (see [`Config::with_read_buffer_size`]); allocated while data
    /// flows and released when the connection is idle.
    pub read_buffer_size: usize,
    /// Keep-alive pings, if enabled.
    pub keep_alive: Option<KeepAlive>,
    /// How long `poll_close` waits to send the close frame before giving up on the peer.
    pub close_timeout: Duration,
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

/// Configuration of the WebSocket transport.
///
/// Every setting has a documented default (the `DEFAULT_*` constants of this module); builder
/// methods return `Self`:
///
/// ```
/// use std::time::Duration;
/// let config = libp2p_ws::Config::default()
///     .with_handshake_timeout(Duration::from_secs(5))
///     .with_max_frame_size(256 * 1024);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    pub(crate) handshake_timeout: Duration,
    pub(crate) upgrade_timeout: Duration,
    pub(crate) max_head_size: usize,
    pub(crate) max_pending_handshakes: usize,
    pub(crate) max_pending_handshakes_per_ip: usize,
    pub(crate) frame: FrameLimits,
    pub(crate) nodelay: bool,
    pub(crate) allow_insecure_listen: bool,
    pub(crate) tls: TlsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            upgrade_timeout: DEFAULT_UPGRADE_TIMEOUT,
            max_head_size: DEFAULT_MAX_HEAD_SIZE,
            max_pending_handshakes: DEFAULT_MAX_PENDING_HANDSHAKES,
            max_pending_handshakes_per_ip: DEFAULT_MAX_PENDING_HANDSHAKES_PER_IP,
            frame: FrameLimits::default(),
            nodelay: true,
            allow_insecure_listen: false,
            tls: TlsConfig::default(),
        }
    }
}

impl Config {
    /// The default configuration (same as [`Config::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Time allowed from TCP connect (or accept) through TLS to the end of the HTTP upgrade.
    /// Default: [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Time allowed for the whole upgrade in `upgraded` (`libp2p_ws::async_std::upgraded`, `libp2p_ws::tokio::upgraded`): the WebSocket handshake,
    /// then noise and yamux. Default: [`DEFAULT_UPGRADE_TIMEOUT`].
    pub fn with_upgrade_timeout(mut self, timeout: Duration) -> Self {
        self.upgrade_timeout = timeout;
        self
    }

    /// Largest HTTP request or response head read during the upgrade, on both sides; larger heads
    /// fail with [`HandshakeError::HeadTooLarge`](crate::HandshakeError::HeadTooLarge) (a listener
    /// answers 431). Clamped to [`MAX_HEAD_SIZE_LIMIT`]. At most 32 headers are accepted (soketto's
    /// fixed limit). Default: [`DEFAULT_MAX_HEAD_SIZE`].
    pub fn with_max_head_size(mut self, bytes: usize) -> Self {
        self.max_head_size = bytes.clamp(256, MAX_HEAD_SIZE_LIMIT);
        self
    }

    /// Largest WebSocket frame payload accepted; larger frames close the connection with code 1009.
    /// Default: [`DEFAULT_MAX_FRAME_SIZE`].
    pub fn with_max_frame_size(mut self, bytes: usize) -> Self {
        self.frame.max_frame_size = bytes.max(1);
        self
    }

    /// Largest WebSocket message (a frame and its continuation frames) accepted; larger messages close
    /// the connection with code 1009. Default: [`DEFAULT_MAX_MESSAGE_SIZE`].
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.frame.max_message_size = bytes.max(1);
        self
    }

    /// Most connections per listener that may be in their handshake at once. A connection counts
    /// from `accept` until its upgrade is done or it is dropped: with the complete stack
    /// (`upgraded`, `constructor`) until noise and yamux complete, with the bare [`Transport`](crate::Transport)
    /// until the HTTP upgrade does. When the listener is full, a new connection evicts the oldest
    /// pending handshake of the client address that holds the most (if it holds more than the
    /// newcomer's address), so a flood from some addresses cannot shut out the others; otherwise
    /// the new socket is closed at once. At least 1. Default: [`DEFAULT_MAX_PENDING_HANDSHAKES`].
    pub fn with_max_pending_handshakes(mut self, count: usize) -> Self {
        self.max_pending_handshakes = count.max(1);
        self
    }

    /// Most pending handshakes one client address may hold on a listener; more sockets from it are
    /// closed at once. At least 1. Default: [`DEFAULT_MAX_PENDING_HANDSHAKES_PER_IP`].
    pub fn with_max_pending_handshakes_per_ip(mut self, count: usize) -> Self {
        self.max_pending_handshakes_per_ip = count.max(1);
        self
    }

    /// Outgoing bytes buffered per connection before writes wait for the socket; also the largest
    /// frame this side sends. Default: [`DEFAULT_WRITE_BUFFER_SIZE`].
    pub fn with_write_buffer_size(mut self, bytes: usize) -> Self {
        self.frame.write_buffer_size = bytes.clamp(1024, 16 * 1024 * 1024);
        self
    }

    /// Largest size of each connection's read buffer. The buffer starts at 1 KiB (frame headers and
    /// small frames), grows to this size once payload has to be read through it in pieces under
    /// 4 KiB (larger payload reads go straight from the socket into the caller's buffer), and is
    /// released whenever the socket has nothing more to read. Default: [`DEFAULT_READ_BUFFER_SIZE`].
    pub fn with_read_buffer_size(mut self, bytes: usize) -> Self {
        self.frame.read_buffer_size = bytes.clamp(1024, 16 * 1024 * 1024);
        self
    }

    /// WebSocket keep-alive pings, or `None` to turn them off. Default: [`DEFAULT_KEEP_ALIVE`].
    pub fn with_keep_alive(mut self, keep_alive: Option<KeepAlive>) -> Self {
        self.frame.keep_alive = keep_alive;
        self
    }

    /// How long closing a connection waits to hand the close frame to a peer that does not read.
    /// Default: [`DEFAULT_CLOSE_TIMEOUT`].
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.frame.close_timeout = timeout;
        self
    }

    /// Whether to set `TCP_NODELAY` on every socket. Default: `true`.
    pub fn with_nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// Allow listening on plain `/ws` on addresses that are not loopback.
    ///
    /// The libp2p WebSockets specification requires TLS certificates a browser can verify for any
    /// listener reachable from other machines, so by default plain `/ws` is only allowed on
    /// 127.0.0.0/8, `::1` and `localhost`. Opt out only when a TLS-terminating reverse proxy sits in
    /// front of this node, or on a private test network. Default: `false`.
    pub fn with_insecure_listen(mut self, allow: bool) -> Self {
        self.allow_insecure_listen = allow;
        self
    }

    /// TLS settings: server certificate for `/tls/ws` listeners and trust roots for dialing.
    /// Default: [`TlsConfig::default`] (Mozilla roots, no server certificate).
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// The TLS settings.
    pub fn tls(&self) -> &TlsConfig {
        &self.tls
    }

    /// The framing limits each connection gets.
    pub fn frame_limits(&self) -> FrameLimits {
        self.frame
    }
}
