//! The metric families, with the feature on.

use std::sync::{Arc, Mutex};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

/// Labels `direction` and `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConnLabels {
    pub(crate) direction: &'static str,
    pub(crate) kind: &'static str,
}

/// Labels `kind`, `stage`, `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FailureLabels {
    pub(crate) kind: &'static str,
    pub(crate) stage: &'static str,
    pub(crate) reason: &'static str,
}

/// Labels `kind`, `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindReasonLabels {
    pub(crate) kind: &'static str,
    pub(crate) reason: &'static str,
}

/// Label `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub(crate) reason: &'static str,
}

/// Label `code`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CodeLabels {
    pub(crate) code: &'static str,
}

/// Labels `kind`, `status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    pub(crate) kind: &'static str,
    pub(crate) status: &'static str,
}

type Histograms = Family<ConnLabels, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(super::duration_buckets())
}

/// Every metric of the crate.
pub(crate) struct Families {
    pub(crate) opened: Family<ConnLabels, Counter>,
    pub(crate) closed: Family<ConnLabels, Counter>,
    pub(crate) inbound_failures: Family<FailureLabels, Counter>,
    pub(crate) dial_failures: Family<KindReasonLabels, Counter>,
    pub(crate) admission_refusals: Family<ReasonLabels, Counter>,
    pub(crate) evictions: Counter,
    pub(crate) pending: Gauge,
    pub(crate) handshake_duration: Histograms,
    pub(crate) upgrade_duration: Histograms,
    pub(crate) close_sent: Family<CodeLabels, Counter>,
    pub(crate) close_received: Family<CodeLabels, Counter>,
    pub(crate) received: Family<ConnLabels, Counter>,
    pub(crate) sent: Family<ConnLabels, Counter>,
    pub(crate) http: Family<HttpLabels, Counter>,
    /// The server certificates whose expiry is reported (see [`super::certs`]).
    pub(crate) certificates: Arc<Mutex<Vec<super::certs::Watched>>>,
}

impl std::fmt::Debug for Families {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Families")
    }
}

impl Families {
    /// Registers every family in a `libp2p_websocket` sub-registry of `registry`.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let families = Families {
            opened: Family::default(),
            closed: Family::default(),
            inbound_failures: Family::default(),
            dial_failures: Family::default(),
            admission_refusals: Family::default(),
            evictions: Counter::default(),
            pending: Gauge::default(),
            handshake_duration: Family::new_with_constructor(histogram),
            upgrade_duration: Family::new_with_constructor(histogram),
            close_sent: Family::default(),
            close_received: Family::default(),
            received: Family::default(),
            sent: Family::default(),
            http: Family::default(),
            certificates: Arc::default(),
        };
        let r = registry.sub_registry_with_prefix(super::PREFIX);
        families.register_connections(r);
        families.register_traffic(r);
        r.register_collector(Box::new(super::certs::Expiry(
            families.certificates.clone(),
        )));
        families
    }

    /// The families of connections and handshakes.
    fn register_connections(&self, r: &mut Registry) {
        let families = self;
        r.register(
            "connections_opened",
            "Connections established (the transport's handshake done), by direction and kind",
            families.opened.clone(),
        );
        r.register(
            "connections_closed",
            "Established connections dropped, by direction and kind",
            families.closed.clone(),
        );
        r.register(
            "inbound_handshake_failures",
            "Inbound connections that failed before they were established, by kind, stage and reason",
            families.inbound_failures.clone(),
        );
        r.register(
            "dial_failures",
            "Dials that failed, by kind and reason",
            families.dial_failures.clone(),
        );
        r.register(
            "admission_refusals",
            "Inbound sockets closed at once by the pending-handshake limits, by reason",
            families.admission_refusals.clone(),
        );
        r.register(
            "evictions",
            "Pending inbound handshakes closed to admit a connection from another address",
            families.evictions.clone(),
        );
        r.register(
            "pending_handshakes",
            "Inbound connections admitted and not yet done with their handshake",
            families.pending.clone(),
        );
    }

    /// The families of durations, close codes, bytes and HTTP answers.
    fn register_traffic(&self, r: &mut Registry) {
        let families = self;
        r.register_with_unit(
            "handshake_duration",
            "Time of the transport's handshake (TCP connect, TLS, HTTP upgrade), by direction and kind",
            Unit::Seconds,
            families.handshake_duration.clone(),
        );
        r.register_with_unit(
            "upgrade_duration",
            "Time of the complete stack's upgrade (the transport's handshake, then noise and yamux), by direction and kind",
            Unit::Seconds,
            families.upgrade_duration.clone(),
        );
        r.register(
            "close_codes_sent",
            "WebSocket close frames queued to be sent, by close code (1000-1015, or other)",
            families.close_sent.clone(),
        );
        r.register(
            "close_codes_received",
            "WebSocket close frames received, by close code (1000-1015, 1005 for none, or other)",
            families.close_received.clone(),
        );
        r.register_with_unit(
            "received",
            "WebSocket payload bytes read by the layer above, by direction and kind",
            Unit::Bytes,
            families.received.clone(),
        );
        r.register_with_unit(
            "sent",
            "WebSocket payload bytes written by the layer above, by direction and kind",
            Unit::Bytes,
            families.sent.clone(),
        );
        r.register(
            "http_responses",
            "HTTP requests on a WebSocket port answered without an upgrade, by kind and status",
            families.http.clone(),
        );
    }
}
