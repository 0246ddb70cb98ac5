//! Certificates chosen per connection: the [`CertificateSource`] trait (this crate's own, so that the
//! public API does not follow rustls's resolver traits as they change), what a source returns
//! ([`Certificate`]) and what it sees of the client ([`ClientHelloInfo`]).

use std::{fmt, sync::Arc};

use futures_rustls::rustls::{
    pki_types::{CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::error::TlsError;
use crate::tls_config::{certified_key, certified_key_from_pem};

/// A certificate chain (leaf first) and its private key, ready to present: what a
/// [`CertificateSource`] returns. Cheap to clone.
#[derive(Clone)]
pub struct Certificate(pub(crate) Arc<CertifiedKey>);

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("chain_len", &self.0.cert.len())
            .finish()
    }
}

impl Certificate {
    /// A chain (leaf first) and its private key, as DER; checks that they fit together.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        certified_key(chain, key).map(|key| Certificate(Arc::new(key)))
    }

    /// A chain (leaf first) and its private key, as PEM text.
    pub fn from_pem(chain: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        certified_key_from_pem(chain, key).map(|key| Certificate(Arc::new(key)))
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.0.cert
    }
}

/// What a TLS listener knows of a client when it picks the certificate: the server name (SNI) and
/// the application protocols (ALPN) the ClientHello offers.
#[derive(Debug, Clone)]
pub struct ClientHelloInfo<'a> {
    server_name: Option<&'a str>,
    alpn: Vec<&'a [u8]>,
}

impl<'a> ClientHelloInfo<'a> {
    /// The name the client asked for (SNI), if any (clients dialing an IP address send none).
    pub fn server_name(&self) -> Option<&'a str> {
        self.server_name
    }

    /// The application protocols the client offers (ALPN), in its order; empty if none.
    pub fn alpn(&self) -> &[&'a [u8]] {
        &self.alpn
    }

    /// Whether the client offers `protocol` (for example `b"acme-tls/1"`, an ACME TLS-ALPN-01
    /// validation).
    pub fn offers(&self, protocol: &[u8]) -> bool {
        self.alpn.contains(&protocol)
    }

    /// A ClientHello for tests of sources.
    pub fn new(server_name: Option<&'a str>, alpn: Vec<&'a [u8]>) -> Self {
        ClientHelloInfo { server_name, alpn }
    }
}

/// Where a TLS listener gets the certificate for each connection (this crate's own trait, so that
/// the public API does not follow rustls's resolver traits as they change).
///
/// Called once per inbound TLS handshake, on the connection's task: return quickly (look up what
/// is ready; obtain and renew certificates elsewhere). `None` refuses the handshake (the client
/// gets a TLS alert).
///
/// ```
/// use std::collections::HashMap;
/// use libp2p_ws::{Certificate, CertificateSource, ClientHelloInfo};
///
/// /// A certificate per name, and a default for clients that send no name.
/// #[derive(Debug)]
/// struct ByName {
///     names: HashMap<String, Certificate>,
///     default: Certificate,
/// }
///
/// impl CertificateSource for ByName {
///     fn certificate(&self, hello: &ClientHelloInfo<'_>) -> Option<Certificate> {
///         match hello.server_name() {
///             Some(name) => self.names.get(name).cloned(),
///             None => Some(self.default.clone()),
///         }
///     }
/// }
/// ```
pub trait CertificateSource: fmt::Debug + Send + Sync + 'static {
    /// The certificate to present to the client `hello` describes, or `None` to refuse it.
    fn certificate(&self, hello: &ClientHelloInfo<'_>) -> Option<Certificate>;

    /// The application protocols (ALPN) this source answers besides HTTP/1.1, for example
    /// `acme-tls/1` for a source that answers ACME TLS-ALPN-01 challenges (as
    /// `libp2p_ws::acme::AcmeCertificates` does, feature `acme`). Default: none, and the listener
    /// negotiates no ALPN at all. With some, the listener negotiates `http/1.1` or one of these;
    /// a client that offers only other protocols is refused (RFC 7301).
    fn alpn_protocols(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }

    /// The certificates this source presents now, for the metrics' expiry gauge (feature
    /// `metrics`). Default: none.
    fn served(&self) -> Vec<Certificate> {
        Vec::new()
    }
}

/// rustls's resolver over a [`CertificateSource`].
#[derive(Debug)]
pub(crate) struct SourceResolver(pub(crate) Arc<dyn CertificateSource>);

impl ResolvesServerCert for SourceResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let info = ClientHelloInfo {
            server_name: hello.server_name(),
            alpn: hello.alpn().map(|alpn| alpn.collect()).unwrap_or_default(),
        };
        let certificate = self.0.certificate(&info);
        if certificate.is_none() {
            tracing::debug!(server_name = ?info.server_name, "the certificate source has none; TLS refused");
        }
        certificate.map(|c| c.0)
    }
}

#[cfg(any(feature = "metrics", feature = "acme"))]
/// The DNS names (or, without any, the subject's common names) and the notAfter (Unix
/// seconds) of a DER certificate; `None` if it does not parse.
pub(crate) fn names_and_not_after(der: &[u8]) -> Option<(Vec<String>, i64)> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_string()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => {
                        Some(std::net::IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string())
                    }
                    16 => {
                        Some(std::net::IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string())
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_string))
            .collect();
    }
    Some((names, not_after))
}
