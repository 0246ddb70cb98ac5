//! AutoTLS (libp2p spec `tls/autotls-client.md`): a certificate for `*.<peer>.libp2p.direct`
//! from an ACME CA by DNS-01, the TXT record set by the registration broker once the node has
//! proven its peer id (`http/peer-id-auth.md`) and the broker has dialed it back.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use libp2p_core::{multiaddr::Protocol, Multiaddr};
use libp2p_identity::{Keypair, PeerId};
use serde_json::json;

use super::{https::Https, peer_id_auth, AcmeCertificates, AcmeConfig, AcmeError, AcmeTask};
use crate::{dns::DnsConfig, provider::Provider, TlsConfig};

/// The public registration broker.
pub const DEFAULT_BROKER: &str = "https://registration.libp2p.direct";
/// The domain the public broker serves.
pub const DEFAULT_FORGE_DOMAIN: &str = "libp2p.direct";
/// Let's Encrypt's production directory, the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The peer id as AutoTLS names it: multibase base36 (lower case, `k` first) of the CIDv1 of its
/// multihash with the `libp2p-key` codec (0x72).
pub fn base36_peer_id(peer: &PeerId) -> String {
    let mut cid = vec![0x01, 0x72];
    cid.extend_from_slice(&peer.to_bytes());
    multibase::encode(multibase::Base::Base36Lower, cid)
}

/// An IP address as an AutoTLS DNS label: dots (IPv4) or colons (IPv6, compressed form) become
/// dashes, a leading or trailing `::` gets a `0` (`2001:db8::` is `2001-db8--0`, `::1` is
/// `0--1`).
pub fn dashed_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => ip.to_string().replace('.', "-"),
        IpAddr::V6(ip) => {
            let mut text = ip.to_string();
            if text.starts_with(':') {
                text.insert(0, '0');
            }
            if text.ends_with(':') {
                text.push('0');
            }
            text.replace(':', "-")
        }
    }
}

/// The addresses a wildcard listener (`/tls/sni/*.<suffix>/ws` on `ip`:`port`) announces once a
/// certificate for `*.<domain>` is in use: `/ip4/<ip>/tcp/<port>/tls/sni/<dashed>.<domain>/ws` and
/// `/dns4/<dashed>.<domain>/tcp/<port>/tls/ws` (`/ip6`, `/dns6` for IPv6).
pub(crate) fn concrete_addresses(ip: IpAddr, port: u16, domain: &str) -> Vec<Multiaddr> {
    let name = format!("{}.{domain}", dashed_ip(ip));
    let (ip_protocol, dns_protocol) = match ip {
        IpAddr::V4(v4) => (Protocol::Ip4(v4), Protocol::Dns4(name.clone().into())),
        IpAddr::V6(v6) => (Protocol::Ip6(v6), Protocol::Dns6(name.clone().into())),
    };
    let by_ip = Multiaddr::empty()
        .with(ip_protocol)
        .with(Protocol::Tcp(port))
        .with(Protocol::Tls)
        .with(Protocol::Sni(name.into()))
        .with(Protocol::Ws("/".into()));
    let by_name = Multiaddr::empty()
        .with(dns_protocol)
        .with(Protocol::Tcp(port))
        .with(Protocol::Tls)
        .with(Protocol::Ws("/".into()));
    vec![by_ip, by_name]
}

/// The addresses the broker dials back to check that the node is reachable with its peer id:
/// set them from the swarm's listen addresses (`SwarmEvent::NewListenAddr`). Orders wait until
/// there is one the broker may dial (public, unless private ones are allowed). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct DialbackAddresses(Arc<Mutex<Vec<Multiaddr>>>);

impl DialbackAddresses {
    /// Adds an address (without `/p2p`), if it is not there yet.
    pub fn add(&self, addr: Multiaddr) {
        let addr = without_p2p(addr);
        let mut addrs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }

    /// Removes an address (an expired listen address).
    pub fn remove(&self, addr: &Multiaddr) {
        let addr = without_p2p(addr.clone());
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|a| *a != addr);
    }

    /// The addresses to send: public ones only (the spec: no private, loopback or relayed
    /// addresses), unless `private` allows every one but relayed ones (tests on loopback).
    pub(crate) fn to_send(&self, private: bool) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|addr| may_send(addr, private))
            .map(|addr| addr.to_string())
            .collect()
    }
}

fn without_p2p(mut addr: Multiaddr) -> Multiaddr {
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}

/// Whether the broker may be sent `addr`: never a relayed one or a wildcard listener's; else a
/// public IP (or, with `private`, any IP).
fn may_send(addr: &Multiaddr, private: bool) -> bool {
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return false;
    }
    if addr
        .iter()
        .any(|p| matches!(p, Protocol::Sni(name) if name.starts_with("*.")))
    {
        return false;
    }
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => private || is_public(IpAddr::V4(ip)),
        Some(Protocol::Ip6(ip)) => private || is_public(IpAddr::V6(ip)),
        _ => false,
    }
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            !(ip.is_private()
                || ip.is_loopback()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_documentation()
                || ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(ip) => {
            let segments = ip.segments();
            !(ip.is_loopback()
                || ip.is_unspecified()
                || (segments[0] & 0xfe00) == 0xfc00
                || (segments[0] & 0xffc0) == 0xfe80
                || (segments[0] == 0x64 && segments[1] == 0xff9b)
                || (segments[0] == 0x2001 && segments[1] == 0xdb8))
        }
    }
}

/// What to obtain by AutoTLS, and from where.
#[derive(Debug, Clone)]
pub struct AutoTls {
    keypair: Keypair,
    broker: String,
    broker_tls: TlsConfig,
    forge_domain: String,
    acme: AcmeConfig,
    private_addresses: bool,
    dns: DnsConfig,
    dns_timeout: Duration,
}

/// How long the node waits for the broker's TXT record to be visible in DNS before it asks the
/// CA to validate (the spec's `dns_timeout`).
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(180);

impl AutoTls {
    /// AutoTLS for the node whose identity is `keypair` (its peer id names the certificate),
    /// with the public broker and Let's Encrypt.
    pub fn new(keypair: Keypair) -> Self {
        let domain = format!(
            "*.{}.{DEFAULT_FORGE_DOMAIN}",
            base36_peer_id(&keypair.public().to_peer_id())
        );
        AutoTls {
            keypair,
            broker: DEFAULT_BROKER.into(),
            broker_tls: TlsConfig::new(),
            forge_domain: DEFAULT_FORGE_DOMAIN.into(),
            acme: AcmeConfig::new(LETS_ENCRYPT, [domain]),
            private_addresses: false,
            dns: DnsConfig::default(),
            dns_timeout: DEFAULT_DNS_TIMEOUT,
        }
    }

    /// The name servers the node asks whether the broker's TXT record is set, before it asks the
    /// CA to validate (the spec's DNS polling: 1 s, doubling, up to [`DEFAULT_DNS_TIMEOUT`]).
    /// Default: the system's.
    pub fn with_dns(mut self, dns: DnsConfig) -> Self {
        self.dns = dns;
        self
    }

    /// How long to wait for the TXT record (bounded by the order timeout too). Default:
    /// [`DEFAULT_DNS_TIMEOUT`].
    pub fn with_dns_timeout(mut self, timeout: Duration) -> Self {
        self.dns_timeout = timeout;
        self
    }

    /// The registration broker's URL (its `/v1/_acme-challenge` is used). Default:
    /// [`DEFAULT_BROKER`].
    pub fn with_broker(mut self, url: impl Into<String>) -> Self {
        self.broker = url.into().trim_end_matches('/').to_string();
        self
    }

    /// How the broker's TLS certificate is verified. Default: the Mozilla roots.
    pub fn with_broker_tls(mut self, tls: TlsConfig) -> Self {
        self.broker_tls = tls;
        self
    }

    /// The domain the broker serves. Default: [`DEFAULT_FORGE_DOMAIN`].
    pub fn with_forge_domain(mut self, domain: impl Into<String>) -> Self {
        self.forge_domain = domain.into();
        let name = format!("*.{}", self.domain());
        self.acme.names = vec![name];
        self
    }

    /// The ACME CA's settings (directory, trust, cache, renewal, retries); its names are
    /// replaced by the AutoTLS name. Default: Let's Encrypt, as [`AcmeConfig::new`] sets it.
    pub fn with_acme(mut self, acme: AcmeConfig) -> Self {
        let names = std::mem::take(&mut self.acme.names);
        self.acme = AcmeConfig { names, ..acme };
        self
    }

    /// Keeps the account key and the certificate in `dir` ([`AcmeConfig::with_cache_dir`]).
    pub fn with_cache_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.acme = self.acme.with_cache_dir(dir);
        self
    }

    /// Sends the broker private and loopback addresses too (tests on one machine; the public
    /// broker cannot dial them). Default: public addresses only.
    pub fn allow_private_addresses(mut self, allow: bool) -> Self {
        self.private_addresses = allow;
        self
    }

    /// `<base36 peer id>.<forge domain>`: the certificate is for `*.` this.
    pub fn domain(&self) -> String {
        format!(
            "{}.{}",
            base36_peer_id(&self.keypair.public().to_peer_id()),
            self.forge_domain
        )
    }

    /// Starts: the certificates for the listeners (give them to
    /// [`TlsConfig::with_acme_certificates`] so that wildcard listeners announce their concrete
    /// addresses), the addresses to fill for the broker's dial-back, and the task.
    pub fn start<P: Provider>(
        self,
    ) -> Result<(AcmeCertificates, DialbackAddresses, AcmeTask), AcmeError> {
        let https = Https {
            tls: self
                .broker_tls
                .client_config()
                .map_err(AcmeError::Certificate)?,
            timeout: self.acme.request_timeout,
        };
        let addresses = DialbackAddresses::default();
        let broker = Broker {
            url: format!("{}/v1/_acme-challenge", self.broker),
            https,
            keypair: self.keypair,
            bearer: Arc::new(Mutex::new(None)),
            addresses: addresses.clone(),
            private: self.private_addresses,
            dns: self.dns,
            dns_timeout: self.dns_timeout,
        };
        let (certificates, task) = self.acme.start_with::<P>(Some(broker))?;
        Ok((certificates, addresses, task))
    }
}

/// The broker client: Peer ID authentication, then the TXT value and the dial-back addresses.
#[derive(Clone)]
pub(crate) struct Broker {
    url: String,
    https: Https,
    keypair: Keypair,
    bearer: Arc<Mutex<Option<String>>>,
    addresses: DialbackAddresses,
    private: bool,
    dns: DnsConfig,
    dns_timeout: Duration,
}

impl Broker {
    /// Asks the broker to set `_acme-challenge.<domain>` to `txt` (waiting, up to `wait`, for a
    /// dial-back address first), then waits until DNS shows it.
    pub(crate) async fn register<P: Provider>(
        &self,
        domain: &str,
        txt: &str,
        wait: Duration,
    ) -> Result<(), AcmeError> {
        let deadline = std::time::Instant::now() + wait;
        self.send::<P>(txt, deadline).await?;
        let dns_deadline = deadline.min(std::time::Instant::now() + self.dns_timeout);
        self.await_txt::<P>(&format!("_acme-challenge.{domain}"), txt, dns_deadline)
            .await
    }

    /// Polls DNS for `txt` at `name` (1 s, doubling, at most 30 s apart) until `deadline`.
    async fn await_txt<P: Provider>(
        &self,
        name: &str,
        txt: &str,
        deadline: std::time::Instant,
    ) -> Result<(), AcmeError> {
        let resolver = P::dns_resolver(&self.dns);
        let mut pause = Duration::from_secs(1);
        loop {
            let seen = match resolver.txt::<P>(name).await {
                Ok(records) => records.iter().any(|r| r.as_slice() == txt.as_bytes()),
                Err(error) => {
                    tracing::debug!(%error, name, "the broker's TXT record is not visible yet");
                    false
                }
            };
            if seen {
                return Ok(());
            }
            let now = std::time::Instant::now();
            if now + pause > deadline {
                return Err(AcmeError::DnsRecordNotSet {
                    name: name.to_string(),
                });
            }
            P::timer(now + pause).await;
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }

    /// The registration request, authenticated.
    async fn send<P: Provider>(
        &self,
        txt: &str,
        deadline: std::time::Instant,
    ) -> Result<(), AcmeError> {
        let addresses = loop {
            let addresses = self.addresses.to_send(self.private);
            if !addresses.is_empty() {
                break addresses;
            }
            if std::time::Instant::now() >= deadline {
                return Err(AcmeError::NoDialbackAddress);
            }
            P::timer(std::time::Instant::now() + Duration::from_millis(200)).await;
        };
        let body = json!({ "value": txt, "addresses": addresses }).to_string();
        let bearer = self
            .bearer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(bearer) = bearer {
            let auth = format!(r#"{} bearer="{bearer}""#, peer_id_auth::SCHEME);
            let response = self.post::<P>(&body, Some(&auth)).await?;
            if response.status == 200 {
                return Ok(());
            }
            if response.status != 401 {
                return Err(self.refused(&response));
            }
        }
        self.authenticate::<P>(&body).await
    }

    /// The server-initiated handshake, with the registration as the request it authenticates.
    async fn authenticate<P: Provider>(&self, body: &str) -> Result<(), AcmeError> {
        let first = self.post::<P>(body, None).await?;
        let www = match (first.status, first.header("www-authenticate")) {
            (401, Some(www)) => www.to_string(),
            _ => return Err(self.refused(&first)),
        };
        let hostname = url::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let answer = peer_id_auth::answer_challenge(
            &self.keypair,
            &hostname,
            &www,
            peer_id_auth::random_challenge(),
        )
        .map_err(|e| self.auth_error(format!("{e:?}")))?;
        let response = self.post::<P>(body, Some(&answer.authorization)).await?;
        if response.status != 200 {
            return Err(self.refused(&response));
        }
        let info = response
            .header("authentication-info")
            .ok_or_else(|| self.auth_error("no Authentication-Info".into()))?;
        let bearer = peer_id_auth::check_server(&answer, &self.keypair.public(), &hostname, info)
            .map_err(|e| self.auth_error(format!("{e:?}")))?;
        *self.bearer.lock().unwrap_or_else(|e| e.into_inner()) = bearer;
        Ok(())
    }

    async fn post<P: Provider>(
        &self,
        body: &str,
        authorization: Option<&str>,
    ) -> Result<super::https::Response, AcmeError> {
        let mut headers = Vec::new();
        if let Some(authorization) = authorization {
            headers.push(("Authorization", authorization));
        }
        self.https
            .request_with::<P>(
                "POST",
                &self.url,
                Some("application/json"),
                &headers,
                body.as_bytes(),
            )
            .await
    }

    fn refused(&self, response: &super::https::Response) -> AcmeError {
        AcmeError::BrokerRefused {
            url: self.url.clone(),
            status: response.status,
            detail: String::from_utf8_lossy(&response.body)
                .chars()
                .take(200)
                .collect(),
        }
    }

    fn auth_error(&self, reason: String) -> AcmeError {
        AcmeError::BrokerAuthentication {
            url: self.url.clone(),
            reason,
        }
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("url", &self.url).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_in_base36() {
        let peer: PeerId = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
            .parse()
            .unwrap();
        let b36 = base36_peer_id(&peer);
        assert!(b36.starts_with("k51qzi5uqu5d"), "{b36}");
        assert!(b36
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        let (_, bytes) = multibase::decode(&b36).unwrap();
        assert_eq!(&bytes[..2], &[0x01, 0x72]);
        assert_eq!(PeerId::from_bytes(&bytes[2..]).unwrap(), peer);
    }

    #[test]
    fn dashed_ips_as_the_spec_writes_them() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(dashed_ip(ip("1.2.3.4")), "1-2-3-4");
        assert_eq!(dashed_ip(ip("2001:db8::1")), "2001-db8--1");
        assert_eq!(dashed_ip(ip("2001:db8::")), "2001-db8--0");
        assert_eq!(dashed_ip(ip("::1")), "0--1");
        assert_eq!(
            dashed_ip(ip("2001:db8:1:2:3:4:5:6")),
            "2001-db8-1-2-3-4-5-6"
        );
    }

    #[test]
    fn a_wildcard_listener_announces_both_forms() {
        let addrs = concrete_addresses("1.2.3.4".parse().unwrap(), 443, "k51x.libp2p.direct");
        let text: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            text,
            [
                "/ip4/1.2.3.4/tcp/443/tls/sni/1-2-3-4.k51x.libp2p.direct/ws",
                "/dns4/1-2-3-4.k51x.libp2p.direct/tcp/443/tls/ws"
            ]
        );
        let v6 = concrete_addresses("2001:db8::1".parse().unwrap(), 4001, "k.d");
        assert_eq!(
            v6[0].to_string(),
            "/ip6/2001:db8::1/tcp/4001/tls/sni/2001-db8--1.k.d/ws"
        );
        assert_eq!(v6[1].to_string(), "/dns6/2001-db8--1.k.d/tcp/4001/tls/ws");
    }

    #[test]
    fn only_public_addresses_are_sent_unless_private_ones_are_allowed() {
        let addrs = DialbackAddresses::default();
        for a in [
            "/ip4/127.0.0.1/tcp/4001",
            "/ip4/192.168.1.2/tcp/4001",
            "/ip4/100.64.0.1/tcp/4001",
            "/ip6/fd00::1/tcp/4001",
            "/ip6/64:ff9b::1.2.3.4/tcp/4001",
            "/ip4/8.8.8.8/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
            "/ip4/9.9.9.9/tcp/4001/tls/sni/*.libp2p.direct/ws",
            "/ip6/2606:4700::1/tcp/4001",
        ] {
            addrs.add(a.parse().unwrap());
        }
        addrs.add("/ip4/8.8.8.8/tcp/4001".parse().unwrap());
        assert_eq!(
            addrs.to_send(false),
            ["/ip4/8.8.8.8/tcp/4001", "/ip6/2606:4700::1/tcp/4001"]
        );
        assert_eq!(addrs.to_send(true).len(), 7);
        addrs.remove(&"/ip4/8.8.8.8/tcp/4001".parse().unwrap());
        assert_eq!(addrs.to_send(false), ["/ip6/2606:4700::1/tcp/4001"]);
    }
}
