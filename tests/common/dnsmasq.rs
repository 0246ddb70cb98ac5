//! A real DNS server for the DNS tests: Debian's dnsmasq on 127.0.0.1 (UDP and TCP), answering
//! with the records a test gives and nothing else (no upstream, no `/etc/hosts`; other `.test`
//! names do not exist).

use std::{net::SocketAddr, process::Command};

use super::daemon::{free_port, require, temp_dir, Daemon};

/// Starts dnsmasq with `txt` (name, text) and `hosts` (name, IP) records; killed when dropped.
pub fn dnsmasq(txt: &[(String, String)], hosts: &[(&str, &str)]) -> Daemon {
    require("dnsmasq");
    let port = free_port("127.0.0.1");
    let dir = temp_dir("dnsmasq");
    let mut command = Command::new("dnsmasq");
    command.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--local=/test/",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        "--pid-file=",
        &format!("--port={port}"),
    ]);
    for (name, text) in txt {
        command.arg(format!("--txt-record={name},{text}"));
    }
    for (name, ip) in hosts {
        command.arg(format!("--host-record={name},{ip}"));
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Daemon::start("dnsmasq", command, dir, addr)
}

/// A `dnsaddr=` TXT record of `_dnsaddr.<name>` naming `addr`.
pub fn dnsaddr(name: &str, addr: impl std::fmt::Display) -> (String, String) {
    (format!("_dnsaddr.{name}"), format!("dnsaddr={addr}"))
}
