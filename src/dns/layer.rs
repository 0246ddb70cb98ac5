//! [`Dns`]: a DNS layer over an application's transports (this one among them) that resolves
//! `/dnsaddr` for all, `/dns*` for the others, and passes WebSocket addresses on by name.

use std::{
    io,
    marker::PhantomData,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{future::BoxFuture, FutureExt, TryFutureExt};
use libp2p_core::{
    multiaddr::{Multiaddr, Protocol},
    transport::{DialOpts, ListenerId, TransportError, TransportEvent},
    Transport,
};

use super::{dnsaddr_name, resolve_dnsaddr, DnsConfig, Resolver};
use crate::{
    config::Config,
    error::{Error, TimeoutStage},
    provider::{self, Provider},
};

/// A DNS layer for an application's other transports beside this one, on runtime `P`; use
/// `libp2p_ws::tokio::Dns` / `libp2p_ws::async_std::Dns`, or `constructor_with`, which builds it
/// around this transport and the application's others.
///
/// - `/dnsaddr/<name>[/p2p/<id>]`: resolved here (as this transport does it itself), then each
///   address it gives is dialed in turn through the inner transport, until one connects;
/// - `/dns*` addresses that are WebSocket addresses (`/ws`, `/wss`, `/tls/ws`): passed on as they
///   are, so that this transport resolves them and keeps the name for TLS (SNI, certificate
///   verification) and the HTTP `Host` header;
/// - other `/dns*` addresses (QUIC, libp2p-tcp): the name resolved here (of the family `/dns4` or
///   `/dns6` asks for), then each address dialed in turn through the inner transport;
/// - everything else, listening and events: passed through.
///
/// Lookups use [`Config::with_dns`]'s name servers (the system's by default) and each dial that
/// resolves is bounded by the handshake timeout. Errors are `io::Error`s; this crate's errors in
/// them are found with [`Error::find`].
pub struct Dns<T, P> {
    inner: Arc<Mutex<T>>,
    resolver: Resolver,
    dns: DnsConfig,
    timeout: Duration,
    provider: PhantomData<fn() -> P>,
}

impl<T, P: Provider> Dns<T, P> {
    /// Wraps `inner` (the application's transports, this one among them), with the DNS settings
    /// and handshake timeout of `config`.
    pub fn new(inner: T, config: &Config) -> Self {
        Dns {
            inner: Arc::new(Mutex::new(inner)),
            resolver: P::dns_resolver(&config.dns),
            dns: config.dns.clone(),
            timeout: config.handshake_timeout,
            provider: PhantomData,
        }
    }
}

impl<T, P> std::fmt::Debug for Dns<T, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").field("dns", &self.dns).finish()
    }
}

/// What the layer does with an address it is asked to dial.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// Pass it on as it is.
    Inner,
    /// Resolve the `/dnsaddr` first.
    Dnsaddr(String),
    /// Resolve the first `/dns*` name (of the family `/dns4`/`/dns6` ask for) and put its
    /// addresses in its place.
    Name(String, Family),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Family {
    Any,
    V4,
    V6,
}

/// Whether an address is a WebSocket address (this transport resolves those, keeping the name).
fn is_websocket(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Protocol::Ws(_) | Protocol::Wss(_)))
}

fn route(addr: &Multiaddr) -> Result<Route, Multiaddr> {
    if let Some(name) = dnsaddr_name(addr) {
        return name.map(Route::Dnsaddr).map_err(|_| addr.clone());
    }
    if is_websocket(addr) {
        return Ok(Route::Inner);
    }
    Ok(match addr.iter().next() {
        Some(Protocol::Dns(name)) => Route::Name(name.to_string(), Family::Any),
        Some(Protocol::Dns4(name)) => Route::Name(name.to_string(), Family::V4),
        Some(Protocol::Dns6(name)) => Route::Name(name.to_string(), Family::V6),
        _ => Route::Inner,
    })
}

/// `addr` with its first component replaced by `ip`.
fn with_ip(addr: &Multiaddr, ip: IpAddr) -> Multiaddr {
    let first = match ip {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    std::iter::once(first).chain(addr.iter().skip(1)).collect()
}

/// The inner transport's error as an `io::Error` (unwrapped when it is one).
fn to_io<E: std::error::Error + Send + Sync + 'static>(error: E) -> io::Error {
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(error);
    match boxed.downcast::<io::Error>() {
        Ok(io) => *io,
        Err(other) => io::Error::other(other),
    }
}

fn lock<T>(inner: &Mutex<T>) -> MutexGuard<'_, T> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T, P> Transport for Dns<T, P>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: Send + 'static,
    T::Error: std::error::Error + Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
    P: Provider,
{
    type Output = T::Output;
    type Error = io::Error;
    type ListenerUpgrade = BoxFuture<'static, Result<T::Output, io::Error>>;
    type Dial = BoxFuture<'static, Result<T::Output, io::Error>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<io::Error>> {
        lock(&self.inner)
            .listen_on(id, addr)
            .map_err(|e| e.map(to_io))
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        lock(&self.inner).remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<io::Error>> {
        // What to resolve first; anything else is passed on as it is.
        let lookup = match route(&addr).map_err(TransportError::MultiaddrNotSupported)? {
            Route::Inner => {
                let dial = lock(&self.inner)
                    .dial(addr, opts)
                    .map_err(|e| e.map(to_io))?;
                return Ok(dial.map_err(to_io).boxed());
            }
            Route::Dnsaddr(_) => None,
            Route::Name(name, family) => Some((name, family)),
        };
        let (inner, resolver, dns, timeout) = (
            self.inner.clone(),
            self.resolver.clone(),
            self.dns.clone(),
            self.timeout,
        );
        let deadline = Instant::now() + timeout;
        let dial = async move {
            let candidates = match lookup {
                None => expand_dnsaddr::<P>(&resolver, &dns, &addr).await?,
                Some((name, family)) => resolve_name::<P>(&resolver, &addr, &name, family).await?,
            };
            dial_in_turn(&inner, candidates, opts, &addr).await
        };
        Ok(async move {
            match provider::timeout_at::<P, _>(deadline, dial).await {
                Some(result) => result,
                None => Err(Error::Timeout {
                    stage: TimeoutStage::DialByName,
                    after: timeout,
                }
                .into_io()),
            }
        }
        .boxed())
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
        let mut inner = lock(&self.inner);
        Pin::new(&mut *inner).poll(cx).map(|event| {
            event
                .map_upgrade(|upgrade| upgrade.map_err(to_io).boxed())
                .map_err(to_io)
        })
    }
}

/// The name of an address to resolve here: a `/dns*` one that is not a WebSocket address.
/// The addresses a `/dnsaddr` address resolves to, names inside them resolved too, except
/// WebSocket ones, which go on by name.
async fn expand_dnsaddr<P: Provider>(
    resolver: &Resolver,
    dns: &DnsConfig,
    addr: &Multiaddr,
) -> io::Result<Vec<Multiaddr>> {
    let found = resolve_dnsaddr(addr, dns, |name| {
        let resolver = resolver.clone();
        async move { resolver.txt::<P>(&name).await }
    })
    .await
    .map_err(|e| Error::Dnsaddr(e).into_io())?;
    let mut expanded = Vec::new();
    for candidate in found {
        match route_name(&candidate) {
            Some((name, family)) => {
                match resolve_name::<P>(resolver, &candidate, &name, family).await {
                    Ok(addrs) => expanded.extend(addrs),
                    Err(e) => tracing::debug!(%candidate, %e, "skipped"),
                }
            }
            None => expanded.push(candidate),
        }
    }
    Ok(expanded)
}

/// Dials `candidates` (what `addr` resolved to) through `inner` in turn, until one connects.
async fn dial_in_turn<T>(
    inner: &Mutex<T>,
    candidates: Vec<Multiaddr>,
    opts: DialOpts,
    addr: &Multiaddr,
) -> io::Result<T::Output>
where
    T: Transport,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    let mut last_error = None;
    for candidate in candidates {
        let dial = match lock(inner).dial(candidate.clone(), opts) {
            Ok(dial) => dial,
            Err(TransportError::MultiaddrNotSupported(_)) => {
                tracing::debug!(%candidate, "no transport dials it; skipped");
                continue;
            }
            Err(TransportError::Other(e)) => {
                last_error = Some(to_io(e));
                continue;
            }
        };
        match dial.await {
            Ok(output) => return Ok(output),
            Err(e) => {
                let e = to_io(e);
                tracing::debug!(%candidate, error = %crate::Report(&e), "dial failed");
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no transport dials any address that {addr} resolves to"),
        )
    }))
}

fn route_name(addr: &Multiaddr) -> Option<(String, Family)> {
    match route(addr) {
        Ok(Route::Name(name, family)) => Some((name, family)),
        _ => None,
    }
}

/// `addr` with its name replaced by each of the name's addresses of `family`.
async fn resolve_name<P: Provider>(
    resolver: &Resolver,
    addr: &Multiaddr,
    name: &str,
    family: Family,
) -> io::Result<Vec<Multiaddr>> {
    let dns_error = |source: io::Error| {
        Error::Dns {
            name: name.to_string(),
            source,
        }
        .into_io()
    };
    let ips = resolver
        .ip::<P>(name)
        .await
        .map_err(|e| dns_error(e.into()))?;
    let addrs: Vec<_> = ips
        .into_iter()
        .filter(|ip| match family {
            Family::Any => true,
            Family::V4 => ip.is_ipv4(),
            Family::V6 => ip.is_ipv6(),
        })
        .map(|ip| with_ip(addr, ip))
        .collect();
    if addrs.is_empty() {
        return Err(dns_error(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no address of the requested family ({family:?})"),
        )));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = |a: &str| route(&a.parse().unwrap());
        assert_eq!(r("/dns4/x.test/tcp/1/tls/ws"), Ok(Route::Inner));
        assert_eq!(
            r("/dns/x.test/tcp/1/wss/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"),
            Ok(Route::Inner)
        );
        assert_eq!(r("/dns/x.test/tcp/1/ws"), Ok(Route::Inner));
        assert_eq!(
            r("/dns4/x.test/udp/1/quic-v1"),
            Ok(Route::Name("x.test".into(), Family::V4))
        );
        assert_eq!(
            r("/dns6/x.test/tcp/1"),
            Ok(Route::Name("x.test".into(), Family::V6))
        );
        assert_eq!(r("/ip4/127.0.0.1/tcp/1"), Ok(Route::Inner));
        assert_eq!(
            r("/dnsaddr/boot.test"),
            Ok(Route::Dnsaddr("boot.test".into()))
        );
        assert!(r("/dnsaddr/boot.test/tcp/1").is_err());
        assert_eq!(
            with_ip(
                &"/dns4/x.test/udp/1/quic-v1".parse().unwrap(),
                "127.0.0.1".parse().unwrap()
            ),
            "/ip4/127.0.0.1/udp/1/quic-v1".parse::<Multiaddr>().unwrap()
        );
    }
}
