//! Instructions per byte moved (`BENCH_ONLY=instructions`), counted with callgrind: a measure that
//! load on the machine cannot move.
//!
//! For each stack and direction the bench runs itself as a child (`--instructions-child <layer>
//! <stack> <mode> <bytes>`) under `valgrind --tool=callgrind`: one transfer over one connection,
//! both peers on the child's one thread and one runtime (`runtime::pair` in single-thread mode),
//! so the same binary does the same work, whatever else runs on the machine. Each transfer runs
//! twice, with `bytes` and with `bytes / 8`; the difference of the two totals over the difference
//! of the sizes is the per-byte figure, free of process start, key generation, handshakes and
//! close. The same difference per function (`callgrind_annotate`) gives the top functions, and the
//! inclusive cost of `runtime::poll_listener_side` / `poll_dialer_side` splits the total into what
//! each peer's future did and what the runtime did outside both (reactor, wake-ups).
//!
//! Both peers run in the one process, so a figure is sender plus receiver: "dialer uploads" is the
//! dialer's sending and the listener's receiving, per byte of payload. Only user-space instructions
//! count (the kernel's copies do not), so bare TCP is about 0 per byte; the bare layers are
//! compared with each other, not with TCP. The child runs with `GLIBC_TUNABLES` set so that glibc's
//! large copies use vector loops rather than `rep movsb` (see [`callgrind`]); `BENCH_INSTR_REP=1`
//! (or a `GLIBC_TUNABLES` of your own) keeps glibc's choice.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};

use crate::{
    measure::{measure_stack, Plan},
    report::fmt,
    runtime::set_single_thread,
    settings::Settings,
    stacks::{Env, Layer, Mode, Stack},
    MIB,
};

/// The CI gate (`--gate` or `BENCH_INSTRUCTIONS_GATE=1`): `instructions_ws_vs_tcp` (libp2p-ws
/// tokio `/ws` against libp2p-tcp, both tcp + noise + yamux on a tokio current-thread runtime,
/// worse direction: dialer uploads, where the dialer masks) must not exceed this. Measured with
/// `BENCH_ONLY=instructions cargo bench --bench transports -- --quick` (8 MiB minus 1 MiB; release
/// build, rustc 1.95, glibc 2.36, valgrind 3.19, x86_64 with AVX2): 1.0206 with the AVX2 masking,
/// the masked copy into the frame and the client's direct writes (1.0576 before them, 1.0688
/// before the 128-byte masking loop; 1.0430 on the portable path, AVX2 detection forced off); the
/// threshold is that plus 3%. A count does not depend on load, so only a change of code (ours or
/// a dependency's) or toolchain moves it (runs of the same binary differ by up to 0.0007 in this
/// ratio). `BENCH_INSTRUCTIONS_MAX` overrides it (e.g. to see the gate fail).
pub(crate) const GATE_MAX_WS_VS_TCP: f64 = 1.052;

/// The smaller of the two transfers is this fraction of the larger.
const SMALL_DIVISOR: u64 = 8;

/// The transfers counted: every stack of the full-stack and raw sections, and the bare wss layer
/// (which shows what TLS adds to the bare WebSocket layer).
pub(crate) fn transfers(settings: &Settings) -> Vec<(Layer, Stack, Mode)> {
    let mut out = Vec::new();
    for stack in Stack::FULL {
        for mode in [Mode::DialerUploads, Mode::ListenerUploads] {
            out.push((Layer::Full, stack, mode));
        }
    }
    for stack in [
        Stack::Ws,
        Stack::Wss,
        Stack::Websocket,
        Stack::Tcp,
        Stack::TcpAsyncStd,
    ] {
        for mode in [Mode::DialerUploads, Mode::ListenerUploads] {
            out.push((Layer::Raw, stack, mode));
        }
    }
    out.retain(|&(_, stack, mode)| settings.wants(stack, mode));
    out
}

pub(crate) fn key(layer: Layer, stack: Stack, mode: Mode) -> String {
    format!("{}.{}.{}", layer.id(), stack.id(), mode.id())
}

/// The child: one transfer, both peers on this thread. Run under callgrind by [`count`].
pub(crate) fn instructions_child(args: &[String]) -> Result<()> {
    let [layer, stack, mode, bytes, ..] = args else {
        bail!("usage: --instructions-child <layer> <stack> <mode> <bytes>");
    };
    let layer = match layer.as_str() {
        "full" => Layer::Full,
        "noise" => Layer::Noise,
        "raw" => Layer::Raw,
        other => bail!("unknown layer {other}"),
    };
    let stack = Stack::from_id(stack).with_context(|| format!("unknown stack {stack}"))?;
    let mode = match mode.as_str() {
        "dialer_uploads" => Mode::DialerUploads,
        "listener_uploads" => Mode::ListenerUploads,
        other => bail!("unknown mode {other}"),
    };
    let bytes: u64 = bytes.parse().context("bytes")?;
    set_single_thread();
    let env = Env::new()?;
    let plan = Plan::Transfer {
        mode,
        streams: 1,
        bytes,
    };
    let outcome = measure_stack(stack, layer, plan, &env, Duration::from_secs(1800))?;
    let got: u64 = outcome.received.iter().map(|r| r.bytes).sum();
    ensure!(got == bytes, "received {got} of {bytes} bytes");
    Ok(())
}

/// What one stack and direction cost.
#[derive(Clone, Debug)]
pub(crate) struct Counted {
    /// Instructions per byte moved (sender and receiver together).
    pub(crate) per_byte: f64,
    /// Of which inside the listener's and the dialer's futures (inclusive).
    pub(crate) listener: Option<f64>,
    pub(crate) dialer: Option<f64>,
    /// Instructions per byte by function (exclusive), the largest first.
    pub(crate) top: Vec<(String, f64)>,
    /// Total instructions of the larger run, and the wall time of both runs.
    pub(crate) total: u64,
    pub(crate) secs: f64,
}

fn out_dir() -> PathBuf {
    std::env::var_os("BENCH_CALLGRIND_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/callgrind"))
}

/// Runs the child for one transfer of `bytes` under callgrind; returns the profile's path and its
/// total instruction count.
fn callgrind(layer: Layer, stack: Stack, mode: Mode, bytes: u64) -> Result<(PathBuf, u64)> {
    let dir = out_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(format!("{}.{}.out", key(layer, stack, mode), bytes));
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let mut command = Command::new("valgrind");
    if std::env::var_os("GLIBC_TUNABLES").is_none() && std::env::var_os("BENCH_INSTR_REP").is_none()
    {
        // glibc copies and fills large buffers with `rep movsb` / `rep stosb`, which callgrind
        // counts once per byte (one instruction per iteration), though the CPU moves 32-64 bytes a
        // cycle that way: copies would weigh 10-30x what they cost. Above these thresholds glibc
        // uses its vector loops instead, whose instructions callgrind counts as the CPU runs them.
        command.env(
            "GLIBC_TUNABLES",
            "glibc.cpu.x86_rep_movsb_threshold=1099511627776:glibc.cpu.x86_rep_stosb_threshold=1099511627776",
        );
    }
    let output = command
        .arg("--tool=callgrind")
        .arg("-q")
        .arg(format!("--callgrind-out-file={}", file.display()))
        .arg(&exe)
        .arg("--instructions-child")
        .args([layer.id(), stack.id(), mode.id(), &bytes.to_string()])
        .output()
        .context("running valgrind (is it installed?)")?;
    if !output.status.success() {
        bail!(
            "valgrind {} {bytes} failed ({}): {}",
            key(layer, stack, mode),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
    let total = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no totals in {}", file.display()))?;
    Ok((file, total))
}

/// `callgrind_annotate`'s per-function costs (all functions, exclusive or inclusive).
fn annotate(file: &Path, inclusive: bool) -> Result<HashMap<String, u64>> {
    let output = Command::new("callgrind_annotate")
        .arg("--threshold=100")
        .arg(format!(
            "--inclusive={}",
            if inclusive { "yes" } else { "no" }
        ))
        .arg(file)
        .output()
        .context("running callgrind_annotate")?;
    ensure!(
        output.status.success(),
        "callgrind_annotate {}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(parse_annotate(&String::from_utf8_lossy(&output.stdout)))
}

/// Lines such as `1,234,567 (12.34%)  ???:crate::module::function [/path/to/binary]`.
pub(crate) fn parse_annotate(text: &str) -> HashMap<String, u64> {
    let mut costs = HashMap::new();
    for line in text.lines() {
        let line = line.trim_start();
        let Some((count, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(count) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(rest) = rest
            .strip_prefix('(')
            .and_then(|r| r.split_once(')'))
            .map(|(_, name)| name.trim())
        else {
            continue;
        };
        if rest == "PROGRAM TOTALS" || rest.is_empty() {
            continue;
        }
        // Drop the object file and an unknown source file.
        let name = match rest.rfind(" [") {
            Some(i) if rest.ends_with(']') => &rest[..i],
            _ => rest,
        };
        let name = name.strip_prefix("???:").unwrap_or(name);
        *costs.entry(name.to_string()).or_insert(0) += count;
    }
    costs
}

/// Counts one stack and direction: two transfers (`bytes / 8` and `bytes`), the difference.
pub(crate) fn count(layer: Layer, stack: Stack, mode: Mode, bytes: u64) -> Result<Counted> {
    let start = Instant::now();
    let small = (bytes / SMALL_DIVISOR).max(1);
    ensure!(bytes > small, "the transfer is too small to count per byte");
    let (small_file, small_total) = callgrind(layer, stack, mode, small)?;
    let (big_file, big_total) = callgrind(layer, stack, mode, bytes)?;
    let moved = (bytes - small) as f64;
    let per_byte = (big_total as f64 - small_total as f64) / moved;
    let delta = |inclusive| -> Result<Vec<(String, f64)>> {
        let big = annotate(&big_file, inclusive)?;
        let small = annotate(&small_file, inclusive)?;
        let mut out: Vec<(String, f64)> = big
            .into_iter()
            .map(|(name, cost)| {
                let before = small.get(&name).copied().unwrap_or(0);
                let d = (cost as f64 - before as f64) / moved;
                (name, d)
            })
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    };
    let mut top = delta(false)?;
    top.truncate(15);
    let inclusive = delta(true)?;
    let side = |name: &str| {
        inclusive
            .iter()
            .filter(|(f, _)| f.ends_with(name))
            .map(|(_, v)| *v)
            .reduce(f64::max)
    };
    Ok(Counted {
        per_byte,
        listener: side("runtime::poll_listener_side"),
        dialer: side("runtime::poll_dialer_side"),
        top,
        total: big_total,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// What each counted transfer (layer, stack, direction) cost.
pub(crate) type AllCounted = Vec<((Layer, Stack, Mode), Counted)>;

/// Counts every transfer the settings ask for.
pub(crate) fn count_all(settings: &Settings) -> Result<AllCounted> {
    let mut out = Vec::new();
    for (layer, stack, mode) in transfers(settings) {
        let counted = count(layer, stack, mode, settings.instr_bytes)
            .with_context(|| format!("counting instructions of {}", key(layer, stack, mode)))?;
        eprintln!(
            "instructions: {:<38} {:<16} {:8.3} instr/B (listener side {}, dialer side {}; {:.1} s)",
            stack.label(layer),
            mode.id(),
            counted.per_byte,
            fmt(counted.listener, 3),
            fmt(counted.dialer, 3),
            counted.secs,
        );
        out.push(((layer, stack, mode), counted));
    }
    Ok(out)
}

pub(crate) struct Ratio {
    pub(crate) name: &'static str,
    pub(crate) value: Option<f64>,
    pub(crate) detail: String,
    pub(crate) target: String,
}

/// The instruction ratios (lower is better); where there are two directions, the worse one.
pub(crate) fn ratios(counted: &AllCounted) -> Vec<Ratio> {
    let get = |layer, stack, mode| {
        counted
            .iter()
            .find(|(k, _)| *k == (layer, stack, mode))
            .map(|(_, c)| c.per_byte)
    };
    let both = |layer, a, b| -> Option<(f64, f64, f64)> {
        let up = get(layer, a, Mode::DialerUploads)? / get(layer, b, Mode::DialerUploads)?;
        let down = get(layer, a, Mode::ListenerUploads)? / get(layer, b, Mode::ListenerUploads)?;
        Some((up.max(down), up, down))
    };
    let pair = |name, layer, a, b, target: &str| {
        let r = both(layer, a, b);
        Ratio {
            name,
            value: r.map(|r| r.0),
            detail: r.map_or_else(String::new, |(_, up, down)| {
                format!("dialer uploads {up:.3}, listener uploads {down:.3}")
            }),
            target: target.to_string(),
        }
    };
    let wss_sides = (|| {
        Some(
            get(Layer::Full, Stack::Wss, Mode::ListenerUploads)?
                / get(Layer::Full, Stack::Wss, Mode::DialerUploads)?,
        )
    })();
    let gate = format!("<= 1.03 (CI gate: <= {GATE_MAX_WS_VS_TCP})");
    vec![
        pair(
            "instructions_ws_vs_tcp",
            Layer::Full,
            Stack::WsTokio,
            Stack::Tcp,
            &gate,
        ),
        pair(
            "instructions_ws_vs_tcp_async_std",
            Layer::Full,
            Stack::Ws,
            Stack::TcpAsyncStd,
            "<= 1.03",
        ),
        pair(
            "instructions_wss_vs_ws",
            Layer::Full,
            Stack::Wss,
            Stack::Ws,
            "(reported)",
        ),
        Ratio {
            name: "instructions_wss_listener_vs_dialer_uploads",
            value: wss_sides,
            detail: "wss (async-std), listener uploads / dialer uploads".into(),
            target: "<= 1.10".into(),
        },
        pair(
            "instructions_tcp_ours_vs_tcp",
            Layer::Full,
            Stack::TcpOurs,
            Stack::Tcp,
            "(reported)",
        ),
        pair(
            "instructions_ws_tokio_vs_websocket",
            Layer::Full,
            Stack::WsTokio,
            Stack::Websocket,
            "(reported)",
        ),
        pair(
            "raw_instructions_wss_vs_ws",
            Layer::Raw,
            Stack::Wss,
            Stack::Ws,
            "(reported)",
        ),
        // The cost of counting (Config::with_metrics), libp2p-ws tokio /ws with and without.
        pair(
            "instructions_metrics_vs_plain",
            Layer::Full,
            Stack::Metrics,
            Stack::WsTokio,
            "<= 1.01",
        ),
    ]
}

/// The tables, the top functions and the JSON lines.
pub(crate) fn report(settings: &Settings, counted: &AllCounted) {
    let big = settings.instr_bytes;
    println!();
    println!(
        "## Instructions per byte (callgrind; {} MiB minus {} MiB transfers, both peers on one thread; sender + receiver)",
        big / MIB,
        (big / SMALL_DIVISOR) as f64 / MIB as f64,
    );
    println!();
    println!(
        "| stack | direction | instr/B | listener side | dialer side | runtime (outside both) |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for ((layer, stack, mode), c) in counted {
        let outside = c.listener.zip(c.dialer).map(|(l, d)| c.per_byte - l - d);
        println!(
            "| {} | {} | {:.3} | {} | {} | {} |",
            stack.label(*layer),
            mode.id(),
            c.per_byte,
            fmt(c.listener, 3),
            fmt(c.dialer, 3),
            fmt(outside, 3),
        );
    }
    let ratios = ratios(counted);
    println!();
    println!("| ratio | value | detail | target |");
    println!("|---|---:|---|---|");
    for r in &ratios {
        println!(
            "| {} | {} | {} | {} |",
            r.name,
            fmt(r.value, 4),
            r.detail,
            r.target
        );
    }
    for ((layer, stack, mode), c) in counted {
        println!();
        println!(
            "Top functions, {} {} (instr/B, exclusive; {} instructions in the {} MiB run):",
            stack.label(*layer),
            mode.id(),
            c.total,
            big / MIB
        );
        println!();
        println!("| instr/B | function |");
        println!("|---:|---|");
        for (name, v) in &c.top {
            println!("| {v:.3} | `{}` |", name.replace('|', "\\|"));
        }
    }
    println!();
    for ((layer, stack, mode), c) in counted {
        println!(
            "{{\"instructions_per_byte\": \"{}\", \"value\": {:.4}}}",
            key(*layer, *stack, *mode),
            c.per_byte
        );
    }
    for r in &ratios {
        if let Some(value) = r.value {
            println!("{{\"ratio\": \"{}\", \"value\": {value:.4}}}", r.name);
        }
    }
}

/// The CI gate on `instructions_ws_vs_tcp`.
pub(crate) fn gate(counted: &AllCounted) -> Result<()> {
    let max = std::env::var("BENCH_INSTRUCTIONS_MAX")
        .ok()
        .map(|v| v.parse::<f64>().context("BENCH_INSTRUCTIONS_MAX"))
        .transpose()?
        .unwrap_or(GATE_MAX_WS_VS_TCP);
    let ratio = ratios(counted)
        .into_iter()
        .find(|r| r.name == "instructions_ws_vs_tcp")
        .and_then(|r| r.value)
        .context("the gate needs instructions_ws_vs_tcp: BENCH_STACKS must include ws-tokio and tcp, both directions")?;
    if ratio > max {
        bail!("instructions_ws_vs_tcp {ratio:.4} is above the gate's {max:.4}");
    }
    eprintln!("gate: instructions_ws_vs_tcp {ratio:.4} <= {max:.4}");
    Ok(())
}
