use std::{
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::gauge::ConstGauge,
    registry::Unit,
};
use rustls_pki_types::CertificateDer;

/// A function that gives the certificate chain presented now (leaf first), with the
/// identity of the certificate it reads (each is watched once).
pub(crate) type Watched = (
    usize,
    Arc<dyn Fn() -> Vec<CertificateDer<'static>> + Send + Sync>,
);

/// The collector of `tls_certificate_expiry_seconds`.
pub(crate) struct Expiry(pub(crate) Arc<Mutex<Vec<Watched>>>);

impl std::fmt::Debug for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Expiry")
    }
}

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

impl Collector for Expiry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let watched: Vec<Watched> = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut series: Vec<(String, i64)> = Vec::new();
        for chain in watched.iter().map(|(_, f)| f()) {
            let Some((names, not_after)) = chain.first().and_then(|leaf| names_and_not_after(leaf))
            else {
                continue;
            };
            for name in names {
                if !series.iter().any(|(n, _)| *n == name) {
                    series.push((name, not_after - now));
                }
            }
        }
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "tls_certificate_expiry",
            "Seconds until the TLS server certificate's leaf expires (notAfter), by served DNS name",
            Some(&Unit::Seconds),
            gauge.metric_type(),
        )?;
        for (name, seconds) in series {
            let labels = [("name", name.as_str())];
            let metric = family.encode_family(&labels)?;
            ConstGauge::new(seconds).encode(metric)?;
        }
        Ok(())
    }
}
