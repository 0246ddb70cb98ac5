//! The proxy settings of the environment: [`ProxyEnv`] (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`)
//! and [`NoProxy`] (`NO_PROXY`, as curl reads it), and [`Proxies`], how the transport picks a proxy
//! for a dial.

use super::{IpNet, Proxy, ProxyUrlError};
use crate::addr::{Host, Kind};

/// `NO_PROXY`, as curl reads it: a comma- (or space-) separated list of hosts that are dialed
/// directly. A name matches itself and its subdomains (`example.com` and `.example.com` both
/// match `example.com` and `a.example.com`); an IP address or a CIDR network matches the IP
/// addresses in it (names are not resolved to check); `*` alone matches everything. Matching is
/// case-insensitive and ignores a trailing dot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    names: Vec<String>,
    nets: Vec<IpNet>,
}

impl NoProxy {
    /// Parses a `NO_PROXY` value; entries that are neither a name nor an address are skipped.
    pub fn parse(value: &str) -> Self {
        let mut no_proxy = NoProxy::default();
        for entry in value.split([',', ' ', '\t']).map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                no_proxy.all = true;
            } else if let Ok(net) = entry.parse::<IpNet>() {
                no_proxy.nets.push(net);
            } else {
                let name = entry.trim_start_matches('.').trim_end_matches('.');
                if !name.is_empty() {
                    no_proxy.names.push(name.to_ascii_lowercase());
                }
            }
        }
        no_proxy
    }

    /// Whether `host` is to be dialed directly.
    pub fn matches(&self, host: &Host) -> bool {
        if self.all {
            return true;
        }
        match host {
            Host::Ip(ip) => self.nets.iter().any(|net| net.contains(*ip)),
            Host::Dns { name, .. } => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                self.names.iter().any(|entry| {
                    name == *entry
                        || (name.len() > entry.len()
                            && name.ends_with(entry.as_str())
                            && name.as_bytes()[name.len() - entry.len() - 1] == b'.')
                })
            }
        }
    }
}

/// The proxy settings of the environment, read once: `https_proxy`/`HTTPS_PROXY` for `/tls/ws`
/// dials, `http_proxy`/`HTTP_PROXY` for `/ws` dials, `all_proxy`/`ALL_PROXY` for those without
/// their own and for `/tcp` dials, and `no_proxy`/`NO_PROXY` ([`NoProxy`]) for the hosts dialed
/// directly. The lower-case name wins where both are set; empty values count as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    https: Option<Proxy>,
    http: Option<Proxy>,
    all: Option<Proxy>,
    no_proxy: NoProxy,
}

impl ProxyEnv {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ProxyUrlError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup` (for tests, or settings from elsewhere).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ProxyUrlError> {
        let get = |lower: &'static str, upper: &'static str| {
            [lower, upper].into_iter().find_map(|name| {
                lookup(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            })
        };
        let proxy = |lower, upper| -> Result<Option<Proxy>, ProxyUrlError> {
            match get(lower, upper) {
                None => Ok(None),
                Some((variable, value)) => {
                    Proxy::parse(&value)
                        .map(Some)
                        .map_err(|e| ProxyUrlError::Variable {
                            variable,
                            source: Box::new(e),
                        })
                }
            }
        };
        Ok(ProxyEnv {
            https: proxy("https_proxy", "HTTPS_PROXY")?,
            http: proxy("http_proxy", "HTTP_PROXY")?,
            all: proxy("all_proxy", "ALL_PROXY")?,
            no_proxy: get("no_proxy", "NO_PROXY")
                .map(|(_, v)| NoProxy::parse(&v))
                .unwrap_or_default(),
        })
    }

    /// The proxy for a dial of `kind` to `host`, or `None` to dial directly.
    pub fn proxy_for(&self, host: &Host, kind: Kind) -> Option<&Proxy> {
        if self.no_proxy.matches(host) {
            return None;
        }
        match kind {
            Kind::TlsWs => self.https.as_ref().or(self.all.as_ref()),
            Kind::Ws => self.http.as_ref().or(self.all.as_ref()),
            Kind::Tcp => self.all.as_ref(),
        }
    }

    /// Whether no proxy is set.
    pub fn is_empty(&self) -> bool {
        self.https.is_none() && self.http.is_none() && self.all.is_none()
    }
}

/// How the transport dials: directly, through one proxy, or as the environment says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Proxies {
    #[default]
    Direct,
    Fixed(Proxy),
    Env(Box<ProxyEnv>),
}

impl Proxies {
    pub(crate) fn route(&self, host: &Host, kind: Kind) -> Option<&Proxy> {
        match self {
            Proxies::Direct => None,
            Proxies::Fixed(proxy) => Some(proxy),
            Proxies::Env(env) => env.proxy_for(host, kind),
        }
    }
}
