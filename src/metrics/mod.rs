//! Prometheus metrics (feature `metrics`, opt-in): [`Config::with_metrics`](crate::Config::with_metrics)
//! registers them in the app's `prometheus_client` registry under the prefix `libp2p_websocket`.
//!
//! The crate-private [`Recorder`] always exists, so that the code that counts has no `#[cfg]`:
//! without the feature it is a zero-sized no-op, with it and no registry it holds `None`; every
//! method is `#[inline]` and does nothing then. The label mappings ([`inbound_labels`],
//! [`dial_reason`], [`status_label`], [`close_code_label`]) are pure functions with bounded
//! ranges: no label carries an address, a peer, a path or any other value a client picks.
//!
//! The handles the lower floors hold ([`Meter`] in each WebSocket connection and plain TCP
//! connection, [`Recorder`] clones in the admission bookkeeping) touch nothing of the crate but
//! this module's label names.

// Without the feature, most of this module is only used by its tests.
#![cfg_attr(not(feature = "metrics"), allow(dead_code))]

use std::time::Duration;

use crate::{
    addr::Kind,
    error::{Error, HandshakeError, TimeoutStage, TlsError, UpgradeStep, UpgradeViolation},
};

/// The prefix every metric of this crate is registered under (one sub-registry).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) const PREFIX: &str = "libp2p_websocket";

/// Which end opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Direction {
    /// Accepted by a listener.
    Inbound,
    /// Dialed.
    Outbound,
}

impl Direction {
    /// The label value: `inbound` or `outbound`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// The label value of a [`Kind`]: `tcp`, `ws` or `tls_ws`.
pub(crate) fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Tcp => "tcp",
        Kind::Ws => "ws",
        Kind::TlsWs => "tls_ws",
    }
}

/// Where an inbound handshake failed (the `stage` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Stage {
    /// Accepting the socket.
    Accept,
    /// Admission (the pending-handshake limits).
    Admission,
    /// Reading the PROXY protocol header.
    ProxyHeader,
    /// Telling the forms apart by the first bytes (shared ports, wrong doors).
    Routing,
    /// The TLS handshake.
    Tls,
    /// The HTTP upgrade.
    Http,
    /// Noise and yamux (the complete stack).
    Upgrade,
    /// Anything else.
    Other,
}

impl Stage {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Stage::Accept => "accept",
            Stage::Admission => "admission",
            Stage::ProxyHeader => "proxy_header",
            Stage::Routing => "routing",
            Stage::Tls => "tls",
            Stage::Http => "http",
            Stage::Upgrade => "upgrade",
            Stage::Other => "other",
        }
    }
}

/// Why a handshake failed (the `reason` label): one of a fixed set of words, or an HTTP status
/// from [`status_label`]'s list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Reason(pub(crate) &'static str);

/// The label value of an HTTP status: the number for the statuses this crate answers or meets
/// (a fixed list), `other` for the rest.
pub(crate) fn status_label(status: u16) -> &'static str {
    match status {
        101 => "101",
        200 => "200",
        204 => "204",
        301 => "301",
        302 => "302",
        307 => "307",
        308 => "308",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        426 => "426",
        429 => "429",
        431 => "431",
        500 => "500",
        501 => "501",
        502 => "502",
        503 => "503",
        504 => "504",
        505 => "505",
        _ => "other",
    }
}

/// The label value of a WebSocket close code: the codes RFC 6455 (section 7.4.1) and the IANA
/// registry name (1000-1015), `other` for the rest (application codes 3000-4999 included).
pub(crate) fn close_code_label(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1003 => "1003",
        1005 => "1005",
        1006 => "1006",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
        1010 => "1010",
        1011 => "1011",
        1012 => "1012",
        1013 => "1013",
        1014 => "1014",
        1015 => "1015",
        _ => "other",
    }
}

/// The status a listener answers for an HTTP upgrade request it refuses with `violation`.
fn violation_status(violation: &UpgradeViolation) -> &'static str {
    match violation {
        UpgradeViolation::NotGet => "405",
        UpgradeViolation::HttpVersion => "505",
        UpgradeViolation::MissingHeader(_) | UpgradeViolation::UnexpectedHeader(_) => "426",
        UpgradeViolation::KeyLength(_)
        | UpgradeViolation::MalformedHttp(_)
        | UpgradeViolation::Utf8(_)
        | UpgradeViolation::AcceptMismatch => "400",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

/// The `stage` and `reason` labels of an inbound handshake that failed with `error` (pure).
///
/// HTTP refusals are counted by the status the listener answered (`400`, `404`, `405`, `426`,
/// `431`, `505`), a refused forwarding header as `forwarded_header`; timeouts by the stage the
/// deadline cut (`routing` on a shared port, `http` for TLS and the upgrade on a one-form port,
/// `upgrade` for the complete stack's deadline).
pub(crate) fn inbound_labels(error: &Error) -> (Stage, Reason) {
    let r = Reason;
    match error {
        Error::Tls(TlsError::Accept(_)) => (Stage::Tls, r("tls_handshake")),
        Error::Tls(_) => (Stage::Tls, r("tls")),
        Error::Handshake(handshake) => (Stage::Http, r(handshake_reason(handshake))),
        Error::Timeout { stage, .. } => {
            let stage = match stage {
                TimeoutStage::AcceptShared => Stage::Routing,
                TimeoutStage::Upgrade => Stage::Upgrade,
                _ => Stage::Http,
            };
            (stage, r("timeout"))
        }
        Error::Evicted => (Stage::Admission, r("evicted")),
        Error::NotServed { .. } => (Stage::Routing, r("not_served")),
        Error::Unrecognized => (Stage::Routing, r("unrecognized")),
        Error::ProxyProtocol(_) => (Stage::ProxyHeader, r("proxy_header")),
        Error::Accept(_) => (Stage::Accept, r("io")),
        Error::Upgrade { step, .. } => (
            Stage::Upgrade,
            r(match step {
                UpgradeStep::Noise => "noise",
                UpgradeStep::Yamux => "yamux",
            }),
        ),
        _ => (Stage::Other, r("other")),
    }
}

/// The reason label of a failed HTTP upgrade (either side).
fn handshake_reason(error: &HandshakeError) -> &'static str {
    match error {
        HandshakeError::Rejected { status } => status_label(*status),
        HandshakeError::Redirect { .. } => "redirect",
        HandshakeError::HeadTooLarge { .. } => "431",
        HandshakeError::PathNotFound { .. } => "404",
        HandshakeError::InvalidKey | HandshakeError::DuplicateHeader { .. } => "400",
        HandshakeError::Forwarded(_) => "forwarded_header",
        HandshakeError::Protocol(violation) => violation_status(violation),
        HandshakeError::AnsweredWithTls | HandshakeError::AnsweredWithMultistream => {
            "wrong_protocol"
        }
        HandshakeError::UnsolicitedExtension { .. }
        | HandshakeError::UnsolicitedSubprotocol { .. } => "unsolicited_extension",
        HandshakeError::Io(_) => "io",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

/// The `reason` label of a dial that failed with `error` (pure).
pub(crate) fn dial_reason(error: &Error) -> Reason {
    let r = Reason;
    match error {
        Error::Connect { source, .. } => match source.kind() {
            std::io::ErrorKind::ConnectionRefused => r("connection_refused"),
            _ => r("connect"),
        },
        Error::Dns { .. } => r("dns"),
        Error::Dnsaddr(_) => r("dnsaddr"),
        Error::Timeout { .. } => r("timeout"),
        Error::Proxy { .. } => r("proxy"),
        Error::Tls(tls) => r(match tls {
            TlsError::UnknownIssuer { .. } => "tls_unknown_issuer",
            TlsError::NameMismatch { .. } => "tls_name_mismatch",
            TlsError::Expired { .. } => "tls_expired",
            TlsError::NotTls { .. } | TlsError::ClosedOnHello { .. } => "tls_not_tls",
            _ => "tls",
        }),
        Error::Handshake(handshake) => match handshake {
            HandshakeError::Rejected { .. }
            | HandshakeError::Redirect { .. }
            | HandshakeError::Io(_)
            | HandshakeError::AnsweredWithTls
            | HandshakeError::AnsweredWithMultistream => r(handshake_reason(handshake)),
            _ => r("http_protocol"),
        },
        Error::Upgrade { step, .. } => r(match step {
            UpgradeStep::Noise => "noise",
            UpgradeStep::Yamux => "yamux",
        }),
        _ => r("other"),
    }
}

/// The handshake and upgrade duration histograms' buckets, in seconds: 1 ms to about 16 s.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
fn duration_buckets() -> impl Iterator<Item = f64> {
    (0..15).map(|i| 0.001 * 2f64.powi(i))
}

#[cfg(feature = "metrics")]
mod on;

/// TLS server certificates' time until expiry, read at each scrape.
#[cfg(feature = "metrics")]
mod certs;

/// Records the crate's metrics, or does nothing (feature off, or no registry given). Cheap to
/// clone (one `Arc`).
#[derive(Clone, Default)]
pub(crate) struct Recorder(#[cfg(feature = "metrics")] Option<std::sync::Arc<on::Families>>);

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Recorder").field(&self.is_on()).finish()
    }
}

/// Calls `f` with the families if metrics are on.
macro_rules! with {
    ($self:ident, $f:ident => $body:expr) => {{
        #[cfg(feature = "metrics")]
        if let Some($f) = &$self.0 {
            $body;
        }
    }};
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
impl Recorder {
    /// A recorder whose metrics are registered in `registry` (see [`on::Families::register`]).
    #[cfg(feature = "metrics")]
    pub(crate) fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        Recorder(Some(std::sync::Arc::new(on::Families::register(registry))))
    }

    /// Whether metrics are recorded.
    #[inline]
    pub(crate) fn is_on(&self) -> bool {
        #[cfg(feature = "metrics")]
        return self.0.is_some();
        #[cfg(not(feature = "metrics"))]
        false
    }

    /// A connection was established (the transport's handshake done); its transport part took
    /// `handshake`. Returns the meter the connection holds (it counts bytes, close codes and the
    /// close).
    #[inline]
    pub(crate) fn opened(&self, direction: Direction, kind: Kind, handshake: Duration) -> Meter {
        #[cfg(feature = "metrics")]
        if let Some(f) = &self.0 {
            let labels = on::ConnLabels {
                direction: direction.as_str(),
                kind: kind_label(kind),
            };
            f.opened.get_or_create(&labels).inc();
            f.handshake_duration
                .get_or_create(&labels)
                .observe(handshake.as_secs_f64());
            return Meter(Some(std::sync::Arc::new(on_meter::Counters {
                received: f.received.get_or_create(&labels).clone(),
                sent: f.sent.get_or_create(&labels).clone(),
                closed: f.closed.get_or_create(&labels).clone(),
                families: f.clone(),
            })));
        }
        Meter::default()
    }

    /// An inbound connection on a listener of `kind` failed before it was established, with
    /// `error` (labels from [`inbound_labels`]).
    ///
    /// Already counted, so not to be counted again: the failures of an `Incoming` event's upgrade
    /// future (`Transport::poll` wraps it), the complete stack's failures above the transport
    /// (`upgrade.rs`), admission refusals and evictions (`admission.rs`). To be counted where
    /// they happen: failures on the route-first path that never become an event (with the
    /// listener's kind once it is known, else with [`Recorder::inbound_failed_unrouted`]).
    #[inline]
    pub(crate) fn inbound_failed(&self, kind: Kind, error: &Error) {
        self.count_inbound_failure(kind_label(kind), error);
    }

    /// An inbound connection failed before its kind was known (a PROXY header, the first bytes,
    /// a wrong door, a timeout or an eviction while it was being routed): the `kind` label is
    /// `unknown`.
    #[inline]
    pub(crate) fn inbound_failed_unrouted(&self, error: &Error) {
        self.count_inbound_failure("unknown", error);
    }

    #[inline]
    fn count_inbound_failure(&self, kind: &'static str, error: &Error) {
        with!(self, f => {
            let (stage, reason) = inbound_labels(error);
            f.inbound_failures
                .get_or_create(&on::FailureLabels {
                    kind,
                    stage: stage.as_str(),
                    reason: reason.0,
                })
                .inc()
        });
    }

    /// A dial of `kind` failed with `error` (label from [`dial_reason`]).
    #[inline]
    pub(crate) fn dial_failed(&self, kind: Kind, error: &Error) {
        with!(self, f => f.dial_failures
            .get_or_create(&on::KindReasonLabels {
                kind: kind_label(kind),
                reason: dial_reason(error).0,
            })
            .inc());
    }

    /// An inbound socket was refused by the admission limits; `reason` is
    /// `admission::Refusal::label` (`address_full` or `listener_full`).
    #[inline]
    pub(crate) fn admission_refused(&self, reason: &'static str) {
        with!(self, f => f.admission_refusals
            .get_or_create(&on::ReasonLabels { reason })
            .inc());
    }

    /// A pending handshake was evicted to make room.
    #[inline]
    pub(crate) fn evicted(&self) {
        with!(self, f => f.evictions.inc());
    }

    /// The pending handshakes changed by `delta` (+1 admitted, -1 done, dropped or evicted).
    #[inline]
    pub(crate) fn pending(&self, delta: i64) {
        with!(self, f => f.pending.inc_by(delta));
    }

    /// The complete stack's upgrade (transport handshake, noise, yamux) of a connection took
    /// `took`.
    #[inline]
    pub(crate) fn upgraded(&self, direction: Direction, kind: Kind, took: Duration) {
        with!(self, f => f.upgrade_duration
            .get_or_create(&on::ConnLabels {
                direction: direction.as_str(),
                kind: kind_label(kind),
            })
            .observe(took.as_secs_f64()));
    }

    /// A listener of `kind` answered an HTTP request that was not an upgrade with `status`.
    // Called by the plain HTTP responder on the WebSocket port (in the works).
    #[allow(dead_code)]
    #[inline]
    pub(crate) fn http_answered(&self, kind: Kind, status: u16) {
        with!(self, f => f.http
            .get_or_create(&on::HttpLabels {
                kind: kind_label(kind),
                status: status_label(status),
            })
            .inc());
    }

    /// Reports the expiry of the certificate chains `chains` gives (read at each scrape), once per
    /// `id` (the certificate's identity).
    #[inline]
    pub(crate) fn watch_certificate(
        &self,
        id: usize,
        chains: impl Fn() -> Vec<Vec<rustls_pki_types::CertificateDer<'static>>> + Send + Sync + 'static,
    ) {
        with!(self, f => {
            let mut watched = f.certificates.lock().unwrap_or_else(|e| e.into_inner());
            if !watched.iter().any(|(known, _)| *known == id) {
                watched.push((id, std::sync::Arc::new(chains)));
            }
        });
    }
}

#[cfg(feature = "metrics")]
mod on_meter {
    use prometheus_client::metrics::counter::Counter;

    /// One connection's counters, resolved once when it opens.
    #[derive(Debug)]
    pub(crate) struct Counters {
        pub(crate) received: Counter,
        pub(crate) sent: Counter,
        pub(crate) closed: Counter,
        pub(crate) families: std::sync::Arc<super::on::Families>,
    }
}

/// One established connection's counters (bytes, close codes, the close), or nothing. Dropped
/// with its connection, it counts the close (one per connection: it is not `Clone`).
#[derive(Default)]
pub(crate) struct Meter(#[cfg(feature = "metrics")] Option<std::sync::Arc<on_meter::Counters>>);

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Meter")
    }
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
impl Meter {
    /// `n` payload bytes were read (one relaxed atomic add).
    #[inline]
    pub(crate) fn received(&self, n: usize) {
        with!(self, c => c.received.inc_by(n as u64));
    }

    /// `n` payload bytes were written (one relaxed atomic add).
    #[inline]
    pub(crate) fn sent(&self, n: usize) {
        with!(self, c => c.sent.inc_by(n as u64));
    }

    /// The WebSocket connection is being dropped: counts the close codes it queued (`sent`) and
    /// received (`received`: 1005 for a close frame without a code).
    #[inline]
    pub(crate) fn close_codes(&self, sent: Option<u16>, received: Option<u16>) {
        with!(self, c => {
            if let Some(code) = sent {
                c.families
                    .close_sent
                    .get_or_create(&on::CodeLabels { code: close_code_label(code) })
                    .inc();
            }
            if let Some(code) = received {
                c.families
                    .close_received
                    .get_or_create(&on::CodeLabels { code: close_code_label(code) })
                    .inc();
            }
        });
    }
}

impl Drop for Meter {
    #[inline]
    fn drop(&mut self) {
        with!(self, c => c.closed.inc());
    }
}

#[cfg(test)]
mod tests;
