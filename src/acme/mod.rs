//! Certificates the node obtains and renews itself from an ACME CA (RFC 8555), validated with
//! TLS-ALPN-01 (RFC 8737) on the `/tls/ws` listener's own port (feature `acme`).
//!
//! [`AcmeConfig::start`] gives two things: [`AcmeCertificates`], the [`CertificateSource`] the
//! TLS listeners present (give it to
//! [`TlsConfig::with_certificate_source`](crate::TlsConfig::with_certificate_source)), and
//! [`AcmeTask`], a stream that does the work and reports it: poll it (spawn it) for as long as the
//! node runs. It loads the certificate from the cache directory when one there is still good,
//! else orders one; then sleeps until the renewal window and orders again. Failures are reported
//! and retried with exponential backoff; the certificate in use stays until a new one replaces
//! it. A renewed certificate is presented to new connections at once; open connections continue.
//!
//! The CA validates each name by connecting to port 443 of the name's address with TLS and the
//! ALPN protocol `acme-tls/1`: the listener must be reachable there (a `/tls/ws` listener, or a
//! shared port, on 443, or a port forwarded to it). Such a connection gets the challenge
//! certificate and is closed after the handshake; it is not reported to the swarm.
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # async fn run() -> Result<(), libp2p_ws::acme::AcmeError> {
//! use std::sync::Arc;
//! use futures::StreamExt;
//! use libp2p_ws::{acme::{AcmeConfig, AcmeEvent}, Config, TlsConfig};
//!
//! let (certificates, mut task) =
//!     AcmeConfig::new("https://acme-v02.api.letsencrypt.org/directory", ["node.example.com"])
//!         .with_contact("mailto:ops@example.com")
//!         .with_cache_dir("/var/lib/my-node/acme")
//!         .start::<libp2p_ws::tokio::Provider>()?;
//! let config = Config::new().with_tls(TlsConfig::new().with_certificate_source(Arc::new(certificates)));
//! tokio::spawn(async move {
//!     while let Some(event) = task.next().await {
//!         match event {
//!             AcmeEvent::Failed { error, retry_in } => eprintln!("acme: {error}; again in {retry_in:?}"),
//!             event => println!("acme: {event:?}"),
//!         }
//!     }
//! });
//! // ... build the transport with `config` and listen on /ip4/0.0.0.0/tcp/443/tls/ws
//! # Ok(()) }
//! ```

mod autotls;
mod https;
mod jws;
mod order;
mod peer_id_auth;
mod store;

use std::{
    path::PathBuf,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use futures::{stream::BoxStream, Stream, StreamExt};

pub(crate) use autotls::concrete_addresses;
pub use autotls::{
    base36_peer_id, dashed_ip, AutoTls, DialbackAddresses, DEFAULT_BROKER, DEFAULT_DNS_TIMEOUT,
    DEFAULT_FORGE_DOMAIN, LETS_ENCRYPT,
};
pub use store::{AcmeCertificates, ACME_TLS_ALPN};

use crate::{error::TlsError, provider::Provider, tls_source::CertificateSource, TlsConfig};
use jws::AccountKey;
use store::Cache;

/// What to obtain, from where, and when to renew.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    directory: String,
    names: Vec<String>,
    contact: Vec<String>,
    cache: Option<PathBuf>,
    directory_tls: TlsConfig,
    renew_before: Duration,
    retry: (Duration, Duration),
    request_timeout: Duration,
    order_timeout: Duration,
}

impl AcmeConfig {
    /// Certificates for `names` (DNS names; the first is the certificate's file name in the
    /// cache) from the CA whose directory is at `directory_url`, for example Let's Encrypt's
    /// `https://acme-v02.api.letsencrypt.org/directory`. By submitting orders the node agrees to
    /// the CA's terms of service.
    pub fn new(
        directory_url: impl Into<String>,
        names: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        AcmeConfig {
            directory: directory_url.into(),
            names: names.into_iter().map(Into::into).collect(),
            contact: Vec::new(),
            cache: None,
            directory_tls: TlsConfig::new(),
            renew_before: Duration::from_secs(30 * 24 * 3600),
            retry: (Duration::from_secs(10), Duration::from_secs(3600)),
            request_timeout: Duration::from_secs(30),
            order_timeout: Duration::from_secs(300),
        }
    }

    /// A contact URL for the account (`mailto:ops@example.com`); repeatable. Default: none.
    pub fn with_contact(mut self, contact: impl Into<String>) -> Self {
        self.contact.push(contact.into());
        self
    }

    /// Keeps the account key and the certificate (with its key) in `dir`, so that a restart
    /// reuses them instead of ordering again. Key files are readable by their owner only (0600).
    /// Default: nothing kept (a new account and certificate in every run; CAs limit how often).
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache = Some(dir.into());
        self
    }

    /// How the directory's TLS certificate is verified (its roots). Default: the Mozilla roots.
    pub fn with_directory_tls(mut self, tls: TlsConfig) -> Self {
        self.directory_tls = tls;
        self
    }

    /// Trusts the roots in this PEM file for the directory, besides the others (a staging or
    /// test CA such as pebble).
    pub fn add_directory_root_pem_file(
        mut self,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Self, TlsError> {
        self.directory_tls = self.directory_tls.add_root_pem_file(path)?;
        Ok(self)
    }

    /// Renews this long before the certificate expires. Default: 30 days. A window longer than
    /// the certificate's life renews after each order, no sooner than the first retry delay.
    pub fn with_renew_before(mut self, window: Duration) -> Self {
        self.renew_before = window;
        self
    }

    /// After a failure, waits `first`, then twice as long after each further failure, up to
    /// `max`. `first` is also the least time between two orders. Default: 10 s, up to 1 h.
    pub fn with_retry(mut self, first: Duration, max: Duration) -> Self {
        self.retry = (first, max.max(first));
        self
    }

    /// The time one HTTPS request to the CA may take, from connect to the response's end.
    /// Default: 30 s.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The time a whole order may take, from the directory to the certificate (the CA's
    /// validation included). Default: 5 minutes.
    pub fn with_order_timeout(mut self, timeout: Duration) -> Self {
        self.order_timeout = timeout;
        self
    }

    /// Starts: the certificates for the listeners, and the task that obtains and renews them on
    /// runtime `P`. Fails only for a configuration that cannot work (no names, a directory URL
    /// that is not `https`, roots that do not load).
    pub fn start<P: Provider>(self) -> Result<(AcmeCertificates, AcmeTask), AcmeError> {
        self.start_with::<P>(None)
    }

    /// [`AcmeConfig::start`], with DNS-01 through `broker` instead of TLS-ALPN-01 when given.
    fn start_with<P: Provider>(
        self,
        broker: Option<autotls::Broker>,
    ) -> Result<(AcmeCertificates, AcmeTask), AcmeError> {
        if self.names.is_empty() {
            return Err(AcmeError::Config(
                "no names to obtain a certificate for".into(),
            ));
        }
        match url::Url::parse(&self.directory) {
            Ok(url) if url.scheme() == "https" => {}
            _ => {
                return Err(AcmeError::Config(format!(
                    "the directory URL {} is not an https URL",
                    self.directory
                )))
            }
        }
        let https = https::Https {
            tls: self
                .directory_tls
                .client_config()
                .map_err(AcmeError::Certificate)?,
            timeout: self.request_timeout,
        };
        let certificates = AcmeCertificates::default();
        let runner = Runner::<P> {
            cache: self.cache.clone().map(Cache::new),
            config: self,
            https,
            certificates: certificates.clone(),
            broker,
            key: None,
            next: None,
            started: false,
            in_use: false,
            failures: 0,
            _provider: std::marker::PhantomData,
        };
        let stream = futures::stream::unfold(runner, |mut runner| async move {
            let event = runner.step().await;
            Some((event, runner))
        });
        Ok((certificates, AcmeTask(stream.boxed())))
    }
}

/// A certificate's names and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The DNS names of its leaf.
    pub names: Vec<String>,
    /// When it expires (the leaf's notAfter).
    pub not_after: SystemTime,
}

impl CertificateInfo {
    /// `not_after` as RFC 3339 text in UTC (`2027-03-07T10:43:18Z`).
    pub fn not_after_rfc3339(&self) -> String {
        rfc3339(self.not_after)
    }
}

/// What the [`AcmeTask`] did.
#[derive(Debug)]
#[non_exhaustive]
pub enum AcmeEvent {
    /// A certificate from the cache directory is in use (no order was made).
    Loaded(CertificateInfo),
    /// The first certificate of this run was obtained and is in use.
    Obtained(CertificateInfo),
    /// A new certificate replaced the one in use (open connections continue).
    Renewed(CertificateInfo),
    /// An order failed; the next one starts after `retry_in`. The certificate in use (if any)
    /// stays.
    Failed {
        /// Why.
        error: AcmeError,
        /// The wait before the next order.
        retry_in: Duration,
    },
}

impl AcmeEvent {
    /// The certificate that came into use, for the three events that bring one.
    pub fn in_use(&self) -> Option<&CertificateInfo> {
        match self {
            AcmeEvent::Loaded(info) | AcmeEvent::Obtained(info) | AcmeEvent::Renewed(info) => {
                Some(info)
            }
            AcmeEvent::Failed { .. } => None,
        }
    }
}

/// Obtains and renews the certificates of an [`AcmeConfig`]; a stream of what it did that never
/// ends. Poll it for as long as the node runs (spawn it on the runtime it was started for).
pub struct AcmeTask(BoxStream<'static, AcmeEvent>);

impl std::fmt::Debug for AcmeTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcmeTask")
    }
}

impl futures::stream::FusedStream for AcmeTask {
    /// Never: the task runs for as long as it is polled.
    fn is_terminated(&self) -> bool {
        false
    }
}

impl Stream for AcmeTask {
    type Item = AcmeEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AcmeEvent>> {
        self.0.poll_next_unpin(cx)
    }
}

/// Why obtaining a certificate failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    /// The configuration cannot work.
    #[error("ACME configuration: {0}")]
    Config(String),
    /// A request to the CA failed to connect or was cut off.
    #[error("ACME request to {url} failed: {source}")]
    Http {
        /// The request's URL.
        url: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// A request to the CA took longer than the request timeout.
    #[error("ACME request to {url} timed out after {after:?}")]
    Timeout {
        /// The request's URL.
        url: String,
        /// The request timeout.
        after: Duration,
    },
    /// The CA answered with something this client cannot use.
    #[error("ACME response from {url} is unusable: {reason}")]
    BadResponse {
        /// The request's URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The CA refused a request (an RFC 8555 problem document: `kind` is its `type`, for example
    /// `urn:ietf:params:acme:error:rejectedIdentifier`).
    #[error("ACME CA refused {url} ({status} {kind}): {detail}")]
    Refused {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The problem type (empty when the answer was not a problem document).
        kind: String,
        /// The problem's detail (or the start of the body).
        detail: String,
    },
    /// The CA offered no TLS-ALPN-01 challenge for a name.
    #[error("the CA offers no tls-alpn-01 challenge for {name}")]
    NoTlsAlpnChallenge {
        /// The name.
        name: String,
    },
    /// The CA could not validate a name (it could not reach the listener on port 443, or the
    /// listener did not present the challenge certificate).
    #[error("the tls-alpn-01 challenge for {name} failed ({status}): {detail}")]
    ChallengeFailed {
        /// The name.
        name: String,
        /// The authorization's status.
        status: String,
        /// The CA's reason.
        detail: String,
    },
    /// The order became invalid.
    #[error("the ACME order failed ({status}): {detail}")]
    OrderFailed {
        /// The order's status.
        status: String,
        /// The CA's reason.
        detail: String,
    },
    /// The CA offered no DNS-01 challenge for a name (AutoTLS).
    #[error("the CA offers no dns-01 challenge for {name}")]
    NoDnsChallenge {
        /// The name.
        name: String,
    },
    /// AutoTLS: no listen address the broker may dial back (a public one, unless private ones
    /// are allowed) was set in [`DialbackAddresses`] before the order's time ran out.
    #[error("AutoTLS: no public address for the broker to dial back")]
    NoDialbackAddress,
    /// AutoTLS: the broker refused the registration (401: it did not accept the Peer ID
    /// authentication; 400: it could not dial the node back).
    #[error("AutoTLS broker {url} refused ({status}): {detail}")]
    BrokerRefused {
        /// The registration URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of its answer.
        detail: String,
    },
    /// AutoTLS: the broker accepted the registration, but its TXT record did not show in DNS
    /// (the [`AutoTls::with_dns`] name servers) within the DNS timeout; the CA was not asked.
    #[error("AutoTLS: the TXT record {name} did not show in DNS in time")]
    DnsRecordNotSet {
        /// The record's name.
        name: String,
    },
    /// AutoTLS: the Peer ID authentication with the broker failed on this side (a malformed
    /// challenge, or a server signature that does not verify).
    #[error("AutoTLS broker {url}: Peer ID authentication failed: {reason}")]
    BrokerAuthentication {
        /// The registration URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The order did not complete within the order timeout.
    #[error("the ACME order did not complete within the order timeout")]
    OrderTimedOut,
    /// A key or certificate could not be made or signed.
    #[error("ACME key or certificate: {0}")]
    Key(String),
    /// The certificate the CA issued (or the cache holds) is unusable, or the directory's roots.
    #[error("ACME certificate: {0}")]
    Certificate(#[source] TlsError),
    /// The cache directory could not be read or written.
    #[error("ACME cache {path}: {source}")]
    Cache {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

/// The task's state between events.
struct Runner<P> {
    config: AcmeConfig,
    cache: Option<Cache>,
    https: https::Https,
    certificates: AcmeCertificates,
    /// AutoTLS: DNS-01 through the registration broker (else TLS-ALPN-01 on the listeners).
    broker: Option<autotls::Broker>,
    key: Option<std::sync::Arc<AccountKey>>,
    /// When the next order starts.
    next: Option<Instant>,
    started: bool,
    /// Whether a certificate is in use (the next one is a renewal).
    in_use: bool,
    failures: u32,
    _provider: std::marker::PhantomData<P>,
}

impl<P: Provider> Runner<P> {
    async fn step(&mut self) -> AcmeEvent {
        if !self.started {
            self.started = true;
            if let Some(info) = self.load_cached() {
                self.in_use = true;
                self.next = Some(renewal(&info, self.config.renew_before, Instant::now()));
                return AcmeEvent::Loaded(info);
            }
        }
        if let Some(at) = self.next.take() {
            if at > Instant::now() {
                P::timer(at).await;
            }
        }
        let deadline = Instant::now() + self.config.order_timeout;
        let result = crate::provider::timeout_at::<P, _>(deadline, Box::pin(self.obtain(deadline)))
            .await
            .unwrap_or(Err(AcmeError::OrderTimedOut));
        match result {
            Ok(info) => {
                self.failures = 0;
                let earliest = Instant::now() + self.config.retry.0;
                self.next = Some(renewal(&info, self.config.renew_before, earliest));
                tracing::info!(names = ?info.names, not_after = %info.not_after_rfc3339(), "ACME certificate in use");
                if std::mem::replace(&mut self.in_use, true) {
                    AcmeEvent::Renewed(info)
                } else {
                    AcmeEvent::Obtained(info)
                }
            }
            Err(error) => {
                self.failures += 1;
                let retry_in = backoff(self.config.retry, self.failures);
                self.next = Some(Instant::now() + retry_in);
                tracing::warn!(%error, ?retry_in, "ACME order failed");
                AcmeEvent::Failed { error, retry_in }
            }
        }
    }

    /// The cached certificate, installed, if it covers every name and has not expired.
    fn load_cached(&self) -> Option<CertificateInfo> {
        let (chain, key) = self.cache.as_ref()?.certificate(&self.config.names)?;
        let (certificate, info) = match store::certificate_from_pem(&chain, &key) {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::warn!(%error, "the cached certificate is unusable; ordering a new one");
                return None;
            }
        };
        let covered = self
            .config
            .names
            .iter()
            .all(|name| info.names.iter().any(|n| n.eq_ignore_ascii_case(name)));
        if !covered || info.not_after <= SystemTime::now() {
            return None;
        }
        self.certificates.install(certificate, info.clone());
        Some(info)
    }

    async fn obtain(&mut self, deadline: Instant) -> Result<CertificateInfo, AcmeError> {
        let key = self.account_key()?;
        let mut session =
            order::Session::<P>::open(&self.https, &key, &self.config.directory, deadline).await?;
        session.account(&self.config.contact).await?;
        let solver = match &self.broker {
            Some(broker) => order::Solver::Broker(broker),
            None => order::Solver::TlsAlpn(&self.certificates),
        };
        let issued = session.order(&self.config.names, solver).await?;
        let (certificate, info) = store::certificate_from_pem(&issued.chain_pem, &issued.key_pem)?;
        if let Some(cache) = &self.cache {
            if let Err(error) =
                cache.save_certificate(&self.config.names, &issued.chain_pem, &issued.key_pem)
            {
                tracing::warn!(%error, "could not cache the certificate; it is in use anyway");
            }
        }
        self.certificates.install(certificate, info.clone());
        Ok(info)
    }

    /// The account key: kept, else from the cache, else a new one (saved to the cache).
    fn account_key(&mut self) -> Result<std::sync::Arc<AccountKey>, AcmeError> {
        if let Some(key) = &self.key {
            return Ok(key.clone());
        }
        let cached = match &self.cache {
            Some(cache) => cache.account_key()?,
            None => None,
        };
        let key = match cached {
            Some(pkcs8) => AccountKey::from_pkcs8(&pkcs8).map_err(AcmeError::Key)?,
            None => {
                let key = AccountKey::generate().map_err(AcmeError::Key)?;
                if let Some(cache) = &self.cache {
                    cache.save_account_key(key.pkcs8())?;
                }
                key
            }
        };
        let key = std::sync::Arc::new(key);
        self.key = Some(key.clone());
        Ok(key)
    }
}

impl TlsConfig {
    /// Listen on TLS addresses with the certificates of an ACME or AutoTLS task (a
    /// [`CertificateSource`], see [`TlsConfig::with_certificate_source`]). Wildcard listen
    /// addresses (`/tls/sni/*.libp2p.direct/ws`) then announce their concrete addresses once an
    /// AutoTLS certificate is in use: `/ip4/<ip>/tcp/<port>/tls/sni/<ip-dashed>.<domain>/ws` and
    /// `/dns4/<ip-dashed>.<domain>/tcp/<port>/tls/ws`, where the certificate is for `*.<domain>`.
    pub fn with_acme_certificates(self, certificates: &AcmeCertificates) -> Self {
        let mut tls = self.with_certificate_source(std::sync::Arc::new(certificates.clone()));
        tls.acme = Some(certificates.clone());
        tls
    }
}

// The source is what users give the TLS listener; assert that it is one.
const _: fn() = || {
    fn source<S: CertificateSource>() {}
    source::<AcmeCertificates>();
};

/// When to renew `info`: `window` before it expires, and not before `earliest`.
fn renewal(info: &CertificateInfo, window: Duration, earliest: Instant) -> Instant {
    let left = info
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let at = Instant::now() + left.saturating_sub(window);
    at.max(earliest)
}

/// The wait after `failures` failures in a row: `first`, doubling, at most `max`.
fn backoff((first, max): (Duration, Duration), failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(20);
    first.saturating_mul(factor).min(max)
}

/// `time` as RFC 3339 in UTC, to the second.
fn rfc3339(time: SystemTime) -> String {
    let secs = match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let at = |secs: u64| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_640_198), "2026-12-07T10:43:18Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn backoff_doubles_up_to_the_max() {
        let retry = (Duration::from_secs(10), Duration::from_secs(60));
        let waits: Vec<u64> = (1..=6).map(|n| backoff(retry, n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 60, 60, 60]);
        assert_eq!(backoff(retry, u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn renewal_is_the_window_before_expiry_and_never_before_the_earliest() {
        let now = Instant::now();
        let info = CertificateInfo {
            names: vec!["a".into()],
            not_after: SystemTime::now() + Duration::from_secs(90 * 86_400),
        };
        let at = renewal(&info, Duration::from_secs(30 * 86_400), now);
        let in_days = (at - now).as_secs_f64() / 86_400.0;
        assert!((59.9..60.1).contains(&in_days), "{in_days}");
        // A window longer than the life: at the earliest.
        let earliest = now + Duration::from_secs(5);
        assert_eq!(
            renewal(&info, Duration::from_secs(365 * 86_400), earliest),
            earliest
        );
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn configurations_that_cannot_work_are_refused() {
        let none: [&str; 0] = [];
        assert!(matches!(
            AcmeConfig::new("https://ca/dir", none).start::<crate::provider::tokio::Tokio>(),
            Err(AcmeError::Config(_))
        ));
        assert!(matches!(
            AcmeConfig::new("http://ca/dir", ["a.test"]).start::<crate::provider::tokio::Tokio>(),
            Err(AcmeError::Config(_))
        ));
    }
}
