//! What the listener presents ([`AcmeCertificates`], a [`CertificateSource`]) and what survives a
//! restart (the cache directory: the account key, the certificate and its key; key files 0600).

use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    task::Waker,
    time::{Duration, SystemTime},
};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use super::{AcmeError, CertificateInfo};
use crate::tls_source::{Certificate, CertificateSource, ClientHelloInfo};

/// The ALPN protocol of a TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The certificates an ACME client keeps for the TLS listeners: the one in use, and the
/// challenge certificates of an order in progress. A [`CertificateSource`]: give it to
/// [`TlsConfig::with_acme_certificates`](crate::TlsConfig::with_acme_certificates). A
/// ClientHello that offers `acme-tls/1` alone (a CA validating a TLS-ALPN-01 challenge) gets the
/// challenge certificate of the name it asks for; every other one the certificate in use (none
/// before the first is obtained: such handshakes are refused). Cheap to clone.
#[derive(Clone, Default)]
pub struct AcmeCertificates(Arc<Inner>);

#[derive(Default)]
struct Inner {
    current: RwLock<Option<(Certificate, CertificateInfo)>>,
    challenges: Mutex<HashMap<String, Certificate>>,
    /// Bumped at each install; the listeners waiting for a change.
    version: AtomicU64,
    watchers: Mutex<Vec<Waker>>,
}

impl std::fmt::Debug for AcmeCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeCertificates")
            .field("current", &self.info())
            .finish_non_exhaustive()
    }
}

impl AcmeCertificates {
    /// The certificate in use, if one has been obtained (or loaded from the cache).
    pub fn current(&self) -> Option<Certificate> {
        read(&self.0.current).map(|(certificate, _)| certificate)
    }

    /// The names and expiry of the certificate in use.
    pub fn info(&self) -> Option<CertificateInfo> {
        read(&self.0.current).map(|(_, info)| info)
    }

    pub(crate) fn install(&self, certificate: Certificate, info: CertificateInfo) {
        let mut current = match self.0.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *current = Some((certificate, info));
        drop(current);
        self.0.version.fetch_add(1, Ordering::SeqCst);
        for waker in lock(&self.0.watchers).drain(..) {
            waker.wake();
        }
    }

    /// The install count; `waker` is woken at the next install.
    pub(crate) fn watch(&self, waker: &Waker) -> u64 {
        let mut watchers = lock(&self.0.watchers);
        if !watchers.iter().any(|w| w.will_wake(waker)) {
            watchers.push(waker.clone());
        }
        self.0.version.load(Ordering::SeqCst)
    }

    /// `X`, when the certificate in use is for `*.X` and `X` ends in `.<suffix>`.
    pub(crate) fn wildcard_domain(&self, suffix: &str) -> Option<String> {
        let info = self.info()?;
        let tail = format!(".{}", suffix.to_ascii_lowercase());
        info.names.iter().find_map(|name| {
            let domain = name.strip_prefix("*.")?.to_ascii_lowercase();
            domain.ends_with(&tail).then_some(domain)
        })
    }

    /// Presents the TLS-ALPN-01 challenge certificate for `name` until the guard is dropped.
    pub(crate) fn answer_challenge(
        &self,
        name: &str,
        key_authorization: &str,
    ) -> Result<Answering, AcmeError> {
        let certificate = challenge_certificate(name, key_authorization)?;
        lock(&self.0.challenges).insert(name.to_ascii_lowercase(), certificate);
        Ok(Answering {
            certificates: self.clone(),
            name: name.to_ascii_lowercase(),
        })
    }
}

/// A challenge certificate being presented; removed when this is dropped.
pub(crate) struct Answering {
    certificates: AcmeCertificates,
    name: String,
}

impl Drop for Answering {
    fn drop(&mut self) {
        lock(&self.certificates.0.challenges).remove(&self.name);
    }
}

impl CertificateSource for AcmeCertificates {
    fn certificate(&self, hello: &ClientHelloInfo<'_>) -> Option<Certificate> {
        // A validation offers acme-tls/1 alone (RFC 8737 section 3); a client that offers it
        // among others is not one, and gets the certificate in use.
        if hello.alpn() == [ACME_TLS_ALPN] {
            let name = hello.server_name()?.to_ascii_lowercase();
            return lock(&self.0.challenges).get(&name).cloned();
        }
        self.current()
    }

    fn alpn_protocols(&self) -> Vec<Vec<u8>> {
        vec![ACME_TLS_ALPN.to_vec()]
    }

    fn served(&self) -> Vec<Certificate> {
        self.current().into_iter().collect()
    }
}

fn read<T: Clone>(lock: &RwLock<Option<T>>) -> Option<T> {
    match lock.read() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The self-signed certificate of a TLS-ALPN-01 challenge: `name` as its only SAN and the
/// critical acmeIdentifier extension holding the SHA-256 of the key authorization (RFC 8737
/// section 3).
pub(crate) fn challenge_certificate(
    name: &str,
    key_authorization: &str,
) -> Result<Certificate, AcmeError> {
    let digest = ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
    let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
        .map_err(|e| AcmeError::Key(e.to_string()))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest.as_ref())];
    let certificate = params
        .self_signed(&key)
        .map_err(|e| AcmeError::Key(e.to_string()))?;
    crate::tls_config::certified_key_unchecked(
        vec![certificate.der().clone()],
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .map(|key| Certificate(Arc::new(key)))
    .map_err(AcmeError::Certificate)
}

/// A chain (PEM) and key (PEM) as a certificate, with its names and expiry.
pub(crate) fn certificate_from_pem(
    chain: &str,
    key: &str,
) -> Result<(Certificate, CertificateInfo), AcmeError> {
    let certificate =
        Certificate::from_pem(chain.as_bytes(), key.as_bytes()).map_err(AcmeError::Certificate)?;
    let info = info_of(certificate.chain().first())?;
    Ok((certificate, info))
}

fn info_of(leaf: Option<&CertificateDer<'_>>) -> Result<CertificateInfo, AcmeError> {
    let (names, not_after) = leaf
        .and_then(|leaf| crate::tls_source::names_and_not_after(leaf))
        .ok_or_else(|| AcmeError::Key("the certificate does not parse".into()))?;
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(not_after.max(0) as u64);
    Ok(CertificateInfo { names, not_after })
}

/// The cache directory's files.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Cache { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The account key, if one was saved (`Ok(None)` when there is no file).
    pub(crate) fn account_key(&self) -> Result<Option<Vec<u8>>, AcmeError> {
        let path = self.path("account.key");
        match fs::read(&path) {
            Ok(pem) => PrivateKeyDer::from_pem_slice(&pem)
                .map(|key| Some(key.secret_der().to_vec()))
                .map_err(|e| cache_error(&path, io::Error::other(e.to_string()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(cache_error(&path, e)),
        }
    }

    pub(crate) fn save_account_key(&self, pkcs8: &[u8]) -> Result<(), AcmeError> {
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.to_vec()));
        self.write("account.key", pem.as_bytes(), true)
    }

    /// The certificate saved for `names` (chain PEM, key PEM), if any.
    pub(crate) fn certificate(&self, names: &[String]) -> Option<(String, String)> {
        let stem = stem(names);
        let chain = fs::read_to_string(self.path(&format!("{stem}.crt"))).ok()?;
        let key = fs::read_to_string(self.path(&format!("{stem}.key"))).ok()?;
        Some((chain, key))
    }

    pub(crate) fn save_certificate(
        &self,
        names: &[String],
        chain: &str,
        key: &str,
    ) -> Result<(), AcmeError> {
        let stem = stem(names);
        self.write(&format!("{stem}.key"), key.as_bytes(), true)?;
        self.write(&format!("{stem}.crt"), chain.as_bytes(), false)
    }

    /// Writes `file` whole or not at all (a temporary file renamed over it); `secret` files are
    /// readable by their owner only (0600 on Unix) from their creation.
    fn write(&self, file: &str, contents: &[u8], secret: bool) -> Result<(), AcmeError> {
        fs::create_dir_all(&self.dir).map_err(|e| cache_error(&self.dir, e))?;
        let path = self.path(file);
        let temporary = self.path(&format!(".{file}.tmp"));
        let _ = fs::remove_file(&temporary);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if secret { 0o600 } else { 0o644 });
        }
        #[cfg(not(unix))]
        let _ = secret;
        let result = options.open(&temporary).and_then(|mut f| {
            io::Write::write_all(&mut f, contents)?;
            f.sync_all()
        });
        result
            .and_then(|()| fs::rename(&temporary, &path))
            .map_err(|e| cache_error(&path, e))
    }
}

/// The file name stem of a certificate for `names`: the first name, with `*` as `_`.
fn stem(names: &[String]) -> String {
    let first = names.first().map(String::as_str).unwrap_or("certificate");
    first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn cache_error(path: &Path, source: io::Error) -> AcmeError {
    AcmeError::Cache {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_certificates_carry_the_digest_and_are_offered_only_for_acme_tls() {
        let certificates = AcmeCertificates::default();
        let hello = ClientHelloInfo::new(Some("node.test"), vec![ACME_TLS_ALPN]);
        assert!(certificates.certificate(&hello).is_none());
        let guard = certificates
            .answer_challenge("Node.Test", "tok.thumb")
            .unwrap();
        let challenge = certificates
            .certificate(&hello)
            .expect("the challenge certificate");
        let der = challenge.chain()[0].as_ref();
        let digest = ring::digest::digest(&ring::digest::SHA256, b"tok.thumb");
        // The acmeIdentifier OID 1.3.6.1.5.5.7.1.31, then the digest as an OCTET STRING.
        let oid = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1f];
        assert!(der.windows(oid.len()).any(|w| w == oid));
        let mut octets = vec![0x04, 0x20];
        octets.extend_from_slice(digest.as_ref());
        assert!(der.windows(octets.len()).any(|w| w == octets.as_slice()));
        // Another name, or a normal hello, gets no challenge certificate.
        let other = ClientHelloInfo::new(Some("other.test"), vec![ACME_TLS_ALPN]);
        assert!(certificates.certificate(&other).is_none());
        let normal = ClientHelloInfo::new(Some("node.test"), vec![b"http/1.1"]);
        assert!(certificates.certificate(&normal).is_none());
        let both = ClientHelloInfo::new(Some("node.test"), vec![b"http/1.1", ACME_TLS_ALPN]);
        assert!(certificates.certificate(&both).is_none());
        drop(guard);
        assert!(certificates.certificate(&hello).is_none());
    }

    #[test]
    fn the_cache_keeps_keys_private_and_files_whole() {
        let dir = std::env::temp_dir().join(format!("libp2p-ws-acme-cache-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let cache = Cache::new(dir.clone());
        assert!(cache.account_key().unwrap().is_none());
        let key = super::super::jws::AccountKey::generate().unwrap();
        cache.save_account_key(key.pkcs8()).unwrap();
        assert_eq!(cache.account_key().unwrap().as_deref(), Some(key.pkcs8()));
        let names = vec!["*.example".to_string()];
        assert!(cache.certificate(&names).is_none());
        cache.save_certificate(&names, "CHAIN", "KEY").unwrap();
        assert_eq!(
            cache.certificate(&names),
            Some(("CHAIN".to_string(), "KEY".to_string()))
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for file in ["account.key", "_.example.key"] {
                let mode = fs::metadata(dir.join(file)).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{file}");
            }
        }
        fs::write(dir.join("account.key"), "not pem").unwrap();
        assert!(matches!(cache.account_key(), Err(AcmeError::Cache { .. })));
        let _ = fs::remove_dir_all(&dir);
    }
}
