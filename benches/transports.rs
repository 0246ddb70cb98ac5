//! Transport benchmark: libp2p-ws against rust-libp2p's WebSocket transport (`libp2p::websocket`)
//! and TCP transport (`libp2p::tcp`), side by side in one run, over loopback.
//!
//! ```sh
//! cargo bench --bench transports              # full: 1 GiB transfers, 5 runs, 10,000 idle conns
//! cargo bench --bench transports -- --quick   # CI smoke run (also BENCH_QUICK=1)
//! cargo test --bench transports -- --quick    # the same in the dev profile
//! ```
//!
//! Without `--bench` (which `cargo bench` passes) or `--full`, the quick mode runs: `cargo test
//! --all-targets` must not spend minutes here.
//!
//! What is measured (each figure is the median over the runs):
//!
//! - single-stream throughput in both directions (dialer uploads, listener uploads) of the full
//!   stacks (WebSocket or TCP, then noise and yamux negotiated by multistream-select), of noise alone
//!   (no multiplexer) and of the bare layer (WebSocket alone, TCP alone). The receiver times from
//!   its first read to the last byte; the bytes of the first read are not counted. "tcp on
//!   async-std" (rust-libp2p's noise + yamux over async-std's TcpStream) is the runtime baseline: it
//!   separates what async-io costs against tokio from what the WebSocket layer costs. "libp2p-ws
//!   tokio" is libp2p-ws on its tokio backend (`libp2p_ws::tokio::upgraded`), on the same tokio
//!   current-thread runtime as libp2p-tcp: the like-for-like comparison for tokio users. "libp2p-ws
//!   tokio /tcp" and "libp2p-ws /tcp on async-std" are the crate's own plain `/tcp` (the same
//!   `upgraded()` transports dialing a `/tcp` address), beside libp2p-tcp and tcp on async-std;
//!   "libp2p-ws tokio with metrics" (`metrics`) is "libp2p-ws tokio" with `Config::with_metrics`
//!   (the ratios `throughput_metrics_vs_plain` and `instructions_metrics_vs_plain`: the cost of
//!   counting);
//! - aggregate throughput of 16 concurrent yamux streams (dialer uploads);
//! - connection setup: `dial` until the dialer holds the upgraded connection (mean over sequential
//!   connections), the same until a first 1-byte stream round trip has completed (so the listener
//!   side is upgraded too), and sequential connections per second (dial, round trip, close); one
//!   row is `/ws` on a port shared with `/tcp` (libp2p-ws tokio listening on `/tcp/0`, then on
//!   `/tcp/<port>/ws`), against the unshared `/ws` of "libp2p-ws tokio";
//! - RSS per idle upgraded connection endpoint: for each stack, two fresh child processes (listener
//!   and dialer, so that 10,000 connections fit in the file descriptor limit and every stack starts
//!   from a fresh allocator) hold N connections, each used once for a stream round trip and then
//!   idle, every muxer polled; (RSS with N - RSS with N/100 warm-up connections) / added connections,
//!   averaged over the two ends;
//! - many connections as a node runs them (`multi`, in `transports/multi.rs`): 16 connections, one
//!   stream each (dialer uploads 128 MiB per stream), both swarms built with libp2p's
//!   `SwarmBuilder` on one tokio multi-thread runtime with as many workers as CPUs (not pinned), for
//!   libp2p-tcp (`with_tcp`) and libp2p-ws tokio (`with_other_transport`): aggregate throughput
//!   and process CPU time (getrusage, all threads) per byte moved;
//! - instructions per byte moved (`instructions`, in `transports/instructions.rs`; not in the
//!   default sections, run it with `BENCH_ONLY=instructions`): every stack of the full-stack and raw
//!   sections (and bare wss), both directions, counted with `valgrind --tool=callgrind` in a child
//!   process that runs one transfer with both peers on one thread (64 MiB minus 8 MiB; quick 8 MiB
//!   minus 1 MiB), with the top 15 functions per stack; `--gate` (or `BENCH_INSTRUCTIONS_GATE=1`)
//!   fails the run if `instructions_ws_vs_tcp` is above its threshold (CI runs it).
//!
//! Each peer of a pair runs on its own thread pinned to its own core (when there are two), on its own
//! single-threaded runtime: tokio `current_thread` for the rust-libp2p stacks and libp2p-ws tokio,
//! `async_io::block_on` for libp2p-ws on async-std (whose sockets live on async-io's reactor, driven
//! from the blocked-on thread). The `multi` section is the exception (see above).
//!
//! Environment overrides: `BENCH_QUICK=1`, `BENCH_MIB` (transfer size), `BENCH_RUNS`,
//! `BENCH_SETUP_CONNS`, `BENCH_IDLE_CONNS`, `BENCH_RSS_RUNS`, `BENCH_MULTI_CONNS` (16),
//! `BENCH_MULTI_MIB` (per connection; 128, quick 1), `BENCH_INSTR_MIB` (64, quick 8),
//! `BENCH_CALLGRIND_DIR` (`target/callgrind`), `BENCH_INSTRUCTIONS_MAX` (the gate's threshold),
//! `BENCH_INSTR_REP=1` (see `instructions.rs`), and filters (comma-separated): `BENCH_ONLY`
//! (sections `full,noise,raw,streams,setup,rss,multi` by default, and `instructions`), `BENCH_STACKS`
//! (`ws,wss,ws-tokio,websocket,tcp,tcp-async-std,tcp-ours,tcp-ours-async-std,ws-shared,metrics`),
//! `BENCH_DIRECTIONS` (`dialer,listener`).
//!
//! The modules under `transports/`: `stacks` (the stacks, layers and modes, and the transports that
//! build them), `async_std_tcp` (bare TCP on async-std as a libp2p transport), `settings` (what a
//! run measures), `runtime` (threads, runtimes, bounded waits), `listen_dial`, `protocol` (the
//! stream protocol), `muxer` (driving muxers; the `Conn` trait), `measure` (one measurement over a
//! pair), `rss` (the child processes of the RSS measurement), `multi`, `instructions` (the
//! callgrind children, their report and the gate), and `report` (the tables and the JSON lines). `tests/common/helpers.rs` is shared with the tests.

#[path = "transports/async_std_tcp.rs"]
mod async_std_tcp;
#[path = "../tests/common/helpers.rs"]
mod helpers;
#[path = "transports/instructions.rs"]
mod instructions;
#[path = "transports/listen_dial.rs"]
mod listen_dial;
#[path = "transports/measure.rs"]
mod measure;
#[path = "transports/multi.rs"]
mod multi;
#[path = "transports/muxer.rs"]
mod muxer;
#[path = "transports/protocol.rs"]
mod protocol;
#[path = "transports/report.rs"]
mod report;
#[path = "transports/rss.rs"]
mod rss;
#[path = "transports/runtime.rs"]
mod runtime;
#[path = "transports/settings.rs"]
mod settings;
#[path = "transports/stacks.rs"]
mod stacks;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::{
    measure::{measure_stack, Plan},
    protocol::throughput,
    report::{report, tput_key, Figures},
    rss::{measure_rss, rss_child},
    runtime::raise_nofile,
    settings::Settings,
    stacks::{Env, Layer, Mode, Stack},
};

/// Every handshake, dial and accept is bounded by this.
const WAIT: Duration = Duration::from_secs(20);
/// Closing a connection after a measurement is bounded by this (errors are ignored).
const CLOSE_WAIT: Duration = Duration::from_secs(5);
const MIB: u64 = 1024 * 1024;

fn run(settings: &Settings) -> Result<()> {
    let env = Env::new()?;
    let timeout = settings.transfer_timeout();
    let mut figures = Figures::default();
    let bench_start = Instant::now();
    let directions = [Mode::DialerUploads, Mode::ListenerUploads];

    let mut transfers: Vec<(Layer, Stack, Mode)> = Vec::new();
    if settings.section("full") {
        for stack in Stack::FULL {
            transfers.extend(directions.map(|mode| (Layer::Full, stack, mode)));
        }
    }
    if settings.section("noise") {
        for stack in [Stack::Ws, Stack::Websocket, Stack::Tcp] {
            transfers.push((Layer::Noise, stack, Mode::DialerUploads));
        }
    }
    if settings.section("raw") {
        for stack in [Stack::Ws, Stack::Websocket, Stack::Tcp, Stack::TcpAsyncStd] {
            transfers.extend(directions.map(|mode| (Layer::Raw, stack, mode)));
        }
    }
    transfers.retain(|&(_, stack, mode)| settings.wants(stack, mode));
    let mut stream_stacks = Vec::new();
    if settings.section("streams") {
        stream_stacks.extend([
            Stack::Ws,
            Stack::WsTokio,
            Stack::Websocket,
            Stack::Tcp,
            Stack::TcpAsyncStd,
        ]);
    }
    stream_stacks.retain(|&stack| settings.wants(stack, Mode::DialerUploads));
    let mut setups: Vec<(Layer, Stack)> = Vec::new();
    if settings.section("setup") {
        for stack in [
            Stack::Ws,
            Stack::Wss,
            Stack::WsTokio,
            Stack::Websocket,
            Stack::Tcp,
            Stack::TcpOurs,
            Stack::WsShared,
        ] {
            setups.push((Layer::Full, stack));
        }
        for stack in [Stack::Ws, Stack::Websocket, Stack::Tcp, Stack::TcpAsyncStd] {
            setups.push((Layer::Raw, stack));
        }
    }
    setups.retain(|&(_, stack)| settings.wants(stack, Mode::Echo));
    let mut multi_stacks = Vec::new();
    if settings.section("multi") {
        multi_stacks.extend(multi::STACKS);
    }
    multi_stacks.retain(|&stack| settings.wants(stack, Mode::DialerUploads));
    let multi_bytes = settings.multi_bytes * settings.multi_conns as u64;
    let multi_timeout = Duration::from_secs(60.max(multi_bytes / 10_000_000));

    for run in 1..=settings.runs {
        // Stacks alternate within each run, so that drift on the machine hits all alike.
        for &(layer, stack, mode) in &transfers {
            let plan = Plan::Transfer {
                mode,
                streams: 1,
                bytes: settings.bytes,
            };
            let outcome = measure_stack(stack, layer, plan, &env, timeout)
                .with_context(|| format!("{} {}", stack.label(layer), mode.id()))?;
            let mbps = throughput(&outcome.received)?;
            eprintln!(
                "run {run}/{}: {:<38} {:<16} {mbps:8.1} MB/s",
                settings.runs,
                stack.label(layer),
                mode.id()
            );
            figures.add(tput_key(layer, stack, mode), mbps);
        }
        for &stack in &stream_stacks {
            let plan = Plan::Transfer {
                mode: Mode::DialerUploads,
                streams: settings.streams,
                bytes: settings.bytes / settings.streams as u64,
            };
            let outcome =
                measure_stack(stack, Layer::Full, plan, &env, timeout).with_context(|| {
                    format!("{} {} streams", stack.label(Layer::Full), settings.streams)
                })?;
            let mbps = throughput(&outcome.received)?;
            eprintln!(
                "run {run}/{}: {:<38} {:<16} {mbps:8.1} MB/s",
                settings.runs,
                stack.label(Layer::Full),
                format!("{} streams", settings.streams),
            );
            figures.add(format!("streams.{}", stack.id()), mbps);
        }
        for &(layer, stack) in &setups {
            let plan = Plan::Setup {
                count: settings.setup_conns,
            };
            let outcome = measure_stack(stack, layer, plan, &env, WAIT)
                .with_context(|| format!("{} setup", stack.label(layer)))?;
            let n = outcome.setups.len() as f64;
            let upgraded = outcome
                .setups
                .iter()
                .map(|s| s.0.as_secs_f64())
                .sum::<f64>()
                / n;
            let first = outcome
                .setups
                .iter()
                .map(|s| s.1.as_secs_f64())
                .sum::<f64>()
                / n;
            let per_sec = n / outcome.elapsed.as_secs_f64();
            eprintln!(
                "run {run}/{}: {:<38} setup {:.3} ms, with first stream {:.3} ms, {per_sec:.0} conn/s",
                settings.runs,
                stack.label(layer),
                upgraded * 1e3,
                first * 1e3
            );
            let key = format!("{}.{}", layer.id(), stack.id());
            figures.add(format!("setup.{key}"), upgraded * 1e3);
            figures.add(format!("setup_first_stream.{key}"), first * 1e3);
            figures.add(format!("conns_per_sec.{key}"), per_sec);
        }
        for &stack in &multi_stacks {
            let outcome = multi::measure(
                stack,
                settings.multi_conns,
                settings.multi_bytes,
                multi_timeout,
            )
            .with_context(|| {
                format!(
                    "{} {} connections on a multi-thread runtime",
                    stack.label(Layer::Full),
                    settings.multi_conns
                )
            })?;
            let cpu = outcome.cpu.as_secs_f64();
            let wall = outcome.wall.as_secs_f64();
            eprintln!(
                "run {run}/{}: {:<38} {:<16} {:8.1} MB/s, {cpu:.2} CPU-s in {wall:.2} s, {:.3} CPU-ns/B",
                settings.runs,
                stack.label(Layer::Full),
                format!("{} conns (mt)", settings.multi_conns),
                outcome.mbps,
                outcome.cpu_ns_per_byte(),
            );
            let id = stack.id();
            figures.add(format!("aggregate.{id}"), outcome.mbps);
            figures.add(format!("cpu_seconds.{id}"), cpu);
            figures.add(format!("cpu_per_byte.{id}"), outcome.cpu_ns_per_byte());
            figures.add(format!("cpu_busy.{id}"), cpu / wall.max(1e-9));
        }
    }
    let throughput_time = bench_start.elapsed();

    if settings.section("rss") {
        for _ in 0..settings.rss_runs {
            for stack in [Stack::Ws, Stack::WsTokio, Stack::Websocket, Stack::Tcp] {
                if !settings.wants(stack, Mode::Echo) {
                    continue;
                }
                let (listener, dialer) = measure_rss(stack, settings)
                    .with_context(|| format!("RSS of {}", stack.label(Layer::Full)))?;
                let kib = |v: f64| v / 1024.0;
                let both = kib(listener.rss + dialer.rss) / 2.0;
                eprintln!(
                    "rss: {:<38} {both:.2} KiB per idle connection endpoint (listener {:.2}, dialer {:.2}; glibc heap in use {:.2} / {:.2}, free {:.2} / {:.2})",
                    stack.label(Layer::Full),
                    kib(listener.rss),
                    kib(dialer.rss),
                    kib(listener.heap_used),
                    kib(dialer.heap_used),
                    kib(listener.heap_free),
                    kib(dialer.heap_free),
                );
                let id = stack.id();
                figures.add(format!("rss.{id}"), both);
                figures.add(format!("rss_listener.{id}"), kib(listener.rss));
                figures.add(format!("rss_dialer.{id}"), kib(dialer.rss));
                figures.add(
                    format!("heap_in_use_listener.{id}"),
                    kib(listener.heap_used),
                );
                figures.add(format!("heap_in_use_dialer.{id}"), kib(dialer.heap_used));
                figures.add(format!("heap_free_listener.{id}"), kib(listener.heap_free));
                figures.add(format!("heap_free_dialer.{id}"), kib(dialer.heap_free));
            }
        }
    }

    let main_sections = ["full", "noise", "raw", "streams", "setup", "rss", "multi"];
    if main_sections.iter().any(|s| settings.section(s)) {
        report(settings, &figures);
    }
    let rss_time = bench_start.elapsed() - throughput_time;
    let mut instructions_time = Duration::ZERO;
    if settings.section("instructions") {
        let start = Instant::now();
        let counted = instructions::count_all(settings)?;
        instructions::report(settings, &counted);
        instructions_time = start.elapsed();
        if settings.gate {
            instructions::gate(&counted)?;
        }
    }
    eprintln!(
        "bench took {:.1} s ({:.1} s transfers and setups, {:.1} s RSS, {:.1} s instruction counts)",
        bench_start.elapsed().as_secs_f64(),
        throughput_time.as_secs_f64(),
        rss_time.as_secs_f64(),
        instructions_time.as_secs_f64(),
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--rss-child") {
        let code = match rss_child(&args[i + 1..]) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        };
        // Skip tearing down thousands of connections.
        std::process::exit(code);
    }
    if let Some(i) = args.iter().position(|a| a == "--instructions-child") {
        if let Err(e) = instructions::instructions_child(&args[i + 1..]) {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test` (e.g. `--all-targets`) passes nothing, and gets
    // the quick mode rather than minutes of 1 GiB transfers in the dev profile. `--full` forces the
    // full run (e.g. when starting the binary directly). Other arguments are ignored.
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let quick = has("--quick") || !(has("--bench") || has("--full"));
    let settings = Settings::from_env(quick, has("--gate"));
    raise_nofile(4096);
    if let Err(e) = run(&settings) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
