//! The Autobahn|Testsuite peer for libp2p-ws's framing layer (driven by `conformance/run`).
//!
//! It is built on exactly what the crate ships, on either runtime provider: the listener is the
//! crate's `Transport` (`libp2p_ws::async_std::Transport` or `libp2p_ws::tokio::Transport`) with
//! `Config::default()` (so `FrameLimits::default()`), the client is the provider's TCP connect,
//! `unstable::connect` and `Connection::new(.., Role::Client, FrameLimits::default(), ..)`
//! with the provider's timers. Each WebSocket message is read with
//! `Connection::poll_read_message` and echoed whole with `Connection::poll_send_message` (same
//! kind: text or binary), which is what the Autobahn cases expect of an echo peer.
//!
//! ```text
//! autobahn [--runtime async-std|tokio] server <port> [max-size]       echo server on 127.0.0.1:<port>, until killed
//! autobahn [--runtime async-std|tokio] client <host:port> [max-size]  run every case the fuzzing server offers, then update reports
//! ```
//!
//! `--runtime` picks the provider and the runtime it runs on (default async-std; tokio: a
//! multi-thread runtime). `max-size` (bytes) raises both `max_frame_size` and `max_message_size`
//! from their defaults; the committed expectations use the defaults.

use std::{future::Future, net::SocketAddr, pin::Pin, time::Duration};

use futures::{future::poll_fn, AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p_core::{
    transport::{ListenerId, TransportEvent},
    Transport as _,
};
use libp2p_ws::{provider::Provider, Config, Connection, FrameError, Role};

/// The runtime (and provider) the peer runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runtime {
    AsyncStd,
    Tokio,
}

impl Runtime {
    fn parse(name: &str) -> Option<Runtime> {
        match name {
            "async-std" => Some(Runtime::AsyncStd),
            "tokio" => Some(Runtime::Tokio),
            _ => None,
        }
    }

    fn block_on<F: Future>(self, future: F) -> F::Output {
        match self {
            Runtime::AsyncStd => async_std::task::block_on(future),
            Runtime::Tokio => tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(future),
        }
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(self, future: F) {
        match self {
            Runtime::AsyncStd => {
                async_std::task::spawn(future);
            }
            Runtime::Tokio => {
                tokio::spawn(future);
            }
        }
    }

    /// `future`, or `None` after `limit`.
    async fn timeout<F: Future>(self, limit: Duration, future: F) -> Option<F::Output> {
        match self {
            Runtime::AsyncStd => async_std::future::timeout(limit, future).await.ok(),
            Runtime::Tokio => tokio::time::timeout(limit, future).await.ok(),
        }
    }
}

/// Echoes every message until the peer closes or the connection fails.
async fn echo<T: AsyncRead + AsyncWrite + Unpin>(conn: &mut Connection<T>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut message = Vec::new();
    let result = loop {
        match poll_fn(|cx| conn.poll_read_message(cx, &mut buf)).await {
            Ok(Some(chunk)) => {
                message.extend_from_slice(&buf[..chunk.len]);
                if chunk.end {
                    if let Err(e) =
                        poll_fn(|cx| conn.poll_send_message(cx, chunk.text, &message)).await
                    {
                        break Err(e);
                    }
                    if let Err(e) = conn.flush().await {
                        break Err(e);
                    }
                    message.clear();
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    // After the peer's close (answered already) or a failure (close frame already sent): close TCP.
    let _ = conn.close().await;
    result
}

/// Reads one whole message (for the case count).
async fn read_message<T: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<T>,
) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let mut message = Vec::new();
    loop {
        match poll_fn(|cx| conn.poll_read_message(cx, &mut buf)).await? {
            Some(chunk) => {
                message.extend_from_slice(&buf[..chunk.len]);
                if chunk.end {
                    return Ok(message);
                }
            }
            None => return Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// The crate's default configuration, or with both frame and message limits set to `max_size`.
fn config(max_size: Option<usize>) -> Config {
    match max_size {
        Some(n) => Config::default()
            .with_max_frame_size(n)
            .with_max_message_size(n),
        None => Config::default(),
    }
}

async fn server<P: Provider>(runtime: Runtime, port: u16, config: Config) {
    let mut transport = libp2p_ws::Transport::<P>::new(config);
    let addr = format!("/ip4/127.0.0.1/tcp/{port}/ws").parse().unwrap();
    transport
        .listen_on(ListenerId::next(), addr)
        .expect("listen");
    loop {
        match poll_fn(|cx| Pin::new(&mut transport).poll(cx)).await {
            TransportEvent::NewAddress { listen_addr, .. } => {
                eprintln!("autobahn echo server on {listen_addr}")
            }
            TransportEvent::Incoming { upgrade, .. } => {
                runtime.spawn(async move {
                    match upgrade.await {
                        Ok(libp2p_ws::Output::WebSocket(mut conn)) => {
                            if let Err(e) = echo(&mut conn).await {
                                log_error("server", &e);
                            }
                        }
                        Ok(_) => eprintln!("server: not a WebSocket connection"),
                        Err(e) => eprintln!("server: upgrade failed: {e}"),
                    }
                });
            }
            _ => {}
        }
    }
}

fn log_error(side: &str, e: &std::io::Error) {
    match FrameError::from_io(e) {
        Some(frame) => eprintln!(
            "{side}: connection failed: {frame} (close code {})",
            frame.close_code()
        ),
        None => eprintln!("{side}: connection ended: {e}"),
    }
}

async fn connect<P: Provider>(
    host: &str,
    target: &str,
    config: &Config,
) -> std::io::Result<Connection<P::Stream>> {
    let addr: SocketAddr = host.parse().map_err(std::io::Error::other)?;
    let mut tcp = P::connect(addr).await?;
    P::set_nodelay(&tcp, true)?;
    let leftover =
        libp2p_ws::unstable::connect(&mut tcp, libp2p_ws::DEFAULT_MAX_HEAD_SIZE, host, target)
            .await
            .map_err(std::io::Error::other)?;
    Ok(Connection::new(tcp, Role::Client, config.frame_limits(), &leftover).with_provider::<P>())
}

async fn client<P: Provider>(runtime: Runtime, host: &str, config: Config) -> std::io::Result<()> {
    let agent = "libp2p-ws";
    let mut conn = connect::<P>(host, "/getCaseCount", &config).await?;
    let count: usize = String::from_utf8_lossy(&read_message(&mut conn).await?)
        .trim()
        .parse()
        .map_err(std::io::Error::other)?;
    let _ = echo(&mut conn).await;
    eprintln!("autobahn client: {count} cases");
    for case in 1..=count {
        let target = format!("/runCase?case={case}&agent={agent}");
        let run = async {
            let mut conn = connect::<P>(host, &target, &config).await?;
            if let Err(e) = echo(&mut conn).await {
                log_error(&format!("client case {case}"), &e);
            }
            Ok::<_, std::io::Error>(())
        };
        match runtime.timeout(Duration::from_secs(120), run).await {
            Some(Ok(())) => {}
            Some(Err(e)) => eprintln!("client case {case}: {e}"),
            None => eprintln!("client case {case}: timed out"),
        }
    }
    let mut conn = connect::<P>(host, &format!("/updateReports?agent={agent}"), &config).await?;
    let _ = echo(&mut conn).await;
    Ok(())
}

fn usage() -> ! {
    eprintln!(
        "usage: autobahn [--runtime async-std|tokio] server <port> [max-size]\n       \
         autobahn [--runtime async-std|tokio] client <host:port> [max-size]"
    );
    std::process::exit(2);
}

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let mut runtime = Runtime::AsyncStd;
    if let Some(i) = args.iter().position(|a| a == "--runtime") {
        runtime = args
            .get(i + 1)
            .and_then(|r| Runtime::parse(r))
            .unwrap_or_else(|| usage());
        args.drain(i..i + 2);
    }
    let max_size = args.get(3).map(|n| n.parse().expect("max-size in bytes"));
    let config = config(max_size);
    eprintln!("autobahn peer on {runtime:?}");
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("server"), Some(port)) => {
            let port = port.parse().expect("port");
            match runtime {
                Runtime::AsyncStd => runtime.block_on(server::<libp2p_ws::async_std::Provider>(
                    runtime, port, config,
                )),
                Runtime::Tokio => {
                    runtime.block_on(server::<libp2p_ws::tokio::Provider>(runtime, port, config))
                }
            }
        }
        (Some("client"), Some(host)) => {
            let result = match runtime {
                Runtime::AsyncStd => runtime.block_on(client::<libp2p_ws::async_std::Provider>(
                    runtime, host, config,
                )),
                Runtime::Tokio => {
                    runtime.block_on(client::<libp2p_ws::tokio::Provider>(runtime, host, config))
                }
            };
            if let Err(e) = result {
                eprintln!("autobahn client failed: {e}");
                std::process::exit(1);
            }
        }
        _ => usage(),
    }
}
