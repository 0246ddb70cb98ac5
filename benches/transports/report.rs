//! The report: the figures' medians as Markdown tables, the target ratios, and one JSON line per
//! ratio and per figure (`{"ratio": ...}`, `{"figure": ...}`), whose names, keys and order are
//! kept stable for whatever reads them.

use std::collections::BTreeMap;

use crate::{
    multi,
    runtime::pinning,
    settings::Settings,
    stacks::{Layer, Mode, Stack},
    MIB,
};

#[derive(Default)]
pub(crate) struct Figures(pub(crate) BTreeMap<String, Vec<f64>>);

impl Figures {
    pub(crate) fn add(&mut self, key: String, value: f64) {
        self.0.entry(key).or_default().push(value);
    }

    pub(crate) fn median(&self, key: &str) -> Option<f64> {
        let mut values = self.0.get(key)?.clone();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        Some(if values.len() % 2 == 1 {
            values[mid]
        } else {
            (values[mid - 1] + values[mid]) / 2.0
        })
    }
}

pub(crate) fn tput_key(layer: Layer, stack: Stack, mode: Mode) -> String {
    format!("throughput.{}.{}.{}", layer.id(), stack.id(), mode.id())
}

pub(crate) fn fmt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "–".into(), |v| format!("{v:.decimals$}"))
}

pub(crate) fn report(settings: &Settings, f: &Figures) {
    let cpus = pinning().map_or_else(
        || "not pinned (fewer than 2 CPUs)".to_string(),
        |(a, b)| format!("listener on CPU {a}, dialer on CPU {b}"),
    );
    println!();
    println!(
        "## Transport benchmark ({} mode): {} MiB per transfer, medians of {} run(s), {} idle connections for RSS; {cpus}{}",
        if settings.quick { "quick" } else { "full" },
        settings.bytes / MIB,
        settings.runs,
        settings.idle_conns,
        if cfg!(debug_assertions) { "; DEV PROFILE (numbers are meaningless)" } else { "" }
    );
    println!();
    println!("| stack | dialer uploads (MB/s) | listener uploads (MB/s) | {} streams (MB/s) | setup (ms) | setup + first stream (ms) | conn/s | RSS per idle endpoint (KiB) |", settings.streams);
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let rows: [(Layer, Stack); 17] = [
        (Layer::Full, Stack::Ws),
        (Layer::Full, Stack::Wss),
        (Layer::Full, Stack::WsTokio),
        (Layer::Full, Stack::Websocket),
        (Layer::Full, Stack::Tcp),
        (Layer::Full, Stack::TcpAsyncStd),
        (Layer::Full, Stack::TcpOurs),
        (Layer::Full, Stack::TcpOursAsyncStd),
        (Layer::Full, Stack::WsShared),
        (Layer::Full, Stack::Metrics),
        (Layer::Noise, Stack::Ws),
        (Layer::Noise, Stack::Websocket),
        (Layer::Noise, Stack::Tcp),
        (Layer::Raw, Stack::Ws),
        (Layer::Raw, Stack::Websocket),
        (Layer::Raw, Stack::Tcp),
        (Layer::Raw, Stack::TcpAsyncStd),
    ];
    for (layer, stack) in rows {
        let key = format!("{}.{}", layer.id(), stack.id());
        let full = layer == Layer::Full;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            stack.label(layer),
            fmt(f.median(&tput_key(layer, stack, Mode::DialerUploads)), 0),
            fmt(f.median(&tput_key(layer, stack, Mode::ListenerUploads)), 0),
            fmt(
                full.then(|| f.median(&format!("streams.{}", stack.id())))
                    .flatten(),
                0
            ),
            fmt(f.median(&format!("setup.{key}")), 3),
            fmt(f.median(&format!("setup_first_stream.{key}")), 3),
            fmt(f.median(&format!("conns_per_sec.{key}")), 0),
            fmt(
                full.then(|| f.median(&format!("rss.{}", stack.id())))
                    .flatten(),
                2
            ),
        );
    }

    if f.median("rss.ws").is_some() || f.median("rss.ws-tokio").is_some() {
        println!();
        println!("| idle endpoint (KiB) | RSS | RSS listener | RSS dialer | glibc heap in use, listener | glibc heap in use, dialer |");
        println!("|---|---:|---:|---:|---:|---:|");
        for stack in [Stack::Ws, Stack::WsTokio, Stack::Websocket, Stack::Tcp] {
            let id = stack.id();
            let get = |what: &str| fmt(f.median(&format!("{what}.{id}")), 2);
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                stack.label(Layer::Full),
                get("rss"),
                get("rss_listener"),
                get("rss_dialer"),
                get("heap_in_use_listener"),
                get("heap_in_use_dialer"),
            );
        }
    }

    if multi::STACKS
        .iter()
        .any(|s| f.median(&format!("aggregate.{}", s.id())).is_some())
    {
        println!();
        println!(
            "| {} connections x 1 stream, dialer uploads {} MiB each; tokio multi-thread ({} workers, not pinned); SwarmBuilder | aggregate (MB/s) | process CPU (s) | CPU per byte (ns/B) | CPUs busy |",
            settings.multi_conns,
            settings.multi_bytes / MIB,
            multi::workers(),
        );
        println!("|---|---:|---:|---:|---:|");
        for stack in multi::STACKS {
            let id = stack.id();
            let get = |what: &str, decimals| fmt(f.median(&format!("{what}.{id}")), decimals);
            println!(
                "| {} | {} | {} | {} | {} |",
                stack.label(Layer::Full),
                get("aggregate", 0),
                get("cpu_seconds", 2),
                get("cpu_per_byte", 3),
                get("cpu_busy", 2),
            );
        }
    }

    // Ratios of medians; where there are two directions, the worse one counts.
    let tput = |layer, a, b| -> Option<(f64, f64, f64)> {
        let up = f.median(&tput_key(layer, a, Mode::DialerUploads))?
            / f.median(&tput_key(layer, b, Mode::DialerUploads))?;
        let down = f.median(&tput_key(layer, a, Mode::ListenerUploads))?
            / f.median(&tput_key(layer, b, Mode::ListenerUploads))?;
        Some((up.min(down), up, down))
    };
    let simple = |a: &str, b: &str| Some(f.median(a)? / f.median(b)?);
    struct Ratio {
        name: &'static str,
        value: Option<f64>,
        detail: String,
        target: &'static str,
        met: Option<bool>,
    }
    let mut ratios = Vec::new();
    let tput_ratio = |name, layer, a, b, min: f64, target| {
        let r = tput(layer, a, b);
        Ratio {
            name,
            value: r.map(|r| r.0),
            detail: r.map_or_else(String::new, |(_, up, down)| {
                format!("dialer uploads {up:.3}, listener uploads {down:.3}")
            }),
            target,
            met: r.map(|r| r.0 >= min),
        }
    };
    let mut throughput_ratio = |name, layer, a, b, min: f64, target| {
        ratios.push(tput_ratio(name, layer, a, b, min, target));
    };
    throughput_ratio(
        "throughput_ws_vs_tcp",
        Layer::Full,
        Stack::Ws,
        Stack::Tcp,
        0.95,
        ">= 0.95",
    );
    throughput_ratio(
        "throughput_ws_vs_websocket",
        Layer::Full,
        Stack::Ws,
        Stack::Websocket,
        1.3,
        ">= 1.3",
    );
    throughput_ratio(
        "raw_throughput_ws_vs_websocket",
        Layer::Raw,
        Stack::Ws,
        Stack::Websocket,
        2.5,
        ">= 2.5",
    );
    throughput_ratio(
        "raw_throughput_ws_vs_tcp",
        Layer::Raw,
        Stack::Ws,
        Stack::Tcp,
        0.6,
        ">= 0.6",
    );
    let setup = simple("setup.full.ws", "setup.full.tcp");
    ratios.push(Ratio {
        name: "setup_ws_vs_tcp",
        value: setup,
        detail: "mean dial -> upgraded (noise+yamux), lower is better".into(),
        target: "<= 1.1",
        met: setup.map(|v| v <= 1.1),
    });
    let rss_tcp = simple("rss.ws", "rss.tcp");
    ratios.push(Ratio {
        name: "rss_ws_vs_tcp",
        value: rss_tcp,
        detail: "RSS per idle upgraded endpoint, lower is better".into(),
        target: "<= 1.15",
        met: rss_tcp.map(|v| v <= 1.15),
    });
    ratios.push(Ratio {
        name: "rss_ws_vs_websocket",
        value: simple("rss.ws", "rss.websocket"),
        detail: "RSS per idle upgraded endpoint, lower is better".into(),
        target: "(reported)",
        met: None,
    });
    // The tokio backend against libp2p-tcp, both on tokio.
    ratios.push(tput_ratio(
        "throughput_ws_tokio_vs_tcp",
        Layer::Full,
        Stack::WsTokio,
        Stack::Tcp,
        0.95,
        ">= 0.95",
    ));
    let at_least = |name, a: &str, b: &str, detail: String, min: f64, target| {
        let value = simple(a, b);
        Ratio {
            name,
            value,
            detail,
            target,
            met: value.map(|v| v >= min),
        }
    };
    let at_most = |name, a: &str, b: &str, detail: &str, max: f64, target| {
        let value = simple(a, b);
        Ratio {
            name,
            value,
            detail: detail.into(),
            target,
            met: value.map(|v| v <= max),
        }
    };
    ratios.push(at_least(
        "streams_ws_tokio_vs_tcp",
        "streams.ws-tokio",
        "streams.tcp",
        format!(
            "{} concurrent yamux streams, dialer uploads",
            settings.streams
        ),
        0.95,
        ">= 0.95",
    ));
    ratios.push(at_most(
        "setup_ws_tokio_vs_tcp",
        "setup.full.ws-tokio",
        "setup.full.tcp",
        "mean dial -> upgraded (noise+yamux), lower is better",
        1.1,
        "<= 1.1",
    ));
    ratios.push(at_most(
        "rss_ws_tokio_vs_tcp",
        "rss.ws-tokio",
        "rss.tcp",
        "RSS per idle upgraded endpoint, lower is better",
        1.1,
        "<= 1.1",
    ));
    ratios.push(at_least(
        "aggregate_ws_tokio_vs_tcp",
        "aggregate.ws-tokio",
        "aggregate.tcp",
        format!(
            "{} connections x 1 stream, tokio multi-thread ({} workers), SwarmBuilder",
            settings.multi_conns,
            multi::workers()
        ),
        0.95,
        ">= 0.95",
    ));
    ratios.push(at_most(
        "cpu_per_byte_ws_tokio_vs_tcp",
        "cpu_per_byte.ws-tokio",
        "cpu_per_byte.tcp",
        "process CPU time per byte in the multi section, lower is better",
        1.05,
        "<= 1.05",
    ));
    // The async-std backend against the same runtime without WebSocket: the layer's own cost.
    ratios.push(tput_ratio(
        "throughput_ws_vs_tcp_async_std",
        Layer::Full,
        Stack::Ws,
        Stack::TcpAsyncStd,
        0.95,
        ">= 0.95",
    ));
    ratios.push(at_least(
        "streams_ws_vs_tcp_async_std",
        "streams.ws",
        "streams.tcp-async-std",
        format!(
            "{} concurrent yamux streams, dialer uploads",
            settings.streams
        ),
        0.95,
        ">= 0.95",
    ));
    // libp2p-ws's own /tcp (tokio backend) against libp2p-tcp: the same TCP + noise + yamux, so
    // whatever differs is the transport's (first-bytes classification included on the listener).
    ratios.push(tput_ratio(
        "throughput_tcp_ours_vs_tcp",
        Layer::Full,
        Stack::TcpOurs,
        Stack::Tcp,
        0.97,
        ">= 0.97",
    ));
    // /ws on a port shared with /tcp (the listener reads the first bytes to pick the listener)
    // against /ws alone on its port, both libp2p-ws tokio.
    ratios.push(at_most(
        "setup_shared_vs_unshared",
        "setup.full.ws-shared",
        "setup.full.ws-tokio",
        "mean dial -> upgraded over /ws, shared port (/tcp + /ws) vs /ws alone, lower is better",
        1.05,
        "<= 1.05",
    ));
    // The full stack with metrics on against the same stack without (libp2p-ws tokio /ws).
    ratios.push(tput_ratio(
        "throughput_metrics_vs_plain",
        Layer::Full,
        Stack::Metrics,
        Stack::WsTokio,
        0.99,
        ">= 0.99",
    ));

    println!();
    println!("| ratio | value | detail | target | met |");
    println!("|---|---:|---|---|---|");
    for r in &ratios {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.name,
            fmt(r.value, 3),
            r.detail,
            r.target,
            match r.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "–",
            }
        );
    }
    let direction = |a: Stack, b: Stack, mode| {
        Some(
            f.median(&tput_key(Layer::Full, a, mode))?
                / f.median(&tput_key(Layer::Full, b, mode))?,
        )
    };
    let extra = [
        ("streams_ws_vs_tcp", simple("streams.ws", "streams.tcp")),
        (
            "streams_ws_vs_websocket",
            simple("streams.ws", "streams.websocket"),
        ),
        (
            "setup_ws_vs_websocket",
            simple("setup.full.ws", "setup.full.websocket"),
        ),
        (
            "setup_first_stream_ws_vs_tcp",
            simple("setup_first_stream.full.ws", "setup_first_stream.full.tcp"),
        ),
        (
            "conns_per_sec_ws_vs_tcp",
            simple("conns_per_sec.full.ws", "conns_per_sec.full.tcp"),
        ),
        (
            "raw_setup_ws_vs_websocket",
            simple("setup.raw.ws", "setup.raw.websocket"),
        ),
        (
            "throughput_ws_tokio_vs_tcp_dialer_uploads",
            direction(Stack::WsTokio, Stack::Tcp, Mode::DialerUploads),
        ),
        (
            "throughput_ws_tokio_vs_tcp_listener_uploads",
            direction(Stack::WsTokio, Stack::Tcp, Mode::ListenerUploads),
        ),
        (
            "throughput_ws_vs_tcp_async_std_dialer_uploads",
            direction(Stack::Ws, Stack::TcpAsyncStd, Mode::DialerUploads),
        ),
        (
            "throughput_ws_vs_tcp_async_std_listener_uploads",
            direction(Stack::Ws, Stack::TcpAsyncStd, Mode::ListenerUploads),
        ),
        (
            "setup_first_stream_ws_tokio_vs_tcp",
            simple(
                "setup_first_stream.full.ws-tokio",
                "setup_first_stream.full.tcp",
            ),
        ),
        (
            "conns_per_sec_ws_tokio_vs_tcp",
            simple("conns_per_sec.full.ws-tokio", "conns_per_sec.full.tcp"),
        ),
        (
            "streams_ws_tokio_vs_ws",
            simple("streams.ws-tokio", "streams.ws"),
        ),
        (
            "cpu_busy_ws_tokio_vs_tcp",
            simple("cpu_busy.ws-tokio", "cpu_busy.tcp"),
        ),
        (
            "throughput_tcp_ours_vs_tcp_dialer_uploads",
            direction(Stack::TcpOurs, Stack::Tcp, Mode::DialerUploads),
        ),
        (
            "throughput_tcp_ours_vs_tcp_listener_uploads",
            direction(Stack::TcpOurs, Stack::Tcp, Mode::ListenerUploads),
        ),
        (
            "throughput_tcp_ours_async_std_vs_tcp_async_std_dialer_uploads",
            direction(
                Stack::TcpOursAsyncStd,
                Stack::TcpAsyncStd,
                Mode::DialerUploads,
            ),
        ),
        (
            "throughput_tcp_ours_async_std_vs_tcp_async_std_listener_uploads",
            direction(
                Stack::TcpOursAsyncStd,
                Stack::TcpAsyncStd,
                Mode::ListenerUploads,
            ),
        ),
        (
            "setup_tcp_ours_vs_tcp",
            simple("setup.full.tcp-ours", "setup.full.tcp"),
        ),
        (
            "setup_first_stream_shared_vs_unshared",
            simple(
                "setup_first_stream.full.ws-shared",
                "setup_first_stream.full.ws-tokio",
            ),
        ),
    ];
    println!();
    println!(
        "Also: {}",
        extra
            .iter()
            .map(|(name, v)| format!("{name} {}", fmt(*v, 3)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    println!();
    for r in &ratios {
        if let Some(value) = r.value {
            println!("{{\"ratio\": \"{}\", \"value\": {value:.4}}}", r.name);
        }
    }
    for (key, _) in f.0.iter() {
        let unit = match key.split('.').next() {
            Some("throughput" | "streams" | "aggregate") => "MB/s",
            Some("cpu_seconds") => "s",
            Some("cpu_per_byte") => "ns/B",
            Some("cpu_busy") => "CPUs",
            Some("setup" | "setup_first_stream") => "ms",
            Some("conns_per_sec") => "conn/s",
            Some(
                "rss"
                | "rss_listener"
                | "rss_dialer"
                | "heap_in_use_listener"
                | "heap_in_use_dialer"
                | "heap_free_listener"
                | "heap_free_dialer",
            ) => "KiB",
            _ => "",
        };
        if let Some(value) = f.median(key) {
            println!("{{\"figure\": \"{key}\", \"value\": {value:.4}, \"unit\": \"{unit}\"}}");
        }
    }
    for (name, value) in extra {
        if let Some(value) = value {
            println!(
                "{{\"figure\": \"ratio.{name}\", \"value\": {value:.4}, \"unit\": \"ratio\"}}"
            );
        }
    }
}
