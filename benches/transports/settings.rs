//! What a run measures and how much: quick or full mode, sizes and counts, and the filters
//! (`BENCH_*` environment variables, see the bench's opening comment).

use std::time::Duration;

use crate::{
    stacks::{Mode, Stack},
    MIB,
};

#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) quick: bool,
    pub(crate) bytes: u64,
    pub(crate) runs: usize,
    pub(crate) setup_conns: usize,
    pub(crate) idle_conns: usize,
    pub(crate) warm_conns: usize,
    pub(crate) rss_runs: usize,
    pub(crate) streams: usize,
    /// The multi section: connections, and bytes uploaded on each.
    pub(crate) multi_conns: usize,
    pub(crate) multi_bytes: u64,
    /// The instructions section: bytes of the larger of its two transfers per stack and direction.
    pub(crate) instr_bytes: u64,
    /// Fail if `instructions_ws_vs_tcp` is above the gate (`--gate`, `BENCH_INSTRUCTIONS_GATE=1`).
    pub(crate) gate: bool,
    pub(crate) sections: Vec<String>,
    pub(crate) stacks: Option<Vec<String>>,
    pub(crate) directions: Option<Vec<String>>,
}

impl Settings {
    pub(crate) fn from_env(quick: bool, gate: bool) -> Settings {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| v != "0" && !v.is_empty());
        let quick = quick || set("BENCH_QUICK");
        let num = |name: &str, default: u64| -> u64 {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (mib, runs, setup, idle, rss_runs, multi_mib, instr_mib) = if quick {
            (8, 1, 20, 200, 1, 1, 8)
        } else {
            (1024, 5, 200, 10_000, 3, 128, 64)
        };
        let idle_conns = (num("BENCH_IDLE_CONNS", idle) as usize).max(2);
        let list = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        };
        Settings {
            quick,
            bytes: num("BENCH_MIB", mib).max(1) * MIB,
            runs: (num("BENCH_RUNS", runs) as usize).max(1),
            setup_conns: (num("BENCH_SETUP_CONNS", setup) as usize).max(1),
            idle_conns,
            warm_conns: (idle_conns / 100).clamp(1, 100),
            rss_runs: (num("BENCH_RSS_RUNS", rss_runs) as usize).max(1),
            streams: 16,
            multi_conns: (num("BENCH_MULTI_CONNS", 16) as usize).max(1),
            multi_bytes: num("BENCH_MULTI_MIB", multi_mib).max(1) * MIB,
            instr_bytes: num("BENCH_INSTR_MIB", instr_mib).max(1) * MIB,
            gate: gate || set("BENCH_INSTRUCTIONS_GATE"),
            sections: std::env::var("BENCH_ONLY")
                .unwrap_or_else(|_| "full,noise,raw,streams,setup,rss,multi".into())
                .split(',')
                .map(|s| s.trim().to_string())
                .collect(),
            stacks: list("BENCH_STACKS"),
            directions: list("BENCH_DIRECTIONS"),
        }
    }

    pub(crate) fn section(&self, name: &str) -> bool {
        self.sections.iter().any(|s| s == name)
    }

    pub(crate) fn wants(&self, stack: Stack, mode: Mode) -> bool {
        let listed = |list: &Option<Vec<String>>, id: &str| {
            list.as_ref().is_none_or(|l| l.iter().any(|s| s == id))
        };
        let direction = match mode {
            Mode::DialerUploads => "dialer",
            Mode::ListenerUploads => "listener",
            Mode::Echo => "echo",
        };
        listed(&self.stacks, stack.id())
            && (mode == Mode::Echo || listed(&self.directions, direction))
    }

    /// Bound on one transfer: generous (at least 10 MB/s, at least a minute).
    pub(crate) fn transfer_timeout(&self) -> Duration {
        Duration::from_secs(60.max(self.bytes / 10_000_000))
    }
}
