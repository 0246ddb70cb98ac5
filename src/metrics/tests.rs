use std::io;

use super::*;
use crate::{classify::Class, error::SharedIoError};

fn labels(error: Error) -> (&'static str, &'static str) {
    let (stage, reason) = inbound_labels(&error);
    (stage.as_str(), reason.0)
}

#[test]
fn inbound_failures_map_to_bounded_stage_and_reason() {
    let io = || io::Error::other("x");
    assert_eq!(
        labels(Error::Tls(TlsError::Accept(io()))),
        ("tls", "tls_handshake")
    );
    assert_eq!(
        labels(Error::Handshake(HandshakeError::PathNotFound {
            requested: "/a".into(),
            served: "/".into()
        })),
        ("http", "404")
    );
    assert_eq!(
        labels(Error::Handshake(HandshakeError::HeadTooLarge { limit: 1 })),
        ("http", "431")
    );
    assert_eq!(
        labels(Error::Handshake(HandshakeError::Protocol(
            UpgradeViolation::NotGet
        ))),
        ("http", "405")
    );
    assert_eq!(
        labels(Error::Handshake(HandshakeError::Protocol(
            UpgradeViolation::MissingHeader("upgrade".into())
        ))),
        ("http", "426")
    );
    assert_eq!(
        labels(Error::Handshake(HandshakeError::InvalidKey)),
        ("http", "400")
    );
    assert_eq!(
        labels(Error::Handshake(HandshakeError::Io(io()))),
        ("http", "io")
    );
    assert_eq!(
        labels(Error::Timeout {
            stage: TimeoutStage::AcceptShared,
            after: Duration::from_secs(1)
        }),
        ("routing", "timeout")
    );
    assert_eq!(
        labels(Error::Timeout {
            stage: TimeoutStage::Accept,
            after: Duration::from_secs(1)
        }),
        ("http", "timeout")
    );
    assert_eq!(
        labels(Error::Timeout {
            stage: TimeoutStage::Upgrade,
            after: Duration::from_secs(1)
        }),
        ("upgrade", "timeout")
    );
    assert_eq!(labels(Error::Evicted), ("admission", "evicted"));
    assert_eq!(
        labels(Error::NotServed { spoke: Class::Tls }),
        ("routing", "not_served")
    );
    assert_eq!(labels(Error::Unrecognized), ("routing", "unrecognized"));
    assert_eq!(
        labels(Error::Accept(SharedIoError(std::sync::Arc::new(io())))),
        ("accept", "io")
    );
    assert_eq!(
        labels(Error::Upgrade {
            step: UpgradeStep::Yamux,
            source: Box::new(io())
        }),
        ("upgrade", "yamux")
    );
}

#[test]
fn dial_failures_map_to_bounded_reasons() {
    let refused = Error::Connect {
        addr: "127.0.0.1:1".parse().unwrap(),
        source: io::ErrorKind::ConnectionRefused.into(),
    };
    assert_eq!(dial_reason(&refused).0, "connection_refused");
    let reset = Error::Connect {
        addr: "127.0.0.1:1".parse().unwrap(),
        source: io::ErrorKind::ConnectionReset.into(),
    };
    assert_eq!(dial_reason(&reset).0, "connect");
    let name = || "example.com".to_string();
    assert_eq!(
        dial_reason(&Error::Tls(TlsError::UnknownIssuer {
            server_name: name()
        }))
        .0,
        "tls_unknown_issuer"
    );
    assert_eq!(
        dial_reason(&Error::Tls(TlsError::NameMismatch {
            server_name: name()
        }))
        .0,
        "tls_name_mismatch"
    );
    assert_eq!(
        dial_reason(&Error::Handshake(HandshakeError::Rejected { status: 404 })).0,
        "404"
    );
    assert_eq!(
        dial_reason(&Error::Handshake(HandshakeError::Rejected { status: 599 })).0,
        "other"
    );
    assert_eq!(
        dial_reason(&Error::Handshake(HandshakeError::Protocol(
            UpgradeViolation::AcceptMismatch
        )))
        .0,
        "http_protocol"
    );
    assert_eq!(
        dial_reason(&Error::Timeout {
            stage: TimeoutStage::DialWebSocket,
            after: Duration::from_secs(1)
        })
        .0,
        "timeout"
    );
}

#[test]
fn statuses_and_close_codes_have_a_fixed_set_of_labels() {
    let statuses: std::collections::HashSet<_> = (0..=u16::MAX).map(status_label).collect();
    assert!(statuses.len() <= 25, "{}", statuses.len());
    assert_eq!(status_label(404), "404");
    assert_eq!(status_label(418), "other");
    let codes: std::collections::HashSet<_> = (0..=u16::MAX).map(close_code_label).collect();
    assert_eq!(codes.len(), 16);
    assert_eq!(close_code_label(1000), "1000");
    assert_eq!(close_code_label(1004), "other");
    assert_eq!(close_code_label(4000), "other");
}

#[test]
fn an_unset_recorder_does_nothing() {
    let recorder = Recorder::default();
    assert!(!recorder.is_on());
    recorder.inbound_failed(Kind::Ws, &Error::Evicted);
    recorder.dial_failed(Kind::Ws, &Error::Evicted);
    recorder.pending(1);
    let meter = recorder.opened(Direction::Outbound, Kind::Ws, Duration::ZERO);
    meter.received(10);
    meter.close_codes(Some(1000), None);
}

#[cfg(feature = "metrics")]
#[test]
fn a_registered_recorder_counts_under_one_prefix() {
    let mut registry = prometheus_client::registry::Registry::default();
    let recorder = Recorder::register(&mut registry);
    let meter = recorder.opened(Direction::Inbound, Kind::TlsWs, Duration::from_millis(3));
    meter.received(5);
    meter.sent(7);
    meter.close_codes(Some(1000), Some(1001));
    drop(meter);
    recorder.inbound_failed(Kind::Ws, &Error::Evicted);
    recorder.inbound_failed_unrouted(&Error::Unrecognized);
    recorder.admission_refused("address_full");
    recorder.evicted();
    recorder.pending(1);
    recorder.http_answered(Kind::Ws, 200);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        r#"libp2p_websocket_connections_opened_total{direction="inbound",kind="tls_ws"} 1"#,
        r#"libp2p_websocket_connections_closed_total{direction="inbound",kind="tls_ws"} 1"#,
        r#"libp2p_websocket_received_bytes_total{direction="inbound",kind="tls_ws"} 5"#,
        r#"libp2p_websocket_sent_bytes_total{direction="inbound",kind="tls_ws"} 7"#,
        r#"libp2p_websocket_close_codes_sent_total{code="1000"} 1"#,
        r#"libp2p_websocket_close_codes_received_total{code="1001"} 1"#,
        r#"libp2p_websocket_inbound_handshake_failures_total{kind="ws",stage="admission",reason="evicted"} 1"#,
        r#"libp2p_websocket_inbound_handshake_failures_total{kind="unknown",stage="routing",reason="unrecognized"} 1"#,
        r#"libp2p_websocket_admission_refusals_total{reason="address_full"} 1"#,
        r#"libp2p_websocket_evictions_total 1"#,
        r#"libp2p_websocket_pending_handshakes 1"#,
        r#"libp2p_websocket_http_responses_total{kind="ws",status="200"} 1"#,
        r#"libp2p_websocket_handshake_duration_seconds_count{direction="inbound",kind="tls_ws"} 1"#,
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("libp2p_websocket_"), "{line}");
    }
}
