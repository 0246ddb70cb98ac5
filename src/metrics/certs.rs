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

use crate::tls_source::names_and_not_after;

/// A function that gives the certificate chains presented now (each leaf first), with the
/// identity of the certificate or source it reads (each is watched once).
pub(crate) type Watched = (
    usize,
    Arc<dyn Fn() -> Vec<Vec<CertificateDer<'static>>> + Send + Sync>,
);

/// The collector of `tls_certificate_expiry_seconds`.
pub(crate) struct Expiry(pub(crate) Arc<Mutex<Vec<Watched>>>);

impl std::fmt::Debug for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Expiry")
    }
}

impl Collector for Expiry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let watched: Vec<Watched> = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut series: Vec<(String, i64)> = Vec::new();
        for chain in watched.iter().flat_map(|(_, f)| f()) {
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
