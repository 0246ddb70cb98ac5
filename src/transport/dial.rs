//! Dialing: DNS (of the family the address asks for), TCP (directly or through a forward proxy's
//! tunnel), then TLS and the HTTP upgrade for WebSocket addresses.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use futures_rustls::TlsConnector;

use super::{Output, Shared, Socket, TcpConnection};
use libp2p_core::Multiaddr;

use crate::{
    addr::{Addr, DnsFamily, Host, Kind, TcpAddr, WsAddr},
    dns::DnsaddrError,
    error::{Error, TimeoutStage},
    framed::Connection,
    handshake,
    proto::Role,
    provider::{self, Provider},
    proxy::{self, ProxyError, TunnelTarget},
    tls_config,
};

/// The resolved addresses of the family the address asks for (`/dns4`, `/dns6`), or a DNS error.
pub(super) fn usable_addresses(
    name: &str,
    family: DnsFamily,
    resolved: io::Result<Vec<SocketAddr>>,
) -> Result<Vec<SocketAddr>, Error> {
    let dns_error = |source| Error::Dns {
        name: name.to_string(),
        source,
    };
    let usable: Vec<_> = resolved
        .map_err(dns_error)?
        .into_iter()
        .filter(|a| family.admits(&a.ip()))
        .collect();
    if usable.is_empty() {
        return Err(dns_error(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no address of the requested family ({family:?})"),
        )));
    }
    Ok(usable)
}

/// Resolves `name`: with the system resolver (with `/etc/hosts`), or with the configured name
/// servers when there are some ([`DnsConfig::with_name_servers`](crate::dns::DnsConfig)).
async fn resolve<P: Provider>(
    shared: &Shared,
    name: &str,
    port: u16,
) -> io::Result<Vec<SocketAddr>> {
    if shared.config.dns.name_servers().is_none() {
        return P::resolve(name.to_string(), port).await;
    }
    let ips = shared.resolver::<P>().ip::<P>(name).await?;
    Ok(ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// Resolves `host` (if a name) and connects to the first address that answers; sets
/// `TCP_NODELAY` as configured.
async fn connect<P: Provider>(shared: &Shared, host: &Host, port: u16) -> Result<P::Stream, Error> {
    let config = &shared.config;
    let candidates = match host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        Host::Dns { name, family } => {
            usable_addresses(name, *family, resolve::<P>(shared, name, port).await)?
        }
    };
    let mut last_error = None;
    for candidate in candidates {
        match P::connect(candidate).await {
            Ok(stream) => {
                if let Err(e) = P::set_nodelay(&stream, config.nodelay) {
                    tracing::debug!(%e, "could not set TCP_NODELAY");
                }
                return Ok(stream);
            }
            Err(source) => {
                tracing::debug!(addr = %candidate, %source, "connect failed");
                last_error = Some(Error::Connect {
                    addr: candidate,
                    source,
                });
            }
        }
    }
    Err(last_error.unwrap_or_else(|| Error::Dns {
        name: match host {
            Host::Dns { name, .. } => name.clone(),
            Host::Ip(ip) => ip.to_string(),
        },
        source: io::ErrorKind::NotFound.into(),
    }))
}

/// Opens the TCP stream of a dial of `kind` to `host:port`: directly, or through the proxy the
/// configuration names for it (a tunnel opened by `deadline`).
async fn open<P: Provider>(
    shared: &Shared,
    host: &Host,
    port: u16,
    kind: Kind,
    deadline: Instant,
) -> Result<P::Stream, Error> {
    let config = &shared.config;
    let Some(proxy) = config.proxy.route(host, kind) else {
        return connect::<P>(shared, host, port).await;
    };
    let failed = |source| Error::Proxy {
        proxy: proxy.to_string(),
        source,
    };
    let tunnel = async {
        let target = match host {
            Host::Ip(ip) => TunnelTarget::Addr(SocketAddr::new(*ip, port)),
            Host::Dns { name, .. } if proxy.resolves_names() => {
                TunnelTarget::Name(name.clone(), port)
            }
            Host::Dns { name, family } => {
                let resolved =
                    usable_addresses(name, *family, resolve::<P>(shared, name, port).await)?;
                TunnelTarget::Addr(resolved[0])
            }
        };
        let proxy_host = match proxy.host().parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Dns {
                name: proxy.host().to_string(),
                family: DnsFamily::Any,
            },
        };
        let mut tcp = match connect::<P>(shared, &proxy_host, proxy.port()).await {
            Ok(tcp) => tcp,
            Err(Error::Connect { source, .. }) => return Err(failed(ProxyError::Connect(source))),
            Err(Error::Dns { source, .. }) => return Err(failed(ProxyError::Resolve(source))),
            Err(other) => return Err(other),
        };
        tracing::debug!(%proxy, ?target, "opening a tunnel");
        proxy::tunnel(&mut tcp, proxy, &target, config.max_head_size)
            .await
            .map_err(failed)?;
        Ok(tcp)
    };
    match provider::timeout_at::<P, _>(deadline, tunnel).await {
        Some(result) => result,
        None => Err(failed(ProxyError::Timeout {
            after: config.handshake_timeout,
        })),
    }
}

pub(super) async fn dial_tcp<P: Provider>(
    shared: Arc<Shared>,
    target: TcpAddr,
    deadline: Instant,
) -> Result<Output<P::Stream>, Error> {
    let tcp = open::<P>(&shared, &target.host, target.port, Kind::Tcp, deadline).await?;
    Ok(Output::Tcp(TcpConnection::new(tcp)))
}

pub(super) async fn dial_ws<P: Provider>(
    shared: Arc<Shared>,
    target: WsAddr,
    deadline: Instant,
) -> Result<Output<P::Stream>, Error> {
    let config = &shared.config;
    let kind = if target.is_secure() {
        Kind::TlsWs
    } else {
        Kind::Ws
    };
    let tcp = open::<P>(&shared, &target.host, target.port, kind, deadline).await?;
    let mut stream = if target.is_secure() {
        let name = target.server_name();
        let server_name = tls_config::server_name(&name)?;
        let connector = TlsConnector::from(shared.client_tls()?);
        let tls = connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| tls_config::classify_client_error(&name, e))?;
        Socket::Tls(Box::new(futures_rustls::TlsStream::Client(tls)))
    } else {
        Socket::Plain(tcp)
    };

    let leftover = handshake::connect(
        &mut stream,
        config.max_head_size,
        &target.host_header(),
        &target.request_target(),
    )
    .await?;
    Ok(Output::WebSocket(
        Connection::new(stream, Role::Client, config.frame, &leftover).with_timers(P::timer),
    ))
}

/// Dials `target` (the caller bounds it by `deadline`).
pub(super) async fn dial_addr<P: Provider>(
    shared: Arc<Shared>,
    target: Addr,
    deadline: Instant,
) -> Result<Output<P::Stream>, Error> {
    match target {
        Addr::Ws(target) => dial_ws::<P>(shared, target, deadline).await,
        Addr::Tcp(target) => dial_tcp::<P>(shared, target, deadline).await,
    }
}

/// Dials a `/dnsaddr/<name>[/p2p/<id>]` address: resolves it ([`crate::dns::resolve_dnsaddr`]),
/// then dials the addresses it gives that this transport serves, in their order, until one
/// connects; all within the handshake timeout.
pub(super) async fn dial_dnsaddr<P: Provider>(
    shared: Arc<Shared>,
    addr: Multiaddr,
    name: String,
) -> Result<Output<P::Stream>, Error> {
    let timeout = shared.config.handshake_timeout;
    let deadline = Instant::now() + timeout;
    let dial = async {
        let resolver = shared.resolver::<P>().clone();
        let candidates = crate::dns::resolve_dnsaddr(&addr, &shared.config.dns, |name| {
            let resolver = resolver.clone();
            async move { resolver.txt::<P>(&name).await }
        })
        .await
        .map_err(Error::Dnsaddr)?;
        let (mut last_error, count) = (None, candidates.len());
        for candidate in candidates {
            let target = match Addr::parse(&candidate) {
                Ok(target) if !dialable(&target) => continue,
                Ok(target) => target,
                Err(error) => {
                    tracing::debug!(%addr, %candidate, %error, "not an address of this transport; skipped");
                    continue;
                }
            };
            tracing::debug!(%addr, %candidate, "dialing");
            let (kind, start) = (target.kind(), Instant::now());
            let result = dial_addr::<P>(shared.clone(), target, deadline).await;
            match shared.config.metrics.dialed(result, kind, start) {
                Ok(output) => return Ok(output),
                Err(error) => {
                    tracing::debug!(%candidate, error = %crate::error::Chain(&error), "dial failed");
                    last_error = Some(error);
                }
            }
        }
        Err(
            last_error.unwrap_or(Error::Dnsaddr(DnsaddrError::NoUsableAddress {
                name,
                count,
            })),
        )
    };
    match provider::timeout_at::<P, _>(deadline, dial).await {
        Some(result) => result,
        None => Err(Error::Timeout {
            stage: TimeoutStage::DialByName,
            after: timeout,
        }),
    }
}

/// Whether a parsed address can be dialed (not an unspecified IP, not port 0).
pub(super) fn dialable(target: &Addr) -> bool {
    !matches!(target.host(), Host::Ip(ip) if ip.is_unspecified()) && target.port() != 0
}
