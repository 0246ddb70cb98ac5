//! The inbound path's decisions, pure: for each accepted connection, which path it takes
//! ([`Path`]), when it must be done ([`deadline`]), whom to charge it to once a trusted proxy
//! names the client ([`charge_named`]), and where its first bytes send it ([`route`]: serve it as
//! kind K, or refuse it with a sign, or close it).
//!
//! The IO around them lives in `port/incoming.rs` (the accept side of a [`Port`](super::port))
//! and `accept.rs` (reading a PROXY header, reading the first bytes, TLS, the HTTP upgrade);
//! these functions are the only places that decide. A new route (a plain HTTP responder on the
//! port, an ACME challenge on the TLS port) is one more [`Route`] variant, decided here and
//! tested here.

use std::{net::IpAddr, time::Instant};

use crate::{
    addr::Kind,
    admission::{Charge, Refusal},
    classify::{self, Served, Verdict},
    config::Config,
    error::Error,
    forwarded::{ForwardedError, ProxyProtocol},
};

/// What the reverse-proxy settings say about one accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Trust {
    /// The peer is a trusted reverse proxy.
    pub(super) trusted: bool,
    /// Whether a PROXY protocol header is read first.
    pub(super) proxy_protocol: ProxyProtocol,
    /// What the HTTP upgrade does with forwarding headers when they are not believed.
    pub(super) untrusted_headers: Inspect,
}

/// What an upgrade does with the forwarding headers of the request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Inspect {
    /// No reverse proxies are configured.
    Off,
    /// Not from a trusted proxy: forwarding headers are ignored (logged at debug).
    Ignore,
    /// From a trusted proxy: the believed headers name the client.
    Believe,
}

impl Trust {
    /// The trust rules for a connection from `peer` on local port `port`.
    pub(super) fn of(config: &Config, peer: IpAddr, port: u16) -> Self {
        let reverse = config.reverse_proxy.as_ref();
        Trust {
            trusted: reverse.is_some_and(|r| r.trusts(peer)),
            proxy_protocol: reverse.map_or(ProxyProtocol::Off, |r| r.proxy_protocol_for(port)),
            untrusted_headers: match reverse {
                None => Inspect::Off,
                Some(_) => Inspect::Ignore,
            },
        }
    }

    /// Whether the forwarding headers of a request from `peer` (the trusted proxy itself, or the
    /// client a PROXY header named) are believed.
    pub(super) fn believes_headers(&self, config: &Config, peer: IpAddr) -> bool {
        self.trusted
            && config
                .reverse_proxy
                .as_ref()
                .is_some_and(|r| r.trusts(peer) && r.headers().any())
    }
}

/// The two paths an accepted connection can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Path {
    /// A socket serving only `/tcp`, without proxies: reported to its listener at once; the
    /// upgrade future reads the first bytes and routes.
    Direct,
    /// Routed before it is reported, and for the WebSocket kinds its request head read too (a
    /// plain HTTP request is answered and never reported). `lone`: the socket's one listener,
    /// when no proxy is involved: its failures (a timeout, an eviction, a refusal) are reported
    /// to it, and bytes that match no form are served by it.
    RouteFirst { lone: Option<Kind> },
}

/// Which path a connection takes on a socket serving `only` that kind (one listener) or several.
pub(super) fn path(only: Option<Kind>, trust: Trust) -> Path {
    let proxied = trust.trusted || trust.proxy_protocol != ProxyProtocol::Off;
    match only.filter(|_| !proxied) {
        Some(Kind::Tcp) => Path::Direct,
        lone => Path::RouteFirst { lone },
    }
}

/// The one deadline of an inbound connection, counted from `accepted` whatever path it takes:
/// the handshake timeout bounds routing, a PROXY header, TLS and the HTTP upgrade; with the
/// upgraded stack (`upgrade_deadline`, the admission ticket's), the earlier of the two.
pub(super) fn deadline(
    config: &Config,
    accepted: Instant,
    upgrade_deadline: Option<Instant>,
) -> Instant {
    let handshake = accepted + config.handshake_timeout;
    upgrade_deadline.map_or(handshake, |upgrade| handshake.min(upgrade))
}

/// Charges a pending handshake to the client a trusted proxy named (in a PROXY header or a
/// believed forwarding header), at once: before anything else the client sends (or does not).
pub(super) fn charge_named(charge: &Charge, client: IpAddr) -> Result<(), Refusal> {
    charge.to(client)
}

/// What a connection's first bytes do when they match no form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unrecognised {
    /// Served by the listener of this kind, which answers as it always did (an HTTP 400, a TLS
    /// alert, a failed multistream-select negotiation): a socket serving one kind.
    ServeAs(Kind),
    /// Closed without an answer: a socket routing before it reports.
    Close,
}

/// Where a connection goes.
#[derive(Debug)]
pub(super) enum Route {
    /// Served by the listener of this kind.
    Serve(Kind),
    /// Refused: `sign` (maybe empty: close without an answer) is sent, then the connection
    /// closes; `error` says why.
    Refuse { sign: &'static [u8], error: Error },
}

/// Routes a connection by its first bytes: `verdict` ([`classify`](classify::classify)'s, from
/// at most [`MAX_PREFIX`](classify::MAX_PREFIX) bytes), `proxy_header` (they start a PROXY
/// header where none is read), the kinds the socket serves and what unrecognised bytes do.
pub(super) fn route(
    verdict: Verdict,
    proxy_header: bool,
    served: Served,
    unrecognised: Unrecognised,
) -> Route {
    if proxy_header {
        return Route::Refuse {
            sign: &[],
            error: Error::ProxyProtocol(ForwardedError::ProxyHeaderUnexpected),
        };
    }
    match (verdict, unrecognised) {
        (Verdict::Known(class), _) if served.has(class.kind()) => Route::Serve(class.kind()),
        (Verdict::Known(class), _) => Route::Refuse {
            sign: classify::refusal_sign(class, served),
            error: Error::NotServed { spoke: class },
        },
        (_, Unrecognised::ServeAs(kind)) => Route::Serve(kind),
        (_, Unrecognised::Close) => Route::Refuse {
            sign: &[],
            error: Error::Unrecognized,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::classify::{Class, HTTP_NOT_TLS, MULTISTREAM_NA, TLS_ALERT};

    fn served(kinds: &[Kind]) -> Served {
        kinds.iter().fold(Served::default(), |s, k| s.with(*k))
    }

    const ALL: [Kind; 3] = [Kind::Tcp, Kind::Ws, Kind::TlsWs];

    fn refused(route: Route) -> Option<&'static [u8]> {
        match route {
            Route::Refuse { sign, .. } => Some(sign),
            Route::Serve(_) => None,
        }
    }

    #[test]
    fn a_served_kind_is_served_on_either_path() {
        for kind in ALL {
            let class = [Class::Tcp, Class::Http, Class::Tls]
                .into_iter()
                .find(|c| c.kind() == kind)
                .unwrap();
            for unrecognised in [Unrecognised::Close, Unrecognised::ServeAs(kind)] {
                let route = route(Verdict::Known(class), false, served(&[kind]), unrecognised);
                assert!(matches!(route, Route::Serve(k) if k == kind), "{route:?}");
            }
        }
    }

    #[test]
    fn a_kind_not_served_is_refused_with_the_sign_its_client_understands() {
        let only_tcp = served(&[Kind::Tcp]);
        let http = route(
            Verdict::Known(Class::Http),
            false,
            only_tcp,
            Unrecognised::ServeAs(Kind::Tcp),
        );
        assert!(matches!(
            &http,
            Route::Refuse {
                error: Error::NotServed { .. },
                ..
            }
        ));
        assert_eq!(refused(http), Some(MULTISTREAM_NA));
        let only_ws = served(&[Kind::Ws]);
        let hello = route(
            Verdict::Known(Class::Tls),
            false,
            only_ws,
            Unrecognised::Close,
        );
        assert_eq!(refused(hello), Some(HTTP_NOT_TLS));
        let only_tls = served(&[Kind::TlsWs]);
        let http = route(
            Verdict::Known(Class::Http),
            false,
            only_tls,
            Unrecognised::Close,
        );
        assert_eq!(refused(http), Some(TLS_ALERT));
        let ms = route(
            Verdict::Known(Class::Tcp),
            false,
            only_ws,
            Unrecognised::Close,
        );
        assert_eq!(refused(ms), Some(&[][..]));
    }

    #[test]
    fn unrecognised_bytes_go_to_the_one_listener_or_are_closed_without_an_answer() {
        for verdict in [Verdict::Unknown, Verdict::NeedMore] {
            let one = route(
                verdict,
                false,
                served(&[Kind::Ws]),
                Unrecognised::ServeAs(Kind::Ws),
            );
            assert!(matches!(one, Route::Serve(Kind::Ws)));
            let shared = route(verdict, false, served(&ALL), Unrecognised::Close);
            assert!(matches!(
                &shared,
                Route::Refuse {
                    error: Error::Unrecognized,
                    ..
                }
            ));
            assert_eq!(refused(shared), Some(&[][..]));
        }
    }

    #[test]
    fn an_unexpected_proxy_header_is_closed_without_an_answer_whatever_else_it_looks_like() {
        for verdict in [Verdict::Known(Class::Http), Verdict::Unknown] {
            for unrecognised in [Unrecognised::Close, Unrecognised::ServeAs(Kind::Ws)] {
                let route = route(verdict, true, served(&ALL), unrecognised);
                assert!(matches!(
                    &route,
                    Route::Refuse {
                        error: Error::ProxyProtocol(ForwardedError::ProxyHeaderUnexpected),
                        ..
                    }
                ));
                assert_eq!(refused(route), Some(&[][..]));
            }
        }
    }

    fn trust(trusted: bool, proxy_protocol: ProxyProtocol) -> Trust {
        Trust {
            trusted,
            proxy_protocol,
            untrusted_headers: Inspect::Off,
        }
    }

    #[test]
    fn only_one_listener_without_proxies_takes_the_direct_path() {
        let plain = trust(false, ProxyProtocol::Off);
        assert_eq!(path(Some(Kind::Tcp), plain), Path::Direct);
        let first = |lone| Path::RouteFirst { lone };
        assert_eq!(path(None, plain), first(None));
        assert_eq!(
            path(Some(Kind::Tcp), trust(true, ProxyProtocol::Off)),
            first(None)
        );
        assert_eq!(
            path(Some(Kind::Tcp), trust(false, ProxyProtocol::Optional)),
            first(None)
        );
    }

    #[test]
    fn a_websocket_listener_reads_the_request_head_before_it_reports() {
        let plain = trust(false, ProxyProtocol::Off);
        for kind in [Kind::Ws, Kind::TlsWs] {
            let lone = Path::RouteFirst { lone: Some(kind) };
            assert_eq!(path(Some(kind), plain), lone);
            let proxied = path(Some(kind), trust(true, ProxyProtocol::Off));
            assert_eq!(proxied, Path::RouteFirst { lone: None });
        }
    }

    #[test]
    fn the_deadline_counts_from_accept_and_takes_the_earlier_bound() {
        let config = Config::default().with_handshake_timeout(Duration::from_secs(8));
        let accepted = Instant::now();
        let handshake = accepted + Duration::from_secs(8);
        assert_eq!(deadline(&config, accepted, None), handshake);
        let sooner = accepted + Duration::from_secs(3);
        assert_eq!(deadline(&config, accepted, Some(sooner)), sooner);
        let later = accepted + Duration::from_secs(30);
        assert_eq!(deadline(&config, accepted, Some(later)), handshake);
    }
}
