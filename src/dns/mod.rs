//! DNS beyond the system resolver: `/dnsaddr` (TXT records of `_dnsaddr.<name>`), explicit name
//! servers, and a WebSocket-aware DNS layer for an application's other transports.
//!
//! - [`DnsConfig`] (in [`Config::with_dns`](crate::Config::with_dns)): the system's name servers
//!   (`/etc/resolv.conf`) by default, or an explicit list; a timeout per lookup; the bounds of
//!   `/dnsaddr` resolution.
//! - The transport dials `/dnsaddr/<name>[/p2p/<id>]` itself: [`resolve_dnsaddr`] expands it
//!   (nested `/dnsaddr` to a bounded depth, a bounded number of records, filtered by the `/p2p`
//!   id), and the results are dialed in the order the records give, within the handshake
//!   timeout. Names inside the results keep their name for TLS and `Host`.
//! - [`Dns`] wraps an application's other transports together with this one (QUIC, say),
//!   resolving `/dns*` and `/dnsaddr` for them, and passing WebSocket addresses on with their
//!   names, which this transport resolves itself: what libp2p-dns (`SwarmBuilder::with_dns`)
//!   cannot do, since it replaces the name by an IP address before the WebSocket transport sees
//!   it, so that TLS then checks the certificate against the IP.
//!
//! Lookups go through hickory-resolver over the runtime provider's sockets (the provider builds
//! the resolver: [`Provider::dns_resolver`](crate::provider::Provider::dns_resolver)).

mod dnsaddr;
mod layer;

use std::{
    fmt,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use futures::future::BoxFuture;

pub(crate) use self::dnsaddr::dnsaddr_name;
pub use self::{
    dnsaddr::{resolve_dnsaddr, DnsaddrError},
    layer::Dns,
};

/// Default for [`DnsConfig::with_timeout`]: 5 seconds per lookup.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`DnsConfig::with_max_dnsaddr_depth`]: 4 levels of nested `/dnsaddr` (as
/// go-libp2p).
pub const DEFAULT_MAX_DNSADDR_DEPTH: usize = 4;
/// Default for [`DnsConfig::with_max_dnsaddr_records`]: 64 TXT records in one `/dnsaddr`
/// resolution, all levels together.
pub const DEFAULT_MAX_DNSADDR_RECORDS: usize = 64;
/// The largest TXT record (all its strings) considered; longer ones are skipped as malformed.
pub const MAX_TXT_RECORD_LEN: usize = 1024;

/// Name servers and bounds for the lookups this crate makes itself (`/dnsaddr`, and `/dns*` names
/// when name servers are given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    pub(crate) servers: Option<Vec<SocketAddr>>,
    pub(crate) timeout: Duration,
    pub(crate) max_depth: usize,
    pub(crate) max_records: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            servers: None,
            timeout: DEFAULT_DNS_TIMEOUT,
            max_depth: DEFAULT_MAX_DNSADDR_DEPTH,
            max_records: DEFAULT_MAX_DNSADDR_RECORDS,
        }
    }
}

impl DnsConfig {
    /// The system's name servers (`/etc/resolv.conf`) for `/dnsaddr`, and the system resolver
    /// (with `/etc/hosts`) for `/dns*` names: the default.
    pub fn system() -> Self {
        Self::default()
    }

    /// Uses these name servers (UDP, and TCP for truncated answers) instead of the system's, for
    /// `/dnsaddr` and for `/dns*` names (then `/etc/hosts` is not read). For tests, and for users
    /// who must not use the system's.
    pub fn with_name_servers(mut self, servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.servers = Some(servers.into_iter().collect());
        self
    }

    /// Time allowed for one lookup (all name servers and retries). Default:
    /// [`DEFAULT_DNS_TIMEOUT`]. A dial is bounded by the handshake timeout in any case.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How many levels of `/dnsaddr` inside `/dnsaddr` are followed (at least 1). Default:
    /// [`DEFAULT_MAX_DNSADDR_DEPTH`].
    pub fn with_max_dnsaddr_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth.max(1);
        self
    }

    /// How many TXT records one `/dnsaddr` resolution reads, all levels together (at least 1);
    /// more is [`DnsaddrError::TooManyRecords`]. Default: [`DEFAULT_MAX_DNSADDR_RECORDS`].
    pub fn with_max_dnsaddr_records(mut self, records: usize) -> Self {
        self.max_records = records.max(1);
        self
    }

    /// The name servers given with [`DnsConfig::with_name_servers`], if any.
    pub fn name_servers(&self) -> Option<&[SocketAddr]> {
        self.servers.as_deref()
    }
}

/// Why a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// The name has no records of the type asked for (or does not exist).
    #[error("no {kind} records for {name}")]
    NoRecords {
        /// The name looked up.
        name: String,
        /// `TXT`, `A/AAAA`.
        kind: &'static str,
    },
    /// No name server answered within the timeout.
    #[error("no name server answered for {name} within {after:?}")]
    Timeout {
        /// The name looked up.
        name: String,
        /// The configured timeout ([`DnsConfig::with_timeout`]).
        after: Duration,
    },
    /// The resolver could not be set up (for example, `/etc/resolv.conf` unreadable).
    #[error("the DNS resolver could not be set up: {0}")]
    Setup(String),
    /// Another failure (a name server's error, a malformed answer).
    #[error("looking up {name} failed: {reason}")]
    Failed {
        /// The name looked up.
        name: String,
        /// The resolver's message.
        reason: String,
    },
}

impl From<LookupError> for io::Error {
    fn from(error: LookupError) -> Self {
        let kind = match &error {
            LookupError::NoRecords { .. } => io::ErrorKind::NotFound,
            LookupError::Timeout { .. } => io::ErrorKind::TimedOut,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, error)
    }
}

/// What a resolver answers: TXT strings and IP addresses, bounded (each `Vec` has at most the
/// records of one answer, which hickory bounds by the DNS message size).
pub(crate) trait Lookups: Send + Sync {
    /// The TXT records of `name`, each one's strings joined.
    fn txt(&self, name: String) -> BoxFuture<'static, Result<Vec<Vec<u8>>, LookupError>>;
    /// The A and AAAA records of `name`.
    fn ip(&self, name: String) -> BoxFuture<'static, Result<Vec<IpAddr>, LookupError>>;
}

/// A DNS resolver: hickory-resolver over a runtime provider's sockets, or a failure to set one up
/// (reported by each lookup). Cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    inner: Result<Arc<dyn Lookups>, LookupError>,
    timeout: Duration,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("ready", &self.inner.is_ok())
            .finish()
    }
}

impl Resolver {
    /// A resolver for `config` over hickory's runtime provider `runtime` (what a
    /// [`Provider`](crate::provider::Provider) builds in `dns_resolver`).
    pub fn hickory<R>(config: &DnsConfig, runtime: R) -> Resolver
    where
        R: hickory_resolver::net::runtime::RuntimeProvider,
    {
        Resolver {
            inner: hickory::build(config, runtime).map(|r| Arc::new(r) as Arc<dyn Lookups>),
            timeout: config.timeout,
        }
    }

    fn lookups(&self) -> Result<Arc<dyn Lookups>, LookupError> {
        self.inner.clone()
    }

    /// The TXT records of `name`, within the timeout.
    pub(crate) async fn txt<P: crate::provider::Provider>(
        &self,
        name: &str,
    ) -> Result<Vec<Vec<u8>>, LookupError> {
        let lookup = self.lookups()?.txt(name.to_string());
        self.bounded::<P, _>(name, lookup).await
    }

    /// The addresses of `name`, within the timeout.
    pub(crate) async fn ip<P: crate::provider::Provider>(
        &self,
        name: &str,
    ) -> Result<Vec<IpAddr>, LookupError> {
        let lookup = self.lookups()?.ip(name.to_string());
        self.bounded::<P, _>(name, lookup).await
    }

    async fn bounded<P: crate::provider::Provider, T>(
        &self,
        name: &str,
        lookup: impl Future<Output = Result<T, LookupError>>,
    ) -> Result<T, LookupError> {
        match crate::provider::timeout::<P, _>(self.timeout, lookup).await {
            Some(result) => result,
            None => Err(LookupError::Timeout {
                name: name.to_string(),
                after: self.timeout,
            }),
        }
    }
}

mod hickory {
    //! hickory-resolver behind [`Lookups`].

    use std::net::IpAddr;

    use futures::{future::BoxFuture, FutureExt};
    use hickory_resolver::{
        config::{ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig},
        net::runtime::RuntimeProvider,
        proto::rr::RData,
        Resolver,
    };

    use super::{DnsConfig, LookupError, Lookups, MAX_TXT_RECORD_LEN};

    pub(super) fn build<R: RuntimeProvider>(
        config: &DnsConfig,
        runtime: R,
    ) -> Result<Resolver<R>, LookupError> {
        let setup = |e: &dyn std::fmt::Display| LookupError::Setup(e.to_string());
        let mut builder = match &config.servers {
            Some(servers) => {
                let name_servers = servers
                    .iter()
                    .map(|server| {
                        let connection = |protocol| {
                            let mut connection = ConnectionConfig::new(protocol);
                            connection.port = server.port();
                            connection
                        };
                        NameServerConfig::new(
                            server.ip(),
                            true,
                            vec![
                                connection(ProtocolConfig::Udp),
                                connection(ProtocolConfig::Tcp),
                            ],
                        )
                    })
                    .collect();
                Resolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], name_servers),
                    runtime,
                )
            }
            None => Resolver::builder(runtime).map_err(|e| setup(&e))?,
        };
        let options = builder.options_mut();
        options.timeout = config.timeout;
        options.attempts = 1;
        // A bounded cache: names are few (bootstrap lists, peers' names).
        options.cache_size = 256;
        builder.build().map_err(|e| setup(&e))
    }

    fn failed(
        name: &str,
        kind: &'static str,
        error: hickory_resolver::net::NetError,
    ) -> LookupError {
        if error.is_no_records_found() {
            LookupError::NoRecords {
                name: name.to_string(),
                kind,
            }
        } else {
            LookupError::Failed {
                name: name.to_string(),
                reason: error.to_string(),
            }
        }
    }

    impl<R: RuntimeProvider> Lookups for Resolver<R> {
        fn txt(&self, name: String) -> BoxFuture<'static, Result<Vec<Vec<u8>>, LookupError>> {
            let resolver = self.clone();
            async move {
                let lookup = resolver
                    .txt_lookup(name.as_str())
                    .await
                    .map_err(|e| failed(&name, "TXT", e))?;
                Ok(lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::TXT(txt) => {
                            let mut joined = Vec::new();
                            for part in txt.txt_data.iter() {
                                if joined.len() + part.len() > MAX_TXT_RECORD_LEN {
                                    // Marked malformed by its length; skipped by the caller.
                                    joined.resize(MAX_TXT_RECORD_LEN + 1, 0);
                                    break;
                                }
                                joined.extend_from_slice(part);
                            }
                            Some(joined)
                        }
                        _ => None,
                    })
                    .collect())
            }
            .boxed()
        }

        fn ip(&self, name: String) -> BoxFuture<'static, Result<Vec<IpAddr>, LookupError>> {
            let resolver = self.clone();
            async move {
                let lookup = resolver
                    .lookup_ip(name.as_str())
                    .await
                    .map_err(|e| failed(&name, "A/AAAA", e))?;
                Ok(lookup.iter().collect())
            }
            .boxed()
        }
    }
}
