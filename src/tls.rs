//! TLS for `/tls/ws` and `/wss`: the server certificate (reloadable), trust roots for dialing, and
//! rcgen helpers for tests and local development.
//!
//! Listening: configure the certificate as for an HTTP server (the libp2p WebSockets spec asks for
//! certificates a browser can verify), from PEM files, from DER values, or as your own
//! `rustls::ServerConfig`. A [`ServerCertificate`] can be swapped at run time
//! ([`ServerCertificate::reload_from_pem_files`]): new connections present the new certificate while
//! established ones continue.
//!
//! Dialing: servers are verified against the Mozilla roots (webpki-roots) by default; the OS store
//! and extra roots can be added. The TLS server name is the `/sni` name, else the DNS name, else the
//! IP address.

use std::{fmt, io, path::Path, sync::Arc, sync::RwLock};

use futures_rustls::rustls::{
    self,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;

use crate::error::TlsError;
use crate::tls_source::{Certificate, CertificateSource, ClientHelloInfo, SourceResolver};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS settings: the server certificate for TLS listeners and the trust roots for dialing.
#[derive(Clone)]
pub struct TlsConfig {
    server: Option<Arc<ServerConfig>>,
    /// The reloadable certificate behind `server`, if it is one (for the metrics' expiry gauge).
    served: Option<Served>,
    webpki_roots: bool,
    native_roots: bool,
    extra_roots: Vec<CertificateDer<'static>>,
    client: Option<Arc<ClientConfig>>,
    insecure: bool,
    /// The ACME certificates behind `server`, if it is theirs (wildcard listen addresses).
    #[cfg(feature = "acme")]
    pub(crate) acme: Option<crate::acme::AcmeCertificates>,
}

impl Default for TlsConfig {
    /// No server certificate; dialing trusts the Mozilla roots (webpki-roots).
    fn default() -> Self {
        TlsConfig {
            server: None,
            served: None,
            webpki_roots: true,
            native_roots: false,
            extra_roots: Vec::new(),
            client: None,
            insecure: false,
            #[cfg(feature = "acme")]
            acme: None,
        }
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("server_certificate", &self.server.is_some())
            .field("webpki_roots", &self.webpki_roots)
            .field("native_roots", &self.native_roots)
            .field("extra_roots", &self.extra_roots.len())
            .field("custom_client_config", &self.client.is_some())
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl TlsConfig {
    /// The default: no server certificate, Mozilla roots for dialing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Listen on TLS addresses with this (reloadable) certificate.
    pub fn with_server_certificate(mut self, certificate: &ServerCertificate) -> Self {
        self.server = Some(certificate.config.clone());
        self.served = Some(Served::Reloadable(certificate.resolver.clone()));
        self.clear_acme();
        self
    }

    /// Listen on TLS addresses with certificates chosen per connection by `source` (by the
    /// client's server name, or its ALPN offer): several names on one port, certificates obtained
    /// at run time, a source of your own. A [`ServerCertificate`] is one source (what
    /// [`TlsConfig::with_server_certificate`] uses).
    pub fn with_certificate_source(mut self, source: Arc<dyn CertificateSource>) -> Self {
        let mut config = server_config(Arc::new(SourceResolver(source.clone())));
        let alpn = source.alpn_protocols();
        if !alpn.is_empty() {
            config.alpn_protocols = std::iter::once(b"http/1.1".to_vec()).chain(alpn).collect();
        }
        self.server = Some(Arc::new(config));
        self.served = Some(Served::Source(source));
        self.clear_acme();
        self
    }

    fn clear_acme(&mut self) {
        #[cfg(feature = "acme")]
        {
            self.acme = None;
        }
    }

    /// What a wildcard listen address (`/tls/sni/*.<suffix>/ws`) on `ip`:`port` announces with
    /// ACME certificates: the concrete addresses of the domain `X` the certificate in use is
    /// for (`*.X`, with `X` ending in `.<suffix>`), none before there is one; `None` without
    /// ACME certificates (the address is announced as it is).
    pub(crate) fn wildcard_addresses(
        &self,
        suffix: &str,
        ip: std::net::IpAddr,
        port: u16,
    ) -> Option<Vec<libp2p_core::Multiaddr>> {
        #[cfg(feature = "acme")]
        if self.acme.is_some() {
            let domain = self
                .acme
                .as_ref()
                .and_then(|acme| acme.wildcard_domain(suffix));
            return Some(domain.map_or_else(Vec::new, |domain| {
                crate::acme::concrete_addresses(ip, port, &domain)
            }));
        }
        let _ = (suffix, ip, port);
        None
    }

    /// A number that changes when the ACME certificate in use changes, and registers `waker` to
    /// be woken then; `None` without ACME certificates.
    pub(crate) fn watch_certificates(&self, waker: &std::task::Waker) -> Option<u64> {
        #[cfg(feature = "acme")]
        if let Some(acme) = &self.acme {
            return Some(acme.watch(waker));
        }
        let _ = waker;
        None
    }

    /// Listen on TLS addresses with your own rustls server configuration.
    pub fn with_server_config(mut self, config: Arc<ServerConfig>) -> Self {
        self.server = Some(config);
        self.served = None;
        self.clear_acme();
        self
    }

    /// Whether to trust the Mozilla roots (webpki-roots) when dialing. Default: `true`.
    pub fn with_webpki_roots(mut self, enabled: bool) -> Self {
        self.webpki_roots = enabled;
        self
    }

    /// Whether to trust the operating system's certificate store when dialing. Default: `false`.
    pub fn with_native_roots(mut self, enabled: bool) -> Self {
        self.native_roots = enabled;
        self
    }

    /// Trust this root certificate (DER) when dialing, besides the others.
    pub fn add_root_der(mut self, root: CertificateDer<'static>) -> Self {
        self.extra_roots.push(root);
        self
    }

    /// Trust every certificate in this PEM file when dialing, besides the others.
    pub fn add_root_pem_file(mut self, path: impl AsRef<Path>) -> Result<Self, TlsError> {
        let path = path.as_ref();
        let certs = load_certs(
            CertificateDer::pem_file_iter(path),
            &path.display().to_string(),
        )?;
        self.extra_roots.extend(certs);
        Ok(self)
    }

    /// Dial with your own rustls client configuration (the root settings above are then unused).
    pub fn with_client_config(mut self, config: Arc<ClientConfig>) -> Self {
        self.client = Some(config);
        self
    }

    /// **Tests only: accept any server certificate.** This removes the protection TLS gives against
    /// an active attacker (noise still authenticates the peer, but the TLS layer then proves
    /// nothing). Never use it in production.
    pub fn danger_accept_invalid_certificates(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// The certificate chains the listeners present now, as a function (with its identity, to
    /// register it once): a [`ServerCertificate`]'s, or a [`CertificateSource`]'s
    /// [`served`](CertificateSource::served); `None` for a rustls configuration of the user's.
    pub(crate) fn served_chains(
        &self,
    ) -> Option<(
        usize,
        impl Fn() -> Vec<Vec<CertificateDer<'static>>> + Send + Sync + 'static,
    )> {
        let served = self.served.clone()?;
        let id = match &served {
            Served::Reloadable(resolver) => Arc::as_ptr(resolver) as *const () as usize,
            Served::Source(source) => Arc::as_ptr(source) as *const () as usize,
        };
        Some((id, move || match &served {
            Served::Reloadable(resolver) => vec![resolver.get().cert.clone()],
            Served::Source(source) => source
                .served()
                .iter()
                .map(|certificate| certificate.chain().to_vec())
                .collect(),
        }))
    }

    pub(crate) fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.server.clone()
    }

    internal! {
        /// Builds the rustls client configuration from these settings (public only with the feature
        /// `unstable-internals`, for tests and tools; the transport builds it when it first dials).
        fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
            if let Some(config) = &self.client {
                return Ok(config.clone());
            }
            let builder = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?;
            let config = if self.insecure {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
                    .with_no_client_auth()
            } else {
                let mut roots = RootCertStore::empty();
                if self.webpki_roots {
                    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                }
                if self.native_roots {
                    let native = rustls_native_certs::load_native_certs();
                    for error in &native.errors {
                        tracing::warn!(%error, "could not load a certificate from the OS store");
                    }
                    roots.add_parsable_certificates(native.certs);
                }
                for root in &self.extra_roots {
                    roots.add(root.clone()).map_err(TlsError::InvalidRoot)?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            };
            Ok(Arc::new(config))
        }
    }
}

/// What the listeners present, for the metrics' expiry gauge.
#[derive(Clone)]
enum Served {
    Reloadable(Arc<ReloadableResolver>),
    Source(Arc<dyn CertificateSource>),
}

/// A server certificate chain and key that can be replaced while listeners run.
///
/// Cloning gives another handle to the same certificate; [`ServerCertificate::reload`] on any handle
/// changes what every listener configured with it presents to new connections.
#[derive(Clone)]
pub struct ServerCertificate {
    resolver: Arc<ReloadableResolver>,
    config: Arc<ServerConfig>,
}

impl fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCertificate").finish_non_exhaustive()
    }
}

impl ServerCertificate {
    /// Loads a certificate chain (leaf first) and its private key from PEM files.
    pub fn from_pem_files(
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        Self::new(certified_key_from_pem_files(chain.as_ref(), key.as_ref())?)
    }

    /// Uses a certificate chain (leaf first) and private key given as PEM text.
    pub fn from_pem(chain: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        Self::new(certified_key_from_pem(chain, key)?)
    }

    /// Uses a certificate chain (leaf first) and private key given as DER.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        Self::new(certified_key(chain, key)?)
    }

    fn new(key: CertifiedKey) -> Result<Self, TlsError> {
        let resolver = Arc::new(ReloadableResolver(RwLock::new(Arc::new(key))));
        Ok(ServerCertificate {
            config: Arc::new(server_config(resolver.clone())),
            resolver,
        })
    }

    /// Replaces the certificate with one loaded from PEM files. New TLS connections present the new
    /// certificate; established connections are not affected. On error the old one stays.
    pub fn reload_from_pem_files(
        &self,
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<(), TlsError> {
        self.resolver
            .set(certified_key_from_pem_files(chain.as_ref(), key.as_ref())?);
        Ok(())
    }

    /// Replaces the certificate with the given chain (leaf first) and key, as DER.
    pub fn reload(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<(), TlsError> {
        self.resolver.set(certified_key(chain, key)?);
        Ok(())
    }

    /// The certificate chain presented now.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.resolver.get().cert.clone()
    }
}

impl CertificateSource for ServerCertificate {
    /// The current certificate, whatever the client asks for.
    fn certificate(&self, _hello: &ClientHelloInfo<'_>) -> Option<Certificate> {
        Some(Certificate(self.resolver.get()))
    }

    fn served(&self) -> Vec<Certificate> {
        vec![Certificate(self.resolver.get())]
    }
}

/// The server configuration of a TLS listener: the safe default protocol versions, no client
/// authentication, certificates from `resolver`.
fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> ServerConfig {
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver)
}

struct ReloadableResolver(RwLock<Arc<CertifiedKey>>);

impl ReloadableResolver {
    fn get(&self) -> Arc<CertifiedKey> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, key: CertifiedKey) {
        let key = Arc::new(key);
        match self.0.write() {
            Ok(mut guard) => *guard = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
    }
}

impl fmt::Debug for ReloadableResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReloadableResolver")
    }
}

impl ResolvesServerCert for ReloadableResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

fn load_certs<I>(
    iter: Result<I, rustls_pki_types::pem::Error>,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError>
where
    I: Iterator<Item = Result<CertificateDer<'static>, rustls_pki_types::pem::Error>>,
{
    let certs = iter
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::ReadCertificates {
            from: what.to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            from: what.to_string(),
        });
    }
    Ok(certs)
}

fn certified_key_from_pem_files(chain: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let certs = load_certs(
        CertificateDer::pem_file_iter(chain),
        &chain.display().to_string(),
    )?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::ReadPrivateKey {
        from: key.display().to_string(),
        source,
    })?;
    certified_key(certs, key)
}

pub(crate) fn certified_key_from_pem(chain: &[u8], key: &[u8]) -> Result<CertifiedKey, TlsError> {
    let certs = load_certs(Ok(CertificateDer::pem_slice_iter(chain)), "the PEM text")?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|source| TlsError::ReadPrivateKey {
        from: "the PEM text".into(),
        source,
    })?;
    certified_key(certs, key)
}

pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    if chain.is_empty() {
        return Err(TlsError::NoCertificates {
            from: "the certificate chain".into(),
        });
    }
    let key = CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::KeyMismatch)?;
    Ok(key)
}

/// A chain and key presented as they are, without the check that they fit together (which
/// parses the leaf with webpki, and webpki refuses unknown critical extensions such as the
/// acmeIdentifier of an ACME TLS-ALPN-01 challenge certificate).
#[cfg(feature = "acme")]
pub(crate) fn certified_key_unchecked(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(TlsError::KeyMismatch)?;
    Ok(CertifiedKey::new(chain, signing))
}

/// Turns a failed client TLS handshake into the matching [`TlsError`].
pub(crate) fn classify_client_error(server_name: &str, error: io::Error) -> TlsError {
    let server_name = server_name.to_string();
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(cert_error)) => match cert_error {
            CertificateError::UnknownIssuer => TlsError::UnknownIssuer { server_name },
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsError::NameMismatch { server_name }
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsError::Expired { server_name },
            _ => TlsError::Handshake {
                server_name,
                source: error,
            },
        },
        Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
            TlsError::NotTls { server_name }
        }
        None if error.kind() == io::ErrorKind::UnexpectedEof => {
            TlsError::ClosedOnHello { server_name }
        }
        _ => TlsError::Handshake {
            server_name,
            source: error,
        },
    }
}

/// The rustls server name for `name` (a DNS name or an IP address).
pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string()).map_err(|_| TlsError::InvalidServerName(name.into()))
}

/// Accepts every certificate but still checks the handshake signatures. Tests only.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Throwaway certificates for tests, examples and local development (feature `rcgen`).
#[cfg(feature = "rcgen")]
pub mod dev {
    use super::*;

    /// A certificate chain (leaf first) and its private key.
    pub type CertAndKey = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

    fn rcgen_error(e: rcgen::Error) -> TlsError {
        TlsError::Generate(Box::new(e))
    }

    /// A self-signed certificate valid for `names` (DNS names or IP addresses).
    pub fn self_signed(names: &[&str]) -> Result<CertAndKey, TlsError> {
        let key = rcgen::KeyPair::generate().map_err(rcgen_error)?;
        let params = leaf_params(names)?;
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        Ok((
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        ))
    }

    fn leaf_params(names: &[&str]) -> Result<rcgen::CertificateParams, TlsError> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).map_err(rcgen_error)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "libp2p-ws test certificate");
        Ok(params)
    }

    /// A throwaway certificate authority that issues leaf certificates.
    pub struct TestCa {
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        cert: CertificateDer<'static>,
        pem: String,
    }

    impl fmt::Debug for TestCa {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("TestCa").finish_non_exhaustive()
        }
    }

    impl TestCa {
        /// Makes a new CA with a fresh key.
        pub fn new(common_name: &str) -> Result<Self, TlsError> {
            let key = rcgen::KeyPair::generate().map_err(rcgen_error)?;
            let mut params = rcgen::CertificateParams::new(Vec::new()).map_err(rcgen_error)?;
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, common_name);
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::CrlSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params.self_signed(&key).map_err(rcgen_error)?;
            Ok(TestCa {
                pem: cert.pem(),
                cert: cert.der().clone(),
                issuer: rcgen::Issuer::new(params, key),
            })
        }

        /// The CA certificate (DER), to trust with [`TlsConfig::add_root_der`].
        pub fn certificate(&self) -> CertificateDer<'static> {
            self.cert.clone()
        }

        /// The CA certificate as PEM text.
        pub fn certificate_pem(&self) -> &str {
            &self.pem
        }

        /// Issues a leaf certificate for `names` (DNS names or IP addresses), valid from now.
        pub fn issue(&self, names: &[&str]) -> Result<CertAndKey, TlsError> {
            self.issue_with(leaf_params(names)?)
        }

        /// Issues a leaf certificate for `names` that expired long ago (for tests of expiry).
        pub fn issue_expired(&self, names: &[&str]) -> Result<CertAndKey, TlsError> {
            let mut params = leaf_params(names)?;
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
            self.issue_with(params)
        }

        fn issue_with(&self, params: rcgen::CertificateParams) -> Result<CertAndKey, TlsError> {
            let key = rcgen::KeyPair::generate().map_err(rcgen_error)?;
            let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_error)?;
            Ok((
                vec![cert.der().clone(), self.cert.clone()],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            ))
        }
    }

    /// PEM text of a certificate chain.
    pub fn chain_pem(chain: &[CertificateDer<'_>]) -> String {
        chain.iter().map(|c| pem_block("CERTIFICATE", c)).collect()
    }

    /// PEM text of a private key.
    pub fn key_pem(key: &PrivateKeyDer<'_>) -> String {
        let label = match key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem_block(label, key.secret_der())
    }

    fn pem_block(label: &str, der: &[u8]) -> String {
        pem::encode(&pem::Pem::new(label, der.to_vec()))
    }
}
