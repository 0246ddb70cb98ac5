//! Helpers that need neither a runtime nor the test harness, in one copy for the tests (as
//! `common::helpers`) and the bench (`benches/transports.rs` compiles this file too, through
//! `#[path]`): dial options, socket addresses of multiaddrs, this process's resident memory.
#![allow(dead_code)]

use std::net::SocketAddr;

use libp2p::core::{
    multiaddr::Protocol,
    transport::{DialOpts, PortUse},
    Endpoint, Multiaddr,
};

/// Options for an ordinary dial (a new port).
pub fn dial_opts() -> DialOpts {
    DialOpts {
        role: Endpoint::Dialer,
        port_use: PortUse::New,
    }
}

/// The IP address and TCP port of `addr`, whatever follows them (`/ws`, `/tls/ws`, ...).
pub fn ip_and_port(addr: &Multiaddr) -> Option<SocketAddr> {
    let (mut ip, mut port) = (None, None);
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = ip.or(Some(a.into())),
            Protocol::Ip6(a) => ip = ip.or(Some(a.into())),
            Protocol::Tcp(p) => port = port.or(Some(p)),
            _ => {}
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

/// The socket address of a plain TCP multiaddr (`/ip4/<ip>/tcp/<port>` or `/ip6/...`, nothing
/// more); `None` for anything else.
pub fn tcp_socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Protocol::Ip4(_) | Protocol::Ip6(_)), Some(Protocol::Tcp(_)), None) => {
            ip_and_port(addr)
        }
        _ => None,
    }
}

/// `/ip4/<ip>/tcp/<port>` (or `/ip6/...`) for a socket address.
pub fn tcp_multiaddr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::from(addr.ip()).with(Protocol::Tcp(addr.port()))
}

/// Resident memory of this process in KiB (`VmRSS` in `/proc/self/status`), where /proc says.
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
