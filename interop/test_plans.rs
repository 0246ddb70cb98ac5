//! A [libp2p/test-plans] `transport-interop` binary for libp2p-ws: the transport is
//! `libp2p_ws::tokio::upgraded` (WebSocket + noise + yamux on the crate's tokio backend) under a
//! tokio `Swarm` with libp2p ping.
//!
//! Environment (the test-plans contract):
//!
//! | variable               | default      | meaning                                              |
//! |------------------------|--------------|------------------------------------------------------|
//! | `transport`            | (required)   | `ws` or `wss`                                        |
//! | `muxer`                | (required)   | `yamux` (the only one this transport stacks)         |
//! | `security`             | (required)   | `noise` (the only one this transport stacks)         |
//! | `is_dialer`            | (required)   | `true` or `false`                                    |
//! | `ip`                   | `0.0.0.0`    | the listener's IP                                    |
//! | `redis_addr`           | `redis:6379` | where the listener RPUSHes and the dialer BLPOPs     |
//! | `test_timeout_seconds` | `180`        | the whole run, redis waits included                  |
//!
//! The listener listens on `/ip4/<ip>/tcp/0/ws` (or `/tls/ws`), RPUSHes its address with
//! `/p2p/<id>` to the list `listenerAddr`, and serves pings until the timeout (the harness stops
//! it). The dialer BLPOPs `listenerAddr`, dials, waits for the first successful ping and prints
//! `{"handshakePlusOneRTTMillis": <f64>, "pingRTTMilllis": <f64>}` on stdout (the triple `l` is
//! the test-plans spelling). Everything else goes to stderr.
//!
//! TLS for `wss` (extensions; test-plans itself passes none of them):
//! - `tls_cert` and `tls_key`: PEM chain and key for the listener; without them it presents a
//!   fresh self-signed certificate for `localhost` and `ip` (as test-plans listeners do).
//! - `tls_ca`: PEM root for the dialer to trust. Without it the dialer accepts any server
//!   certificate (`danger_accept_invalid_certificates`), since test-plans listeners present
//!   self-signed certificates; noise still authenticates the listener's peer id.
//!
//! Plain `/ws` on a non-loopback `ip` is allowed here (`danger_insecure_listen`): test-plans runs
//! on a private container network.
//!
//! [libp2p/test-plans]: https://github.com/libp2p/test-plans

use std::{
    env,
    io::{BufRead, BufReader, Read as _, Write as _},
    net::{IpAddr, TcpStream},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use futures::StreamExt as _;
use libp2p::{
    multiaddr::Protocol,
    ping,
    swarm::{self, SwarmEvent},
    Multiaddr, PeerId, Swarm,
};
use libp2p_ws::{tls::dev, Config, ServerCertificate, TlsConfig};

const LISTENER_KEY: &str = "listenerAddr";

struct Settings {
    secure: bool,
    is_dialer: bool,
    ip: IpAddr,
    redis_addr: String,
    timeout: Duration,
}

fn var(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.is_empty())
}

fn settings() -> anyhow::Result<Settings> {
    let secure = match var("transport").as_deref() {
        Some("ws") => false,
        Some("wss") => true,
        other => bail!("unsupported transport {other:?}: this binary speaks ws and wss"),
    };
    match var("muxer").as_deref() {
        Some("yamux") => {}
        other => bail!("unsupported muxer {other:?}: libp2p-ws stacks yamux"),
    }
    match var("security").as_deref() {
        Some("noise") => {}
        other => bail!("unsupported security {other:?}: libp2p-ws stacks noise"),
    }
    let is_dialer = match var("is_dialer").as_deref() {
        Some("true") => true,
        Some("false") => false,
        other => bail!("is_dialer must be true or false, not {other:?}"),
    };
    let ip = var("ip").unwrap_or_else(|| "0.0.0.0".into());
    let ip = ip.parse().with_context(|| format!("ip {ip:?}"))?;
    let redis_addr = var("redis_addr").unwrap_or_else(|| "redis:6379".into());
    let timeout = var("test_timeout_seconds").unwrap_or_else(|| "180".into());
    let timeout = Duration::from_secs(
        timeout
            .parse()
            .with_context(|| format!("test_timeout_seconds {timeout:?}"))?,
    );
    Ok(Settings {
        secure,
        is_dialer,
        ip,
        redis_addr,
        timeout,
    })
}

// --- a minimal RESP client: RPUSH and BLPOP are all test-plans needs --------------------------

struct Redis {
    reader: BufReader<TcpStream>,
}

impl Redis {
    /// Connects, retrying until `deadline` (the redis container may start after us).
    fn connect(addr: &str, deadline: Instant) -> anyhow::Result<Self> {
        loop {
            match TcpStream::connect(addr) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(Redis {
                        reader: BufReader::new(stream),
                    });
                }
                Err(err) if Instant::now() + Duration::from_millis(500) < deadline => {
                    eprintln!("redis {addr}: {err}; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(err) => {
                    return Err(err).with_context(|| format!("connecting to redis at {addr}"))
                }
            }
        }
    }

    fn command(&mut self, args: &[&str], read_timeout: Option<Duration>) -> anyhow::Result<Reply> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        let stream = self.reader.get_mut();
        stream.set_read_timeout(read_timeout)?;
        stream.write_all(&request)?;
        self.reply()
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("redis closed the connection");
        }
        Ok(line.trim_end_matches("\r\n").to_string())
    }

    fn reply(&mut self) -> anyhow::Result<Reply> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(1.min(line.len()));
        Ok(match kind {
            "+" => Reply::Status,
            "-" => bail!("redis error: {rest}"),
            ":" => Reply::Integer(rest.parse()?),
            "$" => match rest.parse::<i64>()? {
                -1 => Reply::Nil,
                len => {
                    let mut buf = vec![0; len as usize + 2];
                    self.reader.read_exact(&mut buf)?;
                    buf.truncate(len as usize);
                    Reply::Text(String::from_utf8(buf)?)
                }
            },
            "*" => match rest.parse::<i64>()? {
                -1 => Reply::Nil,
                n => Reply::Array(
                    (0..n)
                        .map(|_| self.reply())
                        .collect::<anyhow::Result<_>>()?,
                ),
            },
            _ => bail!("unexpected redis reply {line:?}"),
        })
    }

    fn rpush(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        match self.command(&["RPUSH", key, value], Some(Duration::from_secs(10)))? {
            Reply::Integer(_) => Ok(()),
            other => bail!("unexpected RPUSH reply {other:?}"),
        }
    }

    /// BLPOP with a timeout in whole seconds; `None` when it ran out.
    fn blpop(&mut self, key: &str, timeout: Duration) -> anyhow::Result<Option<String>> {
        let secs = timeout.as_secs().max(1);
        let reply = self.command(
            &["BLPOP", key, &secs.to_string()],
            Some(Duration::from_secs(secs + 5)),
        )?;
        match reply {
            Reply::Nil => Ok(None),
            Reply::Array(mut items) if items.len() == 2 => match items.pop() {
                Some(Reply::Text(value)) => Ok(Some(value)),
                other => bail!("unexpected BLPOP value {other:?}"),
            },
            other => bail!("unexpected BLPOP reply {other:?}"),
        }
    }
}

#[derive(Debug)]
enum Reply {
    Status,
    Text(String),
    Integer(#[allow(dead_code)] i64),
    Array(Vec<Reply>),
    Nil,
}

// --- the libp2p side ---------------------------------------------------------------------------

fn transport_config(settings: &Settings) -> anyhow::Result<Config> {
    let mut tls = TlsConfig::new();
    if settings.secure {
        if settings.is_dialer {
            match var("tls_ca") {
                Some(ca) => {
                    tls = tls
                        .add_root_pem_file(&ca)
                        .with_context(|| format!("tls_ca {ca}"))?
                }
                None => {
                    eprintln!("wss dialer without tls_ca: accepting any server certificate (test-plans listeners are self-signed)");
                    tls = tls.danger_accept_invalid_certificates();
                }
            }
        } else {
            let certificate = match (var("tls_cert"), var("tls_key")) {
                (Some(cert), Some(key)) => ServerCertificate::from_pem_files(&cert, &key)
                    .with_context(|| format!("tls_cert {cert} / tls_key {key}"))?,
                _ => {
                    let ip = settings.ip.to_string();
                    let (chain, key) = dev::self_signed(&["localhost", &ip])?;
                    ServerCertificate::from_der(chain, key)?
                }
            };
            tls = tls.with_server_certificate(&certificate);
        }
    }
    Ok(Config::default().danger_insecure_listen(true).with_tls(tls))
}

fn new_swarm(settings: &Settings) -> anyhow::Result<Swarm<ping::Behaviour>> {
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let local = keypair.public().to_peer_id();
    eprintln!("local peer id {local}");
    // The binary runs on tokio (`#[tokio::main]`), so the transport uses the tokio provider.
    let transport = libp2p_ws::tokio::upgraded(&keypair, transport_config(settings)?)?;
    let behaviour = ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(1)));
    let config =
        swarm::Config::with_tokio_executor().with_idle_connection_timeout(settings.timeout);
    Ok(Swarm::new(transport, behaviour, local, config))
}

fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

async fn listener(settings: Settings, deadline: Instant) -> anyhow::Result<()> {
    let mut swarm = new_swarm(&settings)?;
    let local = *swarm.local_peer_id();
    let ip = match settings.ip {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    let mut addr = Multiaddr::empty().with(ip).with(Protocol::Tcp(0));
    if settings.secure {
        addr.push(Protocol::Tls);
    }
    addr.push(Protocol::Ws("/".into()));
    swarm
        .listen_on(addr.clone())
        .with_context(|| format!("listening on {addr}"))?;

    let mut redis = Redis::connect(&settings.redis_addr, deadline)?;
    let mut published = false;
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => {
                eprintln!("listening on {address}");
                // With an unspecified `ip` every interface is reported: publish a reachable one.
                if !published && (settings.ip.is_loopback() || !is_loopback(&address)) {
                    let full = address
                        .with_p2p(local)
                        .map_err(|a| anyhow!("cannot add /p2p to {a}"))?;
                    redis.rpush(LISTENER_KEY, &full.to_string())?;
                    eprintln!("published {full} to {LISTENER_KEY}");
                    published = true;
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                eprintln!("connected {peer_id} {}", endpoint.get_remote_address());
            }
            SwarmEvent::Behaviour(ping::Event { peer, result, .. }) => match result {
                Ok(rtt) => eprintln!("ping {peer} {:.3} ms", rtt.as_secs_f64() * 1e3),
                Err(err) => eprintln!("ping {peer} failed: {err}"),
            },
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                eprintln!("incoming connection from {send_back_addr} failed: {error}");
            }
            SwarmEvent::ListenerClosed { reason, .. } => bail!("listener closed: {reason:?}"),
            event => eprintln!("{event:?}"),
        }
    }
}

async fn dialer(settings: Settings, deadline: Instant) -> anyhow::Result<(f64, f64)> {
    let mut swarm = new_swarm(&settings)?;
    let mut redis = Redis::connect(&settings.redis_addr, deadline)?;
    let wait = deadline.saturating_duration_since(Instant::now());
    let addr = tokio::task::spawn_blocking(move || redis.blpop(LISTENER_KEY, wait))
        .await??
        .ok_or_else(|| anyhow!("no listener address in {LISTENER_KEY} within {wait:?}"))?;
    eprintln!("dialing {addr}");
    let addr: Multiaddr = addr
        .trim()
        .parse()
        .with_context(|| format!("listener address {addr:?}"))?;
    let expected: Option<PeerId> = addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    });

    let start = Instant::now();
    swarm
        .dial(addr.clone())
        .with_context(|| format!("dialing {addr}"))?;
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                eprintln!("connected {peer_id} {}", endpoint.get_remote_address());
                if expected.is_some_and(|want| want != peer_id) {
                    bail!("dialed {expected:?} but the remote authenticated as {peer_id}");
                }
            }
            SwarmEvent::Behaviour(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                let total = start.elapsed();
                eprintln!("ping {peer} {:.3} ms", rtt.as_secs_f64() * 1e3);
                return Ok((total.as_secs_f64() * 1e3, rtt.as_secs_f64() * 1e3));
            }
            SwarmEvent::Behaviour(ping::Event {
                peer,
                result: Err(err),
                ..
            }) => {
                bail!("ping {peer} failed: {err}");
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => bail!("dial failed: {error}"),
            SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
                bail!("connection to {peer_id} closed before a ping: {cause:?}");
            }
            event => eprintln!("{event:?}"),
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let settings = settings()?;
    let timeout = settings.timeout;
    let deadline = Instant::now() + timeout;
    if settings.is_dialer {
        let (handshake_plus_one_rtt, ping_rtt) =
            tokio::time::timeout(timeout, dialer(settings, deadline))
                .await
                .map_err(|_| anyhow!("dialer timed out after {timeout:?}"))??;
        println!(
            r#"{{"handshakePlusOneRTTMillis": {handshake_plus_one_rtt:.3}, "pingRTTMilllis": {ping_rtt:.3}}}"#
        );
        Ok(())
    } else {
        match tokio::time::timeout(timeout, listener(settings, deadline)).await {
            Ok(result) => result,
            Err(_) => {
                eprintln!("listener done after {timeout:?}");
                Ok(())
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
