//! RSS per idle upgraded connection endpoint, measured in two child processes of the bench binary
//! (listener and dialer, so that 10,000 connections fit in the file descriptor limit and every
//! stack starts from a fresh allocator), spoken to line by line over stdin and stdout.

use std::{
    io::{BufRead, BufReader},
    pin::{pin, Pin},
    process::{Command, Stdio},
    task::Poll,
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use futures::{
    channel::mpsc,
    future::{poll_fn, select, Either, LocalBoxFuture},
    stream::FuturesUnordered,
    FutureExt, StreamExt,
};
use libp2p::{
    core::{transport::TransportEvent, Multiaddr, Transport as _},
    identity::Keypair,
};

use crate::{
    helpers::{dial_opts, rss_kib},
    listen_dial::{listen, Upgrade},
    muxer::{drive, Conn},
    runtime::{block_on, raise_nofile, sleep, within},
    settings::Settings,
    stacks::{full_transport, Mode, Muxed, Side, Stack},
    WAIT,
};

/// Concurrent dials while opening the idle connections of the RSS measurement.
pub(crate) const RSS_PARALLEL_DIALS: usize = 64;

/// glibc's heap: (bytes in use, bytes free but kept), to tell live memory from fragmentation.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn heap_usage() -> (u64, u64) {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    ((info.uordblks + info.hblkhd) as u64, info.fordblks as u64)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn heap_usage() -> (u64, u64) {
    (0, 0)
}

pub(crate) type Held = FuturesUnordered<LocalBoxFuture<'static, String>>;

pub(crate) fn hold(mut conn: Muxed) -> LocalBoxFuture<'static, String> {
    async move { drive(&mut conn.1, None).await }.boxed_local()
}

/// Drives the held connections for `duration`; fails if one ends.
pub(crate) async fn settle(held: &mut Held, duration: Duration) -> Result<()> {
    let next = held.next();
    let timer = pin!(sleep(duration));
    match select(next, timer).await {
        Either::Left((Some(why), _)) => bail!("an idle connection ended: {why}"),
        _ => Ok(()),
    }
}

/// One end of the RSS measurement, in its own process (so that 10,000 connections fit in the
/// file descriptor limit, and so that each stack starts from a fresh allocator).
///
/// Commands come on stdin, one per line; replies go to stdout:
/// - `dial N` (dialer): open N more connections (at most `RSS_PARALLEL_DIALS` in flight), each used
///   for one stream round trip, which also completes the listener's lazy upgrade; replies
///   `dialed <held>` when all are held;
/// - `measure N`: once N connections are held, drive them for a second, reply
///   `rss <RSS KiB> <held> <heap bytes in use> <heap bytes free>`;
/// - `stop`: from now on connections may close (the other end is about to exit); replies
///   `stopped`.
///
/// The listener first prints `addr <multiaddr>`. Every held muxer is polled until the process
/// exits, which it does when stdin closes.
pub(crate) async fn rss_node(
    role: Side,
    stack: Stack,
    addr: Option<Multiaddr>,
    mut commands: mpsc::UnboundedReceiver<String>,
) -> Result<()> {
    enum Event {
        Listener(TransportEvent<Upgrade<Muxed>, std::io::Error>),
        Established(Result<Muxed>),
        Lost(String),
        Command(Option<String>),
    }
    let mut transport = match stack {
        // The dialer keeps `RSS_PARALLEL_DIALS` handshakes in flight from 127.0.0.1, more than
        // libp2p-ws's default per-address admission limit (16) lets one address hold: the listener
        // would close the surplus at once (the flood protection doing its job) and the dial fail.
        // The limit has no bearing on idle memory, so it is raised to the dialer's parallelism.
        Stack::Ws | Stack::WsTokio => {
            let keypair = Keypair::generate_ed25519();
            let config =
                libp2p_ws::Config::default().with_max_pending_handshakes_per_ip(RSS_PARALLEL_DIALS);
            if stack == Stack::Ws {
                libp2p_ws::async_std::upgraded(&keypair, config)
            } else {
                libp2p_ws::tokio::upgraded(&keypair, config)
            }
            .expect("libp2p-ws transport")
        }
        _ => full_transport(stack, role, None),
    };
    let addr = match role {
        Side::Listener => {
            let addr = listen(&mut transport, stack.listen_addr()).await?;
            println!("addr {addr}");
            addr
        }
        Side::Dialer => addr.context("the dialer needs an address")?,
    };
    let mut held = Held::new();
    let mut pending = FuturesUnordered::<LocalBoxFuture<'static, Result<Muxed>>>::new();
    let (mut to_dial, mut requested, mut established) = (0usize, 0usize, 0usize);
    let (mut dial_goal, mut measure_goal) = (None::<usize>, None::<usize>);
    let mut stopping = false;
    loop {
        while to_dial > 0 && pending.len() < RSS_PARALLEL_DIALS {
            let dial = transport
                .dial(addr.clone(), dial_opts())
                .map_err(|e| anyhow!("dial: {e}"))?;
            pending.push(
                async move {
                    within(WAIT, "dial and first stream", async {
                        let mut conn = dial.await.context("dial")?;
                        conn.dialer(1, Mode::Echo, 0).await?;
                        Ok(conn)
                    })
                    .await?
                }
                .boxed_local(),
            );
            to_dial -= 1;
        }
        if dial_goal.is_some_and(|goal| established >= goal) {
            dial_goal = None;
            println!("dialed {established}");
        }
        if measure_goal.is_some_and(|goal| established >= goal) {
            measure_goal = None;
            settle(&mut held, Duration::from_secs(1)).await?;
            let (heap_used, heap_free) = heap_usage();
            println!(
                "rss {} {established} {heap_used} {heap_free}",
                rss_kib().context("no VmRSS in /proc/self/status")?
            );
        }
        let busy =
            to_dial > 0 || !pending.is_empty() || dial_goal.is_some() || measure_goal.is_some();
        let next = poll_fn(|cx| {
            // Commands first, so that `stop` is seen before the connections it announces close.
            if let Poll::Ready(command) = commands.poll_next_unpin(cx) {
                return Poll::Ready(Event::Command(command));
            }
            if let Poll::Ready(event) = Pin::new(&mut transport).poll(cx) {
                return Poll::Ready(Event::Listener(event));
            }
            if let Poll::Ready(Some(result)) = pending.poll_next_unpin(cx) {
                return Poll::Ready(Event::Established(result));
            }
            if let Poll::Ready(Some(why)) = held.poll_next_unpin(cx) {
                return Poll::Ready(Event::Lost(why));
            }
            Poll::Pending
        });
        let event = if busy {
            within(WAIT, "establishing idle connections", next)
                .await
                .with_context(|| format!("{established} held, {} in progress", pending.len()))?
        } else {
            next.await
        };
        match event {
            Event::Listener(TransportEvent::Incoming { upgrade, .. }) => pending.push(
                async move {
                    within(WAIT, "accept and first stream", async {
                        let mut conn = upgrade.await.context("listener upgrade")?;
                        conn.listener(1, 0).await?;
                        Ok(conn)
                    })
                    .await?
                }
                .boxed_local(),
            ),
            Event::Listener(TransportEvent::ListenerError { error, .. }) => {
                bail!("listener error: {error}")
            }
            Event::Listener(_) => {}
            Event::Established(conn) => {
                held.push(hold(conn?));
                established += 1;
            }
            Event::Lost(_) if stopping => {}
            Event::Lost(why) => bail!("an idle connection ended: {why}"),
            Event::Command(None) => return Ok(()),
            Event::Command(Some(line)) if line == "stop" => {
                // The other end may close its connections from now on.
                stopping = true;
                println!("stopped");
            }
            Event::Command(Some(line)) => {
                let mut words = line.split_whitespace();
                let (command, n) = (words.next(), words.next().and_then(|n| n.parse().ok()));
                match (command, n) {
                    (Some("dial"), Some(n)) if role == Side::Dialer => {
                        to_dial += n;
                        requested += n;
                        dial_goal = Some(requested);
                    }
                    (Some("measure"), Some(n)) => measure_goal = Some(n),
                    _ => bail!("unknown command {line:?}"),
                }
            }
        }
    }
}

/// The child process's main: `--rss-child <listener|dialer> <stack> <connections> [<address>]`.
pub(crate) fn rss_child(args: &[String]) -> Result<()> {
    let role = match args.first().map(String::as_str) {
        Some("listener") => Side::Listener,
        Some("dialer") => Side::Dialer,
        other => bail!("bad role {other:?}"),
    };
    let stack = args
        .get(1)
        .and_then(|s| Stack::from_id(s))
        .context("bad stack")?;
    let total: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .context("bad count")?;
    let addr = args.get(3).map(|a| a.parse()).transpose()?;
    let limit = raise_nofile((total + 1024) as libc::rlim_t);
    ensure!(
        limit as usize >= total + 256,
        "RLIMIT_NOFILE is {limit} and cannot be raised: too low for {total} connections"
    );
    let (tx, commands) = mpsc::unbounded();
    thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(|l| l.ok()) {
            if tx.unbounded_send(line).is_err() {
                break;
            }
        }
    });
    block_on(stack.runtime(), rss_node(role, stack, addr, commands))
}

/// A child process of the bench binary, spoken to line by line.
pub(crate) struct ChildProcess {
    name: String,
    process: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ChildProcess {
    pub(crate) fn spawn(name: String, args: &[String]) -> Result<ChildProcess> {
        let exe = std::env::current_exe().context("locating the bench binary")?;
        let mut process = Command::new(exe)
            .arg("--rss-child")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdout = process.stdout.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ChildProcess {
            name,
            stdin: process.stdin.take(),
            process,
            lines,
        })
    }

    pub(crate) fn send(&mut self, command: &str) -> Result<()> {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("open until drop");
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("{} exited", self.name))
    }

    /// The first line starting with `prefix`, without it.
    pub(crate) fn expect(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.to_string());
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    bail!("{}: no {prefix:?} within {timeout:?}", self.name)
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("{} exited before {prefix:?}", self.name)
                }
            }
        }
    }

    /// Asks for `rss <KiB> <held> <heap bytes in use> <heap bytes free>` once `held` connections are
    /// held; [`ChildProcess::memory`] reads the reply.
    pub(crate) fn measure(&mut self, held: usize) -> Result<()> {
        self.send(&format!("measure {held}"))
    }

    pub(crate) fn memory(&mut self) -> Result<Memory> {
        let reply = self.expect("rss ", WAIT * 2)?;
        let numbers: Vec<u64> = reply
            .split_whitespace()
            .map(|v| v.parse())
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: bad reply {reply:?}", self.name))?;
        match numbers[..] {
            [rss_kib, _, heap_used, heap_free] => Ok(Memory {
                rss: rss_kib * 1024,
                heap_used,
                heap_free,
            }),
            _ => bail!("{}: bad reply {reply:?}", self.name),
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Closing stdin makes the child exit; kill it if it does not.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.process.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Memory of one process, in bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Memory {
    rss: u64,
    heap_used: u64,
    heap_free: u64,
}

/// Per idle endpoint, in bytes, of one side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PerEndpoint {
    pub(crate) rss: f64,
    pub(crate) heap_used: f64,
    pub(crate) heap_free: f64,
}

/// RSS (and glibc heap) per idle endpoint of `stack`: (listener side, dialer side).
pub(crate) fn measure_rss(stack: Stack, settings: &Settings) -> Result<(PerEndpoint, PerEndpoint)> {
    let (total, warm) = (settings.idle_conns, settings.warm_conns);
    let count = total.to_string();
    let mut listener = ChildProcess::spawn(
        format!("RSS listener ({})", stack.id()),
        &["listener".into(), stack.id().into(), count.clone()],
    )?;
    let addr = listener.expect("addr ", WAIT)?;
    let mut dialer = ChildProcess::spawn(
        format!("RSS dialer ({})", stack.id()),
        &["dialer".into(), stack.id().into(), count, addr],
    )?;
    dialer.send(&format!("dial {warm}"))?;
    dialer.expect("dialed ", WAIT * 2)?;
    // Both ends settle and measure at the same time.
    listener.measure(warm)?;
    dialer.measure(warm)?;
    let (listener_base, dialer_base) = (listener.memory()?, dialer.memory()?);
    let start = Instant::now();
    dialer.send(&format!("dial {}", total - warm))?;
    dialer.expect("dialed ", Duration::from_secs(60 + total as u64 / 20))?;
    let took = start.elapsed();
    listener.measure(total)?;
    dialer.measure(total)?;
    let (listener_after, dialer_after) = (listener.memory()?, dialer.memory()?);
    // Both stop watching their connections before either exits and closes them.
    listener.send("stop")?;
    dialer.send("stop")?;
    listener.expect("stopped", WAIT)?;
    dialer.expect("stopped", WAIT)?;
    let added = (total - warm) as f64;
    let delta = |a: u64, b: u64| (b as f64 - a as f64) / added;
    let per_endpoint = |base: Memory, after: Memory| PerEndpoint {
        rss: delta(base.rss, after.rss),
        heap_used: delta(base.heap_used, after.heap_used),
        heap_free: delta(base.heap_free, after.heap_free),
    };
    eprintln!(
        "  rss {}: {} connections in {:.1} s; RSS listener {} -> {} KiB, dialer {} -> {} KiB",
        stack.id(),
        total - warm,
        took.as_secs_f64(),
        listener_base.rss / 1024,
        listener_after.rss / 1024,
        dialer_base.rss / 1024,
        dialer_after.rss / 1024,
    );
    Ok((
        per_endpoint(listener_base, listener_after),
        per_endpoint(dialer_base, dialer_after),
    ))
}
