//! rust-libp2p 0.57 peer for the interop matrix (`interop/run`); the stock `libp2p-websocket`
//! transport over tokio TCP (+ DNS), or plain `libp2p-tcp` (tokio) for `/tcp` addresses, then
//! Noise, Yamux and ping. It is written against rust-libp2p
//! only: nothing from this crate is used, so it is a peer that no one here wrote the stack of.
//!
//! CLI contract shared by every peer of the matrix:
//!   --listen <MULTIADDR> (repeatable)   prints `listening <addr>/p2p/<id>`, runs until killed
//!   --dial <MULTIADDR> --count <N>      prints `connected <peer> <addr>`, N x `ping <peer> <ms>`, exits 0
//!   --timeout <SECS>                    every dial gives up after it: `error: <reason>`, exit 1
//!   --cert <PEM> --key <PEM>            TLS server chain and key for `/tls/ws` and `/wss` listening
//!   --ca <PEM>                          extra trusted root for `wss` dialing
//!
//! Stock rust-libp2p (`SwarmBuilder::with_websocket`) only trusts the webpki roots, so it
//! cannot dial a server whose certificate comes from a test CA. Building the websocket
//! transport by hand with `websocket::tls::Config::builder().add_trust(..)` can, and that is
//! what `--ca` does here.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{anyhow, Context as _};
use clap::Parser;
use futures::StreamExt as _;
use libp2p::{
    core::{muxing::StreamMuxerBox, transport::Boxed, upgrade, Transport as _},
    dns, identity,
    multiaddr::Protocol,
    noise, ping,
    swarm::{self, SwarmEvent},
    tcp, websocket, yamux, Multiaddr, PeerId, Swarm,
};
use rustls_pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};

#[derive(Parser, Debug)]
#[command(about = "rust-libp2p 0.57 websocket and TCP ping peer for the libp2p-ws interop matrix")]
struct Args {
    /// Listen on this multiaddr (repeatable).
    #[arg(long)]
    listen: Vec<Multiaddr>,
    /// Dial this multiaddr and ping it.
    #[arg(long)]
    dial: Option<Multiaddr>,
    /// With --dial: exit 0 after this many successful pings.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// With --dial: give up after this many seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// PEM certificate chain of the TLS server (for /tls/ws or /wss listen addresses).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of the TLS server.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// PEM root certificate(s) to trust when dialing wss, besides the webpki roots.
    #[arg(long)]
    ca: Option<PathBuf>,
}

fn tls_config(args: &Args) -> anyhow::Result<websocket::tls::Config> {
    let mut builder = websocket::tls::Config::builder();
    if let Some(ca) = &args.ca {
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading {}", ca.display()))?
        {
            let cert = cert.with_context(|| format!("parsing {}", ca.display()))?;
            builder.add_trust(&websocket::tls::Certificate::new(cert.to_vec()))?;
        }
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        let chain = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("reading {}", cert.display()))?
            .map(|c| c.map(|c| websocket::tls::Certificate::new(c.to_vec())))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing {}", cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading {}", key.display()))?;
        builder.server(
            websocket::tls::PrivateKey::new(key.secret_der().to_vec()),
            chain,
        )?;
    }
    Ok(builder.finish())
}

fn transport(
    keypair: &identity::Keypair,
    args: &Args,
) -> anyhow::Result<Boxed<(PeerId, StreamMuxerBox)>> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let dns = dns::tokio::Transport::system(tcp).context("reading the system DNS configuration")?;
    let mut ws = websocket::Config::new(dns);
    ws.set_tls_config(tls_config(args)?);
    // Plain `/tcp` (listen and dial) through libp2p-tcp; the websocket transport is asked first
    // and refuses addresses without `/ws` (libp2p-tcp refuses those with it).
    let plain_tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    Ok(ws
        .or_transport(plain_tcp)
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise::Config::new(keypair)?)
        .multiplex(yamux::Config::default())
        .timeout(Duration::from_secs(20))
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

fn expected_peer(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let keypair = identity::Keypair::generate_ed25519();
    let local = keypair.public().to_peer_id();
    eprintln!("local peer id {local}");
    let behaviour =
        ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(250)));
    let config =
        swarm::Config::with_tokio_executor().with_idle_connection_timeout(Duration::from_secs(60));
    let mut swarm = Swarm::new(transport(&keypair, &args)?, behaviour, local, config);

    for addr in &args.listen {
        swarm
            .listen_on(addr.clone())
            .with_context(|| format!("listening on {addr}"))?;
    }
    let dialing = args.dial.clone();
    if let Some(addr) = &dialing {
        swarm
            .dial(addr.clone())
            .with_context(|| format!("dialing {addr}"))?;
    } else if args.listen.is_empty() {
        return Err(anyhow!("nothing to do: give --listen and/or --dial"));
    }
    let expected = dialing.as_ref().and_then(expected_peer);
    let mut remote: Option<PeerId> = None;
    let mut pings = 0u32;

    let events = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { address, .. } => {
                    println!(
                        "listening {}",
                        address.with_p2p(local).unwrap_or_else(|a| a)
                    );
                }
                SwarmEvent::ConnectionEstablished {
                    peer_id, endpoint, ..
                } => {
                    println!("connected {peer_id} {}", endpoint.get_remote_address());
                    if dialing.is_some() && endpoint.is_dialer() {
                        if let Some(want) = expected {
                            if want != peer_id {
                                return Err(anyhow!(
                                    "dialed {want} but the remote authenticated as {peer_id}"
                                ));
                            }
                        }
                        remote = Some(peer_id);
                    }
                }
                SwarmEvent::Behaviour(ping::Event { peer, result, .. }) => match result {
                    Ok(rtt) => {
                        println!("ping {peer} {:.3}", rtt.as_secs_f64() * 1000.0);
                        if dialing.is_some() && Some(peer) == remote {
                            pings += 1;
                            if pings >= args.count {
                                return Ok(());
                            }
                        }
                    }
                    Err(err) => {
                        eprintln!("ping {peer} failed: {err}");
                        if dialing.is_some() && Some(peer) == remote {
                            return Err(anyhow!("ping failed: {err}"));
                        }
                    }
                },
                SwarmEvent::OutgoingConnectionError { error, .. } if dialing.is_some() => {
                    return Err(anyhow!("dial failed: {error}"));
                }
                SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
                    eprintln!("connection to {peer_id} closed: {cause:?}");
                    if dialing.is_some() && Some(peer_id) == remote {
                        return Err(anyhow!("connection closed after {pings} pings: {cause:?}"));
                    }
                }
                SwarmEvent::ListenerError { error, .. } => eprintln!("listener error: {error}"),
                SwarmEvent::IncomingConnectionError {
                    error,
                    send_back_addr,
                    ..
                } => {
                    eprintln!("incoming connection from {send_back_addr} failed: {error}");
                }
                other => tracing_event(&other),
            }
        }
    };
    if dialing.is_some() {
        tokio::time::timeout(Duration::from_secs(args.timeout), events)
            .await
            .map_err(|_| {
                anyhow!(
                    "timed out after {} s ({pings} of {} pings)",
                    args.timeout,
                    args.count
                )
            })?
    } else {
        events.await
    }
}

fn tracing_event<T: std::fmt::Debug>(event: &T) {
    if std::env::var_os("INTEROP_DEBUG").is_some() {
        eprintln!("{event:?}");
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
