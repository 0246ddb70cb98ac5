//! A libp2p ping node over libp2p-ws, on async-std (default) or tokio (`--runtime tokio`).
//!
//! With no arguments: a self-contained demo. Two nodes in this process on 127.0.0.1; the second pings
//! the first three times over `/ws`, then three times over `/tls/ws` (a throwaway CA made with rcgen,
//! trusted by the dialer), and the process exits 0.
//!
//! Scriptable use (stdout lines: `listening <addr>/p2p/<id>`, `connected <peer-id> <addr>`,
//! `ping <peer-id> <rtt-ms>`; logs on stderr with RUST_LOG):
//!
//! ```text
//! cargo run --example ping -- --listen /ip4/127.0.0.1/tcp/0/ws
//! cargo run --example ping -- --dial /ip4/127.0.0.1/tcp/4001/ws/p2p/12D3... --count 3
//! cargo run --example ping -- --listen /ip4/0.0.0.0/tcp/443/tls/ws --cert chain.pem --key key.pem
//! cargo run --example ping -- --dial /dns/example.com/wss --ca ca.pem --count 3
//! # one port for plain TCP, /ws and /tls/ws (one socket; each connection goes by its first bytes)
//! cargo run --example ping -- --listen /ip4/0.0.0.0/tcp/4001 --listen /ip4/0.0.0.0/tcp/4001/tls/ws \
//!     --cert chain.pem --key key.pem
//! cargo run --example ping -- --dial /ip4/127.0.0.1/tcp/4001/p2p/12D3... --count 3
//! ```
//!
//! Several `--listen` addresses on the same port share one socket; `/tcp/0` addresses are never
//! shared (each gets a port of its own).
//!
//! Behind a reverse proxy (nginx, haproxy) that names the client, the listener's `connected` lines
//! show the client's address:
//!
//! ```text
//! cargo run --example ping -- --listen /ip4/127.0.0.1/tcp/4001/ws --trusted-proxy 127.0.0.1/32 \
//!     --proxy-protocol optional
//! ```
//!
//! Names from a given name server (`/dnsaddr` TXT records, `/dns*` names):
//!
//! ```text
//! cargo run --example ping -- --dns-server 127.0.0.1:5353 --dial /dnsaddr/boot.example/p2p/12D3...
//! ```
//!
//! Metrics and a health check on each WebSocket listener's port (`GET /metrics`, `GET /healthz`):
//!
//! ```text
//! cargo run --example ping -- --listen /ip4/127.0.0.1/tcp/4001/ws --metrics
//! curl http://127.0.0.1:4001/metrics
//! ```
//!
//! A certificate from an ACME CA (Let's Encrypt here; TLS-ALPN-01 on port 443, so the listener
//! must be reachable there by the name), printed as `certificate <name> <not-after>` when it
//! comes into use and on each renewal:
//!
//! ```text
//! cargo run --example ping -- --listen /ip4/0.0.0.0/tcp/443/tls/ws \
//!     --acme https://acme-v02.api.letsencrypt.org/directory --acme-domain node.example.com \
//!     --acme-cache /var/lib/ping/acme
//! ```
//!
//! AutoTLS: a certificate for `*.<base36 peer id>.libp2p.direct` (the libp2p.direct broker sets
//! the DNS-01 record after dialing the node back on its public addresses); the wildcard listen
//! address announces `/ip4/<ip>/tcp/4002/tls/sni/<ip-dashed>.<peer>.libp2p.direct/ws` and
//! `/dns4/<ip-dashed>.<peer>.libp2p.direct/tcp/4002/tls/ws` once the certificate is in use:
//!
//! ```text
//! cargo run --example ping -- --listen /ip4/0.0.0.0/tcp/4001 \
//!     --listen /ip4/0.0.0.0/tcp/4002/tls/sni/*.libp2p.direct/ws --autotls
//! ```
//!
//! Dialing through a forward proxy (HTTP CONNECT or SOCKS5; TLS stays end to end with the peer):
//!
//! ```text
//! cargo run --example ping -- --proxy socks5h://127.0.0.1:1080 --dial /dns/example.com/wss/p2p/12D3...
//! cargo run --example ping -- --proxy http://user:pass@proxy:3128 --dial /ip4/203.0.113.7/tcp/443/tls/ws/p2p/12D3...
//! # HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY, as curl reads them
//! HTTPS_PROXY=http://proxy:3128 cargo run --example ping -- --proxy env --dial /dns/example.com/wss/p2p/12D3...
//! ```

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;
use futures::StreamExt;
use libp2p::{
    core::{muxing::StreamMuxerBox, Multiaddr, Transport as _},
    identity::Keypair,
    ping,
    swarm::{DialError, Swarm, SwarmEvent},
};
use libp2p_ws::{
    acme::{AcmeConfig, AcmeEvent, AcmeTask, AutoTls, DialbackAddresses},
    dns::DnsConfig,
    forwarded::{ProxyProtocol, ReverseProxy},
    http::Http,
    proxy::{Proxy, ProxyEnv},
    tls::dev::TestCa,
    Config, Report, ServerCertificate, TlsConfig,
};

#[derive(Parser, Debug)]
#[command(about = "A libp2p ping node over WebSockets (libp2p-ws)")]
struct Args {
    /// Listen on this address (repeatable).
    #[arg(long, value_parser = parse_multiaddr)]
    listen: Vec<Multiaddr>,
    /// Dial this address and ping the peer.
    #[arg(long, value_parser = parse_multiaddr)]
    dial: Option<Multiaddr>,
    /// With --dial: exit 0 after this many successful pings.
    #[arg(long)]
    count: Option<u32>,
    /// With --dial: fail if the pings have not completed within this many seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// PEM certificate chain for TLS listen addresses (/tls/ws, /wss).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// PEM file of an extra root certificate to trust when dialing TLS addresses.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Dial through this proxy: http://[user:pass@]host:port (HTTP CONNECT),
    /// socks5://... or socks5h://... (SOCKS5; socks5h lets the proxy resolve names), or `env`
    /// for HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY.
    #[arg(long)]
    proxy: Option<String>,
    /// Trust this network (CIDR, or one address) as reverse proxies that may name the client
    /// (PROXY protocol, Forwarded, X-Forwarded-For, X-Real-IP); repeatable.
    #[arg(long = "trusted-proxy")]
    trusted_proxy: Vec<libp2p_ws::proxy::IpNet>,
    /// With --trusted-proxy: whether listeners read a PROXY protocol header (v1 or v2).
    #[arg(long, value_enum, default_value_t = ProxyProtocolArg::Off)]
    proxy_protocol: ProxyProtocolArg,
    /// Allow plain /ws listeners on non-loopback addresses (behind a TLS-terminating proxy).
    #[arg(long)]
    insecure_listen: bool,
    /// Use this name server (ip:port) for /dnsaddr and /dns* names instead of the system's
    /// (repeatable).
    #[arg(long = "dns-server")]
    dns_server: Vec<std::net::SocketAddr>,
    /// Serve `/metrics` (Prometheus text of this node's libp2p-ws metrics) and `/healthz` on each
    /// WebSocket listener (/ws, /tls/ws), beside the upgrades.
    #[arg(long)]
    metrics: bool,
    /// Obtain the TLS listeners' certificate from this ACME directory (TLS-ALPN-01, answered on
    /// the /tls/ws listener's port; the CA validates on port 443 of each name), and renew it.
    #[arg(long, requires = "acme_domain", conflicts_with = "cert")]
    acme: Option<String>,
    /// With --acme: a name to obtain the certificate for (repeatable).
    #[arg(long = "acme-domain", requires = "acme")]
    acme_domain: Vec<String>,
    /// With --acme or --autotls: a PEM file of a root to trust for the ACME directory (and the
    /// AutoTLS broker): a staging or test CA.
    #[arg(long = "acme-ca")]
    acme_ca: Option<PathBuf>,
    /// With --acme or --autotls: keep the account key and the certificate here, to reuse them
    /// after a restart.
    #[arg(long = "acme-cache")]
    acme_cache: Option<PathBuf>,
    /// AutoTLS: obtain a certificate for `*.<base36 peer id>.libp2p.direct` (DNS-01 through the
    /// registration broker, which dials this node back), for wildcard listen addresses
    /// (`/tls/sni/*.libp2p.direct/ws`), which then announce their concrete addresses.
    #[arg(long, conflicts_with_all = ["acme", "cert"])]
    autotls: bool,
    /// With --autotls: the registration broker (default: https://registration.libp2p.direct).
    #[arg(long = "autotls-broker", requires = "autotls")]
    autotls_broker: Option<String>,
    /// With --autotls: the ACME directory (default: Let's Encrypt).
    #[arg(long = "autotls-ca", requires = "autotls")]
    autotls_ca: Option<String>,
    /// With --autotls: also give the broker private and loopback listen addresses to dial
    /// back (a broker on the same machine or network).
    #[arg(long = "autotls-private-addresses", requires = "autotls")]
    autotls_private_addresses: bool,
    /// Keep the node's identity (its ed25519 key, protobuf-encoded) in this file: read when it
    /// exists, else made and written (0600). An AutoTLS certificate names one peer id, so a node
    /// that reuses its certificates across restarts needs its identity too.
    #[arg(long)]
    identity: Option<PathBuf>,
    /// The async runtime the node runs on: async-std (Swarm::new) or tokio (SwarmBuilder).
    #[arg(long, value_enum, default_value_t = Runtime::AsyncStd)]
    runtime: Runtime,
}

/// `--proxy-protocol`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ProxyProtocolArg {
    /// No PROXY header is read.
    Off,
    /// A PROXY header is read when a connection starts with one.
    Optional,
    /// Every connection must start with a PROXY header.
    Required,
}

/// The runtimes the node can run on.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Runtime {
    /// async-std: `libp2p_ws::async_std::upgraded` in `Swarm::new`.
    AsyncStd,
    /// tokio (multi-thread): `libp2p_ws::tokio::constructor` in `SwarmBuilder::with_tokio`.
    Tokio,
}

impl Runtime {
    /// Runs `future` to completion on this runtime.
    fn block_on<F: std::future::Future>(self, future: F) -> F::Output {
        match self {
            Runtime::AsyncStd => async_std::task::block_on(future),
            Runtime::Tokio => tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(future),
        }
    }

    /// Runs `future` for at most `limit` with this runtime's timer; `None` when the time ran out.
    async fn timeout<F: std::future::Future>(
        self,
        limit: Duration,
        future: F,
    ) -> Option<F::Output> {
        match self {
            Runtime::AsyncStd => async_std::future::timeout(limit, future).await.ok(),
            Runtime::Tokio => tokio::time::timeout(limit, future).await.ok(),
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = args.runtime;
    let result = runtime.block_on(async {
        if args.listen.is_empty() && args.dial.is_none() {
            demo(runtime).await
        } else {
            run(args).await
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Each distinct message once (rust-libp2p's layers repeat theirs).
            eprintln!("error: {}", Report(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Parses a multiaddress, saying what is wrong with the usual mistakes (the multiaddr crate says
/// only "invalid protocol string").
fn parse_multiaddr(text: &str) -> Result<Multiaddr, String> {
    text.parse().map_err(|e| {
        let last = text.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        let hint = match last {
            "http-path" => ": /http-path needs a value (a percent-encoded path, e.g. /http-path/a%2Fb); omit it for the root path",
            "sni" => ": /sni needs a host name (/tls/sni/<name>/ws)",
            "tcp" => ": /tcp needs a port number",
            "p2p" => ": /p2p needs a peer id",
            "ip4" | "ip6" | "dns" | "dns4" | "dns6" => ": the host part needs a value",
            _ => "",
        };
        format!("{e}{hint}")
    })
}

/// A dial error's text: for each address tried, what failed, each message once.
fn dial_error_text(error: &DialError) -> String {
    match error {
        DialError::Transport(errors) => errors
            .iter()
            .map(|(addr, error)| format!("{addr}: {}", Report(error)))
            .collect::<Vec<_>>()
            .join("; "),
        other => Report(other).to_string(),
    }
}

fn new_swarm(runtime: Runtime, config: Config) -> anyhow::Result<Swarm<ping::Behaviour>> {
    new_swarm_with(runtime, config, Keypair::generate_ed25519())
}

fn new_swarm_with(
    runtime: Runtime,
    config: Config,
    keypair: Keypair,
) -> anyhow::Result<Swarm<ping::Behaviour>> {
    let behaviour =
        ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(300)));
    let idle = Duration::from_secs(60);
    match runtime {
        Runtime::AsyncStd => {
            let peer_id = keypair.public().to_peer_id();
            let transport = libp2p_ws::async_std::upgraded(&keypair, config)?;
            let config = libp2p::swarm::Config::with_executor(|f| {
                async_std::task::spawn(f);
            })
            .with_idle_connection_timeout(idle);
            Ok(Swarm::new(transport, behaviour, peer_id, config))
        }
        // As the README recommends for an app with other transports: QUIC beside this one under
        // its DNS layer (no `with_dns()`, which would resolve WebSocket names first).
        Runtime::Tokio => Ok(libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(libp2p_ws::tokio::constructor_with(config, |key| {
                Ok(
                    libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key))
                        .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn))),
                )
            }))?
            .with_behaviour(|_| behaviour)?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build()),
    }
}

/// What one swarm event means for the CLI; prints the stdout lines of the contract.
enum Step {
    Nothing,
    Pinged,
}

fn report(
    swarm: &Swarm<ping::Behaviour>,
    event: SwarmEvent<ping::Event>,
    quiet: bool,
) -> anyhow::Result<Step> {
    match event {
        SwarmEvent::NewListenAddr { address, .. } => {
            println!("listening {address}/p2p/{}", swarm.local_peer_id());
        }
        SwarmEvent::ConnectionEstablished {
            peer_id, endpoint, ..
        } if !quiet => {
            println!("connected {peer_id} {}", endpoint.get_remote_address());
        }
        SwarmEvent::Behaviour(ping::Event {
            peer,
            result: Ok(rtt),
            ..
        }) if !quiet => {
            println!("ping {peer} {:.3}", rtt.as_secs_f64() * 1000.0);
            return Ok(Step::Pinged);
        }
        SwarmEvent::Behaviour(ping::Event {
            peer,
            result: Err(e),
            ..
        }) if !quiet => {
            bail!("ping to {peer} failed: {e}");
        }
        SwarmEvent::OutgoingConnectionError { error, .. } => {
            bail!("dial failed: {}", dial_error_text(&error))
        }
        SwarmEvent::ListenerError { error, .. } => bail!("listener failed: {}", Report(&error)),
        SwarmEvent::ListenerClosed { reason: Err(e), .. } => {
            bail!("listener closed: {}", Report(&e))
        }
        SwarmEvent::IncomingConnectionError {
            error,
            send_back_addr,
            ..
        } => {
            // The cause (eviction, a timeout, a refused request), not only the swarm's summary.
            let error = Report(&error);
            tracing::warn!(%send_back_addr, %error, "incoming connection failed");
        }
        other => tracing::debug!(?other, "swarm event"),
    }
    Ok(Step::Nothing)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut tls = TlsConfig::new();
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        let certificate = ServerCertificate::from_pem_files(cert, key)?;
        tls = tls.with_server_certificate(&certificate);
    }
    if let Some(ca) = &args.ca {
        tls = tls.add_root_pem_file(ca)?;
    }
    let keypair = match &args.identity {
        Some(path) => identity(path).with_context(|| format!("--identity {}", path.display()))?,
        None => Keypair::generate_ed25519(),
    };
    let (mut acme, mut dialback) = (None, None);
    if let Some(directory) = &args.acme {
        let (certificates, task) = start_acme(&args, directory)?;
        tls = tls.with_acme_certificates(&certificates);
        acme = Some(task);
    } else if args.autotls {
        let (certificates, addresses, task) = start_autotls(&args, &keypair)?;
        tls = tls.with_acme_certificates(&certificates);
        acme = Some(task);
        dialback = Some(addresses);
    } else if args.acme_ca.is_some() || args.acme_cache.is_some() {
        bail!("--acme-ca and --acme-cache need --acme or --autotls");
    }
    let mut acme = acme
        .map_or_else(|| futures::stream::pending().boxed(), StreamExt::boxed)
        .fuse();
    let mut config = Config::default()
        .with_tls(tls)
        .danger_insecure_listen(args.insecure_listen);
    if !args.dns_server.is_empty() {
        config = config.with_dns(DnsConfig::default().with_name_servers(args.dns_server.clone()));
    }
    if !args.trusted_proxy.is_empty() {
        let mode = match args.proxy_protocol {
            ProxyProtocolArg::Off => ProxyProtocol::Off,
            ProxyProtocolArg::Optional => ProxyProtocol::Optional,
            ProxyProtocolArg::Required => ProxyProtocol::Required,
        };
        config = config.with_reverse_proxy(
            ReverseProxy::new(args.trusted_proxy.iter().copied()).with_proxy_protocol(mode),
        );
    } else if args.proxy_protocol != ProxyProtocolArg::Off {
        bail!("--proxy-protocol needs --trusted-proxy");
    }
    if args.metrics {
        let mut registry = prometheus_client::registry::Registry::default();
        config = config.with_metrics(&mut registry);
        let registry = std::sync::Arc::new(std::sync::Mutex::new(registry));
        config = config.with_http(Http::new().with_health().with_metrics(registry));
    }
    match args.proxy.as_deref() {
        None => {}
        Some("env") => {
            config = config.with_proxy_env(ProxyEnv::from_env().context("--proxy env")?);
        }
        Some(url) => {
            let proxy: Proxy = url.parse().with_context(|| format!("--proxy {url}"))?;
            config = config.with_proxy(proxy);
        }
    }
    let mut swarm = new_swarm_with(args.runtime, config, keypair)?;
    eprintln!("local peer id {}", swarm.local_peer_id());
    for addr in &args.listen {
        swarm
            .listen_on(addr.clone())
            .with_context(|| format!("cannot listen on {addr}"))?;
    }
    let Some(target) = args.dial else {
        loop {
            let event = futures::select! {
                event = swarm.select_next_some() => event,
                event = acme.select_next_some() => { acme_report(event); continue; }
            };
            observe(&event, dialback.as_ref());
            if let Err(e) = report(&swarm, event, false) {
                // A listener keeps serving other peers when one of them fails.
                tracing::warn!("{e:#}");
            }
        }
    };
    swarm
        .dial(target.clone())
        .with_context(|| format!("cannot dial {target}"))?;
    let count = args.count.unwrap_or(u32::MAX);
    let limit = Duration::from_secs(args.timeout);
    let pings = async {
        let mut seen = 0;
        while seen < count {
            let event = futures::select! {
                event = swarm.select_next_some() => event,
                event = acme.select_next_some() => { acme_report(event); continue; }
            };
            observe(&event, dialback.as_ref());
            if let Step::Pinged = report(&swarm, event, false)? {
                seen += 1;
            }
        }
        anyhow::Ok(())
    };
    args.runtime.timeout(limit, pings).await.ok_or_else(|| {
        anyhow!(
            "timed out after {}s waiting for {count} pings from {target}",
            args.timeout
        )
    })?
}

/// `--identity`: the key in `path`, or a new one written there (readable by its owner only).
fn identity(path: &std::path::Path) -> anyhow::Result<Keypair> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Keypair::from_protobuf_encoding(&bytes)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path)?;
            std::io::Write::write_all(&mut file, &keypair.to_protobuf_encoding()?)?;
            Ok(keypair)
        }
        Err(e) => Err(e.into()),
    }
}

/// `--acme`: the certificates for the TLS listeners and the task that obtains them, on the
/// node's runtime.
fn start_acme(
    args: &Args,
    directory: &str,
) -> anyhow::Result<(libp2p_ws::acme::AcmeCertificates, AcmeTask)> {
    let mut acme = AcmeConfig::new(directory, args.acme_domain.iter().cloned());
    if let Some(ca) = &args.acme_ca {
        acme = acme.add_directory_root_pem_file(ca).context("--acme-ca")?;
    }
    if let Some(dir) = &args.acme_cache {
        acme = acme.with_cache_dir(dir);
    }
    let started = match args.runtime {
        Runtime::AsyncStd => acme.start::<libp2p_ws::async_std::Provider>(),
        Runtime::Tokio => acme.start::<libp2p_ws::tokio::Provider>(),
    };
    started.context("--acme")
}

/// `--autotls`: the certificates, the broker's dial-back addresses and the task.
fn start_autotls(
    args: &Args,
    keypair: &Keypair,
) -> anyhow::Result<(
    libp2p_ws::acme::AcmeCertificates,
    DialbackAddresses,
    AcmeTask,
)> {
    let directory = args
        .autotls_ca
        .as_deref()
        .unwrap_or(libp2p_ws::acme::LETS_ENCRYPT);
    let mut acme = AcmeConfig::new(directory, Vec::<String>::new());
    let mut broker_tls = TlsConfig::new();
    if let Some(ca) = &args.acme_ca {
        acme = acme.add_directory_root_pem_file(ca).context("--acme-ca")?;
        broker_tls = broker_tls.add_root_pem_file(ca).context("--acme-ca")?;
    }
    if let Some(dir) = &args.acme_cache {
        acme = acme.with_cache_dir(dir);
    }
    let mut autotls = AutoTls::new(keypair.clone())
        .with_acme(acme)
        .with_broker_tls(broker_tls)
        .allow_private_addresses(args.autotls_private_addresses);
    if !args.dns_server.is_empty() {
        // The broker's TXT record is looked up there before the CA is asked to validate.
        autotls = autotls.with_dns(DnsConfig::default().with_name_servers(args.dns_server.clone()));
    }
    if let Some(broker) = &args.autotls_broker {
        autotls = autotls.with_broker(broker);
    }
    let started = match args.runtime {
        Runtime::AsyncStd => autotls.start::<libp2p_ws::async_std::Provider>(),
        Runtime::Tokio => autotls.start::<libp2p_ws::tokio::Provider>(),
    };
    started.context("--autotls")
}

/// Gives the AutoTLS broker the node's listen addresses to dial back.
fn observe(event: &SwarmEvent<ping::Event>, dialback: Option<&DialbackAddresses>) {
    let Some(dialback) = dialback else { return };
    match event {
        SwarmEvent::NewListenAddr { address, .. } => dialback.add(address.clone()),
        SwarmEvent::ExpiredListenAddr { address, .. } => dialback.remove(address),
        _ => {}
    }
}

/// Prints `certificate <name> <not-after>` for each name of a certificate that came into use;
/// a failed order is logged (the task retries it).
fn acme_report(event: AcmeEvent) {
    match event.in_use() {
        Some(info) => {
            for name in &info.names {
                println!("certificate {name} {}", info.not_after_rfc3339());
            }
        }
        None => {
            if let AcmeEvent::Failed { error, retry_in } = event {
                eprintln!("acme: {}; retrying in {retry_in:?}", Report(&error));
            }
        }
    }
}

/// Two nodes in one process: ping over /ws, then over /tls/ws.
async fn demo(runtime: Runtime) -> anyhow::Result<()> {
    let ca = TestCa::new("libp2p-ws demo CA")?;
    let (chain, key) = ca.issue(&["localhost", "127.0.0.1"])?;
    let certificate = ServerCertificate::from_der(chain, key)?;
    let mut server = new_swarm(
        runtime,
        Config::default().with_tls(TlsConfig::new().with_server_certificate(&certificate)),
    )?;
    let mut client = new_swarm(
        runtime,
        Config::default().with_tls(TlsConfig::new().add_root_der(ca.certificate())),
    )?;

    for addr in ["/ip4/127.0.0.1/tcp/0/ws", "/ip4/127.0.0.1/tcp/0/tls/ws"] {
        server.listen_on(addr.parse()?)?;
    }
    let demo = async {
        let mut addrs = Vec::new();
        while addrs.len() < 2 {
            if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
                println!("listening {address}/p2p/{}", server.local_peer_id());
                addrs.push(address);
            }
        }
        for addr in addrs {
            client.dial(addr)?;
            let mut seen = 0;
            while seen < 3 {
                futures::select! {
                    event = server.select_next_some() => { report(&server, event, true)?; }
                    event = client.select_next_some() => {
                        if let Step::Pinged = report(&client, event, false)? { seen += 1; }
                    }
                }
            }
            let peer = *server.local_peer_id();
            let _ = client.disconnect_peer_id(peer);
            while client.is_connected(&peer) {
                futures::select! {
                    event = server.select_next_some() => { report(&server, event, true)?; }
                    event = client.select_next_some() => { report(&client, event, true)?; }
                }
            }
        }
        anyhow::Ok(())
    };
    runtime
        .timeout(Duration::from_secs(30), demo)
        .await
        .ok_or_else(|| anyhow!("the demo did not finish within 30s"))?
}
