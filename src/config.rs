//! [`Config`]: limits, timeouts, TLS and policy, with documented defaults.

use std::time::Duration;

pub use crate::proto::limits::{
    FrameLimits, KeepAlive, DEFAULT_CLOSE_TIMEOUT, DEFAULT_KEEP_ALIVE, DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_READ_BUFFER_SIZE, DEFAULT_WRITE_BUFFER_SIZE,
};
use crate::{
    dns::DnsConfig,
    forwarded::ReverseProxy,
    http::Http,
    metrics::Recorder,
    proxy::{Proxies, Proxy, ProxyEnv},
    tls_config::TlsConfig,
};

/// Default for [`Config::with_handshake_timeout`]: 8 seconds, so that the handshake (and a
/// forward proxy's tunnel) fails with this transport's typed error inside the upgrade timeout.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(8);
/// Default for [`Config::with_upgrade_timeout`]: 9.5 seconds, inside the 10 seconds that libp2p's
/// `SwarmBuilder` allows a connection (its `with_connection_timeout` default), so that a stalled
/// upgrade fails with this transport's typed [`Error::Timeout`](crate::Error::Timeout) rather than
/// the builder's untyped "Timeout has been reached".
pub const DEFAULT_UPGRADE_TIMEOUT: Duration = Duration::from_millis(9_500);
/// Default for [`Config::with_max_head_size`]: 8 KiB, what most HTTP servers allow.
pub const DEFAULT_MAX_HEAD_SIZE: usize = 8 * 1024;
/// The largest head size accepted: soketto's server reads at most 8 KiB of request head.
pub const MAX_HEAD_SIZE_LIMIT: usize = 8 * 1024;
/// Default for [`Config::with_max_pending_handshakes`]: 256 per listener.
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 256;
/// Default for [`Config::with_max_pending_handshakes_per_ip`]: 16 per client address and listener.
pub const DEFAULT_MAX_PENDING_HANDSHAKES_PER_IP: usize = 16;
/// Default for [`Config::with_ipv4_share_prefix`]: 32 bits, each IPv4 address its own share.
pub const DEFAULT_IPV4_SHARE_PREFIX: u8 = 32;
/// Default for [`Config::with_ipv6_share_prefix`]: 64 bits, one share per IPv6 /64.
pub const DEFAULT_IPV6_SHARE_PREFIX: u8 = 64;
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
    pub(crate) ipv4_share_prefix: u8,
    pub(crate) ipv6_share_prefix: u8,
    pub(crate) frame: FrameLimits,
    pub(crate) nodelay: bool,
    pub(crate) allow_insecure_listen: bool,
    pub(crate) port_sharing: bool,
    pub(crate) tls: TlsConfig,
    pub(crate) dns: DnsConfig,
    pub(crate) proxy: Proxies,
    pub(crate) reverse_proxy: Option<ReverseProxy>,
    pub(crate) http: Http,
    pub(crate) metrics: Recorder,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            upgrade_timeout: DEFAULT_UPGRADE_TIMEOUT,
            max_head_size: DEFAULT_MAX_HEAD_SIZE,
            max_pending_handshakes: DEFAULT_MAX_PENDING_HANDSHAKES,
            max_pending_handshakes_per_ip: DEFAULT_MAX_PENDING_HANDSHAKES_PER_IP,
            ipv4_share_prefix: DEFAULT_IPV4_SHARE_PREFIX,
            ipv6_share_prefix: DEFAULT_IPV6_SHARE_PREFIX,
            frame: FrameLimits::default(),
            nodelay: true,
            allow_insecure_listen: false,
            port_sharing: true,
            tls: TlsConfig::default(),
            dns: DnsConfig::default(),
            proxy: Proxies::Direct,
            reverse_proxy: None,
            http: Http::new(),
            metrics: Recorder::default(),
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

    /// Time allowed for the whole upgrade in `upgraded` (`libp2p_ws::async_std::upgraded`,
    /// `libp2p_ws::tokio::upgraded`, and the `constructor`s): the WebSocket handshake, then noise
    /// and yamux. Default: [`DEFAULT_UPGRADE_TIMEOUT`]. Inbound, it counts from `accept` on every
    /// path (then `Error::Timeout`, stage `Upgrade`).
    ///
    /// Under libp2p's `SwarmBuilder`, whose connection timeout (default 10 s,
    /// `with_connection_timeout`) bounds the same upgrade from outside, keep this (and the
    /// handshake timeout) below the builder's, or the builder's untyped timeout wins the race.
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

    /// The largest WebSocket frame payload each connection accepts. See
    /// [`FrameLimits::with_max_frame_size`], the one description of its rule, range and default.
    pub fn with_max_frame_size(mut self, bytes: usize) -> Self {
        self.frame = self.frame.with_max_frame_size(bytes);
        self
    }

    /// The largest WebSocket message each connection accepts. See
    /// [`FrameLimits::with_max_message_size`], the one description of its rule, range and default.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.frame = self.frame.with_max_message_size(bytes);
        self
    }

    /// Most connections per listener that may be in their handshake at once. A connection counts
    /// from `accept` until its upgrade is done or it is dropped: with the complete stack
    /// (`upgraded`, `constructor`) until noise and yamux complete, with the bare [`Transport`](crate::Transport)
    /// until the HTTP upgrade does. When the listener is full, a new connection evicts the oldest
    /// pending handshake among the clients that hold the most (if they hold more than the
    /// newcomer's client; ties broken by age), so a flood from some addresses cannot shut out the
    /// others; otherwise the new socket is closed at once. At least 1. Default: [`DEFAULT_MAX_PENDING_HANDSHAKES`].
    pub fn with_max_pending_handshakes(mut self, count: usize) -> Self {
        self.max_pending_handshakes = count.max(1);
        self
    }

    /// Most pending handshakes one client may hold on a listener; more sockets from it are
    /// closed at once. A client: an IPv4 address, an IPv6 /64 ([`Config::with_ipv6_share_prefix`]),
    /// or whom a trusted proxy names (when its header is read). At least 1. Default: [`DEFAULT_MAX_PENDING_HANDSHAKES_PER_IP`].
    ///
    /// Behind a reverse proxy or a NAT that many clients share, every connection comes from the
    /// same address: raise this for such a listener (up to [`Config::with_max_pending_handshakes`]
    /// turns the per-address share off).
    pub fn with_max_pending_handshakes_per_ip(mut self, count: usize) -> Self {
        self.max_pending_handshakes_per_ip = count.max(1);
        self
    }

    /// The leading bits of an IPv6 address that make one client of `with_max_pending_handshakes_per_ip`
    /// (at most 128). Default: [`DEFAULT_IPV6_SHARE_PREFIX`], a /64 (a host usually holds one).
    pub fn with_ipv6_share_prefix(mut self, bits: u8) -> Self {
        self.ipv6_share_prefix = bits.min(128);
        self
    }

    /// The leading bits of an IPv4 address (or IPv4-mapped IPv6 one) that make one client (at most
    /// 32). Default: [`DEFAULT_IPV4_SHARE_PREFIX`], each address its own share.
    pub fn with_ipv4_share_prefix(mut self, bits: u8) -> Self {
        self.ipv4_share_prefix = bits.min(32);
        self
    }

    /// The outgoing bytes each connection buffers (and the largest frame it sends). See
    /// [`FrameLimits::with_write_buffer_size`], the one description of its rule, range and default.
    pub fn with_write_buffer_size(mut self, bytes: usize) -> Self {
        self.frame = self.frame.with_write_buffer_size(bytes);
        self
    }

    /// The largest size of each connection's read buffer. See
    /// [`FrameLimits::with_read_buffer_size`], the one description of its rule, range and default.
    pub fn with_read_buffer_size(mut self, bytes: usize) -> Self {
        self.frame = self.frame.with_read_buffer_size(bytes);
        self
    }

    /// WebSocket keep-alive pings for each connection (or `None`: off). See
    /// [`FrameLimits::with_keep_alive`], the one description of its rule, range and default.
    pub fn with_keep_alive(mut self, keep_alive: Option<KeepAlive>) -> Self {
        self.frame = self.frame.with_keep_alive(keep_alive);
        self
    }

    /// How long closing each connection may take. See [`FrameLimits::with_close_timeout`], the one
    /// description of its rule, range and default.
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.frame = self.frame.with_close_timeout(timeout);
        self
    }

    /// Whether to set `TCP_NODELAY` on every socket. Default: `true`.
    pub fn with_nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// **Dangerous:** allow listening on plain `/ws` on addresses that are not loopback.
    ///
    /// The libp2p WebSockets specification requires TLS certificates a browser can verify for any
    /// listener reachable from other machines, so by default plain `/ws` is only allowed on
    /// 127.0.0.0/8, `::1` and `localhost`. Opt out only when a TLS-terminating reverse proxy sits in
    /// front of this node, or on a private test network. Default: `false`.
    pub fn danger_insecure_listen(mut self, allow: bool) -> Self {
        self.allow_insecure_listen = allow;
        self
    }

    /// The old name of [`Config::danger_insecure_listen`], which says that the option is
    /// dangerous, as [`TlsConfig::danger_accept_invalid_certificates`] does.
    #[deprecated(since = "0.1.0", note = "renamed to `danger_insecure_listen`")]
    pub fn with_insecure_listen(self, allow: bool) -> Self {
        self.danger_insecure_listen(allow)
    }

    /// Whether listeners of different kinds (`/tcp`, `/ws`, `/tls/ws`) on the same IP address and
    /// port share one socket, each connection going to the listener of the form its first bytes
    /// speak (see [`Transport`](crate::Transport)). Off, each `listen_on` binds its own socket
    /// and a second bind of a port fails with [`Error::Bind`](crate::Error::Bind) (address in
    /// use). A port named as `0` is never shared either way. Default: `true`.
    pub fn with_port_sharing(mut self, share: bool) -> Self {
        self.port_sharing = share;
        self
    }

    /// TLS settings: server certificate for `/tls/ws` listeners and trust roots for dialing.
    /// Default: [`TlsConfig::default`] (Mozilla roots, no server certificate).
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// Name servers and bounds for `/dnsaddr` and for `/dns*` names: the system's by default
    /// (`/etc/resolv.conf` for `/dnsaddr`; the system resolver, with `/etc/hosts`, for `/dns*`).
    /// With [`DnsConfig::with_name_servers`], both use those servers only.
    ///
    /// ```
    /// let dns = libp2p_ws::dns::DnsConfig::default()
    ///     .with_name_servers(["127.0.0.1:5353".parse().unwrap()]);
    /// let config = libp2p_ws::Config::default().with_dns(dns);
    /// ```
    pub fn with_dns(mut self, dns: DnsConfig) -> Self {
        self.dns = dns;
        self
    }

    /// Dial every address (`/ws`, `/tls/ws` and `/tcp`) through `proxy` (HTTP CONNECT or SOCKS5,
    /// see [`proxy`](crate::proxy)). TLS, its SNI and certificate verification, and the HTTP
    /// upgrade's `Host` header stay end to end with the dialed address, through the tunnel; the
    /// tunnel is opened within the handshake timeout. Listeners are not affected. Default: dial
    /// directly.
    ///
    /// ```
    /// let proxy = "socks5h://127.0.0.1:9050".parse().unwrap();
    /// let config = libp2p_ws::Config::default().with_proxy(proxy);
    /// ```
    pub fn with_proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = Proxies::Fixed(proxy);
        self
    }

    /// Dial through the proxies the environment names (read once, by
    /// [`ProxyEnv::from_env`](crate::proxy::ProxyEnv::from_env)): `HTTPS_PROXY` for `/tls/ws`,
    /// `HTTP_PROXY` for `/ws`, `ALL_PROXY` for the rest, except for the hosts in `NO_PROXY`.
    /// Opt-in: without this call the environment is not read.
    ///
    /// ```
    /// let env = libp2p_ws::proxy::ProxyEnv::from_env()?;
    /// let config = libp2p_ws::Config::default().with_proxy_env(env);
    /// # Ok::<(), libp2p_ws::proxy::ProxyUrlError>(())
    /// ```
    pub fn with_proxy_env(mut self, env: ProxyEnv) -> Self {
        self.proxy = if env.is_empty() {
            Proxies::Direct
        } else {
            Proxies::Env(Box::new(env))
        };
        self
    }

    /// Dial directly (the default), undoing [`Config::with_proxy`] or [`Config::with_proxy_env`].
    pub fn without_proxy(mut self) -> Self {
        self.proxy = Proxies::Direct;
        self
    }

    /// Listeners behind reverse proxies (opt-in): connections from the trusted networks of
    /// `proxies` may name the client (a PROXY protocol header, read before TLS and HTTP where the
    /// listener's port has it on; `Forwarded`, `X-Forwarded-For` or `X-Real-IP` in the upgrade
    /// request), and the `Incoming` event's `send_back_addr` is then the client's address and
    /// port (port 0 when only a header without a port names it), in the listener's form: `/tls/ws`
    /// when the proxy says the client came over TLS (`Forwarded: proto=https`,
    /// `X-Forwarded-Proto: https`). The per-address pending-handshake limit applies to the
    /// client's address; the proxy's own address is not held to it. From anyone else the
    /// headers are ignored (and logged at debug). Malformed or oversized headers close the
    /// connection with [`Error::ProxyProtocol`](crate::Error::ProxyProtocol) or
    /// [`HandshakeError::Forwarded`](crate::HandshakeError::Forwarded) (answered 400). See
    /// [`forwarded`](crate::forwarded). Default: none.
    ///
    /// ```
    /// use libp2p_ws::forwarded::{ProxyProtocol, ReverseProxy};
    /// let config = libp2p_ws::Config::default().with_reverse_proxy(
    ///     ReverseProxy::new(["127.0.0.1".parse().unwrap()]).with_proxy_protocol(ProxyProtocol::Optional),
    /// );
    /// ```
    pub fn with_reverse_proxy(mut self, proxies: ReverseProxy) -> Self {
        self.reverse_proxy = Some(proxies);
        self
    }

    /// Responders for plain HTTP requests (not WebSocket upgrades) on the WebSocket listeners
    /// (`/ws`, `/tls/ws`, and a shared port): a health check, the metrics page, a handler; see
    /// [`http`](crate::http). A plain request is answered and closed, and never reported as a
    /// connection (it is logged at debug); without responders it is answered as before (426, 404,
    /// 405). Default: none.
    ///
    /// ```
    /// use libp2p_ws::http::Http;
    /// let config = libp2p_ws::Config::default().with_http(Http::new().with_health());
    /// ```
    pub fn with_http(mut self, http: Http) -> Self {
        self.http = http;
        self
    }

    /// Records Prometheus metrics in `registry` (feature `metrics`), all under one sub-registry
    /// with the prefix `libp2p_websocket`: connections opened and closed, inbound handshake
    /// failures, dial failures, admission refusals and evictions, pending handshakes, handshake
    /// and upgrade durations, close codes, WebSocket payload bytes, HTTP answers that were not
    /// upgrades, and the served TLS certificates' seconds until expiry (the crate's README lists
    /// each metric and its labels). Labels are bounded: none carries an address, a peer id or a
    /// path. Call it once per registry: each call registers the families again (two
    /// transports that should count together share one `Config`, cloned after this call).
    /// Default: no metrics.
    ///
    /// The registry is `prometheus_client` 0.25's, the version `libp2p-metrics` 0.18 uses under
    /// libp2p 0.57, so one `Registry` holds the app's metrics, libp2p-metrics' and ours, and one
    /// text encoding serves them all. If the versions part (libp2p-metrics moves to another
    /// prometheus-client, or the app uses another), the `Registry` types differ and do not mix:
    /// keep one registry per prometheus-client version and concatenate their text encodings
    /// (each prefix appears in one of them only).
    ///
    /// ```
    /// let mut registry = prometheus_client::registry::Registry::default();
    /// let config = libp2p_ws::Config::default().with_metrics(&mut registry);
    /// # let _ = config;
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    /// assert!(text.contains("libp2p_websocket_pending_handshakes 0"));
    /// ```
    #[cfg(feature = "metrics")]
    pub fn with_metrics(mut self, registry: &mut prometheus_client::registry::Registry) -> Self {
        self.metrics = Recorder::register(registry);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_are_clamped_to_at_least_one_byte() {
        let limits = FrameLimits::default()
            .with_max_frame_size(0)
            .with_max_message_size(0);
        assert_eq!(limits.max_frame_size(), 1);
        assert_eq!(limits.max_message_size(), 1);
        let limits = limits
            .with_max_frame_size(usize::MAX)
            .with_max_message_size(12_345);
        assert_eq!(limits.max_frame_size(), usize::MAX);
        assert_eq!(limits.max_message_size(), 12_345);
    }

    #[test]
    fn buffer_sizes_are_clamped_to_1_kib_through_16_mib() {
        for (asked, got) in [
            (0, 1024),
            (1, 1024),
            (1023, 1024),
            (1024, 1024),
            (5000, 5000),
            (16 * 1024 * 1024, 16 * 1024 * 1024),
            (16 * 1024 * 1024 + 1, 16 * 1024 * 1024),
            (usize::MAX, 16 * 1024 * 1024),
        ] {
            let limits = FrameLimits::default()
                .with_write_buffer_size(asked)
                .with_read_buffer_size(asked);
            assert_eq!(limits.write_buffer_size(), got, "write buffer of {asked}");
            assert_eq!(limits.read_buffer_size(), got, "read buffer of {asked}");
        }
    }

    #[test]
    fn keep_alive_durations_are_clamped_to_10_ms_through_1_day() {
        let ms = Duration::from_millis;
        let day = Duration::from_secs(24 * 60 * 60);
        for (asked, got) in [
            (Duration::ZERO, ms(10)),
            (ms(9), ms(10)),
            (ms(10), ms(10)),
            (ms(300), ms(300)),
            (day, day),
            (day + ms(1), day),
            (Duration::MAX, day),
        ] {
            let limits = FrameLimits::default().with_keep_alive(Some(KeepAlive {
                interval: asked,
                timeout: asked,
            }));
            let ka = limits.keep_alive().expect("enabled");
            assert_eq!(
                (ka.interval, ka.timeout),
                (got, got),
                "keep-alive of {asked:?}"
            );
        }
        let mixed = FrameLimits::default().with_keep_alive(Some(KeepAlive {
            interval: Duration::ZERO,
            timeout: Duration::MAX,
        }));
        assert_eq!(
            mixed.keep_alive(),
            Some(KeepAlive {
                interval: ms(10),
                timeout: day
            })
        );
        assert_eq!(
            FrameLimits::default().with_keep_alive(None).keep_alive(),
            None
        );
    }

    #[test]
    fn close_timeout_is_clamped_to_at_most_1_day() {
        let day = Duration::from_secs(24 * 60 * 60);
        for (asked, got) in [
            (Duration::ZERO, Duration::ZERO),
            (Duration::from_secs(2), Duration::from_secs(2)),
            (day, day),
            (Duration::MAX, day),
        ] {
            let limits = FrameLimits::default().with_close_timeout(asked);
            assert_eq!(limits.close_timeout(), got, "close timeout of {asked:?}");
        }
    }

    #[test]
    fn defaults_are_the_documented_constants() {
        let limits = FrameLimits::default();
        assert_eq!(limits.max_frame_size(), DEFAULT_MAX_FRAME_SIZE);
        assert_eq!(limits.max_message_size(), DEFAULT_MAX_MESSAGE_SIZE);
        assert_eq!(limits.write_buffer_size(), DEFAULT_WRITE_BUFFER_SIZE);
        assert_eq!(limits.read_buffer_size(), DEFAULT_READ_BUFFER_SIZE);
        assert_eq!(limits.keep_alive(), Some(DEFAULT_KEEP_ALIVE));
        assert_eq!(limits.close_timeout(), DEFAULT_CLOSE_TIMEOUT);
        assert_eq!(Config::default().frame_limits(), limits);
    }

    #[test]
    fn config_setters_delegate_to_the_frame_limits_clamps() {
        let config = Config::default()
            .with_max_frame_size(0)
            .with_max_message_size(0)
            .with_write_buffer_size(0)
            .with_read_buffer_size(usize::MAX)
            .with_keep_alive(Some(KeepAlive {
                interval: Duration::ZERO,
                timeout: Duration::ZERO,
            }))
            .with_close_timeout(Duration::MAX);
        let expected = FrameLimits::default()
            .with_max_frame_size(0)
            .with_max_message_size(0)
            .with_write_buffer_size(0)
            .with_read_buffer_size(usize::MAX)
            .with_keep_alive(Some(KeepAlive {
                interval: Duration::ZERO,
                timeout: Duration::ZERO,
            }))
            .with_close_timeout(Duration::MAX);
        assert_eq!(config.frame_limits(), expected);
        assert_eq!(expected.max_frame_size(), 1);
        assert_eq!(expected.write_buffer_size(), 1024);
        assert_eq!(expected.read_buffer_size(), 16 * 1024 * 1024);
    }
}
